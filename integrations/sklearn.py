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

import copy
import dataclasses
import logging
import math
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
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

from mltrail import MltrailError, Trail
from mltrail.adapters import (
    Candidate,
    FitRecording,
    RunSession,
    called_by_library,
    check_max_child_runs,
    classification_metrics,
    confusion_counts,
    confusion_matrix_plot,
    current_fit,
    example_io,
    exception_safe,
    fit_arguments,
    in_patched_call,
    log_search,
    options_for,
    packages_of,
    param_text,
    pinned_requirements,
    preload_matplotlib,
    regression_metrics,
    residual_plot,
)

logger = logging.getLogger("mltrail.sklearn")

__all__ = ["TrackedEstimator", "TrailCallback", "autolog_patches"]


@dataclasses.dataclass
class _Settings:
    """How fits are recorded: from TrackedEstimator's params, autolog options or a callback.

    Checked when made: TrackedEstimator makes them at fit (scikit-learn's constructors only
    store their arguments), autolog and TrailCallback when they are set up.
    """

    start: dict[str, Any]
    trail: Trail | None = None
    log_model: bool = True
    registered_model_name: str | None = None
    log_plots: bool = True
    max_child_runs: int | None = 100
    nested: bool = False
    prefix: str = ""  # "estimator__" for TrackedEstimator: the names GridSearchCV grids use
    owner: dataclasses.InitVar[str] = "TrailCallback"

    def __post_init__(self, owner: str) -> None:
        check_max_child_runs(self.max_child_runs)
        # TrackedEstimator passes every start_run param it has, unset ones as None.
        self.start = {k: v for k, v in self.start.items() if v is not None}
        self._owner = owner
        self.session()  # the trail= or start_run handshake, checked now

    def session(self) -> RunSession:
        """A session for one fit (fits run in several threads at once, each its own run)."""
        return RunSession("sklearn", self.trail, self.start, owner=self._owner)


# --- where a fit runs ----------------------------------------------------------------------------


def _fit_context(patched: bool = False) -> tuple[str, tuple[Any, Any] | None]:
    """("inner", None), ("refit", (search, cv_results)) or ("top", None) for the fit calling us.

    Inner: a recorded fit already runs in this thread (``patched``: the caller is an autolog
    patch, which already passed calls nested in another patched call through), a library called
    the patched fit rather than the user's code (autolog only), or scikit-learn's
    ``Parallel`` dispatched this fit (its ``_FuncWrapper`` is on the stack, in worker threads and
    loky processes alike). Refit: the final fit of a search's best candidate, called from
    ``BaseSearchCV.fit``.
    """
    if current_fit() is not None or (not patched and in_patched_call()):
        return "inner", None
    if patched and called_by_library(2):  # a library fitting a helper (LabelEncoder in a metric)
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


class _Recording(FitRecording):
    """One fit recorded as a run (the kernel's wiring) with scikit-learn's params, and its
    metrics, search results, model and plot once fitted."""

    def __init__(
        self,
        settings: _Settings,
        estimator: Any,
        X: Any,
        y: Any,
        fit_params: Mapping[str, Any],
        eval_set: tuple[Any, Any] | None = None,
        enclosing_search: tuple[Any, Any] | None = None,
        *,
        private: bool = False,
    ) -> None:
        self.settings = settings
        self.X = X
        self.fit_params = dict(fit_params)
        # (role, X, y, sample_weight) of the data the fitted estimator is measured on
        self.sets = [("train", X, y, self.fit_params.get("sample_weight"))]
        if eval_set is not None:
            self.sets.append(("eval", *eval_set, None))
        self.enclosing_search = enclosing_search
        name = type(estimator).__name__
        super().__init__(
            settings.session(),
            estimator,
            [(role, X, y) for role, X, y, _ in self.sets],
            tags={"mltrail.sklearn.estimator": name},
            private=private,  # the fitted estimator is ours alone (TrackedEstimator's clone)
            # nested fits are logged into the run as they run; a search's refit reads it running
            beside=not settings.nested and enclosing_search is None,
            what=f"scikit-learn {name} fit",
        )

    def begin(self) -> None:
        super().begin()
        if self.settings.log_plots:
            preload_matplotlib()  # imported while the estimator fits, not after

    def params(self) -> dict[str, Any]:
        return {
            **_estimator_params(self.model, self.settings.prefix),
            **_fit_params(self.fit_params),
        }

    def finish(self, trail: Trail, model: Any) -> None:
        """Record what the fitted ``model`` gives: metrics, search results, model, plot."""
        session, settings = self.session, self.settings
        metrics: dict[str, float] = {}
        plotted = None  # (kind, y_true, y_pred); the held-out set tells more when there is one
        with session.guarded("computing metrics"):
            for role, X, y, weight in self.sets:
                values, predictions = _task_metrics(model, X, y, weight, role + "/")
                metrics.update(values)
                plotted = predictions or plotted
        with session.guarded("recording the search results"):
            if _is_fitted_search(model):
                metrics.update(_log_search(trail, model, model.cv_results_, settings))
            elif self.enclosing_search is not None:
                search, results = self.enclosing_search
                metrics.update(_log_search(trail, search, results, settings, enclosing=True))
        trail.log_metrics(metrics, step=0)
        if settings.log_model:  # first: it is saved in the background while we plot
            with session.guarded("logging the model"):
                _log_model(trail, model, self.X, settings.registered_model_name)
        if settings.log_plots and plotted is not None:
            with session.guarded("plotting"):
                plot = _plot(*plotted, getattr(model, "classes_", None))
                if plot is not None:
                    trail.log_image(plot[1], f"plots/{plot[0]}", what="sklearn: plotting")


def _record_nested(settings: _Settings, estimator: Any, X: Any, y: Any, weight: Any) -> None:
    """An inner fit as a finished child run of the run recording the outer fit."""
    parent = current_fit()
    if not settings.nested or parent is None or parent.trail is None:
        return
    with parent.guarded("recording a nested fit"):
        metrics, _ = _task_metrics(estimator, X, y, weight, "train/")
        parent.trail.log_child_run(
            run_name=type(estimator).__name__,
            params=_estimator_params(estimator, settings.prefix),
            metrics=metrics,
            tags={"mltrail.sklearn.estimator": type(estimator).__name__},
        )


# --- what gets recorded --------------------------------------------------------------------------


def _param_value(value: Any) -> Any:
    """A param value as it reads best in MLflow: estimators by their repr (without addresses:
    the same in every process), functions by name."""
    if hasattr(value, "get_params") and not isinstance(value, type):
        return param_text(value)
    if isinstance(value, type) or callable(value):
        module = getattr(value, "__module__", None)
        name = getattr(value, "__qualname__", None) or repr(value)
        return f"{module}.{name}" if module else name
    if isinstance(value, np.ndarray):
        if value.size <= 32:
            return value.tolist()
        return f"array(shape={value.shape}, dtype={value.dtype})"
    if isinstance(value, list | tuple) and any(hasattr(v, "get_params") for v in value):
        return param_text(value)
    return value


