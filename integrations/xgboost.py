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

import functools
import json
import sys
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
    BoostingCall,
    BoostingCallback,
    CheckpointModel,
    EarlyStop,
    ModelFile,
    built_data_digest,
    by_name,
    call_with_callback,
    calling_object,
    continued_from,
    cv_params,
    eval_metrics,
    eval_round,
    eval_rounds,
    exception_safe,
    find_training_call,
    fit_classes,
    head_rows,
    importance_plot,
    options_for,
    pinned_requirements,
    send_models_as_files,
    stop_outcome,
)


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


def _model_file(model: Any) -> ModelFile:
    """The final model (a Booster or a scikit-learn API estimator) as MLflow's XGBoost flavor
    saves it: ``model.ubj``, written by the model itself."""
    return ModelFile.written(
        model,
        "xgboost",
        "model.ubj",
        model.save_model,
        xgb_version=xgboost.__version__,
        model_format="ubj",
    )


send_models_as_files("xgboost", _model_file)  # the recorder never imports XGBoost for them

# Booster configuration entries that are bookkeeping or estimated during training, not settings
# (base_score is estimated from the labels at the first round).
_INTERNAL_CONFIG = frozenset(
    "base_score num_trees updater_seq fail_on_invalid_gpu_id debug_synchronize "  # noqa: SIM905
    "max_cached_hist_node".split()
)
_FULL_DIGEST_BYTES = 8 << 20  # larger training data is digested from evenly spaced rows
_IMPORTANCES = ("gain", "weight", "cover")
_LOOP_HOOKS = ("before_iteration", "after_iteration", "after_training")  # the last ends the run


@exception_safe(returns_argument=("before_training", "after_training"))
class TrailCallback(BoostingCallback, TrainingCallback):
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

    framework = "xgboost"
    framework_title = "XGBoost"
    round_name = "round"
    how_to_continue = "continue the same booster with xgb_model="
    checkpoint_name = "xgboost-{step:06d}.ubj"
    checkpoint_model = _AS_MODEL
    unseen_errors = "booster update, custom objective"  # a custom metric runs in a hook

    # --- XGBoost hooks -----------------------------------------------------------------------

    def before_training(self, model: Any) -> Any:
        rounds = int(model.num_boosted_rounds())
        trail = self._open(rounds)  # XGBoost numbers each training's rounds from 0
        container = None  # never kept: its release tells that train() has returned or raised
        with self._session.guarded("reading the training call"):
            container = _read_call(self._call, self, sys._getframe(1))
        with self._session.guarded("recording the configuration"):
            config = _config_params(json.loads(_booster(model, self._call).save_config()))
            callbacks = container.callbacks if container is not None else ()
            self._stops = [(_settings(c), c) for c in callbacks if isinstance(c, EarlyStopping)]
            estimator = self._call.estimator  # as written: its params under the sklearn API
            written = self._call.params if estimator is None else estimator.get_params(deep=False)
            stops = [stop for stop, _ in self._stops]
            self._log_start(trail, rounds, config, written, stops=stops)
        if container is not None:
            with self._session.guarded("watching the training"):
                # Its loop hooks end the run (see the module doc); the end, with the model
                # train() returns (maybe trimmed).
                end = functools.partial(self._end_with, self._log_end)
                self._watch_hooks(container, _LOOP_HOOKS, end)
                self._watched = True
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        if self._session.trail is None:
            return False
        self._history = evals_log
        metrics = self._log_rounds(epoch + 1)

        def save(path: str) -> None:  # called when a checkpoint is due: never in cv (no model)
            model.save_model(path)

        self._checkpoint(self._epochs.step(epoch), metrics, save, self._monitor)
        return False  # True would stop the training

    def after_training(self, model: Any) -> Any:
        if not self._watched:  # no container to wrap: finish from here
            self._end(functools.partial(self._log_end, model=model))
        return model

    # --- what the hooks record ---------------------------------------------------------------

    def _forget(self) -> None:
        super()._forget()
        self._history: Mapping[str, Any] = {}  # XGBoost's eval log of the training, live
        self._stops: list[tuple[EarlyStop, Any]] = []  # with the EarlyStopping each one reads
        self._logged = 0  # rounds of this training logged
        self._watched = False  # whether the container's hooks end the run (see _watch)

    def _monitor(self) -> tuple[str | None, str]:
        """What picks the best checkpoint: the (first) early stopping's metric, else the one
        XGBoost's early stopping would use, the last metric of the last eval set."""
        for stop, stopper in self._stops:
            for data, by_metric in stopper.stopping_history.items():
                return f"{data}-{next(iter(by_metric))}", stop.settings.get("mode") or "auto"
        history = self._history
        if not history:
            return None, "auto"
        data = list(history)[-1]
        return f"{data}-{list(history[data])[-1]}", "auto"

    def _log_rounds(self, upto: int) -> dict[str, float]:
        """Log the rounds before ``upto`` not logged yet (normally just the last one; more when
        another callback stopped or broke a round before ours saw it); returns the last."""
        metrics: dict[str, float] = {}
        for index in range(self._logged, upto):
            metrics = eval_metrics(eval_round(self._history, index))
            self._epochs.log(index, metrics)
        self._logged = max(self._logged, upto)
        return metrics

    def _end_with(self, summary: Callable[..., Any], model: Any) -> None:
        self._end(functools.partial(summary, model=model))

    def _stopped(self, error: BaseException | None) -> None:
        """End the run for an exception that stopped training (None: one no hook saw), with
        the rounds XGBoost evaluated before it."""
        seen = max(self._logged, eval_rounds(self._history))
        self._end_unfinished(
            error, at=self._epochs.step(seen), summary=lambda trail: self._log_rounds(seen)
        )

    def _log_end(self, trail: Trail, model: Any) -> None:
        self._log_rounds(eval_rounds(self._history))
        self._log_stops(trail, [_outcome(stop, stopper) for stop, stopper in self._stops])
        if not trail.enabled:
            return
        config = json.loads(_booster(model, self._call).save_config())
        trail.log_dict(config, "xgboost/config.json")
        # What it ran on: XGBoost falls back from a GPU it cannot find to the CPU.
        device = config["learner"].get("generic_param", {}).get("device")
        if device:
            trail.log_params({"device_used": device})
        tree = config["learner"]["gradient_booster"]["name"] in ("gbtree", "dart")
        self._log_model_and_importance(  # none in cv: one booster per fold
            trail,
            functools.partial(self._final_model, model),
            functools.partial(_importance, model, tree),
            "XGBoost feature importance (share of each type's total)",
            plot=importance_plot,
            model_format="ubj",
        )

    def _final_model(self, booster: Any) -> tuple[Any, list[str]]:
        model, packages = booster.copy(), ["xgboost"]  # the user may keep training theirs
        if self._call.estimator is not None:
            with self._session.guarded("rebuilding the fitted estimator"):
                # During fit the estimator does not hold the new booster yet: a fitted twin.
                fitted = type(self._call.estimator)()
                fitted.load_model(booster.save_raw("ubj"))
                model, packages = fitted, ["xgboost", "sklearn"]
        return model, packages


