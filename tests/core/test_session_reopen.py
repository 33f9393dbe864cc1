"""RunSession.reopen: adding to the run a session recorded (a score or an evaluate after fit);
log_after, the metrics of such a call; open_checkpoint_run, the run a checkpoint names."""

from __future__ import annotations

import pickle

import pytest

import mltrail
from mltrail.adapters import RunSession
from mltrail.errors import MltrailWarning

QUIET = {"capture": False, "system_metrics": False}


def test_a_given_trail_ended_since_is_joined_by_its_run_id(client):
    with mltrail.start_run(experiment="reopen", capture=False) as trail:
        session = RunSession("demo", trail)
        session.open()
        session.end()
    ended = client.get_run(trail.run_id).info
    joined = session.reopen()
    assert joined is not trail and joined.run_id == trail.run_id and not session.owns
    joined.log_metrics({"score": 0.5}, step=0)
    session.end()
    run = client.get_run(trail.run_id)
    assert run.data.metrics["score"] == 0.5
    assert (run.info.status, run.info.end_time) == (ended.status, ended.end_time)


def test_an_open_given_trail_is_logged_into_directly(client):
    with mltrail.start_run(experiment="reopen", capture=False) as trail:
        session = RunSession("demo", trail)
        session.open()
        session.end()
        assert session.reopen() is trail
        session.end()
        assert trail.status is None  # left to its owner


def test_a_copied_session_finds_its_run_in_the_store_it_was_recorded_in(client, tmp_path):
    other = f"sqlite:///{tmp_path / 'other.db'}"
    session = RunSession("demo", None, {"tracking_uri": other, "capture": False})
    session.open()
    session.end()
    copied = pickle.loads(pickle.dumps(session))
    copied.start_run_kwargs.pop("tracking_uri")  # only the run's own store is left to find it
    copied.reopen().log_metrics({"score": 1.0}, step=0)
    copied.end()
    from mlflow import MlflowClient

    run = MlflowClient(other).get_run(session.last_run_id)
    assert run.data.metrics["score"] == 1.0 and run.info.status == "FINISHED"


def test_metrics_after_the_training_go_to_its_run_at_the_given_step(client):
    session = RunSession("demo", None, {"experiment": "after", **QUIET})
    trained = session.open()
    trained.log_metrics({"loss": 0.5}, step=2)
    session.end()
    ended = client.get_run(trained.run_id).info
    assert session.log_after({"test_loss": 0.25}, 2).run_id == trained.run_id
    run = client.get_run(trained.run_id)
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "test_loss")] == [
        (2, 0.25)
    ]
    assert (run.info.status, run.info.end_time) == (ended.status, ended.end_time)  # joined
    assert session.trail is None


def test_metrics_after_no_training_get_a_run_and_none_go_in_while_a_run_is_open(client):
    session = RunSession("demo", None, {"experiment": "after", **QUIET})
    trail = session.log_after({"test_loss": 1.0}, 0)
    run = client.get_run(trail.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["test_loss"] == 1.0
    assert run.data.tags["mltrail.framework"] == "demo"
    training = session.open()
    assert session.log_after({"test_loss": 2.0}, 0) is None  # inside the training: its hooks'
    assert session.trail is training
    session.end()
    assert "test_loss" not in client.get_run(training.run_id).data.metrics


def test_the_run_a_checkpoint_names_is_resumed_else_a_new_run_names_it(client):
    first = RunSession("demo", None, {"experiment": "resume", **QUIET})
    first.open().log_metrics({"loss": 1.0}, step=0)
    first.end()
    resumed = RunSession("demo", None, {"experiment": "resume", **QUIET})
    trail = resumed.open_checkpoint_run(first.last_run_id, 1, tags={"where": "ckpt"})
    assert trail.run_id == first.last_run_id and trail.resumed
    resumed.end()
    run = client.get_run(first.last_run_id)
    assert run.data.tags["mltrail.resume_count"] == "1" and run.data.tags["where"] == "ckpt"

    gone = "0" * 32  # a run the store does not have: reported, and a new run records
    fresh = RunSession("demo", None, {"experiment": "resume", **QUIET})
    with pytest.warns(MltrailWarning, match="resuming the checkpoint's run"):
        trail = fresh.open_checkpoint_run(gone, 1, tags={"where": "ckpt"})
    fresh.end()
    tags = client.get_run(trail.run_id).data.tags
    assert trail.run_id != gone and not trail.resumed
    assert tags["mltrail.demo.resumed_run"] == gone and tags["where"] == "ckpt"

    no_id = RunSession("demo", None, {"experiment": "resume", **QUIET})
    assert no_id.open_checkpoint_run(None, 3).run_id not in {first.last_run_id, trail.run_id}
    no_id.end()


def test_a_given_trail_is_used_whatever_run_the_checkpoint_names(client):
    with mltrail.start_run(experiment="resume", **QUIET) as trail:
        session = RunSession("demo", trail)
        assert session.open_checkpoint_run("0" * 32, 4) is trail
        session.end()
