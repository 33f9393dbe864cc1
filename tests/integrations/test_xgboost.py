"""The XGBoost adapter on tiny data against a real sqlite MLflow store: what a user sees in MLflow."""

from __future__ import annotations

import copy
import importlib
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

import mltrail
from mltrail import MltrailError
from mltrail.integrations.xgboost import TrailCallback

LIGHT = {"log_model": False, "importance": False}  # for tests about something else
PARAMS = {"objective": "binary:logistic", "max_depth": 2, "learning_rate": 0.3, "seed": 7}


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def steps(client, run_id: str, key: str) -> list[int]:
    return [step for step, _ in history(client, run_id, key)]


def artifact_paths(client, run_id: str, folder: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, folder)}


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 4))
    y = (x[:, 0] + 0.8 * x[:, 1] + rng.normal(scale=0.8, size=240) > 0).astype(int)
    return {"x": x[:160], "y": y[:160], "xv": x[160:], "yv": y[160:]}


@pytest.fixture
def dtrain(data) -> xgb.DMatrix:
    return xgb.DMatrix(data["x"], label=data["y"])


@pytest.fixture
def dval(data) -> xgb.DMatrix:
    return xgb.DMatrix(data["xv"], label=data["yv"])


def test_train_records_params_metrics_model_and_importance(client, data, dtrain, dval) -> None:
    callback = TrailCallback(experiment="xgb", registered_model_name="xgb-tiny")
    evals_result: dict = {}
    booster = xgb.train(
        {**PARAMS, "eval_metric": ["logloss", "error"]},
        dtrain,
        12,
        evals=[(dtrain, "train"), (dval, "val")],
        evals_result=evals_result,
        verbose_eval=False,
        callbacks=[callback],
    )
    assert booster.num_boosted_rounds() == 12  # the callback never stopped training
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    # As written by the user, and the booster's effective configuration under its own names.
    assert params["learning_rate"] == "0.3"
    assert params["eta"] == "0.3"
    assert params["max_depth"] == "2"
    assert params["objective"] == "binary:logistic"
    assert params["eval_metric"] == "['logloss', 'error']"
    assert params["tree_method"] == "auto"
    assert params["subsample"] == "1"
    assert params["num_boost_round"] == "12"
    assert params["early_stopping_rounds"] == "None"
    assert "num_trees" not in params and "base_score" not in params  # bookkeeping, not settings
    assert run.data.tags["mltrail.xgboost.api"] == "train"
    assert run.data.tags["mltrail.framework"] == "xgboost"

    assert history(client, run.info.run_id, "val-logloss") == list(
        enumerate(evals_result["val"]["logloss"])
    )
    assert steps(client, run.info.run_id, "train-error") == list(range(12))
    assert not any(key.startswith("early_stopping") for key in run.data.metrics)
    assert not any(key.startswith("early_stopping.") for key in params)

    root = artifact_paths(client, run.info.run_id)
    assert {"model", "xgboost"} <= root
    assert "checkpoints" not in root  # off by default
    local = Path(client.download_artifacts(run.info.run_id, "model"))
    reloaded = xgb.Booster()
    reloaded.load_model(str(local / "model.ubj"))
    np.testing.assert_allclose(reloaded.predict(dval), booster.predict(dval))
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert pyfunc.metadata.get_input_schema() is not None
    assert (local / "input_example.json").exists()
    np.testing.assert_allclose(pyfunc.predict(data["xv"]), booster.predict(dval), rtol=1e-6)
    requirements = (local / "requirements.txt").read_text()
    assert f"xgboost=={xgb.__version__}" in requirements

    versions = client.search_model_versions("name='xgb-tiny'")
    assert [v.run_id for v in versions] == [run.info.run_id]

    importance = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "xgboost/feature_importance.json")
        ).read_text()
    )
    assert importance["gain"] == pytest.approx(booster.get_score(importance_type="gain"))
    assert importance["weight"] == booster.get_score(importance_type="weight")
    assert set(importance) == {"gain", "weight", "cover"}
    png = Path(client.download_artifacts(run.info.run_id, "xgboost/feature_importance.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads(
        Path(client.download_artifacts(run.info.run_id, "xgboost/config.json")).read_text()
    )
    assert config["learner"]["gradient_booster"]["tree_train_param"]["max_depth"] == "2"


def test_early_stopping_and_readable_metric_names(client, dtrain, dval) -> None:
    callback = TrailCallback(experiment="xgb", **LIGHT)
    booster = xgb.train(
        {**PARAMS, "max_depth": 4, "learning_rate": 1.0, "eval_metric": ["error@0.7", "logloss"]},
        dtrain,
        30,
        evals=[(dval, "val")],
        early_stopping_rounds=3,
        verbose_eval=False,
        callbacks=[callback],
    )
    rounds = booster.num_boosted_rounds()
    assert rounds < 30  # it did stop early
    run = client.get_run(callback.run_id)
    params, metrics = run.data.params, run.data.metrics
    assert params["early_stopping_rounds"] == "3"
    # The one set of early-stopping names every adapter uses; the monitor as XGBoost picked it.
    assert params["early_stopping.patience"] == "3"
    assert params["early_stopping.monitor"] == "val-logloss"  # the last metric of the last set
    assert params["early_stopping.mode"] == "auto"
    assert metrics["early_stopping.best_epoch"] == booster.best_iteration
    assert metrics["early_stopping.best_score"] == pytest.approx(booster.best_score)
    assert metrics["early_stopping.stopped_epoch"] == rounds - 1
    assert metrics["early_stopping.wait_count"] == 3
    assert metrics["early_stopping.restored_best_weights"] == 0
    assert [s for s, _ in history(client, run.info.run_id, "early_stopping.best_epoch")] == [
        rounds - 1
    ]
    assert steps(client, run.info.run_id, "val-logloss") == list(range(rounds))
    assert steps(client, run.info.run_id, "val-error_at_0.7") == list(range(rounds))

    # EarlyStopping(save_best=True) trims the booster after the callbacks' after_training:
    # the logged model is the trimmed one that train() returns.
    callback = TrailCallback(experiment="xgb", importance=False)
    stopper = xgb.callback.EarlyStopping(rounds=3, save_best=True)
    best = xgb.train(
        {**PARAMS, "max_depth": 4, "learning_rate": 1.0},
        dtrain,
        30,
        evals=[(dval, "val")],
        verbose_eval=False,
        callbacks=[callback, stopper],
    )
    logged = steps(client, callback.run_id, "val-logloss")
    assert best.num_boosted_rounds() == best.best_iteration + 1 < len(logged)
    metrics = client.get_run(callback.run_id).data.metrics
    assert metrics["early_stopping.restored_best_weights"] == 1
    assert metrics["early_stopping.best_epoch"] == best.best_iteration
    model = xgb.Booster()
    model.load_model(client.download_artifacts(callback.run_id, "model/model.ubj"))
    assert model.num_boosted_rounds() == best.num_boosted_rounds()


def test_cv_logs_mean_and_std_per_round_in_one_run(client, dtrain) -> None:
    callback = TrailCallback(experiment="xgb-cv")
    results = xgb.cv(
        {**PARAMS, "eval_metric": "logloss"},
        dtrain,
        10,
        nfold=3,
        seed=3,
        callbacks=[callback],
    )
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.xgboost.api"] == "cv"
    for column in ("test-logloss-mean", "test-logloss-std", "train-logloss-mean"):
        logged = history(client, run.info.run_id, column)
        assert [s for s, _ in logged] == list(range(10))
        assert [v for _, v in logged] == pytest.approx(results[column].tolist())
    assert run.data.params["cv.nfold"] == "3"
    assert run.data.params["cv.seed"] == "3"
    assert run.data.params["num_boost_round"] == "10"
    assert run.data.params["max_depth"] == "2"
    assert "model" not in artifact_paths(client, run.info.run_id)  # cv has no final model
    runs = mlflow.search_runs(experiment_names=["xgb-cv"], output_format="list")
    assert [r.info.run_id for r in runs] == [run.info.run_id]  # one run for all folds


def test_continued_training_continues_the_steps(client, dtrain, dval) -> None:
    first = TrailCallback(experiment="xgb", **LIGHT)
    booster = xgb.train(
        PARAMS, dtrain, 5, evals=[(dval, "val")], verbose_eval=False, callbacks=[first]
    )
    second = TrailCallback(experiment="xgb", **LIGHT)
    booster = xgb.train(
        PARAMS,
        dtrain,
        4,
        evals=[(dval, "val")],
        verbose_eval=False,
        xgb_model=booster,
        callbacks=[second],
    )
    assert booster.num_boosted_rounds() == 9
    assert steps(client, first.run_id, "val-logloss") == [0, 1, 2, 3, 4]
    assert steps(client, second.run_id, "val-logloss") == [5, 6, 7, 8]
    assert client.get_run(second.run_id).data.tags["mltrail.xgboost.initial_rounds"] == "5"

    # Into one run given with trail=: the same callback may continue the booster...
    with mltrail.start_run(experiment="xgb") as trail:
        callback = TrailCallback(trail, **LIGHT)
        booster = xgb.train(
            PARAMS, dtrain, 3, evals=[(dval, "val")], verbose_eval=False, callbacks=[callback]
        )
        booster = xgb.train(
            PARAMS,
            dtrain,
            3,
            evals=[(dval, "val")],
            verbose_eval=False,
            xgb_model=booster,
            callbacks=[callback],
        )
        # ...but a fresh training would write steps 0.. again: refused before the first round.
        with pytest.raises(MltrailError, match=r"xgb_model=") as refused:
            xgb.train(PARAMS, dtrain, 3, verbose_eval=False, callbacks=[TrailCallback(trail)])
        assert "step 5" in str(refused.value)
    assert steps(client, trail.run_id, "val-logloss") == list(range(6))
    assert client.get_run(trail.run_id).info.status == "FINISHED"  # ended by its owner


def test_a_training_starts_without_waiting_for_its_run(client, dtrain, dval, monkeypatch):
    """A loop of short trainings waited once per training for the store to create its run. The
    run now opens on mltrail's thread: here the store cannot create it until the training has
    returned, and the run still holds every round, at the training's own times."""
    import threading
    import time

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    monkeypatch.setenv("MLTRAIL_END_IN_BACKGROUND", "true")  # as scripts run (see conftest)
    returned, created = threading.Event(), []
    create_run = SqlAlchemyStore.create_run

    def create_after_the_training(self, *args, **kwargs):
        returned.wait(10)  # a training that waited for its run would wait this long
        created.append(int(time.time() * 1000))
        return create_run(self, *args, **kwargs)

    monkeypatch.setattr(SqlAlchemyStore, "create_run", create_after_the_training)
    callback = TrailCallback(experiment="xgb-beside", **LIGHT)
    began = int(time.time() * 1000)
    booster = xgb.train(
        PARAMS, dtrain, 6, evals=[(dval, "val")], verbose_eval=False, callbacks=[callback]
    )
    ended = int(time.time() * 1000)
    returned.set()
    assert booster.num_boosted_rounds() == 6
    assert mltrail.wait(60)
    assert created[0] >= ended  # the run was created once the training had returned
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    assert steps(client, run.info.run_id, "val-logloss") == list(range(6))
    assert run.data.params["max_depth"] == "2"
    # The training's times, not those of the run's late creation and close.
    assert began <= run.info.start_time <= run.info.end_time <= ended
    stamps = [m.timestamp for m in client.get_metric_history(run.info.run_id, "val-logloss")]
    assert all(run.info.start_time <= t <= run.info.end_time for t in stamps)


def test_checkpoints_every_n_rounds(client, dtrain, dval) -> None:
    callback = TrailCallback(experiment="xgb", checkpoint_every=4, **LIGHT)
    xgb.train(PARAMS, dtrain, 10, evals=[(dval, "val")], verbose_eval=False, callbacks=[callback])
    run_id = callback.run_id
    names = artifact_paths(client, run_id, "checkpoints")
    assert names == {
        "checkpoints/xgboost-000003.ubj",
        "checkpoints/xgboost-000007.ubj",
        "checkpoints/index.json",
    }
    index = json.loads(
        Path(client.download_artifacts(run_id, "checkpoints/index.json")).read_text()
    )
    assert index["files"]["checkpoints/xgboost-000007.ubj"]["step"] == 7
    assert "val-logloss" in index["files"]["checkpoints/xgboost-000007.ubj"]["metrics"]
    assert index["aliases"]["latest"] == "checkpoints/xgboost-000007.ubj"
    losses = {n: e["metrics"]["val-logloss"] for n, e in index["files"].items()}
    assert index["aliases"]["best"] == min(losses, key=losses.get)  # logloss: lower is better
    restored = xgb.Booster()
    restored.load_model(client.download_artifacts(run_id, "checkpoints/xgboost-000003.ubj"))
    assert restored.num_boosted_rounds() == 4
    assert not any("importance" in p for p in artifact_paths(client, run_id, "xgboost"))


def test_sklearn_api_logs_estimator_params_and_fitted_estimator(client, data) -> None:
    columns = ["age", "income", "score", "noise"]
    x = pd.DataFrame(data["x"], columns=columns)
    xv = pd.DataFrame(data["xv"], columns=columns)
    callback = TrailCallback(experiment="xgb-sklearn")
    model = xgb.XGBClassifier(n_estimators=8, max_depth=2, learning_rate=0.5, callbacks=[callback])
    model.fit(x, data["y"], eval_set=[(xv, data["yv"])], verbose=False)
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.xgboost.api"] == "sklearn"
    params = run.data.params
    expected = {k: v for k, v in model.get_params().items() if k != "callbacks"}
    for key in ("n_estimators", "max_depth", "learning_rate", "subsample", "missing"):
        assert params[key] == str(expected[key])
    assert params["n_estimators"] == "8"
    assert params["subsample"] == "None"  # the estimator's own value...
    assert params["colsample_bytree"] == "None"
    assert params["eta"] == "0.5"  # ...and what the booster actually used
    assert params["num_boost_round"] == "8"
    assert "callbacks" not in params
    assert steps(client, run.info.run_id, "validation_0-logloss") == list(range(8))

    loaded = mlflow.xgboost.load_model(f"runs:/{run.info.run_id}/model")
    assert isinstance(loaded, xgb.XGBClassifier)
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert [c["name"] for c in pyfunc.metadata.get_input_schema().to_dict()] == columns
    assert pyfunc.predict(xv).tolist() == model.predict(xv).tolist()
    importance = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "xgboost/feature_importance.json")
        ).read_text()
    )
    assert set(importance["gain"]) <= set(columns)

    # sklearn's clone deep-copies the callback: each fit of a clone is its own run.
    from sklearn.base import clone

    twin = clone(model).fit(x, data["y"], eval_set=[(xv, data["yv"])], verbose=False)
    assert twin.callbacks[0] is not callback
    assert twin.callbacks[0].run_id not in (None, callback.run_id)
    assert client.get_run(twin.callbacks[0].run_id).info.status == "FINISHED"


