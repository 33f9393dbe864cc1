"""``mltrail sync``: replay spooled runs into the tracking store, exactly once.

A run journaled while the store was unreachable is replayed into the same run (or, when the
run was never created, into a new run tagged ``mltrail.offline_run_id``) with its original
steps and timestamps. Metric points already in the store are skipped, so a replay after a
partial send, or a second replay, adds no duplicates. Progress is saved after every record, and
within a record once a child run or a model version is created, so neither is made twice.
Child runs are created in the experiment of the run they were replayed into, under its final
run id; the end of a crashed run is replayed only while that run is still RUNNING as left by
the same process (it may have been resumed or repaired since).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltrail.errors import MltrailError
from mltrail.recording import spool as spool_module
from mltrail.recording.lifecycle import pid_alive
from mltrail.recording.logged_models import MODEL_ID_TAG
from mltrail.recording.spool import pending_spools, read_journal, read_meta, write_json_atomic
from mltrail.recording.writer import apply_record
from mltrail.store import experiment_id, make_client

logger = logging.getLogger("mltrail.sync")


@dataclass
class SyncResult:
    """What one spool folder's replay did."""

    spool: Path
    run_id: str | None = None
    records: int = 0
    metrics_sent: int = 0
    metrics_skipped: int = 0
    skipped_reason: str | None = None
    problems: list[str] = field(default_factory=list)
    offline_run_id: str | None = None  #: the id the run was journaled under
    bytes: int = 0  #: size of the spool folder's journal and files

    @property
    def state(self) -> str:
        """``synced``, ``skipped`` (left for later, or done by another process) or ``failed``."""
        if self.skipped_reason:
            return "skipped"
        return "failed" if self.problems else "synced"

    def as_dict(self) -> dict[str, Any]:
        """The result as ``mltrail sync --json`` prints it."""
        return {
            "spool": self.spool.name,
            "run_id": self.run_id,
            "offline_run_id": self.offline_run_id,
            "state": self.state,
            "records": self.records,
            "metrics_sent": self.metrics_sent,
            "metrics_skipped": self.metrics_skipped,
            "bytes": self.bytes,
            "reason": self.skipped_reason,
            "problems": list(self.problems),
        }


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[bool]:
    try:
        handle = open(path / "sync.lock", "a")  # noqa: SIM115 (closed below)
    except FileNotFoundError:  # another sync finished the folder and moved it
        yield False
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _writer_alive(meta: dict[str, Any]) -> bool:
    """True when the process that journals this run is still running and may still write it
    (in this process: while the run's writer is open)."""
    if meta.get("host") != socket.gethostname() or not isinstance(meta.get("pid"), int):
        return False
    if meta["pid"] == os.getpid():
        return meta.get("run_id") in spool_module.writing
    return pid_alive(meta["pid"])


def _target_run(client: Any, meta: dict[str, Any], tracking_uri: str, path: Path) -> str:
    """The run to replay into: the recorded one if it exists, else one created now (once)."""
    from mlflow.exceptions import MlflowException

    candidate = meta.get("server_run_id") or (None if meta.get("offline") else meta["run_id"])
    if candidate:
        try:
            client.get_run(candidate)
            return candidate
        except MlflowException:
            if meta.get("server_run_id"):
                raise
    if meta.get("experiment_id"):
        exp_id = meta["experiment_id"]
    else:
        exp_id = experiment_id(client, meta.get("experiment"), tracking_uri)
    run = client.create_run(
        exp_id,
        run_name=meta.get("run_name"),
        tags={"mltrail.offline_run_id": meta["run_id"]},
    )
    meta["server_run_id"] = run.info.run_id
    write_json_atomic(path / "meta.json", meta)  # never create it twice
    return run.info.run_id


class _MetricDeduper:
    """Skips metric points the store already holds (same key, step, timestamp and value)."""

    def __init__(self, client: Any, run_id: str) -> None:
        self._client = client
        self._run_id = run_id
        self._seen: dict[str, set[tuple[int, int, float]]] = {}

    def fresh(self, points: list[list[Any]]) -> list[list[Any]]:
        keep = []
        for key, value, ts, step in points:
            if key not in self._seen:
                history = self._client.get_metric_history(self._run_id, key)
                self._seen[key] = {(m.step, m.timestamp, _norm(m.value)) for m in history}
            point = (int(step), int(ts), _norm(float(value)))
            if point not in self._seen[key]:
                self._seen[key].add(point)
                keep.append([key, value, ts, step])
        return keep


def _norm(value: float) -> float | str:
    return "nan" if value != value else value


