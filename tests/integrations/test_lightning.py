"""Lightning adapter: real fits of a tiny model on random tensors, asserted in a real store."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning.pytorch")

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import MLFlowLogger  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import mltrail  # noqa: E402
from mltrail.errors import MltrailError  # noqa: E402
from mltrail.integrations.lightning import TrailCallback  # noqa: E402

FEATURES = 4


@dataclasses.dataclass
class DataConfig:
    scale: float = 1.0
    source: str = "random"


class RegressorMixin:
    """A two-layer MLP; the same body serves both Lightning namespaces."""

    def __init__(self, hidden: int = 8, lr: float = 0.01, **extra: object) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )
        self.error: BaseException | None = None  # raised in training_step from epoch 1 on

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if self.error is not None and self.current_epoch >= 1:
            raise self.error
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def on_train_epoch_end(self):
        # Logged after the callbacks' own on_train_epoch_end: must still reach the run.
        self.log("epoch_marker", float(self.current_epoch))

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


class Regressor(RegressorMixin, L.LightningModule):
    pass


class RandomData(L.LightningDataModule):
    def __init__(self, batch_size: int = 16, rows: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self):
        return loader(self.hparams.rows, self.hparams.batch_size)

    def val_dataloader(self):
        return loader(32, self.hparams.batch_size, seed=1)


def loader(rows: int = 64, batch_size: int = 16, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, FEATURES, generator=generator)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(rows, 1, generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def trainer(root: Path, module=L, **overrides):
    settings = dict(
        max_epochs=3,
        limit_train_batches=4,
        limit_val_batches=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    settings.update(overrides)
    return module.Trainer(**settings)


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def steps(client, run_id: str, key: str) -> list[int]:
    return [step for step, _ in history(client, run_id, key)]


def artifact_json(run_id: str, path: str) -> dict:
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)
    return json.loads(Path(local).read_text())


class SeenValLoss(L.Callback):
    """The user's view of val_loss after each real validation."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.values.append(float(trainer.callback_metrics["val_loss"]))


