"""The background writer: the only code that sends run data to MLflow.

The training thread only appends to in-memory queues. A sender thread drains them every
``flush_interval`` into ``log_batch`` requests within MLflow's limits; an uploader thread sends
artifacts and runs background jobs (model serialisation). A failed request is retried a few
times, then the writer goes offline for a while (a circuit breaker) and journals what it could
not send in the run's spool, which ``mltrail sync`` (or the writer itself, once the store is
back) replays. ``close`` flushes within a time budget and never hangs.

Every write is a record (see :func:`apply_record`): the run's metrics, params, tags, inputs,
artifacts and status, and also its child runs, its model registration and the end of crashed
runs found at start, so that all of them are journaled when the store is away.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mltrail.errors import ErrorCounter, strict_mode
from mltrail.recording import spool as spool_module
from mltrail.recording.spool import Spool
from mltrail.store import sqlite_turns

logger = logging.getLogger("mltrail.writer")

# MLflow's log_batch limits (mlflow/utils/validation.py).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_BATCH_BYTES = 900_000  # below the 1 MB request cap, leaving room for JSON framing

Record = dict[str, Any]


def _chunks_by_size(
    items: list[Any], count: int, size: Callable[[Any], int]
) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    total = 0
    for item in items:
        item_size = size(item)
        if chunk and (len(chunk) >= count or total + item_size > MAX_BATCH_BYTES):
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += item_size
    if chunk:
        yield chunk


def _pair_size(pair: tuple[str, str]) -> int:
    return len(pair[0]) + len(pair[1]) + 32


def apply_record(
    client: Any, run_id: str, record: Record, progress: Callable[[], None] | None = None
) -> None:
    """Send one record of run ``run_id`` to the store with ``client`` (shared by the writer and
    ``mltrail sync``).

    Args:
        client: an ``MlflowClient``.
        run_id: the run the record belongs to (the parent of a ``child_run``).
        record: ``{"kind": ..., "data": ...}``; the kinds are ``metrics`` (``[key, value,
            timestamp, step]`` lists), ``params``, ``tags``, ``batch`` (``{"params", "tags",
            "metrics"}`` in one request, see :func:`_merged`), ``delete_tag``, ``inputs``,
            ``artifact``, ``status``, ``child_run`` (see :func:`child_run_data`), ``register``
            (``{"name", "artifact_path"}``, optionally ``"model_id"``: a LoggedModel; the version
            gets the run's provenance tags), ``crashed_run`` (see :func:`crashed_run_data`),
            ``logged_model`` (see :func:`mltrail.recording.logged_models.model_record`),
            ``model_metrics`` (``{"model_id", "metrics"}``: link more of the run's points to a
            LoggedModel) and ``drop_checkpoint`` (``{"path", "model_id"}``: delete a superseded
            checkpoint from the store).
        progress: called once a step that must not be repeated is done (a child run or a model
            version created); the record's data then says so, so that a retry or a replay of
            the same record goes on from there instead of creating a second one.

    Raises:
        ValueError: for an unknown kind.
    """
    from mlflow.entities import Metric, Param, RunTag

    kind = record["kind"]
    data = record.get("data")
    if kind == "batch":
        _log_together(client, run_id, data)
    elif kind == "metrics":
        for chunk in _chunks_by_size(data, MAX_METRICS_PER_BATCH, lambda m: len(m[0]) + 64):
            metrics = [
                Metric(key, float(value), int(ts), int(step)) for key, value, ts, step in chunk
            ]
            _log_points(client, run_id, metrics)
    elif kind == "params":
        for chunk in _chunks_by_size(list(data.items()), MAX_PARAMS_TAGS_PER_BATCH, _pair_size):
            client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])
    elif kind == "tags":
        for chunk in _chunks_by_size(list(data.items()), MAX_PARAMS_TAGS_PER_BATCH, _pair_size):
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in chunk])
        if run_id in _registered:
            _tag_registered_versions(client, run_id)
    elif kind == "delete_tag":
        try:
            client.delete_tag(run_id, data)
        except Exception as error:  # gone already: a request whose answer was lost, sent again
            if getattr(error, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
    elif kind == "inputs":
        _log_inputs(client, run_id, [_dataset_input(d) for d in data])
        if run_id in _registered:
            _tag_registered_versions(client, run_id)
    elif kind == "artifact":
        path = Path(record["path"])
        if path.is_dir():
            client.log_artifacts(run_id, str(path), record.get("artifact_path"))
        else:
            client.log_artifact(run_id, str(path), record.get("artifact_path"))
    elif kind == "status":
        _set_terminated(client, run_id, data["status"], data.get("end_time"))
    elif kind == "child_run":
        _log_child_run(client, run_id, data, progress)
    elif kind == "register":
        _register_model(client, run_id, data, progress)
    elif kind == "crashed_run":
        client.set_tag(data["run_id"], "mltrail.crashed", "true")
        _set_terminated(client, data["run_id"], data["status"], data.get("end_time"))
    elif kind == "logged_model":
        _log_logged_model(client, run_id, data, progress)
    elif kind == "model_metrics":
        _link_model_metrics(client, run_id, data["model_id"], data["metrics"])
    elif kind == "drop_checkpoint":
        _drop_checkpoint(client, run_id, data)
    else:
        raise ValueError(f"unknown spool record kind {kind!r}")


def child_run_data(
    run_name: str,
    params: dict[str, str],
    metrics: dict[str, float],
    tags: dict[str, str],
    experiment_id: str | None,
    *,
    history: Iterable[tuple[str, int, float]] = (),
    status: str = "FINISHED",
) -> dict[str, Any]:
    """The data of a ``child_run`` record: a finished run nested under the record's run.

    Args:
        run_name: the child's name.
        params: its params, already flattened, redacted and cut to MLflow's limits.
        metrics: its metrics, logged at step 0.
        history: more metric values, ``(key, step, value)``.
        status: how it ended (FINISHED, FAILED, KILLED).
        tags: its tags; ``mlflow.parentRunId`` is added when the record is sent, since the
            parent of a run journaled offline gets its id at ``mltrail sync``.
        experiment_id: the parent's experiment (None offline; sync uses the parent's).

    Returns:
        The record's data; its ``run_id`` is set once the child exists.
    """
    now = int(time.time() * 1000)
    return {
        "run_name": run_name,
        "params": params,
        "metrics": [[k, v, now, 0] for k, v in metrics.items()]
        + [[k, v, now, step] for k, step, v in history],
        "tags": tags,
        "status": status,
        "experiment_id": experiment_id,
        "time": now,
        "run_id": None,
    }


def _log_child_run(
    client: Any, parent: str, data: dict[str, Any], progress: Callable[[], None] | None
) -> None:
    from mlflow.entities import Metric, Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    if not data.get("run_id"):
        tags = {**data["tags"], MLFLOW_PARENT_RUN_ID: parent}
        run = client.create_run(
            data["experiment_id"], start_time=data["time"], run_name=data["run_name"], tags=tags
        )
        data["run_id"] = run.info.run_id
        if progress is not None:
            progress()
    child, params, points = data["run_id"], data["params"], data["metrics"]
    if len(params) <= MAX_PARAMS_TAGS_PER_BATCH and len(points) <= MAX_METRICS_PER_BATCH - 100:
        # One request for both: searches record their candidates by the dozen.
        client.log_batch(
            child,
            metrics=[Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in points],
            params=[Param(k, v) for k, v in params.items()],
        )
    else:
        apply_record(client, child, {"kind": "params", "data": params})
        apply_record(client, child, {"kind": "metrics", "data": points})
    _set_terminated(client, child, data.get("status", "FINISHED"), data["time"])


#: Run tags copied onto every model version registered from the run: the code, data state and
#: fingerprint it was trained from (``mltrail which models:/NAME/VERSION`` reads them back).
VERSION_PROVENANCE_TAGS = (
    "mlflow.source.git.commit",
    "mlflow.source.git.branch",
    "mlflow.source.git.repoURL",
    "mltrail.git.dirty",
    "mltrail.git.snapshot",
    "mltrail.dvc.data_dirty",
    "mltrail.fingerprint",
)
#: Model-version tag naming the run a version was registered from.
VERSION_RUN_TAG = "mltrail.run_id"
#: Prefix of the model-version tags ``mltrail.data.<dataset name>`` = the dataset's digest (its
#: DVC hash for DVC outputs).
VERSION_DATA_PREFIX = "mltrail.data."
#: Set once Python's thread pools take work again at exit (mltrail's exit handler reopens them:
#: see :func:`mltrail.recording.lifecycle._thread_pools_open`).
POOLS_OPEN = threading.Event()
#: How long an upload that met closed pools waits for them to open again.
POOLS_WAIT = 300.0


def pools_closed(error: BaseException) -> bool:
    """Whether ``error`` is Python refusing thread-pool work because the interpreter is shutting
    down: the script has ended and mltrail's exit handler has not run yet."""
    return "cannot schedule new futures after interpreter shutdown" in str(error)


