"""Resuming a run from a checkpoint: continue, fork or rewind, decided once for every adapter.

An adapter that resumes a run (a checkpoint's run id, ``run_id=``) only says at which step its
training restarts: ``RunSession.open(run_id=..., restart_step=k + 1)`` when the checkpoint holds
the state after step ``k``. This module compares that step with the last epoch step the run
has logged and decides:

- **continue**: the checkpoint is the run's last (``restart_step`` past its last step): the run
  is resumed as always (``mltrail.resume_count``), its steps go on.
- **fork** (the default for an older checkpoint): a new run in the same experiment, tagged
  ``mltrail.forked_from=<run id>`` and ``mltrail.forked_at_step=k``, with the parent's params
  and its metric history up to step ``k`` copied with their original timestamps; its own
  provenance is captured as for any new run. The parent is not touched. A training that
  starts over from step 0 forks at ``k = -1``: nothing is copied, the fork is named
  ``<parent>-fork@start``.
- **rewind** (``fork=False``): the old run is resumed and tagged ``mltrail.rewound_to_step=k``;
  ``mltrail.rewinds`` keeps every rewind as ``[[k, time_ms], ...]``. MLflow cannot delete
  single metric points, so the points the rewound training supersedes (steps after ``k``,
  logged before the rewind) stay in the store; :func:`current_history` drops them, and
  ``mltrail`` reads histories through it.

``system/`` metrics are never copied (they describe the parent's machine); ``step/`` ones are
copied up to the restart's optimizer step when the adapter knows it (``global_step``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from mltrail.config import Options
from mltrail.recording.steps import STEP_PREFIX
from mltrail.recording.trail import Trail, start_run

logger = logging.getLogger("mltrail.restart")

FORKED_FROM = "mltrail.forked_from"
FORKED_AT = "mltrail.forked_at_step"
REWOUND_TO = "mltrail.rewound_to_step"
REWINDS = "mltrail.rewinds"
#: The checkpoint file a training resumed from (any adapter that knows it).
RESUMED_FROM = "mltrail.resumed_from"
SYSTEM_PREFIX = "system/"


def last_epoch_step(run: Any) -> int | None:
    """The last epoch step ``run`` logged (its latest metric points; ``system/`` and ``step/``
    keys, which count other things, left out), None without any."""
    steps = [
        int(m.step)
        for m in getattr(run.data, "_metric_objs", None) or ()
        if not m.key.startswith((SYSTEM_PREFIX, STEP_PREFIX))
    ]
    return max(steps) if steps else None


def decide(last_step: int | None, restart_step: int, fork: bool) -> str:
    """``"continue"``, ``"fork"`` or ``"rewind"`` for a training restarting at ``restart_step``
    in a run whose last epoch step is ``last_step``."""
    if last_step is None or restart_step > last_step:
        return "continue"
    return "fork" if fork else "rewind"


def open_resumed(
    run_id: str,
    restart_step: int,
    *,
    tags: Mapping[str, Any] | None = None,
    checkpoint: str | None = None,
    global_step: int | None = None,
    **start_run_kwargs: Any,
) -> Trail:
    """Resume ``run_id`` for a training restarting at ``restart_step``: continue it, fork it or
    rewind it (see the module docstring). ``start_run_kwargs`` are :func:`mltrail.start_run`'s
    (``tracking_uri``, run options such as ``fork``).

    Raises:
        MltrailError: as :func:`mltrail.start_run` does (a ``run_id`` that does not exist).
    """
    kwargs = dict(start_run_kwargs)
    kwargs.pop("run_id", None)
    tags = dict(tags or {})
    if checkpoint:
        tags[RESUMED_FROM] = str(checkpoint)
    fork = Options.resolve(fork=kwargs.get("fork")).fork
    parent = _read(run_id, kwargs.get("tracking_uri"))
    if parent is None:  # unreadable (offline): resumed as always, the store decides nothing
        return start_run(run_id=run_id, tags=tags, **kwargs)
    client, run, experiment = parent
    how = decide(last_epoch_step(run), restart_step, fork)
    at = restart_step - 1
    if how == "continue":
        return _restarted(start_run(run_id=run_id, tags=tags, **kwargs), how)
    if how == "rewind":
        rewinds = _rewinds(run.data.tags)
        rewinds.append([at, int(time.time() * 1000)])
        tags.update({REWOUND_TO: str(at), REWINDS: json.dumps(rewinds)})
        logger.info("mltrail: run %s rewound to step %d (fork=False)", run_id, at)
        return _restarted(start_run(run_id=run_id, tags=tags, **kwargs), how)
    tags.update({FORKED_FROM: run_id, FORKED_AT: str(at)})
    kwargs.pop("experiment", None)
    kwargs.pop("run_name", None)
    kwargs["already_run"] = "ignore"  # the same code, data and params as its parent, by design
    name = run.info.run_name or run_id[:8]
    where = at if at >= 0 else "start"  # a training from scratch keeps none of the history
    trail = start_run(experiment=experiment, run_name=f"{name}-fork@{where}", tags=tags, **kwargs)
    if trail.enabled:
        trail.log_params(run.data.params)
        trail.log_metric_history(_history_until(client, run, restart_step, global_step))
    logger.info("mltrail: run %s forked from %s at step %d", trail.run_id, run_id, at)
    return _restarted(trail, how)


def _restarted(trail: Trail, how: str) -> Trail:
    """``trail`` marked with how its training restarted (adapters that skip values the run
    already has must not skip them after a rewind)."""
    trail.restart = how
    return trail


def current_history(run: Any, points: Iterable[Any]) -> list[Any]:
    """The points of one metric of ``run`` that are current: those a rewound training
    superseded (a step after a rewind's step, logged before that rewind) left out.

    Args:
        run: the MLflow run (its ``mltrail.rewinds`` tag is read).
        points: MLflow ``Metric`` objects (``client.get_metric_history``).
    """
    rewinds = _rewinds(run.data.tags)
    return [
        p for p in points if not any(p.step > at and p.timestamp < when for at, when in rewinds)
    ]


def _rewinds(tags: Mapping[str, str]) -> list[list[int]]:
    try:
        value = json.loads(tags.get(REWINDS) or "[]")
        return [[int(at), int(when)] for at, when in value]
    except (TypeError, ValueError):
        return []


def _read(run_id: str, tracking_uri: str | None) -> tuple[Any, Any, str | None] | None:
    """The client, the run and its experiment's name; None when the store cannot be read (a
    run that does not exist is left to ``start_run``, which says so)."""
    from mltrail.store import make_client, resolve_tracking_uri

    try:
        client = make_client(resolve_tracking_uri(tracking_uri))
        run = client.get_run(run_id)
        experiment = client.get_experiment(run.info.experiment_id)
        return client, run, experiment.name if experiment is not None else None
    except Exception as error:
        logger.debug("cannot read run %s to resume it: %s", run_id, error)
        return None


def _history_until(
    client: Any, run: Any, restart_step: int, global_step: int | None
) -> list[tuple[str, float, int, int]]:
    """The parent's current points before the restart, with their original timestamps."""
    points = []
    for key in sorted(run.data.metrics):
        if key.startswith(SYSTEM_PREFIX):
            continue
        if key.startswith(STEP_PREFIX):
            if global_step is None:
                continue
            keep = lambda m: m.step <= global_step  # noqa: E731
        else:
            keep = lambda m: m.step < restart_step  # noqa: E731
        history = current_history(run, client.get_metric_history(run.info.run_id, key))
        points += [(key, m.value, m.timestamp, m.step) for m in history if keep(m)]
    return points
