"""Git capture and snapshots on real repositories: every state a user's checkout can be in."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mltrail.capture import git as git_capture
from mltrail.capture import snapshot

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def sh(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **IDENTITY},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def raw(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, check=True).stdout


def state_of(repo: Path) -> dict[str, object]:
    """Everything of the user's git state that capture must leave alone."""
    git_dir = Path(sh(repo, "rev-parse", "--absolute-git-dir"))
    index = git_dir / "index"
    return {
        "index": index.read_bytes() if index.exists() else None,
        "head": (git_dir / "HEAD").read_text(),
        "refs": sh(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads"),
        "stash": sh(repo, "stash", "list"),
        "status": sh(repo, "status", "--porcelain=v1", "--untracked-files=all"),
    }


def inspect(directory: Path, **kwargs) -> git_capture.GitInfo:
    return git_capture.inspect(dirs=[("cwd", directory)], **kwargs)


def tree_contents(repo: Path, commit: str) -> dict[str, tuple[str, bytes]]:
    entries = raw(repo, "ls-tree", "-r", "-z", commit).decode().split("\0")
    files = {}
    for entry in filter(None, entries):
        meta, path = entry.split("\t", 1)
        mode, _, sha = meta.split()
        files[path] = (mode, raw(repo, "cat-file", "blob", sha))
    return files


def worktree_contents(repo: Path) -> dict[str, tuple[str, bytes]]:
    """Tracked and untracked, non-ignored files as they are on disk."""
    listed = raw(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    files = {}
    for path in sorted(set(filter(None, listed.decode().split("\0")))):
        full = repo / path
        if full.is_symlink():
            files[path] = ("120000", os.readlink(full).encode())
        elif full.is_file():
            mode = "100755" if os.access(full, os.X_OK) else "100644"
            files[path] = (mode, full.read_bytes())
    return files


def make_dirty(repo: Path) -> None:
    (repo / "train.py").write_text("print('train')\nlr = 0.5\n")
    (repo / "notes.txt").write_text("untracked notes\n")
    (repo / "sub").mkdir()
    (repo / "sub" / "data.bin").write_bytes(bytes(range(256)) * 4)
    tool = repo / "sub" / "tool.sh"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o755)
    (repo / "link").symlink_to("train.py")
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "ignored.log").write_text("not part of the code\n")


def test_clean_repository(git_repo: Path) -> None:
    sh(git_repo, "remote", "add", "origin", "https://bob:s3cr3tpass@git.example.com/team/proj.git")
    info = inspect(git_repo)
    assert info.commit == sh(git_repo, "rev-parse", "HEAD")
    assert info.branch == "main"
    assert info.dirty is False and info.changed == [] and info.untracked == []
    assert info.root == str(git_repo) and not info.shallow and not info.worktree
    assert info.repo_url == "https://git.example.com/team/proj.git"
    assert info.unavailable is None
    assert info.tags() == {
        "mlflow.source.git.commit": info.commit,
        "mlflow.source.git.branch": "main",
        "mlflow.source.git.repoURL": "https://git.example.com/team/proj.git",
        "mltrail.git.dirty": "false",
    }


def test_dirty_file_and_untracked_files(git_repo: Path) -> None:
    make_dirty(git_repo)
    info = inspect(git_repo)
    assert info.dirty is True
    assert info.changed == [{"status": ".M", "path": "train.py"}]
    assert sorted(info.untracked) == [
        ".gitignore",
        "link",
        "notes.txt",
        "sub/data.bin",
        "sub/tool.sh",
    ]
    assert "ignored.log" not in info.untracked


def test_store_files_inside_the_repo_do_not_make_it_dirty(git_repo: Path) -> None:
    (git_repo / "mlflow.db").write_bytes(b"sqlite")
    (git_repo / "mlartifacts" / "1").mkdir(parents=True)
    (git_repo / "mlartifacts" / "1" / "a.txt").write_text("artifact")
    exclude = [str(git_repo / "mlflow.db"), str(git_repo / "mlartifacts")]
    info = inspect(git_repo, exclude=exclude)
    assert info.dirty is False
    assert sorted(info.excluded) == ["mlartifacts", "mlflow.db"]  # left out whole
    assert inspect(git_repo).dirty is True  # without the exclusion they are untracked files


