"""record_beside: trainings recorded beside them, in order, on mltrail's thread (the run opened
once the training ends or has run a while); waited for by ``mltrail.wait`` and at exit; and
can_record_later, which keeps the runs that must exist before the training (or that join the
thread's run) on the training's thread."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import mlflow
import pytest

import mltrail
from mltrail.adapters import can_record_later, provide_runs, record_beside
from mltrail.errors import process_errors
from mltrail.recording import deferred
from tests.conftest import user_env


def record_later(record, what: str) -> deferred.Pending:
    """A training that has ended already: recorded at once."""
    handle = record_beside(lambda: None, record, what)
    handle.ended()
    return handle


def test_recordings_run_in_order_on_one_thread_and_are_waited_for():
    seen: list[tuple[int, str]] = []

    def record(index: int) -> None:
        time.sleep(0.05)
        seen.append((index, threading.current_thread().name))

    handles = [record_later(lambda i=i: record(i), f"training {i}") for i in range(3)]
    assert handles[-1].wait(30)
    assert [index for index, _ in seen] == [0, 1, 2]
    assert {name for _, name in seen} == {"mltrail-record"}
    assert all(handle.done for handle in handles) and not deferred.pending()


def test_mltrail_wait_waits_for_recordings_still_to_come():
    done = threading.Event()
    record_later(lambda: (time.sleep(0.3), done.set()), "a slow recording")
    assert mltrail.wait(timeout=30)
    assert done.is_set()


def test_a_recording_that_fails_is_reported_not_raised(monkeypatch):
    monkeypatch.delenv("MLTRAIL_STRICT", raising=False)
    before = process_errors.counts["recording a broken training"]

    def broken() -> None:
        raise RuntimeError("store gone")

    with pytest.warns(mltrail.MltrailWarning, match="store gone"):
        handle = record_later(broken, "a broken training")
        assert handle.wait(30)
    assert isinstance(handle.error, RuntimeError)
    assert process_errors.counts["recording a broken training"] == before + 1
    # The thread goes on with the next recording.
    assert record_later(lambda: None, "the next training").wait(30)


def test_a_recording_waiting_for_a_later_one_does_not_hang():
    results: list[bool] = []
    later: list[deferred.Pending] = []
    gate = threading.Event()

    def first() -> None:
        gate.wait(30)
        results.append(later[0].wait(30))  # queued behind this one: cannot be waited for here

    handle = record_later(first, "first")
    later.append(record_later(lambda: None, "second"))
    gate.set()
    assert handle.wait(30) and later[0].wait(30)
    assert results == [False]


def test_a_recording_waits_for_the_earlier_ones_not_for_itself():
    """A run being recorded that looks for the process's earlier runs (the already-run check,
    on a thread of its own) waits for the recordings before it; waiting for its own would
    wait for itself."""
    from mltrail.recording import lifecycle

    first_done = threading.Event()
    seen: dict[str, object] = {}
    checked = threading.Event()

    def check(mine: deferred.Pending | None) -> None:
        seen["earlier recorded"] = lifecycle.wait(5, before=mine)
        seen["first done then"] = first_done.is_set()
        checked.set()

    def second() -> None:
        mine = deferred.current()
        seen["own recording"] = mine
        threading.Thread(target=check, args=(mine,)).start()
        checked.wait(30)  # the run ends after its check, as a short run's may

    record_later(lambda: (time.sleep(0.3), first_done.set()), "first")
    handle = record_later(second, "second")
    assert handle.wait(30)
    assert seen["own recording"] is handle
    assert seen["earlier recorded"] is True and seen["first done then"] is True
    assert deferred.current() is None  # not on the recording thread


def test_which_trainings_may_be_recorded_after_they_ran(monkeypatch, module_store):
    monkeypatch.setenv("MLTRAIL_END_IN_BACKGROUND", "true")
    assert can_record_later({})
    assert not can_record_later({"already_run": "error"})  # refused before it trains
    monkeypatch.setenv("MLTRAIL_ALREADY_RUN", "error")
    assert not can_record_later({})
    monkeypatch.delenv("MLTRAIL_ALREADY_RUN")
    assert not can_record_later({"end_in_background": False})
    mlflow.set_tracking_uri(module_store)
    with mlflow.start_run():  # joined from this thread: the recording thread cannot see it
        assert not can_record_later({})
    assert can_record_later({})


_trial_run: list[str] = []


def _trial_provider(tracking_uri: str) -> str | None:
    return _trial_run[0] if _trial_run else None


def test_a_training_inside_a_provided_run_is_recorded_on_its_thread(monkeypatch):
    monkeypatch.setenv("MLTRAIL_END_IN_BACKGROUND", "true")
    provide_runs(_trial_provider)
    assert can_record_later({})
    _trial_run.append("a-trial-run")
    try:
        assert not can_record_later({})
    finally:
        _trial_run.clear()


# A fresh interpreter: MLflow not imported, or still importing on another thread (the state
# Python gives a module during its import), as when a framework's import starts the recorder.
_NO_MLFLOW = """
import importlib.machinery, json, sys, types
from mltrail.adapters import can_record_later, provide_runs

importing = types.ModuleType("mlflow")
importing.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
importing.__spec__._initializing = True
sys.modules["mlflow"] = importing
half_imported = can_record_later({})
del sys.modules["mlflow"]
asked = []
provide_runs(lambda uri: asked.append(uri) or (None if len(asked) == 1 else "a-trial-run"))
print(json.dumps({"half_imported": half_imported, "nothing_provided": can_record_later({}),
                  "provided": can_record_later({}), "asked": asked,
                  "mlflow": "mlflow" in sys.modules}))
"""


def test_asking_whether_a_training_may_be_recorded_later_imports_no_mlflow(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _NO_MLFLOW],
        cwd=tmp_path,
        env=user_env(MLFLOW_TRACKING_URI="sqlite:///elsewhere.db", MLTRAIL_END_IN_BACKGROUND="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["half_imported"] is True  # not waited for: nobody can have used it yet
    assert seen["nothing_provided"] is True
    assert seen["provided"] is False  # a provider's run is joined on the training's thread
    assert seen["asked"] == ["sqlite:///elsewhere.db"] * 2  # the URI MLflow would use
    assert seen["mlflow"] is False


def test_a_long_training_gets_its_run_while_it_runs(monkeypatch):
    monkeypatch.setattr(deferred, "OPEN_AFTER", 0.1)
    steps: list[tuple[str, bool]] = []
    handle = record_beside(
        lambda: steps.append(("begin", handle.training_over)),
        lambda: steps.append(("finish", handle.training_over)),
        "a long training",
    )
    time.sleep(0.5)  # the training runs
    assert steps == [("begin", False)]
    assert not mltrail.wait(timeout=0.1)  # it cannot be recorded before it ends
    handle.ended()
    assert handle.wait(30)
    assert steps == [("begin", False), ("finish", True)]


def test_a_short_training_is_recorded_once_it_ends():
    steps: list[str] = []
    handle = record_beside(lambda: steps.append("begin"), lambda: steps.append("finish"), "short")
    handle.ended()
    assert handle.wait(30)
    assert steps == ["begin", "finish"]
