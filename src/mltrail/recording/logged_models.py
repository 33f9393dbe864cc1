"""Models and checkpoints as MLflow 3 LoggedModels, once for every adapter.

On MLflow 3 the final model of a run, and each checkpoint an adapter can load as a model, is
also a LoggedModel linked to the run: the run page lists it under "Logged models",
``mlflow.search_logged_models`` finds and ranks it by its metrics, and ``models:/<model_id>``
loads it. The run's own ``model/`` and ``checkpoints/`` artifacts stay (MLflow 2, ``mltrail
which``, the registry of an MLflow 2 server).

This module is the training thread's half: whether the installed MLflow has LoggedModels, the
metric points a model is linked to, and the record that the writer sends (kind
``logged_model``, see :func:`mltrail.recording.writer.apply_record`) or journals for
``mltrail sync`` when the store is away.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mltrail.recording.checkpoints import mode_for

logger = logging.getLogger("mltrail.logged_models")

#: Name of the final model's LoggedModel. Not ``model``: MLflow 3 lists a run's LoggedModel
#: named like one of its artifact folders inside that folder, so ``list_artifacts(run, "model")``
#: would give every file of ``model/`` twice (and fail where the client's store is not the
#: default one, as MLflow looks the model up there).
FINAL_MODEL_NAME = "final-model"
#: Run tag holding the final model's LoggedModel id.
MODEL_ID_TAG = "mltrail.model.id"
#: LoggedModel tags mltrail sets: what the model is (``model`` or ``checkpoint``), and for a
#: checkpoint its artifact path in the run.
KIND_TAG = "mltrail.kind"
CHECKPOINT_TAG = "mltrail.checkpoint"
# Metric keys recorded per step (one point per optimizer step) or sampled from the machine:
# not a model's metrics.
_NOT_MODEL_METRICS = ("system/", "step/")
#: Steps per metric key that :class:`MetricPoints` keeps (besides each key's best point).
WINDOW = 256
# Dataset roles, by the prefix of the metric keys evaluated on them.
_ROLE_PREFIXES = {
    "val": ("validation", "val", "valid", "eval"),
    "valid": ("validation", "val", "valid", "eval"),
    "validation": ("validation", "val", "valid", "eval"),
    "eval": ("eval", "validation", "val"),
    "test": ("test",),
    "train": ("train", "training"),
    "training": ("train", "training"),
}


@functools.cache
def supported() -> bool:
    """Whether the installed MLflow has LoggedModels (MLflow 3); MLflow 2.16+ gets the run's
    ``model/`` and ``checkpoints/`` artifacts only."""
    try:
        from mlflow.entities import LoggedModelOutput  # noqa: F401
        from mlflow.tracking import MlflowClient
    except ImportError:
        return False
    return all(
        hasattr(MlflowClient, name)
        for name in ("create_logged_model", "log_model_artifacts", "log_outputs")
    )


class MetricPoints:
    """The metric points of a run as logged, with their timestamps: a model is linked to points
    the run already holds (same key, step, timestamp and value), which the store keeps once, so
    linking adds no second point to the run's history.

    Memory stays bounded: per key, the points of the latest :data:`WINDOW` steps (a checkpoint
    is linked to the step just logged) and the best point so far."""

    def __init__(self) -> None:
        self._by_key: dict[str, dict[int, tuple[float, int]]] = {}
        self._best: dict[str, tuple[float, int, int]] = {}
        self._larger: dict[str, bool] = {}  # per key: is larger better
        self._lock = threading.Lock()  # added to by the training, read by the uploader

    def add(self, items: Iterable[tuple[str, float, int, int]]) -> None:
        """Remember ``(key, value, timestamp_ms, step)`` points (the last one of a step wins)."""
        with self._lock:
            for key, value, ts, step in items:
                if key.startswith(_NOT_MODEL_METRICS):
                    continue
                steps = self._by_key.get(key)
                if steps is None:
                    steps = self._by_key[key] = {}
                    self._larger[key] = mode_for(key) == "max"
                steps[step] = (value, ts)
                if len(steps) > WINDOW:
                    del steps[next(iter(steps))]  # the oldest step logged
                if value == value:  # NaN is never best
                    best = self._best.get(key)
                    if best is None or (value > best[0] if self._larger[key] else value < best[0]):
                        self._best[key] = (value, ts, step)

    def last_step(self) -> int:
        """The largest step any model metric was logged at (0 before any)."""
        with self._lock:
            return max((max(steps) for steps in self._by_key.values() if steps), default=0)

    def at_step(self, step: int) -> list[tuple[str, float, int, int]]:
        """The points logged at ``step``."""
        with self._lock:
            return [
                (key, steps[step][0], steps[step][1], step)
                for key, steps in self._by_key.items()
                if step in steps
            ]

    def final_and_best(self) -> list[tuple[str, float, int, int]]:
        """Each key's last point and, when another, its best one (by :func:`mode_for`)."""
        found = []
        with self._lock:
            for key, steps in self._by_key.items():
                if not steps:
                    continue
                last = max(steps)
                found.append((key, steps[last][0], steps[last][1], last))
                best = self._best.get(key)
                if best is not None and best[2] != last:
                    found.append((key, best[0], best[1], best[2]))
        return found