def test_diff_of_tracked_changes(git_repo: Path) -> None:
    (git_repo / "blob.bin").write_bytes(b"\x00\x01\x02")
    sh(git_repo, "add", "blob.bin")
    sh(git_repo, "commit", "-q", "-m", "binary")
    (git_repo / "blob.bin").write_bytes(b"\x00\x01\x02\x03\xff")
    (git_repo / "train.py").write_text("print('train')\nAPI_KEY = 'not-really'\n")
    (git_repo / "README.md").unlink()
    (git_repo / "staged.py").write_text("x = 1\n")
    sh(git_repo, "add", "staged.py")
    info = inspect(git_repo)
    diff = git_capture.diff(info, max_bytes=1_000_000)
    full = raw(
        git_repo,
        "diff",
        "--no-color",
        "--no-ext-diff",
        "--no-renames",
        "--full-index",
        "HEAD",
    )
    assert diff.text.encode() == full
    assert diff.sha256 == hashlib.sha256(full).hexdigest() and diff.bytes == len(full)
    assert not diff.truncated
    assert diff.binary_files == ["blob.bin"]
    assert "Binary files a/blob.bin and b/blob.bin differ" in diff.text
    assert {f["path"]: (f["added"], f["deleted"]) for f in diff.files} == {
        "README.md": (0, 1),
        "blob.bin": (None, None),
        "staged.py": (1, 0),
        "train.py": (1, 0),
    }


def test_diff_is_capped_with_the_hash_of_the_whole(git_repo: Path) -> None:
    (git_repo / "train.py").write_text("".join(f"line {i}\n" for i in range(5000)))
    info = inspect(git_repo)
    diff = git_capture.diff(info, max_bytes=2000)
    full = raw(git_repo, "diff", "--no-color", "--full-index", "HEAD")
    assert diff.truncated and diff.bytes == len(full)
    assert diff.sha256 == hashlib.sha256(full).hexdigest()
    body, _, marker = diff.text.rstrip("\n").rpartition("\n")
    assert len(body) <= 2000 and full.decode().startswith(body)
    assert marker.startswith("# mltrail: diff truncated") and diff.sha256 in marker


def test_snapshot_is_the_working_tree_byte_for_byte(git_repo: Path) -> None:
    make_dirty(git_repo)
    (git_repo / "README.md").unlink()
    (git_repo / "staged.py").write_text("staged = True\n")
    sh(git_repo, "add", "staged.py")
    (git_repo / "staged.py").write_text("staged = 'and then changed again'\n")
    sh(git_repo, "stash", "list")
    before = state_of(git_repo)
    info = inspect(git_repo)
    snap = snapshot.create(info, snapshot.ref_name("run123"), "snapshot of run123")
    assert state_of(git_repo) == before
    assert sh(git_repo, "rev-parse", "refs/mltrail/runs/run123") == snap.commit
    assert sh(git_repo, "rev-parse", f"{snap.commit}^") == info.commit == snap.parent
    assert sh(git_repo, "rev-parse", f"{snap.commit}^{{tree}}") == snap.tree
    assert tree_contents(git_repo, snap.commit) == worktree_contents(git_repo)
    assert "ignored.log" not in tree_contents(git_repo, snap.commit)
    assert "README.md" not in tree_contents(git_repo, snap.commit)
    # Branches and the log the user sees are unchanged.
    assert sh(git_repo, "branch", "--list") == "* main"
    assert snap.commit not in sh(git_repo, "log", "--format=%H")


def test_snapshot_leaves_out_large_untracked_files_and_the_store(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot, "MAX_UNTRACKED_FILE_BYTES", 1000)
    (git_repo / "big.bin").write_bytes(b"x" * 5000)
    (git_repo / "small.txt").write_text("small\n")
    (git_repo / "mlflow.db").write_bytes(b"store")
    info = inspect(git_repo, exclude=[str(git_repo / "mlflow.db")])
    large = snapshot.large_untracked(info)
    assert large == ["big.bin"]
    snap = snapshot.create(info, snapshot.ref_name("r2"), "msg", exclude=large)
    files = tree_contents(git_repo, snap.commit)
    assert "small.txt" in files and "big.bin" not in files and "mlflow.db" not in files
    assert sorted(snap.skipped) == ["big.bin", "mlflow.db"]


