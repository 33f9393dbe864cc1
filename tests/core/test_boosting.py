"""The gradient-boosting kernel (mltrail.recording.boosting) without a framework: a toy adapter
on BoostingCallback against a real store, and the pieces that translate a round's evaluation,
the params as written, a cv's folds and an early stopping's outcome."""

from __future__ import annotations

import inspect
import json
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mltrail
from mltrail import MltrailError
from mltrail.adapters import (
    BoostingCall,
    BoostingCallback,
    EarlyStop,
    RoundLoop,
    built_data_digest,
    callbacks_patch,
    cv_params,
    eval_metrics,
    eval_round,
    eval_rounds,
    find_training_call,
    first_stopped,
    fit_classes,
    in_memory,
    stop_outcome,
    written_params,
)

QUIET = {"capture": False, "system_metrics": False, "log_model": False, "importance": False}


class ToyCallback(BoostingCallback):
    """What a third party writes for a boosting framework: its names, and hooks that hand the
    kernel plain values (here called by the test, as the framework's loop would)."""

    framework = "toyboost"
    framework_title = "ToyBoost"
    how_to_continue = "continue the same model with start="
    checkpoint_name = "toy-{step:06d}.json"

    def begin(self, done: int = 0, api: str = "train", written: Any = None) -> None:
        trail = self._open(done)
        self._call.api, self._call.args = api, {"num_boost_round": 4}
        effective = {"eta": "0.3", "max_depth": "6"}  # the booster's own configuration
        self._log_start(trail, done, effective, written or {}, stops=[EarlyStop({"rounds": 2})])

    def round(self, index: int, log: dict[str, Any]) -> None:
        metrics = eval_metrics(eval_round(log, index))
        step = self._epochs.log(index, metrics)

        def write(path: str) -> None:
            Path(path).write_text(json.dumps(metrics))

        self._checkpoint(step, metrics, write, lambda: ("val-loss", "min"))

    def finish(self, stop: EarlyStop) -> None:
        self._end(lambda trail: self._log_stops(trail, [stop]))

    def unseen_stop(self, log: dict[str, Any]) -> None:
        self._end_unfinished(None, at=eval_rounds(log), summary=lambda trail: None)


def custom_objective(predictions: Any, data: Any) -> Any:
    return predictions


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


LOG = {"val": {"loss": [0.5, 0.4, 0.45, 0.46]}, "train": {"loss": [0.5, 0.3, 0.2, 0.1]}}


def test_a_toy_adapter_records_params_rounds_checkpoints_and_early_stopping(client) -> None:
    callback = ToyCallback(experiment="toyboost", checkpoint_every=2, **QUIET)
    twin = pickle.loads(pickle.dumps(callback))
    assert (twin.checkpoint_every, twin.log_model, twin.run_id) == (2, False, None)
    assert "new run per training" in repr(callback)

    written = {"eta": 0.1, "objective": custom_objective, "callbacks": [callback]}
    callback.begin(written=written)
    for index in range(4):
        callback.round(index, LOG)
    outcome = stop_outcome(
        EarlyStop({"rounds": 2}),
        best_score=0.4,
        best_round=1,
        last_round=3,
        patience=2,
        restored=True,
        monitor="val-loss",
    )
    callback.finish(outcome)
    mltrail.wait()

    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["mltrail.framework"] == "toyboost" and tags["mltrail.toyboost.api"] == "train"
    assert "mltrail.toyboost.initial_rounds" not in tags  # a model trained from scratch
    assert params["eta"] == "0.1"  # as written wins over the booster's configuration
    assert params["max_depth"] == "6" and params["num_boost_round"] == "4"
    assert params["objective"] == "custom_objective" and "callbacks" not in params
    assert params["early_stopping.rounds"] == "2"
    assert params["early_stopping.monitor"] == "val-loss"  # known once it has run
    assert history(client, callback.run_id, "val-loss") == list(enumerate(LOG["val"]["loss"]))
    assert [s for s, _ in history(client, callback.run_id, "train-loss")] == [0, 1, 2, 3]
    assert metrics["early_stopping.stopped_epoch"] == 3  # 2 rounds after its best: it stopped
    assert metrics["early_stopping.best_epoch"] == 1 and metrics["early_stopping.wait_count"] == 2
    assert [s for s, _ in history(client, callback.run_id, "early_stopping.best_score")] == [3]
    index = json.loads(
        Path(client.download_artifacts(callback.run_id, "checkpoints/index.json")).read_text()
    )
    assert sorted(index["files"]) == ["checkpoints/toy-000001.json", "checkpoints/toy-000003.json"]
    assert index["aliases"] == {
        "best": "checkpoints/toy-000001.json",  # val-loss 0.4 < 0.46
        "latest": "checkpoints/toy-000003.json",
    }


