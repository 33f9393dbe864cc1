"""Keras 3 adapter on the torch backend: real training on tiny data, asserted in a real store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

import mltrail  # noqa: E402
from mltrail.errors import MltrailError  # noqa: E402
from mltrail.integrations.keras import TrailCallback  # noqa: E402

EXPERIMENT = "keras-tests"


def data(rows: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 1))).astype("float32")
    return x, y


def model(learning_rate: object = 0.01, name: str = "tiny_mlp") -> keras.Model:
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)],
        name=name,
    )
    net.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse", metrics=["mae"])
    return net


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


class WeightsPerEpoch(keras.callbacks.Callback):
    """The user's view of the weights at each epoch end."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(w) for w in self.model.get_weights()])


def assert_weights(loaded: keras.Model, expected: list[np.ndarray]) -> None:
    actual = loaded.get_weights()
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)


def test_fit_records_params_metrics_checkpoints_model_and_evaluate(client, tmp_path):
    import mlflow

    x, y = data()
    net = model()
    seen = WeightsPerEpoch()
    user_checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "user-{epoch:02d}.keras"))
    # monitor="loss" in max mode makes the best epoch an early one, so the best checkpoint has
    # to come from the state kept in memory, not from the model as training left it.
    callback = TrailCallback(
        experiment=EXPERIMENT,
        monitor="loss",
        mode="max",
        registered_model_name="keras-tiny-mlp",
    )
    fitted = net.fit(
        x,
        y,
        batch_size=16,
        epochs=3,
        validation_split=0.25,
        verbose=0,
        callbacks=[callback, seen, user_checkpoint],
    )
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.framework"] == "keras"
    params = run.data.params
    assert params["optimizer.class"] == "Adam"
    assert float(params["optimizer.learning_rate"]) == pytest.approx(0.01)
    assert params["optimizer.beta_1"] == "0.9"
    assert params["epochs"] == "3"
    assert params["batch_size"] == "16"
    assert params["validation_split"] == "0.25"
    assert params["steps_per_epoch"] == "5"  # 72 training rows / 16
    assert params["compile.loss"] == "mse"
    assert params["compile.metrics"] == "mae"
    assert params["model.name"] == "tiny_mlp"
    assert params["model.total_params"] == str(6 * 8 + 8 + 8 + 1)
    assert params["keras.backend"] == "torch"
    assert params["data.x"] == "float32[96, 6]"

    val_loss = history(client, callback.run_id, "val_loss")
    assert [s for s, _ in val_loss] == [0, 1, 2]
    np.testing.assert_allclose([v for _, v in val_loss], fitted.history["val_loss"], rtol=1e-6)
    assert [s for s, _ in history(client, callback.run_id, "learning_rate")] == [0, 1, 2]
    assert not [k for k in run.data.metrics if k.startswith("step/")]  # batch logging is opt-in

    # Checkpoints: best (the kept state of the best epoch), last, and the user's own files.
    index = json.loads(
        Path(
            client.download_artifacts(callback.run_id, "checkpoints/index.json", str(tmp_path))
        ).read_text()
    )
    assert index["aliases"] == {
        "best": "checkpoints/best.keras",
        "latest": "checkpoints/last.keras",
    }
    best_epoch = int(np.argmax(fitted.history["loss"]))
    assert index["files"]["checkpoints/best.keras"]["step"] == best_epoch
    assert best_epoch != 2, "the test needs a best epoch before the last one"
    folder = tmp_path / "download"
    folder.mkdir()
    best = keras.models.load_model(
        client.download_artifacts(callback.run_id, "checkpoints/best.keras", str(folder))
    )
    assert_weights(best, seen.weights[best_epoch])
    last = keras.models.load_model(
        client.download_artifacts(callback.run_id, "checkpoints/last.keras", str(folder))
    )
    assert_weights(last, seen.weights[-1])
    assert_weights(net, seen.weights[-1])  # writing the best put the live weights back
    stored = {a.path for a in client.list_artifacts(callback.run_id, "checkpoints")}
    assert {
        "checkpoints/user-01.keras",
        "checkpoints/user-02.keras",
        "checkpoints/user-03.keras",
    } <= stored
    assert run.data.tags["mltrail.checkpoint.best"] == "checkpoints/best.keras"

    # The final model: an MLflow Model in the Keras flavor, signature from the training data.
    assert run.data.tags["mltrail.model.flavor"] == "keras"
    loaded = mlflow.pyfunc.load_model(f"runs:/{callback.run_id}/model")
    assert list(loaded.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 6]
    np.testing.assert_allclose(loaded.predict(x[:4]), net.predict(x[:4], verbose=0), rtol=1e-5)
    versions = client.search_model_versions("name='keras-tiny-mlp'")
    assert [v.run_id for v in versions] == [callback.run_id]
    assert (
        "Total params"
        in Path(
            client.download_artifacts(callback.run_id, "model_summary.txt", str(folder))
        ).read_text()
    )

    # evaluate() with the same callback adds test_* metrics to the run, which it joins: the
    # run stays FINISHED with its end time, and is not counted as resumed.
    results = net.evaluate(x, y, verbose=0, return_dict=True, callbacks=[callback])
    again = client.get_run(callback.run_id)
    assert again.info.status == "FINISHED"
    assert again.info.end_time == run.info.end_time
    assert "mltrail.resume_count" not in again.data.tags
    assert history(client, callback.run_id, "test_loss") == [(2, pytest.approx(results["loss"]))]


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="a torch DataLoader as input")
def test_a_torch_dataloader_gives_the_model_a_signature_and_the_data_a_digest(client, caplog):
    """Keras on its torch backend trains from a torch ``DataLoader``: the model still gets a
    signature and input example from the first batch (MLflow warned, twice, that it had none),
    and the training data its digest (it was "unknown")."""
    import torch

    from mltrail.adapters import tensor_dataset_digest

    x, y = data()
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True)
    callback = TrailCallback(experiment=EXPERIMENT)
    with caplog.at_level("WARNING"):
        model().fit(loader, epochs=2, verbose=0, callbacks=[callback])
        mltrail.wait()
    assert "without specifying model signature" not in caplog.text
    run = client.get_run(callback.run_id)
    assert run.data.params["data.x"] == "DataLoader"
    other = torch.utils.data.TensorDataset(torch.from_numpy(x + 1), torch.from_numpy(y))
    digest = run.data.params["data.train.digest"]
    assert digest not in ("unknown", tensor_dataset_digest(other))
    assert digest == tensor_dataset_digest(dataset)
    mlmodel = Path(client.download_artifacts(run.info.run_id, "model/MLmodel")).read_text()
    assert '"shape": [-1, 6]' in mlmodel  # the signature, from the first batch's x
    files = {f.path for f in client.list_artifacts(run.info.run_id, "model")}
    assert "model/input_example.json" in files


