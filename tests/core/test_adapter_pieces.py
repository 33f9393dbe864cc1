"""Kernel pieces that callback adapters share (mltrail.adapters): a run that ends when the
training's objects go, the given Trail's steps, copies from settings, checkpoints every N steps,
importance plots, callables by name, the autolog callback and the look at the training call,
the copy of a model saved in the background."""

from __future__ import annotations

import copy
import functools
import gc
import json
import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import mltrail
from mltrail import MltrailError
from mltrail.adapters import (
    AutologCallbacks,
    CheckpointEvery,
    CopiedBySettings,
    EarlyStop,
    EpochLog,
    RunSession,
    by_name,
    call_with_callback,
    calling_object,
    copy_to_save,
    frames_above,
    log_importance,
    parameter_counts,
)

QUIET = {"capture": False, "system_metrics": False}


class Holder:
    """Stands in for an object only a training call holds (a per-call callback list)."""


def test_a_run_ends_failed_when_the_watched_object_goes_before_its_end(client) -> None:
    session = RunSession("demo", None, {"experiment": "pieces", **QUIET})
    trail = session.open()
    session.training_started()
    held = Holder()
    session.end_when_released(held, reason="the demo training raised where no hook saw it")
    assert pickle.loads(pickle.dumps(session))._release is None  # a copy watches nothing
    del held
    gc.collect()  # not needed in CPython; explicit for other interpreters
    assert session.trail is None and session.last_status == "FAILED"
    run = client.get_run(trail.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mltrail.exception.message"].startswith("the demo training raised")


def test_a_run_that_ended_stops_watching_and_a_new_watch_replaces_the_old(client) -> None:
    calls: list[str] = []
    session = RunSession("demo", None, {"experiment": "pieces", **QUIET})
    trail = session.open()
    first, second = Holder(), Holder()
    session.end_when_released(first, lambda: calls.append("first"))
    session.end_when_released(second, lambda: calls.append("second"))
    del first  # no longer watched: a second watch replaced it
    session.end()
    del second  # the run has ended: nothing to stop
    gc.collect()
    assert calls == []
    assert client.get_run(trail.run_id).info.status == "FINISHED"


def test_a_training_into_a_given_trail_must_start_past_the_steps_it_holds(client) -> None:
    with mltrail.start_run(experiment="pieces", **QUIET) as trail:
        session = RunSession("demo", trail)
        epochs = EpochLog(session)
        session.open(restart_step=0, steps_name="demo rounds", how_to_continue="go on")
        epochs.start()
        for epoch in range(3):
            epochs.log(epoch, {"loss": 1.0 / (epoch + 1)})
        session.end()
        again = RunSession("demo", trail)
        with pytest.raises(MltrailError, match="already holds demo rounds up to step 2") as refused:
            again.open(restart_step=0, steps_name="demo rounds", how_to_continue="pass init=")
        assert "again from step 0" in str(refused.value) and "pass init= so" in str(refused.value)
        assert again.open(restart_step=3, steps_name="demo rounds") is trail  # goes on: fine
        again.end()
        assert RunSession("demo", trail).open(restart_step=0) is trail  # not asked to check
    assert [m.step for m in client.get_metric_history(trail.run_id, "loss")] == [0, 1, 2]


class Copied(CopiedBySettings):
    copied_settings = ("every", "name")

    def __init__(self, trail=None, *, every: int = 1, name: str = "x", **start_run_kwargs):
        self._session = RunSession("demo", trail, start_run_kwargs)
        self.every, self.name = every, name


def test_copies_are_fresh_callbacks_built_from_the_settings() -> None:
    with mltrail.start_run(experiment="pieces", **QUIET) as trail:
        given = Copied(trail, every=3, name="given")
        twin = copy.deepcopy(given)  # scikit-learn's clone: the same run target
        assert twin is not given and twin._session is not given._session
        assert (twin._session.given, twin.every, twin.name) == (trail, 3, "given")
    own = Copied(every=2, experiment="elsewhere", flush_timeout=5)
    for twin in (copy.deepcopy(own), pickle.loads(pickle.dumps(own))):  # joblib pickles
        assert twin._session.given is None and twin.every == 2
        assert twin._session.start_run_kwargs == {"experiment": "elsewhere", "flush_timeout": 5}
    assert pickle.loads(pickle.dumps(given))._session.given is None  # a Trail does not travel


def test_checkpoints_every_n_steps_with_best_and_latest(client) -> None:
    asked: list[int] = []

    def monitor() -> tuple[str | None, str]:
        asked.append(1)
        return "val-error", "auto"

    def write(path: str) -> None:
        Path(path).write_text(path)

    with mltrail.start_run(experiment="pieces", **QUIET) as trail:
        session = RunSession("demo", trail)
        session.open()
        checkpoints = CheckpointEvery(session, 2, "demo-{step:03d}.txt", None)
        errors = [0.5, 0.3, 0.4, 0.2, 0.6, 0.7, 0.1]
        saved = [
            step
            for step, error in enumerate(errors)
            if checkpoints.save(step, {"val-error": error, "val-auc": 1 - error}, write, monitor)
        ]
        assert saved == [1, 3, 5] and len(asked) == 1  # the monitor is asked once a training
        session.end()
        assert not CheckpointEvery(session, 2, "x", None).save(1, {}, write, monitor)  # no run
        assert not CheckpointEvery(RunSession("demo", trail), None, "x", None).save(
            1, {}, write, monitor
        )
    index = json.loads(
        Path(client.download_artifacts(trail.run_id, "checkpoints/index.json")).read_text()
    )
    assert sorted(index["files"]) == [f"checkpoints/demo-00{s}.txt" for s in (1, 3, 5)]
    assert index["files"]["checkpoints/demo-003.txt"]["metrics"]["val-error"] == 0.2
    # val-error is an error: the smallest is best (0.2 at step 3); the last one is latest.
    assert index["aliases"] == {
        "best": "checkpoints/demo-003.txt",
        "latest": "checkpoints/demo-005.txt",
    }


def test_importance_is_logged_as_json_and_a_plot(client) -> None:
    scores = {"gain": {"f0": 2.0, "f1": 1.0}, "split": {"f0": 3.0, "f1": 5.0}}
    drawn: list[str] = []

    def plot(given, path: Path, title: str) -> None:
        drawn.append(title)
        path.write_bytes(b"png")

    with mltrail.start_run(experiment="pieces", **QUIET) as trail:
        log_importance(trail, scores, "demo/feature_importance", "Demo importance", plot=plot)
        log_importance(trail, scores, "demo/default_plot", "Drawn by the kernel")
    paths = {a.path for a in client.list_artifacts(trail.run_id, "demo")}
    assert paths == {
        "demo/feature_importance.json",
        "demo/feature_importance.png",
        "demo/default_plot.json",
        "demo/default_plot.png",
    }
    local = client.download_artifacts(trail.run_id, "demo/feature_importance.json")
    assert json.loads(Path(local).read_text()) == scores
    assert drawn == ["Demo importance"]


def test_an_importance_plot_that_fails_is_counted_under_its_name(monkeypatch) -> None:
    monkeypatch.setenv("MLTRAIL_STRICT", "0")

    def broken(*args) -> None:
        raise RuntimeError("no plot")

    scores = {"gain": {"f0": 1.0}}
    warned = pytest.warns(mltrail.MltrailWarning, match="demo: plotting feature importance")
    with warned, mltrail.start_run(experiment="pieces", **QUIET) as trail:
        log_importance(trail, scores, "demo/feature_importance", "t", plot=broken)


def custom_objective(predt, dtrain):  # a user's function, by name
    return predt


class Metric:
    def __call__(self, predt, dtrain):
        return 0.0


def test_callables_are_logged_by_name_not_by_address() -> None:
    assert by_name(custom_objective) == "custom_objective"
    assert by_name(functools.partial(custom_objective)) == "partial"
    assert by_name(Metric()) == "Metric"
    assert by_name(Metric.__call__) == "Metric.__call__"
    assert by_name(Metric) is Metric  # a class is a setting as it is
    assert by_name([custom_objective, 1]) == ["custom_objective", 1]
    assert by_name((custom_objective, "x")) == ("custom_objective", "x")
    assert by_name({"a": 1}) == {"a": 1} and by_name(0.1) == 0.1


class Recorder:
    def __init__(self, label: str = "made") -> None:
        self.label, self.stopped_by = label, None

    def stopped(self, error: BaseException) -> None:
        self.stopped_by = error


def test_a_patched_training_gets_the_callback_once_and_ends_it_on_an_exception() -> None:
    seen: list[list] = []

    def train(callbacks):
        seen.append(callbacks)
        if any(getattr(cb, "label", "") == "fail" for cb in callbacks):
            raise ValueError("objective broke")
        return "booster"

    user = [print]
    assert call_with_callback(train, user, Recorder, Recorder, Recorder.stopped) == "booster"
    assert user == [print] and seen[-1][0] is print and isinstance(seen[-1][1], Recorder)
    assert call_with_callback(train, None, Recorder, Recorder, Recorder.stopped) == "booster"
    assert len(seen[-1]) == 1
    own = [Recorder("own")]
    call_with_callback(train, own, Recorder, Recorder, Recorder.stopped)
    assert seen[-1] is own  # the user's own callback: the training runs as it is
    made: list[Recorder] = []

    def failing() -> Recorder:
        made.append(Recorder("fail"))
        return made[-1]

    with pytest.raises(ValueError, match="objective broke") as raised:
        call_with_callback(train, [], Recorder, failing, Recorder.stopped)
    assert made[0].stopped_by is raised.value  # handed on, then propagated unchanged


def test_frames_above_look_up_the_callers_within_a_limit() -> None:
    def inner() -> list[str]:
        return [frame.f_code.co_name for frame in frames_above(sys._getframe(), 3)]

    def middle() -> list[str]:
        return inner()

    def outer() -> list[str]:
        return middle()

    assert outer() == ["inner", "middle", "outer"]
    assert list(frames_above(None, 5)) == []


def test_calling_object_is_the_nearest_container_that_calls_the_hook() -> None:
    class Handler:  # a framework's container of callbacks, calling each one's hook
        def __init__(self, callbacks: list[Any]) -> None:
            self.callbacks = callbacks

        def call(self) -> list[Any]:
            return [callback.hook() for callback in self.callbacks]

    class Callback:
        def hook(self) -> Any:
            return calling_object(sys._getframe(), Handler, 5)

    inner = Handler([Callback(), Callback()])
    inner.hook = inner.call  # an outer container calls the inner one like a callback
    outer = Handler([inner])
    assert outer.call() == [[inner, inner]]  # the nearest container, not the outer one
    assert calling_object(sys._getframe(), Handler, 5) is None  # no container called this
    assert Callback().hook() is None


class Trainer:
    """A framework's trainer that keeps its callbacks in a list of its own."""

    def __init__(self, *callbacks) -> None:
        self.callbacks = list(callbacks)
        self.seen: list[list] = []

    def train(self, fail: bool = False) -> str:
        self.seen.append(list(self.callbacks))
        if fail:
            raise ValueError("training broke")
        return "trained"


class FrameworkMlflow:
    """The framework's own MLflow callback, off while ours records."""


class Checkpointer:
    """A callback ours goes before."""


def test_autolog_callbacks_for_a_training_and_the_calls_after_it() -> None:
    made: list[Recorder] = []

    def make() -> Recorder:
        made.append(Recorder())
        return made[-1]

    def before_checkpointer(callbacks: list) -> int:
        return next((i for i, c in enumerate(callbacks) if isinstance(c, Checkpointer)), 0)

    added = AutologCallbacks(
        Recorder,
        make,
        without=(FrameworkMlflow,),
        place=before_checkpointer,
        stopped=Recorder.stopped,
    )
    mlflow_cb, checkpointer = FrameworkMlflow(), Checkpointer()
    trainer = Trainer(print, mlflow_cb, checkpointer)
    own_list = trainer.callbacks
    assert added.call_training(trainer, trainer.callbacks, trainer.train) == "trained"
    assert trainer.seen[-1] == [print, made[0], checkpointer]  # placed, MLflow's off
    assert trainer.callbacks is own_list and own_list == [print, mlflow_cb, checkpointer]
    added.call_later(trainer, trainer.callbacks, trainer.train)
    assert trainer.seen[-1][1] is made[0] and len(made) == 1  # the training's callback again

    with pytest.raises(ValueError, match="training broke") as raised:
        added.call_training(trainer, trainer.callbacks, functools.partial(trainer.train, True))
    assert made[1].stopped_by is raised.value and made[0].stopped_by is None
    assert trainer.callbacks == [print, mlflow_cb, checkpointer]

    users = Recorder("user's")
    trainer.callbacks.append(users)
    added.call_training(trainer, trainer.callbacks, trainer.train)
    assert trainer.seen[-1] == trainer.callbacks and len(made) == 2  # the user's, alone
    trainer.callbacks.remove(users)
    added.call_later(trainer, trainer.callbacks, trainer.train)
    assert trainer.seen[-1] == [print, mlflow_cb, checkpointer]  # nothing kept after it

    other = Trainer()
    added.call_later(other, other.callbacks, other.train)
    assert other.seen[-1] == []  # no training before: nothing to add to
    added.call_later(other, other.callbacks, other.train, or_new=True)
    added.call_later(other, other.callbacks, other.train, or_new=True)
    assert other.seen[-2] == other.seen[-1] == [made[2]] and len(made) == 3


def test_autolog_callbacks_leave_what_the_call_added() -> None:
    added = AutologCallbacks(Recorder, Recorder)
    trainer = Trainer(print)

    def train() -> None:
        trainer.callbacks.append(repr)  # the framework adds one of its own during the call

    added.call_training(trainer, trainer.callbacks, train)
    assert trainer.callbacks == [print, repr]
    assert isinstance(added.for_later(trainer, trainer.callbacks), Recorder)
    assert added.for_later(trainer, [Recorder("user's")]) is None


def test_a_model_is_copied_to_be_saved_in_the_background() -> None:
    model = {"weights": [1.0, 2.0]}
    copied, background = copy_to_save(model, lambda m: {**m, "mode": "eval"})
    assert background and copied == {"weights": [1.0, 2.0], "mode": "eval"}
    assert copied["weights"] is not model["weights"] and "mode" not in model
    held = {"lock": threading.Lock()}  # cannot be copied: saved now, the original
    assert copy_to_save(held) == (held, False)
    assert parameter_counts(10, 4) == {"model.total_params": 10, "model.trainable_params": 4}


def test_early_stopping_is_logged_on_the_steps_of_a_run_that_goes_on(client) -> None:
    with mltrail.start_run(experiment="pieces", **QUIET) as trail:
        epochs = EpochLog(lambda: trail)
        epochs.start()
        epochs.log(0, {"loss": 1.0})
        epochs.start()  # a second training into the run: its epoch 0 is step 1
        epochs.log(0, {"loss": 0.5})
        stop = EarlyStop({"monitor": "loss"}, stopped_epoch=0, best_score=0.5, best_epoch=0)
        epochs.log_early_stopping([stop])
        epochs.log_early_stopping([])  # none: nothing
        epochs.log_early_stopping([stop], epoch=1)  # at an epoch's step
    metrics = {
        key: [(m.step, m.value) for m in client.get_metric_history(trail.run_id, key)]
        for key in ("early_stopping.stopped_epoch", "early_stopping.best_epoch")
    }
    assert metrics == {
        "early_stopping.stopped_epoch": [(1, 1.0), (2, 1.0)],
        "early_stopping.best_epoch": [(1, 1.0), (2, 1.0)],
    }
    assert epochs.last_step == 2