def test_continued_cv_training_goes_on_at_the_model_rounds_without_checkpoints(client) -> None:
    callback = ToyCallback(experiment="toyboost", checkpoint_every=1, **QUIET)
    callback.begin(done=4, api="cv")
    folds = {"test": {"loss": [(0.5, 0.01), (0.4, 0.02)]}}
    for index in range(eval_rounds(folds)):
        callback.round(index, folds)
    callback.finish(EarlyStop({"rounds": 2}))
    mltrail.wait()
    run = client.get_run(callback.run_id)
    assert run.data.tags["mltrail.toyboost.initial_rounds"] == "4"
    assert history(client, callback.run_id, "test-loss-mean") == [(4, 0.5), (5, 0.4)]
    assert history(client, callback.run_id, "test-loss-std") == [(4, 0.01), (5, 0.02)]
    assert not client.list_artifacts(callback.run_id, "checkpoints")  # one booster per fold
    assert not any(key.startswith("early_stopping.") for key in run.data.metrics)


def test_a_given_trail_never_gets_its_rounds_again(client) -> None:
    with mltrail.start_run(capture=False, system_metrics=False) as trail:
        callback = ToyCallback(trail, importance=False)
        callback.begin()
        for index in range(2):
            callback.round(index, LOG)
        callback.finish(EarlyStop({}))
        with pytest.raises(MltrailError, match=r"ToyBoost rounds up to step 1.*start="):
            ToyCallback(trail).begin()
        again = ToyCallback(trail, importance=False)
        again.begin(done=2)  # continuing the model: its steps go on
        again.round(0, LOG)  # the round numbers of this training, from 0
        again.finish(EarlyStop({}))
    assert [s for s, _ in history(client, trail.run_id, "val-loss")] == [0, 1, 2]
    assert client.get_run(trail.run_id).info.status == "FINISHED"  # ended by its owner


def test_a_training_stopped_where_no_hook_saw_it_ends_failed_saying_where(client) -> None:
    callback = ToyCallback(experiment="toyboost", **QUIET)
    callback.begin()
    callback.round(0, LOG)
    first = callback.run_id
    callback.begin()  # a new training while the last one's run is open: that one raised
    second = callback.run_id
    callback.round(0, LOG)
    callback.unseen_stop({"val": {"loss": [0.5, 0.4]}})
    mltrail.wait()
    ended = client.get_run(first)
    assert ended.info.status == "FAILED"
    message = ended.data.tags["mltrail.exception.message"]
    assert message.startswith("ToyBoost training stopped without reaching its end")
    assert "(booster update, custom objective or metric)" in message
    stopped = client.get_run(second)
    assert stopped.info.status == "FAILED"
    assert "stopped in round 2 without" in stopped.data.tags["mltrail.exception.message"]


