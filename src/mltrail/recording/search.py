"""Hyperparameter searches, once for every adapter: the candidates as finished child runs of the
search's run, the best first, and the whole results table as CSV.

An adapter reads its framework's results (scikit-learn's ``cv_results_``, Optuna's trials) into
:class:`Candidate` records and a table of columns; this module logs them:

- :func:`log_candidates`: one child run per candidate, named ``candidate-<index>``, with its
  params, its metrics and the tags ``mltrail.<framework>.candidate`` (its index),
  ``mltrail.<framework>.rank`` and ``mltrail.<framework>.search`` (the kind of search); only
  the best ``limit`` candidates by rank (ties in the search's order), since a search may try
  thousands;
- :func:`value_names`, :func:`direction_params`: a search of one or several objectives, its
  values' names and its direction(s) as params;
- :func:`results_csv`: the table, one row per candidate, for :meth:`mltrail.Trail.log_text`;
- :func:`log_search`: a finished search in its run at once: its kind, the best candidate's
  params as ``best.<name>``, the number of candidates, the table and the candidates;
- :class:`ChildRuns`: searches that report each unit of work (Optuna's trials) as it ends:
  one child run per unit, logged finished, or started early for a training inside the unit
  to record into (:func:`~mltrail.recording.scopes.provide_runs`) and completed at its end;
- :class:`SearchRun`: the run of such a search, one search at a time: opened at the first
  unit that ends (the run kept with the search resumed), each unit logged once as a child run
  and its values at ``step = unit number``, the best unit so far, the units the framework
  never reported found at the end, and the run ended FAILED when a unit's failure stopped
  the search; :meth:`SearchRun.enter` (the run of the search a unit belongs to, opened or
  resumed at its first unit, the previous search's ended), :meth:`SearchRun.end_after_call`
  and :meth:`SearchRun.end_call` (the end of the search's call, with the units it never
  reported) are its lifecycle as an adapter drives it.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mltrail.errors import MltrailError
from mltrail.recording.hooks import after_call
from mltrail.recording.plots import preload_matplotlib
from mltrail.recording.preload import preload_modules
from mltrail.recording.session import RunSession
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


def value_names(count: int, names: Sequence[str] | None = None) -> list[str]:
    """The names of a search's objective values: the framework's ``names`` when it has them,
    else ``value`` for one objective and ``value_0``, ``value_1``, ... for several."""
    if names:
        return list(names)
    return ["value"] if count == 1 else [f"value_{i}" for i in range(count)]


def direction_params(directions: Sequence[str]) -> dict[str, Any]:
    """A search's optimisation direction(s) ("minimize", "maximize") as params: ``direction``
    for one objective, ``directions`` (one per objective) for several."""
    if len(directions) == 1:
        return {"direction": directions[0]}
    return {"directions": list(directions)}


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


def dominated(
    values: Sequence[float], others: Mapping[int, Sequence[float]], minimize: Sequence[bool]
) -> bool:
    """Whether one of ``others`` dominates ``values``: no worse in every objective (each
    minimized or maximized as ``minimize`` says) and better in one."""
    signs = [1 if low else -1 for low in minimize]
    mine = [sign * value for sign, value in zip(signs, values, strict=True)]
    for other in others.values():
        theirs = [sign * value for sign, value in zip(signs, other, strict=True)]
        if all(t <= m for t, m in zip(theirs, mine, strict=True)) and theirs != mine:
            return True
    return False


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


class SearchRun:
    """The run of a search whose units of work report one at a time as they end (Optuna's
    study and its trials), each unit a child run (:class:`ChildRuns`).

    One search at a time. The adapter asks :meth:`current` at each unit's end; when that is
    not the run of this search, it ends the run of the search before (its :meth:`end`) and
    :meth:`open` starts the run of this one, or resumes the run whose id the adapter kept with
    the search (a search loaded again from its storage goes on in the same run). Each unit is
    logged once (:meth:`log_unit`); at the end of the search's call, :meth:`missed` tells
    which units of that call the framework never reported (the one whose exception stopped
    the call), and :meth:`end` ends the run after the adapter's last values. Units may end
    in parallel: :attr:`lock` orders opening, logging and ending.

    Args:
        framework: the adapter's framework, the prefix of the tags
            (``mltrail.<framework>.<unit>``, ...).
        trail: record into this run (its owner ends it), as :class:`RunSession` takes it.
        start_run_kwargs: :func:`~mltrail.start_run` arguments of the search's runs (the
            child runs take its experiment and options).
        unit: what a unit of work is called ("trial"): child runs are ``<unit>-<number>``.
        search: what the search is called in messages ("study").

    Raises:
        MltrailError: for both ``trail`` and start-run arguments, or an unknown one.

    Attributes:
        session: the :class:`RunSession` of the search's runs (the adapter's errors count there).
        lock: held while the run opens, a unit is logged, or the run ends.
        search: the framework's object of the search being recorded, None between searches.
    """

    def __init__(
        self,
        framework: str,
        trail: Trail | None = None,
        start_run_kwargs: Mapping[str, Any] | None = None,
        *,
        unit: str = "trial",
        search: str = "search",
    ) -> None:
        self.session = RunSession(framework, trail, start_run_kwargs)
        self.framework, self.unit, self.noun = framework, unit, search
        self.lock = threading.RLock()
        self.search: Any = None
        self._children = ChildRuns(framework, self.session.start_run_kwargs)
        self._first: int | None = None  # the first unit of the search's current call
        self._keep: tuple[Callable[[str], Any], str | None] | None = None  # see _keep_run_id
        self._best_tags: set[str] = set()  # the tags of the best unit's params (log_best)
        self._front: dict[int, Sequence[float]] | None = None  # the front known (follow_front)
        self._logged: set[int] = set()

    def current(self, search: Any, number: int) -> Trail | None:
        """The open run of ``search``, whose unit ``number`` belongs to the current call; None
        when no run is open or it is another search's."""
        with self.lock:
            trail = self.session.trail
            if trail is None or self.search is not search:
                return None
            self._first = number if self._first is None else min(self._first, number)
            self._keep_run_id(wait=False)
            return trail

    def open(self, search: Any, number: int, run_id: str | None = None) -> Trail:
        """Start the run of ``search``, whose unit ``number`` is the first of this call.

        ``run_id`` is the run the adapter kept with the search: it is resumed, unless a Trail
        was given; one that cannot be resumed (deleted, or in another store) is reported and
        a new run recorded instead (:meth:`RunSession.open_kept_run`). The training is on
        from here (see :meth:`RunSession.training_started`).

        Raises:
            MltrailError: when the given Trail has ended.
        """
        with self.lock:
            if run_id is None and self.session.can_open_in_recorder():
                # A new run: in mltrail's recorder process, where the search's process need
                # not import MLflow for it. Its id comes later (:meth:`_keep_run_id`).
                trail = self.session.open_beside(f"the {self.noun}")
            else:
                trail = self.session.open_kept_run(run_id, what=f"the {self.noun}'s run")
            self.session.training_started()
            self.search, self._first, self._logged = search, number, set()
            self._best_tags, self._front = set(), None
            return trail

    def enter(
        self,
        search: Any,
        number: int,
        run_id: str | None = None,
        *,
        end_previous: Callable[[], Any],
        opened: Callable[[Trail], Any],
        keep: Callable[[str], Any] | None = None,
        preload: Sequence[str] | None = None,
    ) -> Trail:
        """The run of ``search``, whose unit ``number`` ended (or has a training starting).

        The open run when it is this search's (:meth:`current`); else ``end_previous()`` ends
        the run of the search before (the adapter's end, with its summary), the run of this
        one is opened or resumed from ``run_id`` (:meth:`open`), its id kept with the search
        (``keep(run_id)``, when it is not ``run_id``) and ``opened(trail)`` records what the
        adapter records once per search (its settings, watching the search's call for its
        end).

        Args:
            search: the framework's object of the search.
            number: the unit's number.
            run_id: the run the adapter kept with the search, to resume.
            end_previous: ends the previous search's run.
            opened: called once the run of this search is open.
            keep: keeps a run id with the search (a study's user attribute), for the search
                loaded again to go on in the same run.
            preload: when not None, the end of the search draws plots and imports these
                modules: both made ready on daemon threads from the run's start (their imports
                take seconds), beside the units rather than after them.

        Raises:
            MltrailError: when the given Trail has ended.
        """
        with self.lock:
            trail = self.current(search, number)
            if trail is not None:
                return trail
            end_previous()
            trail = self.open(search, number, run_id)
            if preload is not None:
                if not self.session.opened_beside:  # else the recorder process draws them
                    preload_matplotlib()
                preload_modules(*preload)
            if keep is not None:
                self._keep = (keep, run_id)
                self._keep_run_id(wait=False)
            opened(trail)
            return trail

    def _keep_run_id(self, *, wait: bool) -> None:
        """Hand the run's id to the adapter's ``keep`` (see :meth:`enter`) once it is known:
        at once for a run opened in this process; for one opening in mltrail's recorder
        process, at the first unit that ends after the recorder answered, else at the end of
        the search's call (``wait``), which then waits for it."""
        trail = self.session.trail
        if self._keep is None or trail is None:
            return
        if not wait and not getattr(trail, "id_known", True):
            return
        (keep, kept), self._keep = self._keep, None
        if trail.run_id is not None and trail.run_id != kept:
            keep(trail.run_id)

    def run_call(
        self,
        call: Callable[[], Any],
        start: Callable[[], Any],
        end: Callable[[BaseException | None], Any],
    ) -> Any:
        """Run the search's call (an autolog patch's ``call``), its run opened by ``start()``
        before it (an error there is counted, and the search runs unrecorded: it is not in the
        call's time, a timeout's) and ended by ``end(error)`` after it, with the exception
        that leaves it, which propagates unchanged."""
        with self.session.guarded(f"starting the {self.noun}'s run"):
            start()
        try:
            result = call()
        except BaseException as error:
            end(error)
            raise
        end(None)
        return result

    def end_after_call(
        self, obj: Any, name: str, end: Callable[[BaseException | None], Any]
    ) -> None:
        """Call ``end(error)`` after ``obj``'s method ``name`` (the framework's object that
        closes when the search's call is over), with the exception leaving the call, if one
        is (see :func:`~mltrail.recording.hooks.after_call`); an error of ``end`` is counted
        in the search's run."""
        report = functools.partial(self.session.report, f"ending the {self.noun}'s run")
        after_call(obj, name, end, report)

    def end_call(
        self,
        done: Callable[[Any], Iterable[Any]],
        failed: Callable[[Any], bool],
        summary: Callable[[Trail, Any, list[Any]], Any],
        error: BaseException | None = None,
    ) -> None:
        """The search's call is over: log the units it never reported, the summary, and end
        the run (see :meth:`end`). Nothing happens when no run is open.

        Args:
            done: the units of the search that are done, each with its ``number``, from the
                search's object.
            failed: whether a unit failed; the last that failed unreported stopped the call.
            summary: ``summary(trail, search, unseen)`` logs the units done but never
                reported (:meth:`missed`) and the end of the search.
            error: the exception that left the search's call.
        """
        with self.lock:
            search = self.search
            if search is None or self.session.trail is None:
                return
            unseen = [unit for unit in done(search) if self.missed(unit.number)]
            numbers = [unit.number for unit in unseen if failed(unit)]
            self.end(lambda trail: summary(trail, search, unseen), error, failed=numbers)

    def log_unit(
        self,
        parent: Trail,
        number: int,
        *,
        state: str,
        params: Mapping[str, Any],
        values: Mapping[str, Any],
        history: Mapping[str, Iterable[tuple[int, Any]]] | None = None,
        tags: Mapping[str, Any] | None = None,
        failed: bool = False,
        complete: bool = True,
    ) -> None:
        """Unit ``number`` ended in ``state``: its child run of ``parent``, once.

        The child run ``<unit>-<number>`` gets ``params``, ``values`` at step 0, ``history``
        (each key's ``(step, value)`` points), the tags ``mltrail.<framework>.<unit>`` (its
        number) and ``mltrail.<framework>.state`` besides ``tags``, and ends FAILED when
        ``failed``, else FINISHED. The values of a ``complete`` unit also go into the
        search's run at ``step = number``.
        """
        with self.lock:
            self._logged.add(number)
        prefix = f"mltrail.{self.framework}"
        self._children.log(
            parent,
            number,
            run_name=f"{self.unit}-{number}",
            params=params,
            metrics=values,
            tags={f"{prefix}.{self.unit}": number, f"{prefix}.state": state, **(tags or {})},
            history=history,
            status="FAILED" if failed else "FINISHED",
        )
        if values and complete:
            parent.log_metrics(values, step=number)  # the history, in the search's run

    def run_for(
        self, parent: Trail, number: int, tracking_uri: str, params: Mapping[str, Any]
    ) -> str | None:
        """The run id of unit ``number``'s child run, started now for a training inside the
        unit (see :meth:`ChildRuns.run_for`)."""
        return self._children.run_for(
            parent, number, tracking_uri, run_name=f"{self.unit}-{number}", params=params
        )

    def missed(self, number: int) -> bool:
        """Whether unit ``number`` belongs to the search's current call and was not logged."""
        with self.lock:
            return number >= (self._first or 0) and number not in self._logged

    def log_best(
        self, trail: Trail, step: int, number: int, value: Any, params: Mapping[str, Any]
    ) -> None:
        """The best unit so far, ``number``: its value as the metric ``best_value`` at
        ``step``, and the tags ``mltrail.<framework>.best_<unit>`` (its number) and
        ``mltrail.<framework>.best.<param>``; the tag of a param that the best unit before
        had and this one lacks is deleted."""
        prefix = f"mltrail.{self.framework}"
        trail.log_metrics({"best_value": value}, step=step)
        best = {f"{prefix}.best.{name}": v for name, v in params.items()}
        with self.lock:
            # A conditional search space: the new best may lack a param of the one before
            # (an SVC's C after a random forest's max_depth), whose tag would be wrong now.
            stale, self._best_tags = self._best_tags - best.keys(), set(best)
        if stale:
            trail.delete_tags(sorted(stale))
        trail.set_tags({f"{prefix}.best_{self.unit}": number, **best})

    def follow_front(
        self,
        trail: Trail,
        step: int,
        values: Sequence[float] | None,
        minimize: Sequence[bool],
        front: Callable[[], Iterable[tuple[int, Sequence[float]]]],
    ) -> None:
        """Unit ``step`` ended with ``values`` (None: no values, pruned or failed): the Pareto
        front so far as :meth:`log_front` logs it. ``front()`` gives the framework's front,
        each unit's number and values; computed from all units (0.2 s for Optuna's at 1,000
        trials), it is asked for only when this unit may be on it: a unit dominated by the
        front known leaves it as it was."""
        with self.lock:
            known = self._front
            if known is None or (values is not None and not dominated(values, known, minimize)):
                self._front = dict(front())
            numbers = list(self._front)
        self.log_front(trail, step, numbers)

    def log_front(self, trail: Trail, step: int, numbers: Sequence[int]) -> None:
        """The units on the Pareto front so far (a search of several objectives): their count
        as the metric ``pareto_front_size`` at ``step``, their numbers in the tag
        ``mltrail.<framework>.best_<unit>s``."""
        trail.log_metrics({"pareto_front_size": len(numbers)}, step=step)
        trail.set_tags({f"mltrail.{self.framework}.best_{self.unit}s": ",".join(map(str, numbers))})

    def end(
        self,
        summary: Callable[[Trail], Any],
        error: BaseException | None = None,
        *,
        failed: Sequence[int] = (),
    ) -> None:
        """The search's call is over: log ``summary(trail)``, then end the run.

        The run ends FAILED with ``error`` (the exception that left the call); without one,
        FAILED when ``failed`` lists units that failed unreported (the last one stopped the
        call), else FINISHED (see :meth:`RunSession.end_after`). Child runs started for units
        whose end was never reported end FAILED. Nothing happens when no run is open.
        """
        with self.lock:
            if self.session.trail is None or self.search is None:
                return
            with self.session.guarded(f"keeping the {self.noun}'s run id"):
                self._keep_run_id(wait=True)
            reason = (
                f"{self.unit} {failed[-1]} failed and stopped the {self.noun}" if failed else None
            )
            self.session.end_after(summary, error, finished=not failed, reason=reason)
            self._children.end_open("FAILED")
            self.search, self._first = None, None
