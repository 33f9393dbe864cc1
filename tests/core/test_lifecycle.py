"""How runs end when the process does: exit, uncaught exceptions, SIGTERM, SIGKILL, races."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import mltrail

# Waits as a training does, running Python code: a signal that arrives while the main thread
# is between two calls (the print's write and the sleep, say, waiting for the interpreter lock
# that mltrail's threads hold) is handled at the next loop turn. Python checks for signals
# between loop turns, not before a call: one long sleep would hold it until the sleep ends.
WAIT = """
def wait_a_minute():
    for _ in range(600):
        time.sleep(0.1)
"""


def script(body: str) -> str:
    return "import mltrail, time, sys\n" + WAIT + textwrap.dedent(body)


def run_python(code: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, **kwargs
    )


def start_python(code: str) -> subprocess.Popen[str]:
    """A script whose stack can be read when it does not end (``-X faulthandler``)."""
    return subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def exit_code(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    """The script's exit code and stderr; a script still alive after ``timeout`` is aborted and
    the test fails with every thread's stack."""
    try:
        _out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        _out, err = process.communicate(timeout=30)
        # A signal the test runner ignores is ignored by the scripts it starts as well.
        inherited = {s.name: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        pytest.fail(f"the script was still alive after {timeout} s ({inherited}):\n{err[-6000:]}")
    return process.returncode, err


def only_run(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_run_left_open_ends_finished_at_exit(client) -> None:
    result = run_python(
        script("""
        trail = mltrail.start_run(experiment="exit-ok", capture=False)
        trail.log_metrics({"loss": 0.5}, step=0)
        """)
    )
    assert result.returncode == 0, result.stderr
    run = only_run(client, "exit-ok")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["loss"] == 0.5


POOL_UPLOAD = """
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import threading

def draw(path):
    time.sleep({delay})  # the script has ended by now
    with ThreadPoolExecutor(1) as pool:
        pool.submit(Path(path).write_bytes, b"drawn through a pool").result()

trail = mltrail.start_run(experiment="{experiment}", capture=False, system_metrics=False)
if {user_thread}:
    threading.Thread(target=time.sleep, args=(3.0,)).start()  # the user's, not a daemon
trail.log_image(draw, "plots/pool.png")
"""


@pytest.mark.parametrize(
    ("experiment", "delay", "user_thread"),
    [
        # A store's client that uploads through a thread pool (boto3's S3 transfers) still
        # works while the runs end at exit: the pools refuse new work once threads shut down.
        ("exit-pool", 0.5, False),
        # Python closes its thread pools as soon as the script's main thread ends, then waits
        # for the user's own threads: an upload through a pool in that window (boto3 uploading
        # the final model) waits for mltrail's exit handler to open them again, not failing.
        ("exit-window", 1.0, True),
    ],
)
def test_uploads_at_exit_may_use_thread_pools(client, experiment, delay, user_thread) -> None:
    code = POOL_UPLOAD.format(experiment=experiment, delay=delay, user_thread=user_thread)
    result = run_python(script(code))
    assert result.returncode == 0, result.stderr
    assert "schedule new futures" not in result.stderr
    run = only_run(client, experiment)
    assert run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/pool.png"]
    assert "mltrail.errors" not in run.data.tags


def test_uncaught_exception_ends_failed(client) -> None:
    result = run_python(
        script("""
        trail = mltrail.start_run(experiment="exit-fail", capture=False)
        trail.log_metrics({"loss": 0.5}, step=0)
        raise RuntimeError("diverged")
        """)
    )
    assert result.returncode == 1
    assert "RuntimeError: diverged" in result.stderr  # the user's traceback is still printed
    run = only_run(client, "exit-fail")
    assert run.info.status == "FAILED"
    assert run.data.tags["mltrail.exception.type"] == "RuntimeError"


def test_sigterm_ends_killed_flushed_and_chains_the_previous_handler(
    client, tmp_path: Path
) -> None:
    marker = tmp_path / "handler-ran"
    code = script(f"""
        import signal, pathlib
        def handler(signum, frame):
            pathlib.Path({str(marker)!r}).write_text("yes")
            sys.exit(143)
        signal.signal(signal.SIGTERM, handler)
        trail = mltrail.start_run(experiment="sigterm", capture=False)
        for step in range(10_000):
            trail.log_metrics({{"loss": 1.0 / (step + 1)}}, step=step)
            if step == 5:
                print("ready", flush=True)
            time.sleep(0.01)
        """)
    process = start_python(code)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    returned, err = exit_code(process)
    assert returned == 143, err
    assert marker.read_text() == "yes"
    run = only_run(client, "sigterm")
    assert run.info.status == "KILLED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert steps == list(range(len(steps))) and len(steps) >= 6


def test_sigterm_without_handler_terminates_with_the_signal(client) -> None:
    code = script("""
        trail = mltrail.start_run(experiment="sigterm-default", capture=False)
        print("ready", flush=True)
        wait_a_minute()
        """)
    process = start_python(code)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    returned, err = exit_code(process)
    assert returned == -signal.SIGTERM, err
    assert only_run(client, "sigterm-default").info.status == "KILLED"


def test_ctrl_c_ends_killed_and_the_process_dies_by_sigint(client) -> None:
    """Shells and schedulers tell an interrupted job from a crashed one by how it died.

    Ending the run, or an excepthook before mltrail's, may evaluate strings (imports,
    dataclasses); CPython forgets the interrupt then, and without mltrail's care the job exits 1.
    """
    code = script("""
        def previous_hook(*exc_info):
            exec("import dataclasses; dataclasses.make_dataclass('Late', ['x'])")
            sys.__excepthook__(*exc_info)
        sys.excepthook = previous_hook
        trail = mltrail.start_run(experiment="ctrl-c", capture=False)
        trail.log_metrics({"loss": 0.5}, step=0)
        print("ready", flush=True)
        wait_a_minute()
        """)
    process = start_python(code)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGINT)
    returned, err = exit_code(process)
    assert returned == -signal.SIGINT, err
    assert "KeyboardInterrupt" in err
    run = only_run(client, "ctrl-c")
    assert run.info.status == "KILLED"
    assert run.data.metrics["loss"] == 0.5


def test_sigkill_run_is_marked_failed_by_the_next_process(client, tmp_path: Path) -> None:
    # The killed process had journaled points it could not send (as after an outage).
    code = script("""
        import json, pathlib
        trail = mltrail.start_run(experiment="sigkill", capture=False)
        trail.log_metrics({"loss": 1.0}, step=0)
        trail.flush()
        trail._writer.spool.append([{"kind": "metrics", "data": [["loss", 0.5, 1, 1]]}])
        print(trail.run_id, flush=True)
        time.sleep(60)
        """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    run_id = process.stdout.readline().strip()
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert client.get_run(run_id).info.status == "RUNNING"
    with mltrail.start_run(experiment="sigkill", capture=False):
        deadline = time.time() + 30
        while time.time() < deadline and client.get_run(run_id).info.status == "RUNNING":
            time.sleep(0.2)
    crashed = client.get_run(run_id)
    assert crashed.info.status == "FAILED"
    assert crashed.data.tags["mltrail.crashed"] == "true"
    deadline = time.time() + 30
    while time.time() < deadline and len(client.get_metric_history(run_id, "loss")) < 2:
        time.sleep(0.2)
    assert sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss")) == [
        (0, 1.0),
        (1, 0.5),
    ]


def test_eight_processes_on_a_fresh_store_and_a_new_experiment(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    code = script(f"""
        trail = mltrail.start_run(experiment="race", tracking_uri={uri!r}, capture=False,
                                  system_metrics=False)
        trail.log_metrics({{"x": 1.0}}, step=0)
        trail.end()
        """)
    env = {**os.environ, "MLTRAIL_STRICT": "0"}
    processes = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(8)
    ]
    errors = [p.communicate(timeout=240)[1] for p in processes]
    assert all(p.returncode == 0 for p in processes), errors
    assert not any("Traceback" in e or "locked" in e for e in errors), errors
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert len(runs) == 8
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_non_zero_rank_writes_nothing(client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MLTRAIL_RUN_ID", "abc123")
    trail = mltrail.start_run(experiment="ranks")
    trail.log_metrics({"x": 1.0}, step=0)
    trail.end()
    assert trail.run_id == "abc123"
    assert client.get_experiment_by_name("ranks") is None