def test_eval_metrics_of_a_round_and_of_an_eval_log() -> None:
    assert eval_metrics([("val", "auc", 0.9), ("test", "loss", (0.5, 0.1))]) == {
        "val-auc": 0.9,
        "test-loss-mean": 0.5,
        "test-loss-std": 0.1,
    }
    log = {"train": {"loss": [1.0, 0.8]}, "val": {"loss": [1.1, 0.9], "error": [0.4]}}
    assert eval_rounds(log) == 2 and eval_rounds({}) == 0
    assert eval_round(log, 1) == [("train", "loss", 0.8), ("val", "loss", 0.9)]  # error: no
    assert eval_metrics(eval_round(log, 0)) == {
        "train-loss": 1.0,
        "val-loss": 1.1,
        "val-error": 0.4,
    }


def test_written_params_stop_outcome_and_cv_params() -> None:
    pairs = [("eval_metric", "auc"), ("eval_metric", "logloss"), ("obj", custom_objective)]
    assert written_params({"eta": 0.3, "callbacks": []}, pairs, {"eta": 0.1}) == {
        "eta": 0.1,  # later sources win
        "eval_metric": ["auc", "logloss"],  # pairs that repeat a name: all their values
        "obj": "custom_objective",
    }
    assert written_params(None) == {}
    arguments = {"nfold": 3, "seed": 7, "num_boost_round": 10}
    assert cv_params(arguments) == {
        "cv.nfold": 3,
        "cv.stratified": None,
        "cv.shuffle": None,
        "cv.seed": 7,
    }
    # The training ended before its patience ran out; a cv's best score is its mean.
    stop = stop_outcome(
        EarlyStop({"patience": 5, "mode": "min"}),
        best_score=(0.25, 0.01),
        best_round=7,
        last_round=9,
        patience=5,
        restored=False,
        monitor="test-loss",
    )
    assert stop.settings == {"patience": 5, "mode": "min", "monitor": "test-loss"}
    assert (stop.best_score, stop.best_epoch, stop.wait_count) == (0.25, 7, 2)
    assert stop.stopped_epoch is None and stop.restored_best_weights is False


class Built:
    """Stands in for a framework's built data object whose rows it may free."""

    def __init__(self, rows: Any) -> None:
        self.rows, self.reads = rows, 0

    def read(self) -> Any:
        self.reads += 1
        if isinstance(self.rows, Exception):
            raise self.rows
        return self.rows


def test_built_data_digest_reads_rows_once_and_labels_each_time() -> None:
    rows, labels = np.arange(12.0).reshape(4, 3), np.array([0, 1, 0, 1])
    data = Built(rows)
    first = built_data_digest(data, data.read, labels)
    data.rows = None  # freed by the framework after its first training
    assert built_data_digest(data, data.read, labels) == first and data.reads == 1
    assert built_data_digest(data, data.read, 1 - labels) not in (first, "unknown")
    assert built_data_digest(Built(rows.copy()), Built(rows.copy()).read, labels) == first
    assert built_data_digest(Built(None), Built(None).read, labels) == "unknown"
    broken = Built(OSError("cannot read back"))
    with pytest.raises(OSError):
        built_data_digest(broken, broken.read)
    broken.rows = rows  # nothing was kept of the failed read
    assert built_data_digest(broken, broken.read, labels) == first


class Stop(Exception):
    """The toy framework's way to end a training early."""


class LoopToy(ToyCallback):
    """A toy whose framework runs after-round callbacks from a list (as LightGBM does)."""

    def after_iteration(self, index: int) -> None:
        self.round(index, LOG)

    def _ended(self, index: int, stop: Any = None, error: BaseException | None = None) -> None:
        self._end(lambda trail: trail.log_params({"ended_by": type(stop or error).__name__}))


def train_rounds(callbacks: list[Any], rounds: int, stop_at: int | None = None) -> None:
    for index in range(rounds):
        for callback in callbacks:
            callback(index)
        if index == stop_at:
            raise Stop


