"""Read-only git state of the code behind a run: commit, branch, remote, dirty flag, diff.

Built on GitPython, imported on first use (:func:`gitpython`) so that ``import mltrail`` does not
pay for it. GitPython finds the repository and reads its HEAD, branch and remotes from the
``.git`` files, without a subprocess; the status, the diff and every other git command run
through GitPython's command wrapper (:func:`run_git`), each with a timeout, nothing to read on
stdin, ``GIT_TERMINAL_PROMPT=0`` (never prompts for credentials) and ``GIT_OPTIONAL_LOCKS=0``
(``git status`` does not refresh the user's index). When git itself cannot be used (no binary,
a repository git refuses for its ownership), the commit, branch and remote GitPython read are
kept, ``read_from`` is ``"files"`` and the reason is in :attr:`GitInfo.unavailable`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from mltrail.digest import file_sha256
from mltrail.recording.sanitize import redact_text

if TYPE_CHECKING:
    from git import Repo

logger = logging.getLogger("mltrail.capture.git")

GIT_TIMEOUT = 5.0
#: Seconds to wait for GitPython's import, once per process (slow disks make it slow, not only
#: a hanging ``git version``; a git call's own timeout is shorter).
IMPORT_TIMEOUT = 20.0
#: Untracked files larger than this are hashed by size and mtime only (fingerprint).
MAX_HASHED_FILE_BYTES = 256 * 1024 * 1024
NO_GIT = "the git executable was not found on PATH"
_REMOTE_SECTION = re.compile(r'remote\s+"(.+)"', re.IGNORECASE)
_import_lock = threading.Lock()
_import_deadline: float | None = None
_imported = threading.Event()
_import_error: str | None = None


class GitUnavailable(Exception):
    """Git cannot be used here; ``str(error)`` is the reason recorded on the run."""


class NotARepository(Exception):
    """The directory is not inside a git working tree."""


class GitTimeout(GitUnavailable):
    """A git call took longer than its timeout."""


class GitRefused(GitUnavailable):
    """Git cannot run on this repository at all: no executable, or it refuses the ownership."""


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for every git call: no prompts, no optional locks, stable output."""
    env = dict(os.environ)
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GCM_INTERACTIVE="never",
        GIT_OPTIONAL_LOCKS="0",
        GIT_PAGER="cat",
        LC_ALL="C",
        LANGUAGE="C",
    )
    env.update(extra or {})
    return env


def preload_gitpython() -> float:
    """Start importing GitPython on its daemon thread, once, without waiting for it (a run
    start does it first thing, so the import overlaps with opening the store); returns when
    waiting for it gives up (see :func:`gitpython`)."""
    global _import_deadline
    with _import_lock:
        if _import_deadline is None:
            _import_deadline = time.monotonic() + IMPORT_TIMEOUT
            threading.Thread(
                target=_import_gitpython, name="mltrail-import-gitpython", daemon=True
            ).start()
        return _import_deadline


def gitpython() -> ModuleType:
    """GitPython's ``git`` package, imported on first use.

    Importing GitPython runs ``git version``, with no timeout, and raises ImportError when that
    fails unless ``GIT_PYTHON_REFRESH`` says otherwise. So the import runs once, on a daemon
    thread, with ``GIT_PYTHON_REFRESH=quiet`` unless the user set it (without git on PATH,
    GitPython still reads the ``.git`` files), and callers wait for it until
    :data:`IMPORT_TIMEOUT` seconds after it began: a hanging git cannot hang the caller.

    Returns:
        The ``git`` module.

    Raises:
        GitTimeout: the import (its ``git version``) took longer than :data:`IMPORT_TIMEOUT`.
        GitUnavailable: GitPython cannot be imported.
    """
    deadline = preload_gitpython()
    if not _imported.wait(max(0.0, deadline - time.monotonic())):
        raise GitTimeout(
            f"importing GitPython (it runs `git version`) took longer than {IMPORT_TIMEOUT:g} s"
        )
    if _import_error is not None:
        raise GitUnavailable(_import_error)
    return sys.modules["git"]


