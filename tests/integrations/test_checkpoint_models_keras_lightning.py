"""Keras and Lightning checkpoints as MLflow 3 LoggedModels: real tiny trainings on a real
sqlite store, ranked by ``search_logged_models``, loaded by model id, found by ``mltrail best
--checkpoints`` and registered by ``mltrail register --checkpoint best``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning.pytorch")

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from tests.conftest import cli  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from mltrail.integrations import keras as keras_adapter  # noqa: E402
from mltrail.integrations import lightning as lightning_adapter  # noqa: E402
from mltrail.recording import logged_models  # noqa: E402

pytestmark = pytest.mark.skipif(not logged_models.supported(), reason="needs MLflow 3")


def checkpoint_models(client, run) -> list:
    """The run's checkpoint LoggedModels, the lowest val_loss first, as a user ranks them."""
    found = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}' AND tags.`mltrail.kind` = 'checkpoint'",
        order_by=[{"field_name": "metrics.val_loss", "ascending": True}],
    )
    return list(found)


def val_loss_at(model) -> float:
    [value] = [m.value for m in model.metrics if m.key == "val_loss"]
    return value


def history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def index_of(run_id: str) -> dict:
    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="checkpoints/index.json"
    )
    return json.loads(Path(path).read_text())


def model_file_sha256(model, relative: str) -> str:
    folder = mlflow.artifacts.download_artifacts(f"{model.artifact_location}/{relative}")
    return hashlib.sha256(Path(folder).read_bytes()).hexdigest()


@contextlib.contextmanager
def training_env(module_store: str, folder: Path) -> Iterator[None]:
    """What the per-test fixtures set, for a training shared by a module: the store, a spool
    and a working folder, and runs ended before the training returns."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", module_store)
        mp.setenv("MLTRAIL_SPOOL_DIR", str(folder / "spool"))
        mp.setenv("MLTRAIL_END_IN_BACKGROUND", "false")
        yield


def mltrail(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    """The ``mltrail`` command (in this process: a subprocess costs seconds of imports); its
    ``--json`` answer."""
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, out + err
    return json.loads(out)


def assert_ranked_and_linked(client, run) -> list:
    """Every checkpoint LoggedModel is ranked by val_loss and carries the run's values at its
    step; returns them, the best first."""
    ranked = checkpoint_models(client, run)
    assert ranked
    losses = [val_loss_at(m) for m in ranked]
    assert losses == sorted(losses)
    val_loss = history(client, run.info.run_id, "val_loss")
    index = index_of(run.info.run_id)
    by_id = {e.get("model_id"): (name, e) for name, e in index["files"].items()}
    for model in ranked:
        assert model.name.startswith("checkpoint-")
        step = int(model.name.removeprefix("checkpoint-"))
        assert val_loss_at(model) == val_loss[step]
        assert model.model_id in by_id, (model.name, model.tags, index)
        name, entry = by_id[model.model_id]
        assert entry["step"] == step and model.tags["mltrail.checkpoint"] == name
    return ranked


# --- Keras --------------------------------------------------------------------------------------


class KerasWeights(keras.callbacks.Callback):
    """The weights at each epoch end, as the user's model had them."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(w) for w in self.model.get_weights()])


