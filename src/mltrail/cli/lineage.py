"""``mltrail lineage RUN_ID|models:/NAME@ALIAS``: a picture of where a run or model came from
and what it made: commit -> snapshot -> data -> run -> checkpoints -> logged model ->
registered versions, with forks and resumes between runs and the runs on the same data."""

from __future__ import annotations

import argparse

from mltrail.cli.common import add_json, add_tracking_uri, print_json

HELP = "draw a run's lineage: code, data, runs, checkpoints, models (HTML, SVG or PNG)"
USAGE = "mltrail lineage RUN_ID|models:/NAME@ALIAS [--output lineage.html|.svg|.png]"
EPILOG = """\
examples:
  mltrail lineage RUN_ID                        writes lineage.html (opens offline)
  mltrail lineage models:/churn@champion -o champion.svg
  mltrail lineage RUN_ID -o lineage.png         PNG by headless Chromium, when installed
  mltrail lineage RUN_ID --json                 the graph's nodes and edges

exit codes: 0 written; 2 no such run or model, an output type other than .html/.svg/.png, no
Chromium for a PNG, or an unreadable store.
"""
#: The ``schema_version`` of ``mltrail lineage --json``.
SCHEMA_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail lineage``."""
    parser.add_argument(
        "target",
        metavar="RUN_ID|models:/...",
        help="a run id (or a unique prefix), or models:/NAME/VERSION, models:/NAME@ALIAS",
    )
    parser.add_argument(
        "--output",
        "-o",
        default="lineage.html",
        help="the file to write: .html (default lineage.html), .svg or .png",
    )
    add_json(parser)
    add_tracking_uri(parser)


def lineage_command(args: argparse.Namespace) -> int:
    """Build the lineage graph and write it (or print it as JSON)."""
    from pathlib import Path

    from mltrail.errors import MltrailError
    from mltrail.query import lineage, lineage_svg
    from mltrail.query import runs as query

    target = args.target.strip()
    if not (target.startswith("models:/") or query.RUN_ID.match(target)):
        raise MltrailError(f"{args.target!r} is not a run id or a models:/ URI.")
    if not args.json and Path(args.output).suffix.lower() not in (".html", ".htm", ".svg", ".png"):
        raise MltrailError(f"{args.output}: the lineage is written as .html, .svg or .png.")
    client, uri = query.open_store(args.tracking_uri)
    graph = lineage.build(client, uri, target)
    if args.json:
        print_json({"schema_version": SCHEMA_VERSION, **graph.as_dict()})
        return 0
    path = lineage_svg.write(graph, args.output)
    kinds = [k for k in lineage.KINDS if any(n.kind == k for n in graph.nodes)]
    print(f"Wrote {path} ({len(graph.nodes)} nodes: {', '.join(kinds)}).")
    return 0
