"""``mltrail runs``: the runs made from a commit, or sharing a fingerprint."""

from __future__ import annotations

import argparse

from mltrail.cli.common import add_json, add_tracking_uri, print_json

HELP = "list runs made from a commit"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail runs``."""
    parser.add_argument(
        "--commit",
        help="a commit: full or short SHA, or any rev such as HEAD~2 (default: HEAD)",
    )
    parser.add_argument("--experiment", help="only runs of this experiment (default: all)")
    parser.add_argument(
        "--fingerprint",
        nargs="?",
        const="*",
        metavar="FP",
        help="runs with this mltrail.fingerprint (a prefix is enough); without FP: every "
        "fingerprint shared by several runs (the same code, data and params run again)",
    )
    parser.add_argument("--repo", default=".", help="git repository to resolve --commit in")
    parser.add_argument("--max-results", type=int, default=1000, help="at most this many runs")
    add_json(parser)
    add_tracking_uri(parser)


def runs_command(args: argparse.Namespace) -> int:
    """List the runs made from a commit (or sharing a fingerprint)."""
    # The library is imported here, not when the parser is built: `mltrail --help` stays fast.
    from mltrail.query import runs as query
    from mltrail.store import describe_uri

    limit = max(1, int(getattr(args, "max_results", 1000) or 1000))
    fingerprint = getattr(args, "fingerprint", None)
    repo = getattr(args, "repo", ".") or "."
    commit = None
    if fingerprint is None or args.commit:
        commit = query.resolve_commit(args.commit or "HEAD", repo)
    rows, uri = query.list_runs(
        args.tracking_uri, args.experiment, commit, fingerprint, repo, limit
    )
    if args.json:
        payload = {
            "schema_version": query.SCHEMA_VERSION,
            "tracking_uri": describe_uri(uri),
            "commit": commit,
            "fingerprint": None if fingerprint in (None, "*") else fingerprint,
            "runs": rows,
        }
        print_json(payload)
        return 0
    if not rows:
        what = f"commit {commit}" if commit else "that fingerprint"
        if fingerprint == "*":
            what = "a shared fingerprint" + (f" at commit {commit}" if commit else "")
        print(f"No runs found for {what} in {describe_uri(uri)}.")
        return 0
    print(query.format_runs(rows, with_fingerprint=fingerprint is not None))
    return 0
