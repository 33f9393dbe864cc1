"""snapshot_data: modified DVC data stored in the DVC cache without touching the user's files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mltrail
from mltrail.capture import datasnap
from mltrail.cli import main

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "DVC_NO_ANALYTICS": "1",
}


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=repo, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def cached(repo: Path, value: str) -> Path:
    return repo / ".dvc" / "cache" / "files" / "md5" / value[:2] / value[2:]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git + DVC repo: a file and a folder added with `dvc add`, a stage output in dvc.lock."""
    from dvc.repo import Repo

    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    Repo.init(str(repo)).close()
    (repo / "data.csv").write_text("x,y\n1,2\n")
    (repo / "images").mkdir()
    for i in range(2):
        (repo / "images" / f"{i}.txt").write_text(f"image {i}\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  count:\n"
        f"    cmd: {sys.executable} -c \"open('count.txt','w').write('2')\"\n"
        "    outs: [count.txt]\n"
    )
    with datasnap.dvc_repo(repo) as dvc:
        dvc.add([str(repo / "data.csv"), str(repo / "images")])
        dvc.reproduce(f"{repo / 'dvc.yaml'}:count")
    (repo / "train.py").write_text("print('train')\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "data")
    monkeypatch.chdir(repo)
    return repo


def test_modified_data_is_stored_and_recorded(
    project: Path, client, tmp_path: Path, capsys
) -> None:
    repo = project
    records = {
        name: (repo / name).read_bytes() for name in ("data.csv.dvc", "images.dvc", "dvc.lock")
    }
    index = (repo / ".git" / "index").read_bytes()
    (repo / "data.csv").write_text("x,y\n1,2\n3,4\n")
    (repo / "images" / "2.txt").write_text("a new image\n")
    (repo / "count.txt").write_text("3")
    stats = {p: os.stat(repo / p) for p in ("data.csv", "images/2.txt", "count.txt")}
    with mltrail.start_run(experiment="datasnap", snapshot_data=True, system_metrics=False) as run:
        run.log_params({"lr": 0.1})
    result = client.get_run(run.run_id)
    tags = result.data.tags
    assert tags["mltrail.dvc.data_dirty"] == "true"
    assert tags["mltrail.dvc.data_snapshot"] == "true"
    assert tags["mltrail.git.dirty"] == "false"  # the data is git-ignored; the code is clean

    # Nothing of the user's changed: .dvc files, dvc.lock, index, the data files themselves.
    assert {n: (repo / n).read_bytes() for n in records} == records
    assert (repo / ".git" / "index").read_bytes() == index
    for path, before in stats.items():
        after = os.stat(repo / path)
        assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (
            before.st_ino,
            before.st_mtime_ns,
            before.st_mode,
        )
    assert git(repo, "status", "--porcelain") == ""

    # The data is in the DVC cache under its content hash.
    new_csv = md5(b"x,y\n1,2\n3,4\n")
    assert cached(repo, new_csv).read_bytes() == b"x,y\n1,2\n3,4\n"
    assert cached(repo, md5(b"3")).read_bytes() == b"3"
    record = json.loads(
        Path(
            client.download_artifacts(run.run_id, "mltrail/provenance.json", str(tmp_path))
        ).read_text()
    )
    stored = record["dvc"]["data_snapshot"]["outputs"]
    assert set(stored) == {"data.csv", "images", "count.txt"}
    assert stored["data.csv"]["hash"] == new_csv and stored["data.csv"]["size"] == 12
    assert stored["images"]["isdir"] and stored["images"]["nfiles"] == 3
    tree = json.loads(cached(repo, stored["images"]["hash"]).read_text())
    assert {e["relpath"]: e["md5"] for e in tree}["2.txt"] == md5(b"a new image\n")
    for entry in tree:
        assert cached(repo, entry["md5"]).exists()
    assert record["dvc"]["data_snapshot"]["failed"] == {}

    # The snapshot commit: HEAD's code, with .dvc/dvc.lock copies that record the stored data.
    snapshot = tags["mltrail.git.snapshot"]
    assert git(repo, "rev-parse", f"refs/mltrail/runs/{run.run_id}") == snapshot
    assert git(repo, "rev-parse", f"{snapshot}^") == git(repo, "rev-parse", "HEAD")
    changed = git(repo, "diff", "--name-only", "HEAD", snapshot).split()
    assert changed == ["data.csv.dvc", "dvc.lock", "images.dvc"]
    out = yaml.safe_load(git(repo, "show", f"{snapshot}:data.csv.dvc"))["outs"][0]
    assert out == {"md5": new_csv, "size": 12, "hash": "md5", "path": "data.csv"}
    lock = yaml.safe_load(git(repo, "show", f"{snapshot}:dvc.lock"))
    assert lock["stages"]["count"]["outs"][0]["md5"] == md5(b"3")
    assert (
        lock["stages"]["count"]["cmd"]
        == yaml.safe_load(records["dvc.lock"])["stages"]["count"]["cmd"]
    )
    images = yaml.safe_load(git(repo, "show", f"{snapshot}:images.dvc"))["outs"][0]
    assert images["md5"] == stored["images"]["hash"] and images["nfiles"] == 3
    files = record["dvc"]["data_snapshot"]["files"]
    assert files["data.csv.dvc"]["snapshot"] == git(repo, "rev-parse", f"{snapshot}:data.csv.dvc")
    assert files["data.csv.dvc"]["original"] == git(repo, "rev-parse", "HEAD:data.csv.dvc")
    assert record["git"]["snapshot"]["commit"] == snapshot

    # Dataset inputs: the recorded versions, and the stored ones with the context dvc.snapshot.
    inputs = {
        (d.dataset.name, {t.key: t.value for t in d.tags}["mlflow.data.context"]): d.dataset
        for d in result.inputs.dataset_inputs
    }
    assert inputs[("data.csv", "dvc.snapshot")].digest == new_csv
    assert (
        inputs[("data.csv", "dvc")].digest
        == yaml.safe_load(records["data.csv.dvc"])["outs"][0]["md5"]
    )

    # `mltrail show` tells the recorded version from the stored one.
    assert main(["show", run.run_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["data"]["datasets"]
    contexts = {(d["name"], d["context"]): d["digest"] for d in shown}
    assert contexts[("data.csv", "dvc.snapshot")] == new_csv
    assert ("data.csv", "dvc") in contexts
    assert main(["show", run.run_id]) == 0
    shown = capsys.readouterr().out  # a table: columns as wide as their longest value
    assert re.search(
        rf"^  data\.csv +{new_csv} +\[used: modified, stored by mltrail\]$", shown, re.M
    )

    # The data the run used, as restore sees it.
    used = {o.path: o for o in datasnap.run_outputs(record)}
    assert used["data.csv"].hash == new_csv and used["data.csv"].snapshot
    assert used["data.csv"].recorded == yaml.safe_load(records["data.csv.dvc"])["outs"][0]["md5"]

    # Plain git + DVC restore the stored data from the snapshot commit too.
    worktree = tmp_path / "plain"
    git(repo, "worktree", "add", "-q", "--detach", str(worktree), snapshot)
    datasnap.share_cache(worktree, repo)
    with datasnap.dvc_repo(worktree) as dvc:
        dvc.checkout()
    assert (worktree / "data.csv").read_text() == "x,y\n1,2\n3,4\n"
    assert (worktree / "images" / "2.txt").read_text() == "a new image\n"
    assert (worktree / "count.txt").read_text() == "3"


def test_dirty_code_and_data_in_one_snapshot(project: Path, client) -> None:
    repo = project
    (repo / "train.py").write_text("print('tuned')\n")
    (repo / "notes.txt").write_text("idea\n")
    (repo / "data.csv").write_text("x,y\n5,6\n")
    with mltrail.start_run(experiment="datasnap", snapshot_data=True, system_metrics=False) as run:
        pass
    snapshot = client.get_run(run.run_id).data.tags["mltrail.git.snapshot"]
    assert git(repo, "show", f"{snapshot}:train.py") == "print('tuned')"
    assert git(repo, "show", f"{snapshot}:notes.txt") == "idea"
    recorded = yaml.safe_load(git(repo, "show", f"{snapshot}:data.csv.dvc"))["outs"][0]
    assert recorded["md5"] == md5(b"x,y\n5,6\n")
    assert git(repo, "rev-parse", f"{snapshot}^") == git(repo, "rev-parse", "HEAD")
    status = {line.strip() for line in git(repo, "status", "--porcelain").splitlines()}
    assert status == {"M train.py", "?? notes.txt"}  # the user's index and tree untouched


def test_without_the_option_nothing_is_stored(project: Path, client) -> None:
    (project / "data.csv").write_text("x,y\n7,8\n")
    with mltrail.start_run(experiment="datasnap", system_metrics=False) as run:
        pass
    tags = client.get_run(run.run_id).data.tags
    assert tags["mltrail.dvc.data_dirty"] == "true"
    assert "mltrail.dvc.data_snapshot" not in tags and "mltrail.git.snapshot" not in tags
    assert not cached(project, md5(b"x,y\n7,8\n")).exists()
    assert git(project, "for-each-ref", "refs/mltrail") == ""


def test_clean_data_needs_no_snapshot(project: Path, client, monkeypatch) -> None:
    monkeypatch.setenv("MLTRAIL_SNAPSHOT_DATA", "1")  # the environment variable works too
    with mltrail.start_run(experiment="datasnap", system_metrics=False) as run:
        pass
    tags = client.get_run(run.run_id).data.tags
    assert tags["mltrail.dvc.data_dirty"] == "false"
    assert "mltrail.dvc.data_snapshot" not in tags
    assert git(project, "for-each-ref", "refs/mltrail") == ""


def test_update_dvc_file_keeps_other_fields(tmp_path: Path) -> None:
    text = (
        "# comment\n"
        "outs:\n"
        "- md5: 0123456789abcdef0123456789abcdef.dir\n  size: 3\n  nfiles: 1\n"
        "  path: raw\n  desc: the raw folder\n  remote: backup\n"
        "- md5: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n  path: other.csv\n"
    )
    stored = {"sub/raw": {"hash": "b" * 32, "size": 9, "nfiles": None, "isdir": False}}
    updated = yaml.safe_load(datasnap.update_dvc_file(text, "sub/raw.dvc", stored, tmp_path))
    first, second = updated["outs"]
    assert first == {
        "md5": "b" * 32,
        "size": 9,
        "hash": "md5",
        "path": "raw",
        "desc": "the raw folder",
        "remote": "backup",
    }
    assert second == {"md5": "a" * 32, "path": "other.csv"}


def test_run_outputs_say_which_version_a_run_used() -> None:
    record = {
        "dvc": {
            "outputs": [
                {"path": "a.csv", "hash": "1" * 32, "hash_name": "md5", "remote": "r"},
                {"path": "b.csv", "hash": "2" * 32, "hash_name": "md5"},
                {"path": "c.csv", "hash": "3" * 32, "hash_name": "md5-dos2unix"},
                {"path": "d.csv", "hash": "4" * 32, "hash_name": "md5"},
                {"path": "e.csv", "hash": "5" * 32, "hash_name": "md5"},
            ],
            "data_status": {
                "outputs": {
                    "a.csv": "unchanged",
                    "b.csv": "modified",
                    "c.csv": "modified",
                    "d.csv": "deleted",
                },
                "workspace_hashes": {"b.csv": "6" * 32, "c.csv": "7" * 32},
            },
            "data_snapshot": {"outputs": {"c.csv": {"hash": "8" * 32}}},
        }
    }
    found = {o.path: o for o in datasnap.run_outputs(record)}
    assert (found["a.csv"].hash, found["a.csv"].status, found["a.csv"].remote) == (
        "1" * 32,
        "unchanged",
        "r",
    )
    assert (found["b.csv"].hash, found["b.csv"].recorded, found["b.csv"].snapshot) == (
        "6" * 32,
        "2" * 32,
        False,
    )
    assert (found["c.csv"].hash, found["c.csv"].hash_name, found["c.csv"].snapshot) == (
        "8" * 32,
        "md5",
        True,
    )
    assert found["c.csv"].recorded_hash_name == "md5-dos2unix"
    assert found["d.csv"].hash is None and found["d.csv"].status == "deleted"
    assert (found["e.csv"].hash, found["e.csv"].status) == ("5" * 32, "unknown")
