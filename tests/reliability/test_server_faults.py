"""The tracking server misbehaves while a training process runs: refused, killed, hung, 429/503.

Each case runs a real training process against a proxy in front of a real ``mlflow server``
and switches the proxy while it trains. What must hold: training results are the same as
without mltrail, no ``log_metrics`` call blocks, the process exits within the flush budget, and
after ``mltrail sync`` every metric point is in the store exactly once.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import mltrail
from mltrail.cli import main as cli
from tests.reliability.conftest import python_env

STEPS = 150
KEYS = ("loss", "w0", "w1")
FLUSH_TIMEOUT = 4.0
START_TIMEOUT = 3.0

TRAIN = """
import json, sys, time
import numpy as np

def train(trail, steps):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.normal(size=64)
    w = np.zeros(4)
    slowest = 0.0
    for step in range(steps):
        w -= 0.05 * x.T @ (x @ w - y) / len(y)
        loss = float(np.mean((x @ w - y) ** 2))
        if trail is not None:
            began = time.perf_counter()
            trail.log_metrics({"loss": loss, "w0": w[0], "w1": w[1]}, step=step)
            slowest = max(slowest, time.perf_counter() - began)
        print(f"step {step}", flush=True)
        time.sleep(0.02)
    return w, slowest
"""

CHILD = (
    TRAIN
    + """
import atexit
import mlflow.tracking  # imported before the clock starts: a one-time cost of any MLflow user
import mltrail
uri, spool, steps, flush_timeout, start_timeout = sys.argv[1:6]
print("ready", flush=True)
sys.stdin.readline()  # the parent has set the proxy up
# atexit runs last-in first-out: these two bracket mltrail's own exit handler
atexit.register(lambda: print(f"exit_end {time.perf_counter() - exiting[0]}", flush=True))
exiting = []
began = time.perf_counter()
trail = mltrail.start_run(
    experiment="faults", tracking_uri=uri, spool_dir=spool, flush_interval=0.2,
    flush_timeout=float(flush_timeout), start_timeout=float(start_timeout),
    capture=False, system_metrics=False,
)
start_seconds = time.perf_counter() - began
trail.log_params({"lr": 0.05, "steps": int(steps)})
weights, slowest = train(trail, int(steps))
result = {"run_id": trail.run_id, "offline": trail.offline, "weights": weights.tolist(),
          "slowest_log_call": slowest, "start_seconds": start_seconds}
atexit.register(lambda: exiting.append(time.perf_counter()))
print("result " + json.dumps(result), flush=True)
# no end(): the interpreter's exit ends the run, within the flush budget
"""
)


def baseline_weights() -> list[float]:
    namespace: dict = {}
    exec(TRAIN, namespace)
    weights, _ = namespace["train"](None, STEPS)
    return weights.tolist()


def run_training(
    proxy, spool: Path, tmp_path: Path, switches: dict[int, str], code: str = CHILD
) -> dict:
    """Train in a child process; switch the proxy at the given steps; return its report."""
    script = tmp_path / "train.py"
    script.write_text(code)
    args = [str(proxy.uri), str(spool), str(STEPS), str(FLUSH_TIMEOUT), str(START_TIMEOUT)]
    env = python_env(MLTRAIL_STRICT="0")
    process = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert process.stdout.readline().strip() == "ready"
    if -1 in switches:
        proxy.set(switches[-1])
    process.stdin.write("go\n")
    process.stdin.flush()
    result = None
    for line in process.stdout:
        if line.startswith("step "):
            step = int(line.split()[1])
            if step in switches:
                proxy.set(switches[step])
        elif line.startswith("result "):
            result = json.loads(line[len("result ") :])
            trained = time.monotonic()
        elif line.startswith("exit_end "):
            result["end_seconds"] = float(line.split()[1])
    stderr = process.stderr.read()
    process.wait(timeout=120)
    assert process.returncode == 0, stderr
    assert result is not None, stderr
    result["exit_seconds"] = time.monotonic() - trained
    result["stderr"] = stderr
    return result


def server_run_id(client: MlflowClient, result: dict) -> str:
    if not result["offline"]:
        return result["run_id"]
    experiment = client.get_experiment_by_name("faults")
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`mltrail.offline_run_id` = '{result['run_id']}'"
    )
    assert len(runs) == 1
    return runs[0].info.run_id


def assert_every_point_once(client: MlflowClient, run_id: str) -> None:
    for key in KEYS:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == list(range(STEPS)), (key, len(steps))


SCENARIOS = {
    # the server is unreachable when training starts and comes back only after it ended
    "unreachable at start": {-1: "down"},
    # killed mid-training (the port closes), back after the process exited
    "killed mid-training": {40: "down"},
    # accepts connections mid-training and never answers, until after the process exited
    "accepts but never answers": {40: "hang"},
    # answers 429 for a while, then recovers during training
    "429 for a while": {40: "429", 110: "pass"},
    # answers 503 for a while, then recovers during training
    "503 for a while": {40: "503", 110: "pass"},
}


@pytest.mark.server
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_training_survives_and_sync_stores_every_point_once(
    scenario: str, proxy, mlflow_server, tmp_path: Path, capsys
) -> None:
    spool = tmp_path / "spool"
    result = run_training(proxy, spool, tmp_path, SCENARIOS[scenario])

    # training is unaffected: same weights as without mltrail, no call blocked
    assert np.array_equal(result["weights"], baseline_weights())
    assert result["slowest_log_call"] < 0.25, result["slowest_log_call"]
    assert result["start_seconds"] < START_TIMEOUT + 2
    # ending the run at exit takes at most the flush budget; the process then exits (the
    # slack is for interpreter shutdown on a busy machine)
    assert result["end_seconds"] < FLUSH_TIMEOUT + 1.5, result["end_seconds"]
    assert result["exit_seconds"] < FLUSH_TIMEOUT + 20, result["exit_seconds"]
    assert "Traceback" not in result["stderr"], result["stderr"]

    proxy.set("pass")
    assert cli(["sync", "--spool-dir", str(spool), "--tracking-uri", mlflow_server.uri]) == 0
    client = MlflowClient(mlflow_server.uri)
    run_id = server_run_id(client, result)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.05", "steps": str(STEPS)}
    assert_every_point_once(client, run_id)
    # a second sync has nothing left to do and adds nothing
    capsys.readouterr()
    assert cli(["sync", "--spool-dir", str(spool), "--tracking-uri", mlflow_server.uri]) == 0
    assert "Nothing to sync" in capsys.readouterr().out
    assert_every_point_once(client, run_id)
    faults = set(SCENARIOS[scenario].values()) - {"pass"}
    if scenario != "unreachable at start":  # (refused connections never reach the proxy)
        assert all(proxy.seen[fault] > 0 for fault in faults), proxy.seen  # the fault happened


XGBOOST = """
import atexit, hashlib, json, sys, time
import numpy as np
import xgboost as xgb
import mlflow.tracking
from mltrail.integrations.xgboost import TrailCallback

