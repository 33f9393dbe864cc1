"""Lightning adapter under DDP: two spawned CPU processes record one run, written by rank 0."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning.pytorch")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from mltrail.integrations.lightning import TrailCallback  # noqa: E402


class TinyRegressor(L.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class RunIdPerRank(L.Callback):
    """Writes, on every rank, the run id its TrailCallback knows."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        [trail_callback] = [cb for cb in trainer.callbacks if isinstance(cb, TrailCallback)]
        (self.folder / str(trainer.global_rank)).write_text(str(trail_callback.run_id))


def loader(seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=4)


def test_ddp_spawn_records_one_run_from_rank_zero(client, tmp_path):
    callback = TrailCallback(
        experiment="lightning-ddp", log_model=False, checkpoints="none", capture=False
    )
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    trainer = L.Trainer(
        strategy="ddp_spawn",
        accelerator="cpu",
        devices=2,
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=[callback, RunIdPerRank(ranks)],
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(TinyRegressor(), loader(0), loader(1))

    experiment = client.get_experiment_by_name("lightning-ddp")
    [run] = client.search_runs([experiment.experiment_id])
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.pid"] != str(os.getpid())  # written by the spawned rank 0
    assert run.data.params["trainer.devices"] == "2"
    assert run.data.params["trainer.strategy"] == "DDPStrategy"
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [0, 1]
    assert {p.name: p.read_text() for p in ranks.iterdir()} == {"0": run_id, "1": run_id}
    assert callback.run_id == run_id  # known back in the launching process
