"""``mltrail checkout RUN_ID|models:/...``: restore a run's code and data, here or into a new
worktree; a ``models:/`` URI names the run a registered model came from."""

from __future__ import annotations

import argparse

from mltrail.cli.common import add_json, add_tracking_uri, print_json

HELP = "restore a run's code and data"
EPILOG = """\
examples:
  mltrail checkout RUN_ID                 here: HEAD detached at the run's code, data restored
  mltrail checkout RUN_ID --into ../v1    into a new git worktree, this repository untouched
  mltrail checkout RUN_ID --into ../v1 --dvc-remote storage --json
  mltrail checkout models:/churn@champion --into ../prod   the run a registered model came from

Data missing from the DVC cache is fetched from the DVC remote; on a terminal a progress line
shows the files and bytes fetched, with the rate.

exit codes:
  0  code and data were restored exactly
  1  something could not be restored exactly (each item is listed)
  2  nothing was restored: no such run, uncommitted changes in the way, no code recorded, ...
"""

#: The ``schema_version`` of ``mltrail checkout --json``.
SCHEMA_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail checkout``."""
    parser.add_argument(
        "run_id",
        metavar="RUN_ID",
        help="the run to restore (an id, a prefix of one, or models:/NAME/VERSION, "
        "models:/NAME@ALIAS: the run the model came from)",
    )
    parser.add_argument("--into", metavar="DIR", help="restore into a new worktree at DIR")
    parser.add_argument("--remote", help="git remote to fetch missing commits from")
    parser.add_argument("--dvc-remote", help="DVC remote to fetch missing data from")
    add_json(parser)
    add_tracking_uri(parser)


def checkout_command(args: argparse.Namespace) -> int:
    """Restore a run's code and data; exit 1 when something could not be restored exactly."""
    from mltrail import progress
    from mltrail.restore import checkout as restore

    as_json = bool(getattr(args, "json", False))
    _, record = restore.open_run(args.tracking_uri, args.run_id)
    bar = progress.Progress("checkout", enabled=progress.wanted(as_json))
    with bar, progress.dvc_bars(False):
        result = restore.checkout(
            record, into=args.into, remote=args.remote, dvc_remote=args.dvc_remote, progress=bar
        )
    if as_json:
        print_json({"schema_version": SCHEMA_VERSION, **result.as_dict()})
    else:
        print(result.report())
    return 0 if result.exact else 1
