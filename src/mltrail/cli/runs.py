"""``mltrail runs``: the runs made from a commit, sharing a fingerprint, or of any commit."""

from __future__ import annotations

import argparse
import shutil
import sys

from mltrail.cli.common import add_json, add_tracking_uri, print_json

HELP = "list runs: of a commit, an experiment, a status, or all of them"
EPILOG = """\
examples:
  mltrail runs                         runs made from the commit checked out here (HEAD)
  mltrail runs --commit HEAD~2         runs of another commit (any rev, a short SHA too)
  mltrail runs --all                   the newest runs of every experiment, no git needed
  mltrail runs --experiment my-exp --status FAILED --limit 10
  mltrail runs --fingerprint           the same code, data and params run more than once

Without --commit, --all, --experiment, --status or --fingerprint, the runs of HEAD are listed.
exit codes: 0 listed (also when nothing matched); 2 a usage error, an unknown commit or
experiment, an unreadable store.
"""
#: At most this many runs when listing without a commit (``--all``, ``--experiment``, ...).
LIST_LIMIT = 50
#: At most this many runs of a commit or fingerprint.
COMMIT_LIMIT = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail runs``."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--commit",
        help="a commit: full or short SHA, or any rev such as HEAD~2 (default: HEAD, unless "
        "another option says which runs)",
    )
    which.add_argument(
        "--all",
        action="store_true",
        help="runs of any commit, newest first: no git repository needed",
    )
    parser.add_argument(
        "--experiment",
        metavar="NAME",
        help="only runs of this experiment; without --commit: its newest runs, of any commit",
    )
    parser.add_argument(
        "--status",
        metavar="STATUS",
        help="only runs with this status (RUNNING, FINISHED, FAILED, KILLED, SCHEDULED); "
        "without --commit: of any commit",
    )
    parser.add_argument(
        "--fingerprint",
        nargs="?",
        const="*",
        metavar="FP",
        help="runs with this mltrail.fingerprint (a prefix is enough); without FP: every "
        "fingerprint shared by several runs (the same code, data and params run again)",
    )
    parser.add_argument("--repo", default=".", help="git repository to resolve --commit in")
    parser.add_argument(
        "--limit",
        "--max-results",
        dest="limit",
        type=int,
        metavar="N",
        help=f"at most N runs, the newest (default: {LIST_LIMIT} when listing without a "
        f"commit, else {COMMIT_LIMIT})",
    )
    add_json(parser)
    add_tracking_uri(parser)


def runs_command(args: argparse.Namespace) -> int:
    """List the runs made from a commit (or sharing a fingerprint, or of any commit)."""
    # The library is imported here, not when the parser is built: `mltrail --help` stays fast.
    from mltrail.query import runs as query
    from mltrail.store import describe_uri

    fingerprint = getattr(args, "fingerprint", None)
    repo = getattr(args, "repo", ".") or "."
    status = query.check_status(getattr(args, "status", None))
    listing = bool(getattr(args, "all", False) or args.experiment or status)
    commit = None
    if args.commit or (fingerprint is None and not listing):
        commit = query.resolve_commit(args.commit or "HEAD", repo)
    default = LIST_LIMIT if commit is None and fingerprint is None else COMMIT_LIMIT
    limit = max(1, int(getattr(args, "limit", None) or default))
    rows, uri = query.list_runs(
        args.tracking_uri, args.experiment, commit, fingerprint, repo, limit, status
    )
    if args.json:
        payload = {
            "schema_version": query.SCHEMA_VERSION,
            "tracking_uri": describe_uri(uri),
            "commit": commit,
            "fingerprint": None if fingerprint in (None, "*") else fingerprint,
            "experiment": args.experiment,
            "status": status,
            "limit": limit,
            "runs": rows,
        }
        print_json(payload)
        return 0
    if not rows:
        print(f"No runs found for {_what(commit, fingerprint, args.experiment, status)} in "
              f"{describe_uri(uri)}.")  # fmt: skip
        return 0
    print(query.format_runs(rows, with_fingerprint=fingerprint is not None, width=_width()))
    if len(rows) >= limit and getattr(args, "limit", None) is None:
        print(f"(the {limit} newest; --limit N lists more)", file=sys.stderr)
    return 0


def _what(
    commit: str | None, fingerprint: str | None, experiment: str | None, status: str | None
) -> str:
    """What was asked for, as "No runs found for ..." names it."""
    parts = []
    if fingerprint == "*":
        parts.append("a shared fingerprint")
    elif fingerprint:
        parts.append("that fingerprint")
    if commit:
        parts.append(f"commit {commit}")
    if experiment:
        parts.append(f"experiment {experiment!r}")
    if status:
        parts.append(f"status {status}")
    return ", ".join(parts) or "any experiment"


def _width() -> int | None:
    """The terminal's width; None when the output goes to no terminal and COLUMNS is unset
    (a pipe or a file gets whole lines)."""
    columns = shutil.get_terminal_size(fallback=(0, 0)).columns
    return columns or None
