"""``--json`` and progress of the verbs that move code and data (``checkout``, ``push``,
``reproduce``, ``sync``), driven as a user types them: with ``--json`` stdout is one JSON
document and no progress is drawn; off a terminal nothing is drawn; on a terminal (a
pseudo-terminal here) or with ``MLTRAIL_PROGRESS=1`` a progress line shows bytes, files and a
rate."""

from __future__ import annotations

import json
import os
import pty
import runpy
import select
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from tests.conftest import free_port, git

from mltrail.capture import datasnap
from mltrail.recording.spool import Spool

MLTRAIL = str(Path(sys.executable).with_name("mltrail"))
SCRIPT = """\
from pathlib import Path

import mltrail

size = sum(p.stat().st_size for p in Path("data").iterdir())
with mltrail.start_run(experiment="json-progress", system_metrics=False) as trail:
    trail.log_metrics({"bytes": float(size)}, step=0)
print("trained on", size, "bytes")
"""
RATE = "B/s"  # what tqdm's rate looks like: "1.2MB/s"


def mltrail_cli(*args: str, cwd: Path, progress: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLTRAIL_PROGRESS"}
    if progress is not None:
        env["MLTRAIL_PROGRESS"] = progress
    return subprocess.run(
        [MLTRAIL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def on_terminal(*args: str, cwd: Path) -> tuple[int, str]:
    """Run ``mltrail ARGS`` with stdout and stderr on a pseudo-terminal; (exit code, output)."""
    env = {k: v for k, v in os.environ.items() if k != "MLTRAIL_PROGRESS"}
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [MLTRAIL, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=follower,
        stderr=follower,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 300)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def project(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A git repository with a bare origin and DVC data (3 files) pushed to a local DVC
    remote, and one run of train.py made on a dirty tree (so it has a snapshot ref)."""
    from dvc.repo import Repo

    base = tmp_path_factory.mktemp("json-progress")
    origin = base / "origin.git"
    git(base, "init", "-q", "--bare", "-b", "main", str(origin))
    repo = base / "repo"
    (repo / "data").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    Repo.init(str(repo)).close()
    (repo / ".dvc" / "config").write_text(
        f"[core]\n    remote = storage\n['remote \"storage\"']\n    url = {base / 'dvc-remote'}\n"
    )
    for i in range(3):
        (repo / "data" / f"part-{i}.bin").write_bytes(os.urandom(64 * 1024))
    with datasnap.dvc_repo(repo) as dvc:
        dvc.add([str(repo / "data")])
        dvc.push()
    (repo / "train.py").write_text(SCRIPT)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    (repo / "notes.txt").write_text("untracked: the run's tree is dirty\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        mp.setenv("MLFLOW_TRACKING_URI", module_store)
        mp.setenv("MLTRAIL_SPOOL_DIR", str(base / "spool"))
        mp.setattr(sys, "argv", [str(repo / "train.py")])
        runpy.run_path(str(repo / "train.py"), run_name="__main__")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(module_store)
    experiment = client.get_experiment_by_name("json-progress")
    (run,) = client.search_runs([experiment.experiment_id])
    return {"base": base, "repo": repo, "run": run.info.run_id}


def wait_for_port(port: int) -> None:
    for _ in range(200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


def drop_cache(repo: Path) -> None:
    """Empty the local DVC cache: a checkout must fetch the data from the DVC remote."""
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)


def test_checkout_json_and_progress(project: dict, tmp_path: Path) -> None:
    repo, run_id = project["repo"], project["run"]
    drop_cache(repo)
    done = mltrail_cli("checkout", run_id, "--into", str(tmp_path / "a"), "--json", cwd=repo,
                       progress="1")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert RATE not in done.stderr  # --json: no progress, even when asked for
    data = json.loads(done.stdout)
    assert data["schema_version"] == 1 and data["run_id"] == run_id and data["exact"] is True
    assert data["target"] == str(tmp_path / "a") and data["problems"] == []
    assert data["snapshot"] and data["commit"] == git(repo, "rev-parse", "HEAD")
    (item,) = data["data"]
    assert item["path"] == "data" and item["state"] == "restored"
    assert item["origin"] == "remote storage" and item["hash"].endswith(".dir")

    drop_cache(repo)
    quiet = mltrail_cli("checkout", run_id, "--into", str(tmp_path / "b"), cwd=repo)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "restored from remote storage" in quiet.stdout and RATE not in quiet.stderr

    # MLTRAIL_PROGRESS=1 draws it off a terminal too; a remote folder on a local disk reports
    # no bytes while copying, so each file counts its size once copied.
    drop_cache(repo)
    forced = mltrail_cli("checkout", run_id, "--into", str(tmp_path / "forced"), cwd=repo,
                         progress="1")  # fmt: skip
    assert forced.returncode == 0, forced.stdout + forced.stderr
    last = forced.stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("checkout") and RATE in last and "4 files" in last, forced.stderr
    assert "192k" in last, forced.stderr

    # On a terminal, from the DVC remote served over HTTP (config.local, which the worktree
    # copies, points `storage` there): DVC reports each file's bytes.
    drop_cache(repo)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(project["base"] / "dvc-remote")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        (repo / ".dvc" / "config.local").write_text(
            f"['remote \"storage\"']\n    url = http://127.0.0.1:{port}\n"
        )
        code, output = on_terminal("checkout", run_id, "--into", str(tmp_path / "c"), cwd=repo)
    finally:
        server.terminate()
        server.wait()
        (repo / ".dvc" / "config.local").unlink(missing_ok=True)
    assert code == 0, output
    assert "restored from remote storage" in output
    assert (tmp_path / "c" / "data" / "part-0.bin").read_bytes() == (
        repo / "data" / "part-0.bin"
    ).read_bytes()
    # The line counts the 3 files and the .dir listing fetched, their bytes and the rate.
    final = output.replace("\r", "\n").splitlines()
    drawn = [line for line in final if line.startswith("checkout") and RATE in line]
    assert drawn and "4 files" in drawn[-1] and "192k" in drawn[-1], output


def test_push_json_and_dvc_progress(project: dict, tmp_path: Path) -> None:
    repo, run_id = project["repo"], project["run"]
    snapshot = git(repo, "rev-parse", f"refs/mltrail/runs/{run_id}")
    done = mltrail_cli("push", "--json", cwd=repo, progress="1")
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data == {
        "schema_version": 1,
        "git_remote": "origin",
        "snapshots": [snapshot],
        "dvc_objects": 0,  # the data was pushed with `dvc push` already
        "dvc_error": None,
    }
    assert done.stderr == ""
    shown = mltrail_cli("push", cwd=repo, progress="1")  # DVC's own progress, forced on
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "Pushed 1 run snapshot ref(s)" in shown.stdout and "Pushing" in shown.stderr
    quiet = mltrail_cli("push", cwd=repo)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_reproduce_json_keeps_stdout_for_the_document(project: dict, tmp_path: Path) -> None:
    repo, run_id = project["repo"], project["run"]
    done = mltrail_cli(
        "reproduce", run_id, "--into", str(tmp_path / "rerun"), "--json", cwd=repo, progress="1"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(done.stdout)  # the script's own output went to stderr
    assert "trained on 196608 bytes" in done.stderr and RATE not in done.stderr
    assert data["schema_version"] == 1 and data["run_id"] == run_id
    assert data["verdict"] == "MATCH" and data["exit_code"] == 0
    assert data["rerun_run_id"] and data["rerun_run_id"] != run_id
    assert data["rerun_status"] == "FINISHED" and data["checkout"]["exact"] is True
    assert data["metrics"] == [
        {"key": "bytes", "original": 196608.0, "rerun": 196608.0, "ok": True}
    ]
    assert data["command"][-1].endswith("train.py")


def journal(spool_dir: Path, tracking_uri: str) -> str:
    """One run journaled offline by a process that has ended."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_id = uuid.uuid4().hex
    spool = Spool(spool_dir, run_id)
    spool.open({"tracking_uri": tracking_uri, "experiment": "json-progress-sync",
                "offline": True, "pid": dead.pid, "host": socket.gethostname()})  # fmt: skip
    now = int(time.time() * 1000)
    spool.append([{"kind": "metrics", "data": [["loss", 0.5, now, 0]]}])
    return run_id


def test_sync_json_dry_run_and_progress(module_store: str, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    first = journal(spool_dir, module_store)
    args = ("sync", "--spool-dir", str(spool_dir))
    dry = mltrail_cli(*args, "--dry-run", "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {
        "schema_version": 1,
        "spool_dir": str(spool_dir),
        "dry_run": True,
        "runs": [{"run_id": first, "state": "pending", "records": 1, "tracking_uri": module_store}],
    }
    done = mltrail_cli(*args, "--json", cwd=tmp_path, progress="1")
    assert done.returncode == 0, done.stderr
    assert RATE not in done.stderr
    data = json.loads(done.stdout)
    (run,) = data["runs"]
    assert data["dry_run"] is False and run["offline_run_id"] == first
    assert run["state"] == "synced" and run["records"] == 1 and run["metrics_sent"] == 1
    assert run["run_id"] and run["problems"] == [] and run["bytes"] > 0

    journal(spool_dir, module_store)
    code, output = on_terminal(*args, cwd=tmp_path)
    assert code == 0 and "1 record(s) into run" in output
    assert any(
        line.startswith("sync") and RATE in line and "1 runs" in line
        for line in output.replace("\r", "\n").splitlines()
    ), output
