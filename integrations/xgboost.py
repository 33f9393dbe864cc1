"""XGBoost adapter: one callback records ``xgb.train``, ``xgb.cv`` and the scikit-learn API.

    import xgboost as xgb
    from mltrail.integrations.xgboost import TrailCallback

    booster = xgb.train(params, dtrain, 200, evals=[(dval, "val")], callbacks=[TrailCallback()])
    model = xgb.XGBClassifier(n_estimators=200, callbacks=[TrailCallback()]).fit(X, y)

A run records the booster's configuration as params (plus ``num_boost_round`` and
``early_stopping_rounds``; the estimator's ``get_params()`` under the scikit-learn API), every eval
set's every metric at ``step = boosting round`` as ``{dataset}-{metric}`` (``-mean``/``-std`` for
``xgb.cv``), ``best_iteration``/``best_score`` under early stopping, optional checkpoints under
``checkpoints/``, the final model under ``model/`` (MLflow's XGBoost flavor, UBJ, with signature
and input example) and feature importance under ``xgboost/``.

How it works, and why:

- XGBoost hands a callback only the booster. The callback takes the rest from the training call
  it runs inside: ``xgb.train``'s/``xgb.cv``'s arguments (``params`` as the user wrote them,
  ``num_boost_round``, ``early_stopping_rounds``, a few rows of ``dtrain`` for the input example)
  and, under the scikit-learn API, the estimator whose ``fit`` holds this very callback in its
  ``callbacks``. It is a bounded, read-only look at the caller frames, once per training; the
  booster's configuration alone carries neither the round count nor the estimator's own params.
  If XGBoost's internals change, the run still gets the booster configuration.
- XGBoost has no exception hook, and a callback's ``after_training`` is skipped when training
  raises. The callback wraps the loop hooks of the private per-call ``CallbackContainer`` that
  calls it, so an exception raised by another callback, a custom metric or an interrupt during
  evaluation ends the run FAILED (KILLED for KeyboardInterrupt) and then propagates unchanged; the
  final model is taken from there too (after ``EarlyStopping(save_best=True)`` trimmed it). An
  exception inside the booster update itself (a custom objective, Ctrl-C while a tree grows) passes
  no callback: uncaught, mltrail's process hook ends the run; caught, the run ends FAILED when
  XGBoost's per-call state is released (or at the latest at exit, never FINISHED);
  ``mltrail.autolog()`` wraps the call and sees them all.
- One callback, one training at a time. Without ``trail=``, each training the callback sees starts
  its own run (so ``GridSearchCV``, which clones the estimator, gives one run per fit). With
  ``trail=`` every training logs into that run, which is only allowed when its steps follow the
  ones already logged (continued training with ``xgb_model=``); anything else raises
  :class:`~mltrail.MltrailError` before the first round instead of writing steps twice.
- Continued training (``xgb_model=``) starts at ``step = booster.num_boosted_rounds()``.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

try:
    import numpy as np
    import xgboost
    from xgboost.callback import CallbackContainer, TrainingCallback
except ImportError as error:  # pragma: no cover - exercised in the core-only environment
    raise ImportError(
        'mltrail.integrations.xgboost needs XGBoost: pip install "mltrail[xgboost]"'
    ) from error

from mltrail.autolog import options_for
from mltrail.config import Options
from mltrail.errors import MltrailError, guarded, strict_mode
from mltrail.recording.trail import Trail, start_run

logger = logging.getLogger("mltrail.xgboost")

__all__ = ["TrailCallback", "autolog_patches"]

_RUN_NAMES = frozenset({"experiment", "run_name", "tracking_uri", "run_id", "tags"})
_START_RUN_ARGS = _RUN_NAMES | {field.name for field in dataclasses.fields(Options)}
# Booster configuration entries that are bookkeeping or estimated during training, not settings.
_INTERNAL_CONFIG = frozenset(
    {
        "base_score",  # estimated from the labels at the first round (boost_from_average)
        "num_trees",
        "updater_seq",
        "fail_on_invalid_gpu_id",
        "debug_synchronize",
        "max_cached_hist_node",
    }
)
_IMPORTANCE_TYPES = ("gain", "weight", "cover")
_EXAMPLE_ROWS = 5
# Next free step of runs given with trail=, shared by every callback (clones included).
_next_steps: weakref.WeakKeyDictionary[Trail, int] = weakref.WeakKeyDictionary()
# Trainings that have not ended yet, failed at interpreter exit (see _fail_unfinished).
_unfinished: weakref.WeakSet[_Training] = weakref.WeakSet()
_exit_hook = False


class TrailCallback(TrainingCallback):
    """Record an XGBoost training (``xgb.train``, ``xgb.cv``, scikit-learn API) as an MLflow run.

    Args:
        trail: log into this run (from :func:`mltrail.start_run`) instead of starting one per
            training; the run is left open for its owner to end.
        checkpoint_every: upload the booster (UBJ) under ``checkpoints/`` every this many rounds;
            off by default.
        log_model: log the final model under ``model/`` (MLflow's XGBoost flavor: the Booster,
            or the fitted estimator under the scikit-learn API).
        registered_model_name: also register the model in the Model Registry under this name.
        importance: log feature importance (gain, weight, cover) as
            ``xgboost/feature_importance.json`` and a bar plot ``xgboost/feature_importance.png``.
        **start_run_kwargs: arguments of :func:`mltrail.start_run` (``experiment``,
            ``run_name``, ``tags``, options such as ``flush_timeout``) for the runs it starts.

    Raises:
        MltrailError: for both ``trail`` and start-run arguments, an unknown option, a bad
            ``checkpoint_every``, or (at training start) a second training into ``trail`` that
            would log the same steps again.
    """

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
        super().__init__()
        if trail is not None and start_run_kwargs:
            raise MltrailError(
                "TrailCallback takes either trail= (an existing run) or start_run arguments "
                f"({', '.join(sorted(start_run_kwargs))}), not both."
            )
        if checkpoint_every is not None and (
            isinstance(checkpoint_every, bool)
            or not isinstance(checkpoint_every, int)
            or checkpoint_every < 1
        ):
            raise MltrailError(
                f"checkpoint_every must be a positive number of rounds or None, not "
                f"{checkpoint_every!r}."
            )
        # Fail fast on a mistyped option rather than at the first training.
        Options.resolve(**{k: v for k, v in start_run_kwargs.items() if k not in _RUN_NAMES})
        self._given = trail
        self._run_kwargs = start_run_kwargs
        self.checkpoint_every = checkpoint_every
        self.log_model = log_model
        self.registered_model_name = registered_model_name
        self.importance = importance
        self._current: _Training | None = None

    # --- XGBoost hooks -----------------------------------------------------------------------

    def before_training(self, model: Any) -> Any:
        previous = self._current
        if previous is not None and not previous.done:
            previous.fail(None)  # it raised past every hook and the exception was caught
        self._current = None
        context = _CallContext.find(self, sys._getframe(1))
        counter = getattr(self._given, "_errors", None)
        with guarded("starting the XGBoost run", counter):
            self._current = _Training.begin(self, model, context)
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        training = self._current
        if training is not None and not training.done:
            with guarded("logging XGBoost metrics", training.counter):
                training.after_round(model, epoch, evals_log)
        return False  # True would stop the training

    def after_training(self, model: Any) -> Any:
        training = self._current
        if training is not None and not training.done and not training.watched:
            training.finish(model)  # no container to wrap: finish from here
        return model

    # --- used by the autolog wrappers --------------------------------------------------------

    def _training_raised(self, error: BaseException) -> None:
        training = self._current
        if training is not None:
            training.fail(error)

    @property
    def run_id(self) -> str | None:
        """The run of the current (or last) training, None before the first one."""
        training = self._current
        if training is not None:
            return training.trail.run_id
        return self._given.run_id if self._given is not None else None

    # --- copies: sklearn's clone deep-copies callbacks, joblib pickles estimators -------------

    def _config(self) -> dict[str, Any]:
        return {
            "checkpoint_every": self.checkpoint_every,
            "log_model": self.log_model,
            "registered_model_name": self.registered_model_name,
            "importance": self.importance,
            **self._run_kwargs,
        }

    def __deepcopy__(self, memo: dict[int, Any]) -> TrailCallback:
        return TrailCallback(self._given, **self._config())  # a fresh callback, same run target

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self._config()}  # a live run cannot be pickled; the copy starts its own

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["config"])  # type: ignore[misc]

    def __repr__(self) -> str:
        target = f"trail={self._given!r}" if self._given is not None else "new run per training"
        return f"TrailCallback({target}, checkpoint_every={self.checkpoint_every})"


@dataclasses.dataclass
class _CallContext:
    """What the callback learns from the training call it runs inside (see the module doc)."""

    api: str = "unknown"  # "train", "cv" or "sklearn"
    container: Any = None
    params: Any = None
    call_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    estimator: Any = None
    example: Any = None

    @classmethod
    def find(cls, callback: TrailCallback, frame: Any) -> _CallContext:
        context = cls()
        try:
            context._walk(callback, frame)
        except Exception as error:  # the run still gets the booster configuration
            if strict_mode():
                raise
            logger.debug("reading the XGBoost training call failed: %s", error)
        finally:
            del frame
        return context

    def _walk(self, callback: TrailCallback, frame: Any) -> None:
        dtrain = fit_x = None
        for _ in range(12):
            if frame is None:
                break
            code = frame.f_code
            module = frame.f_globals.get("__name__", "")
            if self.container is None and code.co_name == "before_training":
                owner = frame.f_locals.get("self")
                if isinstance(owner, CallbackContainer):
                    self.container = owner
            elif module == "xgboost.training" and code.co_name in ("train", "cv"):
                local = frame.f_locals
                self.api = code.co_name
                self.params = local.get("params")
                names = ["num_boost_round", "early_stopping_rounds"]
                if code.co_name == "cv":
                    names += ["nfold", "stratified", "shuffle", "seed", "metrics"]
                self.call_args = {name: local.get(name) for name in names}
                dtrain = local.get("dtrain")
            elif self.api == "train" and code.co_name == "fit":
                owner = frame.f_locals.get("self")
                if isinstance(owner, xgboost.XGBModel) and any(
                    cb is callback for cb in owner.callbacks or ()
                ):
                    self.api, self.estimator = "sklearn", owner
                    fit_x = frame.f_locals.get("X")
                    break
            frame = frame.f_back
        del frame
        if self.api != "cv":
            self.example = _example(fit_x, dtrain)


class _Training:
    """One training recorded into one run: the state between ``before_training`` and the end."""

    def __init__(self, callback: TrailCallback, trail: Trail, owned: bool) -> None:
        self.callback = callback
        self.trail = trail
        self.owned = owned  # this training started the run, so it ends it
        self.counter = getattr(trail, "_errors", None)
        self.done = False
        self.watched = False
        self.api = "unknown"
        self.offset = 0  # rounds the booster had before this training (continued training)
        self.rounds = 0  # rounds of the eval history already logged
        self.last_epoch = -1
        self.history: Any = None
        self.example: Any = None
        self.estimator: Any = None
        self.last_metrics: dict[str, float] = {}
        self._tmp: Path | None = None
        self._finalizer: weakref.finalize | None = None

    @classmethod
    def begin(cls, callback: TrailCallback, model: Any, context: _CallContext) -> _Training:
        offset = int(model.num_boosted_rounds())
        given = callback._given
        if given is not None:
            next_step = _next_steps.get(given)
            if next_step is not None and offset < next_step:
                raise MltrailError(
                    f"Run {given.run_id} already holds XGBoost rounds up to step {next_step - 1}; "
                    f"this training would log its rounds again from step {offset}. Use a new "
                    "TrailCallback() without trail= (one run per training), or continue the "
                    "same booster with xgb_model= so that the steps go on."
                )
            trail, owned = given, False
        else:
            trail, owned = start_run(**callback._run_kwargs), True
            _install_exit_hook()
        training = cls(callback, trail, owned)
        _unfinished.add(training)
        training.api = context.api
        training.offset = offset
        training.example = context.example
        training.estimator = context.estimator
        with guarded("recording the XGBoost configuration", training.counter):
            training._log_start(model, context)
        if context.container is not None:
            with guarded("watching the XGBoost training", training.counter):
                training._watch(context.container)
        if callback.importance and context.api != "cv" and "matplotlib.figure" not in sys.modules:
            threading.Thread(
                target=_preload_matplotlib, name="mltrail-preload", daemon=True
            ).start()
        return training

    # --- start -------------------------------------------------------------------------------

    def _log_start(self, model: Any, context: _CallContext) -> None:
        trail = self.trail
        tags = {"mltrail.framework": "xgboost", "mltrail.xgboost.api": self.api}
        if self.offset:
            tags["mltrail.xgboost.initial_rounds"] = str(self.offset)
        trail.set_tags(tags)
        params: dict[str, Any] = {}
        if self.estimator is not None:
            params.update(_estimator_params(self.estimator))
        else:
            params.update(_user_params(context.params))
        for name, value in context.call_args.items():
            key = f"cv.{name}" if self.api == "cv" and name not in _ROUND_ARGS else name
            if name == "metrics":
                value = list(value) if value else None
                if not value:
                    continue
            params.setdefault(key, value)
        booster = model.cvfolds[0].bst if self.api == "cv" else model
        for key, value in _config_params(json.loads(booster.save_config())).items():
            params.setdefault(key, value)
        trail.log_params(params)
        if self.api == "cv" and self.callback.checkpoint_every:
            logger.warning("mltrail: xgb.cv trains one booster per fold; no checkpoints are kept.")

    def _watch(self, container: Any) -> None:
        """Wrap the per-call container's loop hooks: exceptions of other callbacks and metrics."""
        training = self
        # A weak reference: a bound method stored on the container would keep it alive in a
        # reference cycle, and the finalizer below must run as soon as train()'s frame is gone.
        ref = weakref.ref(container)

        def wrap(name: str) -> Callable[..., Any]:
            method = getattr(type(container), name)

            def watched(*args: Any, **kwargs: Any) -> Any:
                try:
                    result = method(ref(), *args, **kwargs)
                except BaseException as error:
                    training.fail(error)
                    raise
                if name == "after_training":
                    training.finish(result)  # the model train() returns (maybe trimmed)
                return result

            return watched

        for name in ("before_iteration", "after_iteration", "after_training"):
            setattr(container, name, wrap(name))
        self.watched = True
        # The container dies with train()'s frame: if that happens before the end, it raised.
        self._finalizer = weakref.finalize(container, self.fail, None)
        self._finalizer.atexit = False

    # --- rounds ------------------------------------------------------------------------------

    def after_round(self, model: Any, epoch: int, evals_log: Any) -> None:
        self.history = evals_log
        self.last_epoch = epoch
        self._log_new_rounds()
        every = self.callback.checkpoint_every
        step = self.offset + epoch
        if every and (step + 1) % every == 0 and self.api != "cv" and self.trail.enabled:
            path = self._tmp_dir() / f"xgboost-{step:06d}.ubj"
            model.save_model(str(path))
            self.trail.log_checkpoint(path, step=step, metrics=self.last_metrics)

    def _log_new_rounds(self) -> None:
        """Log the eval history's rounds not logged yet (normally just the last one)."""
        history = self.history
        if not history:
            return
        first = next(iter(history.values()))
        total = len(next(iter(first.values()))) if first else 0
        cv = self.api == "cv"
        for index in range(self.rounds, total):
            metrics: dict[str, Any] = {}
            for data, by_metric in history.items():
                for name, values in by_metric.items():
                    if cv:
                        mean, std = values[index]
                        metrics[f"{data}-{name}-mean"] = mean
                        metrics[f"{data}-{name}-std"] = std
                    else:
                        metrics[f"{data}-{name}"] = values[index]
            self.trail.log_metrics(metrics, step=self.offset + index)
            self.last_metrics = metrics
        self.rounds = max(self.rounds, total)

    # --- end ---------------------------------------------------------------------------------

    def finish(self, model: Any) -> None:
        if self.done:
            return
        self._settle()
        try:
            with guarded("finishing the XGBoost run", self.counter):
                self._log_end(model)
        except BaseException as error:  # strict mode or an interrupt: the run did not finish
            self._end(error)
            raise
        self._end(None, finished=True)

    def fail(self, error: BaseException | None) -> None:
        """End the run for an exception that stopped training (None: one nobody showed us)."""
        if self.done:
            return
        self._settle()
        with guarded("recording the XGBoost failure", self.counter):
            self._log_new_rounds()
            self._remember_steps()
        self._end(error)

    def _settle(self) -> None:
        self.done = True
        _unfinished.discard(self)
        if self._finalizer is not None:
            self._finalizer.detach()

    def _log_end(self, model: Any) -> None:
        self._log_new_rounds()
        last_step = self.offset + max(self.last_epoch, self.rounds - 1, 0)
        best = model.attr("best_iteration")
        if best is not None:
            self.trail.log_metrics(
                {"best_iteration": int(best), "best_score": float(model.attr("best_score"))},
                step=last_step,
            )
        self._remember_steps()
        if not self.trail.enabled:
            return
        booster = model.cvfolds[0].bst if self.api == "cv" else model
        config = json.loads(booster.save_config())
        self.trail.log_dict(config, "xgboost/config.json")
        if self.api == "cv":
            return  # no single final model: one booster per fold
        if self.callback.log_model:
            self._log_model(model)  # first: it is saved in the background while we plot
        tree = config["learner"]["gradient_booster"]["name"] in ("gbtree", "dart")
        if self.callback.importance and tree and model.num_boosted_rounds():
            self._log_importance(model)

    def _remember_steps(self) -> None:
        if not self.owned:
            rounds = max(self.last_epoch + 1, self.rounds)
            _next_steps[self.trail] = max(_next_steps.get(self.trail, 0), self.offset + rounds)

    def _log_importance(self, booster: Any) -> None:
        scores = {kind: booster.get_score(importance_type=kind) for kind in _IMPORTANCE_TYPES}
        self.trail.log_dict(scores, "xgboost/feature_importance.json")
        with guarded("plotting feature importance", self.counter):
            path = self._tmp_dir() / "feature_importance.png"
            _plot_importance(scores, path)
            self.trail.log_artifact(path, "xgboost")

    def _log_model(self, booster: Any) -> None:
        # Pinned requirements: MLflow would otherwise infer them in a subprocess (seconds).
        requirements = [f"xgboost=={xgboost.__version__}"]
        model = booster.copy()  # the user may keep training the booster they get back
        if self.estimator is not None:
            with guarded("rebuilding the fitted estimator", self.counter):
                model = _fitted_estimator(self.estimator, booster)
                import sklearn

                requirements.append(f"scikit-learn=={sklearn.__version__}")
        self.trail.log_model(
            model,
            "xgboost",
            signature_from=self.example,
            registered_model_name=self.callback.registered_model_name,
            model_format="ubj",
            pip_requirements=requirements,
        )

    def _end(self, error: BaseException | None, finished: bool = False) -> None:
        trail = self.trail
        try:
            if not self.owned:
                if self._tmp is not None:
                    trail.flush()  # checkpoints upload from our temp folder
            elif trail.status is None:
                if finished:
                    trail.end("FINISHED")
                elif error is not None:
                    trail.end_with_exception(error)
                else:
                    where = self.offset + self.last_epoch + 1
                    message = (
                        f"XGBoost training stopped in round {where} without reaching its end, by "
                        "an exception outside the callbacks (booster update, custom objective) "
                        "that mltrail could not see"
                    )
                    logger.warning("mltrail: run %s: %s; marked FAILED.", trail.run_id, message)
                    trail.set_tags(
                        {"mltrail.exception.type": "unknown", "mltrail.exception.message": message}
                    )
                    trail.end("FAILED")
        finally:
            self.estimator = self.example = self.history = None
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def _tmp_dir(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="mltrail-xgboost-"))
        return self._tmp


