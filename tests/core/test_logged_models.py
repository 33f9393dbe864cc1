"""Models and checkpoints as MLflow 3 LoggedModels, and checkpoint retention, on a real store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import mltrail
from mltrail.cli import main as cli
from mltrail.errors import MltrailError
from tests.conftest import free_port

xgb = pytest.importorskip("xgboost")
from mltrail.integrations.xgboost import TrailCallback  # noqa: E402

ROUNDS = 4


def tiny_booster() -> Any:
    """A one-tree model in MLflow's XGBoost flavor, and rows to predict on."""
    x = np.arange(16.0).reshape(8, 2)
    return xgb.train({"max_depth": 1}, xgb.DMatrix(x, label=x[:, 0]), 1), x


def logged_models(uri: str, experiment_id: str, **kwargs: Any) -> list[Any]:
    mlflow.set_tracking_uri(uri)
    return mlflow.search_logged_models(
        experiment_ids=[experiment_id], output_format="list", **kwargs
    )


def index_of(client: MlflowClient, run_id: str) -> dict[str, Any]:
    return json.loads(Path(client.download_artifacts(run_id, "checkpoints/index.json")).read_text())


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=200) > 0).astype(int)
    return {"x": x[:150], "y": y[:150], "xv": x[150:], "yv": y[150:]}


@pytest.fixture(scope="module")
def boosted(module_store: str, data, tmp_path_factory) -> dict[str, Any]:
    """One XGBoost training with a checkpoint every round, the two latest kept in the store."""
    callback = TrailCallback(
        tracking_uri=module_store,
        experiment="logged-models",
        checkpoint_every=1,
        keep_checkpoints=2,
        capture=False,
        system_metrics=False,
        end_in_background=False,
        spool_dir=tmp_path_factory.mktemp("spool"),
    )
    train = xgb.DMatrix(data["x"], label=data["y"])
    val = xgb.DMatrix(data["xv"], label=data["yv"])
    params = {"objective": "binary:logistic", "max_depth": 2, "eta": 0.5}
    xgb.train(params, train, ROUNDS, evals=[(val, "val")], callbacks=[callback], verbose_eval=False)
    client = MlflowClient(module_store)
    run = client.get_run(callback.run_id)
    return {"run": run, "client": client, "uri": module_store}


def test_the_final_model_is_a_logged_model_of_the_run(boosted, data) -> None:
    run, client, uri = boosted["run"], boosted["client"], boosted["uri"]
    experiment = run.info.experiment_id
    (model,) = logged_models(uri, experiment, filter_string="name = 'final-model'")
    assert model.source_run_id == run.info.run_id
    assert run.data.tags["mltrail.model.id"] == model.model_id
    assert model.tags["mltrail.kind"] == "model"
    assert model.status == "READY"
    # linked at the last round, with the run's final value
    final = {(m.key, m.step): m.value for m in model.metrics}
    assert final[("val-logloss", ROUNDS - 1)] == run.data.metrics["val-logloss"]
    outputs = {o.model_id: o.step for o in client.get_run(run.info.run_id).outputs.model_outputs}
    assert outputs[model.model_id] == ROUNDS - 1
    # linking added no second point: one per round
    history = client.get_metric_history(run.info.run_id, "val-logloss")
    assert sorted(m.step for m in history) == list(range(ROUNDS))
    # loadable by id, and as before by the run's model/ path (still an artifact of the run)
    by_id = mlflow.pyfunc.load_model(f"models:/{model.model_id}").predict(data["xv"])
    by_run = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").predict(data["xv"])
    assert np.allclose(by_id, by_run)
    assert "model/MLmodel" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}


def test_checkpoints_are_logged_models_ranked_by_a_metric(boosted, data) -> None:
    run, client, uri = boosted["run"], boosted["client"], boosted["uri"]
    index = index_of(client, run.info.run_id)
    kept = index["files"]
    assert [entry["step"] for entry in kept.values()] == [ROUNDS - 2, ROUNDS - 1]
    ranked = logged_models(
        uri,
        run.info.experiment_id,
        filter_string="tags.`mltrail.kind` = 'checkpoint'",
        order_by=[{"field_name": "metrics.val-logloss", "ascending": True}],
    )
    # the dropped checkpoints' models are gone; the kept ones rank by their value
    assert {m.model_id for m in ranked} == {entry["model_id"] for entry in kept.values()}
    values = [next(x.value for x in m.metrics if x.key == "val-logloss") for m in ranked]
    assert values == sorted(values)
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val-logloss")}
    for model in ranked:
        (point,) = [x for x in model.metrics if x.key == "val-logloss"]
        assert point.value == history[point.step]  # the value logged at the checkpoint's step
        assert model.tags["mltrail.checkpoint"] in kept
    # a checkpoint model loads by its id and predicts as the checkpoint file does
    name, entry = next(iter(kept.items()))
    booster = xgb.Booster()
    booster.load_model(client.download_artifacts(run.info.run_id, name))
    loaded = mlflow.pyfunc.load_model(f"models:/{entry['model_id']}")
    assert np.allclose(loaded.predict(data["xv"]), booster.predict(xgb.DMatrix(data["xv"])))