def test_a_round_loop_logs_each_round_and_ends_the_run_at_the_end_or_when_released(
    client,
) -> None:
    callback = LoopToy(experiment="toyboost", **QUIET)
    callbacks: list[Any] = [lambda index: None]
    callback.begin()
    callback._loop_rounds(callbacks, stop=Stop, last=lambda index: index == 3)
    assert len(callbacks) == 1 and isinstance(callbacks[0], RoundLoop)
    train_rounds(callbacks, 4)
    finished = callback.run_id

    def stopping(index: int) -> None:
        if index == 1:
            raise Stop

    stopped_list: list[Any] = [stopping]
    callback.begin()
    callback._loop_rounds(stopped_list, stop=Stop, last=lambda index: index == 3)
    with pytest.raises(Stop):
        train_rounds(stopped_list, 4)
    stopped = callback.run_id

    callback.begin()
    released: list[Any] = []
    callback._loop_rounds(released, stop=Stop, last=lambda index: index == 3)
    with pytest.raises(Stop):  # raised outside every callback: only the release tells
        train_rounds(released, 4, stop_at=0)
    del released
    unseen = callback.run_id
    mltrail.wait()

    run = client.get_run(finished)
    assert run.info.status == "FINISHED" and run.data.params["ended_by"] == "NoneType"
    assert [s for s, _ in history(client, finished, "val-loss")] == [0, 1, 2, 3]
    run = client.get_run(stopped)
    assert run.info.status == "FINISHED" and run.data.params["ended_by"] == "Stop"
    assert [s for s, _ in history(client, stopped, "val-loss")] == [0, 1]
    run = client.get_run(unseen)
    assert run.info.status == "FAILED" and "ended_by" not in run.data.params
    assert [s for s, _ in history(client, unseen, "val-loss")] == [0]


def test_the_final_importance_is_logged_for_a_single_model_not_for_cv(client) -> None:
    scores = {"gain": {"a": 2.0, "b": 1.0}}
    for api in ("train", "cv"):
        callback = ToyCallback(experiment="toyboost", capture=False, log_model=False)
        callback.begin(api=api)

        def summary(trail: Any, callback: ToyCallback = callback) -> None:
            callback._log_model_and_importance(
                trail, lambda: ({}, ["numpy"]), lambda: scores, "ToyBoost importance"
            )

        callback._end(summary)
        mltrail.wait()
        files = [f.path for f in client.list_artifacts(callback.run_id, "toyboost")]
        if api == "cv":
            assert not files  # one model per fold: no single importance
            continue
        assert files == ["toyboost/feature_importance.json", "toyboost/feature_importance.png"]
        path = client.download_artifacts(callback.run_id, "toyboost/feature_importance.json")
        assert json.loads(Path(path).read_text()) == scores


def toy_train(params: dict[str, Any], callbacks: list[Any]) -> Any:
    """The framework's training function (this module plays its ``engine``)."""
    return callbacks[-1].seen(sys._getframe())


def toy_cv(params: dict[str, Any], nfold: int, callbacks: list[Any]) -> Any:
    return callbacks[-1].seen(sys._getframe())


class ToyEstimator:
    """The framework's scikit-learn API: its fit runs the training."""

    def fit(self, X: Any, callbacks: list[Any]) -> Any:
        return toy_train({"eta": 0.1}, callbacks)


class Reader:
    """A callback that reads the training call it runs inside."""

    def __init__(self, held: bool = True) -> None:
        self.held = held  # whether the estimator's training holds it (else another callback's)

    def seen(self, frame: Any) -> Any:
        call = BoostingCall()
        training, fit = find_training_call(
            call,
            frame,
            module=__name__,
            depth=8,
            estimator_type=ToyEstimator,
            holds=lambda local: self.held and self in local["callbacks"],
        )
        return call, dict(training or {}), dict(fit or {})


# find_training_call looks for functions named train and cv
toy_train.__code__ = toy_train.__code__.replace(co_name="train")
toy_cv.__code__ = toy_cv.__code__.replace(co_name="cv")


