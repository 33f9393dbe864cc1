"""Resuming from a checkpoint, decided in the kernel: continue, fork (copied history with the
original timestamps, parent untouched) or rewind (fork=False), through the adapter API a
framework adapter uses (RunSession.open(restart_step=...) and EpochLog)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mltrail
from mltrail.adapters import EpochLog, RunSession
from mltrail.recording.restart import current_history

LIGHT = {"capture": False, "system_metrics": False, "end_in_background": False}


def train(session: RunSession, epochs: range, **open_kwargs) -> str:
    """A toy adapter: open (resuming when told), log epochs ``epochs``, end."""
    trail = session.open(**open_kwargs)
    log = EpochLog(session)
    log.start(epochs.start)
    trail.log_params({"lr": 0.1})
    for epoch in epochs:
        log.log(epoch, {"loss": 1.0 / (epoch + 1), "acc": epoch / 10})
        trail.log_metrics({"step/loss": 1.0 / (epoch + 1)}, step=(epoch + 1) * 10)
    session.end()
    return session.last_run_id


def history(client, run_id: str, key: str) -> list[tuple[int, float, int]]:
    return [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]


@pytest.fixture(scope="module")
def parent(module_store) -> str:
    """A run of 5 epochs (steps 0..4)."""
    # Module fixtures run before the per-test store switch (conftest._isolated): name the store.
    options = {"experiment": "forks", "tracking_uri": module_store, **LIGHT}
    return train(RunSession("toy", None, options), range(5))


def test_resume_from_an_older_checkpoint_forks(client, parent) -> None:
    before = client.get_run(parent)
    before_history = history(client, parent, "loss")
    # The checkpoint after step 2: the training restarts at epoch 3 and runs to epoch 5.
    session = RunSession("toy", None, {"run_id": parent, **LIGHT})
    fork = train(
        session, range(3, 6), restart_step=3, checkpoint="ckpt/epoch=2.ckpt", global_step=30
    )
    assert fork != parent
    run = client.get_run(fork)
    tags = run.data.tags
    assert tags["mltrail.forked_from"] == parent and tags["mltrail.forked_at_step"] == "2"
    assert tags["mltrail.resumed_from"] == "ckpt/epoch=2.ckpt"
    assert run.info.experiment_id == before.info.experiment_id and run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.1"
    # Steps 0..2 copied with their original timestamps, 3..5 from the new training, each once.
    got = history(client, fork, "loss")
    assert [s for s, _, _ in got] == [0, 1, 2, 3, 4, 5]
    assert got[:3] == before_history[:3]
    assert min(ts for _, _, ts in got[3:]) >= max(ts for _, _, ts in before_history)
    assert [m.step for m in client.get_metric_history(fork, "step/loss")] == [
        10,
        20,
        30,
        40,
        50,
        60,
    ]
    # The parent is untouched: same history, tags, status and end time.
    after = client.get_run(parent)
    assert history(client, parent, "loss") == before_history
    assert after.data.tags == before.data.tags and after.info.end_time == before.info.end_time
    # mltrail show names the fork's parent, and the parent's children.
    from mltrail.query import runs as query

    store, uri = query.open_store(None)
    shown = query.show_data(store, uri, fork)
    assert shown["lineage"]["forked_from"] == {"run_id": parent, "step": 2}
    parent_shown = query.show_data(store, uri, parent)
    assert {"run_id": fork, "step": 2} in parent_shown["lineage"]["forks"]
    assert f"forked from  {parent} at step 2" in query.format_show(shown)


def test_resume_from_the_last_checkpoint_continues_the_run(client, parent) -> None:
    session = RunSession("toy", None, {"run_id": parent, **LIGHT})
    again = train(session, range(5, 6), restart_step=5)
    assert again == parent
    run = client.get_run(parent)
    assert (
        "mltrail.forked_from" not in run.data.tags
        and "mltrail.rewound_to_step" not in run.data.tags
    )
    assert [s for s, _, _ in history(client, parent, "loss")] == list(range(6))


def test_fork_false_rewinds_the_run(client) -> None:
    first = train(RunSession("toy", None, {"experiment": "rewinds", **LIGHT}), range(4))
    old = {s: v for s, v, _ in history(client, first, "loss")}
    session = RunSession("toy", None, {"run_id": first, "fork": False, **LIGHT})
    again = train(session, range(2, 3), restart_step=2)
    assert again == first
    run = client.get_run(first)
    assert run.data.tags["mltrail.rewound_to_step"] == "1"
    assert [at for at, _ in json.loads(run.data.tags["mltrail.rewinds"])] == [1]
    # The store keeps the superseded points (MLflow deletes no single point); the history as
    # mltrail reads it has each step once: 0..1 from before the rewind, 2 from the new training.
    current = current_history(run, client.get_metric_history(first, "loss"))
    assert [m.step for m in current] == [0, 1, 2]
    assert [m.value for m in current[:2]] == [old[0], old[1]]
    assert len(client.get_metric_history(first, "loss")) == 5


def test_resume_into_an_unknown_run_says_so() -> None:
    session = RunSession("toy", None, {"run_id": "0" * 32, **LIGHT})
    with pytest.raises(mltrail.MltrailError, match="does not exist"):
        session.open(restart_step=2)


# --- every adapter that resumes tells the kernel its restart step ---------------------------------


def epoch_steps(client, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def assert_forked(client, fork: str, parent: str, at: int, key: str, total: int) -> None:
    """``fork`` is a new run forked from ``parent`` at step ``at``, with each step once."""
    assert fork != parent
    tags = client.get_run(fork).data.tags
    assert (tags["mltrail.forked_from"], tags["mltrail.forked_at_step"]) == (parent, str(at))
    assert epoch_steps(client, fork, key) == list(range(total))
    copied = client.get_metric_history(parent, key)[: at + 1]
    assert [(m.step, m.value, m.timestamp) for m in client.get_metric_history(fork, key)][
        : at + 1
    ] == [(m.step, m.value, m.timestamp) for m in copied]


def test_xgboost_continued_training_from_an_older_booster_forks(client) -> None:
    xgb = pytest.importorskip("xgboost")
    from mltrail.integrations.xgboost import TrailCallback

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(80, 3)), rng.integers(0, 2, 80)
    dtrain = xgb.DMatrix(x, label=y)
    light = {"log_model": False, "importance": False, **LIGHT}
    params = {"objective": "binary:logistic", "max_depth": 2, "seed": 7}
    first = TrailCallback(experiment="xgb-fork", **light)
    booster = xgb.train(params, dtrain, 5, evals=[(dtrain, "train")], callbacks=[first])
    # The booster after round 2 (3 rounds), trained on into the first run: a fork at step 2.
    again = TrailCallback(run_id=first.run_id, **light)
    xgb.train(
        params, dtrain, 3, evals=[(dtrain, "train")], xgb_model=booster[:3], callbacks=[again]
    )
    assert_forked(client, again.run_id, first.run_id, 2, "train-logloss", 6)
    assert epoch_steps(client, first.run_id, "train-logloss") == [0, 1, 2, 3, 4]


def test_lightgbm_continued_training_with_fork_false_rewinds(client) -> None:
    lgb = pytest.importorskip("lightgbm")
    from mltrail.integrations.lightgbm import TrailCallback

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(80, 3)), rng.integers(0, 2, 80)
    params = {"objective": "binary", "num_leaves": 4, "verbose": -1, "seed": 7}
    light = {"log_model": False, "importance": False, **LIGHT}
    first = TrailCallback(experiment="lgb-rewind", **light)
    train = lgb.Dataset(x, y, free_raw_data=False)
    booster = lgb.train(params, train, 4, valid_sets=[train], callbacks=[first])
    older = lgb.Booster(model_str=booster.model_to_string(num_iteration=2))
    again = TrailCallback(run_id=first.run_id, fork=False, **light)
    lgb.train(params, train, 3, valid_sets=[train], init_model=older, callbacks=[again])
    assert again.run_id == first.run_id
    run = client.get_run(first.run_id)
    assert run.data.tags["mltrail.rewound_to_step"] == "1"
    points = client.get_metric_history(first.run_id, "training-binary_logloss")
    assert [m.step for m in current_history(run, points)] == [0, 1, 2, 3, 4]


def test_keras_fit_at_an_older_initial_epoch_forks(client) -> None:
    keras = pytest.importorskip("keras")
    from mltrail.integrations.keras import TrailCallback

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 3)).astype("float32"), rng.normal(size=(32, 1)).astype("float32")
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    net.compile(optimizer="sgd", loss="mse")
    light = {"checkpoints": "none", "log_model": False, **LIGHT}
    first = TrailCallback(experiment="keras-fork", **light)
    net.fit(x, y, epochs=4, verbose=0, callbacks=[first])
    again = TrailCallback(run_id=first.run_id, **light)
    net.fit(x, y, epochs=3, initial_epoch=2, verbose=0, callbacks=[again])
    assert_forked(client, again.run_id, first.run_id, 1, "loss", 3)


def test_lightning_ckpt_path_of_an_older_epoch_forks(client, tmp_path) -> None:
    pytest.importorskip("lightning")
    torch = pytest.importorskip("torch")
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from mltrail.integrations.lightning import TrailCallback

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            loss = torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])
            self.log("train_loss", loss, on_epoch=True, on_step=False)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    generator = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(16, 3, generator=generator), torch.randn(16, 1)))
    folder = tmp_path / "ckpt"

    def fit(epochs: int, ckpt_path=None) -> TrailCallback:
        callback = TrailCallback(experiment="lightning-fork", log_model=False, **LIGHT)
        saver = L.pytorch.callbacks.ModelCheckpoint(folder, "{epoch}", save_top_k=-1)
        trainer = L.Trainer(
            max_epochs=epochs,
            limit_train_batches=2,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[callback, saver],
            default_root_dir=str(tmp_path),
        )
        trainer.fit(Tiny(), data, ckpt_path=ckpt_path)
        return callback

    first = fit(4)
    older = folder / "epoch=1.ckpt"  # saved at the end of epoch 1: training restarts at 2
    again = fit(3, ckpt_path=str(older))
    assert_forked(client, again.run_id, first.run_id, 1, "train_loss", 3)
    assert client.get_run(again.run_id).data.tags["mltrail.resumed_from"] == str(older)