def test_fit_records_params_metrics_checkpoints_model_and_test_metrics(
    client, tmp_path, monkeypatch
):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")  # restored afterwards; seed_everything sets it
    L.seed_everything(7)
    model = Regressor(
        hidden=8,
        lr=0.01,
        arch={"depth": 2, "activation": "relu"},
        data_cfg=DataConfig(scale=2.5),
        extra_cfg=OmegaConf.create({"opt": {"momentum": 0.9}}),
    )
    data = RandomData(batch_size=16)
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="val_loss", save_top_k=1, save_last=True
    )
    seen = SeenValLoss()
    callback = TrailCallback(experiment="lightning-fit", registered_model_name="lightning-mlp")
    fit_trainer = trainer(
        tmp_path,
        callbacks=[callback, seen, checkpoint, EarlyStopping("val_loss", patience=5)],
    )
    fit_trainer.fit(model, datamodule=data)
    run_id = callback.run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "mltrail.errors" not in run.data.tags

    params = run.data.params
    assert params["hidden"] == "8" and params["lr"] == "0.01"
    assert params["arch.depth"] == "2" and params["arch.activation"] == "relu"
    assert params["data_cfg.scale"] == "2.5" and params["extra_cfg.opt.momentum"] == "0.9"
    assert params["batch_size"] == "16" and params["rows"] == "64"  # the datamodule's
    assert params["trainer.max_epochs"] == "3" and params["trainer.precision"] == "32-true"
    assert params["seed"] == "7"
    assert params["optimizer.name"] == "Adam" and params["optimizer.lr"] == "0.01"
    assert params["optimizer.betas"] == "(0.9, 0.999)"
    assert params["lr_scheduler.name"] == "StepLR" and params["lr_scheduler.gamma"] == "0.5"
    assert params["early_stopping.monitor"] == "val_loss"
    assert params["early_stopping.patience"] == "5"
    total = sum(p.numel() for p in model.parameters())
    assert params["model.total_params"] == str(total) == params["model.trainable_params"]

    # One value per epoch at step = epoch; the sanity check is not among them.
    val = history(client, run_id, "val_loss")
    assert [step for step, _ in val] == [0, 1, 2]
    assert [value for _, value in val] == pytest.approx(seen.values)
    assert steps(client, run_id, "train_loss_epoch") == [0, 1, 2]
    assert history(client, run_id, "epoch_marker") == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert [v for _, v in history(client, run_id, "lr-Adam")] == pytest.approx(
        [0.01, 0.005, 0.0025]
    )
    # EarlyStopping's outcome at the last epoch; it did not stop the training.
    assert history(client, run_id, "early_stopping.best_score") == [
        (2, pytest.approx(min(seen.values)))
    ]
    assert steps(client, run_id, "early_stopping.wait_count") == [2]
    assert "early_stopping.stopped_epoch" not in run.data.metrics
    assert not any(key.startswith("step/") for key in run.data.metrics)

    # Checkpoints: the user's files, uploaded with their score; nothing local deleted.
    index = artifact_json(run_id, "checkpoints/index.json")
    best_name = f"checkpoints/{Path(checkpoint.best_model_path).name}"
    assert index["aliases"] == {"best": best_name, "latest": "checkpoints/last.ckpt"}
    assert run.data.tags["mltrail.checkpoint.best"] == best_name
    assert index["files"][best_name]["metrics"]["val_loss"] == pytest.approx(
        float(checkpoint.best_model_score)
    )
    assert index["files"][best_name]["source"] == checkpoint.best_model_path
    uploaded = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    assert {best_name, "checkpoints/last.ckpt"} <= uploaded
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted(
        [Path(checkpoint.best_model_path).name, "last.ckpt"]
    )

    # The model: the best checkpoint's weights, loadable with pyfunc, with a signature.
    assert run.data.tags["mltrail.model.weights"] == f"best:{Path(best_name).name}"
    loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert tuple(loaded.metadata.signature.inputs.inputs[0].shape) == (-1, FEATURES)
    best = Regressor.load_from_checkpoint(checkpoint.best_model_path, weights_only=False).eval()
    x = np.random.default_rng(0).normal(size=(3, FEATURES)).astype("float32")
    with torch.no_grad():
        expected = best(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(loaded.predict(x), expected, rtol=1e-5)
    # Its requirements are pinned, not inferred: the module's base (lightning) included, and
    # torch without a local label (+cpu), which no index serves.
    requirements = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model/requirements.txt")
    pins = Path(requirements).read_text().split()
    assert {"torch", "cloudpickle", "lightning"} <= {pin.split("==")[0] for pin in pins}
    assert not any("+" in pin for pin in pins)
    # ... while the user's model keeps its last weights and its training mode.
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["state_dict"]
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, last[name])
    assert any(a.path == "model_summary.txt" for a in client.list_artifacts(run_id))
    versions = client.search_model_versions("name='lightning-mlp'")
    assert [v.run_id for v in versions] == [run_id]

    # trainer.test afterwards adds the test metrics to the same, finished run.
    fit_trainer.test(model, dataloaders=loader(32, seed=2))
    run = client.get_run(run_id)
    assert history(client, run_id, "test_loss")[0][0] == 2
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_step_level_metrics_into_a_given_trail(client, tmp_path):
    with mltrail.start_run(experiment="lightning-steps") as trail:
        callback = TrailCallback(trail, log_every_n_steps=2, checkpoints="none", log_model=False)
        trainer(
            tmp_path,
            callbacks=[callback],
            enable_checkpointing=False,
            check_val_every_n_epoch=2,
        ).fit(Regressor(), loader(), loader(32, seed=1))
        assert callback.run_id == trail.run_id
        assert client.get_run(trail.run_id).info.status == "RUNNING"  # the owner ends it
    run = client.get_run(trail.run_id)
    assert run.info.status == "FINISHED"
    # Global optimizer steps 1..12; every second one, under step/.
    assert steps(client, trail.run_id, "step/train_loss_step") == [2, 4, 6, 8, 10, 12]
    # Validation ran in epoch 1 only: its value is not repeated at epoch 2.
    assert steps(client, trail.run_id, "val_loss") == [1]
    assert steps(client, trail.run_id, "train_loss_epoch") == [0, 1, 2]
    assert run.data.params["batch_size"] == "16"  # read from the dataloader
    assert not client.list_artifacts(trail.run_id, "checkpoints")


def test_early_stopping_callbacks_are_reported_under_the_unified_names(client, tmp_path):
    callback = TrailCallback(experiment="lightning-stop", checkpoints="none", log_model=False)
    stoppers = [
        EarlyStopping("val_loss", patience=5),
        # epoch_marker grows 0, 1, 2...: no improvement at epoch 1 stops the training there.
        EarlyStopping("epoch_marker", mode="min", patience=0, check_on_train_epoch_end=True),
    ]
    trainer(tmp_path, max_epochs=4, callbacks=[callback, *stoppers]).fit(
        Regressor(), loader(), loader(32, seed=1)
    )
    run = client.get_run(callback.run_id)
    params, metrics = run.data.params, run.data.metrics
    assert params["early_stopping.monitor"] == "val_loss"
    assert params["early_stopping_2.monitor"] == "epoch_marker"
    assert params["early_stopping_2.mode"] == "min" and params["early_stopping_2.patience"] == "0"
    assert steps(client, callback.run_id, "val_loss") == [0, 1]
    assert history(client, callback.run_id, "early_stopping_2.stopped_epoch") == [(1, 1.0)]
    assert metrics["early_stopping_2.best_score"] == 0.0
    assert metrics["early_stopping_2.wait_count"] == 1
    assert "early_stopping.stopped_epoch" not in metrics  # the first one did not stop it
    assert steps(client, callback.run_id, "early_stopping.wait_count") == [1]


