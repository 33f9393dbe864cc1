"""Canary secrets planted everywhere a user puts them; after runs of every adapter, none of them is
found in the MLflow store (database and artifacts), the spool, the snapshot commits or the
process output, while non-secret neighbours keep their values."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import free_port, git
from tests.reliability.conftest import python_env

pytest.importorskip("lightning")
pytest.importorskip("keras")
pytest.importorskip("xgboost")
pytest.importorskip("sklearn")


def canary(source: str) -> str:
    return f"cnry{source}{uuid.uuid4().hex[:16]}"


CANARIES = {
    name: canary(name)
    for name in (
        "remote",  # in the git remote URL
        "uri",  # in the tracking URI's user-info
        "envpassword",  # MLFLOW_TRACKING_PASSWORD
        "apikey",  # param api_key
        "hftoken",  # param hf_token
        "password",  # param password
        "database",  # a database URI inside a param
        "dotenv",  # a modified .env file in the dirty tree
        "exception",  # the message of the user's exception
    )
}

SCRIPT = """
import json, os, sys
import numpy as np

C = json.loads(os.environ["CANARIES"])
PARAMS = {
    "api_key": C["apikey"],
    "hf_token": C["hftoken"],
    "password": C["password"],
    "db_uri": f"postgresql://trainer:{C['database']}@db.internal:5432/features",
    "use_cls_token": True,
    "host": "db.internal",
}
x = np.random.default_rng(0).normal(size=(40, 3)).astype("float32")
y = (x.sum(axis=1) > 0).astype("int64")
ids = {}

# Lightning: the secrets are the module's hyperparameters. (No checkpoint or model upload: those
# are the user's own bytes, and Lightning stores the hyperparameters inside them.)
import torch
import lightning.pytorch as L
from mltrail.integrations.lightning import TrailCallback as LightningCallback

class Tiny(L.LightningModule):
    def __init__(self, **hparams):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

data = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y, dtype=torch.float32)[:, None]),
    batch_size=20)
callback = LightningCallback(experiment="secrets", checkpoints="none", log_model=False)
L.Trainer(max_epochs=1, callbacks=[callback], logger=False, enable_checkpointing=False,
          enable_progress_bar=False, enable_model_summary=False).fit(Tiny(**PARAMS), data)
ids["lightning"] = callback.run_id

# Keras: the user's config logged into the run the callback records into.
import keras
import mltrail
from mltrail.integrations.keras import TrailCallback as KerasCallback

with mltrail.start_run(experiment="secrets", run_name="keras") as trail:
    trail.log_params(PARAMS)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[KerasCallback(trail=trail, checkpoints="best")])
    ids["keras"] = trail.run_id

# scikit-learn: secrets in run tags.
from sklearn.linear_model import LogisticRegression
from mltrail.integrations.sklearn import TrackedEstimator

estimator = TrackedEstimator(LogisticRegression(), experiment="secrets", tags=PARAMS)
estimator.fit(x, y)
ids["sklearn"] = estimator.run_id_

# XGBoost: secrets among the training parameters (XGBoost ignores unknown ones).
import xgboost as xgb
from mltrail.integrations.xgboost import TrailCallback as XGBoostCallback

callback = XGBoostCallback(experiment="secrets", checkpoint_every=1)
xgb.train({"objective": "binary:logistic", "max_depth": 2, "verbosity": 0, **PARAMS},
          xgb.DMatrix(x, label=y), 2, callbacks=[callback])
ids["xgboost"] = callback.run_id

# The core API: the user's exception carries a secret in its message.
try:
    with mltrail.start_run(experiment="secrets", run_name="failing") as trail:
        ids["failing"] = trail.run_id
        raise RuntimeError(
            f"cannot reach https://svc:{C['exception']}@hub.internal/api (token={C['exception']})")
except RuntimeError:
    pass

# Offline: the store is unreachable, so everything lands in the spool.
offline = mltrail.start_run(experiment="secrets", tracking_uri=os.environ["DEAD_URI"],
                            start_timeout=5, **{"capture": True})
