"""Early stopping, reported under one set of names by every adapter.

An adapter reads its framework's early-stopping callbacks into :class:`EarlyStop` records;
this module names them: the first is ``early_stopping``, the next ``early_stopping_2``, ...

- params ``<name>.monitor``, ``.mode``, ``.patience``, ``.min_delta`` and whatever else the
  framework's callback is configured with;
- metrics, at the run's last epoch step: ``<name>.stopped_epoch`` (only when it stopped the
  training), ``.best_score``, ``.best_epoch``, ``.wait_count``, ``.restored_best_weights``
  (each when the framework knows it), epochs on the run's step scale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any


@dataclasses.dataclass
class EarlyStop:
    """One early-stopping callback, as a framework reports it.

    Attributes:
        settings: its configuration (monitor, mode, patience, min_delta, ...).
        stopped_epoch: the epoch it stopped the training at (None: it did not stop it).
        best_score: the best value of the monitored metric.
        best_epoch: the epoch of that value.
        wait_count: epochs without improvement when the training ended.
        restored_best_weights: whether it put the best epoch's weights back.
    """

    settings: Mapping[str, Any]
    stopped_epoch: int | None = None
    best_score: float | None = None
    best_epoch: int | None = None
    wait_count: int | None = None
    restored_best_weights: bool | None = None


def early_stopping_names(count: int) -> list[str]:
    """``early_stopping``, ``early_stopping_2``, ... for ``count`` callbacks."""
    return ["early_stopping" if i == 0 else f"early_stopping_{i + 1}" for i in range(count)]


def early_stopping_params(stops: Sequence[EarlyStop]) -> dict[str, Any]:
    """The settings of every callback, as params under its name."""
    params: dict[str, Any] = {}
    for name, stop in zip(early_stopping_names(len(stops)), stops, strict=True):
        params.update({f"{name}.{k}": v for k, v in stop.settings.items() if v is not None})
    return params


def early_stopping_metrics(stops: Sequence[EarlyStop], offset: int = 0) -> dict[str, float]:
    """The outcome of every callback, as metrics; ``offset`` moves the framework's epochs to
    the run's steps (a continued run)."""
    metrics: dict[str, float] = {}
    for name, stop in zip(early_stopping_names(len(stops)), stops, strict=True):
        if stop.stopped_epoch is not None:
            metrics[f"{name}.stopped_epoch"] = stop.stopped_epoch + offset
        if stop.best_score is not None:
            metrics[f"{name}.best_score"] = float(stop.best_score)
        if stop.best_epoch is not None:
            metrics[f"{name}.best_epoch"] = stop.best_epoch + offset
        if stop.wait_count is not None:
            metrics[f"{name}.wait_count"] = stop.wait_count
        if stop.restored_best_weights is not None:
            metrics[f"{name}.restored_best_weights"] = float(stop.restored_best_weights)
    return metrics
