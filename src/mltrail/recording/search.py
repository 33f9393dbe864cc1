"""Hyperparameter searches, once for every adapter: the candidates as finished child runs of the
search's run, the best first, and the whole results table as CSV.

An adapter reads its framework's results (scikit-learn's ``cv_results_``, Optuna's trials) into
:class:`Candidate` records and a table of columns; this module logs them:

- :func:`log_candidates`: one child run per candidate, named ``candidate-<index>``, with its
  params, its metrics and the tags ``mltrail.<framework>.candidate`` (its index),
  ``mltrail.<framework>.rank`` and ``mltrail.<framework>.search`` (the kind of search); only
  the best ``limit`` candidates by rank (ties in the search's order), since a search may try
  thousands;
- :func:`results_csv`: the table, one row per candidate, for :meth:`mltrail.Trail.log_text`;
- :func:`log_search`: a finished search in its run at once: its kind, the best candidate's
  params as ``best.<name>``, the number of candidates, the table and the candidates;
- :class:`ChildRuns`: searches that report each unit of work (Optuna's trials) as it ends:
  one child run per unit, logged finished, or started early for a training inside the unit
  to record into (:func:`~mltrail.recording.scopes.provide_runs`) and completed at its end.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mltrail.errors import MltrailError
from mltrail.recording.trail import Trail, start_run


@dataclasses.dataclass
class Candidate:
    """One candidate of a search, as the framework reports it.

    Attributes:
        index: its position in the search's results.
        params: the hyperparameters it was tried with.
        metrics: its scores (means and spreads over folds, ...), logged at step 0.
        rank: its rank in the search, 1 for the best (ties share one).
    """

    index: int
    params: Mapping[str, Any]
    metrics: Mapping[str, Any]
    rank: int


def check_max_child_runs(value: Any) -> int | None:
    """Validate a ``max_child_runs=`` argument: None (all candidates) or an int >= 0.

    Raises:
        MltrailError: naming the value.
    """
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise MltrailError(f"max_child_runs must be None or an int >= 0, not {value!r}.")
    return value


def log_candidates(
    trail: Trail,
    candidates: Sequence[Candidate],
    *,
    framework: str,
    search: str,
    limit: int | None = None,
) -> None:
    """Log the best ``limit`` candidates (None: all) as finished child runs of ``trail``'s run.

    Args:
        trail: the search's run.
        candidates: every candidate of the search.
        framework: prefixes the tags (``mltrail.<framework>.candidate``...).
        search: the kind of search, the ``mltrail.<framework>.search`` tag.
        limit: how many child runs at most, the best first.
    """
    ranked = sorted(candidates, key=lambda candidate: candidate.rank)  # stable: ties in order
    for candidate in ranked if limit is None else ranked[:limit]:
        trail.log_child_run(
            run_name=f"candidate-{candidate.index}",
            params=candidate.params,
            metrics=candidate.metrics,
            tags={
                f"mltrail.{framework}.candidate": candidate.index,
                f"mltrail.{framework}.rank": candidate.rank,
                f"mltrail.{framework}.search": search,
            },
        )


def log_search(
    trail: Trail,
    candidates: Sequence[Candidate],
    *,
    framework: str,
    search: str,
    best_params: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    table: Mapping[str, Sequence[Any]] | None = None,
    table_file: str = "search_results.csv",
    limit: int | None = None,
    param_value: Callable[[Any], Any] = str,
) -> None:
    """Record a finished search in ``trail``'s run, under the names every adapter uses.

    The tag ``mltrail.<framework>.search`` (the kind of search); in one request, the params
    ``best.<name>`` (the best candidate's), ``search.n_candidates`` (when there are candidates)
    and the adapter's own ``params``; the results ``table`` as CSV (:func:`results_csv`); and
    the best ``limit`` candidates as child runs (:func:`log_candidates`).

    Args:
        trail: the search's run.
        candidates: every candidate of the search (none: only the kind and the best params).
        framework: prefixes the tags.
        search: the kind of search ("GridSearchCV").
        best_params: the params of the best candidate.
        params: more params of the search (its settings, ``search.n_splits``...).
        table: the results table's columns, logged as ``table_file`` when given.
        table_file: the artifact file of the table.
        limit: how many child runs at most, the best first (None: all).
        param_value: how a param value reads (best params and the table's mappings).
    """
    trail.set_tags({f"mltrail.{framework}.search": search})
    logged = {f"best.{k}": param_value(v) for k, v in (best_params or {}).items()}
    if candidates:
        logged["search.n_candidates"] = len(candidates)
    trail.log_params({**(params or {}), **logged})
    if table:
        trail.log_text(results_csv(table, param_value), table_file)
    if candidates:
        log_candidates(trail, candidates, framework=framework, search=search, limit=limit)


def results_csv(
    columns: Mapping[str, Sequence[Any]], param_value: Callable[[Any], Any] = str
) -> str:
    """A search's results table as CSV text, one row per candidate.

    Args:
        columns: each column's name and its value per candidate (scikit-learn's
            ``cv_results_``); masked values (candidates a round did not try) become empty
            cells, mappings (a candidate's params) JSON, numpy scalars Python's.
        param_value: how a value inside a mapping reads (an estimator by its repr, ...).
    """
    names = list(columns)
    rows = len(columns[names[0]]) if names else 0
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(names)
    for index in range(rows):
        writer.writerow([_cell(columns[name][index], param_value) for name in names])
    return buffer.getvalue()


def _cell(value: Any, param_value: Callable[[Any], Any]) -> Any:
    if value is np.ma.masked:
        return ""
    if isinstance(value, Mapping):
        return json.dumps({k: param_value(v) for k, v in value.items()}, default=str)
    if isinstance(value, np.generic):
        return value.item()
    return value


class ChildRuns:
    """The child runs of a search's units of work (Optuna's trials), one per unit, by key.

    A unit's child run is logged when the framework reports the unit done (:meth:`log`: a
    finished child run, made in the background). When a training inside the unit starts a run
    before that (a provider registered with :func:`~mltrail.recording.scopes.provide_runs`
    asks :meth:`run_for`), the unit's child run is started then, with the unit's params, for
    that training to join; :meth:`log` completes and ends it. Units may run in parallel.

    Args:
        framework: the ``mltrail.framework`` tag of the runs started here.
        start_run_kwargs: the search's :func:`~mltrail.start_run` arguments: runs started
            here take its experiment and options, not its run name, run id or tags, and
            capture no provenance and sample no system metrics (the search's run has them).
    """

    def __init__(self, framework: str, start_run_kwargs: Mapping[str, Any] | None = None) -> None:
        self.framework = framework
        self._kwargs = {
            k: v
            for k, v in (start_run_kwargs or {}).items()
            if k not in ("run_name", "run_id", "tags")
        }
        self._open: dict[Hashable, Trail] = {}
        self._lock = threading.Lock()

    def run_for(
        self,
        parent: Trail,
        key: Hashable,
        tracking_uri: str,
        *,
        run_name: str,
        params: Mapping[str, Any],
    ) -> str | None:
        """The run id of unit ``key``'s child run of ``parent`` for a training starting in it,
        started the first time it is asked (its params in the store before the training reads
        the run); None when ``parent`` is in another store than ``tracking_uri``."""
        if parent.run_id is None or (parent.tracking_uri or tracking_uri) != tracking_uri:
            return None
        with self._lock:
            run = self._open.get(key)
            if run is None:
                run = start_run(
                    run_name=run_name,
                    parent_run_id=parent.run_id,
                    tags={"mltrail.framework": self.framework},
                    **{
                        **self._kwargs,
                        "tracking_uri": tracking_uri,
                        "capture": False,
                        "system_metrics": False,
                    },
                )
                run.log_params(params)
                run.flush()
                self._open[key] = run
            return run.run_id

    def log(
        self,
        parent: Trail,
        key: Hashable,
        *,
        run_name: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, Any],
        tags: Mapping[str, Any],
        history: Mapping[str, Iterable[tuple[int, Any]]] | None = None,
        status: str = "FINISHED",
    ) -> None:
        """Unit ``key`` is done: its child run of ``parent`` with its params, ``metrics`` at
        step 0, ``history`` (each key's ``(step, value)`` points), ``tags`` and ``status``:
        the run started for a training inside it, completed and ended, or a finished one."""
        with self._lock:
            run = self._open.pop(key, None)
        if run is None:
            parent.log_child_run(run_name, params, metrics, tags, history=history, status=status)
            return
        run.log_params(params)
        run.log_metrics(metrics, step=0)
        for name, points in (history or {}).items():
            for step, value in points:
                run.log_metrics({name: value}, step=step)
        run.set_tags(tags)
        run.end(status)

    def end_open(self, status: str = "FAILED") -> None:
        """End the runs started for units whose end was never reported, as ``status``."""
        with self._lock:
            runs, self._open = list(self._open.values()), {}
        for run in runs:
            run.end(status)
