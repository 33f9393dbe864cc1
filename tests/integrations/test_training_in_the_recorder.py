"""Lightning and Keras fits and Optuna studies recorded in mltrail's recorder process: the
script never imports MLflow for a new run.

Real scripts run as users run them (subprocesses in a git repository, a real sqlite store):
a fit's run opens beside the training, in the recorder, and holds what the in-process
recording gives it (params, epoch metrics, checkpoints, the model, a ``test``/``evaluate``
after the fit, the status of a fit that fails); a Lightning fit that resumes a checkpoint
continues the run the checkpoint names. A study's run and its trials' runs open there too; the
study keeps its run's id, and a training inside a trial still records into the trial's run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import git, user_env

MLTRAIL = str(Path(sys.executable).parent / "mltrail")

# What each script prints last: its process, and whether it ever imported MLflow.
REPORT = """
import json, os, sys


def report(**seen):
    seen.update(pid=os.getpid(), mlflow="mlflow" in sys.modules)
    print(json.dumps(seen))
"""

LIGHTNING = """
import torch
from torch.utils.data import DataLoader, TensorDataset
import lightning.pytorch as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

torch.manual_seed(0)
x = torch.randn(64, 4)
y = x.sum(dim=1, keepdim=True)
loader = DataLoader(TensorDataset(x, y), batch_size=16)


class Regressor(L.LightningModule):
    def __init__(self, lr=0.05, fail_at=None):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if self.hparams.fail_at is not None and self.current_epoch == self.hparams.fail_at:
            raise ValueError("diverged")
        loss = torch.nn.functional.mse_loss(self(batch[0]), batch[1])
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.nn.functional.mse_loss(self(batch[0]), batch[1]))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", torch.nn.functional.mse_loss(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def trainer(epochs, *callbacks):
    return L.Trainer(max_epochs=epochs, callbacks=list(callbacks), logger=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir="out")

"""

LIGHTNING_EXPLICIT = (
    LIGHTNING
    + """
from mltrail.integrations.lightning import TrailCallback

callback = TrailCallback(experiment="lightning")
checkpoint = ModelCheckpoint(dirpath="ckpt", monitor="val_loss", save_last=True)
stop = EarlyStopping(monitor="val_loss", patience=50)
fit = trainer(3, callback, checkpoint, stop)
fit.fit(Regressor(), loader, loader)
fit.test(dataloaders=loader, ckpt_path=None)
report(run=callback.run_id, best=checkpoint.best_model_path)
"""
)

# Under `mltrail run`: autolog's callback; a fit that fails, then one resumed from the first
# fit's checkpoint (whose callback state holds the run id).
LIGHTNING_AUTOLOGGED = (
    LIGHTNING
    + """
trainer(2, ModelCheckpoint(dirpath="ckpt", save_last=True)).fit(Regressor(), loader, loader)
try:
    trainer(3).fit(Regressor(fail_at=1), loader, loader)
except ValueError:
    pass
