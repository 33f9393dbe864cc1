"""DVC capture on a real DVC repository: outputs from .dvc files and dvc.lock, the data check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mltrail.capture import dvc as dvc_capture

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "DVC_NO_ANALYTICS": "1",
}


def run(repo: Path, *args: str) -> str:
    result = subprocess.run(args, cwd=repo, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def dvc(repo: Path, *commands: list[str]) -> None:
    """Run DVC commands (real DVC, its own CLI) in one interpreter: one start-up for all."""
    code = (
        "import sys\n"
        "from dvc.cli import main\n"
        f"for args in {[list(c) for c in commands]!r}:\n"
        "    if main(args):\n"
        "        sys.exit(f'dvc {args} failed')\n"
    )
    run(repo, sys.executable, "-c", code)


def build_dvc_repo(repo: Path, remote: Path) -> None:
    """git + DVC: a file and a folder `dvc add`-ed, a one-stage pipeline run by `dvc repro`."""
    repo.mkdir()
    run(repo, "git", "init", "-q", "-b", "main")
    (repo / "data.csv").write_text("a,b\n1,2\n3,4\n")
    images = repo / "images"
    (images / "cats").mkdir(parents=True)
    for i in range(5):
        (images / "cats" / f"{i}.txt").write_text(f"cat {i}\n")
    (images / "readme.md").write_text("images\n")
    (repo / "prepare.py").write_text(
        "import pathlib\n"
        "rows = pathlib.Path('data.csv').read_text().splitlines()\n"
        "pathlib.Path('prepared').mkdir(exist_ok=True)\n"
        "pathlib.Path('prepared/rows.txt').write_text(str(len(rows)))\n"
        "pathlib.Path('model.txt').write_text('model of ' + str(len(rows)))\n"
    )
    (repo / "dvc.yaml").write_text(
        "stages:\n"
        "  prepare:\n"
        f"    cmd: {sys.executable} prepare.py\n"
        "    deps: [data.csv, prepare.py]\n"
        "    outs: [prepared, model.txt]\n"
    )
    dvc(
        repo,
        ["init", "-q"],
        ["remote", "add", "-d", "storage", str(remote)],
        ["add", "-q", "data.csv", "images"],
        ["repro", "-q"],
    )
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "data and pipeline")


@pytest.fixture(scope="module")
def dvc_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("dvc")
    repo = base / "repo"
    build_dvc_repo(repo, base / "remote")
    return repo


@pytest.fixture
def dvc_repo(dvc_template: Path, tmp_path: Path) -> Path:
    """A private copy (new inodes, so DVC's state has no entries for it: files are read)."""
    repo = tmp_path / "repo"
    shutil.copytree(dvc_template, repo, symlinks=True)
    return repo


def read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_outputs_of_dvc_files_and_dvc_lock(dvc_template: Path) -> None:
    info = dvc_capture.inspect(dvc_template, str(dvc_template))
    assert info.root == str(dvc_template) and info.unavailable is None
    assert info.files == ["data.csv.dvc", "dvc.lock", "images.dvc"]
    assert info.default_remote == "storage"
    remote_url = str(dvc_template.parent / "remote")
    assert info.remotes == {"storage": remote_url}
    outs = {o.path: o for o in info.outputs}
    assert sorted(outs) == ["data.csv", "images", "model.txt", "prepared"]
    data = read_yaml(dvc_template / "data.csv.dvc")["outs"][0]
    assert outs["data.csv"].hash == data["md5"] and outs["data.csv"].hash_name == "md5"
    assert outs["data.csv"].dvc_format == "3" and outs["data.csv"].size == data["size"]
    assert not outs["data.csv"].isdir and outs["data.csv"].source == "data.csv.dvc"
    images = read_yaml(dvc_template / "images.dvc")["outs"][0]
    assert outs["images"].hash == images["md5"] and outs["images"].hash.endswith(".dir")
    assert outs["images"].isdir and outs["images"].nfiles == 6
    lock = read_yaml(dvc_template / "dvc.lock")["stages"]["prepare"]["outs"]
    by_path = {o["path"]: o for o in lock}
    assert outs["prepared"].hash == by_path["prepared"]["md5"] and outs["prepared"].isdir
    assert outs["model.txt"].stage == "prepare" and outs["model.txt"].source == "dvc.lock"
    assert all(o.remote == "storage" and o.remote_url == remote_url for o in outs.values())
    tags = info.tags()
    assert tags["mltrail.dvc.outputs"] == "4" and len(tags["mltrail.dvc.data_hash"]) == 32


def test_dataset_input_spec(dvc_template: Path) -> None:
    import json

    info = dvc_capture.inspect(dvc_template, str(dvc_template))
    images = next(o for o in info.outputs if o.path == "images")
    spec = images.dataset("abc123", "https://git.example.com/p.git")
    assert spec["name"] == "images" and spec["digest"] == images.hash
    assert len(spec["digest"]) == 36  # an md5 and ".dir": exactly MLflow's digest limit
    source = json.loads(spec["source"])
    assert source["path"] == "images" and source["remote"] == "storage"
    assert source["git_commit"] == "abc123" and source["dvc_file"] == "images.dvc"
    assert json.loads(spec["profile"])["nfiles"] == 6


def test_dvc2_format_and_subdirectory_dvc_files(dvc_repo: Path) -> None:
    legacy = dvc_repo / "legacy"
    legacy.mkdir()
    (legacy / "old.csv.dvc").write_text(
        "md5: 11111111111111111111111111111111\n"
        "outs:\n"
        "- md5: 0123456789abcdef0123456789abcdef\n"
        "  path: old.csv\n"
        "  remote: archive\n"
    )
    (legacy / "broken.dvc").write_text("outs: [unclosed\n")
    info = dvc_capture.inspect(legacy, str(dvc_repo))
    old = next(o for o in info.outputs if o.path == "legacy/old.csv")
    assert old.hash == "0123456789abcdef0123456789abcdef"
    assert old.hash_name == "md5-dos2unix" and old.dvc_format == "2"
    assert old.remote == "archive" and old.remote_url is None
    assert any(e.startswith("legacy/broken.dvc") for e in info.errors)
    assert len(info.outputs) == 5  # the broken file does not hide the others


def test_stage_working_directory_in_dvc_lock(tmp_path: Path) -> None:
    repo = tmp_path / "wdir"
    (repo / ".dvc").mkdir(parents=True)
    (repo / "dvc.yaml").write_text(
        "stages:\n  train:\n    wdir: src\n    cmd: x\n    outs: [../models/m.pkl]\n"
    )
    (repo / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  train:\n    cmd: x\n    outs:\n"
        "    - path: ../models/m.pkl\n      hash: md5\n"
        "      md5: 0123456789abcdef0123456789abcdef\n      size: 3\n"
    )
    info = dvc_capture.inspect(repo)  # no git: the files are found by walking
    assert [o.path for o in info.outputs] == ["models/m.pkl"]


def test_not_a_dvc_repository(git_repo: Path) -> None:
    info = dvc_capture.inspect(git_repo, str(git_repo))
    assert info.root is None and info.outputs == []
    assert info.tags() == {"mltrail.dvc.unavailable": "not a DVC repository (no .dvc folder)"}


def snapshot_of(repo: Path) -> dict[str, tuple[int, int]]:
    """mtime and size of every file outside the data, to prove the check wrote nothing."""
    found = {}
    for folder, _dirs, files in os.walk(repo):
        for name in files:
            path = Path(folder, name)
            st = path.stat()
            found[str(path.relative_to(repo))] = (st.st_mtime_ns, st.st_size)
    return found


def test_unchanged_data_uses_dvc_state_and_writes_nothing(dvc_template: Path) -> None:
    from dvc.repo import Repo

    info = dvc_capture.inspect(dvc_template, str(dvc_template))
    with Repo(str(dvc_template)) as repo:
        expected_state = Path(repo.site_cache_dir)
    # Where DVC keeps the state of this repository: the same rule as DVC itself.
    assert dvc_capture.site_cache_dir(dvc_template) == expected_state
    state_db = expected_state / "hashes" / "local" / "cache.db"
    before, db_before = snapshot_of(dvc_template), state_db.stat().st_mtime_ns
    reader = dvc_capture.StateReader.open(dvc_template)
    assert reader is not None
    stats = {str(p): p.stat() for p in (dvc_template / "images" / "cats").iterdir()}
    assert len(reader.lookup(stats, "md5")) == 5  # every file known: none is read again
    reader.close()
    status = dvc_capture.data_status(info)
    assert status.dirty == "false"
    assert set(status.outputs.values()) == {"unchanged"}
    assert status.workspace_hashes == {o.path: o.hash for o in info.outputs}
    assert snapshot_of(dvc_template) == before and state_db.stat().st_mtime_ns == db_before


def test_state_key_is_dvcs(dvc_template: Path) -> None:
    from dvc_data.fsutils import _localfs_info
    from dvc_data.hashfile.state import _checksum

    path = dvc_template / "data.csv"
    assert dvc_capture.state_key(path.stat()) == _checksum(_localfs_info(str(path)))


def test_modified_data_after_dvc_add(dvc_repo: Path) -> None:
    (dvc_repo / "data.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
    (dvc_repo / "images" / "cats" / "new.txt").write_text("a new cat\n")
    (dvc_repo / "images" / "readme.md").unlink()
    shutil.rmtree(dvc_repo / "prepared")
    before = snapshot_of(dvc_repo)
    info = dvc_capture.inspect(dvc_repo, str(dvc_repo))
    status = dvc_capture.data_status(info)
    assert status.dirty == "true"
    assert status.outputs == {
        "data.csv": "modified",
        "images": "modified",
        "model.txt": "unchanged",
        "prepared": "deleted",
    }
    assert snapshot_of(dvc_repo) == before
    # The workspace hashes are what DVC itself records for the new data.
    dvc(dvc_repo, ["add", "-q", "data.csv", "images"])
    added = dvc_capture.inspect(dvc_repo, str(dvc_repo))
    recorded = {o.path: o.hash for o in added.outputs}
    assert status.workspace_hashes["data.csv"] == recorded["data.csv"]
    assert status.workspace_hashes["images"] == recorded["images"]
    assert dvc_capture.data_status(added).outputs["images"] == "unchanged"


def test_dvcignore_rules_use_dvc_itself(dvc_repo: Path) -> None:
    (dvc_repo / ".dvcignore").write_text("*.tmp\n")
    (dvc_repo / "images" / "cats" / "scratch.tmp").write_text("ignored by DVC\n")
    info = dvc_capture.inspect(dvc_repo, str(dvc_repo))
    status = dvc_capture.data_status(info)
    assert status.outputs["images"] == "unchanged"  # the ignored file does not count
    (dvc_repo / "images" / "cats" / "0.txt").write_text("changed\n")
    assert dvc_capture.data_status(info).outputs["images"] == "modified"


def test_over_budget_is_unknown(dvc_repo: Path) -> None:
    info = dvc_capture.inspect(dvc_repo, str(dvc_repo))
    status = dvc_capture.data_status(info, budget=0)
    assert status.dirty == "unknown" and "budget" in status.reason
