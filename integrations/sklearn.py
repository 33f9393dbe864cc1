"""scikit-learn adapter: :class:`TrackedEstimator` records any estimator, pipeline or search.

    from mltrail.integrations.sklearn import TrackedEstimator

    model = TrackedEstimator(RandomForestClassifier(n_estimators=200), experiment="churn")
    model.fit(X_train, y_train, eval_set=(X_val, y_val))   # one MLflow run, FINISHED
    model.predict(X_test); model.score(X_test, y_test)      # the score is logged as score_1

``TrackedEstimator`` is a scikit-learn meta-estimator: it fits a clone of the wrapped estimator
(``estimator_``), delegates ``predict``/``predict_proba``/``decision_function``/``transform``/
``score`` and the fitted attributes, and exposes the wrapped parameters as ``estimator__<name>``, so
it works in ``Pipeline``, ``clone``, ``GridSearchCV``, ``cross_val_score``, pickle and joblib.

Each top-level fit is one run with: the wrapped estimator's ``get_params(deep=True)`` (as
``estimator__*``), its class, whether ``sample_weight`` was given; the shape, feature names and a
content fingerprint of the training data (also an MLflow dataset input); training metrics
(``train/*``: accuracy, precision, recall, f1, log_loss, roc_auc for classifiers; mse, rmse, mae, r2
for regressors; score) and the same on ``eval_set`` (``eval/*``); the fitted estimator under
``model/`` (scikit-learn flavor, signature, input example); a confusion matrix or residual plot
under ``plots/``. A fitted search adds its best params (``best.*``), ``best_cv_score``,
``cv_results.csv`` and one finished child run per candidate (the best ``max_child_runs``).

Fits inside another fit are not runs of their own: a fit is "inner" when a recorded fit is already
running in this thread (a Pipeline recorded by autolog, a TrackedEstimator around a Pipeline that
holds another one) or when scikit-learn dispatched it as a task of its ``Parallel`` (the folds of
a search or of ``cross_val_score``, the members of an ensemble; seen in the call stack of the
worker thread or process, so it holds for ``n_jobs > 1`` with loky too). Inner fits are silent, or
child runs of the recording fit with ``nested=True``. A search that wraps a TrackedEstimator
(``GridSearchCV(TrackedEstimator(...))``) gets its run from the final refit of the best
candidate, which reads the search's results from the search's own ``fit`` frame; with
``refit=False`` there is no refit and no run (wrap the search instead).

``autolog_patches`` (for ``mltrail.autolog()``) records top-level ``fit``/``fit_transform``/
``fit_predict`` calls of scikit-learn's estimators through the same code, and on scikit-learn
1.9+, :class:`TrailCallback` offers it through scikit-learn's experimental callback API.
"""

from __future__ import annotations

import contextvars
import copy
import csv
import dataclasses
import hashlib
import importlib.metadata
import io
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

try:
    import numpy as np
    import sklearn
    from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier, is_regressor
    from sklearn.utils import get_tags
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.validation import check_is_fitted
except ImportError as error:  # pragma: no cover - exercised in the core-only environment
    raise ImportError(
        'mltrail.integrations.sklearn needs scikit-learn >= 1.6: pip install "mltrail[sklearn]"'
    ) from error

from mltrail.autolog import in_patched_call, options_for, recording
from mltrail.config import Options
from mltrail.errors import MltrailError, guarded
from mltrail.recording.trail import Trail, start_run

logger = logging.getLogger("mltrail.sklearn")

__all__ = ["TrackedEstimator", "TrailCallback", "autolog_patches"]

_RUN_NAMES = {"experiment", "run_name", "tracking_uri", "tags"}
_START_RUN_ARGS = _RUN_NAMES | {field.name for field in dataclasses.fields(Options)}
_MAX_PLOT_POINTS = 5000
_FULL_HASH_BYTES = 256 << 20  # larger arrays are fingerprinted from evenly spaced rows

# The run recording the fit that runs in this thread, for inner fits (nesting, pass-through).
_current: contextvars.ContextVar[Trail | None] = contextvars.ContextVar(
    "mltrail_sklearn_run", default=None
)


@dataclasses.dataclass
class _Settings:
    """How a fit is recorded: from TrackedEstimator's params, autolog options or a callback."""

    start: dict[str, Any]
    trail: Trail | None = None
    log_model: bool = True
    registered_model_name: str | None = None
    log_plots: bool = True
    max_child_runs: int | None = 100
    nested: bool = False
    prefix: str = ""  # "estimator__" for TrackedEstimator: the names GridSearchCV grids use

    def __post_init__(self) -> None:
        limit = self.max_child_runs
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise MltrailError(f"max_child_runs must be None or an int >= 0, not {limit!r}.")
        if self.trail is not None and not isinstance(self.trail, Trail):
            raise MltrailError("trail= takes the Trail that mltrail.start_run() returned.")


# --- where a fit runs ----------------------------------------------------------------------------


def _fit_context(patched: bool = False) -> tuple[str, tuple[Any, Any] | None]:
    """("inner", None), ("refit", (search, cv_results)) or ("top", None) for the fit calling us.

    Inner: a recorded fit already runs in this thread (``patched``: the caller is an autolog
    patch, which already passed calls nested in another patched call through), or scikit-learn's
    ``Parallel`` dispatched this fit (its ``_FuncWrapper`` is on the stack, in worker threads and
    loky processes alike). Refit: the final fit of a search's best candidate, called from
    ``BaseSearchCV.fit``.
    """
    if _current.get() is not None or (not patched and in_patched_call()):
        return "inner", None
    frame = sys._getframe(1)
    while frame is not None:
        code, module = frame.f_code, frame.f_globals.get("__name__")
        if code.co_name == "__call__" and module == "sklearn.utils.parallel":
            return "inner", None
        if code.co_name == "fit" and module == "sklearn.model_selection._search":
            search = frame.f_locals.get("self")
            if search is not None and hasattr(search, "best_index_"):
                return "refit", (search, frame.f_locals.get("results"))
        frame = frame.f_back
    return "top", None