uri, spool, steps, flush_timeout, start_timeout = sys.argv[1:6]
print("ready", flush=True)
sys.stdin.readline()

class Pace(xgb.callback.TrainingCallback):
    def after_iteration(self, model, epoch, evals_log):
        if epoch == 0:
            callback.run_id  # its run opens beside the training: it exists before the outage
        print(f"step {epoch}", flush=True)
        time.sleep(0.2)
        return False

rng = np.random.default_rng(0)
x = rng.normal(size=(200, 4))
y = (x[:, 0] + 0.8 * x[:, 1] + rng.normal(scale=0.8, size=200) > 0).astype(int)
dtrain, dval = xgb.DMatrix(x[:150], label=y[:150]), xgb.DMatrix(x[150:], label=y[150:])
params = {"objective": "binary:logistic", "max_depth": 2, "seed": 7, "nthread": 1}
baseline = xgb.train(params, dtrain, 8, evals=[(dval, "val")], verbose_eval=False)
callback = TrailCallback(
    experiment="faults-xgboost", tracking_uri=uri, spool_dir=spool, checkpoint_every=1,
    flush_interval=0.2, flush_timeout=float(flush_timeout), capture=False, system_metrics=False,
)
booster = xgb.train(params, dtrain, 8, evals=[(dval, "val")], verbose_eval=False,
                    callbacks=[callback, Pace()])
same = bytes(booster.save_raw("json")) == bytes(baseline.save_raw("json"))
atexit.register(lambda: print(f"exit_end {time.perf_counter() - exiting[0]}", flush=True))
exiting = [time.perf_counter()]  # the run ended when train() returned
print("result " + json.dumps({"run_id": callback.run_id, "same_model": same}), flush=True)
"""


@pytest.mark.server
@pytest.mark.parametrize("fault", ["down", "hang"])
def test_xgboost_adapter_under_an_outage_loses_nothing(
    fault: str, proxy, mlflow_server, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    result = run_training(proxy, spool, tmp_path, {2: fault}, code=XGBOOST)
    assert result["same_model"]  # the booster is the one trained without mltrail
    assert proxy.seen[fault] > 0, proxy.seen
    assert result["exit_seconds"] < FLUSH_TIMEOUT + 20, result["exit_seconds"]
    assert "Traceback" not in result["stderr"], result["stderr"]

    proxy.set("pass")
    assert cli(["sync", "--spool-dir", str(spool), "--tracking-uri", mlflow_server.uri]) == 0
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(result["run_id"], "val-logloss")]
    assert sorted(steps) == list(range(8))
    # every round's checkpoint and the model, although the uploads failed at the time
    checkpoints = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert {f"xgboost-{step:06d}.ubj" for step in range(8)} <= checkpoints
    # with "hang", the model was still queued behind the hung upload when the flush budget ran
    # out: it was saved then and journaled with the run's end behind it
    model = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "model/MLmodel" in model
    assert "mltrail.model.id" in run.data.tags


# --- the spool's disk fails too ------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """Mount a tmpfs of the given options on a fresh folder (root only); unmounted after."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def spool_errors(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("mltrail") and r.levelno >= logging.ERROR
    ]