def replay(path: Path, client: Any, tracking_uri: str, *, force: bool = False) -> SyncResult:
    """Replay one spool folder into the store behind ``client``.

    Args:
        path: the run's spool folder.
        client: an ``MlflowClient`` of the store.
        tracking_uri: the store's URI (to find or create the experiment of an offline run).
        force: replay even when the process that journals the run is still running (the run
            itself replaying its spool at its end).

    Returns:
        What the replay did, or why it skipped the folder.
    """
    path = Path(path)
    result = SyncResult(spool=path, offline_run_id=path.name, bytes=folder_size(path))
    meta = read_meta(path)
    result.offline_run_id = meta.get("run_id", path.name)
    if not force and _writer_alive(meta):
        result.skipped_reason = f"process {meta['pid']} is still writing it"
        return result
    with _exclusive(path) as mine:
        if not mine or not (path / "meta.json").exists():
            result.skipped_reason = "another sync is replaying it"
            return result
        meta = read_meta(path)  # as the last sync left it (the run it created, if any)
        progress_path = path / "progress.json"
        progress = json.loads(progress_path.read_text()) if progress_path.exists() else {}
        done = progress.get("applied", 0)
        records = list(read_journal(path))
        if done < len(records):
            run_id = _target_run(client, meta, tracking_uri, path)
            result.run_id = run_id
            target = _Target(client, run_id, result)
            for index in range(done, len(records)):
                record = records[index]
                if progress.get("partial") is not None and index == done:
                    # A child run or model version this record created before an interruption.
                    record = {**record, "data": {**record["data"], **progress["partial"]}}
                target.replay(record, functools.partial(_save_partial, progress_path, index))
                result.records += 1
                write_json_atomic(progress_path, {"applied": index + 1})
        else:
            result.run_id = meta.get("server_run_id") or meta["run_id"]
        if not result.problems:
            # Under the lock: a sync waiting for it then finds the folder gone, not half done.
            with contextlib.suppress(OSError):
                path.rename(path.with_name(path.name + ".synced"))
    return result


def folder_size(path: Path) -> int:
    """Bytes of a spool folder's files (0 for a folder gone meanwhile)."""
    total = 0
    for current, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(current, name)).st_size
    return total


def _save_partial(progress_path: Path, index: int, data: dict[str, Any]) -> None:
    write_json_atomic(progress_path, {"applied": index, "partial": data})


class _Target:
    """The run a spool folder is replayed into, with what the store already holds of it."""

    def __init__(self, client: Any, run_id: str, result: SyncResult) -> None:
        run = client.get_run(run_id)
        self.client = client
        self.run_id = run_id
        self.experiment_id = run.info.experiment_id
        self.params = dict(run.data.params)
        self.dedupe = _MetricDeduper(client, run_id)
        self.result = result

    def replay(
        self, record: dict[str, Any], save_partial: Callable[[dict[str, Any]], None]
    ) -> None:
        """Send ``record`` unless the store holds it already; ``save_partial`` keeps the
        progress made inside it (see :func:`apply_record`)."""
        kind, result = record["kind"], self.result
        if kind == "metrics":
            fresh = self.dedupe.fresh(record["data"])
            result.metrics_skipped += len(record["data"]) - len(fresh)
            result.metrics_sent += len(fresh)
            if not fresh:
                return
            record = {**record, "data": fresh}
        elif kind == "params":
            data = {k: v for k, v in record["data"].items() if k not in self.params}
            self.params.update(data)
            if not data:
                return
            record = {**record, "data": data}
        elif kind == "artifact" and not Path(record["path"]).exists():
            result.problems.append(f"artifact {record['path']} no longer exists")
            return
        elif kind == "logged_model" and not Path(record["data"]["path"]).exists():
            result.problems.append(f"model folder {record['data']['path']} no longer exists")
            return
        elif kind == "logged_model" and self._final_model_stored(record["data"]):
            return
        elif kind == "child_run":
            # In the experiment of the run it is replayed into: an offline run's has no id
            # until now.
            record = {**record, "data": {**record["data"], "experiment_id": self.experiment_id}}
        elif kind == "crashed_run" and not self._still_crashed(record["data"]):
            return
        apply_record(self.client, self.run_id, record, lambda: save_partial(record["data"]))

    def _final_model_stored(self, data: dict[str, Any]) -> bool:
        """True for a final model that its run's process went on sending after the exit
        deadline journaled it (a LoggedModel already made, its upload still running): the run's
        tag names it, and it is registered where that was asked for."""
        if not (data.get("final") and data.get("model_id")):
            return False
        tags = self.client.get_run(self.run_id).data.tags
        registered = not data.get("register") or "mltrail.model.registered" in tags
        return tags.get(MODEL_ID_TAG) == data["model_id"] and registered

    def _still_crashed(self, data: dict[str, Any]) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(data["run_id"])
        except MlflowException:  # deleted since
            return False
        return run.info.status == "RUNNING" and run.data.tags.get("mltrail.pid") == data.get("pid")


def pending(spool_dir: Path, run_ids: list[str] | None = None) -> list[tuple[dict[str, Any], int]]:
    """The spool folders under ``spool_dir`` with records to replay: (meta, record count);
    only those of ``run_ids`` when given (see :func:`sync_all` for the names that match)."""
    found = []
    for path in pending_spools(spool_dir):
        try:
            meta = read_meta(path)
            if run_ids and not _matches(path, meta, run_ids):
                continue
            if (path / "journal.jsonl").exists():
                found.append((meta, sum(1 for _ in read_journal(path))))
        except (MltrailError, OSError, ValueError):  # moved or replaced by another sync
            continue
    if run_ids:
        _check_known(spool_dir, run_ids)
    return found