def when_pools_open(action: Callable[[], Any]) -> Any:
    """``action()``, once more after mltrail's exit handler opens the thread pools again if
    they were closed under it.

    Python stops its thread pools when the script's main thread ends, before it joins the
    user's threads and runs ``atexit`` handlers; an upload of the background threads through a
    pool (boto3's S3 transfers) fails in that window, though mltrail's exit handler opens the
    pools again for the uploads still under way. These threads are daemons: waiting here never
    holds the process up.
    """
    try:
        return action()
    except Exception as error:
        if not pools_closed(error) or not POOLS_OPEN.wait(POOLS_WAIT):
            raise
    return action()


# Versions registered in this process, by run: provenance tags that reach the run after the
# registration (the fingerprint is set at the run's end) are copied onto them too.
_registered: dict[str, set[tuple[str, str]]] = {}
_registered_lock = threading.Lock()


def model_version_tags(run: Any) -> dict[str, str]:
    """The provenance tags of a model version registered from ``run`` (an MLflow ``Run``): its
    id, its code and fingerprint tags (:data:`VERSION_PROVENANCE_TAGS`) and the digest of each
    dataset input (``mltrail.data.<name>``)."""
    from mltrail.recording.sanitize import KeySanitizer

    tags = run.data.tags
    found = {VERSION_RUN_TAG: run.info.run_id}
    found.update({k: tags[k] for k in VERSION_PROVENANCE_TAGS if tags.get(k)})
    keys = KeySanitizer()
    for item in run.inputs.dataset_inputs if getattr(run, "inputs", None) else []:
        dataset = item.dataset
        key = keys(VERSION_DATA_PREFIX + dataset.name)
        if dataset.digest and key not in found:
            found[key] = dataset.digest
    return found


