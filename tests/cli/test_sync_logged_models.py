"""A run journaled while its store was away, uploaded by ``mltrail sync --tracking-uri`` into
another store: its final model and checkpoints are LoggedModels there, under the ids that store
gave them, and ``models:/`` and ``mltrail best --checkpoints`` work in it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import cli, free_port

xgb = pytest.importorskip("xgboost")

RNG = np.random.default_rng(1)
X = RNG.normal(size=(96, 4))
Y = X[:, 0] - 2 * X[:, 1] + RNG.normal(scale=0.1, size=96)
ROUNDS = 4


def test_sync_into_another_store_makes_its_logged_models(
    tmp_path: Path, fresh_store: str, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from mltrail.integrations.xgboost import TrailCallback

    monkeypatch.setenv("MLTRAIL_STRICT", "0")  # the outage is absorbed and journaled
    spool = tmp_path / "spool"
    callback = TrailCallback(
        checkpoint_every=1,
        experiment="synced-models",
        tracking_uri=f"http://127.0.0.1:{free_port()}",  # nobody listens: journaled
        start_timeout=2,
        spool_dir=spool,
        capture=False,
        system_metrics=False,
    )
    booster = xgb.train(
        {"max_depth": 2, "eta": 0.5}, xgb.DMatrix(X[:64], label=Y[:64]), ROUNDS,
        evals=[(xgb.DMatrix(X[64:], label=Y[64:]), "val")], verbose_eval=False,
        callbacks=[callback],
    )  # fmt: skip
    # In this process: a sync elsewhere leaves the runs of a process still alive to it.
    code, out, err = cli(capsys, "sync", "--spool-dir", str(spool), "--tracking-uri", fresh_store)
    assert code == 0, out + err

    client = MlflowClient(fresh_store)
    experiment = client.get_experiment_by_name("synced-models")
    (run,) = client.search_runs([experiment.experiment_id])
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.offline_run_id"] == callback.run_id != run_id

    # The final model: the run's tag names a LoggedModel of this store, linked to the run.
    final = client.get_logged_model(run.data.tags["mltrail.model.id"])
    assert (final.name, final.source_run_id, str(final.status)) == ("final-model", run_id, "READY")
    assert final.tags["mltrail.model.flavor"] == "xgboost"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fresh_store)
    loaded = mlflow.pyfunc.load_model(f"models:/{final.model_id}")
    expected = booster.predict(xgb.DMatrix(X[64:]))
    np.testing.assert_allclose(loaded.predict(X[64:]), expected, rtol=1e-5)

    # Each checkpoint: a LoggedModel at its step, with the validation metric of that step.
    history = {m.step: m.value for m in client.get_metric_history(run_id, "val-rmse")}
    models = client.search_logged_models(
        experiment_ids=[experiment.experiment_id],
        filter_string="tags.`mltrail.kind` = 'checkpoint'",
        order_by=[{"field_name": "metrics.val-rmse", "ascending": True}],
    )
    assert sorted(m.name for m in models) == [f"checkpoint-{i}" for i in range(ROUNDS)]
    for model in models:
        assert model.source_run_id == run_id and str(model.status) == "READY"
        (metric,) = [m for m in model.metrics if m.key == "val-rmse"]
        assert metric.value == history[metric.step] and model.name == f"checkpoint-{metric.step}"

    # mltrail best --checkpoints names the best checkpoint's LoggedModel, which loads.
    code, out, err = cli(
        capsys, "best", "--tracking-uri", fresh_store, "--experiment", "synced-models",
        "--metric", "val-rmse", "--checkpoints", "--json",
    )  # fmt: skip
    assert code == 0, err
    best = json.loads(out)["best"]
    step = min(history, key=history.get)
    assert best["checkpoint"]["step"] == step and best["value"] == history[step]
    assert best["model_id"] == models[0].model_id
    assert best["model_uri"] == f"models:/{models[0].model_id}"
    checkpoint = mlflow.pyfunc.load_model(best["model_uri"])
    at_step = booster[: step + 1].predict(xgb.DMatrix(X[64:]))
    np.testing.assert_allclose(checkpoint.predict(X[64:]), at_step, rtol=1e-5)