def test_resume_from_checkpoint_continues_the_run(client, tmp_path):
    def fit(max_epochs: int, ckpt_path: str | None = None) -> TrailCallback:
        callback = TrailCallback(experiment="lightning-resume", log_model=False)
        checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
        trainer(tmp_path, max_epochs=max_epochs, callbacks=[callback, checkpoint]).fit(
            Regressor(), loader(), loader(32, seed=1), ckpt_path=ckpt_path
        )
        return callback

    first = fit(2)
    last = tmp_path / "ckpt" / "last.ckpt"
    assert torch.load(last, weights_only=False)["callbacks"]["TrailCallback"] == {
        "run_id": first.run_id
    }
    second = fit(4, ckpt_path=str(last))
    assert second.run_id == first.run_id
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.resume_count"] == "1"
    assert run.data.tags["mltrail.lightning.resumed_from"] == str(last)
    assert steps(client, first.run_id, "val_loss") == [0, 1, 2, 3]
    assert steps(client, first.run_id, "train_loss_epoch") == [0, 1, 2, 3]
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_training_exception_fails_the_run_and_propagates(client, tmp_path):
    model = Regressor()
    model.error = RuntimeError("loss exploded")
    callback = TrailCallback(experiment="lightning-fail", log_model=False)
    with pytest.raises(RuntimeError) as raised:
        trainer(tmp_path, callbacks=[callback]).fit(model, loader(), loader(32, seed=1))
    assert raised.value is model.error
    run = client.get_run(callback.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mltrail.exception.type"] == "RuntimeError"
    assert steps(client, callback.run_id, "val_loss") == [0]  # epoch 0 completed
    assert steps(client, callback.run_id, "train_loss_epoch") == [0]
    # The checkpoint of epoch 0, written by Lightning's default ModelCheckpoint, was kept.
    assert client.list_artifacts(callback.run_id, "checkpoints")


def test_keyboard_interrupt_ends_the_run_killed(client, tmp_path):
    model = Regressor()
    model.error = KeyboardInterrupt()
    callback = TrailCallback(experiment="lightning-kill", log_model=False, checkpoints="none")
    previous = signal.getsignal(signal.SIGINT)
    try:
        # Lightning turns Ctrl-C into a graceful shutdown that ends with sys.exit(1).
        with pytest.raises(SystemExit):
            trainer(tmp_path, callbacks=[callback]).fit(model, loader(), loader(32, seed=1))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert client.get_run(callback.run_id).info.status == "KILLED"


def test_an_error_inside_mltrail_is_counted_in_the_run_and_training_goes_on(
    client, tmp_path, monkeypatch
):
    import mltrail.integrations.lightning as adapter

    monkeypatch.setenv("MLTRAIL_STRICT", "0")  # as for users

    def broken(optimizers):
        raise RuntimeError("no learning rates today")

    monkeypatch.setattr(adapter.kernel, "learning_rates", broken)  # read at each epoch start
    callback = TrailCallback(experiment="lightning-errors", checkpoints="none", log_model=False)
    with pytest.warns(mltrail.MltrailWarning, match="lightning: on_train_epoch_start failed"):
        trainer(tmp_path, max_epochs=2, callbacks=[callback]).fit(
            Regressor(), loader(), loader(32, seed=1)
        )
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.errors"] == "2"  # the run's count, not the process-wide one
    assert steps(client, callback.run_id, "val_loss") == [0, 1]
    assert steps(client, callback.run_id, "train_loss_epoch") == [0, 1]


def test_records_into_the_run_of_an_mlflow_logger(client, module_store, tmp_path):
    mlflow_logger = MLFlowLogger(experiment_name="lightning-logger", tracking_uri=module_store)
    callback = TrailCallback(log_model=False, checkpoints="none")
    trainer(
        tmp_path,
        max_epochs=2,
        logger=mlflow_logger,
        callbacks=[callback],
        enable_checkpointing=False,
    ).fit(Regressor(), loader(), loader(32, seed=1))
    assert callback.run_id == mlflow_logger.run_id
    runs = client.search_runs([mlflow_logger.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"  # set by the logger, which owns the run
    assert run.data.params["optimizer.name"] == "Adam"
    assert run.data.tags["mltrail.framework"] == "lightning"
    assert "mltrail.resume_count" not in run.data.tags
    # The logger's metric values on its global-step axis, not mixed with epoch steps.
    assert steps(client, run.info.run_id, "val_loss") == [3, 7]
    assert steps(client, run.info.run_id, "lr-Adam") == [0, 1]


def test_autolog_adds_the_callback_for_the_call_only(client, tmp_path):
    original_fit = L.Trainer.fit
    mltrail.autolog(
        frameworks=["lightning"],
        experiment="lightning-autolog",
        log_model=False,
        checkpoints="none",
        silent=True,
    )
    try:
        autologged = trainer(tmp_path, max_epochs=2, enable_checkpointing=False)
        before = list(autologged.callbacks)
        model = Regressor()
        autologged.fit(model, loader(), loader(32, seed=1))
        assert autologged.callbacks == before
        autologged.test(model, dataloaders=loader(32, seed=2))
        assert autologged.callbacks == before
    finally:
        mltrail.autolog(frameworks=["lightning"], disable=True, silent=True)
    assert L.Trainer.fit is original_fit
    experiment = client.get_experiment_by_name("lightning-autolog")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert steps(client, run.info.run_id, "val_loss") == [0, 1]
    assert "test_loss" in run.data.metrics


def test_pytorch_lightning_namespace_and_last_state_without_model_checkpoint(client, tmp_path):
    pl = pytest.importorskip("pytorch_lightning")

    class PLRegressor(RegressorMixin, pl.LightningModule):
        pass

    callback = TrailCallback(experiment="lightning-pl", log_model=False)
    trainer(
        tmp_path, module=pl, max_epochs=2, callbacks=[callback], enable_checkpointing=False
    ).fit(PLRegressor(), loader(), loader(32, seed=1))
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer.lr"] == "0.01"
    assert steps(client, callback.run_id, "val_loss") == [0, 1]
    index = artifact_json(callback.run_id, "checkpoints/index.json")
    assert index["aliases"] == {"latest": "checkpoints/last.ckpt"}
    assert index["files"]["checkpoints/last.ckpt"]["step"] == 1
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing written into the user's folders


def test_bad_arguments_fail_at_construction():
    with pytest.raises(MltrailError, match="checkpoints"):
        TrailCallback(checkpoints="some")
    with pytest.raises(MltrailError, match="log_every_n_steps"):
        TrailCallback(log_every_n_steps=0)
    with pytest.raises(MltrailError, match="flush_timout"):
        TrailCallback(flush_timout=3)
    with (
        mltrail.start_run(experiment="lightning-args") as trail,
        pytest.raises(MltrailError, match="not both"),
    ):
        TrailCallback(trail, experiment="other")


@pytest.mark.parametrize("missing", [("torch",), ("lightning", "pytorch_lightning")])
def test_import_without_lightning_names_the_extra(monkeypatch, missing):
    import importlib
    import sys

    monkeypatch.delitem(sys.modules, "mltrail.integrations.lightning")
    for name in missing:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(ImportError, match=r'pip install "mltrail\[lightning\]"'):
        importlib.import_module("mltrail.integrations.lightning")


def test_resume_from_an_older_checkpoint_forks_the_run(client, tmp_path):
    folder = tmp_path / "ckpt"

    def fit(max_epochs: int, ckpt_path: str | None = None) -> TrailCallback:
        callback = TrailCallback(experiment="lightning-fork", log_model=False)
        saver = ModelCheckpoint(dirpath=folder, filename="{epoch}", save_top_k=-1)
        trainer(tmp_path, max_epochs=max_epochs, callbacks=[callback, saver]).fit(
            Regressor(), loader(), loader(32, seed=1), ckpt_path=ckpt_path
        )
        return callback

    first = fit(4)
    older = folder / "epoch=1.ckpt"  # saved after epoch 1: the training restarts at epoch 2
    second = fit(3, ckpt_path=str(older))
    assert second.run_id != first.run_id
    tags = client.get_run(second.run_id).data.tags
    assert (tags["mltrail.forked_from"], tags["mltrail.forked_at_step"]) == (first.run_id, "1")
    assert tags["mltrail.resumed_from"] == str(older)
    parent = client.get_metric_history(first.run_id, "val_loss")
    forked = client.get_metric_history(second.run_id, "val_loss")
    assert sorted(m.step for m in forked) == [0, 1, 2]
    copied = sorted((m.step, m.value, m.timestamp) for m in forked)[:2]
    assert copied == sorted((m.step, m.value, m.timestamp) for m in parent)[:2]
    assert steps(client, first.run_id, "val_loss") == [0, 1, 2, 3]
