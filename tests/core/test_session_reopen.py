"""RunSession.reopen: adding to the run a session recorded (a score or an evaluate after fit)."""

from __future__ import annotations

import pickle

import mltrail
from mltrail.adapters import RunSession


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
