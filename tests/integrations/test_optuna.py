"""The Optuna adapter on tiny studies against a real sqlite MLflow store: a study's run, its
trials as child runs, trainings inside the objective, resumed studies, autolog."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

import mltrail  # noqa: E402
from mltrail.integrations.optuna import RUN_ID_ATTR, TrailCallback  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def settled() -> None:
    """Wait for runs ended in the background, where mltrail ends them so."""
    wait = getattr(mltrail, "wait", None)
    if wait is not None:
        wait()


def runs_of(client, experiment: str) -> tuple[object, dict[str, object]]:
    """The study's run and its child runs by name."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if r.info.run_id != parent.info.run_id}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children.values())
    return parent, children


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def objective(trial) -> float:
    x = trial.suggest_float("x", -4, 4)
    y = trial.suggest_int("y", 0, 3)
    for step in range(3):
        trial.report((x - 1) ** 2 + y + 1 / (step + 1), step)
    if trial.number == 2:
        raise optuna.TrialPruned()
    if trial.number == 3:
        raise ValueError("a bad trial")
    return (x - 1) ** 2 + y


def test_study_run_with_one_child_run_per_trial(client) -> None:
    study = optuna.create_study(study_name="quad", sampler=optuna.samplers.RandomSampler(seed=0))
    callback = TrailCallback(experiment="optuna-study")
    study.optimize(objective, n_trials=6, catch=(ValueError,), callbacks=[callback])
    settled()
    parent, children = runs_of(client, "optuna-study")
    assert parent.info.run_id == callback.run_id == study.user_attrs[RUN_ID_ATTR]
    assert parent.info.status == "FINISHED"  # ended when optimize returned
    assert parent.data.params == {
        "study_name": "quad",
        "direction": "minimize",
        "sampler": "RandomSampler",
        "pruner": "MedianPruner",
    }
    assert parent.data.tags["mltrail.framework"] == "optuna"
    complete = [t.number for t in study.trials if t.state.name == "COMPLETE"]
    assert [s for s, _ in history(client, parent.info.run_id, "value")] == complete
    best = study.best_trial
    assert history(client, parent.info.run_id, "best_value")[-1] == (5, best.value)
    assert parent.data.tags["mltrail.optuna.best_trial"] == str(best.number)
    assert parent.data.tags["mltrail.optuna.best.x"] == str(best.params["x"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert artifacts == {
        "optuna/optimization_history.png",
        "optuna/param_importances.json",
        "optuna/param_importances.png",
    }
    path = client.download_artifacts(parent.info.run_id, "optuna/param_importances.json")
    assert set(json.loads(Path(path).read_text())["value"]) == {"x", "y"}
    # One child run per trial: params, value, state, intermediate values as a history.
    assert sorted(children) == [f"trial-{i}" for i in range(6)]
    states = {name: run.data.tags["mltrail.optuna.state"] for name, run in children.items()}
    assert states["trial-2"] == "PRUNED" and states["trial-3"] == "FAIL"
    assert children["trial-3"].info.status == "FAILED"
    assert children["trial-2"].info.status == "FINISHED"
    first = study.trials[0]
    assert children["trial-0"].data.params == {k: str(v) for k, v in first.params.items()}
    assert children["trial-0"].data.metrics["value"] == first.value
    assert history(client, children["trial-0"].info.run_id, "intermediate_value") == sorted(
        first.intermediate_values.items()
    )


def test_resumed_study_continues_its_run(client, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="resumed", storage=storage)
    study.optimize(
        lambda t: t.suggest_float("x", 0, 1),
        n_trials=2,
        callbacks=[TrailCallback(experiment="optuna-resume")],
    )
    loaded = optuna.load_study(study_name="resumed", storage=storage)
    callback = TrailCallback(experiment="optuna-resume")
    loaded.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2, callbacks=[callback])
    settled()
    parent, children = runs_of(client, "optuna-resume")
    assert callback.run_id == parent.info.run_id
    assert parent.data.tags["mltrail.resume_count"] == "1"
    assert parent.info.status == "FINISHED"
    assert sorted(children) == [f"trial-{i}" for i in range(4)]
    assert [s for s, _ in history(client, parent.info.run_id, "value")] == [0, 1, 2, 3]


def test_a_study_whose_run_is_gone_gets_a_new_run_that_names_it(client) -> None:
    study = optuna.create_study(study_name="gone")
    study.set_user_attr(RUN_ID_ATTR, "0" * 32)  # a run deleted since, or in another store
    callback = TrailCallback(experiment="optuna-gone", log_plots=False)
    with pytest.warns(mltrail.MltrailWarning, match="optuna: resuming the study's run failed"):
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1, callbacks=[callback])
    settled()
    parent, children = runs_of(client, "optuna-gone")
    assert parent.info.run_id == callback.run_id == study.user_attrs[RUN_ID_ATTR]
    assert parent.data.tags["mltrail.optuna.resumed_run"] == "0" * 32
    assert sorted(children) == ["trial-0"]


