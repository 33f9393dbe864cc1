"""``mltrail verify RUN_ID``: check a workspace's code, data and environment against a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from mltrail.cli.common import add_json, add_tracking_uri, print_json

HELP = "check a workspace against a run"
EPILOG = """\
examples:
  mltrail verify RUN_ID                this workspace against the run's code, data, packages
  mltrail verify RUN_ID --path ../v1   another workspace (e.g. one `mltrail checkout` made)

exit codes: 0 code and data match (package differences are listed, not failures); 1 the code
or the data differ; 2 no such run, or an unreadable store.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail verify``."""
    parser.add_argument("run_id", metavar="RUN_ID")
    parser.add_argument("--path", metavar="DIR", help="the workspace (default: here)")
    add_json(parser)
    add_tracking_uri(parser)


def verify_command(args: argparse.Namespace) -> int:
    """Compare a workspace with a run; exit 0 only when code and data match."""
    from mltrail.restore import checkout as restore
    from mltrail.restore import compare

    client, record = restore.open_run(args.tracking_uri, args.run_id)
    result = compare.verify(record, client, Path(args.path or "."))
    if args.json:
        print_json(result.as_dict())
    else:
        print(result.report())
    return 0 if result.code_matches and result.data_matches else 1