def adopt_model_file(checkpoint: Path, folder: Path, model_file: str) -> None:
    """Put checkpoint file ``checkpoint`` in place of the stand-in serialisation at
    ``model_file`` of the MLflow Model ``folder`` (see
    :class:`~mltrail.recording.checkpoints.CheckpointModel`): a hard link
    where the file system allows, else a copy; the MLmodel's size follows.

    Raises:
        RuntimeError: when the flavor wrote no ``model_file`` (its layout changed); counted as
            an error of the run, the checkpoint stays a file.
    """
    target = folder / model_file
    if not target.is_file():
        raise RuntimeError(
            f"MLflow's model folder has no {model_file}: this MLflow version lays its flavor "
            "out otherwise, so the checkpoint stays a file (checkpoints_as_models=false hides "
            "this warning)."
        )
    target.unlink()
    try:
        os.link(checkpoint, target)
    except OSError:
        shutil.copy2(checkpoint, target)
    from mlflow.models import Model

    meta = folder / "MLmodel"
    model = Model.load(str(meta))
    if getattr(model, "model_size_bytes", None) is not None:
        model.model_size_bytes = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        model.save(str(meta))


def dataset_for(key: str, datasets: Iterable[Mapping[str, Any]]) -> tuple[str, str] | None:
    """The ``(name, digest)`` of the dataset a metric was evaluated on, where one is known: the
    dataset input whose role (``mlflow.data.context``) matches the key's prefix (``val_loss``:
    validation, ``test_accuracy``: test, ``train_loss`` or no prefix: train)."""
    head = key.replace("-", "_").split("_", 1)[0].split("/", 1)[0].lower()
    roles = _ROLE_PREFIXES.get(head, ("train", "training"))
    for role in roles:
        for spec in datasets:
            context = (spec.get("tags") or {}).get("mlflow.data.context", spec.get("name"))
            if context == role and spec.get("digest"):
                return str(spec["name"]), str(spec["digest"])
    return None


def linked_metrics(
    points: Iterable[tuple[str, float, int, int]], datasets: Iterable[Mapping[str, Any]]
) -> list[list[Any]]:
    """The metric part of a ``logged_model`` record: ``[key, value, timestamp, step,
    dataset_name, dataset_digest]`` lists (dataset None where unknown)."""
    datasets = list(datasets)
    rows = []
    for key, value, ts, step in points:
        dataset = dataset_for(key, datasets)
        rows.append([key, value, ts, step, *(dataset or (None, None))])
    return rows


def model_record(
    name: str,
    path: str,
    *,
    step: int,
    metrics: list[list[Any]],
    tags: Mapping[str, str],
    experiment_id: str | None,
    register: str | None = None,
    final: bool = False,
) -> dict[str, Any]:
    """The data of a ``logged_model`` record: create LoggedModel ``name`` from the MLflow Model
    folder ``path``, linked to the record's run at ``step`` with ``metrics`` (see
    :func:`linked_metrics`) and ``tags``; ``register`` also registers it under that name; ``final`` marks the run's final model (the
    run tag :data:`MODEL_ID_TAG`).
    ``model_id`` (and ``version``) are filled in as the steps are done, so that a retry or a
    ``mltrail sync`` replay goes on from there."""
    return {
        "name": name,
        "path": path,
        "step": int(step),
        "metrics": metrics,
        "tags": dict(tags),
        "experiment_id": experiment_id,
        "register": register,
        "final": final,
        "model_id": None,
    }