_ROUND_ARGS = ("num_boost_round", "early_stopping_rounds")


def _install_exit_hook() -> None:
    """Registered after the first run started, so it runs before mltrail's own exit hook
    (atexit is last-in first-out), which would end an unfinished training's run FINISHED."""
    global _exit_hook
    if not _exit_hook:
        _exit_hook = True
        atexit.register(_fail_unfinished)


def _fail_unfinished() -> None:
    for training in list(_unfinished):
        training.fail(None)


# --- params ------------------------------------------------------------------------------------


def _user_params(params: Any) -> dict[str, Any]:
    """``xgb.train``'s params as written: a dict, or (name, value) pairs with repeated names."""
    if isinstance(params, Mapping):
        return {str(k): _plain(v) for k, v in params.items()}
    merged: dict[str, Any] = {}
    for key, value in params or ():
        if key in merged:
            previous = merged[key] if isinstance(merged[key], list) else [merged[key]]
            merged[key] = [*previous, value]
        else:
            merged[key] = _plain(value)
    return merged


def _estimator_params(estimator: Any) -> dict[str, Any]:
    params = estimator.get_params(deep=False)
    return {k: _plain(v) for k, v in params.items() if k != "callbacks"}


def _plain(value: Any) -> Any:
    """Callables (custom objectives and metrics) by name, not by their address."""
    if callable(value) and not isinstance(value, type):
        return getattr(value, "__qualname__", None) or type(value).__name__
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _config_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings in a booster's ``save_config()``: the leaves of its ``*_param`` sections."""
    found: dict[str, Any] = {}

    def visit(node: Mapping[str, Any], in_params: bool) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                visit(value, key.endswith("_param"))
            elif in_params and isinstance(value, str) and key not in _INTERNAL_CONFIG:
                found.setdefault(key, _tidy(value))

    learner = config.get("learner", {})
    visit(learner, False)
    metrics = [m.get("name") for m in learner.get("metrics", []) if isinstance(m, Mapping)]
    if metrics:
        found.setdefault("eval_metric", metrics[0] if len(metrics) == 1 else metrics)
    return found


