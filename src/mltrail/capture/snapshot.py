"""Save a dirty working tree as a hidden commit, without touching the user's git state.

The snapshot is an ordinary commit object whose parent is HEAD (none on an unborn branch) and
whose tree is the working tree as it is: tracked files with their uncommitted changes and the
untracked, non-ignored files. It is built with a temporary index (``GIT_INDEX_FILE``), so the
user's index, branches, stash and working tree are untouched, and stored under the hidden ref
``refs/mltrail/runs/<run_id>``, which ``git log --all`` and most tools do not show but
``git push origin 'refs/mltrail/*'`` can share.

Every git command runs through GitPython's command wrapper (:func:`mltrail.capture.git.run_git`),
as plumbing: ``add`` into the temporary index, ``hash-object``, ``update-index``, ``write-tree``,
``commit-tree`` and ``update-ref``. GitPython's own index and object writers are not used on
purpose: ``IndexFile.add`` hashes files in Python without git's clean filters (Git LFS,
end-of-line conversion), and its object writer knows only SHA-1 repositories.

Identical working trees share one snapshot commit: a process that trains several times on the
same tree (a loop of trainings, cross-validation) stores one commit under each run's ref. The
temporary index is kept for the process while the user's index is unchanged, so later snapshots
hash only the files that changed since the last one (untracked files included).

Secrets stay out of it: a changed or untracked dotenv file (``.env``, ``.env.local``,
``prod.env``) goes into the snapshot with its secret-looking assignments redacted
(``API_TOKEN=***``, other lines as they are), and its original content is never written to the
repository's object database.
"""

from __future__ import annotations

import atexit
import dataclasses
import itertools
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from mltrail.capture.git import GitInfo, git_env, run_git
from mltrail.recording.sanitize import redact_text

logger = logging.getLogger("mltrail.snapshot")

REF_PREFIX = "refs/mltrail/runs/"
#: Files whose secret-looking assignments are redacted in the snapshot.
DOTENV = re.compile(r"(^|/)(\.env(\.[^/]*)?|[^/]+\.env)$")
#: Untracked files larger than this stay out of the snapshot (listed as skipped).
MAX_UNTRACKED_FILE_BYTES = 50 * 1024 * 1024
IDENTITY = {
    "GIT_AUTHOR_NAME": "mltrail",
    "GIT_AUTHOR_EMAIL": "mltrail@localhost",
    "GIT_COMMITTER_NAME": "mltrail",
    "GIT_COMMITTER_EMAIL": "mltrail@localhost",
}


_lock = threading.RLock()  # one snapshot at a time: they share the index and commits below
#: Per repository: the key of the kept temporary index (the user's index stat, the exclusions)
#: and its path. Starting from it keeps git's stat cache for untracked files too.
_indexes: dict[str, tuple[tuple[object, ...], Path]] = {}
#: (repository, tree, parent) -> the snapshot commit already made for it by this process.
_commits: dict[tuple[str, str, str | None], str] = {}
_work: Path | None = None  # the folder of the temporary indexes
_exited = False  # the exit hook removed it: a snapshot taken later cleans up after itself
_names = itertools.count()


@dataclasses.dataclass
class Snapshot:
    commit: str
    tree: str
    ref: str
    parent: str | None
    skipped: list[str]
    redacted: list[str] = dataclasses.field(default_factory=list)


def ref_name(run_id: str) -> str:
    return REF_PREFIX + run_id


def large_untracked(info: GitInfo, limit: int | None = None) -> list[str]:
    """Untracked files too large to copy into the repository's object database."""
    assert info.root is not None
    limit = MAX_UNTRACKED_FILE_BYTES if limit is None else limit
    large = []
    for rel in info.untracked:
        try:
            if (Path(info.root) / rel).stat().st_size > limit:
                large.append(rel)
        except OSError:
            continue
    return large


def create(
    info: GitInfo,
    ref: str,
    message: str,
    exclude: Iterable[str] = (),
    timeout: float = 120.0,
) -> Snapshot:
    """Commit the working tree of ``info.root`` under ``ref`` and return the snapshot.

    Args:
        info: the repository state from :func:`mltrail.capture.git.inspect`.
        ref: the full ref name to store the commit under.
        message: the commit message.
        exclude: paths relative to the repository root to leave out (large untracked files,
            the MLflow store when it lives inside the repository).
        timeout: seconds each git call may take.
    """
    assert info.root is not None
    exclude = sorted(set(exclude) | set(info.excluded))
    env = git_env(IDENTITY)
    with _lock:
        tree = write_tree(info, exclude, timeout)
        redacted = [path for path in dotenv_files(info) if path not in exclude]
        key = (info.root, tree, info.commit)
        commit = _commits.get(key)
        if commit is None or not _point(info.root, ref, commit, env, timeout):
            args = ["commit-tree", tree, "--no-gpg-sign", "-m", message]
            if info.commit:
                args += ["-p", info.commit]
            commit = run_git(args, info.root, env=env, timeout=timeout).stdout.decode().strip()
            _point(info.root, ref, commit, env, timeout, check=True)
            _commits[key] = commit
    return Snapshot(commit, tree, ref, info.commit, list(exclude), redacted)


