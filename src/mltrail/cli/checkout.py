"""``mltrail checkout RUN_ID``: restore a run's code and data, here or into a new worktree."""

from __future__ import annotations

import argparse

from mltrail.cli.common import add_tracking_uri

HELP = "restore a run's code and data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail checkout``."""
    parser.add_argument("run_id", metavar="RUN_ID")
    parser.add_argument("--into", metavar="DIR", help="restore into a new worktree at DIR")
    parser.add_argument("--remote", help="git remote to fetch missing commits from")
    parser.add_argument("--dvc-remote", help="DVC remote to fetch missing data from")
    add_tracking_uri(parser)


def checkout_command(args: argparse.Namespace) -> int:
    """Restore a run's code and data; exit 1 when something could not be restored exactly."""
    from mltrail.restore import checkout as restore

    _, record = restore.open_run(args.tracking_uri, args.run_id)
    result = restore.checkout(
        record, into=args.into, remote=args.remote, dvc_remote=args.dvc_remote
    )
    print(result.report())
    return 0 if result.exact else 1
