"""Provenance on real runs: tags, artifacts and dataset inputs as a user finds them in MLflow."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import mltrail
from mltrail.capture import provenance

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "DVC_NO_ANALYTICS": "1",
}
TOKEN = "ghp_" + "Z" * 36  # a GitHub token shape: must never reach the store


def sh(repo: Path, *args: str) -> str:
    result = subprocess.run(args, cwd=repo, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def git(repo: Path, *args: str) -> str:
    return sh(repo, "git", *args)


def raw_git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, check=True).stdout


def artifact(client, run_id: str, path: str, tmp_path: Path) -> str:
    folder = tmp_path / "downloads" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(folder))).read_text()


def artifacts(client, run_id: str, folder: str = "mltrail") -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, folder)}


def requirements_lines(client, run_id: str) -> list[str]:
    folder = Path(client.download_artifacts(run_id, "mltrail/requirements.txt"))
    return folder.read_text().splitlines()


def record_of(client, run_id: str, tmp_path: Path) -> dict:
    return json.loads(artifact(client, run_id, "mltrail/provenance.json", tmp_path))


def tree_matches_worktree(repo: Path, commit: str) -> bool:
    listed = raw_git(repo, "ls-tree", "-r", "-z", commit).decode().split("\0")
    tree = {}
    for entry in filter(None, listed):
        meta, path = entry.split("\t", 1)
        tree[path] = raw_git(repo, "cat-file", "blob", meta.split()[2])
    names = raw_git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    disk = {p: (repo / p).read_bytes() for p in filter(None, names.decode().split("\0"))}
    disk = {p: b for p, b in disk.items() if (repo / p).exists()}
    return tree == disk


def test_clean_run(git_repo: Path, client, tmp_path: Path, monkeypatch) -> None:
    git(git_repo, "remote", "add", "origin", f"https://ci-bot:{TOKEN}@git.example.com/team/p.git")
    monkeypatch.chdir(git_repo)
    with mltrail.start_run(experiment="provenance") as trail:
        trail.log_params({"lr": 0.1})
    run = client.get_run(trail.run_id)
    tags = run.data.tags
    head = git(git_repo, "rev-parse", "HEAD")
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mlflow.source.git.branch"] == "main"
    assert tags["mlflow.source.git.repoURL"] == "https://git.example.com/team/p.git"
    assert tags["mltrail.git.dirty"] == "false"
    assert "mltrail.git.snapshot" not in tags and "mltrail.git.unavailable" not in tags
    assert tags["mltrail.dvc.unavailable"] == "not a DVC repository (no .dvc folder)"
    assert artifacts(client, trail.run_id) == {
        "mltrail/params.json",
        "mltrail/provenance.json",
        "mltrail/requirements.txt",
    }
    record = record_of(client, trail.run_id, tmp_path)
    assert record["schema_version"] == 1 and record["run_id"] == trail.run_id
    assert record["complete"] is True and record["errors"] == []
    assert record["git"]["commit"] == head and record["git"]["dirty"] is False
    assert record["git"]["diff"] is None and record["git"]["snapshot"] is None
    assert record["environment"]["python"]["version"] == sys.version.split()[0]
    assert record["environment"]["versions"]["mlflow"] == metadata.version("mlflow")
    packages = [line for line in requirements_lines(client, trail.run_id) if line[:1] != "#"]
    assert record["environment"]["packages"] == len(packages) > 10
    assert record["fingerprint"]["value"] == tags["mltrail.fingerprint"]
    assert record["timing"]["calling_thread_seconds"] > 0
    requirements = requirements_lines(client, trail.run_id)
    assert f"mlflow=={metadata.version('mlflow')}" in requirements
    assert git(git_repo, "for-each-ref", "refs/mltrail") == ""
    assert TOKEN not in json.dumps(record)


def test_dirty_run_diff_snapshot_and_untouched_workspace(
    git_repo: Path, client, tmp_path: Path, monkeypatch
) -> None:
    (git_repo / "weights.bin").write_bytes(b"\x00\x01")
    git(git_repo, "add", "weights.bin")
    git(git_repo, "commit", "-q", "-m", "weights")
    (git_repo / "weights.bin").write_bytes(b"\x00\x01\x02\xff")
    (git_repo / "train.py").write_text(f"print('train')\nlr = 0.5\nGITHUB_TOKEN = '{TOKEN}'\n")
    (git_repo / "features.py").write_text("FEATURES = ['a', 'b']\n")
    git_dir = git_repo / ".git"
    before = (
        (git_dir / "index").read_bytes(),
        git(git_repo, "status", "--porcelain"),
        git(git_repo, "branch", "-a"),
        git(git_repo, "stash", "list"),
    )
    monkeypatch.chdir(git_repo)
    with mltrail.start_run(experiment="provenance") as trail:
        assert trail.provenance.wait(60)
        trail.flush()
        # The background results are on the run while it is still running.
        running = client.get_run(trail.run_id)
        assert running.info.status == "RUNNING"
        assert "mltrail.git.snapshot" in running.data.tags
    tags = client.get_run(trail.run_id).data.tags
    head = git(git_repo, "rev-parse", "HEAD")
    assert tags["mltrail.git.dirty"] == "true" and tags["mlflow.source.git.commit"] == head
    snapshot = tags["mltrail.git.snapshot"]
    assert git(git_repo, "rev-parse", f"refs/mltrail/runs/{trail.run_id}") == snapshot
    assert git(git_repo, "rev-parse", f"{snapshot}^") == head
    assert tree_matches_worktree(git_repo, snapshot)
    assert git(git_repo, "show", f"{snapshot}:features.py") == "FEATURES = ['a', 'b']"
    after = (
        (git_dir / "index").read_bytes(),
        git(git_repo, "status", "--porcelain"),
        git(git_repo, "branch", "-a"),
        git(git_repo, "stash", "list"),
    )
    assert after == before
    diff = artifact(client, trail.run_id, "mltrail/git.diff", tmp_path)
    assert "+lr = 0.5" in diff and "Binary files a/weights.bin and b/weights.bin differ" in diff
    assert TOKEN not in diff and "GITHUB_TOKEN = '***" in diff
    record = record_of(client, trail.run_id, tmp_path)
    full = raw_git(git_repo, "diff", "--no-color", "--full-index", "--no-renames", "HEAD")
    assert record["git"]["diff"]["sha256"] == hashlib.sha256(full).hexdigest()
    assert record["git"]["diff"]["binary_files"] == ["weights.bin"]
    assert record["git"]["untracked"] == ["features.py"]
    assert record["git"]["snapshot"]["commit"] == snapshot
    assert record["git"]["snapshot"]["ref"] == f"refs/mltrail/runs/{trail.run_id}"


def test_identical_trees_share_one_snapshot_commit(git_repo: Path, client, monkeypatch) -> None:
    (git_repo / "train.py").write_text("lr = 0.1\n")
    (git_repo / "notes.txt").write_text("untracked\n")
    monkeypatch.chdir(git_repo)

    def snapshot_of_a_run() -> tuple[str, str]:
        with mltrail.start_run(experiment="shared-snapshot", system_metrics=False) as trail:
            assert trail.provenance.wait(60)
        tag = client.get_run(trail.run_id).data.tags["mltrail.git.snapshot"]
        assert git(git_repo, "rev-parse", f"refs/mltrail/runs/{trail.run_id}") == tag
        return tag, trail.run_id

    first, first_run = snapshot_of_a_run()
    second, _ = snapshot_of_a_run()
    assert second == first  # same tree, same parent: one commit, under both runs' refs
    # An untracked file deleted and a tracked one changed: a new snapshot, exactly the tree.
    (git_repo / "notes.txt").unlink()
    (git_repo / "train.py").write_text("lr = 0.2\n")
    third, _ = snapshot_of_a_run()
    assert third != first
    assert tree_matches_worktree(git_repo, third)
    assert git(git_repo, "show", f"{third}:train.py") == "lr = 0.2"
    assert "notes.txt" not in git(git_repo, "ls-tree", "--name-only", third)
    assert git(git_repo, "show", f"{first}:notes.txt") == "untracked"
    assert git(git_repo, "rev-parse", f"refs/mltrail/runs/{first_run}") == first


def test_capture_options(git_repo: Path, client, tmp_path: Path, monkeypatch) -> None:
    (git_repo / "train.py").write_text("".join(f"step {i}\n" for i in range(500)))
    monkeypatch.chdir(git_repo)
    with mltrail.start_run(experiment="options", capture=False) as off:
        pass
    assert not any(
        k.startswith(("mltrail.git", "mltrail.dvc")) for k in client.get_run(off.run_id).data.tags
    )
    assert "mltrail/provenance.json" not in artifacts(client, off.run_id)
    with mltrail.start_run(experiment="options", snapshot=False, max_diff_bytes=300) as run:
        pass
    tags = client.get_run(run.run_id).data.tags
    assert tags["mltrail.git.dirty"] == "true" and "mltrail.git.snapshot" not in tags
    assert git(git_repo, "for-each-ref", "refs/mltrail") == ""
    diff = artifact(client, run.run_id, "mltrail/git.diff", tmp_path)
    assert "# mltrail: diff truncated" in diff and len(diff) < 500
    record = record_of(client, run.run_id, tmp_path)
    assert record["git"]["diff"]["truncated"] is True
    assert record["git"]["diff"]["bytes"] > 300


def test_fingerprint(git_repo: Path, client, monkeypatch) -> None:
    monkeypatch.chdir(git_repo)
    (git_repo / "extra.py").write_text("x = 1\n")

    def fingerprint(**params) -> str:
        with mltrail.start_run(experiment="fingerprint", system_metrics=False) as trail:
            trail.log_params(params)
        return client.get_run(trail.run_id).data.tags["mltrail.fingerprint"]

    first = fingerprint(lr=0.1)
    assert fingerprint(lr=0.1) == first  # same code, data and params
    assert fingerprint(lr=0.2) != first  # params changed
    (git_repo / "train.py").write_text("print('changed')\n")
    changed_code = fingerprint(lr=0.1)
    assert changed_code != first
    (git_repo / "extra.py").write_text("x = 2\n")  # untracked contents are code too
    assert fingerprint(lr=0.1) not in {first, changed_code}


def test_outside_any_repository(client, tmp_path: Path) -> None:
    with mltrail.start_run(experiment="bare") as trail:
        trail.log_params({"seed": 1})
    tags = client.get_run(trail.run_id).data.tags
    assert tags["mltrail.git.unavailable"] == "not inside a git repository"
    assert tags["mltrail.dvc.unavailable"] == "not a DVC repository (no .dvc folder)"
    assert "mlflow.source.git.commit" not in tags and "mltrail.git.dirty" not in tags
    record = record_of(client, trail.run_id, tmp_path)
    assert record["git"]["available"] is False and record["dvc"]["available"] is False
    assert len(tags["mltrail.fingerprint"]) == 64


def test_repository_states(git_repo: Path, client, tmp_path: Path, monkeypatch) -> None:
    # A detached HEAD, from a subdirectory.
    head = git(git_repo, "rev-parse", "HEAD")
    git(git_repo, "checkout", "-q", "--detach")
    (git_repo / "src").mkdir()
    (git_repo / "src" / "model.py").write_text("model = 1\n")
    monkeypatch.chdir(git_repo / "src")
    with mltrail.start_run(experiment="states") as detached:
        pass
    tags = client.get_run(detached.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == head and "mlflow.source.git.branch" not in tags
    assert git(git_repo, "show", f"{tags['mltrail.git.snapshot']}:src/model.py") == "model = 1"

    # A repository git refuses for its owner: the commit is still read, the reason recorded.
    monkeypatch.setenv("GIT_TEST_ASSUME_DIFFERENT_OWNER", "1")
    with mltrail.start_run(experiment="states") as refused:
        pass
    monkeypatch.delenv("GIT_TEST_ASSUME_DIFFERENT_OWNER")
    tags = client.get_run(refused.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == head
    assert "dubious ownership" in tags["mltrail.git.unavailable"]
    assert "mltrail.git.dirty" not in tags and "mltrail.git.snapshot" not in tags

    # No git executable at all.
    empty = tmp_path / "nobin"
    empty.mkdir()
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(empty))
    with mltrail.start_run(experiment="states") as nogit:
        pass
    monkeypatch.setenv("PATH", path)
    tags = client.get_run(nogit.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mltrail.git.unavailable"].startswith("the git executable was not found")


def test_slow_git_status_moves_to_the_background(
    git_repo: Path, client, tmp_path: Path, monkeypatch
) -> None:
    # A file-system monitor hook that takes its time: every `git status` waits for it.
    hook = tmp_path / "slow-fsmonitor"
    hook.write_text("#!/bin/sh\nsleep 1.5\n")
    hook.chmod(0o755)
    git(git_repo, "config", "core.fsmonitor", str(hook))
    (git_repo / "train.py").write_text("print('changed')\n")
    monkeypatch.setattr(provenance, "CALLING_TIMEOUT", 0.5)
    monkeypatch.chdir(git_repo)
    with mltrail.start_run(experiment="slow") as trail:
        pass
    tags = client.get_run(trail.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == git(git_repo, "rev-parse", "HEAD")
    assert tags["mltrail.git.dirty"] == "true" and "mltrail.git.unavailable" not in tags
    assert git(git_repo, "show", f"{tags['mltrail.git.snapshot']}:train.py") == "print('changed')"
    record = record_of(client, trail.run_id, tmp_path)
    assert record["git"]["status_deferred"] is True


def test_repository_without_commits(tmp_path: Path, client, monkeypatch) -> None:
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text("print('first version')\n")
    monkeypatch.chdir(repo)
    with mltrail.start_run(experiment="states") as trail:
        pass
    tags = client.get_run(trail.run_id).data.tags
    assert "mlflow.source.git.commit" not in tags
    assert tags["mltrail.git.unavailable"] == "the repository has no commits yet"
    assert tags["mltrail.git.dirty"] == "true"
    snapshot = tags["mltrail.git.snapshot"]
    assert git(repo, "rev-list", "--parents", "-n", "1", snapshot) == snapshot  # no parent
    assert git(repo, "show", f"{snapshot}:train.py") == "print('first version')"
    assert git(repo, "branch", "--list") == ""


def test_store_inside_the_repository_is_not_code(
    git_repo: Path, template_db: Path, client, monkeypatch
) -> None:
    shutil.copy(template_db, git_repo / "mlflow.db")
    monkeypatch.chdir(git_repo)
    uri = f"sqlite:///{git_repo / 'mlflow.db'}"
    with mltrail.start_run(experiment="inside", tracking_uri=uri) as first:
        pass
    with mltrail.start_run(experiment="inside", tracking_uri=uri) as second:
        pass
    from mlflow.tracking import MlflowClient

    inside = MlflowClient(uri)
    assert (git_repo / "mlartifacts").is_dir()
    for trail in (first, second):
        tags = inside.get_run(trail.run_id).data.tags
        assert tags["mltrail.git.dirty"] == "false"
        assert "mltrail.git.snapshot" not in tags


def test_files_the_training_wrote_before_its_run_opened_are_not_code(
    git_repo: Path, client, tmp_path: Path, monkeypatch
) -> None:
    """A run opened seconds into its training (by mltrail's recorder process, once warm) reads
    the tree as it was at the training's start: the checkpoints written since are outputs."""
    import time

    from mltrail.recording.trail import RUN_START_TIME

    monkeypatch.chdir(git_repo)
    (git_repo / "prepare.py").write_text("x = 1\n")  # untracked code, from before the training
    began = time.time()
    (git_repo / "ckpt").mkdir()
    (git_repo / "ckpt" / "epoch=0.ckpt").write_bytes(b"weights")
    os.utime(git_repo / "prepare.py", (began - 5, began - 5))
    token = RUN_START_TIME.set(int(began * 1000))
    try:
        with mltrail.start_run(experiment="outputs", system_metrics=False) as trail:
            pass
    finally:
        RUN_START_TIME.reset(token)
    record = record_of(client, trail.run_id, tmp_path)
    assert record["git"]["untracked"] == ["prepare.py"]
    assert record["git"]["outputs"] == ["ckpt/epoch=0.ckpt"]
    assert record["git"]["snapshot"]["skipped"] == []  # nothing a restore owes
    snapshot = client.get_run(trail.run_id).data.tags["mltrail.git.snapshot"]
    assert git(git_repo, "show", f"{snapshot}:prepare.py") == "x = 1"
    listed = git(git_repo, "ls-tree", "-r", "--name-only", snapshot)
    assert "ckpt/epoch=0.ckpt" not in listed.split()


def test_resume_records_what_changed(git_repo: Path, client, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(git_repo)
    with mltrail.start_run(experiment="resume") as first:
        pass
    head = git(git_repo, "rev-parse", "HEAD")
    (git_repo / "train.py").write_text("print('fixed a bug before resuming')\n")
    with mltrail.start_run(run_id=first.run_id) as resumed:
        pass
    tags = client.get_run(first.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mltrail.git.dirty"] == "false"  # the first start is kept
    assert tags["mltrail.resume.1.git.dirty"] == "true"
    assert tags["mltrail.resume.1.changed"] == "code"
    assert tags["mltrail.resume.1.git.snapshot"] == git(
        git_repo, "rev-parse", f"refs/mltrail/runs/{first.run_id}-resume-1"
    )
    names = {a.path for a in client.list_artifacts(first.run_id, "mltrail/resume-1")}
    assert "mltrail/resume-1/provenance.json" in names and "mltrail/resume-1/git.diff" in names
    assert record_of(client, first.run_id, tmp_path)["resume"] == 0
    assert resumed.run_id == first.run_id


def test_entry_script_finds_its_repository(
    git_repo: Path, module_store: str, client, tmp_path: Path
) -> None:
    script = git_repo / "jobs" / "train.py"
    script.parent.mkdir()
    script.write_text(
        "import mltrail\n"
        "with mltrail.start_run(experiment='script', system_metrics=False) as trail:\n"
        "    print(trail.run_id)\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=elsewhere,
        env={**ENV, "MLFLOW_TRACKING_URI": module_store},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip().splitlines()[-1]
    tags = client.get_run(run_id).data.tags
    assert tags["mlflow.source.git.commit"] == git(git_repo, "rev-parse", "HEAD")
    record = record_of(client, run_id, tmp_path)
    assert record["git"]["found_from"] == "script"
    assert record["environment"]["command"]["entry_script"] == str(script)


# --- DVC -------------------------------------------------------------------------------------------


def dvc(repo: Path, *commands: list[str]) -> None:
    """Run DVC commands (real DVC, its own CLI) in one interpreter: one start-up for all."""
    code = (
        "import sys\n"
        "from dvc.cli import main\n"
        f"for args in {[list(c) for c in commands]!r}:\n"
        "    if main(args):\n"
        "        sys.exit(f'dvc {args} failed')\n"
    )
    sh(repo, sys.executable, "-c", code)


@pytest.fixture(scope="module")
def dvc_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("dvcrepo")
    repo = base / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "data.csv").write_text("x,y\n1,2\n")
    (repo / "images").mkdir()
    for i in range(3):
        (repo / "images" / f"{i}.txt").write_text(f"image {i}\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  count:\n"
        f"    cmd: {sys.executable} -c \"open('count.txt','w').write(str(len(open('data.csv').read())))\"\n"
        "    deps: [data.csv]\n    outs: [count.txt]\n"
    )
    dvc(
        repo,
        ["init", "-q"],
        ["remote", "add", "-d", "storage", str(base / "remote")],
        ["add", "-q", "data.csv", "images"],
        ["repro", "-q"],
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "data")
    return repo


def test_dvc_outputs_are_dataset_inputs(
    dvc_template: Path, client, tmp_path: Path, monkeypatch
) -> None:
    import yaml

    repo = tmp_path / "repo"
    shutil.copytree(dvc_template, repo, symlinks=True)
    monkeypatch.chdir(repo)
    with mltrail.start_run(experiment="dvc") as clean:
        clean.log_params({"lr": 0.1})
    run = client.get_run(clean.run_id)
    commit = git(repo, "rev-parse", "HEAD")
    assert run.data.tags["mltrail.dvc.data_dirty"] == "false"
    assert run.data.tags["mltrail.dvc.outputs"] == "3"
    assert run.data.tags["mltrail.git.dirty"] == "false"
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["count.txt", "data.csv", "images"]
    expected = {
        "data.csv": yaml.safe_load((repo / "data.csv.dvc").read_text())["outs"][0]["md5"],
        "images": yaml.safe_load((repo / "images.dvc").read_text())["outs"][0]["md5"],
        "count.txt": yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["count"]["outs"][0][
            "md5"
        ],
    }
    for name, digest in expected.items():
        dataset = inputs[name].dataset
        assert dataset.digest == digest and dataset.source_type == "dvc"
        source = json.loads(dataset.source)
        assert source["path"] == name and source["git_commit"] == commit
        assert source["remote"] == "storage" and source["remote_url"] == str(
            dvc_template.parent / "remote"
        )
        assert {t.key: t.value for t in inputs[name].tags}["mlflow.data.context"] == "dvc"
    assert inputs["images"].dataset.digest.endswith(".dir")
    record = record_of(client, clean.run_id, tmp_path)
    assert record["dvc"]["data_status"]["dirty"] == "false"

    # Data changed after `dvc add`: the run is not reproducible from the commit.
    (repo / "images" / "3.txt").write_text("a new image\n")
    with mltrail.start_run(experiment="dvc") as changed:
        changed.log_params({"lr": 0.1})
    run = client.get_run(changed.run_id)
    assert run.data.tags["mltrail.dvc.data_dirty"] == "true"
    assert (
        run.data.tags["mltrail.fingerprint"]
        != client.get_run(clean.run_id).data.tags["mltrail.fingerprint"]
    )
    record = record_of(client, changed.run_id, tmp_path)
    assert record["dvc"]["data_status"]["outputs"]["images"] == "modified"
    assert record["dvc"]["data_status"]["outputs"]["data.csv"] == "unchanged"
    assert (repo / "images.dvc").read_text() == (dvc_template / "images.dvc").read_text()


def test_capture_run_is_off_for_disabled_trails() -> None:
    class Passive:
        enabled = False
        run_id = None

    assert provenance.capture_run(Passive()) is None
