"""``mltrail diff RUN_A RUN_B``: two runs side by side: params, metrics, code, data, environment."""

from __future__ import annotations

import argparse

from mltrail.cli.common import add_json, add_tracking_uri, print_json

HELP = "compare two runs"
EPILOG = """\
examples:
  mltrail diff RUN_A RUN_B             params, metrics, code, data and environment side by side
  mltrail diff RUN_A RUN_B --stat      the code diff summarised per file

exit codes: 0 compared (also when they differ); 2 no such run, or an unreadable store.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail diff``."""
    parser.add_argument("run_a", metavar="RUN_A")
    parser.add_argument("run_b", metavar="RUN_B")
    parser.add_argument("--stat", action="store_true", help="summarise the code diff")
    add_json(parser)
    add_tracking_uri(parser)


def diff_command(args: argparse.Namespace) -> int:
    """Compare two runs: params, metrics, code, data and environment."""
    from mltrail.restore import checkout as restore
    from mltrail.restore import compare

    client, a = restore.open_run(args.tracking_uri, args.run_a)
    b = restore.load_run(client, a.uri, args.run_b)
    data = compare.diff(a, b, client, stat_only=args.stat)
    if args.json:
        print_json(data)
    else:
        print(compare.format_diff(data))
    return 0
