"""Read-only git state of the code behind a run: commit, branch, remote, dirty flag, diff.

Everything here only reads. Git runs with ``GIT_TERMINAL_PROMPT=0`` (never prompts for
credentials), ``GIT_OPTIONAL_LOCKS=0`` (``git status`` does not refresh the user's index) and a
timeout per call. When git cannot be used (no binary, a repository git refuses for its
ownership), the commit, branch and remote are read from the ``.git`` files instead and the
reason is kept in :attr:`GitInfo.unavailable`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mltrail.recording.sanitize import redact_text

logger = logging.getLogger("mltrail.capture.git")

GIT_TIMEOUT = 5.0
#: Untracked files larger than this are hashed by size and mtime only (fingerprint).
MAX_HASHED_FILE_BYTES = 256 * 1024 * 1024
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class GitUnavailable(Exception):
    """Git cannot be used here; ``str(error)`` is the reason recorded on the run."""


class NotARepository(Exception):
    """The directory is not inside a git working tree."""


class GitTimeout(GitUnavailable):
    """A git call took longer than its timeout."""


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


def run_git(
    args: list[str],
    cwd: str | os.PathLike[str],
    *,
    timeout: float = GIT_TIMEOUT,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run one git command; raise :class:`GitUnavailable`/:class:`NotARepository` on failure."""
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env or git_env(),
            input=input,
            capture_output=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError as error:
        if not Path(cwd).is_dir():
            raise NotARepository(str(cwd)) from error
        raise GitUnavailable("the git executable was not found on PATH") from error
    except subprocess.TimeoutExpired as error:
        raise GitTimeout(f"`git {args[0]}` took longer than {timeout:g} s") from error
    except OSError as error:
        raise GitUnavailable(f"git could not be run ({error})") from error
    if check and result.returncode != 0:
        raise classify_error(result.stderr.decode("utf-8", "replace"), args[0])
    return result


def classify_error(stderr: str, command: str) -> Exception:
    text = stderr.strip()
    lowered = text.lower()
    if "dubious ownership" in lowered or "unsafe repository" in lowered:
        return GitUnavailable(
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
    unavailable: str | None = None
    read_from: str = "git"  # "git", or "files" when the commit was read without git
    status_timed_out: bool = False  # `git status` was too slow: see :func:`refresh`
    status_deferred: bool = False  # the status was read by :func:`refresh`
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
) -> GitInfo:
    """Read the git state of the code: the entry script's repository, else the cwd's.

    Args:
        exclude: absolute paths that do not count as untracked changes (the MLflow store's own
            files when it lives inside the repository).
        dirs: where to look (default: :func:`start_dirs`).
        timeout: seconds each git call may take.

    Never raises for a missing repository or git: the reason is in ``GitInfo.unavailable``.
    """
    began = time.monotonic()
    info = GitInfo()
    reasons: list[str] = []
    for origin, directory in dirs if dirs is not None else start_dirs():
        try:
            _locate(info, directory, timeout)
        except NotARepository:
            continue
        except GitUnavailable as error:
            reasons.append(str(error))
            if _read_git_files(info, directory):
                info.found_from, info.start_dir = origin, str(directory)
                break
            continue
        info.found_from, info.start_dir = origin, str(directory)
        try:
            _status(info, timeout, [Path(p) for p in exclude])
        except GitTimeout as error:
            info.status_timed_out = True
            reasons.append(str(error))
        except (GitUnavailable, NotARepository) as error:
            reasons.append(str(error))
        try:
            _remote(info, timeout)
        except (GitUnavailable, NotARepository) as error:
            reasons.append(str(error))
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


def refresh(info: GitInfo, exclude: Iterable[str] = (), timeout: float = 60.0) -> None:
    """Read the status again with a longer timeout, after :func:`inspect` timed out on it."""
    info.changed, info.untracked, info.excluded = [], [], []
    info.unavailable = None
    info.status_timed_out = False
    info.status_deferred = True
    try:
        _status(info, timeout, [Path(p) for p in exclude])
        _remote(info, timeout)
    except (GitUnavailable, NotARepository) as error:
        info.unavailable = str(error)
        return
    if info.unborn:
        info.unavailable = "the repository has no commits yet"


def _locate(info: GitInfo, directory: Path, timeout: float) -> None:
    args = [
        "rev-parse",
        "--show-toplevel",
        "--absolute-git-dir",
        "--git-common-dir",
        "--is-shallow-repository",
    ]
    lines = run_git(args, directory, timeout=timeout).stdout.decode("utf-8", "surrogateescape")
    top, git_dir, common, shallow = ([*lines.splitlines(), "", "", "", ""])[:4]
    info.root = top
    info.git_dir = git_dir
    info.common_dir = str((directory / common).resolve()) if common else git_dir
    info.shallow = shallow.strip() == "true"
    info.worktree = Path(info.common_dir) != Path(git_dir)
    info.read_from = "git"