def test_a_model_of_categorical_columns_loads_and_predicts_through_the_pyfunc(client) -> None:
    """MLflow's schemas have no categorical type: a signature inferred from a DataFrame with a
    ``category`` column says "string", and the pyfunc then refuses the very DataFrames the
    model was trained on. Such a model goes without a signature, and the run says why."""
    rng = np.random.default_rng(0)
    colors = pd.Categorical(rng.choice(["red", "green", "blue"], 200))
    x = pd.DataFrame({"size": rng.normal(size=200), "color": colors})
    y = ((x["size"] > 0) ^ (x["color"] == "red")).astype(int)
    callback = TrailCallback(experiment="xgb-sklearn", importance=False)
    model = xgb.XGBClassifier(
        n_estimators=5, enable_categorical=True, tree_method="hist", callbacks=[callback]
    )
    model.fit(x, y, verbose=False)
    run = client.get_run(callback.run_id)
    assert run.data.tags["mltrail.model.no_signature"] == "categorical columns: color"
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert pyfunc.metadata.get_input_schema() is None
    assert pyfunc.predict(x.head(20)).tolist() == model.predict(x.head(20)).tolist()


def test_an_error_inside_the_adapter_is_counted_into_its_run(client, dtrain, monkeypatch) -> None:
    monkeypatch.setenv("MLTRAIL_STRICT", "0")  # as for users: counted and warned, not raised

    def broken_plot(*args, **kwargs):
        raise RuntimeError("plotting broke")

    monkeypatch.setattr("mltrail.integrations.xgboost.importance_plot", broken_plot)
    callback = TrailCallback(experiment="xgb", log_model=False)
    with pytest.warns(mltrail.MltrailWarning, match="plotting feature importance"):
        booster = xgb.train(PARAMS, dtrain, 3, callbacks=[callback])
    assert booster.num_boosted_rounds() == 3
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.errors"] == "1"
    assert artifact_paths(client, run.info.run_id, "xgboost") == {
        "xgboost/config.json",
        "xgboost/feature_importance.json",
    }