def train_into(trail, proxy, down_at: int) -> list[float]:
    namespace: dict = {}
    exec(TRAIN.replace('print(f"step {step}", flush=True)', "on_step(step)"), namespace)

    def on_step(step: int) -> None:
        if step == down_at:
            assert trail.flush(30)  # the first points are in the store, then it goes away
            proxy.set("down")

    namespace["on_step"] = on_step
    weights, slowest = namespace["train"](trail, STEPS)
    assert slowest < 0.25, slowest
    return weights.tolist()


@pytest.mark.server
@pytest.mark.parametrize("disk", ["full", "read-only"])
def test_spool_disk_failure_keeps_training_with_one_clear_error(
    disk: str, proxy, mlflow_server, small_disk, monkeypatch, caplog
) -> None:
    monkeypatch.setenv("MLTRAIL_STRICT", "0")
    # two pages: the spool's meta.json fits, the outage's journal does not
    spool = small_disk("size=8k" if disk == "full" else "ro,size=64k")
    with caplog.at_level(logging.WARNING), pytest.warns(mltrail.MltrailWarning, match="sending"):
        trail = mltrail.start_run(
            experiment="faults-disk",
            tracking_uri=proxy.uri,
            spool_dir=spool,
            flush_interval=0.1,
            flush_timeout=FLUSH_TIMEOUT,
            capture=False,
            system_metrics=False,
        )
        trail.log_params({"lr": 0.05})
        weights = train_into(trail, proxy, down_at=20)
        began = time.monotonic()
        trail.end()
        assert time.monotonic() - began < FLUSH_TIMEOUT + 1.5
    assert weights == baseline_weights()

    errors = spool_errors(caplog)
    assert len(errors) == 1, errors  # one clear error, saying what to do
    assert "MLTRAIL_SPOOL_DIR" in errors[0] and str(spool) in errors[0]

    assert proxy.seen["down"] > 0, proxy.seen  # the outage happened
    proxy.set("pass")
    client = MlflowClient(mlflow_server.uri)
    journaled: dict[str, set[int]] = {key: set() for key in KEYS}
    if disk == "full":
        # nothing corrupt: every journaled line is whole, and sync replays them once the user
        # has freed some space
        journal = spool / trail.run_id / "journal.jsonl"
        text = journal.read_text()
        assert text.endswith("\n")
        for line in text.splitlines():
            record = json.loads(line)
            if record["kind"] == "metrics":
                for key, _, _, step in record["data"]:
                    journaled[key].add(step)
        assert any(journaled.values()), "the journal took some points before the disk was full"
        subprocess.run(["mount", "-o", "remount,size=1m", str(spool)], check=True)
        assert cli(["sync", "--spool-dir", str(spool), "--tracking-uri", mlflow_server.uri]) == 0
    for key in KEYS:
        steps = [m.step for m in client.get_metric_history(trail.run_id, key)]
        assert set(range(21)) <= set(steps), key  # what was sent before the outage is there
        assert len(steps) == len(set(steps))  # never twice
        assert journaled[key] <= set(steps)  # and every journaled point was replayed


def test_a_run_the_server_creates_after_the_client_gave_up_is_the_one_synced(
    proxy, mlflow_server, tmp_path: Path
) -> None:
    """A server slower than ``start_timeout``: the training goes on journaled offline while the
    server still creates the run it was asked for. ``mltrail sync`` replays into that run
    rather than creating a second one, which would leave the first RUNNING and empty."""
    proxy.delay = 2.0
    proxy.set("slow")
    trail = mltrail.start_run(
        tracking_uri=proxy.uri,
        experiment="late-start",
        run_name="late",
        start_timeout=1.0,
        capture=False,
        system_metrics=False,
    )
    assert trail.offline
    trail.log_metrics({"loss": 0.5}, step=0)
    trail.end()
    meta_path = tmp_path / "spool" / trail.run_id / "meta.json"
    deadline = time.monotonic() + 60
    while "server_run_id" not in (meta := json.loads(meta_path.read_text())):
        assert time.monotonic() < deadline, "the run the server created was not adopted"
        time.sleep(0.2)
    proxy.set("pass")
    spool = tmp_path / "spool"
    assert cli(["sync", "--spool-dir", str(spool), "--tracking-uri", mlflow_server.uri]) == 0
    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("late-start")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == meta["server_run_id"]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["loss"] == 0.5
    assert run.info.run_name == "late"
