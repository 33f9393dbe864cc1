"""`mltrail checkout` on real git + DVC repos and real runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from tests.conftest import cli, git
from tests.conftest import workspace_files as files

import mltrail
from mltrail.capture import datasnap


def make_project(base: Path) -> Path:
    """git + DVC: data.csv and images/ added with `dvc add`, a local DVC remote, train.py."""
    from dvc.repo import Repo

    repo = base / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    Repo.init(str(repo)).close()
    (repo / ".dvc" / "config").write_text(
        f"[core]\n    remote = storage\n['remote \"storage\"']\n    url = {base / 'dvc-remote'}\n"
    )
    (repo / "data.csv").write_text("x,y\n1,2\n")
    (repo / "images").mkdir()
    for i in range(2):
        (repo / "images" / f"{i}.txt").write_text(f"image {i}\n")
    with datasnap.dvc_repo(repo) as dvc:
        dvc.add([str(repo / "data.csv"), str(repo / "images")])
    (repo / "train.py").write_text("print('v1')\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    return repo


def record(name: str, **options) -> str:
    with mltrail.start_run(
        experiment="checkout", run_name=name, system_metrics=False, **options
    ) as run:
        run.log_params({"name": name})
        run.log_metrics({"acc": 0.5}, step=0)
    return run.run_id


@pytest.fixture(scope="module")
def project(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Runs on a clean tree, a dirty tree (with an untracked file), modified data with
    snapshot_data, and modified data without it; then the code and data move on."""
    base = tmp_path_factory.mktemp("checkout")
    repo = make_project(base)
    runs, states = {}, {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        mp.setenv("MLFLOW_TRACKING_URI", module_store)
        mp.setenv("MLTRAIL_SPOOL_DIR", str(base / "spool"))
        states["clean"] = files(repo)
        runs["clean"] = record("clean")
        (repo / "train.py").write_text("print('v1, tuned')\n")
        (repo / "notes").mkdir()
        (repo / "notes" / "idea.py").write_text("IDEA = 1\n")
        states["dirty"] = files(repo)
        runs["dirty"] = record("dirty")
        (repo / "data.csv").write_text("x,y\n1,2\n3,4\n")
        (repo / "images" / "2.txt").write_text("image 2\n")
        states["data"] = files(repo)
        runs["data"] = record("data", snapshot_data=True)
        (repo / "data.csv").write_text("x,y\n9,9\n")
        states["unsaved"] = files(repo)
        runs["unsaved"] = record("unsaved")
    # The project moves on: new code, new data, committed.
    git(repo, "checkout", "-q", "--", "train.py")
    shutil.rmtree(repo / "notes")
    (repo / "train.py").write_text("print('v2')\n")
    (repo / "data.csv").write_text("x,y\n5,5\n")
    shutil.rmtree(repo / "images")
    with datasnap.dvc_repo(repo) as dvc:
        dvc.add([str(repo / "data.csv")])
        dvc.remove(str(repo / "images.dvc"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v2")
    return {"repo": repo, "base": base, "runs": runs, "states": states}


@pytest.mark.parametrize("name", ["clean", "dirty", "data"])
def test_checkout_into_restores_code_and_data_byte_for_byte(
    project: dict, name: str, capsys, tmp_path: Path, monkeypatch
) -> None:
    repo = project["repo"]
    monkeypatch.chdir(repo)
    before = (git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain"), files(repo))
    target = tmp_path / "restored"
    code, out, err = cli(capsys, "checkout", project["runs"][name], "--into", str(target))
    assert code == 0, out + err
    assert files(target) == project["states"][name]
    assert "Code and data were restored exactly." in out
    assert "data.csv" in out and "restored from cache" in out
    commit = git(repo, "rev-parse", "HEAD~1")
    assert git(target, "rev-parse", "HEAD") == commit  # the run's commit, detached
    status = set(git(target, "status", "--porcelain", "--untracked-files=all").splitlines())
    if name == "clean":
        assert status == set()
    else:
        assert {"M train.py", "?? notes/idea.py"} <= {line.strip() for line in status}
        assert (
            f"snapshot {git(repo, 'rev-parse', 'refs/mltrail/runs/' + project['runs'][name])[:12]}"
            in out
        )
    # The user's repository is as it was (a worktree entry aside).
    after = (git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain"), files(repo))
    assert after == before
    assert str(target) in git(repo, "worktree", "list")


def test_data_modified_without_a_snapshot_is_not_exact(
    project: dict, capsys, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(project["repo"])
    target = tmp_path / "restored"
    code, out, _ = cli(capsys, "checkout", project["runs"]["unsaved"], "--into", str(target))
    assert code == 1
    line = next(line for line in out.splitlines() if "data.csv" in line and "data " in line)
    assert "NOT EXACT" in line and "snapshot_data=True" in line
    assert "1 item(s) could not be restored exactly" in out
    expected = dict(project["states"]["unsaved"])
    assert (target / "data.csv").read_text() == "x,y\n1,2\n"  # the recorded version
    expected.pop("data.csv")
    restored = files(target)
    restored.pop("data.csv")
    assert restored == expected


def test_checkout_in_place(project: dict, capsys, tmp_path: Path, monkeypatch) -> None:
    repo = tmp_path / "copy"
    shutil.copytree(project["repo"], repo, symlinks=True)
    monkeypatch.chdir(repo)
    run_id = project["runs"]["dirty"]
    (repo / "train.py").write_text("print('my work in progress')\n")
    code, out, err = cli(capsys, "checkout", run_id)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "uncommitted changes (train.py)" in err and "--into" in err
    assert (repo / "train.py").read_text() == "print('my work in progress')\n"
    git(repo, "checkout", "-q", "--", "train.py")
    (repo / "notes").mkdir()
    (repo / "notes" / "idea.py").write_text("MINE = 2\n")
    code, out, err = cli(capsys, "checkout", run_id)
    assert code == 2 and "notes/idea.py" in err and "would be overwritten" in err
    assert (repo / "notes" / "idea.py").read_text() == "MINE = 2\n"
    shutil.rmtree(repo / "notes")
    code, out, err = cli(capsys, "checkout", run_id)
    assert code == 0, out + err
    assert files(repo) == project["states"]["dirty"]
    assert git(repo, "rev-parse", "HEAD") == git(repo, "rev-parse", "main~1")
    assert git(repo, "branch", "--show-current") == ""
    assert "`git switch main`" in out


def test_checkout_from_a_clone_fetches_the_snapshot(
    project: dict, capsys, tmp_path: Path, monkeypatch
) -> None:
    """A teammate's clone: the snapshot ref comes from the git remote; the data was never
    pushed to the DVC remote, so checkout says what it could not restore."""
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--no-local", str(project["repo"]), str(clone))
    run_id = project["runs"]["dirty"]
    snapshot = git(project["repo"], "rev-parse", f"refs/mltrail/runs/{run_id}")
    assert subprocess.run(["git", "cat-file", "-e", snapshot], cwd=clone).returncode != 0
    monkeypatch.chdir(clone)
    target = tmp_path / "restored"
    code, out, err = cli(capsys, "checkout", run_id, "--into", str(target))
    assert code == 1, err
    assert git(clone, "rev-parse", f"refs/mltrail/runs/{run_id}") == snapshot
    code_files = {
        k: v
        for k, v in project["states"]["dirty"].items()
        if not k.startswith(("data.csv", "images/"))
    }
    restored = files(target)
    assert {k: v for k, v in restored.items() if k in code_files or k.endswith(".dvc")} == {
        k: v for k, v in project["states"]["dirty"].items() if k in code_files or k.endswith(".dvc")
    }
    for path in ("data.csv", "images"):
        line = next(line for line in out.splitlines() if line.startswith(f"  data  {path} "))
        assert "NOT RESTORED" in line and "neither in the DVC cache nor on remote storage" in line
    assert "2 item(s) could not be restored exactly" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["checkout", "0123456789abcdef0123456789abcdef"], "There is no run"),
        (["checkout", "not a run"], "is not a run id"),
        (["checkout", "{clean}", "--into", "{full}"], "is not empty"),
        (["checkout", "{clean}"], "is not inside a git repository"),
        (["checkout", "{clean}", "--into", "{new}", "--remote", "nope"], "no git remote 'nope'"),
    ],
)
def test_errors_are_one_line(
    project: dict, capsys, tmp_path: Path, monkeypatch, args, message
) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "file").write_text("x")
    if "--remote" in args:
        clone = tmp_path / "clone"
        git(tmp_path, "clone", "-q", str(project["repo"]), str(clone))
        monkeypatch.chdir(clone)
    values = {"clean": project["runs"]["dirty"], "full": str(full), "new": str(tmp_path / "new")}
    code, out, err = cli(capsys, *(a.format(**values) for a in args))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert lines[0].startswith("mltrail checkout: ")


def test_a_run_outside_git_cannot_be_checked_out(capsys, tmp_path: Path) -> None:
    run_id = record("no-git")
    code, _, err = cli(capsys, "checkout", run_id, "--into", str(tmp_path / "x"))
    assert code == 2 and "recorded no git commit" in err
