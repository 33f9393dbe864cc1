"""Patterns of real scripts: only the trainings the user's code starts become runs, and "already
run" never claims that two trainings on different data were the same."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

import mltrail
from mltrail.autolog import patched_count

sklearn = pytest.importorskip("sklearn")
xgb = pytest.importorskip("xgboost")

from sklearn.calibration import CalibratedClassifierCV  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.inspection import permutation_importance  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import classification_report, f1_score, log_loss  # noqa: E402
from sklearn.model_selection import KFold, cross_validate, learning_curve  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

LIGHT = {"system_metrics": False, "log_model": False, "log_plots": False}


@pytest.fixture
def data():
    digits = load_digits()
    X, y = digits.data[:300] / 16.0, digits.target[:300]
    return X, (y % 2).astype(int)


@pytest.fixture
def autolog_off():
    yield
    mltrail.autolog(disable=True, silent=True)
    assert patched_count() == 0


def runs_of(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def test_library_calls_that_fit_helpers_are_not_runs(client, data, autolog_off) -> None:
    X, y = data
    mltrail.autolog(frameworks=["sklearn", "xgboost"], experiment="helpers", **LIGHT)
    truth, guess = y[:50], np.roll(y[:50], 1)
    # Metrics fit a LabelEncoder or LabelBinarizer inside: nothing the user trained.
    classification_report(truth, guess)
    f1_score(truth, guess, average="macro")
    log_loss(truth, np.clip(guess.astype(float), 0.05, 0.95))
    assert runs_of(client, "helpers") == []
    # Library functions that fit clones of the user's estimator: not runs of their own either.
    cross_validate(LogisticRegression(max_iter=200), X, y, cv=3)
    learning_curve(LogisticRegression(max_iter=200), X, y, cv=3, train_sizes=[0.5, 1.0])
    assert runs_of(client, "helpers") == []
    # The user's own fits are runs, one each, whatever fits they make inside.
    model = LogisticRegression(max_iter=200).fit(X, y)
    permutation_importance(model, X, y, n_repeats=2, random_state=0)  # predicts, fits nothing
    CalibratedClassifierCV(LogisticRegression(max_iter=200), cv=3).fit(X, y)
    make_pipeline(StandardScaler(), xgb.XGBClassifier(n_estimators=3, max_depth=2)).fit(X, y)
    runs = runs_of(client, "helpers")
    classes = sorted(r.data.tags["mltrail.sklearn.estimator"] for r in runs)
    assert classes == ["CalibratedClassifierCV", "LogisticRegression", "Pipeline"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_folds_and_halves_on_different_data_are_not_already_run(
    client, data, caplog, git_repo, monkeypatch
) -> None:
    """The same code and params on other data is another experiment: the training data's
    digest is part of the fingerprint, and already_run="error" lets every fold train."""
    from mltrail.integrations.xgboost import TrailCallback

    monkeypatch.chdir(git_repo)  # a fingerprint needs the code's commit
    X, y = data
    caplog.set_level(logging.WARNING, logger="mltrail.already_run")
    options = {"experiment": "folds", "already_run": "error", "system_metrics": False}
    for train, _ in KFold(3).split(X):
        model = xgb.XGBClassifier(n_estimators=3, callbacks=[TrailCallback(**options)])
        model.fit(X[train], y[train])  # would raise MltrailError if called "already run"
    half = len(X) // 2
    for part in (slice(None, half), slice(half, None)):
        xgb.train({"max_depth": 2}, xgb.DMatrix(X[part], label=y[part]), 3,
                  callbacks=[TrailCallback(**options)])  # fmt: skip
    runs = runs_of(client, "folds")
    assert len(runs) == 5 and all(r.info.status == "FINISHED" for r in runs)
    digests = {r.data.params["data.train.digest"] for r in runs}
    assert len(digests) == 5 and "unknown" not in digests
    assert len({r.data.tags["mltrail.fingerprint"] for r in runs}) == 5
    # The same data again is a repeat, said to be one with the data identified.
    with pytest.raises(mltrail.MltrailError, match="the same code, data and params"):
        xgb.train({"max_depth": 2}, xgb.DMatrix(X[:half], label=y[:half]), 3,
                  callbacks=[TrailCallback(**options)])  # fmt: skip


def test_custom_objective_and_continued_booster_are_params(client, data) -> None:
    from mltrail.integrations.xgboost import TrailCallback

    X, y = data
    dtrain = xgb.DMatrix(X, label=y)

    def logregobj(predt, dmatrix):
        labels = dmatrix.get_label()
        prob = 1.0 / (1.0 + np.exp(-predt))
        return prob - labels, prob * (1.0 - prob)

    first = TrailCallback(experiment="custom", system_metrics=False)
    booster = xgb.train({"max_depth": 2}, dtrain, 3, obj=logregobj, callbacks=[first])
    second = TrailCallback(experiment="custom", system_metrics=False)
    xgb.train({"max_depth": 2}, dtrain, 2, xgb_model=booster, callbacks=[second])
    params = client.get_run(first.run_id).data.params
    assert params["objective"].startswith("custom:") and "logregobj" in params["objective"]
    continued = client.get_run(second.run_id).data.params
    assert continued["xgb_model"].startswith("booster:")
    assert "xgb_model" not in params
    # The same DMatrix is the same data (its values are read once); new labels make it other data.
    assert continued["data.train.digest"] == params["data.train.digest"] != "unknown"
    dtrain.set_label(1 - y)
    third = TrailCallback(experiment="custom", system_metrics=False)
    xgb.train({"max_depth": 2}, dtrain, 2, callbacks=[third])
    relabelled = client.get_run(third.run_id).data.params["data.train.digest"]
    assert relabelled not in ("unknown", params["data.train.digest"])


def test_unidentified_data_is_said_so(client, caplog, git_repo, monkeypatch) -> None:
    monkeypatch.chdir(git_repo)
    caplog.set_level(logging.WARNING, logger="mltrail.already_run")
    for _ in range(2):
        with mltrail.start_run(experiment="unidentified", system_metrics=False) as trail:
            trail.log_params({"lr": 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        messages = [r.getMessage() for r in caplog.records if r.name == "mltrail.already_run"]
    assert len(messages) == 1
    assert "the same code and params (the training data was not identified" in messages[0]


def test_keras_evaluate_after_an_autologged_fit_and_data_digests(client, autolog_off) -> None:
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)).astype("float32")
    y = (X[:, 0] > 0).astype("float32")
    mltrail.autolog(frameworks=["keras"], experiment="keras-real", log_model=False,
                    checkpoints="none", system_metrics=False)  # fmt: skip
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(X[:32], y[:32], epochs=2, verbose=0)
    model.evaluate(X[32:], y[32:], verbose=0)  # into the fit's run, as with the callback
    model.fit(X[32:], y[32:], epochs=2, verbose=0)  # other data: another run, another digest
    first, second = sorted(runs_of(client, "keras-real"), key=lambda r: r.info.start_time)
    assert "test_loss" in first.data.metrics and "test_accuracy" in first.data.metrics
    assert "test_loss" not in second.data.metrics
    assert first.info.status == second.info.status == "FINISHED"
    digests = {r.data.params["data.train.digest"] for r in (first, second)}
    assert len(digests) == 2 and "unknown" not in digests