@pytest.fixture(scope="module")
def keras_run(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two epochs, a checkpoint per epoch (checkpoints="all"), and the user's ModelCheckpoints
    (after the callback), one rewriting a file at every epoch, one writing a file per epoch."""
    folder = tmp_path_factory.mktemp("keras")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 1))).astype("float32")
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    net.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    seen = KerasWeights()
    callback = keras_adapter.TrailCallback(
        experiment="checkpoint-models-keras", checkpoints="all", log_model=False,
        system_metrics=False,
    )  # fmt: skip
    user = keras.callbacks.ModelCheckpoint(str(folder / "user.keras"))
    each = keras.callbacks.ModelCheckpoint(str(folder / "user-{epoch}.keras"))
    with training_env(module_store, folder):
        net.fit(
            x, y, validation_data=(x[:16], y[:16]), epochs=2, batch_size=16, verbose=0,
            callbacks=[callback, seen, user, each],
        )  # fmt: skip
    return {"run_id": callback.run_id, "weights": seen.weights, "x": x}


def test_keras_checkpoints_are_ranked_logged_models_that_load(keras_run, client) -> None:
    run = client.get_run(keras_run["run_id"])
    ranked = assert_ranked_and_linked(client, run)
    ours = [m for m in ranked if m.tags["mltrail.checkpoint"].startswith("checkpoints/epoch-")]
    assert sorted(m.name for m in ours) == ["checkpoint-0", "checkpoint-1"]
    # The user's file, uploaded again at every epoch, is one LoggedModel: its last content.
    [user] = [m for m in ranked if m.tags["mltrail.checkpoint"] == "checkpoints/user.keras"]
    assert user.name == "checkpoint-1"
    # The user's file of each epoch has that epoch's step and weights (Keras counts from 1).
    for step in (0, 1):
        [model] = [
            m
            for m in ranked
            if m.tags["mltrail.checkpoint"] == f"checkpoints/user-{step + 1}.keras"
        ]
        assert model.name == f"checkpoint-{step}"
        loaded = mlflow.keras.load_model(f"models:/{model.model_id}")
        for actual, expected in zip(loaded.get_weights(), keras_run["weights"][step], strict=True):
            np.testing.assert_allclose(actual, expected, rtol=1e-6)
    for model in ranked:
        assert model.tags["mltrail.model.flavor"] == "keras"
    index = index_of(run.info.run_id)

    best = ranked[0]
    step = int(best.name.removeprefix("checkpoint-"))
    loaded = mlflow.keras.load_model(f"models:/{best.model_id}")
    for actual, expected in zip(loaded.get_weights(), keras_run["weights"][step], strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-6)
    # The model's file is the checkpoint Keras wrote, not a second save of it.
    entry = index["files"][best.tags["mltrail.checkpoint"]]
    assert model_file_sha256(best, "data/model.keras") == entry["sha256"]
    # ...with the signature of the fit's input
    pyfunc = mlflow.pyfunc.load_model(f"models:/{best.model_id}")
    assert pyfunc.metadata.signature is not None
    rows = keras_run["x"][:3]
    np.testing.assert_allclose(pyfunc.predict(rows), loaded.predict(rows, verbose=0), rtol=1e-5)


def test_best_and_register_a_keras_checkpoint(keras_run, client, capsys) -> None:
    run_id = keras_run["run_id"]
    ranked = checkpoint_models(client, client.get_run(run_id))
    best = mltrail(capsys, "best", "--metric", "val_loss", "--checkpoints", "--experiment",
                   "checkpoint-models-keras")  # fmt: skip
    found = best["best"]
    assert found["run_id"] == run_id
    assert found["model_id"] == index_of(run_id)["files"][found["checkpoint"]["path"]]["model_id"]
    assert val_loss_at(client.get_logged_model(found["model_id"])) == val_loss_at(ranked[0])

    registered = mltrail(capsys, "register", run_id, "keras-checkpoint", "--checkpoint", "best")
    assert registered["model_id"] == found["model_id"]
    assert registered["source"] == f"models:/{found['model_id']}"
    loaded = mlflow.keras.load_model("models:/keras-checkpoint/1")
    assert [w.shape for w in loaded.get_weights()] == [(4, 4), (4,), (4, 1), (1,)]


# --- Lightning ----------------------------------------------------------------------------------


class Regressor(L.LightningModule):
    def __init__(self, hidden: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loader(seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 4, generator=generator)
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)


@pytest.fixture(scope="module")
def lightning_run(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two epochs with a ModelCheckpoint keeping every epoch's file and ``last.ckpt``."""
    folder = tmp_path_factory.mktemp("lightning")
    torch.manual_seed(0)
    callback = lightning_adapter.TrailCallback(
        experiment="checkpoint-models-lightning",
        checkpoints="all",
        log_model=False,
        system_metrics=False,
    )
    checkpoint = ModelCheckpoint(
        dirpath=folder / "ckpt", monitor="val_loss", save_top_k=-1, save_last=True
    )
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(folder), callbacks=[callback, checkpoint],
    )  # fmt: skip
    with training_env(module_store, folder):
        trainer.fit(Regressor(), loader(0), loader(1))
    return {"run_id": callback.run_id, "best": checkpoint.best_model_path}


def test_lightning_checkpoints_are_ranked_logged_models_that_load(lightning_run, client) -> None:
    run = client.get_run(lightning_run["run_id"])
    ranked = assert_ranked_and_linked(client, run)
    class_path = f"{Regressor.__module__}:Regressor"
    for model in ranked:
        assert model.tags["mltrail.model.flavor"] == "pytorch"
        assert model.tags["mltrail.lightning.module_class"] == class_path
    # last.ckpt, uploaded again at every epoch, is one LoggedModel
    assert [m.tags["mltrail.checkpoint"] for m in ranked].count("checkpoints/last.ckpt") == 1

    # The best file of the user's ModelCheckpoint ranks first (last.ckpt may tie with it).
    name = f"checkpoints/{Path(lightning_run['best']).name}"
    [best] = [m for m in ranked if m.tags["mltrail.checkpoint"] == name]
    assert val_loss_at(best) == val_loss_at(ranked[0])
    expected = torch.load(lightning_run["best"], weights_only=False)["state_dict"]
    # The model's file is the .ckpt itself...
    assert (
        model_file_sha256(best, "data/model.pth")
        == index_of(run.info.run_id)["files"][name]["sha256"]
    )
    # ...that loads as the LightningModule, with MLflow's PyTorch flavor or by its class.
    loaded = mlflow.pytorch.load_model(f"models:/{best.model_id}")
    assert isinstance(loaded, Regressor)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key
    local = mlflow.artifacts.download_artifacts(f"models:/{best.model_id}")
    by_class = Regressor.load_from_checkpoint(f"{local}/data/model.pth", weights_only=False)
    assert by_class.hparams.hidden == 4
    rows = np.ones((2, 4), dtype="float32")
    predicted = mlflow.pyfunc.load_model(f"models:/{best.model_id}").predict(rows)
    with torch.no_grad():
        assert np.allclose(np.asarray(predicted), loaded.eval()(torch.from_numpy(rows)).numpy())


def test_best_and_register_a_lightning_checkpoint(lightning_run, client, capsys) -> None:
    run_id = lightning_run["run_id"]
    ranked = checkpoint_models(client, client.get_run(run_id))
    best = mltrail(capsys, "best", "--metric", "val_loss", "--checkpoints", "--experiment",
                   "checkpoint-models-lightning")  # fmt: skip
    found = best["best"]
    name = f"checkpoints/{Path(lightning_run['best']).name}"
    [model] = [m for m in ranked if m.tags["mltrail.checkpoint"] == name]
    assert found["run_id"] == run_id and found["checkpoint"]["path"] == name
    assert found["model_id"] == model.model_id

    registered = mltrail(capsys, "register", run_id, "lightning-checkpoint", "--checkpoint", "best")
    assert registered["model_id"] == model.model_id
    assert registered["source"] == f"models:/{model.model_id}"
    assert isinstance(mlflow.pytorch.load_model("models:/lightning-checkpoint/1"), Regressor)