def _tidy(text: str) -> str:
    """XGBoost stores floats as float32 text ("0.100000001"): show them as written ("0.1")."""
    if text.lstrip("-").isdigit():
        return text
    try:
        number = float(text)
    except ValueError:
        return text
    return str(np.float32(number))


# --- model, example, importance ------------------------------------------------------------------


def _example(fit_x: Any, dtrain: Any) -> Any:
    """A few rows of the training input, for the model's signature and input example."""
    if fit_x is not None:
        try:
            rows = fit_x.iloc[:_EXAMPLE_ROWS] if hasattr(fit_x, "iloc") else fit_x[:_EXAMPLE_ROWS]
            if hasattr(rows, "shape") or isinstance(rows, list):
                return np.asarray(rows) if isinstance(rows, list) else rows
        except Exception:
            logger.debug("no input example from the fit input", exc_info=True)
    if isinstance(dtrain, xgboost.DMatrix) and type(dtrain) is xgboost.DMatrix:
        types = dtrain.feature_types or ()
        if "c" in types:
            return None  # categorical columns cannot be rebuilt as plain numbers
        count = min(_EXAMPLE_ROWS, dtrain.num_row())
        part = dtrain.slice(list(range(count))).get_data().tocoo()
        dense = np.full(part.shape, np.nan, dtype=np.float64)  # absent entries are missing
        dense[part.row, part.col] = part.data
        if dtrain.feature_names:
            import pandas as pd

            return pd.DataFrame(dense, columns=list(dtrain.feature_names))
        return dense
    return None


