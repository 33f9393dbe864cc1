"""``mltrail reproduce RUN_ID [-- COMMAND ...]``: rerun a run from its code and data and compare
its final metrics with the original's (see :mod:`mltrail.restore.reproduce`).

Exit code 0 when every compared metric matches, 1 on a mismatch, a failed command or a rerun
that logged no run, 2 when the run cannot be reproduced at all (no recorded command).
"""

from __future__ import annotations

import argparse

from mltrail.cli.common import add_tracking_uri

HELP = "rerun a run and compare metrics"
USAGE = "mltrail reproduce RUN_ID [options] [-- COMMAND ...]"
EPILOG = "-- COMMAND ...: run this instead of the command the run recorded"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail reproduce``; the command after ``--`` lands in ``command``."""
    parser.add_argument("run_id", metavar="RUN_ID")
    parser.add_argument("--into", metavar="DIR", help="worktree to rerun in (default: new)")
    parser.add_argument("--remote", help="git remote to fetch missing commits from")
    parser.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance")
    parser.add_argument("--atol", type=float, default=1e-9, help="absolute tolerance")
    parser.add_argument(
        "--metric", action="append", help="compare only this metric (a glob; repeatable)"
    )
    parser.add_argument(
        "--skip-metric", action="append", help="do not compare this metric (a glob; repeatable)"
    )
    parser.set_defaults(command=[])
    add_tracking_uri(parser)


def reproduce_command(args: argparse.Namespace) -> int:
    """Rerun a run in a fresh worktree and compare its final metrics with the original's."""
    from mltrail.restore import checkout as restore
    from mltrail.restore import reproduce
    from mltrail.store import describe_uri

    client, record = restore.open_run(args.tracking_uri, args.run_id)
    rerun = reproduce.rerun(
        record,
        client,
        command=list(getattr(args, "command", None) or []),
        into=args.into,
        remote=args.remote,
        progress=lambda text: print(text, flush=True),  # before the command's own output
    )
    if rerun.exit_code != 0:
        print(f"\nThe command exited with status {rerun.exit_code}.")
    if not rerun.runs:
        print(
            f"\nThe rerun logged no mltrail run to {describe_uri(record.uri)}: nothing to compare."
        )
        return 1
    new = rerun.runs[0]
    rows, matches = reproduce.compare_metrics(
        record.run.data.metrics,
        new.data.metrics,
        args.rtol,
        args.atol,
        args.metric or None,
        args.skip_metric or (),
    )
    print(f"\nRun {new.info.run_id} ({new.info.status}) reproduces {record.run_id}:")
    print(reproduce.format_comparison(rows))
    verdict = "MATCH" if matches and rerun.exit_code == 0 else "MISMATCH"
    print(f"\n{verdict} (rtol={args.rtol:g}, atol={args.atol:g})")
    return 0 if verdict == "MATCH" else 1
