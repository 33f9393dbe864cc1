"""FitRecording without a framework: a toy estimator whose blocking ``fit`` logs nothing while it
runs, recorded the way an adapter records it, into a real store: opened before the fit on its
thread or recorded beside it on mltrail's, FAILED on the fit's exception (raised unchanged),
fits inside it no runs of their own."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

import mltrail
from mltrail.adapters import (
    FitRecording,
    RunSession,
    current_fit,
    in_patched_call,
    record_beside,
)
from mltrail.recording import deferred

QUIET = {"capture": False, "system_metrics": False}


class ToyRidge:
    """A ridge regression whose ``fit`` solves its normal equations; ``inner``: another
    estimator it fits first (a step of a pipeline, say)."""

    def __init__(self, alpha: float = 1.0, inner: ToyRidge | None = None) -> None:
        self.alpha = alpha
        self.inner = inner
        self.seen_inside: list[Any] = []  # (current_fit(), in_patched_call()) during the fit

    def fit(self, X: np.ndarray, y: np.ndarray) -> ToyRidge:
        self.seen_inside.append((current_fit(), in_patched_call()))
        if self.inner is not None:
            fit_recorded(self.inner, X, y, experiment="fit-recording-inner", **QUIET)
        if not np.all(np.isfinite(X)):
            raise ValueError("X holds NaN")
        gram = X.T @ X + self.alpha * np.eye(X.shape[1])
        self.coef_ = np.linalg.solve(gram, X.T @ y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return X @ self.coef_


class ToyRecording(FitRecording):
    """What an adapter writes: the params that describe the fit, what the fitted model logs."""

    def __init__(self, session: RunSession, model: ToyRidge, X: Any, y: Any, **kw: Any) -> None:
        super().__init__(session, model, [("train", X, y)], tags={"toy.model": "ridge"}, **kw)
        self.X, self.y = X, y

    def params(self) -> dict[str, Any]:
        return {"alpha": self.model.alpha}

    def finish(self, trail: mltrail.Trail, model: ToyRidge) -> None:
        mse = float(np.mean((model.predict(self.X) - self.y) ** 2))
        trail.log_metrics({"train/mse": mse, "coef_0": float(model.coef_[0])}, step=0)


def fit_recorded(
    model: ToyRidge, X: Any, y: Any, trail: Any = None, **start: Any
) -> ToyRecording | None:
    """The adapter's fit: a fit inside a recorded one passes through, others are recorded."""
    if current_fit() is not None:
        model.fit(X, y)
        return None
    private = start.pop("private", False)
    recorded = ToyRecording(RunSession("toy", trail, start), model, X, y, private=private)
    recorded.run(lambda: model.fit(X, y))
    return recorded


def data(rows: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 3))
    return X, X @ np.array([1.0, -2.0, 0.5]) + 0.01 * rng.normal(size=rows)