def test_find_training_call_reads_train_cv_and_the_estimator_whose_fit_holds_the_callback() -> None:
    reader = Reader()
    call, training, fit = toy_train({"eta": 0.3}, [reader])
    assert (call.api, call.estimator, training["params"], fit) == ("train", None, {"eta": 0.3}, {})
    call, training, _ = toy_cv({}, 5, [reader])
    assert (call.api, training["nfold"]) == ("cv", 5)
    estimator = ToyEstimator()
    call, training, fit = estimator.fit([[1.0]], [reader])
    assert (call.api, call.estimator, fit["X"]) == ("sklearn", estimator, [[1.0]])
    assert training["params"] == {"eta": 0.1}
    call, training, fit = ToyEstimator().fit([[1.0]], [Reader(held=False)])
    assert (call.api, call.estimator, fit) == ("train", None, {})  # not its fit: plain train
    assert find_training_call(
        BoostingCall(),
        sys._getframe(),
        module=__name__,
        depth=8,
        estimator_type=ToyEstimator,
        holds=lambda local: True,
    ) == (None, None)  # no training call above


def test_first_stopped_tells_the_outcome_by_the_metric_that_stopped() -> None:
    watched = [("val-auc", "max", 0.9, 5), ("val-loss", "min", 0.3, 2)]
    stop = first_stopped(EarlyStop({}), watched, last_round=6, patience=3, restored=True)
    assert stop.settings == {"monitor": "val-loss", "mode": "min"}  # 4 rounds after its best
    assert (stop.best_score, stop.best_epoch, stop.stopped_epoch) == (0.3, 2, 6)
    stop = first_stopped(EarlyStop({}), watched, last_round=4, patience=3, restored=False)
    assert stop.settings["monitor"] == "val-auc" and stop.stopped_epoch is None  # none stopped
    assert first_stopped(EarlyStop({"patience": 3}), [], last_round=4, patience=3, restored=True)
    assert first_stopped(EarlyStop({}), [], last_round=4, patience=3, restored=True).settings == {}


def test_callbacks_patch_adds_the_callback_unless_the_call_has_one(client) -> None:
    made: list[Any] = []

    def make(arguments: Any) -> ToyCallback:
        made.append(dict(arguments))
        return ToyCallback(experiment="toyboost", **QUIET)

    def fit(data: Any, rounds: int = 2, callbacks: Any = None) -> list[Any]:
        return list(callbacks or ())

    patch = callbacks_patch(ToyCallback, make, inspect.signature(fit))
    user = [print]
    given = patch(fit, [[1.0]], callbacks=user)
    assert given[0] is print and isinstance(given[1], ToyCallback) and user == [print]
    assert made == [{"data": [[1.0]], "callbacks": [print]}]  # before the training runs
    own = ToyCallback(**QUIET)
    assert patch(fit, [[1.0]], 3, [own]) == [own] and len(made) == 1


def test_in_memory_rows_are_not_a_file_path(tmp_path: Path) -> None:
    rows = np.ones((2, 2))
    assert in_memory(rows) is rows and in_memory([[1.0]]) == [[1.0]]
    assert in_memory(str(tmp_path / "train.csv")) is None and in_memory(tmp_path) is None


def test_fit_classes_are_the_estimators_that_define_their_own_fit() -> None:
    api = types.ModuleType("toy_sklearn")

    class Model:
        def fit(self) -> None: ...

    class Classifier(Model):
        def fit(self) -> None: ...

    class Regressor(Model):  # runs Model.fit: patched once, there
        pass

    class Forest(Classifier):  # refuses callbacks
        def fit(self) -> None: ...

    api.Model, api.Classifier, api.Regressor, api.Forest = Model, Classifier, Regressor, Forest
    api.helper, api.Other = len, type("Other", (), {"fit": lambda self: None})
    assert fit_classes(api, Model, exclude=[Forest]) == [Model, Classifier]
    assert fit_classes(api, Model) == [Model, Classifier, Forest]