def test_the_best_params_tags_follow_a_conditional_search_space(client) -> None:
    def objective(trial) -> float:
        if trial.suggest_categorical("kind", ["forest", "svc"]) == "forest":
            return 10.0 + trial.suggest_int("depth", 1, 5)
        return trial.suggest_float("c", 0.0, 1.0)

    study = optuna.create_study()
    study.enqueue_trial({"kind": "forest", "depth": 3})
    study.enqueue_trial({"kind": "svc", "c": 0.5})
    study.optimize(objective, n_trials=2, callbacks=[TrailCallback(experiment="optuna-cond")])
    settled()
    parent, _ = runs_of(client, "optuna-cond")
    best = {k: v for k, v in parent.data.tags.items() if k.startswith("mltrail.optuna.best")}
    assert best == {
        "mltrail.optuna.best_trial": "1",
        "mltrail.optuna.best.kind": "svc",
        "mltrail.optuna.best.c": "0.5",
    }  # the forest's depth, best after trial 0, is no param of the best trial any more
    assert "mltrail.errors" not in parent.data.tags


def test_the_pareto_front_of_a_multi_objective_study_is_followed_trial_by_trial(client) -> None:
    def objective(trial) -> tuple[float, float]:
        x = trial.suggest_float("x", -10, 10)
        if trial.number % 7 == 3:
            raise optuna.TrialPruned()  # no values: the front stays as it was
        return x**2, -((x - 2) ** 2)  # minimize the first, maximize the second

    study = optuna.create_study(
        directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=1)
    )
    callback = TrailCallback(experiment="optuna-front", log_plots=False)
    study.optimize(objective, n_trials=40, callbacks=[callback])
    settled()
    expected = []
    for number in range(40):  # the front of the trials done so far, counted independently
        done = [t for t in study.trials[: number + 1] if t.state.name == "COMPLETE"]
        points = [(t.values[0], -t.values[1]) for t in done]
        front = [
            p for p in points if not any(q != p and q[0] <= p[0] and q[1] <= p[1] for q in points)
        ]
        expected.append((number, float(len(front))))
    assert history(client, callback.run_id, "pareto_front_size") == expected
    tags = client.get_run(callback.run_id).data.tags
    best = sorted(t.number for t in study.best_trials)
    assert sorted(map(int, tags["mltrail.optuna.best_trials"].split(","))) == best


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    return x, (x[:, 0] + rng.normal(scale=0.5, size=120) > 0).astype(int)


def test_trainings_inside_the_objective_are_the_trial_runs_in_parallel_multi_objective(
    client,
) -> None:
    lgb = pytest.importorskip("lightgbm")  # the trainings inside the objective
    from mltrail.integrations.lightgbm import TrailCallback as LightGBMCallback

    x, y = _data()

    def train(trial) -> tuple[float, float]:
        leaves = trial.suggest_int("num_leaves", 2, 6)
        train_set = lgb.Dataset(x[:80], label=y[:80])
        valid = lgb.Dataset(x[80:], label=y[80:], reference=train_set)
        evals: dict = {}
        booster = lgb.train(
            {"objective": "binary", "num_leaves": leaves, "verbose": -1},
            train_set,
            4,
            valid_sets=[valid],
            callbacks=[
                LightGBMCallback(experiment="optuna-nested", log_model=False, importance=False),
                lgb.record_evaluation(evals),
            ],
        )
        return evals["valid_0"]["binary_logloss"][-1], float(booster.num_trees())

    study = optuna.create_study(directions=["minimize", "minimize"])
    study.optimize(
        train, n_trials=4, n_jobs=2, callbacks=[TrailCallback(experiment="optuna-nested")]
    )
    settled()
    parent, children = runs_of(client, "optuna-nested")  # no top-level LightGBM runs
    assert parent.data.params["directions"] == "['minimize', 'minimize']"
    assert "pareto_front_size" in parent.data.metrics
    assert sorted(children) == [f"trial-{i}" for i in range(4)]
    for trial in study.trials:
        run = children[f"trial-{trial.number}"]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mltrail.optuna.state"] == "COMPLETE"
        assert run.data.params["num_leaves"] == str(trial.params["num_leaves"])  # both wrote it
        assert run.data.tags["mltrail.lightgbm.api"] == "train"
        assert [s for s, _ in history(client, run.info.run_id, "valid_0-binary_logloss")] == [
            0,
            1,
            2,
            3,
        ]
        assert run.data.metrics["value_0"] == trial.values[0]
        assert run.data.metrics["value_1"] == trial.values[1]


def test_autolog_records_the_study_and_its_trainings_and_a_failing_objective(client) -> None:
    lgb = pytest.importorskip("lightgbm")
    x, y = _data()

    def train(trial) -> float:
        booster = lgb.train(
            {"objective": "binary", "num_leaves": trial.suggest_int("leaves", 2, 4), "verbose": -1},
            lgb.Dataset(x, label=y),
            3,
        )
        if trial.number == 1:
            raise RuntimeError("objective broke")
        return float(booster.num_trees())

    mltrail.autolog(
        frameworks=["optuna", "lightgbm"],
        experiment="optuna-autolog",
        log_model=False,
        importance=False,
        system_metrics=False,  # also passed on to each trial's run, which never samples them
    )
    try:
        study = optuna.create_study()
        with pytest.raises(RuntimeError, match="objective broke"):
            study.optimize(train, n_trials=3)
    finally:
        mltrail.autolog(disable=True)
    settled()
    parent, children = runs_of(client, "optuna-autolog")
    assert parent.info.status == "FAILED"
    assert sorted(children) == ["trial-0", "trial-1"]
    assert children["trial-0"].data.tags["mltrail.lightgbm.api"] == "train"
    assert children["trial-1"].info.status == "FAILED"
    assert children["trial-1"].data.tags["mltrail.optuna.state"] == "FAIL"
    assert "mltrail.errors" not in parent.data.tags