def runs_of(client, experiment: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def content(run: Any) -> dict[str, Any]:
    """What a user checks of a fit's run in MLflow."""
    inputs = run.inputs.dataset_inputs
    return {
        "status": run.info.status,
        "params": run.data.params,
        "metrics": {k: round(v, 9) for k, v in run.data.metrics.items()},
        "tags": {k: v for k, v in run.data.tags.items() if k in ("toy.model", "mltrail.framework")},
        "inputs": sorted((d.dataset.name, d.dataset.digest) for d in inputs),
    }


def test_a_fit_is_one_finished_run_with_its_params_metrics_tags_and_data(client) -> None:
    X, y = data()
    model = ToyRidge(alpha=0.5)
    recorded = fit_recorded(model, X, y, experiment="fit-recording", **QUIET)
    run = client.get_run(recorded.session.last_run_id)
    got = content(run)
    assert got["status"] == "FINISHED"
    assert got["params"]["alpha"] == "0.5"
    assert got["params"]["data.train.shape"] == "40x3"
    assert got["params"]["data.train.y_shape"] == "40"
    assert got["metrics"]["train/mse"] < 0.01
    assert got["metrics"]["coef_0"] == pytest.approx(model.coef_[0])
    assert got["tags"] == {"toy.model": "ridge", "mltrail.framework": "toy"}
    assert got["inputs"] == [("train", got["params"]["data.train.digest"])]
    # The run was open while the fit ran, and the thread marked as recording only then.
    ((session, marked),) = model.seen_inside
    assert session is recorded.session and marked
    assert recorded.pending is None and recorded.fitted
    assert current_fit() is None and not in_patched_call()


def test_a_failed_fit_ends_its_run_failed_and_raises_unchanged(client) -> None:
    X, y = data()
    X[3, 1] = np.nan
    model = ToyRidge()
    recorded = ToyRecording(
        RunSession("toy", None, {"experiment": "fit-failed", **QUIET}), model, X, y
    )
    with pytest.raises(ValueError, match="X holds NaN") as raised:
        recorded.run(lambda: model.fit(X, y))
    assert raised.traceback[-1].name == "fit"  # the estimator's own exception, not a wrapper
    run = client.get_run(recorded.session.last_run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mltrail.exception.type"] == "ValueError"
    assert run.data.params["data.train.shape"] == "40x3"  # described before the fit
    assert "train/mse" not in run.data.metrics and not recorded.fitted
    assert current_fit() is None and not in_patched_call()


def test_a_fit_inside_a_recorded_fit_makes_no_run_of_its_own(client) -> None:
    X, y = data()
    inner = ToyRidge(alpha=2.0)
    outer = ToyRidge(alpha=0.1, inner=inner)
    recorded = fit_recorded(outer, X, y, experiment="fit-recording-outer", **QUIET)
    assert [run.info.run_id for run in runs_of(client, "fit-recording-outer")] == [
        recorded.session.last_run_id
    ]
    assert runs_of(client, "fit-recording-inner") == []
    ((session, marked),) = inner.seen_inside  # it saw the outer fit's run and passed through
    assert session is recorded.session and marked


def test_a_fit_recorded_beside_it_gets_the_same_run(client, monkeypatch) -> None:
    X, y = data(seed=1)
    fit_recorded(ToyRidge(), X, y, experiment="fit-here", **QUIET)
    monkeypatch.setenv("MLTRAIL_END_IN_BACKGROUND", "true")
    model = ToyRidge()
    recorded = fit_recorded(model, X, y, experiment="fit-beside", **QUIET)
    assert recorded.pending is not None  # recorded on mltrail's thread...
    ((session, marked),) = model.seen_inside
    assert session is recorded.session and marked  # ...and the fit's thread still marked
    assert current_fit() is None and not in_patched_call()
    assert recorded.pending.wait(60) and recorded.pending.error is None
    assert mltrail.wait(timeout=60)
    (here,) = runs_of(client, "fit-here")
    (beside,) = runs_of(client, "fit-beside")
    assert content(here)["status"] == "FINISHED"
    assert content(beside) == content(here)


def test_a_failed_fit_recorded_beside_it_is_failed(client, monkeypatch) -> None:
    monkeypatch.setenv("MLTRAIL_END_IN_BACKGROUND", "true")
    X, y = data()
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="X holds NaN"):
        fit_recorded(ToyRidge(), X, y, experiment="fit-beside-failed", **QUIET)
    assert mltrail.wait(timeout=60)
    (run,) = runs_of(client, "fit-beside-failed")
    assert run.info.status == "FAILED"
    assert run.data.tags["mltrail.exception.type"] == "ValueError"
    assert run.data.params["alpha"] == "1.0"


@pytest.mark.parametrize("private", [False, True])
def test_a_recording_beside_the_fit_measures_a_copy_unless_the_model_is_private(
    client, monkeypatch, private: bool
) -> None:
    monkeypatch.setenv("MLTRAIL_END_IN_BACKGROUND", "true")
    # Hold mltrail's thread so that the fit is recorded after the user changed the model.
    gate = threading.Event()
    blocker = record_beside(lambda: None, lambda: gate.wait(30), "an earlier training")
    blocker.ended()
    X, y = data()
    model = ToyRidge()
    experiment = f"fit-beside-copy-{private}"
    recorded = fit_recorded(model, X, y, experiment=experiment, private=private, **QUIET)
    fitted = float(model.coef_[0])
    model.coef_ = model.coef_ + 100.0  # the next fold refits the user's estimator
    gate.set()
    assert recorded.pending.wait(60) and mltrail.wait(timeout=60)
    (run,) = runs_of(client, experiment)
    expected = fitted + 100.0 if private else fitted
    assert run.data.metrics["coef_0"] == pytest.approx(expected)


def test_system_metrics_only_for_a_fit_still_running_when_its_run_opens(
    client, monkeypatch
) -> None:
    monkeypatch.setenv("MLTRAIL_END_IN_BACKGROUND", "true")
    monkeypatch.setattr(deferred, "OPEN_AFTER", 0.05)
    sampled = {"capture": False, "system_metrics": True}
    X, y = data()

    class SlowRidge(ToyRidge):
        def fit(self, X: np.ndarray, y: np.ndarray) -> SlowRidge:
            deadline = time.monotonic() + 30
            while recorded_session.trail is None and time.monotonic() < deadline:
                time.sleep(0.02)  # till the run is open beside the fit
            return super().fit(X, y)

    slow = SlowRidge()
    recorded = ToyRecording(
        RunSession("toy", None, {"experiment": "fit-slow", **sampled}), slow, X, y
    )
    recorded_session = recorded.session
    recorded.run(lambda: slow.fit(X, y))

    gate = threading.Event()  # the quick fit is over before mltrail's thread opens its run
    record_beside(lambda: None, lambda: gate.wait(30), "an earlier training").ended()
    fit_recorded(ToyRidge(), X, y, experiment="fit-quick", **sampled)
    gate.set()
    assert mltrail.wait(timeout=60)
    (slow_run,) = runs_of(client, "fit-slow")
    (quick_run,) = runs_of(client, "fit-quick")
    assert [k for k in slow_run.data.metrics if k.startswith("system/")]
    assert not [k for k in quick_run.data.metrics if k.startswith("system/")]
    assert slow_run.info.status == quick_run.info.status == "FINISHED"


def test_a_given_trail_is_recorded_into_on_the_fits_thread_and_left_open(
    client, monkeypatch
) -> None:
    monkeypatch.setenv("MLTRAIL_END_IN_BACKGROUND", "true")
    X, y = data()
    with mltrail.start_run(experiment="fit-given", **QUIET) as trail:
        recorded = fit_recorded(ToyRidge(alpha=3.0), X, y, trail=trail)
        assert recorded.pending is None  # its owner may end it: never recorded later
        assert client.get_run(trail.run_id).info.status == "RUNNING"
    run = client.get_run(trail.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["alpha"] == "3.0"
    assert run.data.tags["toy.model"] == "ridge"  # set on a run it did not start
    assert "train/mse" in run.data.metrics


def test_an_adapter_that_logs_while_the_fit_runs_records_it_on_the_fits_thread(
    client, monkeypatch
) -> None:
    monkeypatch.setenv("MLTRAIL_END_IN_BACKGROUND", "true")
    X, y = data()
    model = ToyRidge()
    session = RunSession("toy", None, {"experiment": "fit-not-beside", **QUIET})
    recorded = ToyRecording(session, model, X, y, beside=False)
    recorded.run(lambda: (model.fit(X, y), session.trail.log_metrics({"during": 1.0}, step=0)))
    assert recorded.pending is None
    assert mltrail.wait(timeout=60)
    run = client.get_run(session.last_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["during"] == 1.0 and "train/mse" in run.data.metrics


def test_framework_events_drive_begin_complete_and_end(client) -> None:
    X, y = data()
    model = ToyRidge()
    start = {"experiment": "fit-events", **QUIET}
    recorded = ToyRecording(RunSession("toy", None, start), model, X, y)
    recorded.begin()  # the framework's "fit begins"
    assert current_fit() is recorded.session and in_patched_call()
    model.fit(X, y)
    recorded.complete(model)  # its "fit ended"
    assert current_fit() is None and not in_patched_call()

    stopped = ToyRecording(RunSession("toy", None, start), ToyRidge(), X, y)
    stopped.begin()
    stopped.end(None, finished=False, reason="the fit ended before its last task")
    assert current_fit() is None
    first, second = runs_of(client, "fit-events")
    assert first.info.status == "FINISHED" and "train/mse" in first.data.metrics
    assert second.info.status == "FAILED"
    assert second.data.tags["mltrail.exception.message"] == "the fit ended before its last task"


class BrokenParams(ToyRecording):
    def params(self) -> dict[str, Any]:
        raise RuntimeError("no params to read")


def test_what_cannot_be_described_is_reported_into_the_run(client, monkeypatch) -> None:
    monkeypatch.delenv("MLTRAIL_STRICT", raising=False)
    X, y = data()
    model = ToyRidge()
    session = RunSession("toy", None, {"experiment": "fit-undescribed", **QUIET})
    recorded = BrokenParams(session, model, X, y)
    with pytest.warns(mltrail.MltrailWarning, match="no params to read"):
        recorded.run(lambda: model.fit(X, y))
    run = client.get_run(session.last_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.errors"] == "1"
    assert "train/mse" in run.data.metrics  # the fit is recorded all the same


def test_strict_mode_raises_our_errors_once_the_run_has_ended(client) -> None:
    X, y = data()
    model = ToyRidge()
    session = RunSession("toy", None, {"experiment": "fit-strict", **QUIET})
    with pytest.raises(RuntimeError, match="no params to read"):
        BrokenParams(session, model, X, y).run(lambda: model.fit(X, y))
    assert not hasattr(model, "coef_")  # raised before the fit, no run left open

    class BrokenFinish(ToyRecording):
        def finish(self, trail: mltrail.Trail, model: ToyRidge) -> None:
            raise RuntimeError("finish broke")

    broken = BrokenFinish(
        RunSession("toy", None, {"experiment": "fit-strict", **QUIET}), model, X, y
    )
    with pytest.raises(RuntimeError, match="finish broke"):
        broken.run(lambda: model.fit(X, y))
    (run,) = runs_of(client, "fit-strict")
    assert run.info.status == "FINISHED"  # ended before the error left
    assert current_fit() is None and not in_patched_call()


def test_an_error_opening_the_run_beside_a_running_fit_leaves_the_next_fit_recorded(
    client, monkeypatch
) -> None:
    """Strict mode raises our own errors: one raised while mltrail's thread opens the run of a
    fit still running ends that run, and leaves the fit's thread to its fit (the thread's mark
    was reset from the wrong thread, which failed and left every later fit of that thread
    unrecorded, taken for a fit inside a recorded one)."""
    monkeypatch.setenv("MLTRAIL_END_IN_BACKGROUND", "true")
    monkeypatch.setattr(deferred, "OPEN_AFTER", 0.05)
    X, y = data()

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("a param that has no text")

        __repr__ = __str__

    class BrokenParam(ToyRecording):
        def params(self) -> dict[str, Any]:
            return {"alpha": Unprintable()}

    class SlowRidge(ToyRidge):
        def fit(self, X: np.ndarray, y: np.ndarray) -> SlowRidge:
            deadline = time.monotonic() + 30
            while session.last_run_id is None and time.monotonic() < deadline:
                time.sleep(0.02)  # till mltrail's thread has opened the run beside the fit
            time.sleep(0.3)
            return super().fit(X, y)

    slow = SlowRidge()
    session = RunSession("toy", None, {"experiment": "fit-open-broke", **QUIET})
    with pytest.warns(mltrail.MltrailWarning, match="a param that has no text"):
        BrokenParam(session, slow, X, y).run(lambda: slow.fit(X, y))
        assert mltrail.wait(timeout=60)
    assert current_fit() is None and not in_patched_call()
    fit_recorded(ToyRidge(), X, y, experiment="fit-after-broke", **QUIET)
    assert mltrail.wait(timeout=60)
    (broken,) = runs_of(client, "fit-open-broke")
    (after,) = runs_of(client, "fit-after-broke")
    assert broken.info.status == "FAILED"
    assert after.info.status == "FINISHED" and "train/mse" in after.data.metrics
