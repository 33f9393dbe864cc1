"""``mltrail which PATH|models:/...``: the run that logged a model or checkpoint file, found by
content, or the run a registered model version (or LoggedModel) came from."""

from __future__ import annotations

import argparse
from pathlib import Path

from mltrail.cli.common import add_json, add_tracking_uri, print_json

HELP = "find the run that logged a model file or a registered model"
EPILOG = """\
examples:
  mltrail which model.pkl              the run that logged a file with this content
  mltrail which checkpoints/epoch=3.ckpt --json
  mltrail which models:/churn/3        the run version 3 of model churn was registered from
  mltrail which models:/churn@champion the version the alias points to, and its run
  mltrail which models:/m-0123abcd     a LoggedModel (MLflow 3) and its run

exit codes: 0 found; 1 no run logged a file with this content; 2 not a file, no such model,
or an unreadable store.
"""
#: The ``schema_version`` of ``mltrail which models:/... --json``.
SCHEMA_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail which``."""
    parser.add_argument(
        "path",
        metavar="PATH",
        help="a model or checkpoint file, or models:/NAME/VERSION, models:/NAME@ALIAS",
    )
    add_json(parser)
    add_tracking_uri(parser)


def which_command(args: argparse.Namespace) -> int:
    """Print the runs that logged a file with this content; exit 1 when there is none."""
    from mltrail.errors import MltrailError
    from mltrail.query import runs as query
    from mltrail.restore import checkout as restore
    from mltrail.store import describe_uri

    if args.path.strip().startswith("models:/"):
        return _which_model(args)
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


def _which_model(args: argparse.Namespace) -> int:
    """``mltrail which models:/...``: the model version (or LoggedModel) and its run."""
    from mltrail.query import registry
    from mltrail.query import runs as query

    client, uri = query.open_store(args.tracking_uri)
    model = registry.resolve_model(client, uri, args.path)
    data = query.show_data(client, uri, model.run_id)
    if args.json:
        print_json({"schema_version": SCHEMA_VERSION, "model": model.as_dict(), "runs": [
            {"run_id": model.run_id, **data}]})  # fmt: skip
        return 0
    print(model.describe())
    if model.model_id and model.name is not None:
        print(f"  model        models:/{model.model_id} (logged model)")
    if model.source and model.source != f"models:/{model.model_id}":
        print(f"  source       {model.source}")
    stale = _differs(model.tags, data)
    if stale:
        print(f"  note         the version's tags differ from the run's: {', '.join(stale)}")
    print()
    print(query.format_show(data))
    return 0


def _differs(tags: dict[str, str], data: dict) -> list[str]:
    """Provenance tags of a version that disagree with its run's (a re-tagged version)."""
    run = {
        "mlflow.source.git.commit": data["code"]["commit"],
        "mltrail.git.snapshot": data["code"]["snapshot"],
        "mltrail.fingerprint": data["fingerprint"],
    }
    return [k for k, v in run.items() if k in tags and v and tags[k] != v]