def _status(info: GitInfo, timeout: float, exclude: list[Path]) -> None:
    assert info.root is not None
    args = ["status", "--porcelain=v2", "-z", "--branch", "--untracked-files=all"]
    raw = run_git(args, info.root, timeout=timeout).stdout.decode("utf-8", "surrogateescape")
    root = Path(info.root)
    skip = set()
    for path in exclude:
        try:
            skip.add(path.resolve().relative_to(root.resolve()).as_posix())
        except (ValueError, OSError):
            continue
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
            path = entry[2:]
            if any(path == s or path.startswith(s + "/") for s in skip):
                info.excluded.append(path)
            else:
                info.untracked.append(path)
    info.dirty = bool(info.changed or info.untracked)


def _remote(info: GitInfo, timeout: float) -> None:
    assert info.root is not None
    args = ["config", "-z", "--get-regexp", r"^remote\..*\.url$"]
    result = run_git(args, info.root, timeout=timeout, check=False)
    urls: dict[str, str] = {}
    for entry in result.stdout.decode("utf-8", "surrogateescape").split("\0"):
        key, _, value = entry.partition("\n")
        if key.startswith("remote.") and key.endswith(".url"):
            urls.setdefault(key[len("remote.") : -len(".url")], value)
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


# --- reading .git without git --------------------------------------------------------------------


def _find_dot_git(directory: Path) -> Path | None:
    for folder in (directory, *directory.parents):
        candidate = folder / ".git"
        if candidate.exists():
            return candidate
    return None


def _read_git_files(info: GitInfo, directory: Path) -> bool:
    """Fill commit, branch and remote from the files under ``.git`` (no git needed)."""
    try:
        dot_git = _find_dot_git(directory.resolve())
        if dot_git is None:
            return False
        git_dir = dot_git
        if dot_git.is_file():
            text = dot_git.read_text().strip()
            if not text.startswith("gitdir:"):
                return False
            git_dir = (dot_git.parent / text[len("gitdir:") :].strip()).resolve()
        common = git_dir
        if (git_dir / "commondir").is_file():
            common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
        head = (git_dir / "HEAD").read_text().strip()
    except OSError:
        return False
    info.root = str(dot_git.parent)
    info.git_dir = str(git_dir)
    info.common_dir = str(common)
    info.worktree = common != git_dir
    info.shallow = (common / "shallow").exists()
    info.read_from = "files"
    if head.startswith("ref:"):
        ref = head[4:].strip()
        info.branch = ref.removeprefix("refs/heads/")
        info.commit = _read_ref(git_dir, common, ref)
        info.unborn = info.commit is None
    elif _SHA.match(head):
        info.commit = head
        info.detached = True
    _choose_remote(info, _config_remotes(common / "config"))
    return True


def _read_ref(git_dir: Path, common: Path, ref: str) -> str | None:
    for base in (git_dir, common):
        path = base / ref
        if path.is_file():
            value = path.read_text().strip()
            return value if _SHA.match(value) else None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name.strip() == ref and _SHA.match(sha):
                return sha
    return None


def _config_remotes(path: Path) -> dict[str, str]:
    urls: dict[str, str] = {}
    section = None
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return urls
    for line in lines:
        line = line.strip()
        header = re.match(r'^\[remote\s+"(.+)"\]$', line)
        if header:
            section = header.group(1)
        elif line.startswith("["):
            section = None
        elif section and re.match(r"^url\s*=", line):
            urls.setdefault(section, line.split("=", 1)[1].strip().strip('"'))
    return urls


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
    result = run_git(["hash-object", "-t", "tree", "--stdin"], root, input=b"", timeout=timeout)
    return result.stdout.decode().strip()


def diff(info: GitInfo, max_bytes: int, timeout: float = 60.0) -> Diff:
    """The diff of the working tree against HEAD (staged and unstaged), binary files listed."""
    assert info.root is not None
    base = info.commit or empty_tree(info.root)
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
    """Run git, hashing all of stdout and keeping its first ``keep`` bytes."""
    deadline = time.monotonic() + timeout
    digest = hashlib.sha256()
    kept = bytearray()
    total = 0
    try:
        process = subprocess.Popen(
            ["git", *args],
            cwd=cwd,
            env=git_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError as error:
        raise GitUnavailable(f"git could not be run ({error})") from error
    assert process.stdout is not None
    try:
        while block := process.stdout.read(1 << 16):
            digest.update(block)
            total += len(block)
            if len(kept) < keep:
                kept += block[: keep - len(kept)]
            if time.monotonic() > deadline:
                raise GitUnavailable(f"`git {args[0]}` took longer than {timeout:g} s")
        code = process.wait(timeout=max(0.1, deadline - time.monotonic()))
    except (GitUnavailable, subprocess.TimeoutExpired) as error:
        process.kill()
        process.wait()
        raise GitUnavailable(f"`git {args[0]}` took longer than {timeout:g} s") from error
    finally:
        process.stdout.close()
    if code != 0:
        raise GitUnavailable(f"`git {args[0]}` failed with exit code {code}")
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
