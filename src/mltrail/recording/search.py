"""Hyperparameter searches, once for every adapter: the candidates as finished child runs of the
search's run, the best first, and the whole results table as CSV.

An adapter reads its framework's results (scikit-learn's ``cv_results_``, Optuna's trials) into
:class:`Candidate` records and a table of columns; this module logs them:

- :func:`log_candidates`: one child run per candidate, named ``candidate-<index>``, with its
  params, its metrics and the tags ``mltrail.<framework>.candidate`` (its index),
  ``mltrail.<framework>.rank`` and ``mltrail.<framework>.search`` (the kind of search); only
  the best ``limit`` candidates by rank (ties in the search's order), since a search may try
  thousands;
- :func:`results_csv`: the table, one row per candidate, for :meth:`mltrail.Trail.log_text`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mltrail.errors import MltrailError
from mltrail.recording.trail import Trail


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
