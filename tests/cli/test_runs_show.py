"""`mltrail runs` and `mltrail show` against a real store filled by real runs on a real repo."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import mltrail
from mltrail.capture import git as git_capture
from mltrail.capture import snapshot
from mltrail.cli import main

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}
MLTRAIL = Path(sys.executable).with_name("mltrail")


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=repo, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def history(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two commits; on the first a clean and a dirty run, on the second one run, plus a run
    whose only link to the first commit is its snapshot's parent."""
    repo = tmp_path_factory.mktemp("cli") / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text("print('v1')\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    first = git(repo, "rev-parse", "HEAD")
    old_cwd = os.getcwd()
    os.chdir(repo)
    try:
        with mltrail.start_run(
            experiment="cli", run_name="clean", system_metrics=False, tracking_uri=module_store
        ) as clean:
            clean.log_params({"lr": 0.1, "epochs": 2})
            clean.log_metrics({"val_loss": 0.5, "acc": 0.8}, step=0)
            clean.log_metrics({"val_loss": 0.25, "acc": 0.9}, step=1)
        (repo / "train.py").write_text("print('v1 with a tweak')\n")
        (repo / "notes.md").write_text("what I tried\n")
        with mltrail.start_run(
            experiment="cli", run_name="dirty", system_metrics=False, tracking_uri=module_store
        ) as dirty:
            dirty.log_params({"lr": 0.2})
            dirty.log_metrics({"val_loss": 0.3}, step=0)
        with mltrail.start_run(
            experiment="other", run_name="other", system_metrics=False, tracking_uri=module_store
        ) as other:
            other.log_params({"lr": 0.2})
        git(repo, "checkout", "-q", "--", "train.py")
        (repo / "notes.md").unlink()
        (repo / "train.py").write_text("print('v2')\n")
        git(repo, "commit", "-q", "-am", "v2")
        with mltrail.start_run(
            experiment="cli", run_name="second", system_metrics=False, tracking_uri=module_store
        ) as second:
            second.log_params({"lr": 0.1, "epochs": 2})
    finally:
        os.chdir(old_cwd)
    # A run made by another tool: no commit tag, but a snapshot of the first commit's tree.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(module_store)
    exp = client.get_experiment_by_name("cli").experiment_id
    foreign = client.create_run(exp, run_name="foreign").info.run_id
    client.set_terminated(foreign)
    git(repo, "checkout", "-q", "--detach", first)
    (repo / "train.py").write_text("print('experiment on v1')\n")
    info = git_capture.inspect(dirs=[("cwd", repo)])
    snapshot.create(info, snapshot.ref_name(foreign), "snapshot")
    git(repo, "checkout", "-q", "--", "train.py")
    git(repo, "checkout", "-q", "main")
    return {
        "repo": repo,
        "first": first,
        "second": git(repo, "rev-parse", "HEAD"),
        "clean": clean.run_id,
        "dirty": dirty.run_id,
        "other": other.run_id,
        "later": second.run_id,
        "foreign": foreign,
    }


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch) -> None:
    """Whole `runs` lines, whatever terminal the tests run in."""
    monkeypatch.setenv("COLUMNS", "400")


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_of_a_commit_as_json(history: dict, capsys) -> None:
    code, out, err = run_cli(
        capsys, "runs", "--commit", history["first"][:7], "--repo", str(history["repo"]), "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["schema_version"] == 1 and data["commit"] == history["first"]
    by_id = {r["run_id"]: r for r in data["runs"]}
    assert set(by_id) == {history["clean"], history["dirty"], history["other"], history["foreign"]}
    clean = by_id[history["clean"]]
    assert clean["status"] == "FINISHED" and clean["experiment"] == "cli"
    assert clean["dirty"] is False and clean["snapshot"] is None and clean["match"] == "commit"
    assert clean["metrics"] == {"acc": 0.9, "val_loss": 0.25}
    assert clean["start_time"].endswith("Z") and clean["commit"] == history["first"]
    dirty = by_id[history["dirty"]]
    assert dirty["dirty"] is True and dirty["snapshot"] and dirty["run_name"] == "dirty"
    foreign = by_id[history["foreign"]]
    assert foreign["match"] == "snapshot_parent" and foreign["commit"] is None
    starts = [r["start_time"] for r in data["runs"]]
    assert starts == sorted(starts, reverse=True)


def test_runs_table_with_revisions_and_experiment_filter(
    history: dict, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(history["repo"])
    code, out, _ = run_cli(capsys, "runs", "--commit", "HEAD~1", "--experiment", "cli")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["RUN", "ID", "EXPERIMENT", "NAME"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {history["clean"], history["dirty"], history["foreign"]}
    assert " no " in rows[history["clean"]] and "val_loss=0.25" in rows[history["clean"]]
    assert " code " in rows[history["dirty"]]  # the DIRTY column: uncommitted code changes
    code, out, _ = run_cli(capsys, "runs")  # HEAD by default
    assert [line.split()[0] for line in out.splitlines()[1:]] == [history["later"]]


def test_runs_with_the_same_fingerprint(history: dict, capsys) -> None:
    code, out, _ = run_cli(capsys, "runs", "--fingerprint", "--json")
    assert code == 0
    runs = json.loads(out)["runs"]
    # dirty and other ran the same code state with the same params.
    assert {r["run_id"] for r in runs} == {history["dirty"], history["other"]}
    fingerprint = runs[0]["fingerprint"]
    code, out, _ = run_cli(capsys, "runs", "--fingerprint", fingerprint[:10], "--json")
    assert {r["run_id"] for r in json.loads(out)["runs"]} == {history["dirty"], history["other"]}


@pytest.mark.parametrize(
    "args",
    [
        ["--commit", "{first}"],
        ["--commit", "{second}", "--experiment", "cli"],
        ["--fingerprint"],
        ["--commit", "{first}", "--fingerprint"],
        ["--commit", "{first}", "--max-results", "2"],
        ["--all"],
        ["--experiment", "cli", "--status", "finished", "--limit", "3"],
    ],
)
def test_direct_sqlite_reads_answer_as_mlflow_does(
    history: dict, capsys, monkeypatch, args: list[str]
) -> None:
    """On a sqlite store `runs` reads the tables itself; its answer must be MLflow's, exactly."""
    args = ["runs", *(a.format(**history) for a in args), "--repo", str(history["repo"]), "--json"]
    code, direct, err = run_cli(capsys, *args)
    assert code == 0, err
    monkeypatch.setenv("MLTRAIL_SQLITE_FAST_READS", "0")
    code, through_mlflow, err = run_cli(capsys, *args)
    assert code == 0, err
    assert json.loads(direct)["runs"], "the case must find runs to compare"
    assert direct == through_mlflow


@pytest.mark.parametrize("run", ["clean", "dirty", "foreign"])
def test_show_reads_the_store_as_mlflow_does(history: dict, capsys, monkeypatch, run) -> None:
    """`show` reads a sqlite store's tables and artifact folder itself: MLflow's answer, exactly."""
    code, direct, err = run_cli(capsys, "show", history[run], "--json")
    assert code == 0, err
    monkeypatch.setenv("MLTRAIL_SQLITE_FAST_READS", "0")
    code, through_mlflow, err = run_cli(capsys, "show", history[run], "--json")
    assert code == 0, err
    assert direct == through_mlflow


def test_runs_on_sqlite_does_not_start_mlflow(history: dict, module_store: str) -> None:
    code = (
        "import sys; from mltrail.cli import main; "
        f"code = main(['runs', '--commit', {history['first']!r}, '--json']); "
        "print('mlflow' in sys.modules, file=sys.stderr); sys.exit(code)"
    )
    env = {**ENV, "MLFLOW_TRACKING_URI": module_store}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=history["repo"], env=env, capture_output=True,
        text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["runs"]) == 4
    assert result.stderr.strip().splitlines()[-1] == "False"


def test_show_json(history: dict, capsys) -> None:
    code, out, err = run_cli(capsys, "show", history["dirty"], "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["schema_version"] == 1
    assert data["run"]["run_name"] == "dirty" and data["run"]["experiment"] == "cli"
    code_state = data["code"]
    assert code_state["commit"] == history["first"] and code_state["dirty"] is True
    assert code_state["snapshot_ref"] == f"refs/mltrail/runs/{history['dirty']}"
    assert code_state["untracked"] == ["notes.md"]
    assert code_state["diff"]["files"][0]["path"] == "train.py"
    assert data["params"] == {"lr": "0.2"} and data["metrics"] == {"val_loss": 0.3}
    assert data["environment"]["python"]["version"] == sys.version.split()[0]
    assert data["provenance"]["schema_version"] == 1
    assert data["fingerprint"] == data["provenance"]["fingerprint"]["value"]


def test_show_table(history: dict, capsys) -> None:
    code, out, _ = run_cli(capsys, "show", history["clean"])
    assert code == 0
    assert f"Run         {history['clean']}  (clean)" in out
    assert f"commit    {history['first']} (branch main)" in out
    assert "dirty     no" in out
    for section in ("Code", "Data (data dirty: not checked)", "Environment", "Params", "Metrics"):
        assert f"\n{section}" in out
    assert "  lr = 0.1" in out and "  val_loss = 0.25" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "0123456789abcdef0123456789abcdef"], "There is no run"),
        (["runs", "--commit", "HEAD"], "is not a git repository"),
        (["runs", "--commit", "no-such-rev", "--repo", "{repo}"], "Unknown revision"),
        (["runs", "--repo", "{repo}", "--experiment", "nope"], "no experiment named 'nope'"),
        (
            ["runs", "--commit", "a" * 40, "--tracking-uri", "http://127.0.0.1:{port}"],
            "cannot connect",
        ),
        (["show", "abc", "--tracking-uri", "sqlite:///{tmp}/missing.db"], "no MLflow store"),
    ],
)
def test_errors_are_one_line(history: dict, capsys, tmp_path: Path, args, message) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    values = {"repo": str(history["repo"]), "port": port, "tmp": str(tmp_path)}
    code, out, err = run_cli(capsys, *(a.format(**values) for a in args))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert lines[0].startswith(f"mltrail {args[0]}: ")


def test_console_script(history: dict, module_store: str, tmp_path: Path) -> None:
    env = {**ENV, "MLFLOW_TRACKING_URI": module_store}
    result = subprocess.run(
        [str(MLTRAIL), "runs", "--commit", history["second"], "--json"],
        cwd=history["repo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert [r["run_id"] for r in json.loads(result.stdout)["runs"]] == [history["later"]]
    result = subprocess.run(
        [str(MLTRAIL), "show", "0123456789abcdef0123456789abcdef"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"mltrail show: There is no run '0123456789abcdef0123456789abcdef' in {module_store}."
    ]
    assert "Traceback" not in result.stderr
