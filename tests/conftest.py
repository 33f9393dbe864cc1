"""Shared fixtures: real MLflow stores (sqlite, and a real `mlflow server`), real git repos."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

# A suite started in the background by a shell without job control inherits SIGINT ignored, and
# every process it starts would too: the tests that interrupt a job need the default handling.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ["MLTRAIL_STRICT"] = "1"
os.environ["GIT_TERMINAL_PROMPT"] = "0"
# A dead server must fail fast in tests instead of MLflow's minutes of retries.
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "5"
# No spare recorder waits after a test's script for the next test's (the tests of spares
# turn them on): each test's recorder is its own.
os.environ["MLTRAIL_RECORDER_SPARE"] = "0"
# Test servers need no background job runner (it starts a dozen worker processes).
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated sqlite store; copying it is much faster than migrating."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def _copy_store(template: Path, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(scope="module")
def module_store(template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A sqlite tracking URI shared by the tests of one module."""
    return _copy_store(template_db, tmp_path_factory.mktemp("store"))


@pytest.fixture
def fresh_store(template_db: Path, tmp_path: Path) -> str:
    """A sqlite tracking URI of this test alone."""
    return _copy_store(template_db, tmp_path / "store")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module_store: str) -> None:
    """Each test runs in its own folder, spools there, and logs to the module's store."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLTRAIL_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", module_store)
    monkeypatch.setenv("MLTRAIL_SYSTEM_METRICS_INTERVAL", "0.5")
    # Tests read the store right after a training returns: adapters end runs on this thread.
    # Scripts run as subprocesses (user_env) keep the default, closing runs in the background.
    monkeypatch.setenv("MLTRAIL_END_IN_BACKGROUND", "false")
    monkeypatch.delenv("MLTRAIL_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    yield
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()
    # Lightning's MLFlowLogger and user-style tests set MLflow's global URI; do not leak it.
    mlflow.set_tracking_uri(None)


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a script a user runs: this test's, less the switches only in-process
    tests need (adapters end runs in the background, as they do by default)."""
    env = dict(os.environ)
    env.pop("MLTRAIL_END_IN_BACKGROUND", None)
    return {**env, **extra}


@pytest.fixture
def client(module_store: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(module_store)


GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}
# git and DVC internals: not part of a workspace's state.
NOT_STATE = {".git", "cache", "tmp", "config.local"}


def git(repo: Path, *args: str, check: bool = True) -> str:
    """Run git in ``repo`` with a fixed identity; returns stdout."""
    result = subprocess.run(
        ["git", *args], cwd=repo, env={**os.environ, **GIT_IDENTITY}, capture_output=True, text=True
    )
    assert not check or result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the ``mltrail`` command in-process; returns (exit code, stdout, stderr)."""
    from mltrail.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def workspace_files(folder: Path) -> dict[str, bytes]:
    """Every file of a workspace (code and data) with its bytes, git and DVC internals aside."""
    found = {}
    for current, dirs, names in os.walk(folder):
        base = Path(current)
        rel = base.relative_to(folder)
        dirs[:] = [d for d in dirs if not (d in NOT_STATE and rel.parts[:1] in ((), (".dvc",)))]
        for name in names:
            if name == ".git" or (rel.parts == (".dvc",) and name in NOT_STATE):
                continue
            found[(rel / name).as_posix()] = (base / name).read_bytes()
    return found


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A git repository with one commit (train.py, README), identity configured locally."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test")
    git(repo, "config", "user.email", "test@example.com")
    (repo / "train.py").write_text("print('train')\n")
    (repo / "README.md").write_text("# project\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 that tests can stop and start again."""

    def __init__(self, folder: Path, template: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(template, folder / "mlflow.db")
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> None:
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination", str(self.folder / "artifacts"),
            "--workers", "1",
        ]  # fmt: skip
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - the server keeps it
        self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.folder / "server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("mlflow server did not start in time")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, template_db: Path):
    server = MlflowServer(tmp_path_factory.mktemp("server"), template_db)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`make demo` run once for the session (10 boosting rounds, a free UI port), as a user
    runs it: the story's test, the printed commands' test and the UI test all read it."""
    pytest.importorskip("xgboost")
    pytest.importorskip("dvc")
    output = tmp_path_factory.getbasetemp() / "demo-output"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLTRAIL_"))}
    env.update(
        {
            "MLTRAIL_STRICT": "0",
            "MLTRAIL_SYSTEM_METRICS": "false",
            "MLTRAIL_SPOOL_DIR": str(tmp_path_factory.mktemp("demo-spool")),
        }
    )
    demo = Path(__file__).resolve().parents[1] / "examples" / "demo.py"
    options = ["--output", str(output), "--rounds", "10", "--ui-port", str(port)]
    done = subprocess.run(
        [sys.executable, str(demo), *options],
        cwd=tmp_path_factory.mktemp("demo-cwd"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    lines = done.stdout.splitlines()
    first, second = (line.split()[1] for line in lines if line.strip().startswith("run "))
    return {
        "output": output,
        "stdout": done.stdout,
        "lines": lines,
        "port": port,
        "first": first,
        "second": second,
    }
