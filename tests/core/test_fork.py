"""Resuming from a checkpoint, decided in the kernel: continue, fork (copied history with the
original timestamps, parent untouched) or rewind (fork=False), through the adapter API a
framework adapter uses (RunSession.open(restart_step=...) and EpochLog)."""

from __future__ import annotations

import json

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


# Each adapter that resumes (Lightning ckpt_path, Keras initial_epoch, XGBoost xgb_model=,
# LightGBM init_model=) has its fork or rewind test next to its other tests in
# tests/integrations/, where its framework is imported anyway.


def test_a_training_from_scratch_into_a_run_forks_before_its_first_step(client, parent) -> None:
    session = RunSession("toy", None, {"run_id": parent, **LIGHT})
    fork = train(session, range(0, 2), restart_step=0)
    run = client.get_run(fork)
    assert run.data.tags["mltrail.forked_from"] == parent
    assert run.data.tags["mltrail.forked_at_step"] == "-1"
    assert run.info.run_name == f"{client.get_run(parent).info.run_name}-fork@start"
    assert [s for s, _, _ in history(client, fork, "loss")] == [0, 1]  # nothing copied
