"""``mltrail sync``: replay spooled runs into the tracking store, exactly once.

A run journaled while the store was unreachable is replayed into the same run (or, when the
run was never created, into a new run tagged ``mltrail.offline_run_id``) with its original
steps and timestamps. Metric points already in the store are skipped, so a replay after a
partial send, or a second replay, adds no duplicates. Progress is saved after every record.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltrail.config import Options
from mltrail.errors import MltrailError
from mltrail.recording import spool as spool_module
from mltrail.recording.lifecycle import _pid_alive
from mltrail.recording.spool import pending_spools, read_journal, read_meta, write_json_atomic
from mltrail.recording.writer import apply_record
from mltrail.store import describe_uri, experiment_id, make_client

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


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[bool]:
    with open(path / "sync.lock", "a") as handle:
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
    return _pid_alive(meta["pid"])


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
    """Replay one spool folder into the store behind ``client``."""
    path = Path(path)
    result = SyncResult(spool=path)
    meta = read_meta(path)
    if not force and _writer_alive(meta):
        result.skipped_reason = f"process {meta['pid']} is still writing it"
        return result
    with _exclusive(path) as mine:
        if not mine:
            result.skipped_reason = "another sync is replaying it"
            return result
        progress_path = path / "progress.json"
        done = json.loads(progress_path.read_text())["applied"] if progress_path.exists() else 0
        records = list(read_journal(path))
        if done < len(records):
            run_id = _target_run(client, meta, tracking_uri, path)
            result.run_id = run_id
            dedupe = _MetricDeduper(client, run_id)
            existing_params = client.get_run(run_id).data.params
            for index in range(done, len(records)):
                record = records[index]
                _replay_record(client, run_id, record, dedupe, existing_params, result)
                result.records += 1
                write_json_atomic(progress_path, {"applied": index + 1})
        else:
            result.run_id = meta.get("server_run_id") or meta["run_id"]
    if not result.problems:
        with contextlib.suppress(OSError):
            path.rename(path.with_name(path.name + ".synced"))
    return result


def _replay_record(
    client: Any,
    run_id: str,
    record: dict[str, Any],
    dedupe: _MetricDeduper,
    existing_params: dict[str, str],
    result: SyncResult,
) -> None:
    kind = record["kind"]
    if kind == "metrics":
        fresh = dedupe.fresh(record["data"])
        result.metrics_skipped += len(record["data"]) - len(fresh)
        result.metrics_sent += len(fresh)
        if not fresh:
            return
        record = {**record, "data": fresh}
    elif kind == "params":
        data = {k: v for k, v in record["data"].items() if k not in existing_params}
        existing_params.update(data)
        if not data:
            return
        record = {**record, "data": data}
    elif kind == "artifact" and not Path(record["path"]).exists():
        result.problems.append(f"artifact {record['path']} no longer exists")
        return
    apply_record(client, run_id, record)


def sync_all(
    spool_dir: Path,
    tracking_uri: str | None = None,
    run_ids: list[str] | None = None,
    *,
    only_uri: str | None = None,
) -> list[SyncResult]:
    """Replay every pending spool folder under ``spool_dir`` (or only ``run_ids``, or only
    those recorded for the store ``only_uri``)."""
    results = []
    clients: dict[str, Any] = {}
    for path in pending_spools(spool_dir):
        meta = read_meta(path)
        if run_ids and meta["run_id"] not in run_ids and path.name not in run_ids:
            continue
        if only_uri is not None and meta.get("tracking_uri") != only_uri:
            continue
        if not (path / "journal.jsonl").exists():
            if not _writer_alive(meta):  # a run that ended with nothing left to send
                import shutil

                shutil.rmtree(path, ignore_errors=True)
            continue
        uri = tracking_uri or _usable_uri(meta.get("tracking_uri"))
        if uri not in clients:
            clients[uri] = make_client(uri)
        results.append(replay(path, clients[uri], uri))
    return results


def _usable_uri(recorded: str | None) -> str:
    """The recorded URI, unless its credentials were redacted: then MLflow's current one."""
    from mltrail.store import resolve_tracking_uri

    if recorded and "***" not in recorded:
        return recorded
    return resolve_tracking_uri(None)


def sync_command(args: argparse.Namespace) -> int:
    spool_dir = Path(args.spool_dir) if args.spool_dir else Options.resolve().spool_dir
    if args.dry_run:
        pending = [p for p in pending_spools(spool_dir) if (p / "journal.jsonl").exists()]
        for path in pending:
            meta = read_meta(path)
            count = sum(1 for _ in read_journal(path))
            print(f"{meta['run_id']}  {count} record(s)  -> {describe_uri(meta['tracking_uri'])}")
        if not pending:
            print(f"Nothing to sync in {spool_dir}.")
        return 0
    try:
        results = sync_all(spool_dir, args.tracking_uri, args.run_ids)
    except OSError as error:
        raise MltrailError(f"Cannot read the spool {spool_dir}: {error}") from error
    if not results:
        print(f"Nothing to sync in {spool_dir}.")
        return 0
    failed = 0
    for r in results:
        if r.skipped_reason:
            print(f"{r.spool.name}: skipped ({r.skipped_reason})")
            continue
        line = (
            f"{r.spool.name}: {r.records} record(s) into run {r.run_id}, "
            f"{r.metrics_sent} metric point(s) sent, {r.metrics_skipped} already there"
        )
        print(line)
        for problem in r.problems:
            failed += 1
            print(f"  problem: {problem}")
    return 1 if failed else 0
