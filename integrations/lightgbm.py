"""LightGBM adapter: one callback records ``lgb.train``, ``lgb.cv`` and the scikit-learn API.

    booster = lgb.train(params, dtrain, 200, valid_sets=[dval], callbacks=[TrailCallback()])
    model = lgb.LGBMClassifier(n_estimators=200).fit(X, y, callbacks=[TrailCallback()])

Params: the booster's effective configuration, ``params`` as written (they win), the
estimator's ``get_params()`` under the scikit-learn API, ``num_boost_round``, ``cv.*``,
``early_stopping.*``. Metrics: every eval set's metrics at ``step = iteration`` as
``{dataset}-{metric}`` (``-mean``, ``-std`` for ``lgb.cv``), ``early_stopping.*``. Artifacts:
``checkpoints/`` (optional), ``model/`` (LightGBM flavor: the Booster, also under the
scikit-learn API), ``lightgbm/feature_importance.*`` (gain, split).

LightGBM calls a callback with the iteration's state only, and has no hook at the end of
training. The callback runs before each iteration: at the first one it reads the training call
it runs inside (a bounded, read-only look at the caller frames) and puts one wrapper in place of
the call's after-iteration callbacks, which logs each iteration, runs them in their order and so
sees early stopping (LightGBM's ``EarlyStopException``), the last iteration and exceptions. An
exception outside every callback (a custom objective) ends the run FAILED when the call's
callback list is released, or at exit. Continued training (``init_model=``) goes on at the
model's iterations, which are LightGBM's own count.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Any

try:
    import lightgbm
    from lightgbm.callback import EarlyStopException
except ImportError as error:  # pragma: no cover - exercised in the core-only environment
    raise ImportError(
        'mltrail.integrations.lightgbm needs LightGBM: pip install "mltrail[lightgbm]"'
    ) from error

from mltrail import Trail
from mltrail.adapters import (
    BoostingCall,
    BoostingCallback,
    CheckpointModel,
    EarlyStop,
    EpochLog,
    built_data_digest,
    by_name,
    callbacks_patch,
    continued_from,
    cv_params,
    data_digest,
    eval_metrics,
    exception_safe,
    find_training_call,
    first_stopped,
    fit_classes,
    head_rows,
    in_memory,
    options_for,
    pinned_requirements,
)

__all__ = ["TrailCallback", "autolog_patches"]

# A checkpoint is a saved Booster: loaded as one, it is a model in MLflow's LightGBM flavor.
_AS_MODEL = CheckpointModel(
    "lightgbm",
    lambda path: lightgbm.Booster(model_file=str(path)),
    {"pip_requirements": pinned_requirements("lightgbm")},
)


@exception_safe(hooks=("__call__", "after_iteration"))
class TrailCallback(BoostingCallback):
    """Record a LightGBM training (``lgb.train``, ``lgb.cv``, scikit-learn API) as an MLflow run.

    Args:
        trail: log into this run (from :func:`mltrail.start_run`) instead of starting one per
            training; the run is left open for its owner to end.
        checkpoint_every: upload the booster (text model) under ``checkpoints/`` every this many
            iterations; off by default. Aliases: ``latest``, and ``best`` by the first
            validation set's first metric.
        log_model: log the final Booster under ``model/`` (MLflow's LightGBM flavor).
        registered_model_name: also register the model in the Model Registry under this name.
        importance: log feature importance (gain, split) as ``lightgbm/feature_importance.json``
            and a bar plot ``lightgbm/feature_importance.png``.
        **start_run_kwargs: arguments of :func:`mltrail.start_run` for the runs it starts.

    Attributes:
        run_id: the run of the current (or last) training, None before the first one.

    Raises:
        MltrailError: for both ``trail`` and start-run arguments, an unknown option, a bad
            ``checkpoint_every``, or (at training start) a second training into ``trail`` that
            would log the same steps again.
    """

    before_iteration = True  # LightGBM's flag: called before each iteration (see module doc)
    framework = "lightgbm"
    framework_title = "LightGBM"
    round_name = "iteration"
    how_to_continue = "continue the same model with init_model="
    checkpoint_name = "lightgbm-{step:06d}.txt"
    checkpoint_model = _AS_MODEL

    def __call__(self, env: Any) -> None:
        if env.model is self._model:
            return
        begin = env.begin_iteration  # LightGBM counts a continued model's iterations on
        trail = self._open(begin, begin)
        self._model = env.model
        after = None  # not kept: its release tells that train() is over
        with self._session.guarded("reading the training call"):
            after = _read_call(self._call, self, sys._getframe(1))
        self._stops = [cb for cb in after or () if hasattr(cb, "stopping_rounds")]
        with self._session.guarded("recording the configuration"):
            booster = env.model.boosters[0] if self._call.api == "cv" else env.model
            estimator = self._call.estimator
            fitted = estimator.get_params() if estimator is not None else {}
            stops = [_settings(cb) for cb in self._stops]
            # The estimator's params, then params as written (a custom objective by name) win.
            self._log_start(trail, begin, _config(booster), fitted, env.params, stops=stops)
        if after is not None:  # not being iterated: LightGBM runs them after this callback
            self._loop_rounds(after, stop=EarlyStopException, last=_last)

    def after_iteration(self, env: Any) -> None:
        """Log one iteration's metrics (and a checkpoint); called first by the RoundLoop that
        stands in for the after-iteration callbacks (see the module doc)."""
        if self._session.trail is None:
            return
        metrics = eval_metrics(_results(env))
        step = self._epochs.log(env.iteration, metrics)
        if self.checkpoint_every:
            save = functools.partial(env.model.save_model, num_iteration=-1)
            self._checkpoint(step, metrics, save, lambda: _monitor(env))

    def _ended(self, env: Any, stop: Any = None, error: BaseException | None = None) -> None:
        """The training ended: after its last iteration, by early stopping (``stop``, LightGBM's
        ``EarlyStopException``) or by ``error``."""
        self._end(functools.partial(self._log_end, env=env, stop=stop), error)

    def _forget(self) -> None:
        super()._forget()
        self._model: Any = None  # the booster being trained
        self._example: Any = None  # training rows, given by autolog before LightGBM frees them
        self._stops: list[Any] = []  # LightGBM's early-stopping callbacks of this training

    def _log_end(self, trail: Trail, env: Any, stop: Any) -> None:
        self._log_stops(trail, [_outcome(cb, env, stop, self._epochs) for cb in self._stops])
        if self._call.api == "cv" or not trail.enabled:
            return  # lgb.cv: one booster per fold, no single final model
        booster = lightgbm.Booster(model_str=env.model.model_to_string(num_iteration=-1))
        booster.best_iteration = stop.best_iteration + 1 if stop is not None else 0
        self._log_model_and_importance(
            trail,
            lambda: (booster, ["lightgbm"]),
            functools.partial(_importance, booster),
            "LightGBM feature importance",
            feature_names=booster.feature_name,  # LightGBM freed the raw rows: from the names
        )


def _last(env: Any) -> bool:
    return env.iteration == env.end_iteration - 1


def _importance(booster: Any) -> dict[str, dict[str, float]] | None:
    """The booster's feature importance by gain and split (none without trees)."""
    if not booster.num_trees():
        return None
    names = booster.feature_name()
    return {
        kind: dict(zip(names, map(float, booster.feature_importance(kind)), strict=True))
        for kind in ("gain", "split")
    }


def _read_call(call: BoostingCall, callback: TrailCallback, start: Any) -> Any:
    """Fill ``call`` with the training call's API, arguments and example rows; returns the
    call's after-iteration callbacks (None when the call was not found)."""
    local, fit = find_training_call(
        call,
        start,
        module="lightgbm.engine",
        depth=12,
        estimator_type=lightgbm.LGBMModel,
        holds=lambda fit: callback in (fit.get("callbacks") or ()),
    )
    if local is None:
        return None
    call.args["num_boost_round"] = local.get("num_boost_round")
    metrics = local.get("feval") or []  # custom metrics, by name
    for feval in metrics if isinstance(metrics, list | tuple) else [metrics]:
        named = by_name(getattr(feval, "func", feval))  # the sklearn API wraps them
        call.args["feval"] = [*call.args.get("feval", []), named]
    data = local.get("train_set")
    call.example, digest = callback._example, "unknown"
    if data is not None:  # raw rows only while LightGBM keeps them (free_raw_data)
        call.args["data.train.shape"] = f"{data.num_data()}x{data.num_feature()}"
        if call.example is None:
            call.example = head_rows(in_memory(data.data))
        digest = _dataset_digest(data)
    call.args["data.train.digest"] = digest
    start = local.get("init_model")
    if start is not None:
        booster = isinstance(start, lightgbm.Booster)
        saved = (lambda: start.model_to_string().encode()) if booster else None
        call.args["init_model"] = continued_from(start, saved)
    if call.api == "cv":
        call.args.update(cv_params(local))
    if fit is not None:  # the scikit-learn API: its rows, still in memory (unless a path)
        call.example, rows = head_rows(fit.get("X")), in_memory(fit.get("X"))
        digest = data_digest(rows, fit.get("y"), fit.get("sample_weight"))
        call.args["data.train.digest"] = digest if rows is not None else None
    return local.get("callbacks_after_iter")


def _dataset_digest(data: Any) -> str:
    """The ``data.train.digest`` of a ``Dataset``: its rows, read once per Dataset while
    LightGBM keeps them (it frees them once the Dataset is built, so a loop of trainings on one
    Dataset has them only the first time; autolog reads them before that), with the labels and
    weights it has now (they can be set again)."""
    return built_data_digest(
        data, lambda: in_memory(data.data), data.get_label(), data.get_weight()
    )


def _config(booster: Any) -> dict[str, str]:
    """The booster's effective parameters, from the ``parameters:`` block of its model text."""
    text = booster.model_to_string(num_iteration=0)
    block = text.partition("\nparameters:\n")[2].partition("end of parameters")[0]
    pairs = (line.strip("[]").partition(": ") for line in block.splitlines())
    return {key: value for key, _, value in pairs if key and value}


def _results(env: Any) -> list[tuple[str, str, Any]]:
    """One iteration's evaluation for :func:`eval_metrics` (cv: the value with its std).
    Read by index: LightGBM's ``EvalResult`` unpacks field by field in Python, slowly."""
    return [
        (r[0], r[1], (r[2], r[4]) if len(r) > 4 and r[4] is not None else r[2])
        for r in env.evaluation_result_list or ()
    ]


def _monitor(env: Any) -> tuple[str | None, str]:
    """The first validation set's first metric."""
    for _, data, metric, mode in _validation(env):
        return f"{data}-{metric}", mode
    return None, "auto"


def _validation(env: Any) -> list[tuple[int, str, str, str]]:
    """The index, data, metric and mode of each validation metric of the iteration's
    evaluation (the training data's own metrics are not validation)."""
    train = "train" if hasattr(env.model, "boosters") else env.model._train_data_name
    return [
        (i, data, metric, "max" if maximize else "min")
        for i, (data, metric, _, maximize, *_) in enumerate(env.evaluation_result_list or ())
        if data != train
    ]


def _settings(stopper: Any) -> EarlyStop:
    return EarlyStop(
        {
            "patience": stopper.stopping_rounds,
            "min_delta": stopper.min_delta,
            "first_metric_only": stopper.first_metric_only,
        }
    )


def _outcome(stopper: Any, env: Any, stop: Any, epochs: EpochLog) -> EarlyStop:
    """What an early-stopping callback did: the metric that stopped it (else its first one)."""
    if stop is None:
        return _settings(stopper)
    watched = []  # the validation metrics it watches (the first only, if so configured)
    for i, data, metric, mode in _validation(env):
        only = stopper.first_metric if stopper.first_metric_only else metric
        if i < len(stopper.best_iter) and metric == only:
            best = epochs.step(stopper.best_iter[i])
            watched.append((f"{data}-{metric}", mode, stopper.best_score[i], best))
    return first_stopped(
        _settings(stopper),
        watched,
        last_round=epochs.step(env.iteration),
        patience=stopper.stopping_rounds,
        restored=True,  # the model predicts and saves with best_iteration
    )


# --- autolog ----------------------------------------------------------------------------------


def autolog_patches(options: dict[str, Any]) -> list[tuple[Any, str, Callable[..., Any]]]:
    """``mltrail.autolog`` patches: ``lightgbm.train``/``cv`` and the scikit-learn API's ``fit``
    get a :class:`TrailCallback` when they have none; calls a library makes pass through."""
    start, own = options_for("lightgbm", options)

    def patch(signature: inspect.Signature, data: str) -> Callable[..., Any]:
        def make(arguments: Mapping[str, Any]) -> TrailCallback:
            callback = TrailCallback(**start, **own)
            rows = arguments.get(data)
            if isinstance(rows, lightgbm.Dataset) and in_memory(rows.data) is not None:
                # before LightGBM frees them: example rows and the data's digest
                callback._example = head_rows(rows.data)
                built_data_digest(rows, lambda: rows.data)
            return callback

        return callbacks_patch(TrailCallback, make, signature)

    from lightgbm import engine
    from lightgbm import sklearn as lgb_sklearn

    patches = [
        (owner, name, patch(inspect.signature(getattr(engine, name)), "train_set"))
        for owner in (lightgbm, engine)
        for name in ("train", "cv")
    ]
    for cls in fit_classes(lgb_sklearn, lightgbm.LGBMModel):
        patches.append((cls, "fit", patch(inspect.signature(cls.fit), "X")))
    return patches
