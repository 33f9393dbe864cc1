"""Models of the MLflow Model Registry and a run's checkpoints, read back to the run that made them.

``models:/`` URIs name a model the way MLflow does: ``models:/NAME/VERSION``,
``models:/NAME@ALIAS``, ``models:/NAME/latest`` (the highest version) and, on MLflow 3,
``models:/<model_id>`` (a LoggedModel). :func:`resolve_model` turns one into the run it was
registered or logged from; :func:`mltrail.query.runs.resolve_run_id` calls it, so every verb
that takes a run id takes a ``models:/`` URI too (``mltrail show``, ``checkout``, ``verify``,
``diff``, ``reproduce``, ``which``, ``register``).

A run's checkpoints are listed in its ``checkpoints/index.json`` (:func:`checkpoint_index`):
``{"files": {PATH: {"step", "metrics", "sha256", ...}}, "aliases": {"best": PATH, "latest":
PATH}}``, an entry's ``model_id`` naming its LoggedModel when it has one (MLflow 3).

``mltrail best`` ranks finished runs by a metric's latest value, or every checkpoint of the
runs by the metric it was saved with (:func:`best_run`, :func:`best_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from typing import Any

from mltrail.errors import MltrailError
from mltrail.query import runs as query
from mltrail.store import describe_uri

logger = logging.getLogger("mltrail.query")

#: What a ``models:/`` URI starts with.
MODELS_PREFIX = "models:/"
#: The artifact listing a run's checkpoints (written by ``Trail.log_checkpoint``).
CHECKPOINT_INDEX = "checkpoints/index.json"
#: The folder of a run's final model (``Trail.log_model``).
MODEL_FOLDER = "model"
#: The run tag naming the LoggedModel of the run's final model (MLflow 3).
MODEL_ID_TAG = "mltrail.model.id"
#: The LoggedModel tag naming the checkpoint (its artifact path) a model was made from.
CHECKPOINT_TAG = "mltrail.checkpoint"
#: How many runs ``mltrail best`` reads at most, newest first.
BEST_LIMIT = 10_000
#: How many runs' checkpoint indexes ``mltrail best --checkpoints`` reads at most, newest first.
CHECKPOINT_RUNS_LIMIT = 1000
_LOGGED_MODEL_ID = re.compile(r"^m-[0-9a-f]{8,}$")


def is_models_uri(text: str) -> bool:
    """True when ``text`` is a ``models:/`` URI rather than a run id."""
    return text.strip().startswith(MODELS_PREFIX)


@dataclasses.dataclass
class ModelRef:
    """A model a ``models:/`` URI names: a registered version, or a LoggedModel.

    Attributes:
        uri: the URI as given.
        run_id: the run it was registered or logged from.
        name: the registered model's name (None for a LoggedModel URI).
        version: the version's number (None for a LoggedModel URI).
        aliases: the version's aliases.
        source: where the version's files are (its ``source``).
        model_id: the LoggedModel id (MLflow 3), when there is one.
        tags: the version's tags (the provenance mltrail copied onto it).
    """

    uri: str
    run_id: str
    name: str | None = None
    version: str | None = None
    aliases: list[str] = dataclasses.field(default_factory=list)
    source: str | None = None
    model_id: str | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        """One line: what the URI names and the run it came from."""
        if self.name is None:
            return f"{self.uri} is logged model {self.model_id} of run {self.run_id}"
        aliases = f" (alias {', '.join(self.aliases)})" if self.aliases else ""
        return (
            f"{self.uri} is version {self.version} of registered model {self.name!r}{aliases}, "
            f"registered from run {self.run_id}"
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_models_uri(text: str) -> tuple[str, str | None, str | None]:
    """Split a ``models:/`` URI into (name or LoggedModel id, version, alias).

    Raises:
        MltrailError: when it is not one of the forms in the module docstring.
    """
    body = text.strip()[len(MODELS_PREFIX) :].strip("/")
    name, slash, version = body.rpartition("/")
    if slash and name and version and "@" not in version:
        return name, version, None
    name, at, alias = body.rpartition("@")
    if at and name and alias and "/" not in alias:
        return name, None, alias
    if body and "/" not in body and "@" not in body:
        return body, None, None  # a LoggedModel id
    raise MltrailError(
        f"{text!r} is not a models:/ URI: use models:/NAME/VERSION, models:/NAME@ALIAS or "
        "models:/<model_id>."
    )


def resolve_model(client: Any, uri: str, text: str) -> ModelRef:
    """The model ``text`` (a ``models:/`` URI) names in the store at ``uri``, with its run.

    Raises:
        MltrailError: when the URI is malformed, names nothing, or a model with no run.
    """
    name, version, alias = parse_models_uri(text)
    where = describe_uri(uri)
    if version is None and alias is None:
        return _logged_model(client, uri, text, name)
    if alias is not None:
        found = _read(lambda: client.get_model_version_by_alias(name, alias), uri)
    elif version.lower() == "latest":
        found = _latest_version(client, uri, name)
    elif not version.isdigit():
        raise MltrailError(
            f"{text!r}: {version!r} is not a version number (models:/NAME/VERSION takes "
            "a number, or latest; stages are not supported: use an alias, models:/NAME@ALIAS)."
        )
    else:
        found = _read(lambda: client.get_model_version(name, version), uri)
    if found is None:
        raise MltrailError(f"There is no model {text.strip()} in {where}.")
    model_id = getattr(found, "model_id", None) or None
    source_id = (found.source or "").removeprefix(MODELS_PREFIX)
    if not model_id and _LOGGED_MODEL_ID.match(source_id):
        model_id = source_id  # a LoggedModel registered (MLflow's store may not keep model_id)
    run_id = found.run_id or (_logged_model(client, uri, text, model_id).run_id if model_id else "")
    if not run_id:
        raise MltrailError(f"{text.strip()} was not registered from a run: it has no run to show.")
    return ModelRef(
        uri=text.strip(),
        run_id=run_id,
        name=found.name,
        version=str(found.version),
        aliases=sorted(getattr(found, "aliases", None) or []),
        source=found.source,
        model_id=model_id,
        tags=dict(found.tags or {}),
    )


def _read(func: Any, uri: str, what: str = "reading the registry") -> Any:
    """What ``func`` reads from the store, or None when the store says there is no such thing
    (a missing model, version, alias or LoggedModel)."""

    def read() -> Any:
        try:
            return func()
        except Exception as error:
            if _missing(error):
                return None
            raise

    return query.store_call(read, uri, what)


def _missing(error: BaseException) -> bool:
    code = getattr(error, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(error).lower()


def _latest_version(client: Any, uri: str, name: str) -> Any:
    escaped = name.replace("'", "\\'")
    versions = _read(lambda: client.search_model_versions(f"name = '{escaped}'"), uri) or []
    return max(versions, key=lambda v: int(v.version), default=None)


def _logged_model(client: Any, uri: str, text: str, model_id: str) -> ModelRef:
    getter = getattr(client, "get_logged_model", None)
    if getter is None:  # MLflow 2
        raise MltrailError(f"{text.strip()}: a LoggedModel URI needs MLflow 3.")
    found = _read(lambda: getter(model_id), uri, "reading the logged model")
    if found is None:
        hint = "" if _LOGGED_MODEL_ID.match(model_id) else " (for a registered model: NAME/VERSION)"
        raise MltrailError(f"There is no model {text.strip()} in {describe_uri(uri)}{hint}.")
    if not found.source_run_id:
        raise MltrailError(f"{text.strip()} was not logged from a run: it has no run to show.")
    return ModelRef(
        uri=text.strip(),
        run_id=found.source_run_id,
        source=getattr(found, "artifact_location", None),
        model_id=found.model_id,
        tags=dict(getattr(found, "tags", None) or {}),
    )


# --- a run's models and checkpoints --------------------------------------------------------------


def checkpoint_index(
    client: Any, uri: str, run_id: str, *, model_ids: bool = True
) -> dict[str, Any] | None:
    """The run's ``checkpoints/index.json``, or None when it logged no checkpoint.

    With ``model_ids``, an entry without a ``model_id`` gets the id of the run's LoggedModel made
    from that checkpoint, where there is one: a run journaled while the store was away has its
    index written before ``mltrail sync`` made the checkpoints' LoggedModels (in whichever store
    it was synced to)."""
    index = query.run_json(client, uri, run_id, CHECKPOINT_INDEX)
    files = (index or {}).get("files") or {}
    missing = [p for p, e in files.items() if isinstance(e, dict) and not e.get("model_id")]
    if missing and model_ids:
        made = _checkpoint_models(client, uri, run_id)
        for path in missing:
            if path in made:
                files[path]["model_id"] = made[path]
    return index


def _checkpoint_models(client: Any, uri: str, run_id: str) -> dict[str, str]:
    """The run's READY checkpoint LoggedModels by their checkpoint's path (MLflow 3)."""
    if getattr(client, "search_logged_models", None) is None:  # MLflow 2: no LoggedModels
        return {}

    def search() -> list[Any]:
        experiment_id = client.get_run(run_id).info.experiment_id
        return list(
            client.search_logged_models(
                experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'"
            )
        )

    try:
        models = query.store_call(search, uri, "searching logged models")
    except MltrailError as error:
        logger.debug("no logged models for run %s: %s", run_id, error)
        return {}
    made = {}
    for model in sorted(models, key=lambda m: m.creation_timestamp or 0):  # the latest wins
        path = (model.tags or {}).get(CHECKPOINT_TAG)
        if path and str(getattr(model.status, "name", model.status)) == "READY":
            made[path] = model.model_id
    return made


@dataclasses.dataclass
class Checkpoint:
    """One checkpoint of a run, as ``checkpoints/index.json`` lists it."""

    path: str
    step: int | None
    metrics: dict[str, float]
    aliases: list[str]
    sha256: str | None = None
    model_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def checkpoints(index: dict[str, Any] | None) -> list[Checkpoint]:
    """The checkpoints an index lists, in the order they were logged."""
    if not index:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, path in (index.get("aliases") or {}).items():
        aliases.setdefault(path, []).append(alias)
    found = []
    for path, entry in (index.get("files") or {}).items():
        entry = entry if isinstance(entry, dict) else {}
        step = entry.get("step")
        found.append(
            Checkpoint(
                path=path,
                step=int(step) if isinstance(step, int | float) else None,
                metrics={
                    k: float(v)
                    for k, v in (entry.get("metrics") or {}).items()
                    if isinstance(v, int | float)
                },
                aliases=sorted(aliases.get(path, [])),
                sha256=entry.get("sha256"),
                model_id=entry.get("model_id"),
            )
        )
    return found


def pick_checkpoint(index: dict[str, Any] | None, which: str, run_id: str) -> Checkpoint:
    """The checkpoint ``which`` names: an alias (best, latest) or a step number.

    Raises:
        MltrailError: when the run has no checkpoints or none that ``which`` names.
    """
    listed = checkpoints(index)
    if not listed:
        raise MltrailError(f"Run {run_id} logged no checkpoint (no {CHECKPOINT_INDEX}).")
    which = which.strip()
    if which.lstrip("-").isdigit():
        matches = [c for c in listed if c.step == int(which)]
        if matches:
            return matches[-1]
    else:
        matches = [c for c in listed if which in c.aliases]
        if matches:
            return matches[0]
    dropped = (index or {}).get("dropped") or {}
    for path, entry in dropped.items():
        if which == path or (isinstance(entry, dict) and str(entry.get("step")) == which):
            raise MltrailError(
                f"Checkpoint {path} of run {run_id} was deleted from the store "
                "(keep_checkpoints): only the kept ones can be registered."
            )
    steps = ", ".join(str(c.step) for c in listed if c.step is not None) or "none"
    names = sorted({a for c in listed for a in c.aliases})
    raise MltrailError(
        f"Run {run_id} has no checkpoint {which!r}: use "
        + (f"{' or '.join(names)}, or " if names else "")
        + f"a step ({steps})."
    )


def final_model_id(client: Any, uri: str, run: Any, index: dict[str, Any] | None) -> str | None:
    """The LoggedModel id of the run's final model (MLflow 3), or None when it has none: the
    run's tag :data:`MODEL_ID_TAG`, else the run's logged models less its checkpoints' (those
    of ``index`` and those named ``checkpoint-<step>``), the one logged last."""
    if run.data.tags.get(MODEL_ID_TAG):
        return run.data.tags[MODEL_ID_TAG]
    checkpoint_ids = {c.model_id for c in checkpoints(index) if c.model_id}
    for entry in ((index or {}).get("dropped") or {}).values():
        checkpoint_ids.add(entry.get("model_id") if isinstance(entry, dict) else None)
    run_id = run.info.run_id

    def search() -> list[Any]:
        return list(
            client.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"source_run_id = '{run_id}'",
            )
        )

    if getattr(client, "search_logged_models", None) is None:  # MLflow 2: no LoggedModels
        return None
    try:
        models = query.store_call(search, uri, "searching logged models")
    except MltrailError as error:
        logger.debug("no logged models for run %s: %s", run_id, error)
        return None
    finals = [
        m
        for m in models
        if m.model_id not in checkpoint_ids and not (m.name or "").startswith("checkpoint-")
    ]
    finals.sort(key=lambda m: (m.name == MODEL_FOLDER, m.creation_timestamp or 0))
    return finals[-1].model_id if finals else None


def has_model_folder(client: Any, uri: str, run_id: str) -> bool:
    """True when the run has an MLflow Model under ``model/``."""
    return query.store_call(
        lambda: any(
            f.path == f"{MODEL_FOLDER}/MLmodel" for f in client.list_artifacts(run_id, MODEL_FOLDER)
        ),
        uri,
        "listing the model's files",
    )


def provenance_summary(run: Any, provenance: dict[str, Any] | None) -> dict[str, Any]:
    """The code, data and fingerprint a run was trained from, from its tags and
    ``provenance.json`` (what ``mltrail best`` prints and model versions carry)."""
    tags = run.data.tags
    git = (provenance or {}).get("git") or {}
    snapshot = (((provenance or {}).get("dvc") or {}).get("data_snapshot") or {}).get("commit")
    dirty = tags.get("mltrail.git.dirty")
    if dirty is None and git.get("dirty") is not None:
        dirty = "true" if git.get("dirty") else "false"
    data = {}
    for item in run.inputs.dataset_inputs if getattr(run, "inputs", None) else []:
        if item.dataset.digest:
            data.setdefault(item.dataset.name, item.dataset.digest)
    return {
        "commit": tags.get("mlflow.source.git.commit") or git.get("commit"),
        "branch": tags.get("mlflow.source.git.branch") or git.get("branch"),
        "repo_url": tags.get("mlflow.source.git.repoURL") or git.get("repo_url"),
        "dirty": dirty,
        "snapshot": tags.get("mltrail.git.snapshot")
        or (git.get("snapshot") or {}).get("commit")
        or snapshot,
        "data_dirty": tags.get("mltrail.dvc.data_dirty"),
        "data": data,
        "fingerprint": tags.get("mltrail.fingerprint")
        or ((provenance or {}).get("fingerprint") or {}).get("value"),
    }


# --- the best run or checkpoint ------------------------------------------------------------------


@dataclasses.dataclass
class Best:
    """The best run (or checkpoint) by a metric, and how many had the metric."""

    run: Any
    value: float
    candidates: int
    checkpoint: Checkpoint | None = None


def _better(maximize: bool) -> Any:
    return (lambda v: -v) if maximize else (lambda v: v)


def best_run(
    client: Any, uri: str, experiment: str | None, metric: str, maximize: bool
) -> Best | None:
    """The finished run with the lowest (``maximize``: highest) latest value of ``metric``
    among the runs of ``experiment`` (default: every active experiment); None when no finished
    run has the metric. Ties go to the newest run."""
    experiments = query.experiment_names(client, uri, experiment)
    order = "DESC" if maximize else "ASC"
    found = query.search_runs(
        _searcher(client),
        uri,
        list(experiments),
        "attributes.status = 'FINISHED'",
        BEST_LIMIT,
        order_by=[f"metrics.`{metric}` {order}", "attributes.start_time DESC"],
    )
    scored = [(r, r.data.metrics[metric]) for r in found if _finite(r.data.metrics.get(metric))]
    if not scored:
        return None
    key = _better(maximize)
    run, value = min(scored, key=lambda item: key(item[1]))  # min keeps the first (newest) tie
    return Best(run=run, value=value, candidates=len(scored))


def best_checkpoint(
    client: Any, uri: str, experiment: str | None, metric: str, maximize: bool
) -> Best | None:
    """The checkpoint with the lowest (``maximize``: highest) ``metric`` among the checkpoints
    of the runs of ``experiment`` (any status: an uploaded checkpoint is whole), by the value
    it was saved with; None when no checkpoint has the metric."""
    experiments = query.experiment_names(client, uri, experiment)
    searcher = _searcher(client)
    runs = query.search_runs(
        searcher,
        uri,
        list(experiments),
        "tags.`mltrail.checkpoint.latest` LIKE '%'",
        CHECKPOINT_RUNS_LIMIT,
    )
    key = _better(maximize)
    best: tuple[float, Any, Checkpoint] | None = None
    count = 0
    for run in runs:
        index = checkpoint_index(client, uri, run.info.run_id, model_ids=False)
        for checkpoint in checkpoints(index):
            value = checkpoint.metrics.get(metric)
            if not _finite(value):
                continue
            count += 1
            if best is None or key(value) < key(best[0]):
                best = (value, run, checkpoint)
    if best is None:
        return None
    value, run, checkpoint = best
    if checkpoint.model_id is None:  # one search for the winner, not one per run
        checkpoint.model_id = _checkpoint_models(client, uri, run.info.run_id).get(checkpoint.path)
    return Best(run=run, value=value, candidates=count, checkpoint=checkpoint)


def _searcher(client: Any) -> Any:
    # MLflow's search syntax: a local sqlite store's reader answers plain reads only.
    return getattr(client, "mlflow", client)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def format_provenance(summary: dict[str, Any]) -> list[str]:
    """The lines of :func:`provenance_summary` that ``mltrail register`` and ``best`` print."""
    lines = []
    if summary.get("commit"):
        branch = f" (branch {summary['branch']})" if summary.get("branch") else ""
        dirty = {"true": ", dirty", "false": ", clean"}.get(summary.get("dirty") or "", "")
        lines.append(f"  commit       {summary['commit']}{branch}{dirty}")
    else:
        lines.append("  commit       (none recorded)")
    if summary.get("snapshot"):
        lines.append(f"  snapshot     {summary['snapshot']}")
    data = summary.get("data") or {}
    state = summary.get("data_dirty")
    note = {"true": "  (modified at the start)", "unknown": "  (not checked)"}.get(state or "", "")
    width = max(map(len, data), default=0)
    for i, (name, digest) in enumerate(sorted(data.items())):
        label = "data" if i == 0 else ""
        lines.append(f"  {label:<11}  {name:<{width}}  {digest}" + (note if not i else ""))
    if summary.get("fingerprint"):
        lines.append(f"  fingerprint  {summary['fingerprint']}")
    return lines
