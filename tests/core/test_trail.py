"""The run session against a real sqlite MLflow store: what a user sees in MLflow."""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import pytest

import mltrail
from mltrail import MltrailError


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def artifact_json(client, run_id: str, path: str) -> dict:
    local = client.download_artifacts(run_id, path)
    return json.loads(Path(local).read_text())


def test_seeded_scripts_get_distinct_run_names_and_keep_their_random_sequence(client) -> None:
    """MLflow names runs from the global RNG, which training scripts seed: same seed, same name."""
    names, draws = [], []
    for _ in range(2):
        random.seed(7)
        with mltrail.start_run(experiment="seeded", capture=False, system_metrics=False) as trail:
            trail.log_metrics({"loss": 1.0}, step=0)
            draws.append(random.random())
        names.append(client.get_run(trail.run_id).info.run_name)
    random.seed(7)
    assert draws == [random.random()] * 2  # mltrail drew nothing from the user's sequence
    assert names[0] != names[1]
    assert all(re.fullmatch(r"[a-z]+-[a-z]+-\d{1,3}", name) for name in names), names


def test_params_metrics_and_status(client) -> None:
    with mltrail.start_run(experiment="core", run_name="first") as trail:
        trail.log_params({"lr": 0.01, "model": {"layers": 3, "act": "relu"}, "note": None})
        for epoch in range(3):
            trail.log_metrics({"loss": 1.0 / (epoch + 1), "val/AR@100": epoch / 10}, step=epoch)
    run = client.get_run(trail.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "first"
    assert run.data.params == {
        "lr": "0.01",
        "model.layers": "3",
        "model.act": "relu",
        "note": "None",
    }
    assert history(client, trail.run_id, "loss") == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert [s for s, _ in history(client, trail.run_id, "val/AR_at_100")] == [0, 1, 2]
    assert artifact_json(client, trail.run_id, "mltrail/keys.json") == {
        "val/AR@100": "val/AR_at_100"
    }
    assert run.data.tags["mltrail.version"] == mltrail.__version__
    # A training experiment, as MLflow 3's UI files it (not "GenAI / Evaluation runs").
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_changed_param_is_recorded_not_raised(client) -> None:
    with mltrail.start_run(experiment="core") as trail:
        trail.log_params({"lr": 0.1, "epochs": 3})
        trail.log_params({"lr": 0.2, "epochs": 3})
    run = client.get_run(trail.run_id)
    assert run.data.params["lr"] == "0.1"
    assert run.data.tags["mltrail.params.changed"] == "lr"
    params = artifact_json(client, trail.run_id, "mltrail/params.json")
    assert params["changes"] == {"lr": ["0.1", "0.2"]}


def test_long_and_secret_params(client) -> None:
    with mltrail.start_run(experiment="core") as trail:
        trail.log_params(
            {"long": "v" * 10_000, "api_key": "CANARY-param-123", "use_cls_token": True}
        )
    run = client.get_run(trail.run_id)
    assert len(run.data.params["long"]) == 6000
    assert run.data.params["long"].endswith("...[truncated]")
    assert run.data.params["api_key"] == "***"
    assert run.data.params["use_cls_token"] == "True"
    full = artifact_json(client, trail.run_id, "mltrail/params.json")["params"]
    assert full["long"] == "v" * 10_000
    assert full["api_key"] == "***"


def test_many_params_are_batched(client) -> None:
    params = {f"layer{i}.width": i for i in range(1500)}
    with mltrail.start_run(experiment="core") as trail:
        trail.log_params(params)
    assert len(client.get_run(trail.run_id).data.params) == 1500


def test_params_tags_and_metrics_sent_together_go_in_one_request(client) -> None:
    """A short training's run sends its params, tags and metrics once: one ``log_batch``, not
    one per kind (each request also reads the whole run back from the store)."""
    trail = mltrail.start_run(experiment="core", capture=False, system_metrics=False)
    assert trail.flush(10)
    before = trail._writer.stats["requests"]
    trail.log_params({"lr": 0.1, "depth": 4})
    trail.set_tags({"stage": "tuning"})
    trail.log_metrics({"loss": 0.5, "acc": 0.8}, step=0)
    trail.log_metrics({"loss": 0.25, "acc": 0.9}, step=1)
    assert trail.flush(10)
    assert trail._writer.stats["requests"] - before == 1
    trail.end()
    run = client.get_run(trail.run_id)
    assert {"lr": "0.1", "depth": "4"}.items() <= run.data.params.items()
    assert run.data.tags["stage"] == "tuning"
    assert history(client, trail.run_id, "loss") == [(0, 0.5), (1, 0.25)]
    assert history(client, trail.run_id, "acc") == [(0, 0.8), (1, 0.9)]


def test_a_short_run_sends_its_first_heartbeat_with_its_data(client) -> None:
    """The heartbeat that marks a run alive (other hosts end it FAILED once it stops) goes
    with the run's first request: a run of a short training makes two requests in all, its
    data and its end. A run that lasts beats again at its interval."""
    import time

    trail = mltrail.start_run(experiment="core", capture=False, system_metrics=False)
    trail.log_params({"lr": 0.1})
    trail.log_metrics({"loss": 0.5}, step=0)
    trail.end()
    assert trail._writer.stats["requests"] == 2
    first = int(client.get_run(trail.run_id).data.tags["mltrail.heartbeat"])
    assert abs(first - time.time()) < 60
    long = mltrail.start_run(
        experiment="core",
        capture=False,
        system_metrics=False,
        heartbeat_interval=0.5,
        flush_interval=0.2,
    )
    assert long.flush(10)
    started = int(client.get_run(long.run_id).data.tags["mltrail.heartbeat"])
    time.sleep(2.2)
    beats = long._writer.stats["requests"]
    long.end()
    assert int(client.get_run(long.run_id).data.tags["mltrail.heartbeat"]) > started
    assert beats >= 2


def test_a_param_the_store_refuses_holds_back_nothing_sent_with_it(
    client, monkeypatch, tmp_path: Path
) -> None:
    """Sent together, a param the store refuses (another value behind mltrail's back) fails
    alone: the tags and metrics of the same request land, the param is journaled and counted."""
    monkeypatch.setenv("MLTRAIL_STRICT", "0")  # the refusal is the point
    trail = mltrail.start_run(
        experiment="core", capture=False, system_metrics=False, spool_dir=tmp_path / "spool"
    )
    client.log_param(trail.run_id, "lr", "0.5")
    trail.log_params({"lr": 0.1})
    trail.set_tags({"stage": "tuning"})
    trail.log_metrics({"loss": 0.5}, step=0)
    with pytest.warns(mltrail.MltrailWarning):
        trail.end()
    run = client.get_run(trail.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.5"
    assert run.data.tags["stage"] == "tuning"
    assert history(client, trail.run_id, "loss") == [(0, 0.5)]
    assert trail.errors == {"sending params": 1}
    # Journaled as the record any mltrail replays, not as the request it was part of.
    (journal,) = (tmp_path / "spool").glob(f"{trail.run_id}*/journal.jsonl")
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [(r["kind"], r["data"]) for r in records] == [("params", {"lr": "0.1"})]


def test_metric_value_policy(client) -> None:
    np = pytest.importorskip("numpy")
    with mltrail.start_run(experiment="core") as trail:
        trail.log_metrics({"a": float("nan"), "b": float("inf"), "c": None, "d": "x"}, step=0)
        trail.log_metrics({"a": np.float32(0.5), "c": 1, "e": "0.75"}, step=1)
    run = client.get_run(trail.run_id)
    assert math.isnan(history(client, trail.run_id, "a")[0][1])
    assert history(client, trail.run_id, "c") == [(1, 1.0)]
    assert history(client, trail.run_id, "e") == [(1, 0.75)]
    assert "d" not in run.data.metrics
    assert json.loads(run.data.tags["mltrail.metrics.nonfinite"]) == {"a": 1, "b": 1}


def test_nonfinite_skip_option(client) -> None:
    with mltrail.start_run(experiment="core", nonfinite="skip") as trail:
        trail.log_metrics({"a": float("nan")}, step=0)
        trail.log_metrics({"a": 1.0}, step=1)
    assert history(client, trail.run_id, "a") == [(1, 1.0)]


def test_auto_steps_and_epoch(client) -> None:
    with mltrail.start_run(experiment="core") as trail:
        for value in (3.0, 2.0, 1.0):
            trail.log_metrics({"x": value})
        trail.log_metrics({"val": 0.5}, step=7, epoch=2)
    assert history(client, trail.run_id, "x") == [(0, 3.0), (1, 2.0), (2, 1.0)]
    assert history(client, trail.run_id, "epoch") == [(7, 2.0)]


def test_exception_ends_failed_and_propagates_unchanged(client) -> None:
    error = ValueError("boom")
    with pytest.raises(ValueError) as caught, mltrail.start_run(experiment="core") as trail:
        trail.log_metrics({"loss": 1.0}, step=0)
        raise error
    assert caught.value is error
    run = client.get_run(trail.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mltrail.exception.type"] == "ValueError"
    assert history(client, trail.run_id, "loss") == [(0, 1.0)]


def test_keyboard_interrupt_ends_killed(client) -> None:
    with pytest.raises(KeyboardInterrupt), mltrail.start_run(experiment="core") as trail:
        raise KeyboardInterrupt
    assert client.get_run(trail.run_id).info.status == "KILLED"


def test_explicit_end_status_and_idempotent_end(client) -> None:
    trail = mltrail.start_run(experiment="core")
    trail.end("FAILED")
    trail.end("FINISHED")
    assert client.get_run(trail.run_id).info.status == "FAILED"
    with pytest.raises(MltrailError, match="status must be one of"):
        trail.end("DONE")


def test_resume_continues_the_same_run(client) -> None:
    with mltrail.start_run(experiment="core") as first:
        first.log_params({"lr": 0.1})
        first.log_metrics({"loss": 1.0}, step=0)
    with mltrail.start_run(run_id=first.run_id) as again:
        assert again.run_id == first.run_id
        assert client.get_run(first.run_id).info.status == "RUNNING"
        again.log_params({"lr": 0.1})  # same value again: no error, no change
        again.log_metrics({"loss": 0.5}, step=1)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.resume_count"] == "1"
    assert history(client, first.run_id, "loss") == [(0, 1.0), (1, 0.5)]


def test_joins_the_users_active_run_and_leaves_it_open(client, module_store: str) -> None:
    mlflow.set_tracking_uri(module_store)
    with mlflow.start_run() as active:
        trail = mltrail.start_run()
        trail.log_metrics({"joined": 1.0}, step=0)
        trail.end()
        assert trail.run_id == active.info.run_id
        assert client.get_run(active.info.run_id).info.status == "RUNNING"
    assert client.get_run(active.info.run_id).info.status == "FINISHED"
    assert history(client, active.info.run_id, "joined") == [(0, 1.0)]


def test_misuse_gets_clear_errors() -> None:
    with pytest.raises(MltrailError, match="Did you mean 'flush_timeout'"):
        mltrail.start_run(flush_timout=3)
    with pytest.raises(MltrailError, match="does not exist"):
        mltrail.start_run(run_id="0" * 32)
    with pytest.raises(MltrailError, match="nonfinite"):
        mltrail.start_run(nonfinite="drop")


def test_artifacts_and_checkpoints(client, tmp_path: Path) -> None:
    data = tmp_path / "notes.txt"
    data.write_text("hello")
    ckpt = tmp_path / "epoch=1.ckpt"
    ckpt.write_bytes(b"weights-1")
    ckpt2 = tmp_path / "epoch=2.ckpt"
    ckpt2.write_bytes(b"weights-2")
    with mltrail.start_run(experiment="core") as trail:
        trail.log_artifact(data, "extra")
        trail.log_dict({"a": 1}, "mltrail/custom.json")
        trail.log_checkpoint(ckpt, step=1, metrics={"val_loss": 0.3}, aliases=("best", "latest"))
        trail.log_checkpoint(ckpt2, step=2, metrics={"val_loss": 0.4}, aliases=("latest",))
        with pytest.raises(MltrailError):
            trail.log_artifact(tmp_path / "missing.txt")
    paths = {a.path for a in client.list_artifacts(trail.run_id, "checkpoints")}
    assert paths == {
        "checkpoints/epoch=1.ckpt",
        "checkpoints/epoch=2.ckpt",
        "checkpoints/index.json",
    }
    index = artifact_json(client, trail.run_id, "checkpoints/index.json")
    assert index["aliases"] == {
        "best": "checkpoints/epoch=1.ckpt",
        "latest": "checkpoints/epoch=2.ckpt",
    }
    assert index["files"]["checkpoints/epoch=1.ckpt"]["metrics"] == {"val_loss": 0.3}
    tags = client.get_run(trail.run_id).data.tags
    assert tags["mltrail.checkpoint.best"] == "checkpoints/epoch=1.ckpt"
    assert tags["mltrail.checkpoint.latest"] == "checkpoints/epoch=2.ckpt"
    assert ckpt.read_bytes() == b"weights-1"  # the user's file is untouched
    assert artifact_json(client, trail.run_id, "mltrail/custom.json") == {"a": 1}
    assert Path(client.download_artifacts(trail.run_id, "extra/notes.txt")).read_text() == "hello"


def test_model_logging_in_the_flavor(client) -> None:
    pytest.importorskip("sklearn")
    import numpy as np
    from sklearn.linear_model import LinearRegression

    x = np.arange(20, dtype=float).reshape(10, 2)
    y = x.sum(axis=1)
    model = LinearRegression().fit(x, y)
    with mltrail.start_run(experiment="core") as trail:
        trail.log_model(model, "sklearn", signature_from=x[:3], output_example=model.predict(x[:3]))
    loaded = mlflow.pyfunc.load_model(f"runs:/{trail.run_id}/model")
    assert np.allclose(loaded.predict(x[:3]), y[:3])
    assert loaded.metadata.signature is not None


def test_system_metrics_are_sampled(client) -> None:
    with mltrail.start_run(experiment="core", system_metrics_interval=0.2) as trail:
        threading.Event().wait(0.7)
    metrics = client.get_run(trail.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics
    assert len(history(client, trail.run_id, "system/cpu_utilization_percentage")) >= 2
    with mltrail.start_run(experiment="core", system_metrics=False) as quiet:
        pass
    assert not any(k.startswith("system/") for k in client.get_run(quiet.run_id).data.metrics)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.path.exists("/proc/driver/nvidia"),
    reason="needs a Linux machine without an NVIDIA driver",
)
def test_system_metrics_without_an_nvidia_driver_skip_the_gpu_monitor() -> None:
    """Importing the GPU monitor (pynvml) cost a recorder a quarter second of CPU per process
    on machines that have no GPU to monitor."""
    code = (
        "import sys; from mltrail.recording.system_metrics import _monitors; "
        "names = [type(m).__name__ for m in _monitors()]; "
        "print(names, 'pynvml' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[0] == "['CPUMonitor', 'DiskMonitor', 'NetworkMonitor'] False"


def test_system_metrics_started_later_sample_from_then_until_the_end(client) -> None:
    """A run opened without system metrics whose training turned out long starts them."""
    with mltrail.start_run(experiment="core", system_metrics=False, system_metrics_interval=0.2,
                           capture=False) as trail:  # fmt: skip
        trail.start_system_metrics()
        trail.start_system_metrics()  # once is enough: no second sampler
        threading.Event().wait(0.5)
    trail.start_system_metrics()  # ended: nothing more
    steps = [step for step, _ in history(client, trail.run_id, "system/cpu_utilization_percentage")]
    assert len(steps) >= 2 and steps == list(range(len(steps)))  # one sampler, numbered once


def test_the_first_system_sample_is_logged_once_when_the_run_ends_while_it_is_taken(
    client,
) -> None:
    """A run shorter than one sampling interval still gets a sample at its end; when the
    sampler is still taking its first one then, the two samples get steps of their own (two
    values at one step made the system history read as if a sample was taken twice)."""
    from mltrail.recording.system_metrics import SystemMonitor

    with mltrail.start_run(experiment="core", system_metrics=False) as trail:
        monitor = SystemMonitor(trail, interval=0.1)
        taking = threading.Event()
        sample = monitor.sample

        def slow_first_sample() -> dict[str, float]:
            if not taking.is_set():  # the sampler's first: longer than stop() waits for it
                taking.set()
                threading.Event().wait(2.5)
            return sample()

        monitor.sample = slow_first_sample  # type: ignore[method-assign]
        monitor.start()
        taking.wait(5)
        monitor.stop()  # gives up waiting after 2 s and takes a sample of its own
        threading.Event().wait(1.0)  # the sampler's own sample, after stop() returned
    steps = [s for s, _ in history(client, trail.run_id, "system/cpu_utilization_percentage")]
    assert steps and len(steps) == len(set(steps)), steps


def test_many_threads_and_two_runs_lose_nothing(client) -> None:
    first = mltrail.start_run(experiment="core", system_metrics=False)
    second = mltrail.start_run(experiment="core", system_metrics=False)

    def work(trail: mltrail.Trail, thread: int) -> None:
        for step in range(200):
            trail.log_metrics({f"t{thread}": float(step)}, step=step)

    threads = [
        threading.Thread(target=work, args=(t, i)) for t in (first, second) for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first.end()
    second.end()
    for trail in (first, second):
        for i in range(4):
            points = history(client, trail.run_id, f"t{i}")
            assert sorted(s for s, _ in points) == list(range(200))


def test_runs_sending_at_once_write_a_sqlite_store_in_turns(client, monkeypatch) -> None:
    """The runs of a loop send from a thread each. On one sqlite file their writes take turns
    in the process: all at once, they waited in SQLite's busy handler, and a cross-validation
    loop's last data missed its flush deadline and went to the journal."""
    import time

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    writing, most, lock = [0], [0], threading.Lock()
    store_log_batch = SqlAlchemyStore.log_batch

    def log_batch(self, *args, **kwargs):
        with lock:
            writing[0] += 1
            most[0] = max(most[0], writing[0])
        try:
            time.sleep(0.02)  # a write that takes a moment: another one would meet it
            return store_log_batch(self, *args, **kwargs)
        finally:
            with lock:
                writing[0] -= 1

    monkeypatch.setattr(SqlAlchemyStore, "log_batch", log_batch)
    trails = [
        mltrail.start_run(experiment="core", system_metrics=False, capture=False) for _ in range(6)
    ]
    ready = threading.Barrier(len(trails))

    def train(trail: mltrail.Trail) -> None:
        ready.wait()
        for step in range(4):
            trail.log_params({f"p{step}": step})
            trail.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            trail.flush(30)  # a write of its own per step, as a slow loop sends them
        trail.end()

    threads = [threading.Thread(target=train, args=(trail,)) for trail in trails]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1, f"{most[0]} runs wrote to the sqlite file at once"
    for trail in trails:
        run = client.get_run(trail.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params == {f"p{step}": str(step) for step in range(4)}
        assert [s for s, _ in history(client, trail.run_id, "loss")] == [0, 1, 2, 3]


def test_an_artifact_copy_does_not_wait_for_the_sqlite_writers_turn(
    client, module_store: str, tmp_path: Path
) -> None:
    """An artifact writes no rows: its copy (a checkpoint of gigabytes on a local store) neither
    waits for the other runs' writes nor holds them up."""
    from mltrail.store import sqlite_turns

    trail = mltrail.start_run(experiment="core", system_metrics=False, capture=False)
    (tmp_path / "weights.bin").write_bytes(b"0" * 1024)
    assert trail.flush(30)
    copied = threading.Event()
    with sqlite_turns(module_store):  # another run of the process writing its rows
        trail._writer.add_job(  # type: ignore[union-attr]
            lambda: (
                copied.set()
                if trail._writer.upload_now(tmp_path / "weights.bin", "ckpt", "upload")
                else None
            )
        )
        assert copied.wait(30), "the copy waited for the sqlite writer's turn"
    trail.end()
    files = [f.path for f in client.list_artifacts(trail.run_id, "ckpt")]
    assert files == ["ckpt/weights.bin"]


def test_a_forked_child_writes_although_a_parent_thread_held_the_turn(module_store) -> None:
    """A process forked while one of its threads wrote to the sqlite store: that thread does
    not exist in the child, so its turn must not either (the child's writes would wait on it
    for ever)."""
    import os

    from mltrail.store import sqlite_turns

    holding, release = threading.Event(), threading.Event()

    def write() -> None:
        with sqlite_turns(module_store):
            holding.set()
            release.wait(30)

    writer = threading.Thread(target=write)
    writer.start()
    assert holding.wait(30)
    try:
        child = os.fork()
        if child == 0:  # the child: its own writes take the turn at once
            os._exit(0 if sqlite_turns(module_store).acquire(timeout=10) else 1)
        _, status = os.waitpid(child, 0)
    finally:
        release.set()
        writer.join()
    assert os.waitstatus_to_exitcode(status) == 0


def test_tag_set_deleted_and_set_again_keeps_the_last_value(client) -> None:
    with mltrail.start_run(experiment="core", system_metrics=False) as trail:
        trail.set_tags({"stage": "one", "keep": "yes"})
        trail.delete_tags(["stage"])
        trail.set_tags({"stage": "two"})
        trail.delete_tags(["keep", "never set"])  # one the store does not hold: skipped
    tags = client.get_run(trail.run_id).data.tags
    assert tags["stage"] == "two"
    assert "keep" not in tags
    assert "mltrail.errors" not in tags


def test_warnings_as_errors_do_not_break_training(client, monkeypatch) -> None:
    import warnings

    monkeypatch.setenv("MLTRAIL_STRICT", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with mltrail.start_run(experiment="core", system_metrics=False) as trail:
            trail.log_params({"x": 1})
            trail._writer.add_job(lambda: 1 / 0)  # an internal error on the uploader thread
            trail.log_metrics({"after": 1.0}, step=0)
    assert client.get_run(trail.run_id).info.status == "FINISHED"
    assert history(client, trail.run_id, "after") == [(0, 1.0)]
    assert trail.errors == {"background job": 1}


def test_an_experiment_deleted_since_the_last_run_is_a_clear_error(client) -> None:
    """The store and experiment are looked up once per process; a deletion in between is
    still seen, and named."""
    options = {"system_metrics": False, "capture": False}
    with mltrail.start_run(experiment="deleted-later", **options):
        pass
    client.delete_experiment(client.get_experiment_by_name("deleted-later").experiment_id)
    with pytest.raises(mltrail.MltrailError, match="is deleted"):
        mltrail.start_run(experiment="deleted-later", **options)
