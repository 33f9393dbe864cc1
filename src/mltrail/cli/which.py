"""``mltrail which PATH``: the run that logged a model or checkpoint file, found by content."""

from __future__ import annotations

import argparse
from pathlib import Path

from mltrail.cli.common import add_json, add_tracking_uri, print_json

HELP = "find the run that logged a model file"
EPILOG = """\
examples:
  mltrail which model.pkl              the run that logged a file with this content
  mltrail which checkpoints/epoch=3.ckpt --json

exit codes: 0 found; 1 no run logged a file with this content; 2 not a file, or an
unreadable store.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail which``."""
    parser.add_argument("path", metavar="PATH")
    add_json(parser)
    add_tracking_uri(parser)


def which_command(args: argparse.Namespace) -> int:
    """Print the runs that logged a file with this content; exit 1 when there is none."""
    from mltrail.errors import MltrailError
    from mltrail.query import runs as query
    from mltrail.restore import checkout as restore
    from mltrail.store import describe_uri

    path = Path(args.path)
    if not path.is_file():  # before opening the store: a typo answers at once
        raise MltrailError(f"{path} is not a file.")
    client, uri = query.open_store(args.tracking_uri)
    found = restore.runs_with_file(client, uri, path)
    if args.json:
        runs = [
            {"run_id": r.info.run_id, "artifact": r.data.tags.get(found.tag), **query.show_data(
                client, uri, r.info.run_id)}
            for r in found.runs
        ]  # fmt: skip
        payload = {"sha256": found.sha256, "runs": runs}
        print_json(payload)
        return 0 if found.runs else 1
    if not found.runs:
        print(f"No run in {describe_uri(uri)} logged a file with sha256 {found.sha256}.")
        return 1
    for i, run in enumerate(found.runs):
        if i:
            print()
        artifact = run.data.tags.get(found.tag)
        print(f"{path} is {artifact} of run {run.info.run_id} (sha256 {found.sha256})\n")
        print(query.format_show(query.show_data(client, uri, run.info.run_id)))
    return 0
