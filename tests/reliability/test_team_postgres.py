"""Team scale: one ``mlflow server`` with a PostgreSQL backend store and proxied artifact storage,
several processes training at once with every adapter, then finding and restoring their runs
through the server with ``mltrail runs --commit`` and ``mltrail checkout --into``.

Needs PostgreSQL (see the ``postgres_server`` fixture): skipped, with the reason, without it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mltrail.cli import main as cli
from tests.conftest import git
from tests.reliability.conftest import python_env, team_mlflow_server

pytestmark = [pytest.mark.postgres, pytest.mark.server]

COMMON = """
import numpy as np
x = np.random.default_rng(0).normal(size=(60, 3)).astype("float32")
y = (x.sum(axis=1) > 0).astype("int64")
"""

SCRIPTS = {
    "lightning": """
import torch
import lightning.pytorch as L
from mltrail.integrations.lightning import TrailCallback

class Tiny(L.LightningModule):
    def __init__(self, lr=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
    torch.tensor(x), torch.tensor(y, dtype=torch.float32)[:, None]), batch_size=20)
callback = TrailCallback(experiment="team", run_name="lightning")
L.Trainer(max_epochs=2, callbacks=[callback], logger=False, enable_progress_bar=False,
          enable_model_summary=False, default_root_dir="lightning_logs").fit(Tiny(), data)
""",
    "keras": """
import keras
from mltrail.integrations.keras import TrailCallback

model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")
model.fit(x, y, epochs=2, verbose=0, validation_split=0.2,
          callbacks=[TrailCallback(experiment="team", run_name="keras", checkpoints="best")])
""",
    "sklearn": """
from sklearn.linear_model import LogisticRegression
from mltrail.integrations.sklearn import TrackedEstimator

TrackedEstimator(LogisticRegression(), experiment="team", run_name="sklearn").fit(x, y)
""",
    "xgboost": """
import xgboost as xgb
from mltrail.integrations.xgboost import TrailCallback

data = xgb.DMatrix(x, label=y)
xgb.train({"objective": "binary:logistic", "max_depth": 2}, data, 3, evals=[(data, "train")],
          verbose_eval=False,
          callbacks=[TrailCallback(experiment="team", run_name="xgboost", checkpoint_every=1)])
""",
}


@pytest.fixture(scope="module")
def team_server(postgres_server: str, tmp_path_factory: pytest.TempPathFactory):
    """``mlflow server`` on 127.0.0.1: PostgreSQL backend store, proxied artifact storage."""
    folder = tmp_path_factory.mktemp("team-server")
    artifacts = ["--artifacts-destination", str(folder / "artifacts")]
    with team_mlflow_server(postgres_server, folder, artifacts) as server:
        yield server


def test_processes_with_every_adapter_share_one_server(
    team_server, git_repo: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    for name, body in SCRIPTS.items():
        (git_repo / f"train_{name}.py").write_text(textwrap.dedent(COMMON + body))
    git(git_repo, "add", ".")
    git(git_repo, "commit", "-q", "-m", "training scripts")
    commit = git(git_repo, "rev-parse", "HEAD")
    (git_repo / "train_sklearn.py").write_text(
        (git_repo / "train_sklearn.py").read_text() + "# tried C=1 on the shared server\n"
    )  # an uncommitted change: the runs get a snapshot to restore
    # What each machine needs: only MLFLOW_TRACKING_URI.
    env = python_env(
        MLFLOW_TRACKING_URI=team_server.uri,
        MLTRAIL_SPOOL_DIR=str(tmp_path / "spool"),
        MLTRAIL_SYSTEM_METRICS="false",
        KERAS_BACKEND="torch",
        OMP_NUM_THREADS="1",
    )
    processes = {
        name: subprocess.Popen(
            [sys.executable, f"train_{name}.py"],
            cwd=git_repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in SCRIPTS
    }  # all four train at the same time
    outputs = {name: p.communicate(timeout=400) for name, p in processes.items()}
    for name, process in processes.items():
        assert process.returncode == 0, (name, outputs[name][1][-3000:])
    assert not list((tmp_path / "spool").glob("*/journal.jsonl")), "nothing was left unsent"

    client = MlflowClient(team_server.uri)
    experiment = client.get_experiment_by_name("team")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == set(SCRIPTS)
    for name, run in runs.items():
        assert run.info.status == "FINISHED", name
        assert run.data.tags["mlflow.source.git.commit"] == commit
        assert run.data.tags["mltrail.git.dirty"] == "true"
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
        # artifacts go through the server and come back
        local = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id,
            artifact_path="mltrail/provenance.json",
            tracking_uri=team_server.uri,
            dst_path=str(tmp_path / name),
        )
        assert json.loads(Path(local).read_text())["run_id"] == run.info.run_id
        top = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "model" in top, (name, top)
    assert {a.path for a in client.list_artifacts(runs["xgboost"].info.run_id, "checkpoints")}
    # a model logged by one machine loads on another
    mlflow.set_tracking_uri(team_server.uri)
    model = mlflow.pyfunc.load_model(f"runs:/{runs['sklearn'].info.run_id}/model")
    probe = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], dtype="float32")
    assert model.predict(probe).tolist() == [1, 0]

    # find the runs of the commit, and restore one, through the server
    monkeypatch.chdir(git_repo)
    capsys.readouterr()
    arguments = ["--tracking-uri", team_server.uri]
    assert cli(["runs", "--commit", commit[:10], "--json", *arguments]) == 0
    listed = json.loads(capsys.readouterr().out)["runs"]
    assert {r["run_id"] for r in listed} == {r.info.run_id for r in runs.values()}
    target = tmp_path / "restored"
    run_id = runs["sklearn"].info.run_id
    assert cli(["checkout", run_id, "--into", str(target), *arguments]) == 0, capsys.readouterr()
    for name in SCRIPTS:
        restored = (target / f"train_{name}.py").read_text()
        assert restored == (git_repo / f"train_{name}.py").read_text(), name
    assert git(target, "rev-parse", "HEAD") == commit