def _fitted_estimator(estimator: Any, booster: Any) -> Any:
    """A fitted copy of the estimator around ``booster`` (during ``fit`` the estimator itself
    does not hold the new booster yet); the user's estimator is not touched."""
    model = type(estimator)()
    model.load_model(booster.save_raw("ubj"))
    return model


def _plot_importance(scores: Mapping[str, Mapping[str, float]], path: Path, top: int = 20) -> None:
    """The top features by gain, with each importance type as its share of the total."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    order = sorted(scores["gain"], key=scores["gain"].get, reverse=True)[:top][::-1]
    width = max((len(name) for name in order), default=1)
    figure = Figure(figsize=(7, max(3.0, 0.32 * len(order) + 1.4)))  # no pyplot: no backend change
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = np.arange(len(order))
    height = 0.8 / len(scores)
    for index, (kind, values) in enumerate(scores.items()):
        total = sum(values.values()) or 1.0
        shares = [values.get(name, 0.0) / total for name in order]
        axes.barh(positions + (1 - index) * height, shares, height=height, label=kind)
    axes.set_yticks(positions, order)
    axes.set_title("XGBoost feature importance (share of each type's total)")
    axes.legend(ncol=len(scores), loc="upper center", bbox_to_anchor=(0.5, -0.06), frameon=False)
    # One panel and a margin from the label length: cheaper than three panels or tight_layout.
    bottom = 0.8 / figure.get_figheight()  # room for the tick labels and the legend
    figure.subplots_adjust(
        left=min(0.5, 0.04 + 0.013 * width),
        right=0.97,
        top=1 - 0.45 / figure.get_figheight(),
        bottom=bottom,
    )
    figure.savefig(path, dpi=80)


def _preload_matplotlib() -> None:
    """Import matplotlib while the trees grow (XGBoost releases the GIL), not after."""
    try:
        import matplotlib.backends.backend_agg
        import matplotlib.figure  # noqa: F401
    except Exception:
        logger.debug("matplotlib is not available: no importance plot", exc_info=True)


# --- autolog ----------------------------------------------------------------------------------


def autolog_patches(options: dict[str, Any]) -> list[tuple[Any, str, Callable[..., Any]]]:
    """``mltrail.autolog`` patches: ``xgboost.train``/``cv`` and the scikit-learn API's ``fit``
    get a :class:`TrailCallback` when they have none. Options that are neither ``start_run``
    arguments nor this adapter's belong to other adapters and are ignored here."""
    start, own = options_for("xgboost", options)
    settings = {**start, **own}

    def with_callback(call_original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        callbacks = kwargs.get("callbacks")
        if _has_trail_callback(callbacks):
            return call_original(*args, **kwargs)
        callback = TrailCallback(**settings)
        kwargs["callbacks"] = [*(callbacks or ()), callback]  # a new list: the user's stays
        return _run(callback, call_original, args, kwargs)

    def fit_with_callback(
        call_original: Callable[..., Any], estimator: Any, *args: Any, **kwargs: Any
    ) -> Any:
        callbacks = estimator.callbacks
        if _has_trail_callback(callbacks):
            return call_original(estimator, *args, **kwargs)
        callback = TrailCallback(**settings)
        estimator.callbacks = [*(callbacks or ()), callback]  # fit reads it from the estimator
        try:
            return _run(callback, call_original, (estimator, *args), kwargs)
        finally:
            estimator.callbacks = callbacks  # the very same object back

    from xgboost import sklearn as xgb_sklearn
    from xgboost import training

    patches: list[tuple[Any, str, Callable[..., Any]]] = [
        (owner, name, with_callback) for owner in (xgboost, training) for name in ("train", "cv")
    ]
    # Random forests refuse callbacks; their fit calls XGBClassifier/XGBRegressor.fit, patched.
    forests = (xgb_sklearn.XGBRFClassifier, xgb_sklearn.XGBRFRegressor)
    for cls in vars(xgb_sklearn).values():
        if (
            isinstance(cls, type)
            and issubclass(cls, xgb_sklearn.XGBModel)
            and "fit" in vars(cls)
            and cls not in forests
        ):
            patches.append((cls, "fit", fit_with_callback))
    return patches


def _run(
    callback: TrailCallback,
    call_original: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    try:
        return call_original(*args, **kwargs)
    except BaseException as error:  # seen here even when no XGBoost hook saw it
        callback._training_raised(error)
        raise


def _has_trail_callback(callbacks: Any) -> bool:
    return any(isinstance(cb, TrailCallback) for cb in callbacks or ())
