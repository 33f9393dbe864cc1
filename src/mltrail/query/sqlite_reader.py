"""Read-only run queries straight from a local MLflow sqlite store, without starting MLflow.

The read verbs (``mltrail runs``, ``show``, ``diff``, ``verify``, ``which``, ``checkout``)
answer questions whose queries take milliseconds, but importing MLflow and opening its store
(which checks the schema) takes seconds. For a ``sqlite:///`` store this module reads MLflow's
tables directly, with the meaning of ``MlflowClient.search_runs`` (active runs, latest metric
values, tags) and of ``MlflowClient.get_run`` (any run, with its params and dataset inputs).
Whenever something is not as expected (another schema, workspaces enabled, an unreadable
file), ``open_reader`` returns None or a query raises ``Unsupported``, and the caller asks
MLflow instead. ``MLTRAIL_SQLITE_FAST_READS=0`` always asks MLflow.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mltrail.flags import env_flag

logger = logging.getLogger("mltrail.sqlite_reader")

# The tables and columns read here; MLflow has kept them since 1.x. Anything missing: Unsupported.
_COLUMNS = {
    "experiments": {"experiment_id", "name", "lifecycle_stage"},
    "runs": {
        "run_uuid",
        "name",
        "status",
        "start_time",
        "end_time",
        "lifecycle_stage",
        "experiment_id",
    },
    "tags": {"key", "value", "run_uuid"},
    "latest_metrics": {"key", "value", "is_nan", "run_uuid"},
}
# Read by ``get_run`` only: checked when first needed.
_RUN_COLUMNS = {
    "runs": {"artifact_uri", "user_id"},
    "experiments": {"artifact_location"},
    "params": {"key", "value", "run_uuid"},
    "inputs": {"input_uuid", "source_type", "source_id", "destination_type", "destination_id"},
    "datasets": {
        "dataset_uuid",
        "name",
        "digest",
        "dataset_source_type",
        "dataset_source",
        "dataset_schema",
        "dataset_profile",
    },
    "input_tags": {"input_uuid", "name", "value"},
}
#: MLflow's run statuses, as ``--status`` accepts them.
STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
_CHUNK = 500  # run ids per IN (...) query, well below sqlite's variable limit


class Unsupported(Exception):
    """The store is not one this reader understands; ask MLflow."""


def enabled() -> bool:
    """False when ``MLTRAIL_SQLITE_FAST_READS`` turns this reader off (it is on by default)."""
    return env_flag("MLTRAIL_SQLITE_FAST_READS", default=True)


def open_reader(tracking_uri: str) -> SqliteRuns | None:
    """A reader for ``tracking_uri`` when it is a local sqlite store this module understands."""
    if not enabled() or not tracking_uri.startswith("sqlite:///"):
        return None
    if os.environ.get("MLFLOW_WORKSPACE") or env_flag("MLFLOW_ENABLE_WORKSPACES"):
        return None  # workspace scoping is MLflow's to apply
    path = Path(tracking_uri[len("sqlite:///") :]).expanduser()
    if not path.exists():  # MLflow writes its default store's path URL-quoted
        path = Path(urllib.parse.unquote(str(path)))
    try:
        return SqliteRuns(path)
    except (Unsupported, sqlite3.Error) as error:
        logger.debug("reading %s through MLflow: %s", path, error)
        return None


class SqliteRuns:
    """Runs of one MLflow sqlite store, read with a read-only connection."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise Unsupported(f"{path} is not a file")
        # Not bound to one thread: store reads run on a helper thread with a timeout.
        self._db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30, check_same_thread=False
        )
        self.path = path
        self._run_columns_checked = False
        try:
            self._check(_COLUMNS)
        except Unsupported:
            self.close()
            raise

    def _check(self, columns: dict[str, set[str]]) -> None:
        for table, wanted in columns.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if not wanted <= have:
                raise Unsupported(f"table {table} lacks {sorted(wanted - have)}")

    def _check_run_columns(self) -> None:
        if not self._run_columns_checked:
            self._check(_RUN_COLUMNS)
            self._run_columns_checked = True

    def close(self) -> None:
        self._db.close()

    def experiments(self, name: str | None) -> dict[str, str] | None:
        """Experiment id -> name: the named one (None when there is none), else every active one."""
        if name:
            rows = self._db.execute(
                "SELECT experiment_id, name FROM experiments WHERE name = ?", (name,)
            ).fetchall()
            if len(rows) > 1:
                raise Unsupported("several experiments of that name (workspaces)")
            return {str(rows[0][0]): rows[0][1]} if rows else None
        rows = self._db.execute(
            "SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active'"
        )
        return {str(i): n for i, n in rows}

    def experiment(self, experiment_id: str) -> SimpleNamespace | None:
        """The experiment with this id (as ``MlflowClient.get_experiment`` has it), or None."""
        self._check_run_columns()
        row = self._db.execute(
            "SELECT experiment_id, name, artifact_location, lifecycle_stage FROM experiments "
            "WHERE experiment_id = ?",
            (_int(experiment_id),),
        ).fetchone()
        if row is None:
            return None
        return SimpleNamespace(
            experiment_id=str(row[0]), name=row[1], artifact_location=row[2], lifecycle_stage=row[3]
        )

    def get_run(self, run_id: str) -> SimpleNamespace | None:
        """The run ``run_id``, deleted or not, as ``MlflowClient.get_run`` has it (info with
        ``artifact_uri``, tags, latest metrics, params, dataset inputs), or None."""
        self._check_run_columns()
        row = self._db.execute(
            "SELECT run_uuid, name, experiment_id, status, start_time, end_time, artifact_uri, "
            "lifecycle_stage, user_id FROM runs WHERE run_uuid = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        (run,) = self._with_data([row[:6]])
        run.info.artifact_uri, run.info.lifecycle_stage, run.info.user_id = row[6:]
        run.data.params = dict(
            self._db.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,))
        )
        run.inputs = SimpleNamespace(dataset_inputs=self._dataset_inputs(run_id), model_inputs=[])
        return run

    def _dataset_inputs(self, run_id: str) -> list[SimpleNamespace]:
        # MLflow's own query (SqlAlchemyStore._get_run_inputs), so the order is the same.
        found: dict[str, SimpleNamespace] = {}
        for row in self._db.execute(
            "SELECT d.dataset_uuid, d.name, d.digest, d.dataset_source_type, d.dataset_source, "
            "d.dataset_schema, d.dataset_profile, t.name, t.value FROM inputs i "
            "JOIN datasets d ON i.source_id = d.dataset_uuid "
            "LEFT OUTER JOIN input_tags t ON t.input_uuid = i.input_uuid "
            "WHERE i.destination_type = 'RUN' AND i.destination_id IN (?) "
            "ORDER BY i.destination_id",
            (run_id,),
        ):
            item = found.get(row[0])
            if item is None:
                dataset = SimpleNamespace(
                    name=row[1],
                    digest=row[2],
                    source_type=row[3],
                    source=row[4],
                    schema=row[5],
                    profile=row[6],
                )
                item = found[row[0]] = SimpleNamespace(dataset=dataset, tags=[])
            if row[7] is not None:
                item.tags.append(SimpleNamespace(key=row[7], value=row[8]))
        return list(found.values())

    def run_ids_with_prefix(self, prefix: str, limit: int = 20) -> list[str]:
        """Ids of the active runs whose id starts with ``prefix`` (at most ``limit``)."""
        rows = self._db.execute(
            "SELECT run_uuid FROM runs WHERE substr(run_uuid, 1, ?) = ? "
            "AND lifecycle_stage = 'active' ORDER BY start_time DESC LIMIT ?",
            (len(prefix), prefix, limit),
        )
        return [row[0] for row in rows]

    def all_runs(
        self, experiment_ids: list[str], limit: int = 1000, status: str | None = None
    ) -> list[Any]:
        """The active runs of ``experiment_ids`` (with ``status``, when given), newest first."""
        where, args = (["r.status = ?"], [status]) if status else (["1 = 1"], [])
        return self._runs("", where, args, experiment_ids, limit)

    def runs_with_tag(
        self,
        experiment_ids: list[str],
        key: str,
        value: str | None = None,
        prefix: str | None = None,
        limit: int = 1000,
        status: str | None = None,
    ) -> list[Any]:
        """Active runs whose tag ``key`` equals ``value`` (or starts with ``prefix``, or is set),
        with ``status`` when given."""
        where, args = ["t.key = ?"], [key]
        if status:
            where.append("r.status = ?")
            args.append(status)
        if value is not None:
            where.append("t.value = ?")
            args.append(value)
        elif prefix is not None:
            where.append("substr(t.value, 1, ?) = ?")
            args += [len(prefix), prefix]
        return self._runs(
            "JOIN tags t ON t.run_uuid = r.run_uuid", where, args, experiment_ids, limit
        )

    def runs_by_id(
        self,
        experiment_ids: list[str],
        run_ids: Iterable[str],
        limit: int,
        status: str | None = None,
    ) -> list[Any]:
        ids = list(run_ids)
        found: list[Any] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            where = [f"r.run_uuid IN ({', '.join('?' * len(chunk))})"]
            if status:
                where.append("r.status = ?")
            found += self._runs(
                "", where, [*chunk, *([status] if status else [])], experiment_ids, limit
            )
        return found

    def _runs(
        self, join: str, where: list[str], args: list[Any], experiment_ids: list[str], limit: int
    ) -> list[Any]:
        if not experiment_ids:
            return []
        found: list[Any] = []
        for start in range(0, len(experiment_ids), _CHUNK):
            chunk = [int(i) for i in experiment_ids[start : start + _CHUNK]]
            sql = (
                "SELECT r.run_uuid, r.name, r.experiment_id, r.status, r.start_time, r.end_time "
                f"FROM runs r {join} WHERE r.lifecycle_stage = 'active' AND "
                f"r.experiment_id IN ({', '.join('?' * len(chunk))}) AND {' AND '.join(where)} "
                "ORDER BY r.start_time DESC LIMIT ?"
            )
            found += self._db.execute(sql, [*chunk, *args, limit]).fetchall()
        found.sort(key=lambda row: row[4] or 0, reverse=True)
        return self._with_data(found[:limit])

    def _with_data(self, rows: list[tuple]) -> list[Any]:
        tags: dict[str, dict[str, str]] = {row[0]: {} for row in rows}
        metrics: dict[str, dict[str, float]] = {row[0]: {} for row in rows}
        ids = list(tags)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            for run_id, key, value in self._db.execute(
                f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", chunk
            ):
                tags[run_id][key] = value
            for run_id, key, value, is_nan in self._db.execute(
                "SELECT run_uuid, key, value, is_nan FROM latest_metrics "
                f"WHERE run_uuid IN ({marks})",
                chunk,
            ):
                metrics[run_id][key] = math.nan if is_nan else float(value)
        return [
            SimpleNamespace(
                info=SimpleNamespace(
                    run_id=run_id,
                    run_name=name,
                    experiment_id=str(experiment_id),
                    status=status,
                    start_time=start_time,
                    end_time=end_time,
                ),
                data=SimpleNamespace(tags=tags[run_id], metrics=metrics[run_id]),
            )
            for run_id, name, experiment_id, status, start_time, end_time in rows
        ]


def _int(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise Unsupported(f"experiment id {text!r} is not a number") from None
