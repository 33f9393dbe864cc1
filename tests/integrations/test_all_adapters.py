"""One scenario through every adapter, so that they cannot drift apart again.

A short training with early stopping and checkpoints, recorded while the store is unreachable
(journaled, then ``mltrail sync``), with an internal error injected into the recording of the
first epoch. Every adapter must give the same answer: the run FINISHED, ``mltrail.framework``
naming the adapter, the one internal error counted in ``mltrail.errors`` (and warned about once,
under the adapter's name) while training went on, the same early-stopping names, and the same
``checkpoints/index.json`` layout with its aliases as tags.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from tests.conftest import free_port

import mltrail
from mltrail.cli import main as cli
from mltrail.recording.steps import EpochLog

EPOCHS = 4
RNG = np.random.default_rng(0)
X = RNG.normal(size=(96, 4)).astype("float32")
Y = (X[:, 0] + X[:, 1] > 0).astype("float32")


def _keras(options: dict[str, Any]) -> None:
    keras = pytest.importorskip("keras")
    from mltrail.integrations.keras import TrailCallback

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1)
    model.fit(X, Y, validation_split=0.25, epochs=EPOCHS, verbose=0,
              callbacks=[stop, TrailCallback(**options)])  # fmt: skip


def _lightning(options: dict[str, Any]) -> None:
    pytest.importorskip("lightning")
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from mltrail.integrations.lightning import TrailCallback

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def forward(self, x):
            return self.layer(x).squeeze(-1)

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.binary_cross_entropy_with_logits(self(x), y)
            self.log("loss", loss, on_epoch=True, on_step=False)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.binary_cross_entropy_with_logits(self(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = TensorDataset(torch.from_numpy(X), torch.from_numpy(Y))
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        callbacks=[
            pl.callbacks.EarlyStopping(monitor="val_loss", patience=1),
            pl.callbacks.ModelCheckpoint(dirpath="checkpoints", monitor="val_loss"),
            TrailCallback(**options),
        ],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Model(), DataLoader(data, batch_size=32), DataLoader(data, batch_size=32))


def _xgboost(options: dict[str, Any]) -> None:
    xgb = pytest.importorskip("xgboost")
    from mltrail.integrations.xgboost import TrailCallback

    train = xgb.DMatrix(X[:64], label=Y[:64])
    val = xgb.DMatrix(X[64:], label=Y[64:])
    xgb.train({"max_depth": 2, "eta": 0.3}, train, EPOCHS, evals=[(val, "val")],
              early_stopping_rounds=2, verbose_eval=False,
              callbacks=[TrailCallback(checkpoint_every=1, **options)])  # fmt: skip


def _transformers(options: dict[str, Any]) -> None:
    transformers = pytest.importorskip("transformers")
    import torch

    from mltrail.integrations.transformers import TrailCallback

    class Rows(torch.utils.data.Dataset):  # X's signs as token ids: nothing to download
        def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
            self.ids = torch.from_numpy((x > 0).astype("int64") + 2 * np.arange(4))
            self.labels = torch.from_numpy(y.astype("int64"))

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": self.ids[i], "labels": self.labels[i]}

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
        intermediate_size=8, max_position_embeddings=4, num_labels=2,
    )  # fmt: skip
    args = transformers.TrainingArguments(
        output_dir="checkpoints", num_train_epochs=EPOCHS, per_device_train_batch_size=32,
        learning_rate=0.1, eval_strategy="epoch", save_strategy="epoch",
        logging_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="loss",
        report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    transformers.Trainer(
        model=transformers.BertForSequenceClassification(config), args=args,
        train_dataset=Rows(X[:64], Y[:64]), eval_dataset=Rows(X[64:], Y[64:]),
        callbacks=[transformers.EarlyStoppingCallback(early_stopping_patience=1),
                   TrailCallback(**options)],
    ).train()  # fmt: skip


ADAPTERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "keras": _keras,
    "lightning": _lightning,
    "transformers": _transformers,
    "xgboost": _xgboost,
}
# A checkpoint's step is its epoch; the Trainer's checkpoint-N is at its global step N, here
# the end of an epoch of two batches.
CHECKPOINT_STEPS = {"transformers": range(2, 2 * EPOCHS + 1, 2)}
# What an adapter does not record yet (its case is an expected failure, and fails once the
# adapter records it, until it is taken out of here).
KNOWN_GAPS: dict[str, str] = {}


@pytest.mark.parametrize("framework", list(ADAPTERS))
def test_same_scenario_same_record(
    framework: str, tmp_path: Path, fresh_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLTRAIL_STRICT", "0")  # the injected error must be absorbed, not raised
    original, calls = EpochLog.log, []

    def first_epoch_fails(self: EpochLog, epoch: int, metrics: Any) -> int:
        calls.append(epoch)
        if len(calls) == 1:
            raise RuntimeError("injected into the first epoch's recording")
        return original(self, epoch, metrics)

    monkeypatch.setattr(EpochLog, "log", first_epoch_fails)
    spool = tmp_path / "spool"
    options = dict(
        experiment="all-adapters",
        run_name=framework,
        tracking_uri=f"http://127.0.0.1:{free_port()}",  # nobody listens: offline from the start
        start_timeout=2,
        spool_dir=spool,
        capture=False,
        system_metrics=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ADAPTERS[framework](options)  # training goes on through the error and the outage
    ours = [str(w.message) for w in caught if issubclass(w.category, mltrail.MltrailWarning)]
    injected = [m for m in ours if "injected into the first epoch" in m]
    assert len(injected) == 1 and injected[0].startswith(f"mltrail: {framework}: "), ours
    assert len(calls) > 1, "training and recording went on after the error"

    assert cli(["sync", "--spool-dir", str(spool), "--tracking-uri", fresh_store]) == 0
    client = MlflowClient(fresh_store)
    experiment = client.get_experiment_by_name("all-adapters")
    (run,) = client.search_runs([experiment.experiment_id])
    tags, params = run.data.tags, run.data.params
    assert run.info.status == "FINISHED"
    assert run.info.run_name == framework
    assert tags["mltrail.framework"] == framework
    assert tags["mltrail.errors"] == "1"
    assert tags["mltrail.offline_run_id"]
    # The final model, journaled while offline, is a LoggedModel of the run once synced.
    model = client.get_logged_model(tags["mltrail.model.id"])
    assert (model.name, model.source_run_id) == ("final-model", run.info.run_id)
    assert str(model.status) == "READY" and model.tags["mltrail.kind"] == "model"

    folder = tmp_path / "downloaded"
    client.download_artifacts(run.info.run_id, "checkpoints", str(folder))
    index = json.loads((folder / "checkpoints" / "index.json").read_text())
    assert set(index) == {"files", "aliases"}
    assert {"best", "latest"} <= set(index["aliases"])
    for alias, name in index["aliases"].items():
        assert name in index["files"] and tags[f"mltrail.checkpoint.{alias}"] == name
        assert (folder / name).exists()  # a file, or a folder (Transformers' checkpoint-N)
    for name, entry in index["files"].items():
        assert {"step", "metrics", "sha256", "size", "source"} <= set(entry), name
        assert entry["sha256"] == _sha256(folder / name)
        assert entry["step"] in CHECKPOINT_STEPS.get(framework, range(EPOCHS)), name

    stopping = {"early_stopping.monitor", "early_stopping.patience"} <= set(params)
    if framework in KNOWN_GAPS:  # everything above holds for it; this part does not yet
        assert not stopping, f"{framework} records early stopping now: drop it from KNOWN_GAPS"
        pytest.xfail(KNOWN_GAPS[framework])
    assert stopping
    assert "early_stopping.best_score" in run.data.metrics
    assert not any(k.startswith(("early_stopping0", "early_stopping1")) for k in params)


def _sha256(path: Path) -> str:
    """A file's sha256; a folder's is that of its files' relative paths and sha256s."""
    import hashlib

    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    listing = "".join(f"{name}\0{_sha256(path / name)}\n" for name in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def test_sklearn_offline_fit_with_an_internal_error(
    tmp_path: Path, fresh_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same recording rules for the estimator wrapper (no epochs or checkpoints there)."""
    pytest.importorskip("sklearn")
    from sklearn.linear_model import SGDClassifier

    from mltrail.integrations import sklearn as adapter
    from mltrail.recording import fit_recording

    monkeypatch.setenv("MLTRAIL_STRICT", "0")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected into the data description")

    # The fit's data is described by the kernel's FitRecording, which the adapter records through.
    monkeypatch.setattr(fit_recording, "dataset_input", broken)
    spool = tmp_path / "spool"
    model = adapter.TrackedEstimator(
        SGDClassifier(early_stopping=True, n_iter_no_change=2, random_state=0),
        experiment="all-adapters-sklearn",
        tracking_uri=f"http://127.0.0.1:{free_port()}",
        run_options={"start_timeout": 2, "spool_dir": spool, "capture": False,
                     "system_metrics": False},
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(np.tile(X, (3, 1)), np.tile(Y, 3))
    ours = [str(w.message) for w in caught if issubclass(w.category, mltrail.MltrailWarning)]
    assert sum("injected into the data description" in m for m in ours) == 1, ours
    assert model.predict(X).shape == (len(X),)
    assert cli(["sync", "--spool-dir", str(spool), "--tracking-uri", fresh_store]) == 0
    client = MlflowClient(fresh_store)
    experiment = client.get_experiment_by_name("all-adapters-sklearn")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.framework"] == "sklearn"
    assert run.data.tags["mltrail.errors"] == "1"
    assert run.data.params["estimator__early_stopping"] == "True"
    assert "train/accuracy" in run.data.metrics
