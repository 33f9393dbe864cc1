"""XGBoost adapter: one callback records ``xgb.train``, ``xgb.cv`` and the scikit-learn API.

    booster = xgb.train(params, dtrain, 200, evals=[(dval, "val")], callbacks=[TrailCallback()])
    model = xgb.XGBClassifier(n_estimators=200, callbacks=[TrailCallback()]).fit(X, y)

Params: the booster's configuration, ``params`` as written (the estimator's ``get_params()``
under the scikit-learn API), ``num_boost_round``, ``early_stopping_rounds``, ``cv.*``. Metrics:
every eval set's metrics at ``step = boosting round`` as ``{dataset}-{metric}`` (``-mean``,
``-std`` for ``xgb.cv``), ``early_stopping.*``. Artifacts: ``checkpoints/`` (optional),
``model/`` (XGBoost flavor, UBJ), ``xgboost/config.json``, ``xgboost/feature_importance.*``.

XGBoost hands a callback only the booster, so the callback reads the rest from the training
call it runs inside (a bounded, read-only look at the caller frames, once per training): the
call's arguments, the per-call ``CallbackContainer`` and, under the scikit-learn API, the
estimator whose ``fit`` holds this very callback. XGBoost has no exception hook and skips
``after_training`` when training raises: the callback wraps the container's loop hooks, so an
exception of another callback or a metric ends the run FAILED (KILLED for KeyboardInterrupt)
and propagates unchanged; the final model is taken there too (after ``EarlyStopping(save_best=
True)`` trimmed it). An exception in the booster update (a custom objective) passes no hook: the
run ends FAILED when the container is released, or at exit; ``mltrail.autolog()`` sees it.
Without ``trail=`` each training is its own run; with ``trail=`` a training must continue the
steps already logged (``xgb_model=``). Continued training starts at the booster's rounds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sys
import weakref
from collections.abc import Callable, Mapping
from typing import Any

try:
    import numpy as np
    import xgboost
    from xgboost.callback import CallbackContainer, EarlyStopping, TrainingCallback
except ImportError as error:  # pragma: no cover - exercised in the core-only environment
    raise ImportError(
        'mltrail.integrations.xgboost needs XGBoost: pip install "mltrail[xgboost]"'
    ) from error

from mltrail import Trail
from mltrail.adapters import (
    EXAMPLE_ROWS,
    CheckpointEvery,
    CheckpointModel,
    CopiedBySettings,
    EarlyStop,
    EpochLog,
    RunSession,
    by_name,
    call_with_callback,
    check_every,
    data_digest,
    digest_once,
    early_stopping_metrics,
    early_stopping_params,
    exception_safe,
    fingerprint,
    frames_above,
    head_rows,
    importance_plot,
    log_importance,
    options_for,
    pinned_requirements,
    preload_matplotlib,
)

logger = logging.getLogger("mltrail.xgboost")


def _load_booster(path: Any) -> Any:
    booster = xgboost.Booster()
    booster.load_model(str(path))
    return booster


# A checkpoint is a saved Booster: loaded as one, it is a model in MLflow's XGBoost flavor.
_AS_MODEL = CheckpointModel(
    "xgboost",
    _load_booster,
    {"model_format": "ubj", "pip_requirements": pinned_requirements("xgboost")},
)

__all__ = ["TrailCallback", "autolog_patches"]

# Booster configuration entries that are bookkeeping or estimated during training, not settings
# (base_score is estimated from the labels at the first round).
_INTERNAL_CONFIG = frozenset(
    "base_score num_trees updater_seq fail_on_invalid_gpu_id debug_synchronize "  # noqa: SIM905
    "max_cached_hist_node".split()
)
_FULL_DIGEST_BYTES = 8 << 20  # larger training data is digested from evenly spaced rows
_CV_ARGS = ("nfold", "stratified", "shuffle", "seed")
_IMPORTANCES = ("gain", "weight", "cover")


@exception_safe(returns_argument=("before_training", "after_training"))
class TrailCallback(CopiedBySettings, TrainingCallback):
    """Record an XGBoost training (``xgb.train``, ``xgb.cv``, scikit-learn API) as an MLflow run.

    Args:
        trail: log into this run (from :func:`mltrail.start_run`) instead of starting one per
            training; the run is left open for its owner to end.
        checkpoint_every: upload the booster (UBJ) under ``checkpoints/`` every this many rounds;
            off by default. The latest is aliased ``latest``, the one with the best value of the
            early-stopping metric (else of the last eval set's last metric) ``best``.
        log_model: log the final model under ``model/`` (MLflow's XGBoost flavor: the Booster,
            or the fitted estimator under the scikit-learn API).
        registered_model_name: also register the model in the Model Registry under this name.
        importance: log feature importance (gain, weight, cover) as
            ``xgboost/feature_importance.json`` and a bar plot ``xgboost/feature_importance.png``.
        **start_run_kwargs: arguments of :func:`mltrail.start_run` (``experiment``,
            ``run_name``, ``tags``, options such as ``flush_timeout``) for the runs it starts.

    Attributes:
        run_id: the run of the current (or last) training, None before the first one.

    Raises:
        MltrailError: for both ``trail`` and start-run arguments, an unknown option, a bad
            ``checkpoint_every``, or (at training start) a second training into ``trail`` that
            would log the same steps again.
    """

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
        super().__init__()
        self._session = RunSession("xgboost", trail, start_run_kwargs)
        self.checkpoint_every = check_every("checkpoint_every", checkpoint_every)
        self.log_model = log_model
        self.registered_model_name = registered_model_name
        self.importance = importance
        self._epochs = EpochLog(lambda: self._session.trail)
        self._checkpoints = CheckpointEvery(
            self._session, self.checkpoint_every, "xgboost-{step:06d}.ubj", _AS_MODEL
        )
        self._call = _Call()
        self._stops: list[tuple[EarlyStop, Any]] = []  # with the EarlyStopping each one reads
        self._logged = 0  # rounds of this training logged
        self._watched = False  # whether the container's hooks end the run (see _watch)

    @property
    def run_id(self) -> str | None:
        return self._session.last_run_id

    # --- XGBoost hooks -----------------------------------------------------------------------

    def before_training(self, model: Any) -> Any:
        if self._session.trail is not None:
            self._stopped(None)  # the last training raised past every hook and it was caught
        rounds = int(model.num_boosted_rounds())
        # Continued training into run_id= at round k+1: continue, fork or rewind that run; into
        # trail=, only past the rounds it holds.
        trail = self._session.open(
            restart_step=rounds,
            steps_name="XGBoost rounds",
            how_to_continue="continue the same booster with xgb_model=",
        )
        self._session.training_started()
        self._epochs = EpochLog(lambda: self._session.trail)  # a new run, at the booster's rounds
        self._epochs.start(resumed_from=rounds)
        self._call, self._stops, self._logged = _Call(), [], 0
        self._checkpoints.start()  # which is "best": monitored once rounds are seen
        container = None  # never kept: its release tells that train() has returned or raised
        with self._session.guarded("reading the training call"):
            container = self._call.read(self, sys._getframe(1))
        with self._session.guarded("recording the configuration"):
            self._log_start(trail, model, rounds, container)
        if container is not None:
            with self._session.guarded("watching the training"):
                self._watch(container)
        if self.importance and self._call.api != "cv":
            preload_matplotlib()  # imported while the trees grow, not after
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        trail = self._session.trail
        if trail is None:
            return False
        self._call.history = evals_log
        metrics = self._log_rounds(epoch + 1)
        if self._call.api != "cv":
            step = self._epochs.step(epoch)
            self._checkpoints.save(step, metrics, model.save_model, self._monitor)
        return False  # True would stop the training

    def after_training(self, model: Any) -> Any:
        if not self._watched:  # no container to wrap: finish from here
            self._end(functools.partial(self._log_end, model=model))
        return model

    # --- what the hooks record ---------------------------------------------------------------

    def _log_start(self, trail: Trail, model: Any, rounds: int, container: Any) -> None:
        call = self._call
        tags = {"mltrail.xgboost.api": call.api}
        if rounds:
            tags["mltrail.xgboost.initial_rounds"] = str(rounds)
        trail.set_tags(tags)
        if call.estimator is not None:
            params = {k: by_name(v) for k, v in call.estimator.get_params(deep=False).items()}
            params.pop("callbacks", None)
        else:
            params = _user_params(call.params)
        config = _config_params(json.loads(_booster(model, call).save_config()))
        callbacks = container.callbacks if container is not None else ()
        self._stops = [(_settings(c), c) for c in callbacks if isinstance(c, EarlyStopping)]
        stops = early_stopping_params([stop for stop, _ in self._stops])
        trail.log_params({**config, **call.args, **params, **stops})  # as written wins
        if call.api == "cv" and self.checkpoint_every:
            logger.warning("mltrail: xgb.cv trains one booster per fold; no checkpoints are kept.")

    def _monitor(self) -> tuple[str | None, str]:
        """What picks the best checkpoint: the (first) early stopping's metric, else the one
        XGBoost's early stopping would use, the last metric of the last eval set."""
        for stop, stopper in self._stops:
            for data, by_metric in stopper.stopping_history.items():
                return f"{data}-{next(iter(by_metric))}", stop.settings.get("mode") or "auto"
        history = self._call.history or {}
        if not history:
            return None, "auto"
        data = list(history)[-1]
        return f"{data}-{list(history[data])[-1]}", "auto"

    def _log_rounds(self, upto: int) -> dict[str, float]:
        """Log the rounds before ``upto`` not logged yet (normally just the last one; more when
        another callback stopped or broke a round before ours saw it); returns the last."""
        metrics: dict[str, float] = {}
        for index in range(self._logged, upto):
            metrics = _round_metrics(self._call.history, index, self._call.api == "cv")
            self._epochs.log(index, metrics)
        self._logged = max(self._logged, upto)
        return metrics

    def _watch(self, container: Any) -> None:
        """Wrap the per-call container's loop hooks (see the module doc)."""
        # A weak reference: a bound method stored on the container would keep it alive in a
        # reference cycle, and the finalizer below must run as soon as train()'s frame is gone.
        ref = weakref.ref(container)

        def wrap(name: str) -> Callable[..., Any]:
            method = getattr(type(container), name)

            def watched(*args: Any, **kwargs: Any) -> Any:
                try:
                    result = method(ref(), *args, **kwargs)
                except BaseException as error:
                    self._stopped(error)
                    raise
                if name == "after_training":  # the model train() returns (maybe trimmed)
                    self._end(functools.partial(self._log_end, model=result))
                return result

            return watched

        for name in ("before_iteration", "after_iteration", "after_training"):
            setattr(container, name, wrap(name))
        # The container dies with train()'s frame: if that happens before the end, it raised.
        self._session.end_when_released(container, functools.partial(self._stopped, None))
        self._watched = True

    def _stopped(self, error: BaseException | None) -> None:
        """End the run for an exception that stopped training (None: one no hook saw)."""
        seen = max(self._logged, _rounds_in(self._call.history))
        where = self._epochs.step(seen)
        reason = (
            f"XGBoost training stopped in round {where} without reaching its end, by an "
            "exception outside the callbacks (booster update, custom objective) that mltrail "
            "could not see"
        )
        self._end(lambda trail: self._log_rounds(seen), error, finished=False, reason=reason)

    def _end(self, summary: Callable[[Trail], Any], error: Any = None, **how: Any) -> None:
        if self._session.trail is None:
            return
        self._watched = False
        try:
            self._session.end_after(summary, error, **how)
        finally:
            self._call, self._stops = _Call(), []  # no model or data kept past the run

    def _log_end(self, trail: Trail, model: Any) -> None:
        self._log_rounds(_rounds_in(self._call.history))
        stops = [_outcome(stop, stopper) for stop, stopper in self._stops]
        trail.log_params(early_stopping_params(stops))  # monitors resolved at the first round
        self._epochs.log_at_last(early_stopping_metrics(stops))
        if not trail.enabled:
            return
        config = json.loads(_booster(model, self._call).save_config())
        trail.log_dict(config, "xgboost/config.json")
        # What it ran on: XGBoost falls back from a GPU it cannot find to the CPU.
        device = config["learner"].get("generic_param", {}).get("device")
        if device:
            trail.log_params({"device_used": device})
        if self._call.api == "cv":
            return  # no single final model: one booster per fold
        if self.log_model:
            self._log_model(trail, model)  # first: it is saved in the background while we plot
        tree = config["learner"]["gradient_booster"]["name"] in ("gbtree", "dart")
        if self.importance and tree and model.num_boosted_rounds():
            scores = {kind: model.get_score(importance_type=kind) for kind in _IMPORTANCES}
            title = "XGBoost feature importance (share of each type's total)"
            log_importance(trail, scores, "xgboost/feature_importance", title, plot=importance_plot)

    def _log_model(self, trail: Trail, booster: Any) -> None:
        model, packages = booster.copy(), ["xgboost"]  # the user may keep training theirs
        if self._call.estimator is not None:
            with self._session.guarded("rebuilding the fitted estimator"):
                # During fit the estimator does not hold the new booster yet: a fitted twin.
                fitted = type(self._call.estimator)()
                fitted.load_model(booster.save_raw("ubj"))
                model, packages = fitted, ["xgboost", "sklearn"]
        trail.log_model(
            model,
            "xgboost",
            signature_from=self._call.example,
            registered_model_name=self.registered_model_name,
            model_format="ubj",
            pip_requirements=pinned_requirements(*packages),  # MLflow would infer them: seconds
        )

    def __repr__(self) -> str:
        given = self._session.given
        target = f"trail={given!r}" if given is not None else "new run per training"
        return f"TrailCallback({target}, checkpoint_every={self.checkpoint_every})"


@dataclasses.dataclass
class _Call:
    """What the callback reads of the training call it runs inside (see the module doc)."""

    api: str = "unknown"  # "train", "cv" or "sklearn"
    params: Any = None
    args: dict[str, Any] = dataclasses.field(default_factory=dict)
    estimator: Any = None
    example: Any = None
    history: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the eval log, live

    def read(self, callback: TrailCallback, start: Any) -> Any:
        """Read the call from the frames above ``start``; returns the ``CallbackContainer``."""
        dtrain = fit_x = container = frame = None
        for frame in frames_above(start, 16):
            name = frame.f_code.co_name
            if container is None and name == "before_training":
                owner = frame.f_locals.get("self")
                container = owner if isinstance(owner, CallbackContainer) else None
            elif name in ("train", "cv") and frame.f_globals.get("__name__") == "xgboost.training":
                local = frame.f_locals
                self.api, self.params, dtrain = name, local.get("params"), local.get("dtrain")
                self.args = {n: local.get(n) for n in ("num_boost_round", "early_stopping_rounds")}
                self.args.update(_training_inputs(local))
                if name == "cv":
                    self.args.update({f"cv.{n}": local.get(n) for n in _CV_ARGS})
                    if local.get("metrics"):
                        self.args["cv.metrics"] = list(local["metrics"])
            elif self.api == "train" and name == "fit":
                owner = frame.f_locals.get("self")
                if isinstance(owner, xgboost.XGBModel) and callback in (owner.callbacks or ()):
                    self.api, self.estimator, fit_x = "sklearn", owner, frame.f_locals.get("X")
                    break
        del frame
        if self.api != "cv":
            self.example = _example(fit_x, dtrain)
        return container


def _training_inputs(local: Mapping[str, Any]) -> dict[str, Any]:
    """What else decides the result of ``xgb.train``/``cv``: the training data (by content,
    weights and labels included), a custom objective or metric (by name), the booster it
    continues (by content). These are params, so the run's fingerprint tells them apart."""
    found: dict[str, Any] = {}
    dtrain = local.get("dtrain")
    if isinstance(dtrain, xgboost.DMatrix):
        found["data.train.shape"] = f"{dtrain.num_row()}x{dtrain.num_col()}"
        found["data.train.digest"] = _dmatrix_digest(dtrain)
    if callable(local.get("obj")):
        found["objective"] = f"custom:{by_name(local['obj'])}"
    metric = local.get("custom_metric") or local.get("feval")
    if callable(metric):
        found["custom_metric"] = by_name(metric)
    start = local.get("xgb_model")
    if isinstance(start, xgboost.Booster):
        found["xgb_model"] = "booster:" + fingerprint(bytes(start.save_raw("ubj")))
    elif start is not None:
        found["xgb_model"] = str(start)  # a model file: its path
    return found


def _dmatrix_digest(data: Any) -> str:
    """A content digest of a DMatrix: its values, labels and weights, from evenly spaced rows
    when it is large; "unknown" when its data cannot be read back (a QuantileDMatrix)."""
    try:
        rows, size = data.num_row(), data.num_row() * max(data.num_col(), 1) * 4
        sample = data
        if size > _FULL_DIGEST_BYTES:
            sample = data.slice(list(range(0, rows, -(-size // _FULL_DIGEST_BYTES))))
        # Values are fixed once built (labels and weights are not): read once per DMatrix.
        values = digest_once(data, lambda: data_digest(sample.get_data()))
        if values == "unknown":
            return values
        return data_digest(values, sample.get_label(), sample.get_weight(), rows)
    except Exception:  # a QuantileDMatrix cannot give its data back
        return "unknown"


def _booster(model: Any, call: _Call) -> Any:
    return model.cvfolds[0].bst if call.api == "cv" else model  # cv: the first fold's


def _round_metrics(history: Mapping[str, Any], index: int, cv: bool) -> dict[str, float]:
    """Round ``index`` of XGBoost's eval log as ``{data}-{metric}`` (cv: ``-mean``, ``-std``)."""
    metrics: dict[str, float] = {}
    for data, by_metric in history.items():
        for name, values in by_metric.items():
            if index < len(values) and cv:
                metrics[f"{data}-{name}-mean"], metrics[f"{data}-{name}-std"] = values[index]
            elif index < len(values):
                metrics[f"{data}-{name}"] = values[index]
    return metrics


def _rounds_in(history: Mapping[str, Any]) -> int:
    first = next(iter(history.values()), {})
    return len(next(iter(first.values()), ()))


def _settings(stopper: Any) -> EarlyStop:
    """An ``EarlyStopping`` as configured (its monitor is known once it has run)."""
    data, metric = stopper.data, stopper.metric_name
    return EarlyStop(
        {
            "monitor": f"{data}-{metric}" if data and metric else None,
            "mode": {True: "max", False: "min"}.get(stopper.maximize, "auto"),
            "patience": stopper.rounds,
            "min_delta": getattr(stopper, "_min_delta", None),
            "save_best": bool(stopper.save_best),
        }
    )


def _outcome(stop: EarlyStop, stopper: Any) -> EarlyStop:
    """What an ``EarlyStopping`` did, in rounds on the run's steps (XGBoost counts continued
    training's rounds on, as the steps do)."""
    for data, by_metric in stopper.stopping_history.items():  # one entry once it has run
        for metric, scores in by_metric.items():
            last, wait = stopper.starting_round + len(scores) - 1, stopper.current_rounds
            best = stopper.best_scores[data][metric][-1]
            stop.settings = {**stop.settings, "monitor": f"{data}-{metric}"}
            stop.best_score = float(best[0] if isinstance(best, tuple) else best)  # cv: mean
            stop.best_epoch, stop.wait_count = last - wait, wait
            stop.stopped_epoch = last if wait >= stopper.rounds else None
            stop.restored_best_weights = bool(stopper.save_best)
    return stop


def _user_params(params: Any) -> dict[str, Any]:
    """``xgb.train``'s params as written: a dict, or (name, value) pairs with repeated names."""
    merged: dict[str, Any] = {}
    for key, value in params.items() if isinstance(params, Mapping) else params or ():
        if key in merged:  # only pairs repeat a name
            previous = merged[key] if isinstance(merged[key], list) else [merged[key]]
            merged[key] = [*previous, value]
        else:
            merged[str(key)] = by_name(value)
    return merged


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
    try:
        return text if text.lstrip("-").isdigit() else str(np.float32(float(text)))
    except ValueError:
        return text


def _example(fit_x: Any, dtrain: Any) -> Any:
    """A few rows of the training input, for the model's signature and input example."""
    rows = head_rows(fit_x)
    if (
        rows is not None
        or type(dtrain) is not xgboost.DMatrix
        or "c" in (dtrain.feature_types or ())
    ):
        return rows  # categorical columns cannot be rebuilt as plain numbers
    part = dtrain.slice(list(range(min(EXAMPLE_ROWS, dtrain.num_row())))).get_data().tocoo()
    dense = np.full(part.shape, np.nan)  # absent entries are missing values
    dense[part.row, part.col] = part.data
    if dtrain.feature_names:
        import pandas as pd

        return pd.DataFrame(dense, columns=list(dtrain.feature_names))
    return dense


# --- autolog ----------------------------------------------------------------------------------


def autolog_patches(options: dict[str, Any]) -> list[tuple[Any, str, Callable[..., Any]]]:
    """``mltrail.autolog`` patches: ``xgboost.train``/``cv`` and the scikit-learn API's ``fit``
    get a :class:`TrailCallback` when they have none. Options that are neither ``start_run``
    arguments nor this adapter's belong to other adapters and are ignored here."""
    start, own = options_for("xgboost", options)
    make = functools.partial(TrailCallback, **start, **own)

    def recorded(callbacks: Any, call: Callable[[Any], Any]) -> Any:
        """``call(callbacks)`` with a TrailCallback added, unless one is there; an exception
        that no XGBoost hook saw (a custom objective) still ends its run FAILED."""
        return call_with_callback(call, callbacks, TrailCallback, make, TrailCallback._stopped)

    def with_callback(call_original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def train(callbacks: Any) -> Any:
            return call_original(*args, **{**kwargs, "callbacks": callbacks})

        return recorded(kwargs.get("callbacks"), train)

    def fit_with_callback(
        call_original: Callable[..., Any], estimator: Any, *args: Any, **kwargs: Any
    ) -> Any:
        user = estimator.callbacks

        def fit(callbacks: Any) -> Any:
            estimator.callbacks = callbacks  # fit reads them from the estimator
            try:
                return call_original(estimator, *args, **kwargs)
            finally:
                estimator.callbacks = user  # the very same object back

        return recorded(user, fit)

    from xgboost import sklearn as xgb_sklearn
    from xgboost import training

    patches: list[tuple[Any, str, Callable[..., Any]]] = [
        (owner, name, with_callback) for owner in (xgboost, training) for name in ("train", "cv")
    ]
    # Random forests refuse callbacks; their fit calls XGBClassifier/XGBRegressor.fit, patched.
    forests = (xgb_sklearn.XGBRFClassifier, xgb_sklearn.XGBRFRegressor)
    for cls in vars(xgb_sklearn).values():
        if isinstance(cls, type) and issubclass(cls, xgb_sklearn.XGBModel) and cls not in forests:
            patches += [(cls, "fit", fit_with_callback)] if "fit" in vars(cls) else []
    return patches
