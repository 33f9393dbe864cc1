"""`mltrail reproduce` reruns a deterministic scikit-learn script from the run's code and data."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from mltrail.capture import datasnap
from mltrail.cli import main
from mltrail.restore import reproduce

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}
SCRIPT = """\
import csv
import sys

from sklearn.linear_model import LogisticRegression

import mltrail

C = float(sys.argv[sys.argv.index("--C") + 1])
with open("data/points.csv") as handle:
    rows = [[float(v) for v in row] for row in csv.reader(handle)]
X, y = [row[:2] for row in rows], [int(row[2]) for row in rows]
with mltrail.start_run(experiment="reproduce", system_metrics=False) as trail:
    trail.log_params({"C": C})
    model = LogisticRegression(C=C).fit(X, y)
    trail.log_metrics({"accuracy": model.score(X, y), "coef": float(model.coef_[0][0])}, step=0)
print("trained", model.score(X, y))
"""


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=repo, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def points(shift: float) -> str:
    rows = [
        (i * 0.37 % 3, i * 0.61 % 2, int(i * 0.37 % 3 + i * 0.61 % 2 > 2 + shift))
        for i in range(40)
    ]
    return "".join(f"{a:.3f},{b:.3f},{c}\n" for a, b, c in rows)


@pytest.fixture(scope="module")
def original(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A run of train.py on DVC-tracked data; afterwards the code and the data change."""
    from dvc.repo import Repo

    base = tmp_path_factory.mktemp("reproduce")
    repo = base / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "data").mkdir()
    git(repo, "init", "-q", "-b", "main")
    Repo.init(str(repo)).close()
    (repo / "data" / "points.csv").write_text(points(0.0))
    with datasnap.dvc_repo(repo) as dvc:
        dvc.add([str(repo / "data" / "points.csv")])
    (repo / "src" / "train.py").write_text(SCRIPT)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    # The original run, as `python src/train.py --C 0.5` in the repository would make it.
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        mp.setenv("MLFLOW_TRACKING_URI", module_store)
        mp.setenv("MLTRAIL_SPOOL_DIR", str(base / "spool"))
        mp.setattr(sys, "argv", ["src/train.py", "--C", "0.5"])
        runpy.run_path("src/train.py", run_name="__main__")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(module_store)
    [run] = client.search_runs([client.get_experiment_by_name("reproduce").experiment_id])
    # The project moves on: other data, other code.
    (repo / "data" / "points.csv").write_text(points(0.8))
    with datasnap.dvc_repo(repo) as dvc:
        dvc.add([str(repo / "data" / "points.csv")])
    (repo / "src" / "train.py").write_text(
        SCRIPT.replace("LogisticRegression(C=C)", "LogisticRegression(C=C * 10)")
    )
    git(repo, "commit", "-q", "-am", "v2")
    return {"repo": repo, "run": run}


def test_reproduce_matches_the_original(
    original: dict, capfd, client, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(original["repo"])
    run = original["run"]
    target = tmp_path / "rerun"
    code = main(["reproduce", run.info.run_id, "--into", str(target)])
    out = capfd.readouterr().out
    assert code == 0, out
    assert "Code and data were restored exactly." in out
    assert f"Running in {target}: {sys.executable} src/train.py --C 0.5" in out
    assert "MATCH (rtol=1e-06, atol=1e-09)" in out
    reruns = client.search_runs(
        [run.info.experiment_id], f"tags.`{reproduce.TAG}` = '{run.info.run_id}'"
    )
    [rerun] = reruns
    assert rerun.info.status == "FINISHED" and rerun.info.run_id != run.info.run_id
    assert rerun.data.params == run.data.params == {"C": "0.5"}
    assert rerun.data.metrics["accuracy"] == run.data.metrics["accuracy"]
    assert rerun.data.metrics["coef"] == pytest.approx(run.data.metrics["coef"], rel=1e-9)
    assert rerun.data.tags["mlflow.source.git.commit"] == run.data.tags["mlflow.source.git.commit"]
    assert rerun.data.tags["mltrail.dvc.data_dirty"] == "false"
    assert {d.dataset.digest for d in rerun.inputs.dataset_inputs} == {
        d.dataset.digest for d in run.inputs.dataset_inputs
    }
    # The same code, data and params: the rerun has the original's fingerprint.
    assert rerun.data.tags["mltrail.fingerprint"] == run.data.tags["mltrail.fingerprint"]
    assert "mltrail.already_run" not in rerun.data.tags  # reproducing on purpose is not a repeat
    assert (original["repo"] / "data" / "points.csv").read_text() == points(0.8)  # untouched


def test_a_failing_command_is_reported(original: dict, capfd, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(original["repo"])
    run_id = original["run"].info.run_id
    target = tmp_path / "rerun"
    code = main(["reproduce", run_id, "--into", str(target), "--", "sh", "-c", "exit 3"])
    out = capfd.readouterr().out
    assert code == 1
    assert f"Running in {target}: sh -c exit 3" in out
    assert "The command exited with status 3." in out and "logged no mltrail run" in out


def test_compare_metrics() -> None:
    rows, ok = reproduce.compare_metrics(
        {"acc": 0.9, "loss": 0.1, "system/cpu": 3.0, "time": 5.0},
        {"acc": 0.9 + 1e-12, "loss": 0.1, "system/cpu": 9.0, "time": 7.0},
        skip=["time"],
    )
    assert ok and [r[0] for r in rows] == ["acc", "loss"]
    rows, ok = reproduce.compare_metrics(
        {"acc": 0.9, "loss": float("nan")}, {"acc": 0.91, "loss": float("nan")}
    )
    assert not ok and [r[3] for r in rows] == [False, True]
    rows, ok = reproduce.compare_metrics({"acc": 0.9}, {"acc": 0.91}, rtol=0.05)
    assert ok
    rows, ok = reproduce.compare_metrics({"acc": 0.9}, {}, only=["acc", "f1"])
    assert not ok and rows == [("acc", 0.9, None, False), ("f1", None, None, False)]
    assert reproduce.compare_metrics({}, {})[1] is False  # nothing compared is not a match
    table = reproduce.format_comparison(reproduce.compare_metrics({"acc": 0.9}, {"acc": 0.5})[0])
    assert table.splitlines()[1].split() == ["acc", "0.9", "0.5", "DIFFERS"]


def test_a_run_without_a_script_needs_a_command(
    capsys, client, git_repo: Path, tmp_path: Path, monkeypatch
) -> None:
    import mltrail

    monkeypatch.chdir(git_repo)
    with mltrail.start_run(experiment="reproduce-none", system_metrics=False) as trail:
        trail.log_metrics({"acc": 1.0})
    target = tmp_path / "rerun"
    code = main(["reproduce", trail.run_id, "--into", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and f"mltrail reproduce {trail.run_id} -- python train.py" in err
    assert "is not part of its code" in err or "recorded no script of its repository" in err
    assert not target.exists()  # refused before anything was checked out