def _importance(model: Any, tree: bool) -> dict[str, Any] | None:
    """The feature importance by gain, weight and cover (tree boosters with rounds only)."""
    if not (tree and model.num_boosted_rounds()):
        return None
    return {kind: model.get_score(importance_type=kind) for kind in _IMPORTANCES}


def _read_call(call: BoostingCall, callback: TrailCallback, start: Any) -> Any:
    """Fill ``call`` from the frames above ``start`` (see the module doc); returns the
    ``CallbackContainer`` (None when it was not found)."""
    container = calling_object(start, CallbackContainer, 16)  # its before_training calls ours
    local, fit = find_training_call(
        call,
        start,
        module="xgboost.training",
        depth=16,
        estimator_type=xgboost.XGBModel,
        holds=lambda fit: callback in (fit["self"].callbacks or ()),
    )
    if local is not None:
        call.params = local.get("params")
        call.args = {n: local.get(n) for n in ("num_boost_round", "early_stopping_rounds")}
        call.args.update(_training_inputs(local))
        if call.api == "cv":
            call.args.update(cv_params(local))
            if local.get("metrics"):
                call.args["cv.metrics"] = list(local["metrics"])
    if call.api != "cv":
        dtrain = local.get("dtrain") if local is not None else None
        call.example = _example(fit.get("X") if fit is not None else None, dtrain)
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
    if start is not None:
        booster = isinstance(start, xgboost.Booster)
        saved = (lambda: bytes(start.save_raw("ubj"))) if booster else None
        found["xgb_model"] = continued_from(start, saved)
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
        label, weight = sample.get_label(), sample.get_weight()
        return built_data_digest(data, sample.get_data, label, weight, rows)
    except Exception:  # a QuantileDMatrix cannot give its data back
        return "unknown"


def _booster(model: Any, call: BoostingCall) -> Any:
    return model.cvfolds[0].bst if call.api == "cv" else model  # cv: the first fold's


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
            last = stopper.starting_round + len(scores) - 1
            stop = stop_outcome(
                stop,
                best_score=stopper.best_scores[data][metric][-1],  # cv: (mean, std)
                best_round=last - stopper.current_rounds,
                last_round=last,
                patience=stopper.rounds,
                restored=bool(stopper.save_best),
                monitor=f"{data}-{metric}",
            )
    return stop


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
    for cls in fit_classes(xgb_sklearn, xgb_sklearn.XGBModel, exclude=forests):
        patches.append((cls, "fit", fit_with_callback))
    return patches