def test_retention_deletes_superseded_checkpoints_from_the_store(boosted) -> None:
    run, client = boosted["run"], boosted["client"]
    index = index_of(client, run.info.run_id)
    stored = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert stored == {"checkpoints/index.json", *index["files"]}
    assert len(index["dropped"]) == ROUNDS - 2
    assert not set(index["dropped"]) & stored
    assert run.data.tags["mltrail.checkpoints.dropped"] == str(ROUNDS - 2)
    found = {m.model_id for m in logged_models(boosted["uri"], run.info.experiment_id)}
    for entry in index["dropped"].values():
        assert entry["model_id"] and entry["dropped_at"]
        assert entry["model_id"] not in found  # its LoggedModel is deleted too
    assert {e["model_id"] for e in index["files"].values()} < found


def test_retention_never_touches_local_files_and_keeps_best_and_last(client, tmp_path) -> None:
    files = []
    for step in range(4):
        files.append(tmp_path / f"ckpt-{step}.bin")
        files[-1].write_bytes(f"weights {step}".encode())
    with mltrail.start_run(
        experiment="retention",
        capture=False,
        system_metrics=False,
        keep_checkpoints="best_and_last",
    ) as trail:
        for step, path in enumerate(files):
            aliases = ("best", "latest") if step == 1 else ("latest",)
            trail.log_checkpoint(
                path, step=step, metrics={"val_loss": 1.0 / (step + 1)}, aliases=aliases
            )
    stored = {a.path for a in client.list_artifacts(trail.run_id, "checkpoints")}
    assert stored == {"checkpoints/index.json", "checkpoints/ckpt-1.bin", "checkpoints/ckpt-3.bin"}
    index = index_of(client, trail.run_id)
    assert set(index["dropped"]) == {"checkpoints/ckpt-0.bin", "checkpoints/ckpt-2.bin"}
    assert all(path.read_bytes() == f"weights {i}".encode() for i, path in enumerate(files))


def test_model_metrics_name_their_dataset_and_registration_links_the_model(client) -> None:
    booster, x = tiny_booster()
    with mltrail.start_run(experiment="datasets", capture=False, system_metrics=False) as trail:
        trail.log_inputs(
            [
                {
                    "name": "holdout",
                    "digest": "abc123",
                    "source": "{}",
                    "tags": {"mlflow.data.context": "validation"},
                }
            ]
        )
        for step, loss in enumerate([0.5, 0.2, 0.3]):  # best at step 1, final at step 2
            trail.log_metrics({"val_loss": loss}, step=step)
        trail.log_model(booster, "xgboost", signature_from=x, registered_model_name="lm-reg")
        trail.log_metrics({"val_loss": 0.25}, step=3)  # after the model: linked at the end
    model_id = client.get_run(trail.run_id).data.tags["mltrail.model.id"]
    model = client.get_logged_model(model_id)
    points = {(m.step, m.value, m.dataset_name, m.dataset_digest) for m in model.metrics}
    # the best and the final value, on the validation set (step 2 was final when it was saved)
    assert {(1, 0.2, "holdout", "abc123"), (3, 0.25, "holdout", "abc123")} <= points
    assert points <= {
        (1, 0.2, "holdout", "abc123"),
        (2, 0.3, "holdout", "abc123"),
        (3, 0.25, "holdout", "abc123"),
    }
    history = client.get_metric_history(trail.run_id, "val_loss")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]  # linking added no point
    version = client.get_model_version("lm-reg", "1")
    assert version.source == f"models:/{model_id}" and version.run_id == trail.run_id
    info = mlflow.models.get_model_info(f"models:/{model_id}")
    assert info.signature is not None and info.flavors.keys() >= {"xgboost", "python_function"}


def test_a_run_without_metrics_names_its_final_model_too(client) -> None:
    """The tag that names the final model goes with the request linking its metrics; a run
    with no metric to link gets it all the same, and its LoggedModel has no metric."""
    booster, x = tiny_booster()
    with mltrail.start_run(experiment="no-metrics", capture=False, system_metrics=False) as trail:
        trail.log_params({"max_depth": 1})
        trail.log_model(booster, "xgboost", signature_from=x)
    run = client.get_run(trail.run_id)
    model = client.get_logged_model(run.data.tags["mltrail.model.id"])
    assert model.source_run_id == trail.run_id and model.status == "READY"
    assert not model.metrics and run.data.metrics == {}