def _matches(path: Path, meta: dict[str, Any], run_ids: list[str]) -> bool:
    names = {path.name.removesuffix(".synced"), meta.get("run_id"), meta.get("server_run_id")}
    return any(run_id in names for run_id in run_ids)


def _check_known(spool_dir: Path, run_ids: list[str]) -> list[Path]:
    """The ``.synced`` folders of ``run_ids``; raises when one of them is in no folder."""
    root = Path(spool_dir)
    folders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    seen: set[str] = set()
    done = []
    for path in folders:
        try:
            meta = read_meta(path)
        except (MltrailError, OSError, ValueError):
            meta = {}
        names = {path.name.removesuffix(".synced"), meta.get("run_id"), meta.get("server_run_id")}
        hits = names & set(run_ids)
        seen |= hits
        if hits and path.name.endswith(".synced"):
            done.append(path)
    unknown = [run_id for run_id in run_ids if run_id not in seen]
    if unknown:
        listed = ", ".join(repr(r) for r in unknown)
        raise MltrailError(
            f"There is no run {listed} in the spool {root}: nothing was journaled for it "
            "(`mltrail sync --dry-run` lists what is waiting)."
        )
    return done


def sync_all(
    spool_dir: Path,
    tracking_uri: str | None = None,
    run_ids: list[str] | None = None,
    *,
    only_uri: str | None = None,
    on_result: Callable[[SyncResult], None] | None = None,
) -> list[SyncResult]:
    """Replay every pending spool folder under ``spool_dir`` (or only ``run_ids``, or only
    those recorded for the store ``only_uri``).

    A folder another process is writing, replaying or moving is skipped. A run that cannot be
    sent (its store unreachable or unsupported) gets a result with the problem, and the others
    are still replayed.

    Args:
        spool_dir: the spool directory.
        tracking_uri: replay into this store instead of the one each run recorded.
        run_ids: only these runs: the id a run was journaled under or the id it has in the
            store. A run already synced gets a skipped result.
        only_uri: only the runs recorded for this store.
        on_result: called with each result as soon as it is known.

    Returns:
        One result per folder replayed or skipped.

    Raises:
        MltrailError: when a run of ``run_ids`` is not in the spool at all.
    """
    done = _check_known(spool_dir, run_ids) if run_ids else []
    results = []
    clients: dict[str, Any] = {}

    def report(result: SyncResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    for path in done:
        report(SyncResult(spool=path, run_id=_synced_id(path), skipped_reason="already synced"))
    for path in pending_spools(spool_dir):
        try:
            meta = read_meta(path)
        except (MltrailError, OSError, ValueError):  # moved or replaced by another sync
            continue
        if run_ids and not _matches(path, meta, run_ids):
            continue
        if only_uri is not None and meta.get("tracking_uri") != only_uri:
            continue
        if not (path / "journal.jsonl").exists():
            if not _writer_alive(meta):  # a run that ended with nothing left to send
                import shutil

                shutil.rmtree(path, ignore_errors=True)
            continue
        try:
            uri = tracking_uri or _usable_uri(meta.get("tracking_uri"))
            if uri not in clients:
                clients[uri] = make_client(uri)
            result = replay(path, clients[uri], uri)
        except Exception as error:
            if not path.exists():  # another sync finished it meanwhile
                continue
            logger.debug("replaying %s failed", path, exc_info=True)
            result = SyncResult(spool=path, offline_run_id=meta.get("run_id"))
            text = str(error).strip().splitlines()
            result.problems.append(
                f"cannot send it to {meta.get('tracking_uri') or tracking_uri}: "
                f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
            )
        report(result)
    return results


def _synced_id(path: Path) -> str:
    try:
        meta = read_meta(path)
    except (MltrailError, OSError, ValueError):
        return path.name.removesuffix(".synced")
    return meta.get("server_run_id") or meta.get("run_id") or path.name.removesuffix(".synced")


_replayed: set[tuple[str, str]] = set()
_replayed_lock = threading.Lock()


def replay_dead_spools_soon(spool_dir: Path, tracking_uri: str) -> None:
    """Upload what processes that ended before they could send it journaled for
    ``tracking_uri``, on a background thread; once per spool folder and store in a process."""
    key = (str(spool_dir), tracking_uri)
    with _replayed_lock:
        if key in _replayed:
            return
        _replayed.add(key)

    def work() -> None:
        try:
            for result in sync_all(spool_dir, only_uri=tracking_uri):
                if result.records:
                    logger.warning(
                        "mltrail: uploaded %d journaled record(s) of run %s left by a process "
                        "that ended before it could send them.",
                        result.records,
                        result.run_id,
                    )
        except Exception:
            logger.debug("replaying dead processes' spools failed", exc_info=True)

    threading.Thread(target=work, name="mltrail-replay", daemon=True).start()


def _usable_uri(recorded: str | None) -> str:
    """The recorded URI, unless its credentials were redacted: then MLflow's current one."""
    from mltrail.store import resolve_tracking_uri

    if recorded and "***" not in recorded:
        return recorded
    return resolve_tracking_uri(None)