def test_learning_rate_history_under_a_schedule_and_reduce_on_plateau(client):
    x, y = data()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=3, decay_rate=0.5)
    callback = TrailCallback(experiment=EXPERIMENT, checkpoints="none", log_model=False)
    model(schedule).fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[callback])
    params = client.get_run(callback.run_id).data.params
    assert params["optimizer.learning_rate.class"] == "ExponentialDecay"
    assert params["optimizer.learning_rate.initial_learning_rate"] == "0.01"
    # 3 steps per epoch: after epoch e the optimizer has made 3(e+1) steps.
    expected = [0.01 * 0.5 ** (3 * (e + 1) / 3) for e in range(3)]
    lr = history(client, callback.run_id, "learning_rate")
    assert [s for s, _ in lr] == [0, 1, 2]
    np.testing.assert_allclose([v for _, v in lr], expected, rtol=1e-5)
    assert not client.list_artifacts(callback.run_id, "checkpoints")  # checkpoints="none"

    # ReduceLROnPlateau (placed after the callback) halves the rate at the end of every epoch
    # after the first; each epoch records the rate it trained with.
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="loss", factor=0.5, patience=0, min_delta=1e9
    )
    callback = TrailCallback(experiment=EXPERIMENT, checkpoints="none", log_model=False)
    model(0.01).fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[callback, plateau])
    lr = history(client, callback.run_id, "learning_rate")
    np.testing.assert_allclose([v for _, v in lr], [0.01, 0.01, 0.005], rtol=1e-5)


