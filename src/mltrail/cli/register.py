"""``mltrail register RUN_ID NAME``: a run's model or checkpoint as a new version of a registered
model, tagged with the code, data and fingerprint of the run."""

from __future__ import annotations

import argparse
from typing import Any

from mltrail.cli.common import add_json, add_tracking_uri, print_json

HELP = "register a run's model or checkpoint, with its provenance"
EPILOG = """\
examples:
  mltrail register RUN_ID churn                      the run's final model as a new version
  mltrail register RUN_ID churn --alias champion     ... and point the alias champion at it
  mltrail register RUN_ID churn --checkpoint best    the checkpoint the run marked best
  mltrail register RUN_ID churn --checkpoint 12      the checkpoint of step 12
  mltrail register d80b7ae2 churn --json             a run id prefix; machine-readable output

The version is tagged with the run's id (mltrail.run_id), commit (mlflow.source.git.commit),
mltrail.git.dirty, mltrail.git.snapshot, mltrail.dvc.data_dirty, mltrail.fingerprint and the hash
of each dataset (mltrail.data.<name>); `mltrail which models:/NAME/VERSION` reads them back.
On MLflow 3 a model or checkpoint logged as a LoggedModel is registered as that LoggedModel.

exit codes: 0 registered; 2 no such run, no model or checkpoint to register, an unreadable
store or a refused registration.
"""

#: The ``schema_version`` of ``mltrail register --json``.
SCHEMA_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail register``."""
    parser.add_argument("run_id", metavar="RUN_ID", help="the run (an id, a prefix of one)")
    parser.add_argument("name", metavar="NAME", help="the registered model (created if missing)")
    parser.add_argument(
        "--checkpoint",
        metavar="WHICH",
        help="register a checkpoint instead of the final model: best, latest, or a step",
    )
    parser.add_argument(
        "--alias",
        action="append",
        metavar="A",
        help="point this alias at the new version (repeatable)",
    )
    add_json(parser)
    add_tracking_uri(parser)


def register_command(args: argparse.Namespace) -> int:
    """Register a run's model (or one of its checkpoints) with the run's provenance."""
    from mltrail.errors import MltrailError
    from mltrail.query import registry
    from mltrail.query import runs as query
    from mltrail.recording import writer
    from mltrail.recording.sanitize import redact_text

    name = args.name.strip()
    if not name:
        raise MltrailError("NAME is empty: give the registered model's name.")
    client, uri = query.open_store(args.tracking_uri)
    run, _, provenance = query.read_run(client, uri, args.run_id)
    run_id = run.info.run_id
    index = registry.checkpoint_index(client, uri, run_id)
    summary = registry.provenance_summary(run, provenance)
    tags = version_tags(writer.model_version_tags(run), summary)
    checkpoint = None
    if args.checkpoint:
        checkpoint = registry.pick_checkpoint(index, args.checkpoint, run_id)
        model_id = checkpoint.model_id
        source = f"{run.info.artifact_uri}/{checkpoint.path}"
        tags.update(
            {
                "mltrail.checkpoint.path": checkpoint.path,
                "mltrail.checkpoint.step": checkpoint.step,
                "mltrail.checkpoint.sha256": checkpoint.sha256,
            }
        )
    else:
        model_id = registry.final_model_id(client, uri, run, index)
        source = f"{run.info.artifact_uri}/{registry.MODEL_FOLDER}"
        if not model_id and not registry.has_model_folder(client, uri, run_id):
            raise MltrailError(
                f"Run {run_id} has no model to register (no {registry.MODEL_FOLDER}/ MLflow "
                "Model): log one with Trail.log_model, or register a checkpoint with "
                "--checkpoint best."
            )
    if model_id:
        source = f"models:/{model_id}"
    tags = {k: str(v) for k, v in tags.items() if v is not None}
    aliases = [a.strip() for a in args.alias or [] if a.strip()]
    try:
        version = writer.register_model_version(
            client, run_id, name, source, tags=tags, model_id=model_id, aliases=aliases
        )
    except Exception as error:
        lines = redact_text(str(error)).strip().splitlines()
        raise MltrailError(
            f"Could not register {name!r}: {lines[0] if lines else type(error).__name__}"
        ) from None
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": version,
        "uri": f"models:/{name}/{version}",
        "aliases": aliases,
        "run_id": run_id,
        "source": source,
        "model_id": model_id,
        "checkpoint": checkpoint.as_dict() if checkpoint else None,
        "tags": tags,
    }
    if args.json:
        print_json(result)
        return 0
    what = "the final model"
    if checkpoint is not None:
        labels = [f"step {checkpoint.step}"] if checkpoint.step is not None else []
        what = f"{checkpoint.path} ({', '.join([*labels, *checkpoint.aliases]) or 'checkpoint'})"
    alias = f" (alias {', '.join(aliases)})" if aliases else ""
    print(f"Registered {what} of run {run_id} as models:/{name}/{version}{alias}.")
    if model_id:
        print(f"  model        {source} (logged model)")
    else:
        print(f"  source       {source}")
    print("\n".join(registry.format_provenance(summary)))
    return 0


def version_tags(tags: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The run's model-version tags, completed from its ``provenance.json`` where a tag is
    missing (a run whose tags were cut short still names its code)."""
    filled = {
        "mlflow.source.git.commit": summary.get("commit"),
        "mlflow.source.git.branch": summary.get("branch"),
        "mltrail.git.dirty": summary.get("dirty"),
        "mltrail.git.snapshot": summary.get("snapshot"),
        "mltrail.fingerprint": summary.get("fingerprint"),
    }
    return {**{k: v for k, v in filled.items() if v}, **tags}
