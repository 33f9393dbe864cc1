"""`make demo`: the commands it prints run as printed, pasted into a fresh shell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("xgboost")
pytest.importorskip("pandas")
pytest.importorskip("dvc")

REPO = Path(__file__).resolve().parents[2]


def fresh_shell_env(home: Path) -> dict[str, str]:
    """A new login's environment: no venv on PATH, no MLflow or mltrail variables."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        # Test servers need no background job runner (it starts a dozen worker processes).
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def block_after(lines: list[str], header: str) -> list[str]:
    """The indented command lines printed under ``header``."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 1
    block = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        block.append(line.strip())
    return block


@pytest.fixture(scope="module")
def demo(demo_run: dict) -> dict:
    """The session's `make demo` run (tests/conftest.py)."""
    return demo_run


def test_printed_paths_are_normalised(demo: dict) -> None:
    text = "\n".join(demo["lines"])
    assert "/../" not in text and "/./" not in text
    assert "--into ../" not in text


def test_checkout_runs_as_printed_in_a_fresh_shell(demo: dict, tmp_path: Path) -> None:
    block = block_after(demo["lines"], "Get data v1 back")
    assert block[0].startswith("cd ") and "checkout" in block[1]
    done = subprocess.run(
        ["sh", "-c", "\n".join(block)],
        cwd=tmp_path,
        env=fresh_shell_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    v1 = demo["output"] / "v1"
    assert len((v1 / "data" / "dataset.csv").read_text().splitlines()) == 401  # data v1 rows
    assert "/../" not in done.stdout + done.stderr


def test_dollar_commands_run_after_the_printed_preamble(demo: dict, tmp_path: Path) -> None:
    preamble = block_after(demo["lines"], "To run the commands above")
    assert any(line.startswith("export MLFLOW_TRACKING_URI=") for line in preamble)
    shown = [line.strip()[2:] for line in demo["lines"] if line.strip().startswith("$ mltrail ")]
    runs = next(command for command in shown if command.startswith("mltrail runs"))
    done = subprocess.run(
        ["sh", "-c", "\n".join([*preamble, runs])],
        cwd=tmp_path,
        env=fresh_shell_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert demo["first"] in done.stdout


def test_mlflow_ui_runs_as_printed_and_shows_the_runs(demo: dict, tmp_path: Path) -> None:
    block = block_after(demo["lines"], "Browse the runs in the MLflow UI")
    assert len(block) == 1 and " ui " in block[0]
    server = subprocess.Popen(
        ["sh", "-c", block[0]],
        cwd=tmp_path,
        env=fresh_shell_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{demo['port']}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, "mlflow ui exited"
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "mlflow ui did not answer"
                time.sleep(0.5)
        query = f"{url}/api/2.0/mlflow/runs/get?run_id={demo['first']}"
        with urllib.request.urlopen(query, timeout=30) as response:
            run = json.loads(response.read())["run"]
        assert run["info"]["run_id"] == demo["first"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
