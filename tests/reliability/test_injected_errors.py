"""mltrail's own code fails at each stage of a run: training is exactly what it is without it.

An exception is injected (strict mode off, as for users) into run creation, provenance capture,
metric logging, checkpoint upload and the end of the run, while XGBoost trains with the
TrailCallback. The booster and its evaluation history must be identical to a training without
mltrail, each kind of error must give one warning however often it happens, and the run must
still record what did not fail.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

import mltrail
from mltrail.cli import main as cli
from mltrail.integrations.xgboost import TrailCallback

PARAMS = {"objective": "binary:logistic", "max_depth": 2, "learning_rate": 0.3, "seed": 7}
ROUNDS = 8


@pytest.fixture(scope="module")
def data() -> tuple[xgb.DMatrix, xgb.DMatrix, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + 0.8 * x[:, 1] + rng.normal(scale=0.8, size=200) > 0).astype(int)
    return xgb.DMatrix(x[:150], label=y[:150]), xgb.DMatrix(x[150:], label=y[150:]), x


def train(data, callbacks: list) -> tuple[np.ndarray, dict, bytes]:
    dtrain, dval, x = data
    history: dict = {}
    booster = xgb.train(
        {**PARAMS, "nthread": 1},
        dtrain,
        ROUNDS,
        evals=[(dtrain, "train"), (dval, "val")],
        evals_result=history,
        verbose_eval=False,
        callbacks=callbacks,
    )
    return booster.predict(xgb.DMatrix(x)), history, bytes(booster.save_raw("json"))


def fail(*args, **kwargs):
    raise RuntimeError("injected failure inside mltrail")


# stage -> (what to patch, the kind of error the user is warned about once)
INJECTIONS = {
    "start: creating the run": ("mlflow.tracking.MlflowClient.create_run", None),
    "start: provenance": ("mltrail.capture.provenance.capture_run", "capturing provenance"),
    "log: every metric call": ("mltrail.recording.writer.Writer.add_metrics", "logging metrics"),
    "checkpoint upload": ("mlflow.tracking.MlflowClient.log_artifact", "uploading a checkpoint"),
    "end: summary artifacts": (
        "mltrail.recording.trail.Trail._write_summary_artifacts",
        "ending the run",
    ),
}


def warning_kinds(caught: list[warnings.WarningMessage]) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for warning in caught:
        if issubclass(warning.category, mltrail.MltrailWarning):
            text = str(warning.message)
            kinds[text.removeprefix("mltrail: ").split(" failed")[0]] += 1
    return kinds


@pytest.fixture(scope="module")
def baseline(data):
    return train(data, [])


@pytest.mark.parametrize("stage", list(INJECTIONS))
def test_injected_error_leaves_training_identical(
    stage: str, data, baseline, client, monkeypatch, tmp_path: Path, caplog
) -> None:
    monkeypatch.setenv("MLTRAIL_STRICT", "0")
    target, kind = INJECTIONS[stage]
    callback = TrailCallback(
        experiment=f"injected-{stage.split(':')[0]}",
        checkpoint_every=2,
        # A checkpoint's metrics also reach the store with its LoggedModel, by another record:
        # here only the metric path fails.
        checkpoints_as_models=False,
        log_model=False,
        importance=False,
        system_metrics=False,
    )
    with (
        pytest.MonkeyPatch.context() as injected,
        warnings.catch_warnings(record=True) as caught,
        caplog.at_level(logging.WARNING),
    ):
        injected.setattr(target, fail)
        warnings.simplefilter("always")
        predictions, history, raw = train(data, [callback])

    # the training is exactly the one without mltrail
    assert np.array_equal(predictions, baseline[0])
    assert history == baseline[1]
    assert raw == baseline[2]

    kinds = warning_kinds(caught)
    assert all(count == 1 for count in kinds.values()), kinds  # one warning per kind
    run_id = callback.run_id
    if kind is None:
        # run creation failed: the run was journaled and `mltrail sync` creates it
        assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1
        assert not kinds, kinds
        assert cli(["sync"]) == 0
        experiment = client.get_experiment_by_name("injected-start")
        [run] = client.search_runs(
            [experiment.experiment_id], f"tags.`mltrail.offline_run_id` = '{run_id}'"
        )
        run_id = run.info.run_id
    else:
        assert kinds[kind] == 1, kinds
    if stage == "checkpoint upload":
        # the failed uploads were journaled with copies of the files: sync uploads them
        assert cli(["sync"]) == 0
    checkpoints = {Path(a.path).name for a in client.list_artifacts(run_id, "checkpoints")}
    assert len(checkpoints - {"index.json"}) == ROUNDS // 2, checkpoints
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    logged = [m.step for m in client.get_metric_history(run_id, "val-logloss")]
    if stage.startswith("log"):
        assert logged == []  # what failed is missing, and counted
        assert int(run.data.tags["mltrail.errors"]) >= ROUNDS
    else:
        assert logged == list(range(ROUNDS))
        assert run.data.params["max_depth"] == "2"


def test_strict_mode_raises_the_injected_error(data, monkeypatch) -> None:
    monkeypatch.setenv("MLTRAIL_STRICT", "1")
    monkeypatch.setattr("mltrail.recording.writer.Writer.add_metrics", fail)
    callback = TrailCallback(
        experiment="injected-strict", log_model=False, importance=False, system_metrics=False
    )
    with pytest.raises(RuntimeError, match="injected failure"):
        train(data, [callback])