new_runs_only = "mlflow" not in sys.modules
# A resumed run is opened here: continued or forked as the store says.
trainer(4).fit(Regressor(), loader, loader, ckpt_path="ckpt/last.ckpt")
report(new_runs_only=new_runs_only)
"""
)


def run_script(repo: Path, store: str, body: str, *prefix: str) -> dict:
    (repo / "train.py").write_text(textwrap.dedent(REPORT) + textwrap.dedent(body))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "script")
    done = subprocess.run(
        [*prefix, sys.executable, "train.py"],
        cwd=repo,
        env=user_env(MLFLOW_TRACKING_URI=store),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def recorded_run(store: str, seen: dict, framework: str) -> tuple:
    """The MLflow client and the run of a script's callback, checked as the recorder records
    every run: the script never imported MLflow, and the run is FINISHED, of the script's
    process (not the recorder's), of its framework, without internal errors."""
    assert not seen["mlflow"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    run = client.get_run(seen["run"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.pid"] == str(seen["pid"])
    assert run.data.tags["mltrail.framework"] == framework
    assert "mltrail.errors" not in run.data.tags
    return client, run


def runs_of(client, pid: int) -> list:
    """The runs of the script whose process id is ``pid``, oldest first."""
    return client.search_runs(
        [client.get_experiment_by_name("Default").experiment_id],
        filter_string=f"tags.`mltrail.pid` = '{pid}'",
        order_by=["attributes.start_time ASC"],
    )


def test_a_lightning_callback_s_run_is_recorded_in_the_recorder(git_repo, module_store):
    pytest.importorskip("lightning.pytorch")
    seen = run_script(git_repo, module_store, LIGHTNING_EXPLICIT)
    client, run = recorded_run(module_store, seen, "lightning")
    tags, params = run.data.tags, run.data.params
    assert tags["mlflow.source.git.commit"] == git(git_repo, "rev-parse", "HEAD")
    assert tags["mltrail.git.dirty"] == "false"
    assert params["trainer.max_epochs"] == "3"
    assert params["lr"] == "0.05"
    assert params["batch_size"] == "16"
    assert params["optimizer.name"] == "SGD"
    assert params["early_stopping.patience"] == "50"
    assert params["model.total_params"] == "5"
    for name in ("train_loss_epoch", "val_loss"):
        assert [m.step for m in client.get_metric_history(seen["run"], name)] == [0, 1, 2]
    # trainer.test after the fit: into the fit's run, at its last epoch.
    assert [m.step for m in client.get_metric_history(seen["run"], "test_loss")] == [2]
    assert run.info.end_time is not None
    files = {a.path for a in client.list_artifacts(seen["run"], "checkpoints")}
    assert "checkpoints/last.ckpt" in files
    assert f"checkpoints/{Path(seen['best']).name}" in files
    assert tags["mltrail.model.weights"] == f"best:{Path(seen['best']).name}"
    import mlflow.pytorch
    import torch

    mlflow.set_tracking_uri(module_store)

    model = mlflow.pytorch.load_model(f"runs:/{seen['run']}/model")
    assert model(torch.zeros(2, 4)).shape == (2, 1)
    requirements = Path(
        mlflow.artifacts.download_artifacts(f"runs:/{seen['run']}/model/requirements.txt")
    ).read_text()
    assert "lightning==" in requirements
    assert "torch==" in requirements


def test_autologged_lightning_fits_failed_and_resumed(git_repo, module_store):
    pytest.importorskip("lightning.pytorch")
    seen = run_script(git_repo, module_store, LIGHTNING_AUTOLOGGED, MLTRAIL, "run", "--")
    assert seen["new_runs_only"]  # the new runs' fits never imported MLflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(module_store)
    runs = runs_of(client, seen["pid"])
    assert len(runs) == 2, [r.data.tags for r in runs]
    first, failed = runs
    assert failed.info.status == "FAILED"
    assert failed.data.tags["mltrail.exception.type"] == "ValueError"
    assert "diverged" in failed.data.tags["mltrail.exception.message"]
    assert [m.step for m in client.get_metric_history(failed.info.run_id, "val_loss")] == [0]
    # The resumed fit continued the first fit's run, past its two epochs.
    assert first.info.status == "FINISHED"
    assert first.data.tags["mltrail.command"].endswith("train.py")
    steps = [m.step for m in client.get_metric_history(first.info.run_id, "val_loss")]
    assert steps == [0, 1, 2, 3]
    assert first.data.tags["mltrail.lightning.resumed_from"].endswith("last.ckpt")


KERAS = """
import numpy as np
import keras

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True)


def dense():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    return model


class Subclassed(keras.Model):  # no get_config: its weights are its model
    def __init__(self, units):
        super().__init__()
        self.out = keras.layers.Dense(units)

    def call(self, inputs):
        return self.out(inputs)

"""

KERAS_EXPLICIT = (
    KERAS
    + """
from mltrail.integrations.keras import TrailCallback

callback = TrailCallback(experiment="keras", monitor="val_loss")
model = dense()
model.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0, callbacks=[callback])
model.evaluate(x, y, verbose=0, callbacks=[callback])
report(run=callback.run_id)
"""
)

# Under `mltrail run`: a subclassed model, and a fit stopped by an error of the script's.
KERAS_AUTOLOGGED = (
    KERAS
    + """
class Stop(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("stopped by the script")

net = Subclassed(1)
net.compile(optimizer="adam", loss="mse")
net.fit(x, y, epochs=2, batch_size=16, verbose=0)
net.evaluate(x, y, verbose=0)
try:
    dense().fit(x, y, epochs=3, verbose=0, callbacks=[Stop()])
except RuntimeError:
    pass
report()
"""
)


def test_a_keras_callback_s_run_is_recorded_in_the_recorder(git_repo, module_store, tmp_path):
    pytest.importorskip("keras")
    seen = run_script(git_repo, module_store, KERAS_EXPLICIT)
    client, run = recorded_run(module_store, seen, "keras")
    params = run.data.params
    assert params["epochs"] == "3"
    assert params["batch_size"] == "16"
    assert params["optimizer.learning_rate"].startswith("0.05")
    for name in ("loss", "val_loss", "mae"):
        assert [m.step for m in client.get_metric_history(seen["run"], name)] == [0, 1, 2]
    # evaluate() after the fit: into the fit's run, at its last epoch.
    assert [m.step for m in client.get_metric_history(seen["run"], "test_loss")] == [2]
    files = {a.path for a in client.list_artifacts(seen["run"], "checkpoints")}
    index = json.loads(
        Path(
            client.download_artifacts(seen["run"], "checkpoints/index.json", str(tmp_path))
        ).read_text()
    )
    assert index["aliases"]["best"] == "checkpoints/best.keras"
    assert set(index["aliases"].values()) <= files
    assert "model_summary.txt" in {a.path for a in client.list_artifacts(seen["run"])}
    import mlflow

    mlflow.set_tracking_uri(module_store)
    model = mlflow.pyfunc.load_model(f"runs:/{seen['run']}/model")
    assert model.predict(np.zeros((2, 4), dtype="float32")).shape == (2, 1)


def test_autologged_keras_fits_subclassed_and_failed(git_repo, module_store):
    pytest.importorskip("keras")
    seen = run_script(git_repo, module_store, KERAS_AUTOLOGGED, MLTRAIL, "run", "--")
    assert not seen["mlflow"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(module_store)
    subclassed, failed = runs_of(client, seen["pid"])
    assert subclassed.info.status == "FINISHED"
    assert subclassed.data.tags["mltrail.command"].endswith("train.py")
    assert "mltrail.errors" not in subclassed.data.tags
    steps = [m.step for m in client.get_metric_history(subclassed.info.run_id, "test_loss")]
    assert steps == [1]  # evaluate() after the autologged fit, into its run
    files = {a.path for a in client.list_artifacts(subclassed.info.run_id, "model")}
    assert "model/model.weights.h5" in files
    assert failed.info.status == "FAILED"
    assert failed.data.tags["mltrail.exception.type"] == "RuntimeError"
    assert [m.step for m in client.get_metric_history(failed.info.run_id, "loss")] == [0, 1]


# A study in Optuna's own sqlite storage, loaded again by a second process.
OPTUNA_EXPLICIT = """
import optuna
from mltrail.integrations.optuna import TrailCallback

optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(study_name="quadratic", storage="sqlite:///study.db",
                            load_if_exists=True, sampler=optuna.samplers.RandomSampler(seed=0))
callback = TrailCallback(experiment="tuning")
study.optimize(lambda trial: (trial.suggest_float("x", -3, 3) - 1) ** 2, n_trials=4,
               callbacks=[callback])
report(run=callback.run_id, kept=study.user_attrs.get("mltrail.run_id"))
"""

# Under `mltrail run`: a scikit-learn fit in the objective is its trial's run, not one of its own.
OPTUNA_AUTOLOGGED = """
import numpy as np
import optuna
from sklearn.linear_model import LogisticRegression

optuna.logging.set_verbosity(optuna.logging.WARNING)
rng = np.random.default_rng(0)
x = rng.normal(size=(60, 3))
y = (x[:, 0] > 0).astype(int)


def objective(trial):
    model = LogisticRegression(C=trial.suggest_float("C", 0.01, 10, log=True)).fit(x, y)
    return model.score(x, y)


study = optuna.create_study(direction="maximize")
study.optimize(objective, n_trials=3)
report(kept=study.user_attrs.get("mltrail.run_id"))
"""


def test_an_optuna_study_is_recorded_in_the_recorder_and_goes_on_in_its_run(git_repo, module_store):
    pytest.importorskip("optuna")
    seen = run_script(git_repo, module_store, OPTUNA_EXPLICIT)
    client, run = recorded_run(module_store, seen, "optuna")
    assert seen["kept"] == seen["run"]  # kept with the study, once the recorder answered
    assert run.data.params["study_name"] == "quadratic"
    assert run.data.params["sampler"] == "RandomSampler"
    assert run.data.tags["mlflow.source.git.commit"] == git(git_repo, "rev-parse", "HEAD")
    assert [m.step for m in client.get_metric_history(seen["run"], "value")] == [0, 1, 2, 3]
    best = client.get_metric_history(seen["run"], "best_value")
    assert [m.value for m in best] == sorted((m.value for m in best), reverse=True)
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{seen['run']}'"
    )
    assert sorted(c.info.run_name for c in children) == [f"trial-{n}" for n in range(4)]
    assert all(c.info.status == "FINISHED" and "x" in c.data.params for c in children)
    files = {a.path for a in client.list_artifacts(seen["run"], "optuna")}
    assert {"optuna/optimization_history.png", "optuna/param_importances.json"} <= files

    # The study loaded again by another process goes on in the same run.
    again = run_script(git_repo, module_store, OPTUNA_EXPLICIT)
    assert again["run"] == seen["run"]
    steps = [m.step for m in client.get_metric_history(seen["run"], "value")]
    assert steps == list(range(8))
    assert client.get_run(seen["run"]).info.status == "FINISHED"


def test_an_autologged_study_with_a_training_in_its_objective(git_repo, module_store):
    pytest.importorskip("optuna")
    seen = run_script(git_repo, module_store, OPTUNA_AUTOLOGGED, MLTRAIL, "run", "--")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(module_store)
    (study,) = [r for r in runs_of(client, seen["pid"]) if "mlflow.parentRunId" not in r.data.tags]
    assert seen["kept"] == study.info.run_id
    assert study.info.status == "FINISHED"
    assert study.data.tags["mltrail.framework"] == "optuna"
    assert "mltrail.errors" not in study.data.tags
    trials = client.search_runs(
        [study.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{study.info.run_id}'",
    )
    assert sorted(t.info.run_name for t in trials) == ["trial-0", "trial-1", "trial-2"]
    for trial in trials:  # each fit recorded into its trial's run: the estimator's params
        assert trial.info.status == "FINISHED"
        assert float(trial.data.params["C"]) > 0
        assert trial.data.tags["mltrail.optuna.state"] == "COMPLETE"
        assert "value" in trial.data.metrics
    assert len(runs_of(client, seen["pid"])) == 1 + 3  # no run of a fit's own
