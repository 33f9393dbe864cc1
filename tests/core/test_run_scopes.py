"""Runs inside another adapter's unit of work: provided runs, nested runs, child runs with a
history and a status, and trainings recorded inside a patched call (mltrail.adapters)."""

from __future__ import annotations

import threading

import mltrail
from mltrail.adapters import in_patched_call, provide_runs, recording, trainings_recorded

_offered = threading.local()  # the provider below offers a run only where a test sets one


def _provider(tracking_uri: str) -> str | None:
    make = getattr(_offered, "make", None)
    return make(tracking_uri) if make is not None else None


provide_runs(_provider)
provide_runs(_provider)  # registered once


def test_a_run_starting_inside_a_unit_of_work_joins_the_provided_run(client) -> None:
    parent = mltrail.start_run(experiment="scopes", capture=False, system_metrics=False)
    asked: list[str] = []

    def make(tracking_uri: str) -> str:
        asked.append(tracking_uri)
        # Runs the provider starts are offered to nobody: no recursion, a run of its own.
        child = mltrail.start_run(
            experiment="scopes", parent_run_id=parent.run_id, capture=False, system_metrics=False
        )
        made.append(child)
        return child.run_id

    made: list[mltrail.Trail] = []
    _offered.make = make
    try:
        training = mltrail.start_run(experiment="elsewhere", tags={"who": "training"})
        training.log_metrics({"loss": 0.5}, step=3)
        training.end()
    finally:
        _offered.make = None
    assert len(asked) == 1 and len(made) == 1
    child = made[0]
    assert training.run_id == child.run_id
    assert training.provenance is None  # captured once, by the provider's side
    child.end("FAILED")
    parent.end()
    run = client.get_run(child.run_id)
    assert run.info.status == "FAILED"  # the joining training left the status to the owner
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.tags["who"] == "training"
    assert [(m.step, m.value) for m in client.get_metric_history(child.run_id, "loss")] == [
        (3, 0.5)
    ]
    # Without an offer, runs start as usual, and a nested run joins no active run.
    alone = mltrail.start_run(experiment="scopes", capture=False, system_metrics=False)
    alone.end()
    assert alone.run_id not in (child.run_id, parent.run_id)


def test_child_runs_get_a_metric_history_and_a_status(client) -> None:
    parent = mltrail.start_run(experiment="scopes", capture=False, system_metrics=False)
    parent.log_child_run(
        run_name="trial-3",
        params={"lr": 0.1},
        metrics={"value": 0.25},
        tags={"state": "FAIL"},
        history={"intermediate_value": [(0, 0.9), (1, 0.5), (4, 0.25)]},
        status="failed",
    )
    parent.end()
    (child,) = client.search_runs(
        [parent.experiment_id], f"tags.mlflow.parentRunId = '{parent.run_id}'"
    )
    assert child.info.run_name == "trial-3"
    assert child.info.status == "FAILED"
    assert child.data.params == {"lr": "0.1"}
    assert child.data.metrics["value"] == 0.25
    history = client.get_metric_history(child.info.run_id, "intermediate_value")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.5), (4, 0.25)]


def test_trainings_inside_a_patched_call_can_be_recorded_again() -> None:
    assert not in_patched_call()
    with recording():
        assert in_patched_call()  # a training inside a recorded one passes straight through
        with trainings_recorded():
            assert not in_patched_call()  # the user's objective inside a search: recorded
            with recording():
                assert in_patched_call()
        assert in_patched_call()
    assert not in_patched_call()