def register_model_version(
    client: Any,
    run_id: str,
    name: str,
    source: str,
    *,
    tags: dict[str, str] | None = None,
    model_id: str | None = None,
    aliases: Iterable[str] = (),
) -> str:
    """Create a version of registered model ``name`` (created when missing) from ``source``,
    linked to run ``run_id`` (and to LoggedModel ``model_id`` when given, MLflow 3), with
    ``tags``, and point ``aliases`` at it; then tag the run ``mltrail.model.registered``.

    Returns:
        The new version's number.
    """
    version = _create_version(client, run_id, name, source, tags, model_id, aliases)
    _note_registered(client, run_id, name, version)
    return version


def _create_version(
    client: Any,
    run_id: str,
    name: str,
    source: str,
    tags: dict[str, str] | None,
    model_id: str | None,
    aliases: Iterable[str] = (),
) -> str:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # it exists already
        client.create_registered_model(name)
    extra = {"model_id": model_id} if model_id else {}  # MLflow 2 has no model_id
    created = client.create_model_version(name, source, run_id=run_id, tags=tags, **extra)
    version = str(created.version)
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version)
    return version


def _note_registered(client: Any, run_id: str, name: str, version: str) -> None:
    with _registered_lock:
        _registered.setdefault(run_id, set()).add((name, version))
    client.set_tag(run_id, "mltrail.model.registered", f"{name}/{version}")


def _tag_registered_versions(client: Any, run_id: str) -> None:
    """Copy the provenance that reached the run after a registration (the fingerprint is set at
    the run's end, dataset inputs may follow the model) onto the versions registered from it."""
    with _registered_lock:
        versions = sorted(_registered.get(run_id, ()))
    if versions:
        wanted = model_version_tags(client.get_run(run_id))
        for name, version in versions:
            _tag_missing(client, name, version, wanted)


def _tag_missing(client: Any, name: str, version: str, wanted: dict[str, str]) -> None:
    have = client.get_model_version(name, version).tags
    for key, value in wanted.items():
        if have.get(key) != value:
            client.set_model_version_tag(name, version, key, value)


def _register_model(
    client: Any, run_id: str, data: dict[str, Any], progress: Callable[[], None] | None
) -> None:
    """Register the run's model (its ``artifact_path`` folder, or LoggedModel ``model_id``) as
    a new version of ``name``, tagged with the run's provenance (:func:`model_version_tags`)."""
    name = data["name"]
    if data.get("version") is None:
        run = client.get_run(run_id)
        model_id = data.get("model_id")
        source = data.get("source") or f"{run.info.artifact_uri}/{data['artifact_path']}"
        if model_id and not data.get("source"):
            source = f"models:/{model_id}"
        tags = model_version_tags(run)
        data["version"] = _create_version(client, run_id, name, source, tags, model_id)
        if progress is not None:
            progress()
    _note_registered(client, run_id, name, data["version"])
    # Another thread sends the run's provenance (captured in the background): what it stored
    # after the run was read above, but before the version was noted, is read now.
    _tag_missing(client, name, data["version"], model_version_tags(client.get_run(run_id)))


def _log_logged_model(
    client: Any, run_id: str, data: dict[str, Any], progress: Callable[[], None] | None
) -> None:
    """Create a LoggedModel from a model folder, linked to the run (see
    :func:`mltrail.recording.logged_models.model_record`), and register it when asked."""
    from mlflow.entities import LoggedModelOutput

    from mltrail.recording.logged_models import MODEL_ID_TAG

    if data.get("model_id") is None:
        experiment = data.get("experiment_id") or client.get_run(run_id).info.experiment_id
        model = client.create_logged_model(
            experiment, name=data["name"], source_run_id=run_id, tags=data.get("tags") or None
        )
        data["model_id"] = model.model_id
        if progress is not None:
            progress()
    model_id = data["model_id"]
    client.log_model_artifacts(model_id, data["path"])
    client.finalize_logged_model(model_id, "READY")
    try:
        client.log_outputs(run_id, [LoggedModelOutput(model_id, int(data.get("step") or 0))])
    except Exception as error:  # linked already by the request whose answer a hang cut
        if not _already_stored(error, "inputs"):
            raise
    # The run's tag naming its final model goes with the last of these links: one request
    # less for each run of a loop, and still the last word on the model (see sync).
    final = {MODEL_ID_TAG: model_id} if data.get("final") else {}
    _link_model_metrics(client, run_id, model_id, data.get("metrics") or [], final)
    if data.get("register"):
        registration = data.setdefault(
            "registration", {"name": data["register"], "artifact_path": "model"}
        )
        registration["model_id"] = model_id
        _register_model(client, run_id, registration, progress)


