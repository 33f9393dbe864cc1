"""``mltrail show RUN_ID``: one run's code, data, environment, params and metrics."""

from __future__ import annotations

import argparse

from mltrail.cli.common import add_json, add_tracking_uri, print_json

HELP = "show a run's code, data, environment and results"
EPILOG = """\
examples:
  mltrail show RUN_ID                  code, data, environment, params and metrics of a run
  mltrail show d80b7ae2                a unique prefix of a run id (6 characters or more)
  mltrail show RUN_ID --all            every param, however many
  mltrail show RUN_ID --json           the same, machine-readable (schema_version 1)
  mltrail show models:/churn@champion  the run a registered model came from

exit codes: 0 shown; 2 no such run (or a prefix of several: they are listed), an unreadable
store.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail show``."""
    parser.add_argument("run_id", metavar="RUN_ID")
    parser.add_argument(
        "--all",
        action="store_true",
        help="every param (by default a long list, such as a framework's whole configuration, "
        "is cut after the first 20 and counted)",
    )
    add_json(parser)
    add_tracking_uri(parser)


def show_command(args: argparse.Namespace) -> int:
    """Print one run's code, data, environment, params and metrics."""
    from mltrail.errors import MltrailError
    from mltrail.query import runs as query

    run_id = args.run_id.strip()
    # Before opening the store: a typo answers at once (a models:/ URI names a model's run).
    if not query.RUN_ID.match(run_id) and not run_id.startswith("models:/"):
        raise MltrailError(f"{args.run_id!r} is not a run id.")
    client, uri = query.open_store(args.tracking_uri)
    data = query.show_data(client, uri, run_id)
    if args.json:
        print_json(data)
    else:
        print(query.format_show(data, show_all=args.all))
    return 0
