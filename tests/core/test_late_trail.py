"""Runs opened beside their trainings (RunSession.open_beside, LateTrail): what the training
logged before the run opened lands in it in order and at its own times; a long training gets
its run while it runs; an exception ends it FAILED; the run id can be read after the training."""

from __future__ import annotations

import time

import pytest

import mltrail
from mltrail.adapters import RunSession
from mltrail.recording import deferred


@pytest.fixture(autouse=True)
def _beside(monkeypatch):
    monkeypatch.setenv("MLTRAIL_END_IN_BACKGROUND", "true")  # what lets a run open beside


def history(client, run_id: str, key: str) -> list[tuple[int, float, int]]:
    return [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]


def test_what_a_short_training_logged_lands_in_its_run_in_order(client):
    session = RunSession("demo", None, {"experiment": "late", "capture": False})
    assert session.can_open_beside()
    began = int(time.time() * 1000)
    trail = session.open_beside("a demo training", tags={"stage": "one"})
    assert trail.run_id is None  # nothing waited for the store
    trail.log_params({"lr": 0.1, "layers": [2, 3]})
    stamps = []
    for step in range(3):
        stamps.append(int(time.time() * 1000))
        trail.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        time.sleep(0.02)
    trail.set_tags({"note": "done"})
    session.end()
    ended = int(time.time() * 1000)
    run = client.get_run(session.last_run_id)  # waits for the run to open
    assert mltrail.wait(60)
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1", "layers": "[2, 3]"}
    tags = run.data.tags
    assert (tags["stage"], tags["note"], tags["mltrail.framework"]) == ("one", "done", "demo")
    points = history(client, run.info.run_id, "loss")
    assert [(s, v) for s, v, _ in points] == [(0, 1.0), (1, 0.5), (2, 1.0 / 3)]
    # Each value at the time it was logged, and the run at the training's start and end.
    assert [t for _, _, t in points] == pytest.approx(stamps, abs=5)
    assert began <= run.info.start_time <= stamps[0] and run.info.end_time <= ended


def test_a_long_training_gets_its_run_while_it_runs(client, monkeypatch):
    monkeypatch.setattr(deferred, "OPEN_AFTER", 0.1)
    session = RunSession("demo", None, {"experiment": "late", "capture": False})
    trail = session.open_beside("a long training")
    trail.log_metrics({"loss": 1.0}, step=0)
    assert trail.wait_open(30) and trail.run_id is not None  # opened before the training ended
    assert client.get_run(trail.run_id).info.status == "RUNNING"
    trail.log_metrics({"loss": 0.5}, step=1)  # straight into the open run
    session.end()
    assert mltrail.wait(60)
    run = client.get_run(trail.run_id)
    assert run.info.status == "FINISHED"
    assert [(s, v) for s, v, _ in history(client, trail.run_id, "loss")] == [(0, 1.0), (1, 0.5)]


def test_an_exception_ends_the_run_failed_with_its_type(client):
    session = RunSession("demo", None, {"experiment": "late", "capture": False})
    trail = session.open_beside("a failing training")
    trail.log_metrics({"loss": 1.0}, step=0)
    session.end(ValueError("diverged"))
    assert trail.status == "FAILED" and session.last_status == "FAILED"
    assert mltrail.wait(60)
    run = client.get_run(session.last_run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mltrail.exception.type"] == "ValueError"
    assert run.data.tags["mltrail.exception.message"] == "diverged"


def test_runs_that_must_exist_before_the_training_open_on_its_thread(monkeypatch, client):
    assert not RunSession("demo", None, {"already_run": "error"}).can_open_beside()
    assert not RunSession("demo", None, {"run_id": "0" * 32}).can_open_beside()
    with mltrail.start_run(experiment="late", capture=False) as given:
        assert not RunSession("demo", given).can_open_beside()
    monkeypatch.setenv("MLTRAIL_END_IN_BACKGROUND", "false")  # the user waits for each run
    assert not RunSession("demo").can_open_beside()


def test_a_bad_status_is_refused_at_once():
    session = RunSession("demo", None, {"experiment": "late", "capture": False})
    trail = session.open_beside("a training")
    with pytest.raises(mltrail.MltrailError, match="status must be one of"):
        trail.end("DONE")
    session.end()
    assert mltrail.wait(60)


def test_a_run_opening_beside_knows_the_params_logged_through_it():
    """Adapters read ``trail.params`` (is batch_size logged?) before the run opens, and of a run
    in the recorder process, which this process never asks: the stand-in keeps them as the
    Trail would (flattened, first value of each key, secrets redacted)."""
    from mltrail.config import Options
    from mltrail.recording.late_trail import LateTrail

    late = LateTrail(Options.resolve())
    late.log_params({"optimizer": {"lr": 0.1}, "api_token": "s3cret", "epochs": 3})
    late.log_params({"epochs": 5, "batch_size": 16})
    params = late.params
    assert params["optimizer.lr"] == "0.1"
    assert params["epochs"] == "3"  # the first value, as MLflow keeps it
    assert params["batch_size"] == "16"
    assert "s3cret" not in params["api_token"]