def _log_together(client: Any, run_id: str, data: dict[str, Any]) -> None:
    """A ``batch`` record: its params, tags and metrics in one ``log_batch`` (the writer sends
    the records it was merged from one by one where the store refuses it)."""
    from mlflow.entities import Metric, Param, RunTag

    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in data["metrics"]],
        params=[Param(k, v) for k, v in data["params"].items()],
        tags=[RunTag(k, v) for k, v in data["tags"].items()],
    )
    if data["tags"] and run_id in _registered:
        _tag_registered_versions(client, run_id)


def _parts(data: dict[str, Any]) -> list[Record]:
    """The records a ``batch`` record was merged from, in their order."""
    return [{"kind": kind, "data": data[kind]} for kind in _BATCHED if data[kind]]


_BATCHED = ("params", "tags", "metrics")  # in this order: a batch that names the config first


def _merged(records: list[Record]) -> list[Record]:
    """The params, tags and metrics records of one send as one ``batch`` record, where MLflow's
    limits allow: one request, one look-up of the run, instead of three (each run of a loop of
    short trainings sends each once). It takes the place of the first of them: what they
    preceded they still precede. Not across a tag's deletion, which orders the tags around it.
    """
    parts = [r for r in records if r["kind"] in _BATCHED]
    if len(parts) < 2 or any(r["kind"] == "delete_tag" for r in records):
        return records
    data: dict[str, Any] = {"params": {}, "tags": {}, "metrics": []}
    for record in parts:
        if record["kind"] == "metrics":
            data["metrics"].extend(record["data"])
        else:
            data[record["kind"]].update(record["data"])
    pairs = [*data["params"].items(), *data["tags"].items()]
    size = sum(map(_pair_size, pairs)) + sum(len(m[0]) + 64 for m in data["metrics"])
    if (
        len(data["params"]) > MAX_PARAMS_TAGS_PER_BATCH
        or len(data["tags"]) > MAX_PARAMS_TAGS_PER_BATCH
        or len(pairs) + len(data["metrics"]) > MAX_METRICS_PER_BATCH
        or size > MAX_BATCH_BYTES
    ):
        return records
    first = records.index(parts[0])
    rest = [r for r in records if r["kind"] not in _BATCHED]
    before = [r for r in records[:first] if r["kind"] not in _BATCHED]
    return [*before, {"kind": "batch", "data": data}, *rest[len(before) :]]


def _log_points(
    client: Any, run_id: str, metrics: list[Any], tags: Mapping[str, str] | None = None
) -> None:
    """``log_batch`` of metric points (and ``tags``), once more when a SQL store refuses a
    point it holds.

    MLflow skips the points a run already has, but not one that another writer stores between
    its check and its insert: the run's metrics and a checkpoint's LoggedModel linking the same
    points are sent by two threads at once. The second try finds that point stored.
    """
    from mlflow.entities import RunTag

    run_tags = [RunTag(key, value) for key, value in (tags or {}).items()]
    _send_again_if_stored(
        lambda: client.log_batch(run_id, metrics=metrics, tags=run_tags), "metrics"
    )


def _log_inputs(client: Any, run_id: str, inputs: list[Any]) -> None:
    """``log_inputs``, once more when a SQL store refuses a dataset it holds.

    SQL stores look a dataset up, then insert it: two runs of one experiment logging the same
    data at once (a fold loop's runs, recorded while the previous one still sends) both insert
    it, and the second is refused. Sent again, it finds the first's row.
    """
    _send_again_if_stored(lambda: client.log_inputs(run_id, datasets=inputs), "datasets")


def _send_again_if_stored(send: Callable[[], Any], table: str) -> None:
    """``send()``, and once more when the store refused a row of ``table`` that another request
    inserted between the store's check and its insert (:func:`_already_stored`)."""
    try:
        send()
    except Exception as error:
        if not _already_stored(error, table):
            raise
        send()


def _already_stored(error: BaseException, table: str) -> bool:
    """Whether a SQL store (behind a server or not) refused a row of ``table`` it already holds:
    a request that reached the store, whose answer was lost, sent again from the journal."""
    text = str(error).lower()
    return table in text and ("unique" in text or "duplicate" in text)