def test_one_callback_over_several_fits_is_one_run_with_continuing_steps(client):
    x, y = data()
    net = model()
    callback = TrailCallback(
        experiment=EXPERIMENT, log_every_n_batches=2, checkpoints="all", log_model=False
    )
    net.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    first = callback.run_id
    net.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])  # epochs 0..1 again
    assert callback.run_id == first
    run = client.get_run(first)
    assert run.info.status == "FINISHED"
    assert [s for s, _ in history(client, first, "loss")] == [0, 1, 2, 3]
    # 3 batches per epoch, 12 optimizer steps in all, logged every 2nd step, never reset.
    assert [s for s, _ in history(client, first, "step/loss")] == [2, 4, 6, 8, 10, 12]
    stored = {a.path for a in client.list_artifacts(first, "checkpoints")}
    assert {f"checkpoints/epoch-{e:04d}.keras" for e in range(4)} <= stored
    # A new callback instance is a new run.
    other = TrailCallback(experiment=EXPERIMENT, checkpoints="none", log_model=False)
    net.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[other])
    assert other.run_id != first


def test_resume_with_run_id_and_initial_epoch_continues_the_run(client):
    x, y = data()
    net = model()
    first = TrailCallback(experiment=EXPERIMENT, checkpoints="best", log_model=False)
    net.fit(x, y, epochs=2, validation_split=0.25, verbose=0, callbacks=[first])
    stored = [a.path for a in client.list_artifacts(first.run_id, "checkpoints")]
    assert sorted(stored) == ["checkpoints/best.keras", "checkpoints/index.json"]
    resumed = TrailCallback(run_id=first.run_id, checkpoints="none", log_model=False)
    net.fit(x, y, epochs=4, initial_epoch=2, validation_split=0.25, verbose=0, callbacks=[resumed])
    assert resumed.run_id == first.run_id
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.resume_count"] == "1"
    assert [s for s, _ in history(client, first.run_id, "val_loss")] == [0, 1, 2, 3]


def test_early_stopping_settings_outcome_and_restored_weights(client, tmp_path):
    import mlflow

    x, y = data()
    net = model()
    seen = WeightsPerEpoch()
    # No epoch after the first counts as an improvement: training stops at epoch 1 and the
    # weights of epoch 0 come back. EarlyStopping after our callback restores them only in its
    # own on_train_end, which the logged model must still reflect.
    stopper = keras.callbacks.EarlyStopping(
        monitor="loss", min_delta=1e9, patience=1, restore_best_weights=True
    )
    callback = TrailCallback(experiment=EXPERIMENT, checkpoints="none")
    fitted = net.fit(x, y, epochs=5, verbose=0, callbacks=[callback, seen, stopper])
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["early_stopping.patience"] == "1"
    assert run.data.params["early_stopping.restore_best_weights"] == "True"
    assert run.data.params["early_stopping.monitor"] == "loss"
    assert run.data.metrics["early_stopping.stopped_epoch"] == 1
    assert run.data.metrics["early_stopping.best_epoch"] == 0
    assert run.data.metrics["early_stopping.best_score"] == pytest.approx(fitted.history["loss"][0])
    assert run.data.metrics["early_stopping.wait_count"] == 1
    assert run.data.metrics["early_stopping.restored_best_weights"] == 1
    assert [s for s, _ in history(client, callback.run_id, "loss")] == [0, 1]
    logged = mlflow.keras.load_model(f"runs:/{callback.run_id}/model")
    assert_weights(logged, seen.weights[0])