def test_detached_head(git_repo: Path) -> None:
    first = sh(git_repo, "rev-parse", "HEAD")
    (git_repo / "train.py").write_text("v2\n")
    sh(git_repo, "commit", "-q", "-am", "second")
    sh(git_repo, "checkout", "-q", "--detach", first)
    (git_repo / "train.py").write_text("edited on a detached head\n")
    info = inspect(git_repo)
    assert info.detached and info.branch is None and info.commit == first
    assert "mlflow.source.git.branch" not in info.tags()
    snap = snapshot.create(info, snapshot.ref_name("detached"), "msg")
    assert sh(git_repo, "rev-parse", f"{snap.commit}^") == first
    assert tree_contents(git_repo, snap.commit) == worktree_contents(git_repo)
    assert sh(git_repo, "rev-parse", "HEAD") == first  # still detached at the same commit


def test_shallow_clone(git_repo: Path, tmp_path: Path) -> None:
    (git_repo / "train.py").write_text("v2\n")
    sh(git_repo, "commit", "-q", "-am", "second")
    clone = tmp_path / "clone"
    sh(tmp_path, "clone", "-q", "--depth", "1", git_repo.as_uri(), str(clone))
    (clone / "train.py").write_text("changed in the clone\n")
    info = inspect(clone)
    assert info.shallow and info.commit == sh(git_repo, "rev-parse", "HEAD")
    assert info.dirty and info.branch == "main"
    assert info.repo_url == git_repo.as_uri()
    assert info.tags()["mltrail.git.shallow"] == "true"
    assert git_capture.diff(info, 10_000).files[0]["path"] == "train.py"
    snap = snapshot.create(info, snapshot.ref_name("shallow"), "msg")
    assert tree_contents(clone, snap.commit) == worktree_contents(clone)


def test_repository_without_commits(tmp_path: Path) -> None:
    repo = tmp_path / "empty"
    repo.mkdir()
    sh(repo, "init", "-q", "-b", "trunk")
    (repo / "first.py").write_text("print('first')\n")
    (repo / "staged.py").write_text("staged\n")
    sh(repo, "add", "staged.py")
    before = state_of(repo)
    info = inspect(repo)
    assert info.unborn and info.commit is None and info.branch == "trunk"
    assert info.dirty and info.untracked == ["first.py"]
    assert info.unavailable == "the repository has no commits yet"
    diff = git_capture.diff(info, 10_000)
    assert [f["path"] for f in diff.files] == ["staged.py"]
    snap = snapshot.create(info, snapshot.ref_name("unborn"), "msg")
    assert snap.parent is None
    assert sh(repo, "rev-list", "--parents", "-n", "1", snap.commit) == snap.commit
    assert tree_contents(repo, snap.commit) == worktree_contents(repo)
    assert state_of(repo) == before
    assert sh(repo, "branch", "--list") == ""  # still no branch: nothing was committed to it


def test_from_a_subdirectory(git_repo: Path) -> None:
    sub = git_repo / "src" / "pkg"
    sub.mkdir(parents=True)
    (sub / "model.py").write_text("model\n")
    info = inspect(sub)
    assert info.root == str(git_repo) and info.start_dir == str(sub)
    assert info.untracked == ["src/pkg/model.py"]
    snap = snapshot.create(info, snapshot.ref_name("subdir"), "msg")
    assert tree_contents(git_repo, snap.commit) == worktree_contents(git_repo)


