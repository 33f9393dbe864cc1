"""The final model when the exit deadline passes before the store took it.

A training process exits while the server holds its uploads (each request read, never
answered, as a busy server does) past ``flush_timeout``: one run's final model is being uploaded,
another's is still waiting behind a checkpoint upload. Neither model may be lost: each is
journaled with the run's end behind it, the run is not shown complete without it, and ``mltrail
sync`` gives the run its ``model/`` folder, its LoggedModel and its registered version.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mltrail.recording.logged_models import FINAL_MODEL_NAME, MODEL_ID_TAG
from tests.reliability.conftest import FaultProxy, _Handler, _ProxyServer, python_env

pytestmark = [pytest.mark.server, pytest.mark.timeout(240)]

TRAIN = """
import os, sys
import numpy as np
from sklearn.linear_model import LogisticRegression
import mltrail

x = np.array([[1.0, 1, 1], [-1, -1, -1], [2, 2, 2], [-2, -2, -2]], dtype="float32")
y = np.array([1, 0, 1, 0])
runs = {}
for name in ("uploading", "queued"):
    trail = mltrail.start_run(experiment="model-at-exit", run_name=name, capture=False,
                              system_metrics=False, flush_timeout=1, flush_interval=0.2)
    model = LogisticRegression().fit(x, y)
    trail.log_params({"C": 1.0})
    trail.log_metrics({"accuracy": model.score(x, y)}, step=0)
    if name == "queued":  # its model waits behind this upload
        with open("weights.ckpt", "wb") as handle:
            handle.write(os.urandom(1024))
        trail.log_checkpoint("weights.ckpt", step=0)
    trail.log_model(model, "sklearn", signature_from=x[:2], registered_model_name="at-exit-" + name,
                    serialization_format="cloudpickle")  # quicker to save and load than skops
    runs[name] = trail.run_id
print("runs " + " ".join(f"{k}={v}" for k, v in runs.items()), flush=True)
sys.stdin.readline()  # the test saw both uploads held by the server
# no end(): the interpreter's exit ends the runs, within flush_timeout
"""


class _HoldingHandler(_Handler):
    """Holds every artifact upload (read, never answered) until the proxy closes; forwards the
    rest, so the run's metrics, params and end reach the store."""

    def _handle(self) -> None:
        proxy = self.server.proxy
        if self.command == "PUT" and "/mlflow-artifacts/artifacts/" in self.path:
            self._body()
            with proxy.lock:
                proxy.held.append(self.path)
            proxy.closed.wait()
            self.close_connection = True  # dropped: nothing of it reaches the store
            return
        super()._handle()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class HoldingProxy(FaultProxy):
    """A :class:`FaultProxy` that holds artifact uploads (:class:`_HoldingHandler`)."""

    def __init__(self, upstream_port: int) -> None:
        self.held: list[str] = []
        self.lock = threading.Lock()
        super().__init__(upstream_port)

    def _listen(self) -> None:
        self._server = _ProxyServer(("127.0.0.1", self.port), _HoldingHandler)
        self._server.proxy = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()


def artifact_files(client: MlflowClient, run_id: str, path: str) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id, path)}


def test_final_model_cut_by_the_exit_deadline_is_journaled_and_synced(
    mlflow_server, tmp_path: Path
) -> None:
    proxy = HoldingProxy(mlflow_server.port)
    spool = tmp_path / "spool"
    env = python_env(
        MLFLOW_TRACKING_URI=proxy.uri,
        MLTRAIL_SPOOL_DIR=str(spool),
        MLTRAIL_STRICT="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="60",  # the upload is still waiting when the deadline passes
    )
    (tmp_path / "train.py").write_text(TRAIN)
    try:
        process = subprocess.Popen(
            [sys.executable, "train.py"], cwd=tmp_path, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        line = process.stdout.readline()
        assert line.startswith("runs "), line + process.stderr.read()[-3000:]
        runs = dict(item.split("=") for item in line.split()[1:])
        deadline = time.monotonic() + 60
        while True:  # the model of one run and the checkpoint of the other are in flight
            with proxy.lock:
                held = list(proxy.held)
            if any("/model/" in p for p in held) and any("/checkpoints/" in p for p in held):
                break
            assert time.monotonic() < deadline, held
            time.sleep(0.05)
        _, stderr = process.communicate("go\n", timeout=120)
        assert process.returncode == 0, stderr[-3000:]
    finally:
        proxy.close()  # what it held is dropped, never forwarded
    assert "Traceback" not in stderr, stderr[-3000:]

    client = MlflowClient(mlflow_server.uri)
    for name, run_id in runs.items():
        run = client.get_run(run_id)
        assert "model/MLmodel" not in artifact_files(client, run_id, "model"), name
        assert MODEL_ID_TAG not in run.data.tags, name
        # not shown complete while its model waits in the journal
        assert run.info.status == "RUNNING", (name, run.info.status)
        assert f"final model of run {run_id}" in stderr, stderr[-3000:]

    sync = subprocess.run(
        [sys.executable, "-m", "mltrail.cli", "sync", "--spool-dir", str(spool),
         "--tracking-uri", mlflow_server.uri, "--json"],  # the server itself, not the proxy
        env=python_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert sync.returncode == 0, sync.stdout + sync.stderr  # every run synced
    # MLflow prints a "View run" line as a run ends on a server: not into the JSON.
    synced = {r["run_id"] for r in json.loads(sync.stdout)["runs"]}
    assert synced == set(runs.values()), sync.stdout
    assert sorted(p.name for p in spool.iterdir()) == sorted(f"{r}.synced" for r in runs.values())

    mlflow.set_tracking_uri(mlflow_server.uri)
    probe = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], dtype="float32")
    for name, run_id in runs.items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED", name
        assert "model/MLmodel" in artifact_files(client, run_id, "model"), name
        model_id = run.data.tags[MODEL_ID_TAG]
        logged = client.get_logged_model(model_id)
        assert (logged.name, logged.source_run_id) == (FINAL_MODEL_NAME, run_id), name
        assert str(logged.status) in {"READY", "LoggedModelStatus.READY"}, logged.status
        assert [(m.key, m.value) for m in logged.metrics] == [("accuracy", 1.0)], name
        found = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id], output_format="list"
        )
        assert [m.model_id for m in found if m.source_run_id == run_id] == [model_id], name
        [version] = client.search_model_versions(f"name='at-exit-{name}'")
        assert (version.run_id, version.source) == (run_id, f"models:/{model_id}"), name
        for uri in (f"runs:/{run_id}/model", f"models:/{model_id}"):
            assert mlflow.pyfunc.load_model(uri).predict(probe).tolist() == [1, 0], uri
    queued = client.get_run(runs["queued"])
    assert queued.data.tags["mltrail.checkpoint.latest"] == "checkpoints/weights.ckpt"