class UserError(Exception):
    pass


class Explode(keras.callbacks.Callback):
    def __init__(self, error: BaseException, at_epoch: int = 1) -> None:
        super().__init__()
        self.error = error
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise self.error


def test_exception_from_a_user_callback_fails_the_run_and_propagates(client):
    x, y = data()
    error = UserError("boom")
    callback = TrailCallback(experiment=EXPERIMENT)
    with pytest.raises(UserError) as raised:
        model().fit(x, y, epochs=3, verbose=0, callbacks=[Explode(error), callback])
    assert raised.value is error
    run = client.get_run(callback.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mltrail.exception.type"] == "UserError"
    # Explode runs first: epoch 1 never reached our callback.
    assert [s for s, _ in history(client, callback.run_id, "loss")] == [0]
    stored = {a.path for a in client.list_artifacts(callback.run_id, "checkpoints")}
    assert "checkpoints/best.keras" in stored  # the best so far is not lost
    assert not client.list_artifacts(callback.run_id, "model")  # no final model of a failure


def test_keyboard_interrupt_kills_the_run(client):
    x, y = data()
    callback = TrailCallback(experiment=EXPERIMENT, checkpoints="none")
    with pytest.raises(KeyboardInterrupt):
        model().fit(
            x, y, epochs=3, verbose=0, callbacks=[callback, Explode(KeyboardInterrupt(), 0)]
        )
    assert client.get_run(callback.run_id).info.status == "KILLED"


def test_an_error_inside_mltrail_is_counted_in_the_run_and_training_goes_on(client, monkeypatch):
    monkeypatch.setenv("MLTRAIL_STRICT", "0")  # as for users
    x, y = data()
    net = model()

    def broken(*args, **kwargs):
        raise RuntimeError("no summary today")

    monkeypatch.setattr(net, "summary", broken)  # read by the callback at the start of fit
    callback = TrailCallback(experiment=EXPERIMENT, checkpoints="none", log_model=False)
    with pytest.warns(mltrail.MltrailWarning, match="keras: on_train_begin failed"):
        fitted = net.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
    assert len(fitted.history["loss"]) == 2
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.errors"] == "1"  # the run's count, not the process-wide one
    assert [s for s, _ in history(client, callback.run_id, "loss")] == [0, 1]


def test_an_existing_trail_is_used_and_left_to_its_owner(client):
    x, y = data()
    with mltrail.start_run(experiment=EXPERIMENT) as trail:
        callback = TrailCallback(trail, checkpoints="none", log_model=False)
        model().fit(x, y, epochs=2, verbose=0, callbacks=[callback])
        assert callback.run_id == trail.run_id
        assert trail.status is None  # still open: its owner ends it
        trail.log_metrics({"after_fit": 1.0}, step=0)
    run = client.get_run(trail.run_id)
    assert run.info.status == "FINISHED"
    assert {"loss", "mae", "learning_rate", "after_fit"} <= set(run.data.metrics)
    with pytest.raises(MltrailError, match="has ended"):  # not silently lost
        model().fit(x, y, epochs=1, verbose=0, callbacks=[callback])


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(MltrailError, match="checkpoints must be one of"):
        TrailCallback(checkpoints="some")
    with pytest.raises(MltrailError, match="not both"):
        TrailCallback(mltrail.Trail(), experiment="x")
    with pytest.raises(MltrailError, match="log_every_n_batches"):
        TrailCallback(log_every_n_batches=0)


def test_autolog_injects_a_callback_and_reverts(client):
    x, y = data()
    experiment = "keras-autolog"
    before = keras.Model.fit
    mltrail.autolog(
        frameworks=["keras"],
        experiment=experiment,
        checkpoints="none",
        log_model=False,
        silent=True,
    )
    try:
        model().fit(x, y, epochs=2, validation_split=0.25, verbose=0)
        explicit = TrailCallback(experiment=experiment, checkpoints="none", log_model=False)
        model().fit(x, y, epochs=1, verbose=0, callbacks=[explicit])  # no second callback
    finally:
        mltrail.autolog(frameworks=["keras"], disable=True, silent=True)
    assert keras.Model.fit is before
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    assert len(runs) == 2
    injected, manual = runs
    assert manual.info.run_id == explicit.run_id
    assert injected.info.status == "FINISHED"
    assert [s for s, _ in history(client, injected.info.run_id, "val_loss")] == [0, 1]
    model().fit(x, y, epochs=1, verbose=0)  # after disable: nothing recorded
    assert len(client.search_runs([exp.experiment_id])) == 2


class Subclassed(keras.Model):
    """A subclassed model whose constructor takes an argument and that has no get_config()."""

    def __init__(self, units):
        super().__init__()
        self.hidden = keras.layers.Dense(units, activation="relu")
        self.out = keras.layers.Dense(1)

    def call(self, inputs):
        return self.out(self.hidden(inputs))


def test_subclassed_model_gets_weights_checkpoints_and_a_loadable_model(client, tmp_path, caplog):
    x, y = data()
    keras.utils.set_random_seed(0)
    net = Subclassed(8)
    net.compile(optimizer="adam", loss="mse")
    callback = TrailCallback(experiment=EXPERIMENT, monitor="loss")
    with caplog.at_level("WARNING", logger="mltrail"):
        net.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[callback])
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    assert "mltrail.errors" not in run.data.tags
    index = json.loads(
        Path(
            client.download_artifacts(callback.run_id, "checkpoints/index.json", str(tmp_path))
        ).read_text()
    )
    assert index["aliases"]["best"] == "checkpoints/best.weights.h5"
    model_files = {f.path for f in client.list_artifacts(callback.run_id, "model")}
    assert model_files == {"model/model.weights.h5", "model/class.json"}
    folder = Path(client.download_artifacts(callback.run_id, "model", str(tmp_path / "model")))
    kind = json.loads((folder / "class.json").read_text())["class"]
    assert kind.endswith(".Subclassed")
    # Rebuilt from its class, the model holds the trained weights.
    rebuilt = Subclassed(8)
    rebuilt(x[:1])
    rebuilt.load_weights(str(folder / "model.weights.h5"))
    assert_weights(rebuilt, [np.array(w) for w in net.get_weights()])
    warned = [r.getMessage() for r in caplog.records if "get_config" in r.getMessage()]
    assert len(warned) == 1 and "model.weights.h5" in warned[0]


def test_fit_into_run_id_at_an_older_initial_epoch_forks_the_run(client):
    x, y = data(32)
    net = model()
    first = TrailCallback(experiment=EXPERIMENT, checkpoints="none", log_model=False)
    net.fit(x, y, epochs=4, verbose=0, callbacks=[first])
    # The weights after epoch 1, trained on from epoch 2 into the first run: a fork at step 1.
    again = TrailCallback(run_id=first.run_id, checkpoints="none", log_model=False)
    net.fit(x, y, epochs=3, initial_epoch=2, verbose=0, callbacks=[again])
    assert again.run_id != first.run_id
    tags = client.get_run(again.run_id).data.tags
    assert (tags["mltrail.forked_from"], tags["mltrail.forked_at_step"]) == (first.run_id, "1")
    parent = [
        (m.step, m.value, m.timestamp) for m in client.get_metric_history(first.run_id, "loss")
    ]
    forked = [
        (m.step, m.value, m.timestamp) for m in client.get_metric_history(again.run_id, "loss")
    ]
    assert [s for s, _, _ in forked] == [0, 1, 2] and forked[:2] == parent[:2]
    assert [s for s, _, _ in parent] == [0, 1, 2, 3]  # the parent is untouched