def test_worktree(git_repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "wt"
    sh(git_repo, "worktree", "add", "-q", "-b", "feature", str(tree))
    (tree / "train.py").write_text("feature work\n")
    (tree / "extra.py").write_text("extra\n")
    main_status = state_of(git_repo)
    before = state_of(tree)
    info = inspect(tree)
    assert info.worktree and info.root == str(tree) and info.branch == "feature"
    assert info.commit == sh(git_repo, "rev-parse", "main")
    snap = snapshot.create(info, snapshot.ref_name("wt"), "msg")
    assert tree_contents(tree, snap.commit) == worktree_contents(tree)
    # The ref is shared by every worktree of the repository.
    assert sh(git_repo, "rev-parse", "refs/mltrail/runs/wt") == snap.commit
    assert state_of(tree) == before and state_of(git_repo) == main_status


def test_repository_git_refuses(git_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sh(git_repo, "remote", "add", "origin", "https://git.example.com/team/proj.git")
    commit = sh(git_repo, "rev-parse", "HEAD")
    sh(git_repo, "pack-refs", "--all")  # the branch now lives in packed-refs
    monkeypatch.setenv("GIT_TEST_ASSUME_DIFFERENT_OWNER", "1")
    info = inspect(git_repo)
    assert "dubious ownership" in (info.unavailable or "")
    assert "safe.directory" in info.unavailable
    assert info.read_from == "files" and info.dirty is None and not info.usable
    assert info.commit == commit and info.branch == "main"
    assert info.repo_url == "https://git.example.com/team/proj.git"
    assert "mltrail.git.dirty" not in info.tags()
    assert info.tags()["mlflow.source.git.commit"] == commit


def test_no_git_binary(git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commit = sh(git_repo, "rev-parse", "HEAD")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    info = inspect(git_repo)
    assert info.unavailable.startswith("the git executable was not found on PATH")
    assert info.commit == commit and info.branch == "main" and info.dirty is None


def test_no_git_binary_in_a_worktree(
    git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "wt2"
    sh(git_repo, "worktree", "add", "-q", "--detach", str(tree))
    commit = sh(git_repo, "rev-parse", "HEAD")
    monkeypatch.setenv("PATH", str(tmp_path))
    info = inspect(tree)
    assert info.commit == commit and info.detached and info.worktree


def test_no_repository(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    info = inspect(folder)
    assert info.root is None and info.commit is None and info.dirty is None
    assert info.unavailable == "not inside a git repository"
    assert info.tags() == {"mltrail.git.unavailable": "not inside a git repository"}


def test_found_from_the_entry_script(
    git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = git_repo / "train.py"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "argv", [str(script), "--epochs", "1"])
    assert git_capture.entry_script() == script
    info = git_capture.inspect()
    assert info.found_from == "script" and info.root == str(git_repo)
    # python -c and console scripts of installed tools are not the user's code: the cwd counts.
    monkeypatch.chdir(git_repo)
    monkeypatch.setattr(sys, "argv", ["-c"])
    assert git_capture.entry_script() is None
    assert git_capture.inspect().found_from == "cwd"
    monkeypatch.setattr(sys, "argv", [str(Path(sys.prefix, "bin", "pytest"))])
    assert git_capture.entry_script() is None


def test_strip_credentials() -> None:
    strip = git_capture.strip_credentials
    assert strip("https://user:pw@host/x.git") == "https://host/x.git"
    assert strip("https://ghp_abcdefghijklmnopqrstuvwxyz012345@github.com/o/r") == (
        "https://github.com/o/r"
    )
    assert strip("git@github.com:org/repo.git") == "git@github.com:org/repo.git"
    assert strip("ssh://git@host:22/repo") == "ssh://host:22/repo"


# --- edges of the GitPython layer ---------------------------------------------------------------


def test_gitpython_is_imported_on_first_use_and_without_git(git_repo: Path, tmp_path: Path) -> None:
    """Importing the module does not import GitPython; without git on PATH GitPython still
    imports (it raises at import unless GIT_PYTHON_REFRESH=quiet) and reads the commit."""
    empty = tmp_path / "bin"
    empty.mkdir()
    code = (
        "import json, os, sys\n"
        "from pathlib import Path\n"
        "import mltrail\n"
        "from mltrail.capture import git\n"
        "lazy = 'git' not in sys.modules\n"
        "info = git.inspect(dirs=[('cwd', Path(sys.argv[1]))])\n"
        "print(json.dumps({'lazy': lazy, 'commit': info.commit, 'branch': info.branch,\n"
        "    'unavailable': info.unavailable, 'read_from': info.read_from,\n"
        "    'refresh_env': os.environ.get('GIT_PYTHON_REFRESH')}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_PYTHON")}
    result = subprocess.run(
        [sys.executable, "-c", code, str(git_repo)],
        env={**env, "PATH": str(empty)},
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(result.stdout)
    assert found["lazy"] is True
    assert found["commit"] == sh(git_repo, "rev-parse", "HEAD") and found["branch"] == "main"
    assert found["unavailable"].startswith("the git executable was not found on PATH")
    assert found["read_from"] == "files"
    assert found["refresh_env"] is None  # set for the import only


def slow_git(folder: Path) -> Path:
    """A `git` that hangs, with a child holding its output pipes open after it is killed."""
    folder.mkdir()
    sleep = shutil.which("sleep")
    script = folder / "git"
    script.write_text(f"#!/bin/sh\n{sleep} 4 &\n{sleep} 4\n")
    script.chmod(0o755)
    return folder


def test_a_hanging_git_is_killed_at_the_timeout(
    git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = sh(git_repo, "rev-parse", "HEAD")
    git_capture.gitpython()  # imported with the real git (the import runs `git version`)
    monkeypatch.setenv("PATH", f"{slow_git(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}")
    began = time.monotonic()
    with pytest.raises(git_capture.GitTimeout, match=r"took longer than 0\.3 s"):
        git_capture.run_git(["status"], git_repo, timeout=0.3)
    assert time.monotonic() - began < 2.5  # not waiting for the child that holds the pipes
    began = time.monotonic()
    info = inspect(git_repo, timeout=0.3)
    assert time.monotonic() - began < 2.5
    assert info.status_timed_out and info.dirty is None
    assert "`git status` took longer than 0.3 s" in (info.unavailable or "")
    # GitPython read HEAD from the files: the commit and branch are known all the same.
    assert info.commit == commit and info.branch == "main" and info.read_from == "git"
    with pytest.raises(git_capture.GitTimeout):
        git_capture.diff(info, 1000, timeout=0.3)


def test_dollar_signs_in_folder_names_are_not_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLTRAIL_TEST_VAR", "elsewhere")
    repo = tmp_path / "$MLTRAIL_TEST_VAR" / "proj"
    repo.mkdir(parents=True)
    sh(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text("x = 1\n")
    sh(repo, "add", ".")
    sh(repo, "commit", "-q", "-m", "first")
    (repo / "train.py").write_text("x = 2\n")
    info = inspect(repo)
    assert info.root == str(repo) and info.dirty and info.usable
    assert git_capture.diff(info, 10_000).files[0]["path"] == "train.py"
    snap = snapshot.create(info, snapshot.ref_name("dollar"), "msg")
    assert tree_contents(repo, snap.commit) == worktree_contents(repo)


def test_inside_the_git_directory_is_not_a_working_tree(git_repo: Path) -> None:
    info = inspect(git_repo / ".git" / "refs")
    assert info.root is None and info.unavailable == "not inside a git repository"


def test_remote_from_the_config(git_repo: Path) -> None:
    sh(git_repo, "config", "--add", "remote.origin.url", "https://a:pw@first.example.com/x.git")
    sh(git_repo, "config", "--add", "remote.origin.url", "https://second.example.com/x.git")
    info = inspect(git_repo)
    assert info.remote == "origin" and info.repo_url == "https://first.example.com/x.git"
    # The upstream of the branch names the remote, whatever else is configured.
    with open(git_repo / ".git" / "config", "a") as config:
        config.write(
            '[Remote "upstream"]\n\tURL = "ssh://git@up.example.com/team/x.git"\n'
            "\tfetch = +refs/heads/*:refs/remotes/upstream/*\n"
        )
    sh(git_repo, "config", "branch.main.remote", "upstream")
    sh(git_repo, "config", "branch.main.merge", "refs/heads/main")
    info = inspect(git_repo)
    assert info.upstream == "upstream/main"
    assert info.remote == "upstream" and info.repo_url == "ssh://up.example.com/team/x.git"


def test_a_hanging_git_does_not_hang_the_gitpython_import(git_repo: Path, tmp_path: Path) -> None:
    """GitPython runs `git version` when imported, without a timeout: callers wait for the
    import on a thread at most IMPORT_TIMEOUT seconds."""
    code = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from mltrail.capture import git\n"
        "git.IMPORT_TIMEOUT = 0.5\n"
        "began = time.monotonic()\n"
        "info = git.inspect(dirs=[('cwd', Path(sys.argv[1]))])\n"
        "print(json.dumps({'seconds': time.monotonic() - began, 'unavailable': info.unavailable}))\n"
    )
    path = f"{slow_git(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run(
        [sys.executable, "-c", code, str(git_repo)],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(result.stdout)
    assert found["seconds"] < 2.5
    assert (
        found["unavailable"] == "importing GitPython (it runs `git version`) took longer than 0.5 s"
    )
