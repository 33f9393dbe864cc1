"""Optuna adapter: a study as one MLflow run, each of its trials a child run.

    study.optimize(objective, n_trials=50, callbacks=[TrailCallback(experiment="tuning")])

The study's run (provenance captured once) gets the study's name, direction(s), sampler and
pruner as params, each trial's value(s) at ``step = trial number``, ``best_value`` and the
tags ``mltrail.optuna.best_trial``/``mltrail.optuna.best.<param>`` as trials finish, and at the
end ``optuna/optimization_history.png`` and ``optuna/param_importances.{json,png}``. Each trial
is a child run ``trial-<number>`` with its params, value(s), ``intermediate_value`` history (its
``trial.report`` steps), the tag ``mltrail.optuna.state`` (COMPLETE, PRUNED, FAIL; a FAIL trial's
run is FAILED). A training that an mltrail adapter records inside the objective (callback or
autolog) records into its trial's run instead of starting a run of its own. The study's run id
is kept in the study's user attrs (``mltrail.run_id``): a study loaded from its storage goes on
in the same run.

Optuna calls a callback after each trial only: the study's run starts at the first trial's end
(or when a training inside the first trial starts) and ends when ``optimize`` returns (its call
is watched through the progress object Optuna keeps for it), FAILED when a trial's exception
stopped it.
"""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from collections.abc import Callable
from typing import Any

try:
    import optuna
    from optuna.trial import TrialState
except ImportError as error:  # pragma: no cover - exercised in the core-only environment
    raise ImportError(
        'mltrail.integrations.optuna needs Optuna: pip install "mltrail[optuna]"'
    ) from error

from mltrail import Trail
from mltrail.adapters import (
    SearchRun,
    direction_params,
    exception_safe,
    frames_above,
    log_history,
    log_importance,
    options_for,
    provide_runs,
    trainings_recorded,
    value_names,
)

__all__ = ["RUN_ID_ATTR", "TrailCallback", "autolog_patches"]

#: The study user attr holding the study's run id.
RUN_ID_ATTR = "mltrail.run_id"
_DONE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@exception_safe(hooks=("__call__",))
class TrailCallback:
    """Record an Optuna study as an MLflow run with one child run per trial.

    Args:
        trail: record the study into this run (from :func:`mltrail.start_run`); its owner
            ends it.
        log_plots: log the optimisation history and the parameter importances at the end.
        **start_run_kwargs: arguments of :func:`mltrail.start_run` for the study's run.

    Attributes:
        run_id: the study's run, None before the first trial ends.

    Raises:
        MltrailError: for both ``trail`` and start-run arguments or an unknown one.
    """

    def __init__(
        self, trail: Trail | None = None, *, log_plots: bool = True, **start_run_kwargs: Any
    ) -> None:
        self._search = SearchRun("optuna", trail, start_run_kwargs, unit="trial", search="study")
        self._session = self._search.session
        self.log_plots = log_plots

    @property
    def run_id(self) -> str | None:
        return self._session.last_run_id

    def __call__(self, study: Any, trial: Any) -> None:
        trail = self._open(study, trial.number, sys._getframe(1))
        self._log_trial(trail, study, trial)
        self._log_best(trail, study, trial)

    # --- the study's run -----------------------------------------------------------------------

    def _open(self, study: Any, number: int, frame: Any) -> Trail:
        return self._search.enter(
            study,
            number,
            study.user_attrs.get(RUN_ID_ATTR),
            end_previous=self._finish,  # another study's
            opened=functools.partial(self._opened, study, frame),
            keep=functools.partial(study.set_user_attr, RUN_ID_ATTR),
            # The importances import scikit-learn (seconds): beside the run's start and the
            # trials, not after them on the optimize thread.
            preload=("optuna.importance",) if self.log_plots else None,
        )

    def _opened(self, study: Any, frame: Any, trail: Trail) -> None:
        with self._session.guarded("recording the study"):
            trail.set_tags({"mltrail.optuna.study": study.study_name})
            directions = [d.name.lower() for d in study.directions]
            params = {"study_name": study.study_name, **direction_params(directions)}
            params["sampler"] = type(study.sampler).__name__
            params["pruner"] = type(study.pruner).__name__
            if study.metric_names:
                params["metric_names"] = study.metric_names
            trail.log_params(params)
        with self._session.guarded("watching the optimize call"):
            # The run ends when the optimize call closes its progress object, in its finally.
            while frame is not None and frame.f_code.co_name != "_optimize_sequential":
                frame = frame.f_back
            progress = frame.f_locals.get("progress_bar") if frame is not None else None
            if progress is not None:
                self._search.end_after_call(progress, "close", self._finish)

    def _finish(self, error: BaseException | None = None) -> None:
        """The optimize call is over: log what the callback did not see, plots, end the run."""
        self._search.end_call(_done, _failed, self._log_end, error)

    def _log_end(self, trail: Trail, study: Any, unseen: list[Any]) -> None:
        for trial in unseen:
            self._log_trial(trail, study, trial)
        if not self.log_plots or not trail.enabled:
            return
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return
        if len(study.directions) == 1:  # plots are drawn on the background thread
            log_history(
                trail,
                [(t.number, t.value) for t in done],
                "optuna/optimization_history",
                f"Optimization history of {study.study_name}",
                maximize=study.direction == optuna.study.StudyDirection.MAXIMIZE,
            )
        try:  # may fail on few trials or dynamic search spaces (Optuna < 5: scikit-learn)
            names = _value_names(study)
            with warnings.catch_warnings():  # "too few trials": the user did not ask for them
                warnings.simplefilter("ignore")
                scores = {
                    name: optuna.importance.get_param_importances(
                        study, target=(lambda t, i=i: t.values[i]) if len(names) > 1 else None
                    )
                    for i, name in enumerate(names)
                }
        except Exception as error:  # counted, never raised: importances are optional
            self._session.report("computing parameter importances", error)
            return
        if not any(scores.values()):
            return  # no params
        log_importance(trail, scores, "optuna/param_importances", "Parameter importances")

    # --- trials ----------------------------------------------------------------------------------

    def _log_trial(self, trail: Trail, study: Any, trial: Any) -> None:
        self._search.log_unit(
            trail,
            trial.number,
            state=trial.state.name,
            params=trial.params,
            values=dict(zip(_value_names(study), trial.values or (), strict=False)),
            history={"intermediate_value": sorted(trial.intermediate_values.items())},
            tags={"mltrail.optuna.study": study.study_name},
            failed=trial.state == TrialState.FAIL,
            complete=trial.state == TrialState.COMPLETE,
        )

    def _log_best(self, trail: Trail, study: Any, trial: Any) -> None:
        if len(study.directions) > 1:
            values = trial.values if trial.state == TrialState.COMPLETE else None
            minimize = [d == optuna.study.StudyDirection.MINIMIZE for d in study.directions]
            self._search.follow_front(
                trail,
                trial.number,
                values,
                minimize,
                lambda: [(t.number, t.values) for t in study.best_trials],
            )
            return
        try:
            best = study.best_trial
        except ValueError:  # no trial complete yet
            return
        self._search.log_best(trail, trial.number, best.number, best.value, best.params)

    def _trial_run(self, study: Any, trial: Any, tracking_uri: str, frame: Any) -> str | None:
        """The run of ``trial`` for a training starting inside it (see the module doc)."""
        with self._search.lock:
            parent = self._open(study, trial.number, frame)
            return self._search.run_for(parent, trial.number, tracking_uri, trial.params)

    def __repr__(self) -> str:
        return f"TrailCallback(run={self.run_id!r})"


def _done(study: Any) -> list[Any]:
    return study.get_trials(deepcopy=False, states=_DONE)


def _failed(trial: Any) -> bool:
    return trial.state == TrialState.FAIL


def _value_names(study: Any) -> list[str]:
    return value_names(len(study.directions), study.metric_names)


def _provide(tracking_uri: str) -> str | None:
    """The run of the trial whose objective starts a run now, in this thread (if recorded)."""
    for frame in frames_above(sys._getframe(1), 300):
        if (
            frame.f_code.co_name == "_run_trial"
            and frame.f_globals.get("__name__") == "optuna.study._optimize"
        ):
            trial, study = frame.f_locals.get("trial"), frame.f_locals.get("study")
            outer = frame.f_back
            for callback in (outer.f_locals.get("callbacks") if outer else None) or ():
                if isinstance(callback, TrailCallback) and trial is not None:
                    return callback._trial_run(study, trial, tracking_uri, frame)
            return None
    return None


provide_runs(_provide)


# --- autolog ----------------------------------------------------------------------------------


def autolog_patches(options: dict[str, Any]) -> list[tuple[Any, str, Callable[..., Any]]]:
    """``mltrail.autolog`` patch: ``Study.optimize`` gets a :class:`TrailCallback` when it has
    none, and the trainings of its objective are recorded (into their trials' runs)."""
    start, own = options_for("optuna", options)
    signature = inspect.signature(optuna.study.Study.optimize)

    def optimize(call_original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        callbacks = list(bound.arguments.get("callbacks") or ())
        callback = next((cb for cb in callbacks if isinstance(cb, TrailCallback)), None)
        if callback is None:
            callback = TrailCallback(**start, **own)
            callbacks.append(callback)
        objective = bound.arguments["func"]

        def recorded(trial: Any) -> Any:
            with trainings_recorded():
                return objective(trial)

        bound.arguments.update(callbacks=callbacks, func=recorded)
        study = bound.arguments["self"]
        return callback._search.run_call(
            lambda: call_original(*bound.args, **bound.kwargs),
            lambda: callback._open(study, len(study.get_trials(deepcopy=False)), None),
            callback._finish,
        )

    return [(optuna.study.Study, "optimize", optimize)]
