"""Gradient boosting, once for every adapter whose framework calls a callback each round.

LightGBM and XGBoost (and frameworks of their kind) grow a model round after round, evaluate
it after each round on named eval sets with named metrics, stop early at a best round, go on
from a model trained before (its rounds count on), train one model per fold in ``cv`` and have
a scikit-learn API whose ``fit`` runs the same training. What is the same for all of them lives
here; an adapter reads its framework's objects (its callback's state, the training call, the
booster) and hands over plain values:

- :class:`BoostingCallback`: the base of such an adapter's callback: its settings and copies,
  one run per training opened at the model's rounds (continued training continues the steps;
  a given Trail's steps are never logged again), the tags and params at the start, each
  round's checkpoint, early stopping's outcome and the final model at the end, and the end of
  a training that stopped where no hook saw why;
- :class:`BoostingCall`: what the adapter read of the training call it runs inside;
- :func:`eval_metrics`: one round's evaluation as ``{data}-{metric}`` (a cv's ``(mean, std)``
  as ``-mean`` and ``-std``); :func:`eval_round`, :func:`eval_rounds`: a round of an eval log
  ``{data: {metric: [value per round]}}`` and how many rounds it holds;
- :func:`written_params`: the params as the user wrote them (functions by name);
  :func:`cv_params`: a cv call's fold settings as ``cv.*`` params;
- :func:`stop_outcome`: what a patience-based early stopping did, from its best and last rounds;
  :func:`first_stopped`: that of one watching several metrics, by the metric that stopped it;
- :func:`find_training_call`: the framework's ``train``/``cv`` call a callback runs inside, and
  the scikit-learn API's ``fit`` that runs it;
- :class:`RoundLoop`: one stand-in for a training's after-round callbacks that logs each round,
  runs them and ends the run after the last round, at early stopping or at an error
  (:meth:`BoostingCallback._loop_rounds`; :meth:`BoostingCallback._watch_hooks` wraps a
  framework's own container of callbacks instead);
- :func:`callbacks_patch`: an autolog patch that adds the adapter's callback to a training
  call's ``callbacks`` argument; :func:`fit_classes`: the scikit-learn API's estimators whose
  ``fit`` autolog patches.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from mltrail.autolog.patching import call_with_callback
from mltrail.recording.callsite import called_by_library, frames_above
from mltrail.recording.checkpoints import CheckpointEvery, CheckpointModel
from mltrail.recording.datasets import fingerprint
from mltrail.recording.early_stopping import (
    EarlyStop,
    early_stopping_metrics,
    early_stopping_params,
)
from mltrail.recording.models import pinned_requirements
from mltrail.recording.plots import log_importance, preload_matplotlib
from mltrail.recording.sanitize import by_name
from mltrail.recording.session import CopiedBySettings, RunSession
from mltrail.recording.steps import EpochLog, check_every
from mltrail.recording.trail import Trail

logger = logging.getLogger("mltrail.boosting")

#: The fold settings of a cv call that are recorded as ``cv.<name>`` params.
CV_ARGS = ("nfold", "stratified", "shuffle", "seed")


@dataclasses.dataclass
class BoostingCall:
    """What an adapter read of the training call its callback runs inside.

    Attributes:
        api: "train", "cv", "sklearn" (the scikit-learn API's ``fit``), or "unknown".
        args: the call's arguments recorded as params (``num_boost_round``, ``cv.*``, the
            training data's shape and digest, ...).
        params: the params as written in the call (a mapping, or XGBoost's pairs).
        estimator: under the scikit-learn API, the estimator whose ``fit`` runs the training.
        example: a few training rows, for the final model's signature and input example.
    """

    api: str = "unknown"
    args: dict[str, Any] = dataclasses.field(default_factory=dict)
    params: Any = None
    estimator: Any = None
    example: Any = None


def eval_metrics(results: Iterable[tuple[str, str, Any]]) -> dict[str, float]:
    """One round's evaluation as metrics named ``{data}-{metric}``.

    Args:
        results: ``(data, metric, value)`` for each eval set and metric; a cv's value is the
            pair ``(mean, std)`` across the folds, logged as ``{data}-{metric}-mean`` and
            ``{data}-{metric}-std``.
    """
    metrics: dict[str, float] = {}
    for data, metric, value in results:
        if isinstance(value, tuple):
            metrics[f"{data}-{metric}-mean"], metrics[f"{data}-{metric}-std"] = value
        else:
            metrics[f"{data}-{metric}"] = value
    return metrics


def eval_round(
    log: Mapping[str, Mapping[str, Sequence[Any]]], index: int
) -> list[tuple[str, str, Any]]:
    """Round ``index`` of an eval log ``{data: {metric: [value per round]}}`` (XGBoost's
    ``evals_log``, LightGBM's ``record_evaluation``) as :func:`eval_metrics` takes it; metrics
    that do not reach that round are left out."""
    return [
        (data, metric, values[index])
        for data, by_metric in log.items()
        for metric, values in by_metric.items()
        if index < len(values)
    ]


def eval_rounds(log: Mapping[str, Mapping[str, Sequence[Any]]]) -> int:
    """How many rounds an eval log holds (those of its first eval set's first metric)."""
    first = next(iter(log.values()), {})
    return len(next(iter(first.values()), ()))


def written_params(*sources: Any) -> dict[str, Any]:
    """The params of a training as the user wrote them, later sources winning.

    Each source is a mapping (``params``, an estimator's ``get_params()``) or a sequence of
    ``(name, value)`` pairs, in which a repeated name collects its values in a list
    (XGBoost's ``[("eval_metric", "auc"), ("eval_metric", "logloss")]``). Functions (a custom
    objective or metric) are given by name (:func:`~mltrail.recording.sanitize.by_name`), and
    ``callbacks`` is left out: it holds the adapter's callback, not a setting.
    """
    merged: dict[str, Any] = {}
    for source in sources:
        if isinstance(source, Mapping):
            merged.update((str(key), by_name(value)) for key, value in source.items())
            continue
        named: set[str] = set()
        for key, value in source or ():
            key = str(key)
            if key in named:  # only pairs repeat a name
                previous = merged[key] if isinstance(merged[key], list) else [merged[key]]
                merged[key] = [*previous, by_name(value)]
            else:
                named.add(key)
                merged[key] = by_name(value)
    merged.pop("callbacks", None)
    return merged


def cv_params(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A cv call's fold settings (:data:`CV_ARGS`, from its arguments) as ``cv.<name>``."""
    return {f"cv.{name}": arguments.get(name) for name in CV_ARGS}


def continued_from(model: Any, saved: Callable[[], bytes] | None = None) -> str | None:
    """The param naming the model a training continues (``xgb_model=``, ``init_model=``): a
    booster by the fingerprint of its ``saved()`` bytes, so that two continuations of other
    models differ in the run's fingerprint; a model file by its path; None from scratch."""
    if model is None:
        return None
    if saved is not None:
        return "booster:" + fingerprint(saved())
    return str(model)


def stop_outcome(
    stop: EarlyStop,
    *,
    best_score: Any,
    best_round: int,
    last_round: int,
    patience: int,
    restored: bool,
    monitor: str | None = None,
    mode: str | None = None,
) -> EarlyStop:
    """What an early stopping that waits ``patience`` rounds for a better score did.

    Rounds are on the run's steps. It stopped the training when the last round was
    ``patience`` or more rounds after the best one; else the training reached its end first.

    Args:
        stop: the early stopping as configured; its outcome is filled in and it is returned.
        best_score: the best value of the monitored metric (a cv's ``(mean, std)``: the mean).
        best_round: the round of that value.
        last_round: the last round trained.
        patience: the rounds without improvement it waits for.
        restored: whether the model predicts and saves with its best round.
        monitor: the metric it watched (``{data}-{metric}``), when known only once it has run.
        mode: "min" or "max", likewise.
    """
    known = {"monitor": monitor, "mode": mode}
    stop.settings = {**stop.settings, **{k: v for k, v in known.items() if v is not None}}
    stop.best_score = float(best_score[0] if isinstance(best_score, tuple) else best_score)
    stop.best_epoch, stop.wait_count = best_round, last_round - best_round
    stop.stopped_epoch = last_round if last_round - best_round >= patience else None
    stop.restored_best_weights = restored
    return stop


def first_stopped(
    stop: EarlyStop,
    watched: Sequence[tuple[str, str, Any, int]],
    *,
    last_round: int,
    patience: int,
    restored: bool,
) -> EarlyStop:
    """What an early stopping that watches several metrics did (see :func:`stop_outcome`),
    told by the first metric that stopped it, else by the first it watches.

    Args:
        stop: the early stopping as configured; returned as it is when it watches nothing.
        watched: ``(monitor, mode, best_score, best_round)`` of each metric it watches, in its
            order, rounds on the run's steps.
        last_round: the last round trained.
        patience: the rounds without improvement it waits for.
        restored: whether the model predicts and saves with its best round.
    """
    if not watched:
        return stop
    stopped = [metric for metric in watched if last_round - metric[3] >= patience]
    monitor, mode, best_score, best_round = (stopped or watched)[0]
    return stop_outcome(
        stop,
        best_score=best_score,
        best_round=best_round,
        last_round=last_round,
        patience=patience,
        restored=restored,
        monitor=monitor,
        mode=mode,
    )


def find_training_call(
    call: BoostingCall,
    start: Any,
    *,
    module: str,
    depth: int,
    estimator_type: type,
    holds: Callable[[Mapping[str, Any]], bool],
) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """Find the training call a callback runs inside, in the frames above ``start``.

    The framework's ``train`` or ``cv`` (a function of ``module``) sets ``call.api``; a
    scikit-learn API's ``fit`` above a ``train``, of an ``estimator_type`` whose training
    ``holds`` this callback, makes it "sklearn" and sets ``call.estimator``. The look is
    bounded (``depth`` frames) and read-only; the caller reads the arguments it records from
    the locals returned, and keeps none of them (the training's objects must go with it).

    Returns:
        The locals of the ``train``/``cv`` call and of the ``fit``, None where not found.
    """
    training = fit = None
    for frame in frames_above(start, depth):
        name, local = frame.f_code.co_name, frame.f_locals
        if name in ("train", "cv") and frame.f_globals.get("__name__") == module:
            call.api, training = name, local
        elif call.api == "train" and name == "fit":
            owner = local.get("self")
            if isinstance(owner, estimator_type) and holds(local):
                call.api, call.estimator, fit = "sklearn", owner, local
                break
    return training, fit


def callbacks_patch(
    kind: type[BoostingCallback],
    make: Callable[[Mapping[str, Any]], BoostingCallback],
    signature: inspect.Signature,
) -> Callable[..., Any]:
    """An autolog patch of a training function whose ``callbacks`` argument takes the
    adapter's callback (see :func:`~mltrail.autolog.patching.call_with_callback`).

    A call made by a library passes through; a call with a callback of ``kind`` runs as it
    is; any other gets ``make(arguments)`` (the call's bound arguments, from which it may
    read what the framework frees during training) in a new list of callbacks.

    Args:
        kind: the adapter's callback class; its ``_stopped`` ends a run the training's
            exception stopped where no hook saw it.
        make: a new callback for the call.
        signature: the training function's signature, to bind the call's arguments.
    """

    def record(call_original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if called_by_library():
            return call_original(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)

        def train(callbacks: Any) -> Any:
            bound.arguments["callbacks"] = callbacks
            return call_original(*bound.args, **bound.kwargs)

        callbacks = bound.arguments.get("callbacks")
        return call_with_callback(
            train, callbacks, kind, lambda: make(bound.arguments), kind._stopped
        )

    return record


def fit_classes(module: Any, base: type, *, exclude: Iterable[type] = ()) -> list[type]:
    """The estimators of a framework's scikit-learn API (the subclasses of ``base`` in
    ``module``) that define their own ``fit``, for autolog to patch: one that inherits its
    ``fit`` runs a patched one already. ``exclude``: those that refuse callbacks."""
    refused = set(exclude)
    return [
        cls
        for cls in vars(module).values()
        if isinstance(cls, type) and issubclass(cls, base) and "fit" in vars(cls)
        if cls not in refused
    ]


class RoundLoop:
    """Stands in for one training's callbacks that run after each round: logs the round, then
    runs them in their order, and so sees the end of the training.

    Args:
        callbacks: the training's after-round callbacks, called with the round's arguments.
        log: logs the round (the adapter's hook), called first.
        ended: ends the run: ``ended(*args)`` after the last round, ``ended(*args, stop)`` for
            the framework's early-stopping exception, ``ended(*args, error=error)`` for any
            other exception; the exception propagates.
        stop: the exception class the framework ends a training early with (not an error).
        last: whether a round's arguments are those of the training's last round.
    """

    def __init__(
        self,
        callbacks: Sequence[Callable[..., Any]],
        *,
        log: Callable[..., Any],
        ended: Callable[..., Any],
        stop: type[BaseException],
        last: Callable[..., bool],
    ) -> None:
        self.callbacks = list(callbacks)
        self._log, self._ended, self._stop, self._last = log, ended, stop, last

    def __call__(self, *args: Any) -> None:
        try:
            self._log(*args)
            for callback in self.callbacks:
                callback(*args)
        except self._stop as stop:  # the framework's way to end training: not an error
            self._ended(*args, stop)
            raise
        except BaseException as error:
            self._ended(*args, error=error)
            raise
        if self._last(*args):
            self._ended(*args)


class BoostingCallback(CopiedBySettings):
    """The base of a gradient-boosting adapter's callback: everything but the framework.

    The adapter's class names its framework in the class attributes below, lists the
    framework's callback class after this one (whose constructor runs through ``super()``),
    and calls from its hooks: :meth:`_open` when a training starts, :meth:`_log_start` once it has read
    the call (``self._call``, with :func:`find_training_call`), ``self._epochs.log`` and
    :meth:`_checkpoint` after each round, :meth:`_end` with a summary (:meth:`_log_stops`,
    :meth:`_log_model_and_importance` or :meth:`_log_final_model`) when it ends, and
    :meth:`_stopped` for an exception that stopped it (an adapter that knows the round it
    stopped in overrides it with :meth:`_end_unfinished`). To see the end of a training that
    has no hook at the end, it puts a :class:`RoundLoop` in place of the framework's list of
    after-round callbacks (:meth:`_loop_rounds`: it then has the hooks ``after_iteration`` and
    ``_ended``) or wraps the framework's container of callbacks (:meth:`_watch_hooks`).
    :meth:`_forget` sets what the adapter keeps per training, before the first and after each.

    Args:
        trail: log into this run (from :func:`mltrail.start_run`) instead of starting one per
            training; the run is left open for its owner to end.
        checkpoint_every: save the booster under ``checkpoints/`` every this many rounds
            (off by default), aliased ``latest`` and ``best``.
        log_model: log the final model under ``model/`` in the framework's MLflow flavor.
        registered_model_name: also register the model in the Model Registry under this name.
        importance: log feature importance as JSON and a bar plot.
        **start_run_kwargs: arguments of :func:`mltrail.start_run` for the runs it starts.

    Raises:
        MltrailError: for both ``trail`` and start-run arguments, an unknown option, or a bad
            ``checkpoint_every``.
    """

    framework: ClassVar[str] = ""  # "lightgbm": mltrail.framework, MLflow flavor, tag prefix
    framework_title: ClassVar[str] = ""  # "LightGBM", in messages
    round_name: ClassVar[str] = "round"  # what the framework calls a boosting round
    how_to_continue: ClassVar[str] = "continue the same model"  # instead of logging steps again
    checkpoint_name: ClassVar[str] = ""  # a format string of ``step``: "lightgbm-{step:06d}.txt"
    checkpoint_model: ClassVar[CheckpointModel | None] = None  # how a checkpoint loads
    unseen_errors: ClassVar[str] = "booster update, custom objective or metric"  # no hook sees

    # sklearn's clone deep-copies callbacks, joblib pickles estimators: copies from these
    copied_settings = ("checkpoint_every", "log_model", "registered_model_name", "importance")

    def __init__(
        self,
        trail: Trail | None = None,
        *,
        checkpoint_every: int | None = None,
        log_model: bool = True,
        registered_model_name: str | None = None,
        importance: bool = True,
        **start_run_kwargs: Any,
    ) -> None:
        super().__init__()  # the framework's callback class, when it has a constructor
        self._session = RunSession(self.framework, trail, start_run_kwargs)
        self.checkpoint_every = check_every("checkpoint_every", checkpoint_every)
        self.log_model = log_model
        self.registered_model_name = registered_model_name
        self.importance = importance
        self._epochs = EpochLog(self._session)
        self._checkpoints = CheckpointEvery(
            self._session, self.checkpoint_every, self.checkpoint_name, self.checkpoint_model
        )
        self._forget()

    @property
    def run_id(self) -> str | None:
        """The run of the current (or last) training, None before the first one."""
        return self._session.last_run_id

    def _open(self, done: int, first_round: int = 0) -> Trail:
        """A training starts: open its run, with the steps going on from the model's rounds.

        Args:
            done: the rounds the model has before this training (continued training).
            first_round: the framework's number of the training's first round (0 where it
                counts each training's rounds from 0, ``done`` where it counts them on).

        Raises:
            MltrailError: a training into the given Trail that would log its steps again.
        """
        if self._session.trail is not None:
            self._stopped(None)  # the last training raised past every hook and was caught
        if self._session.can_open_beside():
            # The rounds start at once; the run opens on mltrail's thread (a loop of short
            # trainings would otherwise wait for the store once per training).
            trail: Any = self._session.open_beside(f"{self.framework_title} training")
        else:
            # Continued training into run_id= at round k+1: continue, fork or rewind that run;
            # into trail=, only past the rounds it holds.
            trail = self._session.open(
                restart_step=done,
                steps_name=f"{self.framework_title} {self.round_name}s",
                how_to_continue=self.how_to_continue,
            )
        self._session.training_started()
        self._epochs = EpochLog(self._session)  # a new run, at the model's rounds
        self._epochs.start(first_round, resumed_from=done)
        self._checkpoints.start()  # which is "best": monitored once rounds are seen
        self._call = BoostingCall()
        return trail

    def _log_start(
        self,
        trail: Trail,
        done: int,
        effective: Mapping[str, Any],
        *written: Any,
        stops: Sequence[EarlyStop] = (),
    ) -> None:
        """Tag the training's API and start, and log its params: the booster's ``effective``
        configuration, the call's arguments, the params as ``written`` (see
        :func:`written_params`; they win) and the early stoppings' settings."""
        tags = {f"mltrail.{self.framework}.api": self._call.api}
        if done:
            tags[f"mltrail.{self.framework}.initial_{self.round_name}s"] = str(done)
        trail.set_tags(tags)
        params = written_params(*written)
        stopping = early_stopping_params(stops)
        trail.log_params({**effective, **self._call.args, **params, **stopping})
        if self._call.api == "cv" and self.checkpoint_every:
            logger.warning(
                "mltrail: %s cv trains one booster per fold; no checkpoints are kept.",
                self.framework_title,
            )
        if self.importance and self._call.api != "cv":
            preload_matplotlib()  # imported while the trees grow, not after

    def _checkpoint(
        self,
        step: int,
        metrics: Mapping[str, Any],
        write: Callable[[str], Any],
        monitor: Callable[[], tuple[str | None, str]],
    ) -> None:
        """A checkpoint after ``step`` when one is due (never in cv: a booster per fold); see
        :meth:`~mltrail.recording.checkpoints.CheckpointEvery.save`."""
        if self._call.api != "cv":
            self._checkpoints.save(step, metrics, write, monitor)

    def _log_stops(self, trail: Trail, stops: Sequence[EarlyStop]) -> None:
        """The early stoppings' settings (their monitors are known once they have run) and
        outcome, at the run's last step."""
        trail.log_params(early_stopping_params(stops))
        self._epochs.log_at_last(early_stopping_metrics(stops))

    def _log_final_model(
        self, trail: Trail, model: Any, example: Any, packages: Sequence[str], **kwargs: Any
    ) -> None:
        """The final model under ``model/`` in the framework's flavor, its signature from
        ``example``, its requirements pinned (MLflow would infer them: seconds)."""
        trail.log_model(
            model,
            self.framework,
            signature_from=example,
            registered_model_name=self.registered_model_name,
            pip_requirements=pinned_requirements(*packages),
            **kwargs,
        )

    def _log_model_and_importance(
        self,
        trail: Trail,
        final: Callable[[], tuple[Any, Sequence[str]]],
        importance: Callable[[], Mapping[str, Mapping[str, float]] | None],
        title: str,
        *,
        feature_names: Callable[[], Sequence[str]] | None = None,
        plot: Callable[..., None] | None = None,
        **model_kwargs: Any,
    ) -> None:
        """The end of a training with a single model (not cv, whose folds each have one): the
        final model under ``model/`` when ``log_model`` (first: it is saved in the background
        while the plot is drawn), the feature importance when ``importance``.

        Args:
            trail: the run.
            final: the model to log and the packages it needs (called only when logged).
            importance: the scores per importance type and feature, None when there are none.
            title: the importance plot's title.
            feature_names: the model's feature names, for a signature when the call's example
                rows are not known (the framework freed them): a row of missing values.
            plot: draws the importance plot (:func:`log_importance`'s ``plot``).
            **model_kwargs: more arguments of :meth:`Trail.log_model`.
        """
        if self._call.api == "cv" or not trail.enabled:
            return
        if self.log_model:
            model, packages = final()
            example = self._call.example
            if example is None and feature_names is not None:
                import pandas as pd

                names = list(feature_names())
                example = pd.DataFrame([[float("nan")] * len(names)], columns=names)
                model_kwargs = {"input_example": None, **model_kwargs}
            self._log_final_model(trail, model, example, packages, **model_kwargs)
        scores = importance() if self.importance else None
        if scores is not None:
            name = f"{self.framework}/feature_importance"
            log_importance(trail, scores, name, title, plot=plot)

    def _loop_rounds(
        self, callbacks: list[Any], *, stop: type[BaseException], last: Callable[..., bool]
    ) -> None:
        """Put one :class:`RoundLoop` in place of the training's after-round ``callbacks``
        (the framework's own list, not being iterated): it logs each round with the adapter's
        ``after_iteration`` and ends the run with its ``_ended``; the run ends with
        :meth:`_stopped` when the list is released before (the training raised where no
        hook saw it)."""
        loop = RoundLoop(
            callbacks, log=self.after_iteration, ended=self._ended, stop=stop, last=last
        )
        callbacks[:] = [loop]
        self._session.end_when_released(loop, functools.partial(self._stopped, None))

    def _watch_hooks(
        self, container: Any, names: Sequence[str], ended: Callable[[Any], Any]
    ) -> None:
        """Wrap the loop hooks ``names`` of a training's own container of callbacks: an
        exception of any of them ends the run (:meth:`_stopped`) and propagates unchanged; the
        last one's return ends it with ``ended(result)``; the run ends with :meth:`_stopped`
        when the container is released before (the training raised where no hook saw it)."""
        # A weak reference: a bound method stored on the container would keep it alive in a
        # reference cycle, and the release must be seen as soon as train()'s frame is gone.
        ref = weakref.ref(container)

        def wrap(name: str) -> Callable[..., Any]:
            method = getattr(type(container), name)

            def watched(*args: Any, **kwargs: Any) -> Any:
                try:
                    result = method(ref(), *args, **kwargs)
                except BaseException as error:
                    self._stopped(error)
                    raise
                if name == names[-1]:
                    ended(result)
                return result

            return watched

        for name in names:
            setattr(container, name, wrap(name))
        self._session.end_when_released(container, functools.partial(self._stopped, None))

    def _end(
        self, summary: Callable[[Trail], Any], error: BaseException | None = None, **how: Any
    ) -> None:
        """Log ``summary(trail)``, then end the run (see :meth:`RunSession.end_after`)."""
        if self._session.trail is None:
            return
        try:
            self._session.end_after(summary, error, **how)
        finally:
            self._forget()

    def _stopped(self, error: BaseException | None) -> None:
        """End the run for an exception that stopped training (None: one no hook saw)."""
        self._end_unfinished(error)

    def _end_unfinished(
        self,
        error: BaseException | None,
        *,
        at: int | None = None,
        summary: Callable[[Trail], Any] | None = None,
    ) -> None:
        """End the run FAILED for an exception that stopped training before its end.

        Args:
            error: the exception (None: one no hook saw; the run says so).
            at: the step of the round it stopped in, when known.
            summary: what to log before the end (the rounds seen but not logged yet).
        """
        where = f" in {self.round_name} {at}" if at is not None else ""
        reason = (
            f"{self.framework_title} training stopped{where} without reaching its end, by an "
            f"exception outside the callbacks ({self.unseen_errors}) that mltrail could not see"
        )
        self._end(summary or _nothing, error, finished=False, reason=reason)

    def _forget(self) -> None:
        """The run has ended: no model or data kept past it. Also the state before the first
        training: an adapter that keeps more per training sets it here too (``super()``)."""
        self._call = BoostingCall()

    def __repr__(self) -> str:
        given = self._session.given
        target = f"trail={given!r}" if given is not None else "new run per training"
        return f"TrailCallback({target}, checkpoint_every={self.checkpoint_every})"


def _nothing(trail: Trail) -> None:
    """No summary: a training that stopped logs nothing more."""