offline.log_params(PARAMS)
offline.log_metrics({"loss": 0.5}, step=0)
offline.end()
ids["offline"] = offline.run_id
print("ids " + json.dumps(ids), flush=True)
"""


def found_in(folder: Path, secrets: dict[str, str]) -> list[str]:
    """``source: file`` for every canary found in any file under ``folder``."""
    hits = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{name}: {path}" for name, value in secrets.items() if value.encode() in data]
    return hits


def snapshot_contents(repo: Path, commit: str) -> bytes:
    """The commit object and every blob of its tree."""
    contents = [subprocess.run(["git", "cat-file", "commit", commit], cwd=repo,
                               capture_output=True, check=True).stdout]  # fmt: skip
    listing = subprocess.run(["git", "ls-tree", "-r", "-z", commit], cwd=repo,
                             capture_output=True, check=True).stdout  # fmt: skip
    for entry in filter(None, listing.split(b"\0")):
        _, kind, sha = entry.split(b"\t")[0].split()
        if kind == b"blob":
            contents.append(subprocess.run(["git", "cat-file", "blob", sha.decode()], cwd=repo,
                                           capture_output=True, check=True).stdout)  # fmt: skip
    return b"\n".join(contents)


@pytest.mark.server
def test_canary_secrets_never_leave_the_process(
    mlflow_server, git_repo: Path, tmp_path: Path
) -> None:
    git(git_repo, "remote", "add", "origin",
        f"https://x-access-token:{CANARIES['remote']}@github.com/acme/model.git")  # fmt: skip
    (git_repo / ".env").write_text("API_TOKEN=placeholder\nDATA_DIR=/data\n")
    git(git_repo, "add", ".env")
    git(git_repo, "commit", "-q", "-m", "env template")
    (git_repo / ".env").write_text(
        f"API_TOKEN={CANARIES['dotenv']}\nDATA_DIR=/data\nUSE_CLS_TOKEN=true\n"
    )
    (git_repo / "train.py").write_text(SCRIPT)
    spool = tmp_path / "spool"
    host_port = mlflow_server.uri.removeprefix("http://")
    env = python_env(
        CANARIES=json.dumps(CANARIES),
        MLFLOW_TRACKING_URI=f"http://alice:{CANARIES['uri']}@{host_port}",
        MLFLOW_TRACKING_USERNAME="alice",
        MLFLOW_TRACKING_PASSWORD=CANARIES["envpassword"],
        DEAD_URI=f"http://alice:{CANARIES['uri']}@127.0.0.1:{free_port()}",
        MLTRAIL_SPOOL_DIR=str(spool),
        MLTRAIL_STRICT="0",  # as users run it: the offline run is expected to warn
        MLTRAIL_SYSTEM_METRICS="false",
        KERAS_BACKEND="torch",
        OMP_NUM_THREADS="1",
    )
    result = subprocess.run(
        [sys.executable, "train.py"], cwd=git_repo, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    [ids] = [json.loads(line[4:]) for line in result.stdout.splitlines() if line.startswith("ids ")]

    # every run is complete, so the search below looked at real data
    client = MlflowClient(mlflow_server.uri)
    runs = {name: client.get_run(run_id) for name, run_id in ids.items() if name != "offline"}
    assert {name: r.info.status for name, r in runs.items()} == {
        "lightning": "FINISHED",
        "keras": "FINISHED",
        "sklearn": "FINISHED",
        "xgboost": "FINISHED",
        "failing": "FAILED",
    }
    snapshots = git(git_repo, "for-each-ref", "--format=%(objectname)", "refs/mltrail/").split()
    assert {r.data.tags["mltrail.git.snapshot"] for r in runs.values()} <= set(snapshots)
    assert len(snapshots) == 6  # one per run, the offline one included
    assert (spool / ids["offline"] / "journal.jsonl").is_file()  # the offline run is journaled

    # the search: database, artifacts and server log, spool, snapshot commit, process output
    hits = found_in(mlflow_server.folder, CANARIES) + found_in(spool, CANARIES)
    snapshot = b"".join(snapshot_contents(git_repo, commit) for commit in snapshots)
    hits += [f"{name}: snapshot" for name, value in CANARIES.items() if value.encode() in snapshot]
    output = result.stdout + result.stderr
    hits += [
        f"{name}: output: {line[:300]}"
        for line in output.splitlines()
        for name, value in CANARIES.items()
        if value in line
    ]
    assert not hits, hits

    # non-secret neighbours keep their values
    for name in ("lightning", "keras", "xgboost"):
        params = runs[name].data.params
        assert params["use_cls_token"] == "True", name
        assert params["host"] == "db.internal", name
        assert params["api_key"] == params["hf_token"] == params["password"] == "***", name
        assert params["db_uri"] == "postgresql://trainer:***@db.internal:5432/features", name
    tags = runs["sklearn"].data.tags
    assert tags["host"] == "db.internal" and tags["use_cls_token"] == "True"
    assert tags["api_key"] == "***"
    failing = runs["failing"].data.tags
    assert failing["mltrail.exception.type"] == "RuntimeError"
    assert "hub.internal/api" in failing["mltrail.exception.message"]
    assert runs["keras"].data.tags["mlflow.source.git.repoURL"] == (
        "https://github.com/acme/model.git"
    )
    assert b"DATA_DIR=/data\nUSE_CLS_TOKEN=true" in snapshot  # the .env keeps its other lines
    diff = Path(client.download_artifacts(ids["keras"], "mltrail/git.diff")).read_text()
    assert "+API_TOKEN=***" in diff and "+USE_CLS_TOKEN=true" in diff
    # the user's own files are untouched
    assert CANARIES["dotenv"] in (git_repo / ".env").read_text()