def _link_model_metrics(
    client: Any,
    run_id: str,
    model_id: str,
    rows: list[list[Any]],
    tags: Mapping[str, str] | None = None,
) -> None:
    """Link points the run holds (same key, value, timestamp and step: the store keeps them
    once) to LoggedModel ``model_id``, with the dataset they were evaluated on where known;
    the run's ``tags`` go with the last request."""
    from mlflow.entities import Metric

    metrics = [
        Metric(
            key,
            float(value),
            int(ts),
            int(step),
            model_id=model_id,
            dataset_name=dataset_name,
            dataset_digest=dataset_digest,
        )
        for key, value, ts, step, dataset_name, dataset_digest in rows
    ]
    chunks = [*_chunks_by_size(metrics, MAX_METRICS_PER_BATCH, lambda m: len(m.key) + 128)]
    chunks = chunks or [[]]  # no point to link: the tags alone
    for index, chunk in enumerate(chunks):
        last = tags if index == len(chunks) - 1 else None
        if chunk or last:
            _log_points(client, run_id, chunk, last)


def _drop_checkpoint(client: Any, run_id: str, data: dict[str, Any]) -> None:
    """Delete a superseded checkpoint from the store: its run artifact and its LoggedModel.
    Only the store's copy: the user's local files are never touched."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    def repository(uri: str) -> Any:
        try:
            return get_artifact_repository(uri, tracking_uri=getattr(client, "tracking_uri", None))
        except TypeError:  # MLflow 2 takes the URI alone
            return get_artifact_repository(uri)

    if data.get("path"):  # None: a file uploaded again under its name, its model alone goes
        repository(client.get_run(run_id).info.artifact_uri).delete_artifacts(data["path"])
    model_id = data.get("model_id")
    if model_id:
        repository(client.get_logged_model(model_id).artifact_location).delete_artifacts()
        client.delete_logged_model(model_id)


def _lacks_logged_models(error: Exception) -> bool:
    """The server has no LoggedModel endpoints (an MLflow 2 server behind an MLflow 3 client).
    Only the tracking server's answer about those endpoints says so: a 404 from anything else
    (the object store, a proxy) is a failure to journal, not a server without LoggedModels."""
    code = getattr(error, "error_code", "")
    # The status, not any "404" in the text: an unreachable server's error names its port
    # (127.0.0.1:40455), and its LoggedModel was then taken for unsupported and lost.
    return code in {"ENDPOINT_NOT_FOUND", "NOT_IMPLEMENTED"} or bool(
        _ENDPOINT_MISSING.search(str(error)[:500])
    )


_ENDPOINT_MISSING = re.compile(r"/logged-models\S* failed with error code 404\b")


def crashed_run_data(run_id: str, pid: str | None) -> dict[str, Any]:
    """The data of a ``crashed_run`` record: run ``run_id``, left RUNNING by process ``pid``
    that died, ends FAILED with the tag ``mltrail.crashed``."""
    return {"run_id": run_id, "pid": pid, "status": "FAILED", "end_time": int(time.time() * 1000)}


def _set_terminated(client: Any, run_id: str, status: str, end_time: int | None) -> None:
    """End a run. MLflow prints the run's URL to stdout as it ends it; with credentials in the
    tracking URI (``https://user:password@host``) that line shows the password, so then the
    status goes to the store without the print."""
    if "@" not in urlsplit(str(getattr(client, "tracking_uri", ""))).netloc:
        client.set_terminated(run_id, status, end_time=end_time)
        return
    from mlflow.entities import RunStatus

    client._tracking_client.store.update_run_info(
        run_id, RunStatus.from_string(status), end_time or int(time.time() * 1000), None
    )


def _dataset_input(spec: dict[str, Any]) -> Any:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(
        name=spec["name"],
        digest=spec["digest"],
        source_type=spec.get("source_type", "local"),
        source=spec["source"],
        schema=spec.get("schema"),
        profile=spec.get("profile"),
    )
    tags = [InputTag(k, str(v)) for k, v in (spec.get("tags") or {}).items()]
    return DatasetInput(dataset=dataset, tags=tags)


def _coalesce(ops: list[Record]) -> list[Record]:
    """Merge the queued params and tags records into one of each: one request instead of many.

    A tag deletion closes the merge, so tags set before it, the deletion and tags set after it
    reach the store in that order.
    """
    merged: list[Record] = []
    by_kind: dict[str, Record] = {}
    for record in ops:
        kind = record["kind"]
        if kind in {"params", "tags"}:
            if kind in by_kind:
                by_kind[kind]["data"].update(record["data"])
                continue
            record = {"kind": kind, "data": dict(record["data"])}
            by_kind[kind] = record
        elif kind == "delete_tag":
            by_kind.pop("tags", None)  # tags set after the deletion go in a later request
        merged.append(record)
    return merged


def _metric_points(record: Record) -> list[Any]:
    kind = record["kind"]
    return (
        record["data"]
        if kind == "metrics"
        else record["data"]["metrics"]
        if kind == "batch"
        else []
    )


def _is_permanent(error: Exception) -> bool:
    """Errors that retrying cannot fix (bad input rather than an unreachable or busy store)."""
    code = getattr(error, "error_code", None)
    return code in {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST"}


class Writer:
    """Sends one run's data in the background. All ``add_*`` methods return immediately."""

    def __init__(
        self,
        client: Any,
        run_id: str,
        spool: Spool,
        errors: ErrorCounter,
        *,
        flush_interval: float = 1.0,
        retries: int = 3,
        max_queue_values: int = 500_000,
        offline: bool = False,
        heartbeat: Callable[[], dict[str, str]] | None = None,
        heartbeat_interval: float = 60.0,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.spool = spool
        self._errors = errors
        self._flush_interval = flush_interval
        self._retries = max(1, retries)
        self._max_queue_values = max_queue_values
        self._heartbeat = heartbeat
        self._heartbeat_interval = heartbeat_interval
        self._last_heartbeat = 0.0

        self._lock = threading.Lock()
        self._metrics: list[tuple[str, float, int, int]] = []
        self._ops: deque[Record] = deque()
        self._closed = False
        self._inflight = 0
        self._unsent: list[Record] = []  # taken off the queues, neither sent nor journaled yet
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._stop = threading.Event()

        self._uploads: queue.Queue[Record | Callable[[], None] | None] = queue.Queue()
        self._uploading: Record | Callable[[], None] | None = None
        self._journaled_in_flight: Record | None = None  # the close kept it: not again
        self._uploads_pending = 0
        self.bytes_pending = 0

        # Circuit breaker: while offline, batches go straight to the spool.
        self.permanently_offline = offline
        self._offline_until = 0.0
        self._backoff = 2.0
        self.stats = {"values_sent": 0, "values_spooled": 0, "requests": 0, "failures": 0}

        if heartbeat is not None:
            # The first beat goes with the run's first request (its tags, params and first
            # points), not in one of its own: a short training's run sends no other.
            self._ops.append({"kind": "tags", "data": heartbeat()})
            self._last_heartbeat = time.monotonic()

        spool_module.writing.add(run_id)
        self._sender = threading.Thread(target=self._send_loop, name="mltrail-sender", daemon=True)
        self._uploader = threading.Thread(
            target=self._upload_loop, name="mltrail-uploader", daemon=True
        )
        self._sender.start()
        self._uploader.start()

    # --- called from the training thread -------------------------------------------------------

    def add_metrics(self, items: list[tuple[str, float, int, int]]) -> None:
        with self._lock:
            self._metrics.extend(items)
            overflow = len(self._metrics) > self._max_queue_values
            if overflow:
                spilled, self._metrics = self._metrics, []
        if overflow:
            # The store is not keeping up: journal the backlog off-thread to bound memory.
            threading.Thread(
                target=self._spool_records,
                args=([{"kind": "metrics", "data": spilled}],),
                name="mltrail-spill",
                daemon=True,
            ).start()

    def add(self, kind: str, data: Any) -> None:
        """Queue a record of any kind but metrics and artifacts (see :func:`apply_record`);
        records are sent in order. Once the writer is closed, the record is journaled."""
        record = {"kind": kind, "data": data}
        if not self._queue(record):
            # From a background task of the run (the crashed-run repair) that ended after it.
            self._spool_records([record])
        elif kind == "status":
            self._wake.set()

    def _queue(self, record: Record) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._ops.append(record)
            return True

    def journal(self, record: Record) -> None:
        """Journal ``record`` now, behind what this thread journaled before (a registration
        behind the model upload it needs), for ``mltrail sync`` to send."""
        self._spool_records([record])

    def add_artifact(self, path: Path, artifact_path: str | None, *, owned: bool = False) -> None:
        """Upload a file or folder in the background. ``owned`` files are mltrail's temporaries:
        deleted after upload, moved into the spool when the upload fails."""
        try:
            size = Path(path).stat().st_size if Path(path).is_file() else 0
        except OSError:
            size = 0
        with self._idle:
            self._uploads_pending += 1
            self.bytes_pending += size
        record = {"kind": "artifact", "path": str(path), "artifact_path": artifact_path}
        record["owned"] = owned
        record["size"] = size
        self._uploads.put(record)

    def add_job(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the uploader thread (model serialisation and similar slow work)."""
        with self._idle:
            self._uploads_pending += 1
        self._uploads.put(job)

    # --- flushing ------------------------------------------------------------------------------

    def pending(self) -> int:
        with self._lock:
            queued = len(self._metrics) + len(self._ops)
        return queued + self._inflight + self._uploads_pending

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far was sent or spooled; False when out of time."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self.pending():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.set()
                self._idle.wait(min(remaining, 0.05))
        return True

    def close(self, timeout: float) -> dict[str, Any]:
        """Flush within ``timeout`` seconds, stop the threads, journal whatever is left."""
        flushed = self.flush(timeout)
        self._stop.set()
        self._wake.set()
        leftover: list[Record] = []
        with self._lock:
            self._closed = True
            # What the sender holds is lost if the process exits while it waits on a hung
            # store: journal it too (a replay skips what did arrive).
            leftover.extend(self._unsent)
            self._unsent = []
            if self._ops:
                leftover.extend(self._ops)
                self._ops.clear()
            if self._metrics:
                leftover.append({"kind": "metrics", "data": self._metrics})
                self._metrics = []
        # The upload in flight (stuck on a hung store) and those still queued: artifacts are
        # journaled; a job is journaled by its ``fallback`` (a checkpoint: a copy of its file).
        pending = [self._uploading] if not flushed and self._uploading is not None else []
        while True:
            try:
                pending.append(self._uploads.get_nowait())
            except queue.Empty:
                break
        # The run's end goes behind everything else, the uploads journaled below included.
        ends = [r for r in leftover if r["kind"] == "status"]
        leftover = [r for r in leftover if r["kind"] != "status"]
        dropped = []
        for item in pending:
            if isinstance(item, dict):
                in_flight = item is self._uploading
                if in_flight:
                    self._journaled_in_flight = item
                leftover.append(self.artifact_for_spool(item, in_flight=in_flight))
            elif getattr(item, "fallback", None) is not None:
                kept = item.fallback()  # type: ignore[union-attr]
                leftover.extend(kept if isinstance(kept, list) else [kept])
            elif item is not self._uploading:
                dropped.append(getattr(item, "kind", "background job"))
        # The stop marker goes in after the drain above, which would otherwise swallow it and
        # leave the uploader waiting until the join below times out.
        self._uploads.put(None)
        leftover += ends
        if leftover:
            self._spool_records(leftover)
        self._sender.join(timeout=0.5 if not flushed else 5)
        self._uploader.join(timeout=0.5 if not flushed else 5)
        summary = dict(self.stats)
        summary["flushed"] = flushed and not leftover
        summary["spooled"] = self.spool.records_written
        summary["spool_path"] = str(self.spool.path) if self.spool.records_written else None
        summary["spool_error"] = self.spool.disabled_reason
        summary["dropped_jobs"] = dropped
        if not (self._sender.is_alive() or self._uploader.is_alive()):
            spool_module.writing.discard(self.run_id)
        return summary

    # --- background threads --------------------------------------------------------------------

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            self._send_pending()
            if (
                self._heartbeat
                and time.monotonic() - self._last_heartbeat > self._heartbeat_interval
            ):
                self._last_heartbeat = time.monotonic()
                self._queue({"kind": "tags", "data": self._heartbeat()})  # none once closed
        self._send_pending()

    def _send_pending(self) -> None:
        with self._lock:
            ops = list(self._ops)
            self._ops.clear()
            metrics, self._metrics = self._metrics, []
            # Params and tags before metrics: a batch that names the run's config comes first.
            batch = [r for r in _coalesce(ops) if r["kind"] != "status"]
            batch += [{"kind": "metrics", "data": metrics}] if metrics else []
            batch = _merged(batch)
            ends = [r for r in ops if r["kind"] == "status"]
            if ends and self._uploads_pending:
                # The run's end waits for the uploads still under way (the model, a
                # checkpoint): a run never shows complete without them, and when the exit
                # deadline cuts them, close() journals the end behind them.
                self._ops.extend(ends)
                ends = []
            batch += ends
            self._unsent = batch
            self._inflight = len(batch)
        try:
            while True:
                with self._lock:
                    if not self._unsent:
                        break
                    record = self._unsent[0]
                self._deliver(record)
                with self._lock:
                    if self._unsent and self._unsent[0] is record:
                        self._unsent.pop(0)
        finally:
            with self._idle:
                self._inflight = 0
                self._idle.notify_all()

    def _deliver(self, record: Record) -> bool:
        """Send a record, retrying a few times; journal it when the store stays unreachable."""
        values = len(_metric_points(record))
        if self.is_offline():
            self._spool_records([record])
            return False
        if record["kind"] == "batch":
            try:
                self.stats["requests"] += 1
                self._apply(record)
                self.stats["values_sent"] += values
                return True
            except Exception:  # a part refused (the others still land) or the store away
                self.stats["failures"] += 1
                return all([self._deliver(part) for part in _parts(record["data"])])
        error: Exception | None = None
        for attempt in range(self._retries):
            try:
                self.stats["requests"] += 1
                self._apply(record)
                self.stats["values_sent"] += values
                self._backoff = 2.0
                return True
            except Exception as exc:  # any store failure; classified below
                error = exc
                self.stats["failures"] += 1
                if strict_mode() and _is_permanent(exc):
                    raise
                if _is_permanent(exc) or self._stop.is_set():
                    break
                time.sleep(min(0.2 * 2**attempt, 2.0))
        assert error is not None
        self._errors.report(f"sending {record['kind']}", error)
        if not _is_permanent(error):
            self._offline_until = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 60.0)
        self._spool_records([record])
        return False

    def _apply(self, record: Record) -> None:
        """Write ``record`` into this run, once more if it met the pools closed at exit; on a
        local sqlite store, in turn with the process's other writers (see :func:`sqlite_turns`).
        An artifact writes no rows: its copy (a checkpoint of gigabytes) holds up no one."""
        uri = "" if record["kind"] == "artifact" else str(getattr(self.client, "tracking_uri", ""))
        with sqlite_turns(uri):
            when_pools_open(lambda: apply_record(self.client, self.run_id, record))

    def is_offline(self) -> bool:
        """True while the store is known to be unreachable: the run started offline, or a
        request failed moments ago (the circuit breaker is open); records go to the spool."""
        return self.permanently_offline or time.monotonic() < self._offline_until

    def _spool_records(self, records: Iterable[Record]) -> None:
        # A batch is journaled as the records it was merged from: what any mltrail replays.
        records = [p for r in records for p in (_parts(r["data"]) if r["kind"] == "batch" else [r])]
        if self.spool.append(records):
            self.stats["values_spooled"] += sum(len(_metric_points(r)) for r in records)

    def _upload_loop(self) -> None:
        while True:
            item = self._uploads.get()
            if item is None:
                return
            self._uploading = item
            try:
                if callable(item):
                    self._run_job(item)
                else:
                    self._upload(item)
            finally:
                self._uploading = None
                with self._idle:
                    self._uploads_pending -= 1
                    if isinstance(item, dict):
                        self.bytes_pending -= item.get("size", 0)
                    self._idle.notify_all()

    def _run_job(self, job: Callable[[], None]) -> None:
        try:
            when_pools_open(job)  # a job of its own through a pool (a plot drawn by one)
        except Exception as error:
            if strict_mode():
                logger.exception("mltrail background job failed")
            self._errors.report(getattr(job, "kind", "background job"), error)

    def _upload(self, record: Record) -> None:
        if not self.is_offline():
            try:
                self._apply(record)
                if record.get("owned"):
                    _remove(Path(record["path"]))
                return
            except Exception as error:
                self._errors.report("uploading artifacts", error)
                if record is self._journaled_in_flight:  # by the close, as a copy
                    return
        self._spool_records([self.artifact_for_spool(record)])

    def upload_now(
        self, path: Path, artifact_path: str | None, kind: str, *, journal: bool = True
    ) -> bool:
        """Upload a file or folder from the uploader thread (in a background job); when the
        store is unreachable, journal it with a copy, which the user may delete or rotate
        before ``mltrail sync`` runs (``journal=False``: the caller does). Returns True when
        uploaded."""
        record: Record = {"kind": "artifact", "path": str(path), "artifact_path": artifact_path}
        if not self.is_offline():
            try:
                self._apply(record)
                return True
            except Exception as error:
                self._errors.report(kind, error)
        if journal:
            self._spool_records([self.artifact_for_spool(record)])
        return False

    def send_now(self, record: Record, what: str, *, journal: bool = True) -> str:
        """Send a ``logged_model`` record from the uploader thread (in a background job); when
        the store is unreachable, journal it with a copy of its model folder for ``mltrail
        sync`` (``journal=False``: the caller does).

        Returns:
            "sent" (the record's data then holds the ``model_id``), "journaled" ("failed" with
            ``journal=False``), or "unsupported" (a server without LoggedModels: the run's
            artifacts are the model).
        """
        if not self.is_offline():
            try:
                self._apply(record)
                return "sent"
            except Exception as error:
                if record["data"].get("model_id") is None and _lacks_logged_models(error):
                    logger.debug("the store has no LoggedModels: %s", error)
                    return "unsupported"
                if strict_mode():
                    raise
                self._errors.report(what, error)
        if not journal:
            return "failed"
        data = dict(record["data"])
        kept = self.spool.keep_copy(Path(data["path"]))
        if kept is not None:
            data["path"] = str(kept)
        self._spool_records([{"kind": record["kind"], "data": data}])
        return "journaled"

    def artifact_for_spool(self, record: Record, *, in_flight: bool = False) -> Record:
        """The journal record of an artifact upload, with the file kept in the spool
        (``in_flight``: the uploader may still be reading it)."""
        kept_record = {k: record.get(k) for k in ("kind", "path", "artifact_path")}
        path = Path(record["path"])
        # mltrail's own temporaries move into the spool; the user's files are copied (linked),
        # since they may be gone by the time `mltrail sync` runs, and so is a file whose upload
        # is under way (moved from under the uploader, its upload failed and journaled it
        # again, from a path that was gone).
        move = record.get("owned") and not in_flight
        kept = self.spool.keep_file(path) if move else self.spool.keep_copy(path)
        if kept is not None:
            kept_record["path"] = str(kept)
        return kept_record


def _remove(path: Path) -> None:
    try:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass
