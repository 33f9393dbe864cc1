"""TrackedEstimator, TrailCallback and the scikit-learn autolog patch against a real MLflow store."""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
import re
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.datasets import load_iris, make_regression
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error, r2_score
from sklearn.model_selection import (
    GridSearchCV,
    HalvingGridSearchCV,
    RandomizedSearchCV,
    cross_val_score,
    train_test_split,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

import mltrail
from mltrail.integrations.sklearn import TrackedEstimator, TrailCallback

GRID = {"C": [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0], "fit_intercept": [True, False]}  # 12


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # BLAS threads fighting over two shared cores make tiny fits take seconds.
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)


def runs_of(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=500)


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found |= artifact_paths(client, run_id, item.path)
        else:
            found.add(item.path)
    return found


def artifact_text(client, run_id: str, path: str) -> str:
    return Path(client.download_artifacts(run_id, path)).read_text()


def top_level(runs: list) -> list:
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def children(client, experiment: str, parent: str) -> list:
    return [
        r for r in runs_of(client, experiment) if r.data.tags.get("mlflow.parentRunId") == parent
    ]


def test_fit_records_params_data_metrics_model_and_plot(client, iris):
    X_train, X_val, y_train, y_val = iris
    model = TrackedEstimator(
        LogisticRegression(C=0.5, max_iter=300),
        experiment="fit",
        run_name="lr",
        registered_model_name="iris-lr",
    )
    assert model.fit(X_train, y_train, eval_set=(X_val, y_val)) is model

    run = client.get_run(model.run_id_)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "lr"
    params = run.data.params
    assert params["estimator__C"] == "0.5"
    assert params["estimator__max_iter"] == "300"
    assert params["estimator"] == "LogisticRegression(C=0.5, max_iter=300)"
    assert params["estimator_class"] == "sklearn.linear_model._logistic.LogisticRegression"
    assert params["fit.sample_weight"] == "False"
    assert params["data.train.shape"] == "120x4"
    assert params["data.train.y_shape"] == "120"
    assert params["data.eval.shape"] == "30x4"
    assert run.data.tags["mltrail.sklearn.estimator"] == "LogisticRegression"

    fitted = model.estimator_
    metrics = run.data.metrics
    assert metrics["train/accuracy"] == pytest.approx(
        accuracy_score(y_train, fitted.predict(X_train))
    )
    assert metrics["train/score"] == pytest.approx(fitted.score(X_train, y_train))
    assert metrics["eval/accuracy"] == pytest.approx(accuracy_score(y_val, fitted.predict(X_val)))
    assert metrics["eval/log_loss"] == pytest.approx(log_loss(y_val, fitted.predict_proba(X_val)))
    for name in ("precision", "recall", "f1", "roc_auc"):
        assert 0.5 < metrics[f"train/{name}"] <= 1.0
        assert 0.5 < metrics[f"eval/{name}"] <= 1.0
    history = client.get_metric_history(model.run_id_, "train/accuracy")
    assert [point.step for point in history] == [0]

    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "eval"}
    assert inputs["train"].dataset.digest == params["data.train.digest"]
    assert len(inputs["train"].dataset.digest) <= 36
    assert inputs["eval"].dataset.digest == params["data.eval.digest"]
    assert {t.key: t.value for t in inputs["eval"].tags} == {"mlflow.data.context": "eval"}
    assert json.loads(inputs["train"].dataset.profile)["features_shape"] == [120, 4]

    paths = artifact_paths(client, model.run_id_)
    assert {"model/MLmodel", "plots/confusion_matrix.png", "mltrail/params.json"} <= paths
    png = Path(client.download_artifacts(model.run_id_, "plots/confusion_matrix.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    import mlflow.pyfunc

    loaded = mlflow.pyfunc.load_model(f"runs:/{model.run_id_}/model")
    assert np.array_equal(loaded.predict(X_val), model.predict(X_val))
    assert loaded.metadata.signature is not None
    versions = client.search_model_versions("name = 'iris-lr'")
    assert [v.run_id for v in versions] == [model.run_id_]

    # It predicts exactly like the estimator it wraps.
    plain = LogisticRegression(C=0.5, max_iter=300).fit(X_train, y_train)
    assert np.array_equal(model.predict(X_val), plain.predict(X_val))
    assert np.allclose(model.predict_proba(X_val), plain.predict_proba(X_val))
    assert np.allclose(model.decision_function(X_val), plain.decision_function(X_val))
    assert list(model.classes_) == [0, 1, 2] and model.n_features_in_ == 4


def test_data_fingerprint_tells_datasets_apart(client, iris):
    X_train, _, y_train, _ = iris
    lr = LogisticRegression(max_iter=300)
    options = {"experiment": "digest", "log_model": False, "log_plots": False}
    first = TrackedEstimator(lr, **options).fit(X_train, y_train).run_id_
    again = TrackedEstimator(lr, **options).fit(X_train.copy(), y_train.copy()).run_id_
    changed = X_train.copy()
    changed[7, 2] += 0.1
    other = TrackedEstimator(lr, **options).fit(changed, y_train).run_id_
    digest = {r: client.get_run(r).data.params["data.train.digest"] for r in (first, again, other)}
    assert digest[first] == digest[again] != digest[other]

    import pandas as pd

    frame = pd.DataFrame(X_train, columns=["sl", "sw", "pl", "pw"])
    run = client.get_run(TrackedEstimator(lr, **options).fit(frame, y_train).run_id_)
    assert run.data.params["data.feature_names"] == "sl,sw,pl,pw"
    schema = json.loads(run.inputs.dataset_inputs[0].dataset.schema)
    assert [c["name"] for c in schema["mlflow_colspec"]] == ["sl", "sw", "pl", "pw"]


def test_regressor_metrics_and_residual_plot(client):
    X, y = make_regression(n_samples=200, n_features=5, noise=5.0, random_state=0)
    model = TrackedEstimator(Ridge(alpha=2.0), experiment="regression").fit(X, y)
    run = client.get_run(model.run_id_)
    metrics = run.data.metrics
    predicted = model.predict(X)
    assert metrics["train/mse"] == pytest.approx(mean_squared_error(y, predicted))
    assert metrics["train/rmse"] == pytest.approx(math.sqrt(metrics["train/mse"]))
    assert metrics["train/r2"] == pytest.approx(r2_score(y, predicted))
    assert metrics["train/score"] == pytest.approx(metrics["train/r2"])
    assert "train/mae" in metrics and "train/accuracy" not in metrics
    assert "plots/residuals.png" in artifact_paths(client, model.run_id_)


def test_score_calls_after_fit_are_logged_in_call_order(client, iris):
    X_train, X_val, y_train, y_val = iris
    model = TrackedEstimator(
        LogisticRegression(max_iter=300), experiment="scores", log_model=False, log_plots=False
    ).fit(X_train, y_train)
    ended = client.get_run(model.run_id_).info.end_time
    first = model.score(X_val, y_val)
    second = model.score(X_train, y_train)
    run = client.get_run(model.run_id_)
    assert run.data.metrics["score_1"] == pytest.approx(first)
    assert run.data.metrics["score_2"] == pytest.approx(second)
    assert run.info.status == "FINISHED" and run.info.end_time == ended
    assert "mltrail.resume_count" not in run.data.tags


def test_grid_search_wrapped_gives_parent_and_12_candidate_children(client, iris):
    X_train, _, y_train, _ = iris
    search = GridSearchCV(LogisticRegression(max_iter=300), GRID, cv=3)
    model = TrackedEstimator(search, experiment="grid-inside").fit(X_train, y_train)
    fitted = model.estimator_

    runs = runs_of(client, "grid-inside")
    assert len(runs) == 13  # one parent and one child per candidate, never one per fold
    parent = client.get_run(model.run_id_)
    assert parent.data.tags["mltrail.sklearn.search"] == "GridSearchCV"
    assert parent.data.params["best.C"] == str(fitted.best_params_["C"])
    assert parent.data.params["search.n_candidates"] == "12"
    assert parent.data.params["estimator__param_grid.C"] == str(GRID["C"])
    assert parent.data.metrics["best_cv_score"] == pytest.approx(fitted.best_score_)

    kids = children(client, "grid-inside", model.run_id_)
    assert len(kids) == 12
    results = fitted.cv_results_
    for kid in kids:
        index = int(kid.data.tags["mltrail.sklearn.candidate"])
        assert kid.info.status == "FINISHED"
        assert kid.data.params["C"] == str(results["params"][index]["C"])
        assert kid.data.params["fit_intercept"] == str(results["params"][index]["fit_intercept"])
        scores = kid.data.metrics
        assert scores["mean_test_score"] == pytest.approx(results["mean_test_score"][index])
        assert scores["std_test_score"] == pytest.approx(results["std_test_score"][index])
        assert scores["rank_test_score"] == results["rank_test_score"][index]
        assert not any(key.startswith("split") for key in scores)
        assert kid.info.experiment_id == parent.info.experiment_id

    table = list(
        csv.DictReader(io.StringIO(artifact_text(client, model.run_id_, "cv_results.csv")))
    )
    assert len(table) == 12
    assert [float(row["mean_test_score"]) for row in table] == pytest.approx(
        list(results["mean_test_score"])
    )
    assert "model/MLmodel" in artifact_paths(client, model.run_id_)


def test_search_over_tracked_estimator_in_loky_workers(client, iris):
    X_train, X_val, y_train, y_val = iris
    tracked = TrackedEstimator(
        LogisticRegression(max_iter=300), experiment="grid-outside", max_child_runs=3
    )
    grid = {f"estimator__{name}": values for name, values in GRID.items()}
    search = GridSearchCV(tracked, grid, cv=3, n_jobs=2).fit(X_train, y_train)

    runs = runs_of(client, "grid-outside")
    run_id = search.best_estimator_.run_id_
    assert len(runs) == 4  # the refit of the best candidate plus the best 3 candidates
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["search.cv"] == "3"
    assert parent.data.params["best.estimator__C"] == str(search.best_params_["estimator__C"])
    assert parent.data.metrics["best_cv_score"] == pytest.approx(search.best_score_)
    assert parent.data.params["estimator__C"] == str(search.best_params_["estimator__C"])
    ranks = sorted(
        int(r.data.tags["mltrail.sklearn.rank"]) for r in children(client, "grid-outside", run_id)
    )
    assert ranks == sorted(sorted(search.cv_results_["rank_test_score"])[:3])

    # The search's own score goes through the refit estimator's score: logged there.
    search.score(X_val, y_val)
    assert "score_1" in client.get_run(run_id).data.metrics


def test_cross_validation_and_pipelines(client, iris):
    X_train, _, y_train, _ = iris
    options = {"experiment": "cv", "log_model": False, "log_plots": False}
    scores = cross_val_score(
        TrackedEstimator(LogisticRegression(max_iter=300), **options),
        X_train,
        y_train,
        cv=3,
        n_jobs=2,
    )
    assert len(scores) == 3
    assert runs_of(client, "cv") == []  # folds are not runs

    # Inside a Pipeline: the step's fit is the only fit, so it is a run.
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("clf", TrackedEstimator(LogisticRegression(max_iter=300), **options)),
        ]
    )
    pipe.fit(X_train, y_train)
    assert len(runs_of(client, "cv")) == 1
    assert pipe.named_steps["clf"].run_id_ == runs_of(client, "cv")[0].info.run_id

    # Around a Pipeline: every step's params, under estimator__.
    wrapped = TrackedEstimator(
        Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=3.0, max_iter=300))]),
        **options,
    ).fit(X_train, y_train)
    params = client.get_run(wrapped.run_id_).data.params
    assert params["estimator__clf__C"] == "3.0"
    assert params["estimator__scale__with_mean"] == "True"
    assert len(runs_of(client, "cv")) == 2


def test_nested_inner_fit_becomes_child_run(client, iris):
    X_train, _, y_train, _ = iris
    options = {"experiment": "nested", "log_model": False, "log_plots": False}
    inner = TrackedEstimator(LogisticRegression(C=2.0, max_iter=300), nested=True)
    outer = TrackedEstimator(Pipeline([("scale", StandardScaler()), ("clf", inner)]), **options)
    outer.fit(X_train, y_train)
    assert outer.estimator_.named_steps["clf"].run_id_ is None
    kids = children(client, "nested", outer.run_id_)
    assert len(kids) == 1
    assert kids[0].data.params["estimator__C"] == "2.0"
    assert "train/accuracy" in kids[0].data.metrics

    silent = TrackedEstimator(
        Pipeline([("clf", TrackedEstimator(LogisticRegression(max_iter=300)))]), **options
    )
    silent.fit(X_train, y_train)
    assert children(client, "nested", silent.run_id_) == []
    assert len(runs_of(client, "nested")) == 3


def test_clone_pickle_and_joblib_round_trip(tmp_path, iris):
    X_train, X_val, y_train, _ = iris
    model = TrackedEstimator(
        LogisticRegression(C=2.0, max_iter=300),
        experiment="copies",
        tags={"team": "a"},
        log_model=False,
    )
    copy = clone(model)
    assert copy.get_params()["estimator__C"] == 2.0 and copy.get_params()["tags"] == {"team": "a"}
    assert copy.estimator is not model.estimator and not hasattr(copy, "estimator_")
    copy.set_params(estimator__C=0.1)
    assert copy.estimator.C == 0.1 and model.estimator.C == 2.0

    model.fit(X_train, y_train)
    restored = pickle.loads(pickle.dumps(model))
    assert restored.run_id_ == model.run_id_
    assert np.array_equal(restored.predict(X_val), model.predict(X_val))
    joblib.dump(model, tmp_path / "model.joblib")
    again = joblib.load(tmp_path / "model.joblib")
    assert np.array_equal(again.predict_proba(X_val), model.predict_proba(X_val))

    with mltrail.start_run(experiment="copies", system_metrics=False) as trail:
        with_trail = TrackedEstimator(
            LogisticRegression(max_iter=300), trail=trail, log_model=False
        )
        assert clone(with_trail).trail is trail  # a live run is shared, never deep-copied
        assert pickle.loads(pickle.dumps(with_trail)).trail is None  # ... nor pickled


def test_user_trail_is_logged_into_and_left_open(client, iris):
    X_train, _, y_train, _ = iris
    with mltrail.start_run(experiment="own-trail", system_metrics=False) as trail:
        model = TrackedEstimator(LogisticRegression(max_iter=300), trail=trail, log_plots=False)
        model.fit(X_train, y_train)
        assert model.run_id_ == trail.run_id
        trail.flush()
        assert client.get_run(trail.run_id).info.status == "RUNNING"
        model.score(X_train, y_train)
    run = client.get_run(trail.run_id)
    assert run.info.status == "FINISHED"
    assert {"estimator__C", "data.train.digest"} <= set(run.data.params)
    assert {"train/accuracy", "score_1"} <= set(run.data.metrics)
    assert "model/MLmodel" in artifact_paths(client, trail.run_id)


class Exploding(ClassifierMixin, BaseEstimator):
    error = RuntimeError("boom in fit")

    def fit(self, X, y):
        raise self.error


def test_failing_fit_ends_failed_with_the_same_exception(client, iris):
    X_train, _, y_train, _ = iris
    model = TrackedEstimator(Exploding(), experiment="failing")
    with pytest.raises(RuntimeError) as raised:
        model.fit(X_train, y_train)
    assert raised.value is Exploding.error
    (run,) = runs_of(client, "failing")
    assert run.info.status == "FAILED"
    assert run.data.tags["mltrail.exception.type"] == "RuntimeError"
    assert run.data.params["data.train.shape"] == "120x4"  # what was known before the fit
    assert not hasattr(model, "estimator_")

    # A real scikit-learn error too: one class only.
    with pytest.raises(ValueError, match="class"):
        TrackedEstimator(LogisticRegression(), experiment="failing").fit(X_train, np.zeros(120))
    assert sorted(r.info.status for r in runs_of(client, "failing")) == ["FAILED", "FAILED"]


def test_other_searches_halving_and_randomized(client, iris):
    X_train, _, y_train, _ = iris
    halving = HalvingGridSearchCV(
        LogisticRegression(max_iter=300),
        {"C": [0.01, 0.1, 1.0, 10.0]},
        cv=3,
        factor=2,
        min_resources=30,
        random_state=0,
    )
    model = TrackedEstimator(halving, experiment="halving", log_model=False, log_plots=False).fit(
        X_train, y_train
    )
    kids = children(client, "halving", model.run_id_)
    rows = len(model.estimator_.cv_results_["params"])
    assert len(kids) == rows > 4  # one child per (candidate, round)
    assert {k.data.params["iter"] for k in kids} == {
        str(i) for i in set(model.estimator_.cv_results_["iter"])
    }
    assert (
        client.get_run(model.run_id_).data.tags["mltrail.sklearn.search"] == "HalvingGridSearchCV"
    )

    tracked = TrackedEstimator(
        LogisticRegression(max_iter=300), experiment="randomized", log_model=False
    )
    search = RandomizedSearchCV(
        tracked, {"estimator__C": [0.01, 0.1, 1.0, 10.0, 100.0]}, n_iter=4, cv=3, random_state=0
    ).fit(X_train, y_train)
    runs = runs_of(client, "randomized")
    assert len(runs) == 5
    assert len(children(client, "randomized", search.best_estimator_.run_id_)) == 4


def test_a_random_search_over_distributions_reads_the_same_in_every_process(client, iris):
    """SciPy distributions and a ``RandomState`` (scikit-learn's own random-search examples):
    the params say what was written, with no object address that would change the text, and
    the run's fingerprint, in every process."""
    from scipy.stats import loguniform, randint
    from sklearn.ensemble import RandomForestClassifier

    X_train, _, y_train, _ = iris
    forest = RandomForestClassifier(n_estimators=3, random_state=np.random.RandomState(0))
    search = RandomizedSearchCV(
        forest,
        {"max_depth": randint(1, 4), "min_impurity_decrease": loguniform(1e-4, 1e-1)},
        n_iter=2,
        cv=2,
        random_state=np.random.RandomState(0),
    )
    model = TrackedEstimator(search, experiment="distributions", log_model=False)
    model.fit(X_train, y_train)
    params = client.get_run(model.run_id_).data.params
    assert params["estimator__param_distributions.max_depth"] == "randint(1, 4)"
    distribution = params["estimator__param_distributions.min_impurity_decrease"]
    assert distribution == "loguniform(0.0001, 0.1)"
    assert params["estimator__random_state"] == "RandomState(MT19937)"
    # The wrapped search's repr holds the forest's, whose RandomState reprs with its address.
    assert "random_state=RandomState(MT19937))" in params["estimator"]
    assert not [k for k, v in params.items() if re.search(r" at 0x[0-9a-fA-F]+", v)], params


def test_autolog_records_top_level_fits_and_reverts(client, iris):
    X_train, _, y_train, _ = iris
    original = LogisticRegression.fit
    mltrail.autolog(
        frameworks=["sklearn"],
        experiment="autolog",
        log_model=False,
        log_plots=False,
        max_child_runs=2,
        silent=True,
    )
    try:
        assert LogisticRegression.fit is not original
        Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=300))]).fit(
            X_train, y_train
        )
        (run,) = runs_of(client, "autolog")  # one run for the pipeline, none for its steps
        assert run.data.params["clf__max_iter"] == "300"
        assert run.data.tags["mltrail.sklearn.estimator"] == "Pipeline"
        assert "train/accuracy" in run.data.metrics

        search = GridSearchCV(
            LogisticRegression(max_iter=300), {"C": [0.1, 1.0, 10.0]}, cv=3, n_jobs=2
        ).fit(X_train, y_train)
        runs = runs_of(client, "autolog")
        assert len(runs) == 1 + 1 + 2  # the pipeline, the search, its best two candidates
        (parent,) = [r for r in top_level(runs) if "mltrail.sklearn.search" in r.data.tags]
        assert parent.data.params["best.C"] == str(search.best_params_["C"])

        # A TrackedEstimator under autolog is still one run.
        TrackedEstimator(
            LogisticRegression(max_iter=300), experiment="autolog", log_model=False
        ).fit(X_train, y_train)
        assert len(runs_of(client, "autolog")) == 5
    finally:
        mltrail.autolog(frameworks=["sklearn"], disable=True, silent=True)
    assert LogisticRegression.fit is original
    LogisticRegression(max_iter=300).fit(X_train, y_train)
    assert len(runs_of(client, "autolog")) == 5


def test_trail_callback_records_fits_on_sklearn_1_9(client, iris):
    X_train, _, y_train, _ = iris
    callback = TrailCallback(experiment="callback", log_plots=False)
    estimator = LogisticRegression(C=0.3, max_iter=300).set_callbacks(callback)
    estimator.fit(X_train, y_train)
    (run,) = runs_of(client, "callback")
    assert run.info.status == "FINISHED"
    assert run.data.params["C"] == "0.3"
    assert run.data.metrics["train/accuracy"] == pytest.approx(estimator.score(X_train, y_train))
    assert "model/MLmodel" in artifact_paths(client, run.info.run_id)

    search = GridSearchCV(LogisticRegression(max_iter=300), {"C": [0.1, 1.0, 10.0]}, cv=3, n_jobs=2)
    search.set_callbacks(
        TrailCallback(experiment="callback", log_model=False, log_plots=False)
    ).fit(X_train, y_train)
    runs = runs_of(client, "callback")
    assert len(runs) == 1 + 1 + 3
    (parent,) = [r for r in top_level(runs) if "mltrail.sklearn.search" in r.data.tags]
    assert parent.data.metrics["best_cv_score"] == pytest.approx(search.best_score_)

    with pytest.raises(ValueError):
        LogisticRegression().set_callbacks(TrailCallback(experiment="callback-failing")).fit(
            X_train, np.zeros(120)
        )
    (failed,) = runs_of(client, "callback-failing")
    assert failed.info.status == "FAILED"
