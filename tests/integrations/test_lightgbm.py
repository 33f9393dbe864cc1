"""The LightGBM adapter on tiny data against a real sqlite MLflow store: what a user sees in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

lgb = pytest.importorskip("lightgbm")

import mltrail  # noqa: E402
from mltrail import MltrailError  # noqa: E402
from mltrail.integrations.lightgbm import TrailCallback  # noqa: E402

PARAMS = {"objective": "binary", "learning_rate": 0.3, "num_leaves": 4, "verbose": -1, "seed": 7}
LIGHT = {"log_model": False, "importance": False}  # for tests about something else


def settled() -> None:
    """Wait for runs ended in the background, where mltrail ends them so."""
    wait = getattr(mltrail, "wait", None)
    if wait is not None:
        wait()


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def steps(client, run_id: str, key: str) -> list[int]:
    return [step for step, _ in history(client, run_id, key)]


def artifact_json(client, run_id: str, path: str) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, path)).read_text())


def artifact_paths(client, run_id: str, folder: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, folder)}


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = (x[:, 0] + 0.8 * x[:, 1] + rng.normal(scale=0.8, size=300) > 0).astype(int)
    return {"x": x[:200], "y": y[:200], "xv": x[200:], "yv": y[200:]}


def datasets(data) -> tuple[lgb.Dataset, lgb.Dataset]:
    train = lgb.Dataset(data["x"], label=data["y"])
    return train, lgb.Dataset(data["xv"], label=data["yv"], reference=train)


def test_train_records_params_metrics_early_stopping_checkpoints_model(client, data) -> None:
    train, val = datasets(data)
    callback = TrailCallback(experiment="lgb", checkpoint_every=5)
    evals: dict = {}
    booster = lgb.train(
        {**PARAMS, "metric": ["binary_logloss", "auc"]},
        train,
        60,
        valid_sets=[train, val],
        valid_names=["train", "val"],
        callbacks=[
            lgb.early_stopping(3, first_metric_only=True, verbose=False),
            lgb.record_evaluation(evals),
            callback,
        ],
    )
    settled()
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["learning_rate"] == "0.3" and params["num_leaves"] == "4"
    assert params["boosting"] == "gbdt"  # the effective configuration, not only what was written
    assert params["num_boost_round"] == "60"
    assert params["data.train.shape"] == "200x4"  # rows freed by LightGBM: no digest then
    assert params["early_stopping.patience"] == "3"
    assert params["early_stopping.monitor"] == "val-binary_logloss"
    assert params["early_stopping.mode"] == "min"
    assert run.data.tags["mltrail.framework"] == "lightgbm"
    assert run.data.tags["mltrail.lightgbm.api"] == "train"
    # Every iteration of both eval sets, at step = iteration, and the stopping iteration.
    last = len(evals["val"]["auc"]) - 1
    assert booster.best_iteration < last + 1 < 60  # it stopped early
    assert steps(client, run.info.run_id, "val-auc") == list(range(last + 1))
    assert steps(client, run.info.run_id, "train-binary_logloss") == list(range(last + 1))
    metrics = run.data.metrics
    assert metrics["early_stopping.best_epoch"] == booster.best_iteration - 1
    assert metrics["early_stopping.stopped_epoch"] == last
    assert metrics["early_stopping.best_score"] == pytest.approx(
        booster.best_score["val"]["binary_logloss"]
    )
    # Checkpoints every 5 iterations; the model with a signature; importance as JSON and plot.
    index = artifact_json(client, run.info.run_id, "checkpoints/index.json")
    names = sorted(index["files"])
    assert names[0] == "checkpoints/lightgbm-000004.txt"
    assert [index["files"][n]["step"] for n in names] == list(range(4, last + 1, 5))
    assert index["aliases"]["latest"] == names[-1]
    assert index["aliases"]["best"] in names
    assert {"model", "lightgbm"} <= artifact_paths(client, run.info.run_id)
    assert {"lightgbm/feature_importance.json", "lightgbm/feature_importance.png"} <= (
        artifact_paths(client, run.info.run_id, "lightgbm")
    )
    importance = artifact_json(client, run.info.run_id, "lightgbm/feature_importance.json")
    assert set(importance) == {"gain", "split"}
    assert importance["split"]["Column_0"] > 0
    import mlflow

    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert model.metadata.signature is not None
    assert [c.name for c in model.metadata.signature.inputs] == [f"Column_{i}" for i in range(4)]
    import pandas as pd

    rows = pd.DataFrame(data["xv"][:3], columns=[f"Column_{i}" for i in range(4)])
    assert np.allclose(np.asarray(model.predict(rows)).ravel(), booster.predict(data["xv"][:3]))


def test_cv_logs_means_and_spreads(client, data) -> None:
    callback = TrailCallback(**LIGHT)
    lgb.cv(PARAMS, lgb.Dataset(data["x"], label=data["y"]), 4, nfold=3, callbacks=[callback])
    settled()
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.lightgbm.api"] == "cv"
    assert run.data.params["cv.nfold"] == "3"
    assert steps(client, run.info.run_id, "valid-binary_logloss-mean") == [0, 1, 2, 3]
    assert steps(client, run.info.run_id, "valid-binary_logloss-std") == [0, 1, 2, 3]


def test_sklearn_api_and_continued_training_go_on_at_the_model_iterations(client, data) -> None:
    first = TrailCallback(importance=False)
    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1)
    model.fit(data["x"], data["y"], eval_X=(data["xv"],), eval_y=(data["yv"],), callbacks=[first])
    settled()
    run = client.get_run(first.run_id)
    assert run.data.tags["mltrail.lightgbm.api"] == "sklearn"
    assert run.data.params["n_estimators"] == "5"
    assert run.data.params["data.train.digest"] not in ("", "unknown")  # the data, by content
    assert steps(client, first.run_id, "valid_0-binary_logloss") == [0, 1, 2, 3, 4]
    assert "model" in artifact_paths(client, first.run_id)
    # Continued training: a new run whose steps go on from the model's 5 iterations.
    second = TrailCallback(**LIGHT)
    train, val = datasets(data)
    lgb.train(PARAMS, train, 3, valid_sets=[val], init_model=model.booster_, callbacks=[second])
    settled()
    run = client.get_run(second.run_id)
    assert run.data.tags["mltrail.lightgbm.initial_iterations"] == "5"
    assert steps(client, second.run_id, "valid_0-binary_logloss") == [5, 6, 7]
    # A second training into the same given run must continue its steps, not repeat them.
    with mltrail.start_run(capture=False, system_metrics=False) as trail:
        lgb.train(PARAMS, datasets(data)[0], 2, callbacks=[TrailCallback(trail, **LIGHT)])
        with pytest.raises(MltrailError, match="init_model"):
            lgb.train(PARAMS, datasets(data)[0], 2, callbacks=[TrailCallback(trail, **LIGHT)])


def test_exceptions_end_the_run_failed_and_propagate(client, data) -> None:
    def broken(env) -> None:
        if env.iteration == 2:
            raise ValueError("user callback")

    callback = TrailCallback(**LIGHT)
    with pytest.raises(ValueError, match="user callback"):
        lgb.train(PARAMS, datasets(data)[0], 10, callbacks=[callback, broken])
    settled()
    run = client.get_run(callback.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mltrail.exception.type"] == "ValueError"

    def objective(preds, dataset):  # raises inside the booster update: no callback sees it
        if len(objective.calls) == 2:
            raise RuntimeError("custom objective")
        objective.calls.append(1)
        return preds - dataset.get_label(), np.ones_like(preds)

    objective.calls = []
    callback = TrailCallback(**LIGHT)
    try:
        lgb.train({**PARAMS, "objective": objective}, datasets(data)[0], 10, callbacks=[callback])
    except RuntimeError:
        pass
    settled()
    assert client.get_run(callback.run_id).info.status == "FAILED"


def autolog_runs(client, experiment: str, frameworks: list[str], train) -> list:
    """The runs, oldest first, of what ``train()`` trains under autolog into ``experiment``."""
    mltrail.autolog(frameworks=frameworks, experiment=experiment, **LIGHT)
    try:
        train()
    finally:
        mltrail.autolog(disable=True)
    settled()
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time"])


def test_autolog_records_each_training_once(client, data) -> None:
    def train() -> None:
        model = lgb.LGBMClassifier(n_estimators=3, num_leaves=4, verbose=-1)
        model.fit(data["x"], data["y"])  # its label encoder and lgb.train inside: one run
        lgb.train(PARAMS, datasets(data)[0], 2)

    runs = autolog_runs(client, "lgb-autolog", ["lightgbm", "sklearn"], train)
    assert [r.data.tags["mltrail.lightgbm.api"] for r in runs] == ["sklearn", "train"]
    assert {r.data.tags["mltrail.framework"] for r in runs} == {"lightgbm"}
    assert all(r.info.status == "FINISHED" for r in runs)


def test_continued_training_with_fork_false_rewinds_the_run(client, data) -> None:
    from mltrail.recording.restart import current_history

    train, val = datasets(data)
    first = TrailCallback(**LIGHT)
    booster = lgb.train(PARAMS, train, 4, valid_sets=[val], callbacks=[first])
    older = lgb.Booster(model_str=booster.model_to_string(num_iteration=2))
    again = TrailCallback(run_id=first.run_id, fork=False, **LIGHT)
    train, val = datasets(data)
    lgb.train(PARAMS, train, 3, valid_sets=[val], init_model=older, callbacks=[again])
    settled()
    assert again.run_id == first.run_id
    run = client.get_run(first.run_id)
    assert run.data.tags["mltrail.rewound_to_step"] == "1"
    points = client.get_metric_history(first.run_id, "valid_0-binary_logloss")
    assert len(points) == 7  # MLflow keeps the superseded steps 2 and 3...
    assert [m.step for m in current_history(run, points)] == [0, 1, 2, 3, 4]  # ...mltrail not


def test_a_loop_over_one_dataset_identifies_its_data_every_time(client, data) -> None:
    """LightGBM frees a Dataset's rows once it is built: the trainings after the first on the
    same Dataset (a loop of experiments) still record what data they trained on, and a new
    label set on it is new data."""

    def train() -> None:
        dataset, _ = datasets(data)
        lgb.train(PARAMS, dataset, 2)
        lgb.train(PARAMS, dataset, 2)
        lgb.train({**PARAMS, "learning_rate": 0.1}, dataset, 2)
        assert dataset.data is None  # freed by LightGBM after the first training
        other = lgb.Dataset(data["x"], label=1 - data["y"])
        lgb.train(PARAMS, other, 2)

    runs = autolog_runs(client, "lgb-loop", ["lightgbm"], train)
    digests = [r.data.params["data.train.digest"] for r in runs]
    assert len(digests) == 4 and "unknown" not in digests, digests
    assert digests[0] == digests[1] == digests[2] != digests[3]


def test_a_continued_training_names_the_booster_it_continues_by_content(
    client, data, tmp_path
) -> None:
    """Two trainings that continue other boosters are other experiments: ``init_model`` is
    the booster's fingerprint, as XGBoost's ``xgb_model``, not just "a booster"."""
    train, _ = datasets(data)
    shallow = lgb.train(PARAMS, train, 2)
    deeper = lgb.train(PARAMS, datasets(data)[0], 4)
    runs = []
    for start in (shallow, deeper, shallow):
        callback = TrailCallback(experiment="lgb-continued", **LIGHT)
        lgb.train(PARAMS, datasets(data)[0], 2, init_model=start, callbacks=[callback])
        runs.append(callback.run_id)
    settled()
    named = [client.get_run(run_id).data.params["init_model"] for run_id in runs]
    assert all(name.startswith("booster:") for name in named)
    assert named[0] != named[1] and named[0] == named[2]  # by content, not by object
    path = tmp_path / "start.txt"  # a model file: by its path
    shallow.save_model(str(path))
    callback = TrailCallback(experiment="lgb-continued", **LIGHT)
    lgb.train(PARAMS, datasets(data)[0], 2, init_model=str(path), callbacks=[callback])
    settled()
    assert client.get_run(callback.run_id).data.params["init_model"] == str(path)
