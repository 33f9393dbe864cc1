"""``mltrail best --metric M``: the best run (or checkpoint) by a held-out metric, with its model
and the code and data that produced it."""

from __future__ import annotations

import argparse
from typing import Any

from mltrail.cli.common import add_json, add_tracking_uri, print_json

HELP = "the best run or checkpoint by a metric, with its model and provenance"
USAGE = (
    "mltrail best --metric M [--max] [--experiment NAME] [--checkpoints] [--checkout DIR] [--json]"
)
EPILOG = """\
examples:
  mltrail best --metric val_loss                     lowest latest val_loss of finished runs
  mltrail best --metric val_accuracy --max --experiment churn
  mltrail best --metric val_loss --checkpoints       the best checkpoint of any run
  mltrail best --metric val_loss --checkout ../best  and restore its code and data there

Runs are ranked by the metric's latest value (the value of the final model), among finished
runs; with --checkpoints, every checkpoint listed in a run's checkpoints/index.json by the value
it was saved with, among runs of any status. Ties go to the newest run.

exit codes: 0 found (and, with --checkout, restored exactly); 1 no run or checkpoint has the
metric, or --checkout could not restore something exactly; 2 an unknown experiment, an
unreadable store, or nothing restored.
"""

#: The ``schema_version`` of ``mltrail best --json``.
SCHEMA_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail best``."""
    parser.add_argument("--metric", required=True, metavar="M", help="the metric to rank by")
    parser.add_argument(
        "--max", action="store_true", help="the highest value is best (default: the lowest)"
    )
    parser.add_argument(
        "--experiment", metavar="NAME", help="only this experiment's runs (default: every one)"
    )
    parser.add_argument(
        "--checkpoints",
        action="store_true",
        help="rank the runs' checkpoints (checkpoints/index.json) instead of the runs",
    )
    parser.add_argument(
        "--checkout", metavar="DIR", help="restore the best run's code and data into DIR"
    )
    parser.add_argument("--dvc-remote", help="with --checkout: DVC remote to fetch data from")
    add_json(parser)
    add_tracking_uri(parser)


def best_command(args: argparse.Namespace) -> int:
    """Print the best run or checkpoint by ``--metric``; exit 1 when none has it."""
    from mltrail import progress
    from mltrail.query import registry
    from mltrail.query import runs as query
    from mltrail.restore import checkout as restore
    from mltrail.store import describe_uri

    metric = args.metric.strip()
    client, uri = query.open_store(args.tracking_uri)
    rank = registry.best_checkpoint if args.checkpoints else registry.best_run
    found = rank(client, uri, args.experiment, metric, args.max)
    payload: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tracking_uri": describe_uri(uri),
        "metric": metric,
        "direction": "max" if args.max else "min",
        "experiment": args.experiment,
        "scope": "checkpoints" if args.checkpoints else "runs",
        "candidates": found.candidates if found else 0,
        "best": None,
        "checkout": None,
    }
    if found is None:
        if args.json:
            print_json(payload)
        else:
            where = f"experiment {args.experiment!r}" if args.experiment else "any experiment"
            what = "checkpoint of" if args.checkpoints else "finished run of"
            print(f"No {what} {where} in {describe_uri(uri)} has the metric {metric!r}.")
        return 1
    record = restore.load_run(client, uri, found.run.info.run_id)
    payload["best"] = describe_best(client, uri, found, record)
    result = None
    if args.checkout:
        bar = progress.Progress("checkout", enabled=progress.wanted(args.json))
        with bar, progress.dvc_bars(False):
            result = restore.checkout(
                record, into=args.checkout, dvc_remote=args.dvc_remote, progress=bar
            )
        payload["checkout"] = result.as_dict()
    if args.json:
        print_json(payload)
    else:
        print(format_best(payload))
        if result is not None:
            print()
            print(result.report())
    return 0 if result is None or result.exact else 1


def describe_best(client: Any, uri: str, found: Any, record: Any) -> dict[str, Any]:
    """The ``best`` object of ``mltrail best --json``."""
    from mltrail.query import registry

    run = record.run
    run_id = run.info.run_id
    checkpoint = found.checkpoint
    if checkpoint is not None:
        model_id = checkpoint.model_id
        model_uri = f"runs:/{run_id}/{checkpoint.path}"
    else:
        index = registry.checkpoint_index(client, uri, run_id)
        model_id = registry.final_model_id(client, uri, run, index)
        has_folder = registry.has_model_folder(client, uri, run_id)
        model_uri = f"runs:/{run_id}/{registry.MODEL_FOLDER}" if has_folder else None
    if model_id:
        model_uri = f"models:/{model_id}"
    return {
        "run_id": run_id,
        "run_name": run.info.run_name,
        "experiment": record.experiment,
        "status": run.info.status,
        "value": found.value,
        "checkpoint": checkpoint.as_dict() if checkpoint else None,
        "model_id": model_id,
        "model_uri": model_uri,
        "registered": run.data.tags.get("mltrail.model.registered"),
        "provenance": registry.provenance_summary(run, record.provenance),
    }


def format_best(payload: dict[str, Any]) -> str:
    """The text ``mltrail best`` prints."""
    from mltrail.query import registry
    from mltrail.query.display import number

    best, metric = payload["best"], payload["metric"]
    direction = "highest" if payload["direction"] == "max" else "lowest"
    scope = "checkpoints" if payload["scope"] == "checkpoints" else "finished runs"
    where = f"experiment {payload['experiment']!r}" if payload["experiment"] else "all experiments"
    name = f"  ({best['run_name']})" if best["run_name"] else ""
    lines = [
        f"Best by {metric} ({direction}) of {payload['candidates']} {scope} with it, in {where}:",
        f"  run          {best['run_id']}{name}, experiment {best['experiment']!r}",
        f"  {metric:<11}  {number(best['value'])}",
    ]
    checkpoint = best["checkpoint"]
    if checkpoint:
        labels = [f"step {checkpoint['step']}"] if checkpoint["step"] is not None else []
        labels += checkpoint["aliases"]
        lines.append(f"  checkpoint   {checkpoint['path']} ({', '.join(labels) or '-'})")
    if best["model_uri"]:
        kind = " (logged model)" if best["model_id"] else ""
        lines.append(f"  model        {best['model_uri']}{kind}")
    if best["registered"]:
        lines.append(f"  registered   models:/{best['registered']}")
    lines += registry.format_provenance(best["provenance"])
    if not payload["checkout"]:
        lines += ["", f"mltrail checkout {best['run_id']} --into DIR   restores its code and data"]
    return "\n".join(lines)
