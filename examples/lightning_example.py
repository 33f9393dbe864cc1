"""Lightning: add ``TrailCallback`` to the Trainer's callbacks; the fit becomes an MLflow run.

    python examples/lightning_example.py          # a small regressor on synthetic data
    python examples/lightning_example.py --quick  # seconds: 2 epochs, no model files

What you get: ``save_hyperparameters()`` values, optimizer and scheduler settings, per-epoch
metrics (step = epoch), the files of your ``ModelCheckpoint`` under ``checkpoints/``, the
model under ``model/`` (PyTorch flavor), and the git commit of this code. Resuming with
``trainer.fit(..., ckpt_path=...)`` continues the same run.
"""

from __future__ import annotations

import argparse
import tempfile

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from mltrail.integrations.lightning import TrailCallback


class Regressor(L.LightningModule):
    def __init__(self, hidden: int = 16, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def loader(rows: int, seed: int, shuffle: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 8, generator=generator)
    y = x[:, :4].sum(dim=1, keepdim=True) + 0.1 * torch.randn(rows, 1, generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=shuffle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="examples-lightning")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="2 epochs, no model files")
    args = parser.parse_args()
    epochs = 2 if args.quick else args.epochs

    L.seed_everything(0)
    callback = TrailCallback(experiment=args.experiment, log_model=not args.quick)
    with tempfile.TemporaryDirectory() as root:  # Lightning's checkpoints; the run keeps copies
        trainer = L.Trainer(
            max_epochs=epochs,
            callbacks=[callback, ModelCheckpoint(monitor="val_loss", save_last=True)],
            logger=False,
            enable_progress_bar=False,
            default_root_dir=root,
        )
        trainer.fit(Regressor(), loader(512, seed=0, shuffle=True), loader(128, seed=1))
    print(f"run {callback.run_id}")
    print(f"See the run: mltrail show {callback.run_id}")


if __name__ == "__main__":
    main()