# --- one recorded fit ----------------------------------------------------------------------------


class _Recording:
    """One fit recorded as a run: ``begin`` before the fit, ``finish`` after it, ``end`` always."""

    def __init__(
        self,
        settings: _Settings,
        estimator: Any,
        X: Any,
        y: Any,
        fit_params: Mapping[str, Any],
        eval_set: tuple[Any, Any] | None = None,
        enclosing_search: tuple[Any, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.estimator = estimator
        self.X, self.y = X, y
        self.fit_params = dict(fit_params)
        self.eval_set = eval_set
        self.enclosing_search = enclosing_search
        self.trail: Trail | None = None
        self.owned = False
        self.fitted = False
        self._token: contextvars.Token[Trail | None] | None = None
        self._recording: Any = None
        self._tmp: str | None = None
        self._plot: threading.Thread | None = None
        self._plot_error: BaseException | None = None
        self._predictions: dict[str, tuple[Any, Any, Any]] = {}

    @property
    def _errors(self) -> Any:
        return getattr(self.trail, "_errors", None)  # count our errors with the run's own

    def begin(self) -> None:
        settings = self.settings
        tags = {"mltrail.sklearn.estimator": type(self.estimator).__name__}
        if settings.trail is not None:
            self.trail = settings.trail
            self.trail.set_tags(tags)
        else:
            start = dict(settings.start)
            start["tags"] = {**tags, **(start.get("tags") or {})}
            self.trail = start_run(**start)
            self.owned = True
        self._token = _current.set(self.trail)
        self._recording = recording()  # other adapters' patched fits pass through
        self._recording.__enter__()
        try:
            self._log_start()
        except BaseException as error:  # strict mode raises our own errors: end the run first
            self.end(error)
            raise

    def _log_start(self) -> None:
        settings = self.settings
        assert self.trail is not None
        # One call per kind of record: each one is a request (a transaction) to the store.
        params: dict[str, Any] = {}
        datasets = []
        with guarded("recording scikit-learn params", self._errors):
            params.update(_estimator_params(self.estimator, settings.prefix))
            params.update(_fit_params(self.fit_params))
        with guarded("recording the training data", self._errors):
            sets = [("train", self.X, self.y)]
            if self.eval_set is not None:
                sets.append(("eval", *self.eval_set))
            for role, X, y in sets:
                described, dataset = _describe_data(X, y, role)
                params.update(described)
                datasets.append(dataset)
        self.trail.log_params(params)
        self.trail.log_inputs(datasets)

    def finish(self, model: Any) -> None:
        """Record what the fitted ``model`` gives: metrics, search results, model, plot."""
        self.fitted = True
        trail, settings = self.trail, self.settings
        assert trail is not None
        metrics: dict[str, float] = {}
        with guarded("recording scikit-learn metrics", self._errors):
            weight = self.fit_params.get("sample_weight")
            metrics.update(self._metrics(model, self.X, self.y, weight, "train"))
            if self.eval_set is not None:
                X_eval, y_eval = self.eval_set
                metrics.update(self._metrics(model, X_eval, y_eval, None, "eval"))
        with guarded("recording the search results", self._errors):
            search = model if _is_fitted_search(model) else None
            if search is not None:
                metrics.update(_log_search(trail, search, search.cv_results_, settings))
            elif self.enclosing_search is not None:
                search, results = self.enclosing_search
                metrics.update(_log_search(trail, search, results, settings, enclosing=True))
        trail.log_metrics(metrics, step=0)
        if settings.log_model:
            with guarded("logging the scikit-learn model", self._errors):
                _log_model(trail, model, self.X, settings.registered_model_name)
        if settings.log_plots and self._predictions:
            self._plot = threading.Thread(target=self._draw, name="mltrail-plot", daemon=True)
            self._plot.start()

    def end(self, error: BaseException | None = None) -> None:
        trail = self.trail
        if trail is None:
            return
        if self._plot is not None:
            self._plot.join()
            with guarded("plotting", self._errors):
                if self._plot_error is not None:
                    raise self._plot_error
        if self._recording is not None:
            self._recording.__exit__(None, None, None)
            self._recording = None
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if self.owned:
            if error is not None:
                trail.end_with_exception(error)
            else:
                trail.end("FINISHED")
        elif self._tmp is not None:
            trail.flush()  # the plot file must be uploaded before it goes
        if self._tmp is not None and not trail.offline:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _metrics(self, model: Any, X: Any, y: Any, weight: Any, role: str) -> dict[str, float]:
        metrics, predictions = _task_metrics(model, X, y, weight, role + "/")
        if predictions is not None:
            self._predictions[role] = predictions
        return metrics

    def _draw(self) -> None:
        try:
            # The held-out set tells more than the training set when there is one.
            kind, y_true, y_pred = self._predictions.get("eval") or self._predictions["train"]
            self._tmp = self._tmp or tempfile.mkdtemp(prefix="mltrail-sklearn-")
            path = _plot(self._tmp, kind, y_true, y_pred, getattr(self.estimator, "classes_", None))
            if path is not None:
                assert self.trail is not None
                self.trail.log_artifact(path, "plots")
        except Exception as error:
            self._plot_error = error


def _record(
    settings: _Settings,
    estimator: Any,
    fit: Callable[[], Any],
    X: Any,
    y: Any,
    fit_params: Mapping[str, Any],
    eval_set: tuple[Any, Any] | None = None,
    enclosing_search: tuple[Any, Any] | None = None,
) -> tuple[Any, Trail]:
    """Run ``fit`` as one recorded run; the estimator's own exception propagates unchanged."""
    recording = _Recording(settings, estimator, X, y, fit_params, eval_set, enclosing_search)
    recording.begin()
    try:
        result = fit()
    except BaseException as error:
        recording.end(error)
        raise
    try:
        recording.finish(estimator)
    finally:
        recording.end()
    assert recording.trail is not None
    return result, recording.trail


def _record_nested(settings: _Settings, estimator: Any, X: Any, y: Any, weight: Any) -> None:
    """An inner fit as a finished child run of the run recording the outer fit."""
    parent = _current.get()
    if not settings.nested or parent is None:
        return
    with guarded("recording a nested scikit-learn fit", getattr(parent, "_errors", None)):
        metrics, _ = _task_metrics(estimator, X, y, weight, "train/")
        parent.log_child_run(
            run_name=type(estimator).__name__,
            params=_estimator_params(estimator, settings.prefix),
            metrics=metrics,
            tags={"mltrail.sklearn.estimator": type(estimator).__name__},
        )


# --- what gets recorded --------------------------------------------------------------------------


def _param_value(value: Any) -> Any:
    """A param value as it reads best in MLflow: estimators by their repr, functions by name."""
    if hasattr(value, "get_params") and not isinstance(value, type):
        return repr(value)
    if isinstance(value, type) or callable(value):
        module = getattr(value, "__module__", None)
        name = getattr(value, "__qualname__", None) or repr(value)
        return f"{module}.{name}" if module else name
    if isinstance(value, np.ndarray):
        if value.size <= 32:
            return value.tolist()
        return f"array(shape={value.shape}, dtype={value.dtype})"
    if isinstance(value, list | tuple) and any(hasattr(v, "get_params") for v in value):
        return repr(value)
    return value


def _estimator_params(estimator: Any, prefix: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if prefix:
        params[prefix.rstrip("_")] = repr(estimator)
    try:
        deep = estimator.get_params(deep=True)
    except Exception:  # a third-party estimator that breaks the protocol
        logger.debug("get_params failed for %s", type(estimator).__name__, exc_info=True)
        deep = {}
    params.update({prefix + k: _param_value(v) for k, v in deep.items()})
    cls = type(estimator)
    params["estimator_class"] = f"{cls.__module__}.{cls.__qualname__}"
    return params


def _fit_params(fit_params: Mapping[str, Any]) -> dict[str, Any]:
    """The fit arguments that matter: sample_weight given or not; scalars as they are."""
    params: dict[str, Any] = {"fit.sample_weight": fit_params.get("sample_weight") is not None}
    for name, value in fit_params.items():
        if name == "sample_weight":
            continue
        scalar = value is None or isinstance(value, str | int | float | bool)
        params[f"fit.{name}"] = value if scalar else "given"
    return params


def _shape(data: Any) -> tuple[int, ...] | None:
    shape = getattr(data, "shape", None)
    if shape is None:
        try:
            shape = np.shape(data)
        except Exception:
            return None
    return tuple(int(n) for n in shape)


def _describe_data(X: Any, y: Any, role: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Params (shapes, digest, feature names) and an MLflow dataset input for ``X``/``y``."""
    digest = _fingerprint(X, y)
    x_shape, y_shape = _shape(X), _shape(y) if y is not None else None
    params: dict[str, Any] = {
        f"data.{role}.shape": "x".join(map(str, x_shape)) if x_shape is not None else "unknown",
        f"data.{role}.digest": digest,
    }
    if y_shape is not None:
        params[f"data.{role}.y_shape"] = "x".join(map(str, y_shape))
    columns = getattr(X, "columns", None)
    if role == "train" and columns is not None:
        params["data.feature_names"] = ",".join(str(c) for c in columns)
    profile: dict[str, Any] = {"features_shape": x_shape}
    if y_shape is not None:
        profile["targets_shape"] = y_shape
    dataset = {
        "name": role,
        "digest": digest,
        "source_type": "code",
        "source": json.dumps({"tags": {"mlflow.source.name": _entry_point()}}),
        "schema": json.dumps(_schema(X, y)),
        "profile": json.dumps(profile),
        "tags": {"mlflow.data.context": role},
    }
    return params, dataset


def _entry_point() -> str:
    return sys.argv[0] if sys.argv and sys.argv[0] else "<interactive>"


def _fingerprint(*parts: Any) -> str:
    """A content hash of arrays, DataFrames, sparse matrices or lists (16 hex digits)."""
    digest = hashlib.sha256()
    for part in parts:
        _hash_into(digest, part)
    return digest.hexdigest()[:16]


def _hash_into(digest: Any, data: Any) -> None:
    if data is None:
        digest.update(b"<none>")
        return
    if hasattr(data, "iloc"):  # pandas DataFrame or Series
        import pandas as pd

        names = list(data.columns) if hasattr(data, "columns") else [data.name]
        dtypes = list(data.dtypes) if hasattr(data, "columns") else [data.dtype]
        digest.update(repr((names, [str(t) for t in dtypes], data.shape)).encode())
        digest.update(pd.util.hash_pandas_object(data, index=False).to_numpy().tobytes())
        return
    if hasattr(data, "tocsr") and hasattr(data, "nnz"):  # scipy sparse
        csr = data.tocsr()
        digest.update(repr(("sparse", csr.shape, str(csr.dtype))).encode())
        for array in (csr.data, csr.indices, csr.indptr):
            digest.update(np.ascontiguousarray(array).tobytes())
        return
    array = np.asarray(data)
    digest.update(repr((array.shape, str(array.dtype))).encode())
    if array.dtype.hasobject:
        try:
            import pandas as pd

            digest.update(pd.util.hash_array(array.ravel()).tobytes())
        except Exception:  # no pandas, or objects it cannot hash
            digest.update(repr(array.tolist()).encode())
        return
    if array.nbytes > _FULL_HASH_BYTES and array.ndim:
        stride = math.ceil(array.nbytes / _FULL_HASH_BYTES)
        array = array[::stride]
    digest.update(np.ascontiguousarray(array).tobytes())


def _mlflow_type(dtype: Any) -> str:
    kind = getattr(dtype, "kind", "O")
    if kind == "b":
        return "boolean"
    if kind in "iu":
        return "long" if dtype.itemsize >= 8 or kind == "u" else "integer"
    if kind == "f":
        return "double" if dtype.itemsize >= 8 else "float"
    if kind == "M":
        return "datetime"
    return "string"


def _schema(X: Any, y: Any) -> dict[str, Any]:
    """The dataset schema in MLflow's JSON form: columns for a DataFrame, tensors otherwise."""
    if hasattr(X, "columns") and hasattr(X, "dtypes"):
        return {
            "mlflow_colspec": [
                {"type": _mlflow_type(dtype), "name": str(name), "required": True}
                for name, dtype in list(zip(X.columns, X.dtypes, strict=False))[:1000]
            ]
        }

    def tensor(data: Any) -> str | None:
        if data is None:
            return None
        shape = _shape(data) or ()
        dtype = getattr(data, "dtype", None) or np.asarray(data[:1]).dtype
        spec = {"dtype": str(dtype), "shape": [-1, *shape[1:]]}
        return json.dumps([{"type": "tensor", "tensor-spec": spec}])

    try:
        return {"mlflow_tensorspec": {"features": tensor(X), "targets": tensor(y)}}
    except Exception:  # ragged lists and other array-likes without a dtype
        return {"mlflow_tensorspec": {"features": None, "targets": None}}


def _task_metrics(
    model: Any, X: Any, y: Any, weight: Any, prefix: str
) -> tuple[dict[str, float], tuple[str, Any, Any] | None]:
    """The task's standard metrics of ``model`` on ``X``/``y``, and predictions for a plot.

    A metric that does not apply to these targets (one class, multi-output, ...) is left out.
    """
    from sklearn import metrics as m
    from sklearn.base import ClassifierMixin, RegressorMixin

    out: dict[str, float] = {}
    kwargs = {} if weight is None else {"sample_weight": weight}

    def put_all(names: tuple[str, ...], compute: Callable[[], Any]) -> None:
        try:
            values = compute()
            values = [float(v) for v in (values if len(names) > 1 else [values])]
        except Exception as error:  # not applicable to these targets; not an mltrail error
            logger.debug("metrics %s%s not computed: %s", prefix, names, error)
            return
        for name, value in zip(names, values, strict=True):
            if math.isfinite(value):  # NaN means undefined here (one class in y_true, ...)
                out[prefix + name] = value

    def put(name: str, compute: Callable[[], Any]) -> float | None:
        put_all((name,), compute)
        return out.get(prefix + name)

    predictions = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # our own extra predict calls must not warn the user
        if y is None:
            if hasattr(model, "score"):
                put("score", lambda: model.score(X))
            return out, None
        classifier = is_classifier(model) and hasattr(model, "predict")
        regressor = is_regressor(model) and hasattr(model, "predict")
        default_score = getattr(type(model), "score", None) in (
            ClassifierMixin.score,
            RegressorMixin.score,
        )
        if hasattr(model, "score") and not default_score:  # searches: their scorer
            put("score", lambda: model.score(X, y, **kwargs))
        if classifier:
            pred = _predict(model, X)
            if pred is not None:
                predictions = ("classification", y, pred)
                accuracy = put("accuracy", lambda: m.accuracy_score(y, pred, **kwargs))
                if default_score and accuracy is not None:  # ClassifierMixin.score: accuracy
                    out[prefix + "score"] = accuracy
                put_all(
                    ("precision", "recall", "f1"),
                    lambda: m.precision_recall_fscore_support(
                        y, pred, average="weighted", zero_division=0, **kwargs
                    )[:3],
                )
            if hasattr(model, "predict_proba"):
                proba = _predict(model, X, "predict_proba")
                labels = getattr(model, "classes_", None)
                if proba is not None:
                    put("log_loss", lambda: m.log_loss(y, proba, labels=labels, **kwargs))
                    put("roc_auc", lambda: _roc_auc(y, proba, labels, kwargs))
        elif regressor:
            pred = _predict(model, X)
            if pred is not None:
                predictions = ("regression", y, pred)
                mse = put("mse", lambda: m.mean_squared_error(y, pred, **kwargs))
                if mse is not None:
                    out[prefix + "rmse"] = math.sqrt(mse)
                put("mae", lambda: m.mean_absolute_error(y, pred, **kwargs))
                r2 = put("r2", lambda: m.r2_score(y, pred, **kwargs))
                if default_score and r2 is not None:  # RegressorMixin.score: r2
                    out[prefix + "score"] = r2
        elif hasattr(model, "score"):
            put("score", lambda: model.score(X, y, **kwargs))
    return out, predictions


def _predict(model: Any, X: Any, method: str = "predict") -> Any:
    try:
        return getattr(model, method)(X)
    except Exception as error:
        logger.debug("%s failed on the evaluation data: %s", method, error)
        return None


def _roc_auc(y: Any, proba: Any, labels: Any, kwargs: dict[str, Any]) -> float:
    from sklearn.metrics import roc_auc_score

    if proba.ndim == 2 and proba.shape[1] == 2:
        return roc_auc_score(y, proba[:, 1], **kwargs)
    return roc_auc_score(y, proba, multi_class="ovr", average="weighted", labels=labels, **kwargs)


def _is_fitted_search(model: Any) -> bool:
    module = sys.modules.get("sklearn.model_selection._search")
    return (
        module is not None
        and isinstance(model, module.BaseSearchCV)
        and hasattr(model, "cv_results_")
    )


def _search_params(search: Any) -> dict[str, Any]:
    """The settings of a search that wraps the recorded estimator (cv, scoring, the grid...)."""
    params = search.get_params(deep=False)
    params.pop("estimator", None)
    return {f"search.{k}": _param_value(v) for k, v in params.items()}


def _log_search(
    trail: Trail, search: Any, results: Any, settings: _Settings, enclosing: bool = False
) -> dict[str, float]:
    """Best params, cv_results.csv and one child run per candidate (the best K); returns the
    metrics (best_cv_score) for the caller to log with its own."""
    trail.set_tags({"mltrail.sklearn.search": type(search).__name__})
    best = getattr(search, "best_params_", None) or {}
    params: dict[str, Any] = _search_params(search) if enclosing else {}
    params.update({f"best.{k}": _param_value(v) for k, v in best.items()})
    if results:
        params["search.n_candidates"] = len(results["params"])
    if hasattr(search, "n_splits_"):
        params["search.n_splits"] = search.n_splits_
    trail.log_params(params)
    metrics = {}
    if isinstance(getattr(search, "best_score_", None), int | float | np.number):
        metrics["best_cv_score"] = float(search.best_score_)
    if not results:
        return metrics
    trail.log_text(_cv_results_csv(results), "cv_results.csv")
    count = len(results["params"])
    limit = count if settings.max_child_runs is None else min(settings.max_child_runs, count)
    refit = getattr(search, "refit", True)
    rank_key = f"rank_test_{refit}" if isinstance(refit, str) else "rank_test_score"
    if rank_key not in results:
        rank_key = next((k for k in results if k.startswith("rank_test_")), "")
    ranks = np.asarray(results[rank_key]) if rank_key else np.arange(1, count + 1)
    summary = [k for k in results if k.startswith(("mean_", "std_", "rank_"))]  # no splits
    for index in np.argsort(ranks, kind="stable")[:limit]:
        index = int(index)
        candidate = {k: _param_value(v) for k, v in results["params"][index].items()}
        for key in ("iter", "n_resources"):  # successive halving: the round of this row
            if key in results:
                candidate[key] = int(results[key][index])
        trail.log_child_run(
            run_name=f"candidate-{index}",
            params=candidate,
            metrics={k: results[k][index] for k in summary},
            tags={
                "mltrail.sklearn.candidate": index,
                "mltrail.sklearn.rank": int(ranks[index]),
                "mltrail.sklearn.search": type(search).__name__,
            },
        )
    return metrics


def _cv_results_csv(results: Mapping[str, Any]) -> str:
    keys = list(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(keys)
    for index in range(len(results["params"])):
        row = []
        for key in keys:
            value = results[key][index]
            if value is np.ma.masked:
                value = ""
            elif isinstance(value, dict):
                value = json.dumps({k: _param_value(v) for k, v in value.items()}, default=str)
            elif isinstance(value, np.generic):
                value = value.item()
            row.append(value)
        writer.writerow(row)
    return buffer.getvalue()


def _head(X: Any, rows: int = 5) -> Any:
    """The first rows of ``X`` as an independent copy (the model is saved in the background)."""
    if hasattr(X, "iloc"):
        return X.iloc[:rows].copy()
    if hasattr(X, "tocsr"):
        return X.tocsr()[:rows].copy()
    if isinstance(X, np.ndarray):
        return X[:rows].copy()
    return np.asarray(X[:rows])


def _log_model(trail: Trail, model: Any, X: Any, registered_model_name: str | None) -> None:
    method = next((m for m in ("predict", "transform") if hasattr(model, m)), None)
    example = output = None
    if method is not None and X is not None:
        try:
            example = _head(X)
            output = getattr(model, method)(example)
        except Exception as error:  # odd inputs (ragged lists...): a model without an example
            logger.debug("no input example for the model: %s", error)
            example = output = None
    kwargs: dict[str, Any] = {
        "serialization_format": "cloudpickle",  # what mlflow.sklearn.autolog uses; any estimator
        "pip_requirements": _requirements(model),  # inferring them costs seconds
    }
    trail.log_model(
        model,
        "sklearn",
        signature_from=example,
        output_example=output,
        registered_model_name=registered_model_name,
        **kwargs,
    )


_DISTRIBUTIONS = {"sklearn": "scikit-learn"}


def _requirements(model: Any) -> list[str]:
    """Pinned requirements of the packages the fitted estimator is made of."""
    packages = {"sklearn", "cloudpickle", "numpy", "scipy"}
    try:
        parts = [model, *model.get_params(deep=True).values()]
    except Exception:
        parts = [model]
    for part in parts:
        if hasattr(part, "get_params"):
            packages.add(type(part).__module__.split(".")[0])
    requirements = []
    for package in sorted(packages - {"__main__", "builtins", "mltrail"}):
        name = _DISTRIBUTIONS.get(package, package)
        try:
            requirements.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            names = importlib.metadata.packages_distributions().get(package)
            if names:
                requirements.append(f"{names[0]}=={importlib.metadata.version(names[0])}")
    return requirements


def _plot(folder: str, kind: str, y_true: Any, y_pred: Any, labels: Any) -> str | None:
    """A confusion matrix (classification) or residual plot (regression) PNG; None if n/a."""
    from matplotlib.figure import Figure  # no pyplot: no global backend switch, thread-safe

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_pred.shape != y_true.shape:
        return None  # multi-output
    figure = Figure(figsize=(5, 4.5), dpi=80)
    figure.subplots_adjust(left=0.2, bottom=0.2, right=0.95, top=0.9)  # tight_layout is slow
    ax = figure.subplots()
    if kind == "classification":
        from sklearn.metrics import confusion_matrix

        labels = np.unique(np.concatenate([y_true, y_pred])) if labels is None else labels
        if len(labels) > 50:
            return None
        matrix = confusion_matrix(y_true, y_pred, labels=labels)
        ax.imshow(matrix, cmap="Blues")
        ticks = range(len(labels))
        ax.set_xticks(ticks, [str(label) for label in labels], rotation=45, ha="right")
        ax.set_yticks(ticks, [str(label) for label in labels])
        if len(labels) <= 20:
            middle = (matrix.max() + matrix.min()) / 2  # imshow spans min..max: dark above
            for (row, col), count in np.ndenumerate(matrix):
                color = "white" if count > middle else "black"
                ax.text(col, row, str(count), ha="center", va="center", color=color)
        ax.set(xlabel="Predicted label", ylabel="True label", title="Confusion matrix")
        name = "confusion_matrix.png"
    else:
        if len(y_true) > _MAX_PLOT_POINTS:
            keep = np.random.default_rng(0).choice(len(y_true), _MAX_PLOT_POINTS, replace=False)
            y_true, y_pred = y_true[keep], y_pred[keep]
        ax.scatter(y_pred, y_true - y_pred, s=8, alpha=0.5)
        ax.axhline(0.0, color="black", linewidth=1)
        ax.set(xlabel="Predicted value", ylabel="Residual (true - predicted)", title="Residuals")
        name = "residuals.png"
    path = os.path.join(folder, name)
    figure.savefig(path, format="png")
    return path


# --- the wrapper ---------------------------------------------------------------------------------


def _estimator_has(attribute: str) -> Callable[[Any], bool]:
    """For ``available_if``: the fitted estimator has it, or (before fit) the unfitted one."""

    def check(self: Any) -> bool:
        getattr(self.estimator_ if hasattr(self, "estimator_") else self.estimator, attribute)
        return True

    return check


class TrackedEstimator(MetaEstimatorMixin, BaseEstimator):
    """A scikit-learn estimator that records each fit of the estimator it wraps as an MLflow run.

    Args:
        estimator: any scikit-learn estimator, Pipeline or search (cloned at each fit).
        trail: log into this :class:`~mltrail.Trail` (from ``mltrail.start_run``) instead of
            starting a run per fit; it is left open. Not pickled (``None`` after unpickling).
        experiment: experiment name for the runs (``start_run``'s ``experiment``).
        run_name: name of each run.
        tracking_uri: MLflow tracking URI.
        tags: extra run tags.
        run_options: other ``start_run`` options as a dict, e.g. ``{"system_metrics": False}``.
        log_model: log the fitted estimator under ``model/``.
        registered_model_name: also register the model in the Model Registry under this name.
        log_plots: log a confusion matrix or residual plot under ``plots/``.
        max_child_runs: for searches, child runs for the best this many candidates (None: all,
            0: none).
        nested: record fits that run inside another recorded fit (this estimator as a step of
            a tracked Pipeline, say) as child runs of it instead of leaving them silent. Folds
            of searches and cross-validation are never runs of their own.

    Attributes:
        estimator_: the fitted clone of ``estimator``.
        run_id_: the MLflow run of the last fit (None when the fit ran inside another one).
    """

    def __init__(
        self,
        estimator: Any,
        *,
        trail: Trail | None = None,
        experiment: str | None = None,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, Any] | None = None,
        run_options: dict[str, Any] | None = None,
        log_model: bool = True,
        registered_model_name: str | None = None,
        log_plots: bool = True,
        max_child_runs: int | None = 100,
        nested: bool = False,
    ) -> None:
        self.estimator = estimator
        self.trail = trail
        self.experiment = experiment
        self.run_name = run_name
        self.tracking_uri = tracking_uri
        self.tags = tags
        self.run_options = run_options
        self.log_model = log_model
        self.registered_model_name = registered_model_name
        self.log_plots = log_plots
        self.max_child_runs = max_child_runs
        self.nested = nested

    # -- fitting ---------------------------------------------------------------------------------

    def fit(
        self,
        X: Any,
        y: Any = None,
        sample_weight: Any = None,
        *,
        eval_set: tuple[Any, Any] | None = None,
        **fit_params: Any,
    ) -> TrackedEstimator:
        """Fit a clone of ``estimator`` and record the fit as a run.

        Args:
            X: training data.
            y: training targets (None for unsupervised estimators).
            sample_weight: passed on to the estimator's ``fit`` when given.
            eval_set: ``(X_val, y_val)``: the same metrics are logged on it as ``eval/*``.
            **fit_params: passed on to the estimator's ``fit``.
        """
        self._fit("fit", X, y, sample_weight, eval_set, fit_params)
        return self

    @available_if(_estimator_has("fit_transform"))
    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        """Fit (recorded) and return the estimator's ``fit_transform`` result."""
        return self._fit("fit_transform", X, y, None, None, fit_params)

    @available_if(_estimator_has("fit_predict"))
    def fit_predict(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        """Fit (recorded) and return the estimator's ``fit_predict`` result."""
        return self._fit("fit_predict", X, y, None, None, fit_params)

    def _fit(
        self,
        method: str,
        X: Any,
        y: Any,
        sample_weight: Any,
        eval_set: Any,
        fit_params: dict[str, Any],
    ) -> Any:
        if eval_set is not None and not (isinstance(eval_set, tuple | list) and len(eval_set) == 2):
            raise MltrailError("eval_set takes one (X_val, y_val) pair.")
        estimator = clone(self.estimator)
        if sample_weight is not None:
            fit_params = {**fit_params, "sample_weight": sample_weight}

        def fit() -> Any:
            return getattr(estimator, method)(X, y, **fit_params)

        settings = self._settings()
        role, enclosing_search = _fit_context()
        run_id = None
        if role == "inner":
            result = fit()
            _record_nested(settings, estimator, X, y, fit_params.get("sample_weight"))
        else:
            result, trail = _record(
                settings, estimator, fit, X, y, fit_params, eval_set, enclosing_search
            )
            run_id = trail.run_id
            self._mltrail_uri = trail.tracking_uri
        self.estimator_ = estimator
        self.run_id_ = run_id
        self._score_calls = 0
        return result

    def _settings(self) -> _Settings:
        start = {
            "experiment": self.experiment,
            "run_name": self.run_name,
            "tracking_uri": self.tracking_uri,
            "tags": self.tags,
            **(self.run_options or {}),
        }
        return _Settings(
            start=start,
            trail=self.trail,
            log_model=self.log_model,
            registered_model_name=self.registered_model_name,
            log_plots=self.log_plots,
            max_child_runs=self.max_child_runs,
            nested=self.nested,
            prefix="estimator__",
        )

    # -- delegation ------------------------------------------------------------------------------

    @available_if(_estimator_has("predict"))
    def predict(self, X: Any, **params: Any) -> Any:
        """The fitted estimator's ``predict``."""
        check_is_fitted(self)
        return self.estimator_.predict(X, **params)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X: Any, **params: Any) -> Any:
        """The fitted estimator's ``predict_proba``."""
        check_is_fitted(self)
        return self.estimator_.predict_proba(X, **params)

    @available_if(_estimator_has("predict_log_proba"))
    def predict_log_proba(self, X: Any, **params: Any) -> Any:
        """The fitted estimator's ``predict_log_proba``."""
        check_is_fitted(self)
        return self.estimator_.predict_log_proba(X, **params)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X: Any) -> Any:
        """The fitted estimator's ``decision_function``."""
        check_is_fitted(self)
        return self.estimator_.decision_function(X)

    @available_if(_estimator_has("transform"))
    def transform(self, X: Any, **params: Any) -> Any:
        """The fitted estimator's ``transform``."""
        check_is_fitted(self)
        return self.estimator_.transform(X, **params)

    @available_if(_estimator_has("inverse_transform"))
    def inverse_transform(self, X: Any, **params: Any) -> Any:
        """The fitted estimator's ``inverse_transform``."""
        check_is_fitted(self)
        return self.estimator_.inverse_transform(X, **params)

    @available_if(_estimator_has("get_feature_names_out"))
    def get_feature_names_out(self, input_features: Any = None) -> Any:
        """The fitted estimator's ``get_feature_names_out``."""
        check_is_fitted(self)
        return self.estimator_.get_feature_names_out(input_features)

    @available_if(_estimator_has("score"))
    def score(self, X: Any, y: Any = None, sample_weight: Any = None, **params: Any) -> float:
        """The fitted estimator's ``score``; logged to the fit's run as ``score_<n>``, n counting
        the calls since that fit."""
        check_is_fitted(self)
        if sample_weight is not None:
            params["sample_weight"] = sample_weight
        value = self.estimator_.score(X, y, **params)
        if getattr(self, "run_id_", None):
            self._log_score(value)
        return value

    def _log_score(self, value: Any) -> None:
        self._score_calls = getattr(self, "_score_calls", 0) + 1
        metrics = {f"score_{self._score_calls}": value}
        with guarded("logging a score after fit"):
            trail = self.trail
            if trail is not None and trail.status is None and trail.run_id == self.run_id_:
                trail.log_metrics(metrics, step=0)
                return
            trail = start_run(
                run_id=self.run_id_,
                join=True,  # add to the finished run: its status and end time stay as they are
                tracking_uri=getattr(self, "_mltrail_uri", None) or self.tracking_uri,
                capture=False,
                system_metrics=False,
            )
            try:
                trail.log_metrics(metrics, step=0)
            finally:
                trail.end()

    @property
    def classes_(self) -> Any:
        """The fitted estimator's classes."""
        return self.estimator_.classes_

    @property
    def n_features_in_(self) -> int:
        """Number of features seen during fit."""
        return self.estimator_.n_features_in_

    @property
    def feature_names_in_(self) -> Any:
        """Names of the features seen during fit (when X had string column names)."""
        return self.estimator_.feature_names_in_

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "estimator_")

    def __sklearn_tags__(self) -> Any:
        try:
            return copy.deepcopy(get_tags(self.estimator))
        except Exception:  # not an estimator (yet): set_params may put anything there
            return super().__sklearn_tags__()

    # -- clone and pickle: a live Trail is neither copied nor pickled -----------------------------

    def __sklearn_clone__(self) -> TrackedEstimator:
        params = self.get_params(deep=False)
        trail = params.pop("trail")
        new = type(self)(**{k: clone(v, safe=False) for k, v in params.items()}, trail=trail)
        for attribute in ("_metadata_request", "_sklearn_output_config"):
            if attribute in self.__dict__:
                setattr(new, attribute, copy.deepcopy(self.__dict__[attribute]))
        return new

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if state.get("trail") is not None:
            state = {**state, "trail": None}
        return state


# --- scikit-learn's experimental callback API (1.9+) ---------------------------------------------

try:
    from sklearn.callback import CallbackSupportMixin as _CallbackSupport
except ImportError:  # scikit-learn < 1.9
    _CallbackSupport = None


class TrailCallback:
    """Records the fit of the estimator it is set on, as :class:`TrackedEstimator` would.

    For scikit-learn 1.9+ estimators that support its experimental callback API
    (``LogisticRegression``, ``Pipeline``, ``GridSearchCV``, ``RandomizedSearchCV``, ...)::

        LogisticRegression().set_callbacks(TrailCallback(experiment="churn")).fit(X, y)

    Params are logged without a prefix. Takes the keyword arguments of ``start_run`` plus
    ``trail``, ``log_model``, ``registered_model_name``, ``log_plots``, ``max_child_runs``.

    Raises:
        MltrailError: on scikit-learn versions without ``sklearn.callback``.
    """

    def __init__(
        self,
        *,
        trail: Trail | None = None,
        log_model: bool = True,
        registered_model_name: str | None = None,
        log_plots: bool = True,
        max_child_runs: int | None = 100,
        **start_run_kwargs: Any,
    ) -> None:
        if _CallbackSupport is None:
            raise MltrailError(
                f"TrailCallback needs scikit-learn >= 1.9 (sklearn.callback); this is "
                f"{sklearn.__version__}. Wrap the estimator in TrackedEstimator instead."
            )
        unknown = set(start_run_kwargs) - _START_RUN_ARGS
        if unknown:
            raise MltrailError(f"Unknown TrailCallback option(s): {sorted(unknown)}.")
        self._settings = _Settings(
            start=start_run_kwargs,
            trail=trail,
            log_model=log_model,
            registered_model_name=registered_model_name,
            log_plots=log_plots,
            max_child_runs=max_child_runs,
        )
        self._recordings: dict[int, _Recording] = {}

    def setup(self, estimator: Any, context: Any) -> None:
        pass

    def on_fit_task_begin(
        self, estimator: Any, context: Any, *, X: Any = None, y: Any = None, metadata: Any = None
    ) -> None:
        if context.parent is not None or id(estimator) in self._recordings:
            return  # a sub-task of the fit, or a fit inside one we record
        role, enclosing_search = _fit_context()
        if role == "inner":
            return
        weight = (metadata or {}).get("sample_weight")
        fit_params = {} if weight is None else {"sample_weight": weight}
        recording = _Recording(self._settings, estimator, X, y, fit_params, None, enclosing_search)
        recording.begin()
        self._recordings[id(estimator)] = recording

    def on_fit_task_end(
        self, estimator: Any, context: Any, *, X: Any = None, y: Any = None, metadata: Any = None
    ) -> None:
        recording = self._recordings.get(id(estimator))
        if recording is not None and context.parent is None:
            recording.fitted = True

    def teardown(self, estimator: Any, context: Any) -> None:
        recording = self._recordings.pop(id(estimator), None)
        if recording is None:
            return
        if not recording.fitted:
            # Teardown runs in a ``finally``: the exception leaving fit is the one in flight.
            error = sys.exc_info()[1] or RuntimeError("fit ended before its last task")
            recording.end(error)
            return
        try:
            recording.finish(estimator)
        finally:
            recording.end()

    def __getstate__(self) -> dict[str, Any]:
        # Searches send their estimators, callbacks included, to joblib workers: no live runs.
        settings = dataclasses.replace(self._settings, trail=None)
        return {"_settings": settings, "_recordings": {}}


# --- autolog -------------------------------------------------------------------------------------

_PATCHED_METHODS = ("fit", "fit_transform", "fit_predict")
_SKIPPED_MODULES = ("sklearn.frozen", "sklearn.utils", "sklearn.tests", "sklearn.externals")


def _estimator_classes() -> list[type]:
    """scikit-learn's estimator classes imported so far (subclasses of BaseEstimator)."""
    seen: set[type] = set()
    pending = [BaseEstimator]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                pending.append(sub)
    return [
        cls
        for cls in seen
        if cls.__module__.startswith("sklearn.")
        and not cls.__module__.startswith(_SKIPPED_MODULES)
        and ".tests." not in cls.__module__
    ]


def _fit_arguments(method: Any, estimator: Any, args: tuple, kwargs: dict) -> tuple[Any, Any, dict]:
    """X, y and the other fit arguments of a call, by the method's signature."""
    import inspect

    try:
        bound = inspect.signature(method).bind(estimator, *args, **kwargs)
    except (TypeError, ValueError):
        return (args[0] if args else kwargs.get("X")), (args[1] if len(args) > 1 else None), {}
    names = list(bound.signature.parameters)
    values = dict(bound.arguments)
    values.pop(names[0], None)  # self
    X = values.pop(names[1], None) if len(names) > 1 else None
    y = None
    if len(names) > 2 and names[2] in {"y", "Y"}:
        y = values.pop(names[2], None)
    extra = {}
    for name, value in values.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            extra.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            extra[name] = value
    return X, y, extra


def autolog_patches(options: dict[str, Any]) -> list[tuple[Any, str, Callable[..., Any]]]:
    """``mltrail.autolog`` patches: top-level ``fit``/``fit_transform``/``fit_predict`` of the
    scikit-learn estimators imported so far (each submodule imported later patches its own).

    Options that are neither ``start_run`` arguments nor this adapter's (``log_model``,
    ``registered_model_name``, ``log_plots``, ``max_child_runs``, ``nested``) belong to other
    adapters and are ignored here.
    """
    start, own = options_for("sklearn", options)
    settings = _Settings(start=start, **own)

    def patch(name: str) -> Callable[..., Any]:
        def record_fit(call_original: Callable[..., Any], estimator: Any, *args: Any, **kw: Any):
            role, enclosing_search = _fit_context(patched=True)
            if role == "inner":
                return call_original(estimator, *args, **kw)
            X, y, fit_params = _fit_arguments(getattr(type(estimator), name), estimator, args, kw)
            result, _ = _record(
                settings,
                estimator,
                lambda: call_original(estimator, *args, **kw),
                X,
                y,
                fit_params,
                None,
                enclosing_search,
            )
            return result

        return record_fit

    wrappers = {name: patch(name) for name in _PATCHED_METHODS}
    return [
        (cls, name, wrappers[name])
        for cls in _estimator_classes()
        for name in _PATCHED_METHODS
        if name in vars(cls)
    ]