def _estimator_params(estimator: Any, prefix: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if prefix:
        params[prefix.rstrip("_")] = param_text(estimator)
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


def _task_metrics(
    model: Any, X: Any, y: Any, weight: Any, prefix: str
) -> tuple[dict[str, float], tuple[str, Any, Any] | None]:
    """The task's standard metrics of ``model`` on ``X``/``y``, and (task, y, predictions) for
    a plot. A metric that does not apply to these targets (one class, multi-output...) is left
    out, and so is NaN (undefined here: one class in ``y``, ...)."""
    from sklearn.base import ClassifierMixin, RegressorMixin

    mixin_score = getattr(type(model), "score", None) in (
        ClassifierMixin.score,
        RegressorMixin.score,
    )
    task = None
    if y is not None and hasattr(model, "predict"):
        task = (
            "classification"
            if is_classifier(model)
            else "regression"
            if is_regressor(model)
            else None
        )
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # our own extra predict calls must not warn the user
        if hasattr(model, "score") and not (task and mixin_score):  # searches: their scorer
            kw = {} if weight is None else {"sample_weight": weight}
            try:
                score = float(model.score(X) if y is None else model.score(X, y, **kw))
            except Exception as error:  # not applicable to these targets; not an mltrail error
                logger.debug("score not computed: %s", error)
            else:
                out["score"] = score
        pred = _predict(model, X) if task else None
        if task == "classification" and pred is not None:
            proba = _predict(model, X, "predict_proba")
            classes = getattr(model, "classes_", None)
            out.update(classification_metrics(y, pred, proba, classes, weight))
        elif task == "regression" and pred is not None:
            out.update(regression_metrics(y, pred, weight))
    same = {"classification": "accuracy", "regression": "r2"}.get(task or "")
    if mixin_score and same in out:  # the mixins' score is accuracy or r2
        out["score"] = out[same]
    out = {prefix + name: value for name, value in out.items() if math.isfinite(value)}
    return out, (task, y, pred) if task and pred is not None else None


def _predict(model: Any, X: Any, method: str = "predict") -> Any:
    if not hasattr(model, method):
        return None
    try:
        return getattr(model, method)(X)
    except Exception as error:
        logger.debug("%s failed on the evaluation data: %s", method, error)
        return None


def _plot(
    kind: str, y_true: Any, y_pred: Any, labels: Any
) -> tuple[str, Callable[[Path], None]] | None:
    """The file name and drawing of a confusion matrix (classification) or residual plot
    (regression); None if n/a. The drawing runs later, off the training's thread."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_pred.shape != y_true.shape:
        return None  # multi-output
    if kind == "regression":
        return "residuals.png", lambda path: residual_plot(y_true, y_pred, path)
    labels = np.unique(np.concatenate([y_true, y_pred])) if labels is None else labels
    if len(labels) > 50:
        return None
    matrix = confusion_counts(y_true, y_pred, labels)
    return "confusion_matrix.png", lambda path: confusion_matrix_plot(matrix, labels, path)


def _is_fitted_search(model: Any) -> bool:
    module = sys.modules.get("sklearn.model_selection._search")
    return (
        module is not None
        and isinstance(model, module.BaseSearchCV)
        and hasattr(model, "cv_results_")
    )


def _log_search(
    trail: Trail, search: Any, results: Any, settings: _Settings, enclosing: bool = False
) -> dict[str, float]:
    """Best params, cv_results.csv and the best candidates as child runs; returns the metrics
    (best_cv_score) for the caller to log with its own."""
    params: dict[str, Any] = {}
    if enclosing:  # the settings of a search around the recorded estimator (cv, scoring...)
        own = search.get_params(deep=False)
        params.update({f"search.{k}": _param_value(v) for k, v in own.items() if k != "estimator"})
    if hasattr(search, "n_splits_"):
        params["search.n_splits"] = search.n_splits_
    log_search(
        trail,
        _candidates(search, results) if results else [],
        framework="sklearn",
        search=type(search).__name__,
        best_params=getattr(search, "best_params_", None),
        params=params,
        table=results or None,
        table_file="cv_results.csv",
        limit=settings.max_child_runs,
        param_value=_param_value,
    )
    score = getattr(search, "best_score_", None)
    return {"best_cv_score": float(score)} if isinstance(score, int | float | np.number) else {}


def _candidates(search: Any, results: Mapping[str, Any]) -> list[Candidate]:
    """The rows of ``cv_results_``: params, the fold summaries (not each split) and the rank by
    the metric the search refits on."""
    count = len(results["params"])
    refit = getattr(search, "refit", True)
    rank_key = f"rank_test_{refit}" if isinstance(refit, str) else "rank_test_score"
    if rank_key not in results:
        rank_key = next((k for k in results if k.startswith("rank_test_")), "")
    ranks = results[rank_key] if rank_key else range(1, count + 1)
    summary = [k for k in results if k.startswith(("mean_", "std_", "rank_"))]
    rounds = [k for k in ("iter", "n_resources") if k in results]  # successive halving
    return [
        Candidate(
            index=index,
            params={
                **{k: _param_value(v) for k, v in results["params"][index].items()},
                **{k: int(results[k][index]) for k in rounds},
            },
            metrics={k: results[k][index] for k in summary},
            rank=int(ranks[index]),
        )
        for index in range(count)
    ]


def _log_model(trail: Trail, model: Any, X: Any, registered_model_name: str | None) -> None:
    method = next((m for m in ("predict", "transform") if hasattr(model, m)), None)
    example, output = example_io(X, getattr(model, method) if method else None)
    try:
        parts = [model, *model.get_params(deep=True).values()]
    except Exception:
        parts = [model]
    # The packages the fitted estimator is made of (a step from another library, say).
    made_of = packages_of(*(part for part in parts if hasattr(part, "get_params")))
    trail.log_model(
        model,
        "sklearn",
        signature_from=example,
        output_example=output,
        registered_model_name=registered_model_name,
        serialization_format="cloudpickle",  # what mlflow.sklearn.autolog uses; any estimator
        pip_requirements=pinned_requirements(
            *sorted({"sklearn", "cloudpickle", "numpy", "scipy", *made_of})
        ),
    )


# --- the wrapper ---------------------------------------------------------------------------------


def _estimator_has(attribute: str) -> Callable[[Any], bool]:
    """For ``available_if``: the fitted estimator has it, or (before fit) the unfitted one."""

    def check(self: Any) -> bool:
        getattr(self.estimator_ if hasattr(self, "estimator_") else self.estimator, attribute)
        return True

    return check


def _delegated(name: str) -> Any:
    """The fitted estimator's method ``name``, where the wrapped estimator has it."""

    def method(self: TrackedEstimator, X: Any, *args: Any, **kwargs: Any) -> Any:
        check_is_fitted(self)
        return getattr(self.estimator_, name)(X, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"The fitted estimator's ``{name}``."
    return available_if(_estimator_has(name))(method)


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

    Raises:
        MltrailError: at ``fit``, for both ``trail`` and start-run arguments, or an unknown or
            badly typed start-run argument or ``max_child_runs``.

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
        session = None
        if role == "inner":
            result = fit()
            _record_nested(settings, estimator, X, y, fit_params.get("sample_weight"))
        else:
            recorded = _Recording(
                settings, estimator, X, y, fit_params, eval_set, enclosing_search, private=True
            )
            result, session = recorded.run(fit), recorded.session
        self.estimator_ = estimator
        self._session = session  # where score() logs, in this process or after unpickling
        self._pending = recorded.pending if session is not None else None
        self._score_calls = 0
        return result

    def _recorded_session(self) -> RunSession | None:
        """The session of the last fit, once the fit is recorded (it may be recorded after it
        returned: see ``record_beside``)."""
        pending = self.__dict__.get("_pending")
        if pending is not None:
            pending.wait()
            self._pending = None
        return getattr(self, "_session", None)

    @property
    def run_id_(self) -> str | None:
        """The MLflow run of the last fit (None when the fit ran inside another one)."""
        check_is_fitted(self)
        session = self._recorded_session()
        return session.last_run_id if session is not None else None

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
            owner="TrackedEstimator",
        )

    # -- delegation ------------------------------------------------------------------------------

    predict = _delegated("predict")
    predict_proba = _delegated("predict_proba")
    predict_log_proba = _delegated("predict_log_proba")
    decision_function = _delegated("decision_function")
    transform = _delegated("transform")
    inverse_transform = _delegated("inverse_transform")
    get_feature_names_out = _delegated("get_feature_names_out")

    @available_if(_estimator_has("score"))
    def score(self, X: Any, y: Any = None, sample_weight: Any = None, **params: Any) -> float:
        """The fitted estimator's ``score``; logged to the fit's run as ``score_<n>``, n counting
        the calls since that fit."""
        check_is_fitted(self)
        if sample_weight is not None:
            params["sample_weight"] = sample_weight
        value = self.estimator_.score(X, y, **params)
        session = self._recorded_session()
        if session is not None:
            self._score_calls = getattr(self, "_score_calls", 0) + 1
            with session.guarded("logging a score after fit"):
                # The fit's run, joined: its status and end time stay as they are.
                session.log_after({f"score_{self._score_calls}": value}, step=0)
        return value

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
        self._recorded_session()  # a copy holds the fit's run id, not the wait for it
        state = super().__getstate__()
        if state.get("trail") is not None:
            state = {**state, "trail": None}
        return state


# --- scikit-learn's experimental callback API (1.9+) ---------------------------------------------

try:
    from sklearn.callback import CallbackSupportMixin as _CallbackSupport
except ImportError:  # scikit-learn < 1.9
    _CallbackSupport = None


@exception_safe(["on_fit_task_begin", "on_fit_task_end", "teardown"])
class TrailCallback:
    """Records the fit of the estimator it is set on, as :class:`TrackedEstimator` would.

    For scikit-learn 1.9+ estimators that support its experimental callback API
    (``LogisticRegression``, ``Pipeline``, ``GridSearchCV``, ``RandomizedSearchCV``, ...)::

        LogisticRegression().set_callbacks(TrailCallback(experiment="churn")).fit(X, y)

    Params are logged without a prefix.

    Args:
        trail: log into this :class:`~mltrail.Trail` instead of starting a run per fit.
        log_model: log the fitted estimator under ``model/``.
        registered_model_name: also register the model under this name.
        log_plots: log a confusion matrix or residual plot under ``plots/``.
        max_child_runs: for searches, child runs for the best this many candidates.
        **start_run_kwargs: keyword arguments of :func:`mltrail.start_run`.

    Raises:
        MltrailError: on scikit-learn versions without ``sklearn.callback``, for both
            ``trail`` and start-run arguments, or an unknown start-run argument.
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
        self._settings = _Settings(
            start=start_run_kwargs,
            trail=trail,
            log_model=log_model,
            registered_model_name=registered_model_name,
            log_plots=log_plots,
            max_child_runs=max_child_runs,
        )
        self._recordings: dict[int, _Recording] = {}
        self._session: RunSession | None = None  # the last fit's: it counts the hooks' errors

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
        self._session = recording.session

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
            error = sys.exc_info()[1]
            recording.end(error, finished=False, reason="the fit ended before its last task")
            return
        recording.complete(estimator)

    def __getstate__(self) -> dict[str, Any]:
        # Searches send their estimators, callbacks included, to joblib workers: no live runs.
        settings = dataclasses.replace(self._settings, trail=None)
        return {"_settings": settings, "_recordings": {}, "_session": None}


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


def autolog_patches(options: dict[str, Any]) -> list[tuple[Any, str, Callable[..., Any]]]:
    """``mltrail.autolog`` patches: top-level ``fit``/``fit_transform``/``fit_predict`` of the
    scikit-learn estimators imported so far (each submodule imported later patches its own).

    Options that are neither ``start_run`` arguments nor this adapter's (``log_model``,
    ``registered_model_name``, ``log_plots``, ``max_child_runs``, ``nested``) belong to other
    adapters and are ignored here.
    """
    start, own = options_for("sklearn", options)
    settings = _Settings(start=start, **own, owner="mltrail.autolog")

    def patch(name: str) -> Callable[..., Any]:
        def record_fit(call_original: Callable[..., Any], estimator: Any, *args: Any, **kw: Any):
            role, enclosing_search = _fit_context(patched=True)
            if role == "inner":
                return call_original(estimator, *args, **kw)
            X, y, fit_params = fit_arguments(getattr(type(estimator), name), estimator, args, kw)
            recorded = _Recording(settings, estimator, X, y, fit_params, None, enclosing_search)
            return recorded.run(lambda: call_original(estimator, *args, **kw))

        return record_fit

    wrappers = {name: patch(name) for name in _PATCHED_METHODS}
    return [
        (cls, name, wrappers[name])
        for cls in _estimator_classes()
        for name in _PATCHED_METHODS
        if name in vars(cls)
    ]