def _import_gitpython() -> None:
    global _import_error
    # Set only for the import, and only when unset: the user's own choice stands.
    quiet = "git" not in sys.modules and "GIT_PYTHON_REFRESH" not in os.environ
    if quiet:
        os.environ["GIT_PYTHON_REFRESH"] = "quiet"
    try:
        import git  # noqa: F401
    except Exception as error:  # ImportError, or whatever `git version` broke in GitPython
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        _import_error = f"GitPython could not be imported ({first})"
    finally:
        if quiet:
            os.environ.pop("GIT_PYTHON_REFRESH", None)
        _imported.set()


def _spawn(
    args: list[str], cwd: str | os.PathLike[str], env: dict[str, str], stdin: bool = False
) -> Any:
    """Start ``git args`` in ``cwd`` through GitPython's command wrapper, stdout and stderr piped.

    Returns GitPython's process wrapper (``.proc`` is the :class:`subprocess.Popen`); keep it
    referenced while git runs: it terminates git when it is garbage-collected.
    """
    directory = Path(cwd)
    if not directory.is_dir():
        raise NotARepository(str(cwd))
    if not os.access(directory, os.X_OK):
        # GitPython would silently run git in the process's cwd instead.
        raise GitUnavailable(f"git could not be run (cannot enter {cwd})")
    git = gitpython()
    command = [git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", *args]
    try:
        # A Path is not run through os.path.expandvars, unlike a str: "$" in folder names stays.
        return git.Git(directory).execute(
            command, istream=subprocess.PIPE if stdin else None, as_process=True, env=env
        )
    except git.GitCommandNotFound as error:
        raise GitRefused(NO_GIT) from error
    except OSError as error:
        raise GitUnavailable(f"git could not be run ({error})") from error


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill git and close its pipes without reading them: a child it started (ssh) may still
    hold them open, and reading would wait for it."""
    with contextlib.suppress(OSError):
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def run_git(
    args: list[str],
    cwd: str | os.PathLike[str],
    *,
    timeout: float = GIT_TIMEOUT,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run one git command through GitPython's command wrapper, with a timeout.

    Args:
        args: the git arguments (``["status", "--porcelain=v2"]``).
        cwd: the directory to run git in.
        timeout: seconds before git is killed.
        env: the environment (default :func:`git_env`).
        input: bytes for git's stdin; without it stdin is empty.
        check: raise on a non-zero exit status instead of returning it.

    Returns:
        The finished command, with ``returncode`` and ``stdout``/``stderr`` as bytes.

    Raises:
        NotARepository: ``cwd`` is not a directory, or (``check``) git says it is not in a
            working tree.
        GitRefused: no git executable, or (``check``) git refuses the repository's ownership.
        GitTimeout: git took longer than ``timeout``.
        GitUnavailable: git could not be run, or (``check``) it failed.
    """
    wrapper = _spawn(args, cwd, env or git_env(), stdin=input is not None)
    process: subprocess.Popen[bytes] = wrapper.proc
    try:
        stdout, stderr = process.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        _kill(process)
        raise GitTimeout(f"`git {args[0]}` took longer than {timeout:g} s") from error
    result = subprocess.CompletedProcess(["git", *args], process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise classify_error(result.stderr.decode("utf-8", "replace"), args[0])
    return result


def classify_error(stderr: str, command: str) -> Exception:
    """The exception for a failed git command, from its stderr (redacted).

    Args:
        stderr: what git wrote to stderr.
        command: the git subcommand, for the message.

    Returns:
        :class:`GitRefused` (dubious ownership), :class:`NotARepository` or
        :class:`GitUnavailable`.
    """
    text = stderr.strip()
    lowered = text.lower()
    if "dubious ownership" in lowered or "unsafe repository" in lowered:
        return GitRefused(
            "git refuses the repository because it is owned by another user (dubious "
            "ownership); add it to git's safe.directory to record the dirty state"
        )
    if "not a git repository" in lowered or "must be run in a work tree" in lowered:
        return NotARepository(text)
    first = redact_text(text.splitlines()[-1] if text else "no message")
    return GitUnavailable(f"`git {command}` failed: {first}")


# --- where the code lives --------------------------------------------------------------------


def argv0() -> str:
    """``sys.argv[0]``, absolute as of interpreter start when it names a file.

    A relative ``sys.argv[0]`` resolved later would follow any ``chdir`` the program made;
    ``__main__.__file__`` is made absolute at start (Python 3.9+).
    """
    arg = sys.argv[0] if sys.argv else ""
    if arg in {"", "-c", "-m", "-"}:
        return arg
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file and os.path.isabs(main_file):
        tail = Path(arg).parts
        if Path(main_file).parts[-len(tail) :] == tail:  # the same file, named from the start
            return main_file
    return arg


def entry_script() -> Path | None:
    """The user's entry script (``sys.argv[0]``), or None for ``python -c``, notebooks, REPLs
    and installed console scripts (pytest, ipykernel), which are not the user's code."""
    arg = argv0()
    if not arg or arg in {"-c", "-m", "-"}:
        return None
    try:
        path = Path(arg).resolve()
        if not path.is_file():
            return None
    except OSError:
        return None
    installed = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    installed.update(p for p in (sysconfig.get_paths().get(k) for k in ("purelib", "platlib")) if p)
    for prefix in installed:
        try:
            path.relative_to(Path(prefix).resolve())
            return None
        except (ValueError, OSError):
            continue
    return path


def start_dirs() -> list[tuple[str, Path]]:
    """Directories to look for the repository in, in order: the entry script's, then the cwd."""
    found: list[tuple[str, Path]] = []
    script = entry_script()
    if script is not None:
        found.append(("script", script.parent))
    try:
        cwd = Path.cwd()
        if not found or found[0][1] != cwd:
            found.append(("cwd", cwd))
    except OSError:
        pass
    return found


# --- the state ---------------------------------------------------------------------------------


@dataclasses.dataclass
class GitInfo:
    """The git state of a working tree at one moment. Fields are None when unknown."""

    root: str | None = None
    found_from: str | None = None
    start_dir: str | None = None
    git_dir: str | None = None
    common_dir: str | None = None
    commit: str | None = None
    branch: str | None = None
    detached: bool = False
    unborn: bool = False
    shallow: bool = False
    worktree: bool = False
    remote: str | None = None
    upstream: str | None = None
    repo_url: str | None = None
    dirty: bool | None = None
    changed: list[dict[str, str]] = dataclasses.field(default_factory=list)
    untracked: list[str] = dataclasses.field(default_factory=list)
    excluded: list[str] = dataclasses.field(default_factory=list)
    # Untracked files written after the run's training started: its outputs (checkpoints,
    # logs), neither its code nor in its snapshot, and nothing a restore owes (see refresh).
    outputs: list[str] = dataclasses.field(default_factory=list)
    unavailable: str | None = None
    read_from: str = "git"  # "git", or "files" when the commit was read without git
    status_timed_out: bool = False  # `git status` was too slow: see :func:`refresh`
    status_deferred: bool = False  # the status was read by :func:`refresh`
    status_pending: bool = False  # not read yet: :func:`refresh` reads it (inspect(status=False))
    seconds: float = 0.0

    @property
    def usable(self) -> bool:
        """True when git itself works on this repository (diff and snapshot possible)."""
        return self.root is not None and self.read_from == "git" and self.dirty is not None

    def tags(self) -> dict[str, str]:
        """Run tags: MLflow's git tags, the dirty flag and the reason for anything missing."""
        tags: dict[str, str] = {}
        if self.commit:
            tags["mlflow.source.git.commit"] = self.commit
        if self.branch:
            tags["mlflow.source.git.branch"] = self.branch
        if self.repo_url:
            tags["mlflow.source.git.repoURL"] = self.repo_url
        if self.dirty is not None:
            tags["mltrail.git.dirty"] = "true" if self.dirty else "false"
        if self.shallow:
            tags["mltrail.git.shallow"] = "true"
        if self.unavailable:
            tags["mltrail.git.unavailable"] = self.unavailable
        return tags

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["available"] = self.root is not None
        return data


def strip_credentials(url: str) -> str:
    """Drop the user-info part of a remote URL (``https://user:token@host`` -> ``https://host``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.scheme and "@" in parts.netloc:
        host = parts.netloc.rpartition("@")[2]
        url = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return redact_text(url)


def inspect(
    exclude: Iterable[str] = (),
    *,
    dirs: list[tuple[str, Path]] | None = None,
    timeout: float = GIT_TIMEOUT,
    status: bool = True,
) -> GitInfo:
    """Read the git state of the code: the entry script's repository, else the cwd's.

    GitPython finds the repository and reads HEAD, the branch and the remotes from its files;
    one ``git status`` (through GitPython's command wrapper) gives the dirty state.

    Args:
        exclude: absolute paths that do not count as untracked changes (the MLflow store's own
            files when it lives inside the repository).
        dirs: where to look (default: :func:`start_dirs`).
        timeout: seconds each git call may take.
        status: False leaves the dirty state unknown (``status_pending``) for :func:`refresh`
            to read on another thread: the process that calls this is training.

    Returns:
        The state. Never raises for a missing repository or git: the reason is in
        ``GitInfo.unavailable``.
    """
    began = time.monotonic()
    info = GitInfo()
    reasons: list[str] = []
    for origin, directory in dirs if dirs is not None else start_dirs():
        try:
            repo = _open(directory)
        except NotARepository:
            continue
        except GitUnavailable as error:
            reasons.append(str(error))
            continue
        with repo:
            _read_repository(info, repo)
            info.found_from, info.start_dir = origin, str(directory)
            info.status_pending = not status
            try:
                if status:
                    _status(info, timeout, [Path(p) for p in exclude])
            except GitTimeout as error:
                info.status_timed_out = True
                reasons.append(str(error))
            except GitRefused as error:
                info.read_from = "files"
                reasons.append(str(error))
            except (GitUnavailable, NotARepository) as error:
                reasons.append(str(error))
            _remote(info, repo)
        break
    if info.root is None and not reasons:
        reasons.append("not inside a git repository")
    if info.root is not None and info.unborn and not reasons:
        reasons.append("the repository has no commits yet")
    if info.read_from == "files" and reasons:
        reasons[0] += (
            "; commit and branch were read from the .git files, the dirty state is unknown"
        )
    info.unavailable = "; ".join(dict.fromkeys(reasons)) or None
    info.seconds = time.monotonic() - began
    return info


def refresh(
    info: GitInfo, exclude: Iterable[str] = (), timeout: float = 60.0, *, since: float | None = None
) -> None:
    """Read the status again with a longer timeout, after :func:`inspect` timed out on it
    or was asked not to read it.

    Args:
        info: the state :func:`inspect` returned; updated in place.
        exclude: as for :func:`inspect`.
        timeout: seconds each git call may take.
        since: when the run's training started (seconds since the epoch): untracked files
            written since are its outputs (checkpoints, logs), in ``info.outputs``. The
            status may be read seconds into the training (in mltrail's recorder process, once
            it has warmed up), and a checkpoint is no change to the code.
    """
    assert info.root is not None
    info.changed, info.untracked, info.excluded, info.outputs = [], [], [], []
    info.unavailable = None
    info.status_timed_out = info.status_pending = False
    info.status_deferred = True
    try:
        _status(info, timeout, [Path(p) for p in exclude], since)
        with _open(Path(info.root)) as repo:  # the upstream is known now: choose the remote again
            _remote(info, repo)
    except (GitUnavailable, NotARepository) as error:
        info.unavailable = str(error)
        return
    if info.unborn:
        info.unavailable = "the repository has no commits yet"


def _open(directory: Path) -> Repo:
    """The repository whose working tree holds ``directory``, found by GitPython."""
    git = gitpython()
    try:
        repo = git.Repo(directory.absolute(), search_parent_directories=True, expand_vars=False)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as error:
        raise NotARepository(str(directory)) from error
    except (OSError, ValueError, git.GitError) as error:
        reason = redact_text(str(error))
        raise GitUnavailable(f"the repository could not be read ({reason})") from error
    # Like git: a bare repository, or a directory inside .git, is not in a working tree.
    git_dir = Path(os.path.realpath(repo.git_dir))
    if repo.working_tree_dir is None or Path(os.path.realpath(directory)).is_relative_to(git_dir):
        repo.close()
        raise NotARepository(str(directory))
    return repo


def _read_repository(info: GitInfo, repo: Repo) -> None:
    """Where the repository is, and HEAD, read from its files (no subprocess)."""
    git = gitpython()
    assert repo.working_tree_dir is not None
    info.root = os.path.realpath(repo.working_tree_dir)  # as `git rev-parse --show-toplevel`
    info.git_dir = os.path.realpath(repo.git_dir)
    info.common_dir = os.path.realpath(repo.common_dir)
    info.worktree = info.common_dir != info.git_dir
    info.shallow = os.path.exists(os.path.join(info.common_dir, "shallow"))
    info.read_from = "git"
    head = repo.head
    try:
        info.detached = head.is_detached
        info.branch = None if info.detached else head.reference.path.removeprefix("refs/heads/")
    except (OSError, ValueError, TypeError, git.GitError):
        logger.debug("HEAD of %s could not be read", info.root, exc_info=True)
        return
    try:
        # Only the ref files: `head.commit` would start a `git cat-file` to read the object.
        info.commit = git.SymbolicReference.dereference_recursive(repo, "HEAD")
    except ValueError:  # the branch has no commits yet
        info.commit = None
        info.unborn = not info.detached
    except (OSError, git.GitError):
        logger.debug("the commit of HEAD in %s could not be read", info.root, exc_info=True)


def _status(info: GitInfo, timeout: float, exclude: list[Path], since: float | None = None) -> None:
    """The dirty state from ``git status``; its branch lines are git's own view of HEAD and
    take precedence over what GitPython read (they cover a reftable repository too).
    Untracked files written ``since`` (see :func:`refresh`) are its outputs instead."""
    assert info.root is not None
    root = Path(info.root)
    skip = set()
    for path in exclude:
        try:
            relative = path.resolve().relative_to(root.resolve()).as_posix()
        except (ValueError, OSError):
            continue
        if relative != ".":
            skip.add(relative)
    args = ["status", "--porcelain=v2", "-z", "--branch", "--untracked-files=all"]
    # git does not walk the store's folders at all (an mlruns/ of thousands of files);
    # what is there is listed once, by the path left out.
    args += ["--", ".", *(f":(exclude,literal,top){path}" for path in sorted(skip))]
    raw = run_git(args, info.root, timeout=timeout).stdout.decode("utf-8", "surrogateescape")
    info.excluded = sorted(path for path in skip if os.path.lexists(root / path))
    fields = raw.split("\0")
    i = 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if not entry:
            continue
        if entry.startswith("# branch.oid "):
            oid = entry.split(" ", 2)[2]
            info.unborn = oid == "(initial)"
            info.commit = None if info.unborn else oid
        elif entry.startswith("# branch.head "):
            head = entry.split(" ", 2)[2]
            info.detached = head == "(detached)"
            info.branch = None if info.detached else head
        elif entry.startswith("# branch.upstream "):
            info.upstream = entry.split(" ", 2)[2]  # "origin/main"
        elif entry[:2] in {"1 ", "u "}:
            parts = entry.split(" ", 8 if entry[0] == "1" else 10)
            info.changed.append({"status": parts[1], "path": parts[-1]})
        elif entry.startswith("2 "):
            parts = entry.split(" ", 9)
            info.changed.append({"status": parts[1], "path": parts[-1], "from": fields[i]})
            i += 1
        elif entry.startswith("? "):
            info.untracked.append(entry[2:])
    if since is not None:
        outputs = {path for path in info.untracked if _written_since(root / path, since)}
        info.untracked = [path for path in info.untracked if path not in outputs]
        info.outputs = sorted(outputs)
    info.dirty = bool(info.changed or info.untracked)


def _written_since(path: Path, since: float) -> bool:
    try:
        return path.lstat().st_mtime >= since
    except OSError:  # gone since git listed it: nothing of the code either
        return True


def _remote(info: GitInfo, repo: Repo) -> None:
    """The remote and its URL, from the git config as GitPython reads it (all levels)."""
    urls: dict[str, str] = {}
    try:
        reader = repo.config_reader()
        for section in reader.sections():
            match = _REMOTE_SECTION.fullmatch(section)
            if match is None:
                continue
            for key, values in reader.items_all(section):
                if key.lower() == "url" and values:  # git's keys are case-insensitive
                    urls.setdefault(match.group(1), str(values[0]))  # git fetches from the first
    except Exception:  # an unreadable config: no remote (`git status` says what is wrong)
        logger.debug("the git config of %s could not be read", info.root, exc_info=True)
    _choose_remote(info, urls)


def _choose_remote(info: GitInfo, urls: dict[str, str]) -> None:
    upstream = info.upstream or ""
    name = next(
        (n for n in sorted(urls, key=len, reverse=True) if upstream.startswith(n + "/")), None
    )
    if name is None:
        name = "origin" if "origin" in urls else (sorted(urls)[0] if urls else None)
    info.remote = name
    info.repo_url = strip_credentials(urls[name]) if name else None


# --- diff and untracked contents ----------------------------------------------------------------


@dataclasses.dataclass
class Diff:
    """The diff of tracked changes against HEAD (capped), with the sha256 of the whole of it."""

    text: str
    sha256: str
    bytes: int
    truncated: bool
    files: list[dict[str, Any]]
    binary_files: list[str]

    def summary(self, artifact: str | None) -> dict[str, Any]:
        return {
            "artifact": artifact,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "truncated": self.truncated,
            "files": self.files,
            "binary_files": self.binary_files,
            "insertions": sum(f["added"] or 0 for f in self.files),
            "deletions": sum(f["deleted"] or 0 for f in self.files),
        }


_DIFF_OPTIONS = ["--no-color", "--no-ext-diff", "--no-textconv", "--no-renames", "--full-index"]


def empty_tree(root: str, timeout: float = GIT_TIMEOUT) -> str:
    """The id of the empty tree in the repository at ``root`` (its hash depends on the object
    format: SHA-1 or SHA-256), the base to diff an unborn branch against."""
    result = run_git(["hash-object", "-t", "tree", "--stdin"], root, input=b"", timeout=timeout)
    return result.stdout.decode().strip()


def diff(info: GitInfo, max_bytes: int, timeout: float = 60.0) -> Diff:
    """The diff of the working tree against HEAD (staged and unstaged), binary files listed.

    Args:
        info: the state from :func:`inspect` (a usable repository).
        max_bytes: how much of the diff text to keep; the sha256 and size cover all of it.
        timeout: seconds each git call may take.

    Returns:
        The diff, its per-file line counts and the binary files.

    Raises:
        GitUnavailable: git failed or took longer than ``timeout``.
    """
    assert info.root is not None
    base = info.commit or empty_tree(info.root, timeout)
    numstat = run_git(
        ["diff", "--numstat", "-z", *_DIFF_OPTIONS, base, "--"], info.root, timeout=timeout
    ).stdout.decode("utf-8", "surrogateescape")
    files: list[dict[str, Any]] = []
    binary: list[str] = []
    for entry in numstat.split("\0"):
        if not entry:
            continue
        added, deleted, path = entry.split("\t", 2)
        if added == "-":
            binary.append(path)
        files.append(
            {
                "path": path,
                "added": None if added == "-" else int(added),
                "deleted": None if deleted == "-" else int(deleted),
                "binary": added == "-",
            }
        )
    args = [
        "diff",
        *_DIFF_OPTIONS,
        "--src-prefix=a/",
        "--dst-prefix=b/",
        base,
        "--",
    ]
    head, digest, total = _stream(args, info.root, max(0, max_bytes), timeout)
    truncated = total > len(head)
    if truncated:
        cut = head.rfind(b"\n") + 1
        head = (
            head[:cut]
            + (
                f"# mltrail: diff truncated after {cut} of {total} bytes; sha256 of the full diff: "
                f"{digest}\n"
            ).encode()
        )
    return Diff(head.decode("utf-8", "surrogateescape"), digest, total, truncated, files, binary)


def _stream(args: list[str], cwd: str, keep: int, timeout: float) -> tuple[bytes, str, int]:
    """Run git, hashing all of stdout and keeping its first ``keep`` bytes.

    stdout is read in blocks (a diff can be hundreds of MB), stderr is drained on a thread so
    that warnings cannot fill its pipe and stall git, and a timer kills git at the timeout.
    """
    wrapper = _spawn(args, cwd, git_env())
    process: subprocess.Popen[bytes] = wrapper.proc
    assert process.stdout is not None and process.stderr is not None
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        with contextlib.suppress(OSError):
            process.kill()

    errors = bytearray()

    def drain() -> None:
        assert process.stderr is not None
        with contextlib.suppress(OSError, ValueError):  # closed under it when git is killed
            while block := process.stderr.read1(1 << 12):
                errors[:] = (errors + block)[-4096:]  # the last lines say why git failed

    watchdog = threading.Timer(timeout, expire)
    watchdog.daemon = True
    drainer = threading.Thread(target=drain, name="mltrail-git-stderr", daemon=True)
    digest = hashlib.sha256()
    kept = bytearray()
    total = 0
    watchdog.start()
    drainer.start()
    try:
        while block := process.stdout.read(1 << 16):
            digest.update(block)
            total += len(block)
            if len(kept) < keep:
                kept += block[: keep - len(kept)]
        code = process.wait()
    finally:
        watchdog.cancel()
        if process.poll() is None:
            _kill(process)
        drainer.join(timeout=1.0)  # stderr ends with git
        process.stdout.close()
        process.stderr.close()
    if expired.is_set():
        raise GitTimeout(f"`git {args[0]}` took longer than {timeout:g} s")
    if code != 0:
        message = errors.decode("utf-8", "replace").strip().splitlines()
        detail = f": {redact_text(message[-1])}" if message else ""
        raise GitUnavailable(f"`git {args[0]}` failed with exit code {code}{detail}")
    return bytes(kept), digest.hexdigest(), total


def files_digest(root: str, paths: Iterable[str], deadline: float | None = None) -> str:
    """sha256 over the paths and contents of files (untracked files for the fingerprint).

    Files over :data:`MAX_HASHED_FILE_BYTES` contribute their size and mtime instead.
    """
    digest = hashlib.sha256()
    for rel in sorted(paths):
        path = Path(root, rel)
        digest.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        try:
            stat = path.stat()
            if stat.st_size > MAX_HASHED_FILE_BYTES or (deadline and time.monotonic() > deadline):
                digest.update(f"size={stat.st_size};mtime={stat.st_mtime_ns}".encode())
            else:
                digest.update(file_sha256(path).encode())
        except OSError:
            digest.update(b"<unreadable>")
        digest.update(b"\n")
    return digest.hexdigest()