def _point(
    root: str, ref: str, commit: str, env: dict[str, str], timeout: float, check: bool = False
) -> bool:
    """Set ``ref`` to ``commit``; False when git refuses (a shared commit gone since)."""
    try:
        run_git(
            ["update-ref", "-m", "mltrail snapshot", ref, commit], root, env=env, timeout=timeout
        )
    except Exception:
        if check:
            raise
        return False
    return True


def dotenv_files(info: GitInfo) -> list[str]:
    """Changed or untracked dotenv files of the working tree (relative paths)."""
    paths = [c["path"] for c in info.changed] + list(info.untracked)
    return sorted({p for p in paths if DOTENV.search(p)})


def write_tree(info: GitInfo, exclude: Iterable[str] = (), timeout: float = 120.0) -> str:
    """The git tree id of the working tree as it is (tracked files with their changes and
    untracked, non-ignored files, less ``exclude``, ``info.excluded`` and the training's
    ``info.outputs``), built in a temporary index so the user's index is untouched."""
    assert info.root is not None and info.git_dir is not None
    exclude = sorted(set(exclude) | set(info.excluded) | set(info.outputs))
    with _lock:
        index = _temporary_index(info, exclude)
        try:
            return _write_tree(info, index, exclude, timeout)
        except BaseException:
            _indexes.pop(info.git_dir, None)  # start afresh next time
            raise
        finally:
            if _exited:  # a training recorded at exit, after the exit hook below
                _remove_work()


def _remove_work() -> None:
    """Remove the temporary indexes (at exit). A training recorded after this hook ran (a fit
    recorded beside it, see :mod:`mltrail.recording.deferred`) still snapshots: it makes the
    folder again, and removes it when done."""
    global _work, _exited
    with _lock:
        _exited = True
        if _work is not None:
            shutil.rmtree(_work, ignore_errors=True)
        _work = None
        _indexes.clear()


def _temporary_index(info: GitInfo, exclude: list[str]) -> Path:
    """This process's temporary index of the repository: the one of the last snapshot while
    the user's index and the exclusions are unchanged, else a fresh copy of the user's index
    (a copy keeps git's stat cache: only changed files are hashed)."""
    global _work
    assert info.git_dir is not None
    user_index = Path(info.git_dir) / "index"
    try:
        stat = user_index.stat()
        key: tuple[object, ...] = (stat.st_mtime_ns, stat.st_size, stat.st_ino, *exclude)
    except OSError:
        key = (None, *exclude)
    kept = _indexes.get(info.git_dir)
    if kept is not None and kept[0] == key and kept[1].exists():
        return kept[1]
    if _work is None:
        _work = Path(tempfile.mkdtemp(prefix="mltrail-snapshot-"))
        if not _exited:
            atexit.register(_remove_work)
    index = _work / f"index-{next(_names)}"
    if key[0] is not None:
        shutil.copy2(user_index, index)
    _indexes[info.git_dir] = (key, index)
    return index


def _write_tree(info: GitInfo, index: Path, exclude: list[str], timeout: float) -> str:
    assert info.root is not None
    env = git_env({"GIT_INDEX_FILE": str(index), **IDENTITY})
    secrets = [path for path in dotenv_files(info) if path not in exclude]
    specs = ["."] + [f":(exclude,literal,top){path}" for path in [*exclude, *secrets]]
    run_git(
        ["add", "-A", "--ignore-errors", "--pathspec-from-file=-", "--pathspec-file-nul"],
        info.root,
        env=env,
        input="\0".join(specs).encode("utf-8", "surrogateescape"),
        timeout=timeout,
    )
    for path in secrets:
        _add_redacted(info.root, path, env, timeout)
    return run_git(["write-tree"], info.root, env=env, timeout=timeout).stdout.decode().strip()


def _add_redacted(root: str, path: str, env: dict[str, str], timeout: float) -> None:
    """Put ``path`` in the temporary index with its secrets redacted (removed when deleted)."""
    file = Path(root, path)
    if not file.is_file():
        run_git(["update-index", "--force-remove", "--", path], root, env=env, timeout=timeout)
        return
    text = redact_text(file.read_bytes().decode("utf-8", "surrogateescape"))
    blob = run_git(
        ["hash-object", "-w", "--stdin"],
        root,
        env=env,
        input=text.encode("utf-8", "surrogateescape"),
        timeout=timeout,
    )
    mode = "100755" if os.access(file, os.X_OK) else "100644"
    cacheinfo = f"{mode},{blob.stdout.decode().strip()},{path}"
    run_git(["update-index", "--add", "--cacheinfo", cacheinfo], root, env=env, timeout=timeout)
