"""The store client of the read verbs, and the store they read, both known without MLflow.

Importing MLflow and opening its store takes seconds; the reads of ``mltrail show``, ``diff``,
``verify``, ``which`` and ``checkout`` take milliseconds. On a local sqlite store,
:class:`LocalClient` answers ``MlflowClient``'s read methods that those verbs call
(``get_run``, ``get_experiment``, ``list_artifacts``, ``download_artifacts``) from the store's
tables (:mod:`mltrail.query.sqlite_reader`) and its local artifact folder. Any other method, and
any read it cannot answer (another schema, artifacts on a server or in the cloud), goes to
MLflow's own client, opened on first use, so the answers are MLflow's in every case.

:func:`resolve_uri` is the store a command reads, as MLflow would choose it
(``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's default), without importing
MLflow for it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mltrail.query import sqlite_reader
from mltrail.store import resolve_tracking_uri_unloaded

logger = logging.getLogger("mltrail.query")


def resolve_uri(tracking_uri: str | None) -> str:
    """The tracking URI a command reads, as MLflow would choose it, without importing MLflow
    for it (see :func:`mltrail.store.resolve_tracking_uri_unloaded`)."""
    return resolve_tracking_uri_unloaded(tracking_uri)


class RunNotFound(Exception):
    """The store has no run of that id (read like MLflow's RESOURCE_DOES_NOT_EXIST)."""

    error_code = "RESOURCE_DOES_NOT_EXIST"


class LocalClient:
    """``MlflowClient``'s reads of one local sqlite store, answered without MLflow.

    Methods not defined here are ``MlflowClient``'s, on a client opened on first use.
    """

    def __init__(self, reader: sqlite_reader.SqliteRuns, uri: str) -> None:
        self.reader, self.uri = reader, uri
        self._mlflow: Any = None
        self._lock = threading.Lock()
        self._runs: dict[str, Any] = {}

    @property
    def mlflow(self) -> Any:
        """MLflow's client of the same store (imports MLflow the first time)."""
        with self._lock:
            if self._mlflow is None:
                from mltrail.store import make_client

                logger.debug("opening %s through MLflow", self.uri)
                self._mlflow = make_client(self.uri)
            return self._mlflow

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.mlflow, name)

    def get_run(self, run_id: str) -> Any:
        """The run, as ``MlflowClient.get_run`` returns it; :class:`RunNotFound` when none."""
        try:
            run = self.reader.get_run(run_id)
        except (sqlite_reader.Unsupported, sqlite3.Error) as error:
            logger.debug("reading run %s through MLflow: %s", run_id, error)
            return self.mlflow.get_run(run_id)
        if run is None:
            raise RunNotFound(f"Run '{run_id}' not found")
        self._runs[run_id] = run
        return run

    def get_experiment(self, experiment_id: str) -> Any:
        try:
            found = self.reader.experiment(experiment_id)
        except (sqlite_reader.Unsupported, sqlite3.Error) as error:
            logger.debug("reading experiment %s through MLflow: %s", experiment_id, error)
            return self.mlflow.get_experiment(experiment_id)
        if found is None:
            return self.mlflow.get_experiment(experiment_id)  # MLflow's own error
        return found

    def run_ids_with_prefix(self, prefix: str, limit: int = 20) -> list[str]:
        """Ids of the active runs whose id starts with ``prefix``, newest first."""
        try:
            return self.reader.run_ids_with_prefix(prefix, limit)
        except (sqlite_reader.Unsupported, sqlite3.Error) as error:
            logger.debug("searching run ids through MLflow: %s", error)
            return mlflow_run_ids_with_prefix(self.mlflow, prefix, limit)

    def _artifact_root(self, run_id: str) -> Path | None:
        """The run's local artifact folder; None when its artifacts are not on this disk."""
        run = self._runs.get(run_id)
        if run is None:
            try:
                run = self.get_run(run_id)
            except RunNotFound:
                return None
        return local_path(getattr(run.info, "artifact_uri", None))

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[Any]:
        """The artifacts directly under ``path``, as ``MlflowClient.list_artifacts`` lists them."""
        root = self._artifact_root(run_id)
        if root is None:
            return self.mlflow.list_artifacts(run_id, path)
        folder = root / path if path else root
        if not folder.is_dir():
            return []
        found = []
        for entry in sorted(folder.iterdir()):
            rel = entry.relative_to(root).as_posix()
            is_dir = entry.is_dir()
            size = None if is_dir else entry.stat().st_size
            found.append(SimpleNamespace(path=rel, is_dir=is_dir, file_size=size))
        return found

    def download_artifacts(self, run_id: str, path: str, dst_path: str | None = None) -> str:
        """Copy the artifact ``path`` into ``dst_path`` (a new temporary folder by default) and
        return the local path of the copy, as ``MlflowClient.download_artifacts`` does."""
        root = self._artifact_root(run_id)
        if root is None:
            return self.mlflow.download_artifacts(run_id, path, dst_path)
        source = root / path
        if not source.exists():
            raise OSError(f"No such artifact: {path} of run {run_id}")
        target = Path(dst_path or tempfile.mkdtemp(prefix="mltrail-")) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, target)
        return str(target)


def local_path(artifact_uri: str | None) -> Path | None:
    """The folder of a ``file:`` (or plain absolute path) artifact URI; None for any other."""
    if not artifact_uri:
        return None
    parts = urllib.parse.urlparse(artifact_uri)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return Path(urllib.request.url2pathname(parts.path))
    if not parts.scheme and os.path.isabs(artifact_uri):
        return Path(artifact_uri)
    return None


def mlflow_run_ids_with_prefix(client: Any, prefix: str, limit: int = 20) -> list[str]:
    """Ids of the active runs whose id starts with ``prefix``, through MLflow's search."""
    experiment_ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        experiment_ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            break
    escaped = prefix.replace("'", "")
    found: list[str] = []
    for start in range(0, len(experiment_ids), 100):
        runs = client.search_runs(
            experiment_ids[start : start + 100],
            f"attributes.run_id LIKE '{escaped}%'",
            max_results=limit,
            order_by=["attributes.start_time DESC"],
        )
        found += [r.info.run_id for r in runs if r.info.run_id.startswith(prefix)]
    return found[:limit]