def test_a_model_logged_while_the_store_is_away_is_created_at_sync(
    module_store: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("MLTRAIL_STRICT", "0")
    spool = tmp_path / "spool"
    trail = mltrail.start_run(
        experiment="offline-models",
        tracking_uri=f"http://127.0.0.1:{free_port()}",
        spool_dir=spool,
        start_timeout=5,
        capture=False,
        system_metrics=False,
    )
    assert trail.offline
    trail.log_metrics({"val_loss": 0.4}, step=0)
    booster, x = tiny_booster()
    trail.log_model(booster, "xgboost", signature_from=x)
    trail.end()
    assert cli(["sync", "--spool-dir", str(spool), "--tracking-uri", module_store]) == 0
    client = MlflowClient(module_store)
    experiment = client.get_experiment_by_name("offline-models")
    (run,) = client.search_runs([experiment.experiment_id])
    (model,) = logged_models(module_store, experiment.experiment_id)
    assert model.source_run_id == run.info.run_id
    assert run.data.tags["mltrail.model.id"] == model.model_id
    assert [(m.key, m.value) for m in model.metrics] == [("val_loss", 0.4)]
    assert mlflow.pyfunc.load_model(f"models:/{model.model_id}").predict(x).shape == (8,)


def test_checkpoints_as_models_can_be_turned_off_and_options_are_checked(client, tmp_path) -> None:
    from mltrail.adapters import CheckpointModel

    path = tmp_path / "never-loaded.bin"
    path.write_bytes(b"x")

    def load(_: Path) -> Any:
        raise AssertionError("loaded although checkpoints_as_models=False")

    with mltrail.start_run(
        experiment="off", capture=False, system_metrics=False, checkpoints_as_models=False
    ) as trail:
        trail.log_checkpoint(path, step=0, model=CheckpointModel("sklearn", load))
    assert "model_id" not in index_of(client, trail.run_id)["files"]["checkpoints/never-loaded.bin"]
    with pytest.raises(MltrailError, match="keep_checkpoints"):
        mltrail.start_run(keep_checkpoints="latest")
    with pytest.raises(MltrailError, match="checkpoints_as_models"):
        mltrail.start_run(checkpoints_as_models="sometimes")


def test_a_logged_model_record_sent_again_links_the_model_once(client, tmp_path: Path) -> None:
    """A hang can cut the answer to a request the server carried out: the record, journaled,
    is sent again by ``mltrail sync``; the model's link to the run is there already."""
    from mltrail.recording.writer import apply_record

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"weights")
    with mltrail.start_run(experiment="resent", system_metrics=False, capture=False) as trail:
        trail.flush()
        data: dict[str, Any] = {
            "name": "final-model",
            "path": str(folder),
            "step": 3,
            "final": True,
        }
        record = {"kind": "logged_model", "data": data}
        apply_record(trail.client, trail.run_id, record)
        apply_record(trail.client, trail.run_id, record)  # the same model: data has its id now
    run = client.get_run(trail.run_id)
    assert run.data.tags["mltrail.model.id"] == data["model_id"]
    assert [o.model_id for o in run.outputs.model_outputs] == [data["model_id"]]


def test_only_a_server_without_the_endpoints_is_taken_for_one_without_logged_models(
    monkeypatch,
) -> None:
    """An MLflow 2 server answers 404 to the LoggedModel endpoints: the run's model/ is then
    the model. An unreachable server is not one, whatever its address holds: its model is
    journaled for `mltrail sync` (a port holding "404" made it look like one, and the model's
    LoggedModel was never made)."""
    import http.server
    import socket
    import threading

    from mlflow.exceptions import MlflowException

    from mltrail.recording.writer import _lacks_logged_models

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")

    def refused(port: int) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) != 0

    port = next(p for p in range(40400, 40500) if refused(p))
    with pytest.raises(MlflowException) as unreachable:
        MlflowClient(f"http://127.0.0.1:{port}").create_logged_model("0", name="model")
    assert not _lacks_logged_models(unreachable.value), unreachable.value

    class WithoutLoggedModels(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # as Flask answers a route it does not have
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<!doctype html><title>404 Not Found</title>")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), WithoutLoggedModels)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(MlflowException) as missing:
            MlflowClient(f"http://127.0.0.1:{server.server_port}").create_logged_model(
                "0", name="model"
            )
    finally:
        server.shutdown()
        server.server_close()
    assert _lacks_logged_models(missing.value), missing.value