def test_a_reused_callback_starts_a_new_run(client, dtrain) -> None:
    callback = TrailCallback(experiment="xgb", **LIGHT)
    xgb.train(PARAMS, dtrain, 3, callbacks=[callback])
    first = callback.run_id
    xgb.train(PARAMS, dtrain, 3, callbacks=[callback])
    assert callback.run_id != first
    assert client.get_run(first).info.status == "FINISHED"
    assert client.get_run(callback.run_id).info.status == "FINISHED"


def test_the_device_it_ran_on_is_recorded_next_to_the_one_asked_for(client, dtrain) -> None:
    callback = TrailCallback(experiment="xgb", **LIGHT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # XGBoost's own note when it falls back to the CPU
        booster = xgb.train({**PARAMS, "device": "cuda"}, dtrain, 2, callbacks=[callback])
    ran_on = json.loads(booster.save_config())["learner"]["generic_param"]["device"]
    params = client.get_run(callback.run_id).data.params
    assert params["device"] == "cuda"
    assert params["device_used"] == ran_on  # "cpu" without a GPU, "cuda:0" with one


def test_the_framework_s_warnings_are_shown_at_its_own_lines(client, dtrain) -> None:
    callback = TrailCallback(experiment="xgb", **LIGHT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xgb.train({**PARAMS, "not_a_param": 1}, dtrain, 2, callbacks=[callback])
    unused = [w for w in caught if "not_a_param" in str(w.message)]
    assert unused, [str(w.message) for w in caught]
    # XGBoost warns when the adapter first reads the booster: shown at XGBoost's call of the
    # hook, not at the adapter's line.
    assert {Path(w.filename).parent.name for w in unused} == {"xgboost"}, unused[0].filename


class Boom(xgb.callback.TrainingCallback):
    def __init__(self, error: BaseException, at: int) -> None:
        super().__init__()
        self.error, self.at = error, at

    def after_iteration(self, model, epoch, evals_log) -> bool:
        if epoch == self.at:
            raise self.error
        return False


def test_a_failing_user_callback_ends_the_run_failed(client, dtrain, dval) -> None:
    callback = TrailCallback(experiment="xgb")
    error = ValueError("user callback broke")
    with pytest.raises(ValueError) as raised:
        xgb.train(
            PARAMS,
            dtrain,
            10,
            evals=[(dval, "val")],
            verbose_eval=False,
            callbacks=[callback, Boom(error, at=3)],
        )
    assert raised.value is error  # unchanged
    run = client.get_run(callback.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mltrail.exception.type"] == "ValueError"
    assert steps(client, run.info.run_id, "val-logloss") == [0, 1, 2, 3]
    assert "model" not in artifact_paths(client, run.info.run_id)


def test_keyboard_interrupt_ends_the_run_killed(client, dtrain) -> None:
    callback = TrailCallback(experiment="xgb", **LIGHT)
    with pytest.raises(KeyboardInterrupt):
        xgb.train(PARAMS, dtrain, 10, callbacks=[Boom(KeyboardInterrupt(), at=1), callback])
    assert client.get_run(callback.run_id).info.status == "KILLED"


def test_a_failing_objective_caught_by_the_user_ends_the_run_failed(client, dtrain) -> None:
    def objective(predt, dmatrix):
        if objective.calls == 2:
            raise RuntimeError("objective broke")
        objective.calls += 1
        labels = dmatrix.get_label()
        probability = 1 / (1 + np.exp(-predt))
        return probability - labels, probability * (1 - probability)

    objective.calls = 0
    callback = TrailCallback(experiment="xgb", **LIGHT)
    try:
        xgb.train({"max_depth": 2}, dtrain, 10, obj=objective, callbacks=[callback])
    except RuntimeError:
        pass  # the user swallows it: no hook of XGBoost's, no excepthook sees it
    run = client.get_run(callback.run_id)
    assert run.info.status == "FAILED"
    assert "round 2" in run.data.tags["mltrail.exception.message"]


SCRIPT_KEEPING_THE_ERROR = """
import numpy as np, xgboost as xgb
from mltrail.integrations.xgboost import TrailCallback

def objective(predt, dmatrix):
    raise RuntimeError("objective broke")

callback = TrailCallback(experiment="xgb-exit", log_model=False, importance=False)
try:
    xgb.train({}, xgb.DMatrix(np.ones((8, 2)), label=np.ones(8)), 5, obj=objective,
              callbacks=[callback])
except RuntimeError as error:
    kept = error  # its traceback keeps XGBoost's per-call state alive until exit
print(callback.run_id)
"""


def test_a_run_whose_training_never_ended_is_failed_at_exit(client, module_store) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": module_store, "MLTRAIL_STRICT": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT_KEEPING_THE_ERROR],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run = client.get_run(done.stdout.split()[-1])
    assert run.info.status == "FAILED"  # not FINISHED by the process's normal exit
    assert run.data.tags["mltrail.exception.type"] == "unknown"


def test_autolog_adds_one_callback_and_reverts(client, data, dtrain, dval) -> None:
    def latest_run() -> str:
        return os.environ["MLTRAIL_RUN_ID"]  # set by every run start

    def objective(predt, dmatrix):
        raise RuntimeError("objective broke")

    original_train, original_fit = xgb.train, xgb.XGBClassifier.fit
    mltrail.autolog(frameworks=["xgboost"], experiment="xgb-auto", importance=False)
    try:
        assert xgb.train is not original_train
        booster = xgb.train(PARAMS, dtrain, 4, evals=[(dval, "val")], verbose_eval=False)
        trained = latest_run()
        model = xgb.XGBClassifier(n_estimators=3, max_depth=2)
        model.fit(data["x"], data["y"], eval_set=[(data["xv"], data["yv"])], verbose=False)
        fitted = latest_run()
        assert model.callbacks is None  # the estimator is left as it was
        explicit = TrailCallback(experiment="xgb-auto", log_model=False)
        xgb.train(PARAMS, dtrain, 2, callbacks=[explicit])  # has one: nothing added
        assert latest_run() == explicit.run_id
        with pytest.raises(RuntimeError, match="objective broke"):
            xgb.train({"max_depth": 2}, dtrain, 3, obj=objective)
        failed = latest_run()
    finally:
        mltrail.autolog(frameworks=["xgboost"], disable=True)
    assert xgb.train is original_train and xgb.XGBClassifier.fit is original_fit

    assert steps(client, trained, "val-logloss") == [0, 1, 2, 3]
    assert booster.num_boosted_rounds() == 4
    assert client.get_run(trained).data.tags["mltrail.xgboost.api"] == "train"
    fit_run = client.get_run(fitted)
    assert fit_run.data.tags["mltrail.xgboost.api"] == "sklearn"  # recorded once, as a fit
    assert fit_run.data.params["n_estimators"] == "3"
    assert steps(client, fitted, "validation_0-logloss") == [0, 1, 2]
    failed_run = client.get_run(failed)
    assert failed_run.info.status == "FAILED"
    assert failed_run.data.tags["mltrail.exception.type"] == "RuntimeError"
    runs = mlflow.search_runs(experiment_names=["xgb-auto"], output_format="list")
    assert len(runs) == 4
    xgb.train(PARAMS, dtrain, 2)  # disabled: no new run
    assert len(mlflow.search_runs(experiment_names=["xgb-auto"], output_format="list")) == 4


def test_bad_arguments_and_copies() -> None:
    with pytest.raises(MltrailError, match="either trail="):
        TrailCallback(mltrail.Trail(), experiment="x")
    with pytest.raises(MltrailError, match="checkpoint_every"):
        TrailCallback(checkpoint_every=0)
    with pytest.raises(MltrailError, match="flush_timeout"):
        TrailCallback(flush_timout=3)
    callback = TrailCallback(experiment="e", checkpoint_every=5, importance=False)
    for twin in (copy.deepcopy(callback), pickle.loads(pickle.dumps(callback))):
        assert isinstance(twin, TrailCallback) and twin is not callback
        assert (twin.checkpoint_every, twin.importance, twin.run_id) == (5, False, None)


def test_import_without_xgboost_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "xgboost", None)
    monkeypatch.delitem(sys.modules, "mltrail.integrations.xgboost")
    with pytest.raises(ImportError, match=r'pip install "mltrail\[xgboost\]"'):
        importlib.import_module("mltrail.integrations.xgboost")


def test_continued_training_into_run_id_from_an_older_booster_forks(client, dtrain, dval) -> None:
    first = TrailCallback(experiment="xgb-fork", **LIGHT)
    booster = xgb.train(
        PARAMS, dtrain, 5, evals=[(dval, "val")], verbose_eval=False, callbacks=[first]
    )
    # The booster after round 2 (3 rounds), trained on into the first run: a fork at step 2.
    again = TrailCallback(run_id=first.run_id, **LIGHT)
    xgb.train(
        PARAMS,
        dtrain,
        3,
        evals=[(dval, "val")],
        verbose_eval=False,
        xgb_model=booster[:3],
        callbacks=[again],
    )
    assert again.run_id != first.run_id
    tags = client.get_run(again.run_id).data.tags
    assert (tags["mltrail.forked_from"], tags["mltrail.forked_at_step"]) == (first.run_id, "2")
    assert steps(client, again.run_id, "val-logloss") == [0, 1, 2, 3, 4, 5]
    assert (
        history(client, again.run_id, "val-logloss")[:3]
        == history(client, first.run_id, "val-logloss")[:3]
    )
    assert steps(client, first.run_id, "val-logloss") == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kind", ["booster", "estimator"])
def test_a_model_sent_as_its_file_is_saved_as_the_flavor_saves_it(data, dtrain, tmp_path, kind):
    """mltrail's recorder gets XGBoost models as the file the training's process wrote
    (it never imports XGBoost for them) and writes the MLflow Model folder itself: the folder
    is the flavor's own, file for file, and loads as the same model."""
    import yaml
    from mlflow.models import infer_signature

    from mltrail.recording.model_file import ModelFile, for_recorder

    if kind == "booster":
        model = xgb.train(PARAMS, dtrain, 4)
        predicted = model.predict(xgb.DMatrix(data["xv"]))
    else:
        model = xgb.XGBClassifier(n_estimators=4, max_depth=2).fit(data["x"], data["y"])
        predicted = model.predict(data["xv"])
    example = data["x"][:5]
    signature = infer_signature(example, predicted[:5])
    requirements = [f"xgboost=={xgb.__version__}"]
    sent = pickle.loads(pickle.dumps(for_recorder(model, "xgboost")))  # as the recorder gets it
    assert isinstance(sent, ModelFile)
    ours, flavors = tmp_path / "ours", tmp_path / "flavor"
    ours.mkdir()
    kwargs = {"input_example": example, "pip_requirements": requirements, "model_format": "ubj"}
    assert sent.save(ours, signature, kwargs)
    again = tmp_path / "again"  # the environment files come from the cache this time
    again.mkdir()
    assert sent.save(again, signature, kwargs)
    mlflow.xgboost.save_model(model, str(flavors), signature=signature, **kwargs)

    for folder in (ours, again):
        assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in flavors.iterdir())
        for name in ("model.ubj", "requirements.txt", "conda.yaml", "python_env.yaml"):
            assert (folder / name).read_bytes() == (flavors / name).read_bytes(), name
    mine, theirs = (yaml.safe_load((f / "MLmodel").read_text()) for f in (ours, flavors))
    for varying in ("model_uuid", "utc_time_created"):
        mine.pop(varying), theirs.pop(varying)
    assert mine == theirs
    loaded = mlflow.xgboost.load_model(str(ours))
    assert type(loaded) is type(model)
    assert np.allclose(mlflow.pyfunc.load_model(str(ours)).predict(data["xv"]), predicted)
    assert type(sent.rebuilt()) is type(model)


def test_a_model_file_with_arguments_only_the_flavor_knows_is_saved_by_it(client, data, dtrain):
    """Arguments that ModelFile does not write (``metadata``) send the model back to the
    flavor: rebuilt from its file, saved by ``mlflow.xgboost``, nothing lost."""
    from mltrail.recording.model_file import for_recorder

    booster = xgb.train(PARAMS, dtrain, 3)
    with mltrail.start_run(experiment="xgb", capture=False, system_metrics=False) as trail:
        trail.log_model(
            for_recorder(booster, "xgboost"),
            "xgboost",
            signature_from=data["x"][:5],
            pip_requirements=[f"xgboost=={xgb.__version__}"],
            metadata={"origin": "model file"},
        )
    uri = f"runs:/{trail.run_id}/model"
    assert mlflow.models.get_model_info(uri).metadata == {"origin": "model file"}
    expected = booster.predict(xgb.DMatrix(data["xv"]))
    assert np.allclose(mlflow.pyfunc.load_model(uri).predict(data["xv"]), expected)
