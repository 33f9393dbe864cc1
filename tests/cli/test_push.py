"""`mltrail push`: a teammate's fresh clone restores a run made on another machine;
`mltrail which`: the run behind a model file someone shared."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import cli, git
from tests.conftest import workspace_files as files

import mltrail
from mltrail.capture import datasnap


def remote_objects(folder: Path) -> set[str]:
    root = folder / "files" / "md5"
    return (
        {p.parent.name + p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()
    )


@pytest.fixture(scope="module")
def team(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A project with a bare git remote and a local DVC remote; one run made on a dirty tree
    (an untracked file) with modified, not added, data and snapshot_data=True."""
    from dvc.repo import Repo

    base = tmp_path_factory.mktemp("push")
    origin = base / "origin.git"
    git(base, "init", "-q", "--bare", "-b", "main", str(origin))
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
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    (repo / "train.py").write_text("print('v1, tuned')\n")
    (repo / "notes.txt").write_text("lr 0.3 looks better\n")
    (repo / "data.csv").write_text("x,y\n1,2\n3,4\n")
    state = files(repo)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        mp.setenv("MLFLOW_TRACKING_URI", module_store)
        mp.setenv("MLTRAIL_SPOOL_DIR", str(base / "spool"))
        with mltrail.start_run(experiment="push", snapshot_data=True, system_metrics=False) as run:
            run.log_params({"lr": 0.3})
    return {"base": base, "repo": repo, "origin": origin, "run": run.run_id, "state": state}


def test_push_then_checkout_from_a_fresh_clone(
    team: dict, capsys, tmp_path: Path, monkeypatch
) -> None:
    run_id, base = team["run"], team["base"]
    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(team["origin"]), str(fresh))
    monkeypatch.chdir(fresh)
    # Before the push, the teammate cannot get the run's uncommitted code.
    code, out, err = cli(capsys, "checkout", run_id, "--into", str(tmp_path / "too-early"))
    assert code == 2 and out == ""
    assert "snapshot commit" in err and "nor on remote 'origin'" in err and "`mltrail push`" in err
    assert err.count("\n") == 1

    monkeypatch.chdir(team["repo"])
    code, out, err = cli(capsys, "push")
    assert code == 0, out + err
    snapshot = git(team["repo"], "rev-parse", f"refs/mltrail/runs/{run_id}")
    assert git(team["origin"], "rev-parse", f"refs/mltrail/runs/{run_id}") == snapshot
    assert "Pushed 1 run snapshot ref(s) to git remote 'origin'." in out
    pushed = remote_objects(base / "dvc-remote")
    from mltrail.restore.checkout import open_run

    _, record = open_run(None, run_id)
    used = {o.path: o.hash for o in record.outputs}
    assert used["data.csv"] in pushed  # the data snapshot, never `dvc add`-ed
    assert used["images"] in pushed and used["images"].endswith(".dir")
    assert "data object(s)" in out
    assert files(team["repo"]) == team["state"]  # pushing touched nothing of the workspace

    monkeypatch.chdir(fresh)
    target = tmp_path / "restored"
    code, out, err = cli(capsys, "checkout", run_id, "--into", str(target))
    assert code == 0, out + err
    assert files(target) == team["state"]
    assert "restored from remote storage" in out
    code, out, err = cli(capsys, "verify", run_id, "--path", str(target))
    assert code == 0, out + err
    # Outside any clone, checkout clones the remote the run recorded.
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "checkout", run_id, "--into", str(tmp_path / "from-url"))
    assert code == 0, out + err
    assert files(tmp_path / "from-url") == team["state"]
    # Pushing again is harmless.
    monkeypatch.chdir(team["repo"])
    code, out, _ = cli(capsys, "push")
    assert code == 0 and "Pushed 0 data object(s)" in out


def test_nothing_to_push(capsys, git_repo: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(git_repo)
    code, out, err = cli(capsys, "push")
    assert code == 2 and "has no git remote" in err and err.count("\n") == 1
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(git_repo, "remote", "add", "origin", str(bare))
    code, out, _ = cli(capsys, "push")
    assert code == 0 and "No run snapshots under refs/mltrail/runs/ to push." in out
    code, _, err = cli(capsys, "push", "--remote", "upstream")
    assert code == 2 and "no git remote 'upstream'" in err


def test_which_finds_the_run_of_a_shared_checkpoint_or_model_file(
    git_repo: Path, capsys, tmp_path: Path, client, monkeypatch
) -> None:
    from sklearn.linear_model import LinearRegression

    monkeypatch.chdir(git_repo)
    checkpoint = tmp_path / "epoch-1.ckpt"
    checkpoint.write_bytes(b"weights after epoch 1")
    model = LinearRegression().fit([[0.0], [1.0], [2.0]], [0.0, 1.0, 2.0])
    with mltrail.start_run(experiment="which", system_metrics=False) as run:
        run.log_checkpoint(checkpoint, step=1)
        run.log_model(model, "sklearn")
    code, out, err = cli(capsys, "which", str(checkpoint))
    assert code == 0, err
    assert f"is checkpoints/epoch-1.ckpt of run {run.run_id}" in out
    assert f"commit    {git(git_repo, 'rev-parse', 'HEAD')}" in out  # its provenance
    tags = client.get_run(run.run_id).data.tags
    hashed = sorted(v for k, v in tags.items() if k.startswith("mltrail.sha256."))
    # The model's weights file is looked up by hash; MLflow's metadata files are not.
    assert len(hashed) == 2 and hashed[0] == "checkpoints/epoch-1.ckpt"
    assert hashed[1].startswith("model/model.") and not hashed[1].endswith(("MLmodel", ".yaml"))
    weights = Path(client.download_artifacts(run.run_id, hashed[1], str(tmp_path)))
    code, out, _ = cli(capsys, "which", str(weights))
    assert code == 0 and f"is {hashed[1]} of run {run.run_id}" in out
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"never logged")
    code, out, _ = cli(capsys, "which", str(other))
    assert code == 1 and "No run" in out
    code, _, err = cli(capsys, "which", str(tmp_path / "missing.ckpt"))
    assert code == 2 and "is not a file" in err
