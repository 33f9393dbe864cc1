"""Read-only DVC state of the data behind a run: every output and whether the workspace matches.

:func:`read_outputs` parses ``*.dvc`` files and ``dvc.lock`` (DVC 2 ``md5:`` and DVC 3
``hash: md5`` formats, ``.dir`` directory hashes) without importing DVC. :func:`data_status`
answers "does the workspace data still match what is recorded?" with DVC's own hashing rules
and its state cache (so unchanged files are not read again), without taking DVC's lock,
writing DVC files or touching a remote, within a time budget ("unknown" when over it).
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import logging
import os
import re
import sqlite3
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from mltrail.capture.git import (
    GIT_TIMEOUT,
    GitUnavailable,
    NotARepository,
    run_git,
    strip_credentials,
)

logger = logging.getLogger("mltrail.capture.dvc")

DATA_CHECK_BUDGET = 60.0
_VALUE_KEYS = ("md5", "etag", "checksum", "version_id")
_WALK_SKIP = {".git", ".hg", ".dvc", "node_modules", "__pycache__", ".venv", "venv", ".tox"}
#: MLflow stores a dataset digest in at most 36 characters: an md5 plus ".dir" fits exactly.
MAX_DIGEST = 36


class OverBudget(Exception):
    """The data check ran out of time."""


@dataclasses.dataclass
class DvcOutput:
    """One DVC-tracked output as recorded in a ``.dvc`` file or ``dvc.lock``."""

    path: str  # relative to the DVC root, "/"-separated
    hash: str | None
    hash_name: str | None
    dvc_format: str  # "3" (``hash: md5``), "2" (``md5:`` only), "1" (old lock files)
    isdir: bool
    size: int | None
    nfiles: int | None
    remote: str | None
    remote_url: str | None
    source: str  # the .dvc file or dvc.lock that records it
    stage: str | None
    cache: bool

    def dataset(self, git_commit: str | None, repo_url: str | None) -> dict[str, Any]:
        """The MLflow dataset input for this output: digest = its DVC hash."""
        source = {
            "path": self.path,
            "hash": self.hash,
            "remote": self.remote,
            "remote_url": self.remote_url,
            "git_commit": git_commit,
            "repo_url": repo_url,
            "dvc_file": self.source,
        }
        profile = {
            "hash_name": self.hash_name,
            "dvc_format": self.dvc_format,
            "size": self.size,
            "nfiles": self.nfiles,
            "isdir": self.isdir,
            "stage": self.stage,
        }
        return {
            "name": self.path,
            "digest": (self.hash or "")[:MAX_DIGEST],
            "source_type": "dvc",
            "source": json.dumps(source, sort_keys=True),
            "profile": json.dumps(profile, sort_keys=True),
            "tags": {"mlflow.data.context": "dvc"},
        }


@dataclasses.dataclass
class DvcInfo:
    root: str | None = None
    outputs: list[DvcOutput] = dataclasses.field(default_factory=list)
    default_remote: str | None = None
    remotes: dict[str, str] = dataclasses.field(default_factory=dict)
    files: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    unavailable: str | None = None
    seconds: float = 0.0

    def data_hash(self) -> str | None:
        """One digest of every output's path and hash (equal data gives equal digests)."""
        if not self.outputs:
            return None
        lines = sorted(f"{o.path}\0{o.hash}" for o in self.outputs)
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]

    def tags(self) -> dict[str, str]:
        tags: dict[str, str] = {}
        if self.unavailable:
            tags["mltrail.dvc.unavailable"] = self.unavailable
        if self.root is not None:
            tags["mltrail.dvc.outputs"] = str(len(self.outputs))
            data_hash = self.data_hash()
            if data_hash:
                tags["mltrail.dvc.data_hash"] = data_hash
        return tags

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["available"] = self.root is not None
        data["data_hash"] = self.data_hash()
        return data


# --- finding and parsing -----------------------------------------------------------------------


def find_root(start: Path, stop: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` that holds a ``.dvc`` folder (not above ``stop``)."""
    start = start.resolve()
    stop = stop.resolve() if stop else None
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
        if stop is not None and folder == stop:
            break
    return None


def inspect(start: Path, git_root: str | None = None, timeout: float = GIT_TIMEOUT) -> DvcInfo:
    """Read every output recorded in the ``*.dvc`` files and ``dvc.lock`` files of the repo.

    Args:
        start: where the code runs from; the DVC root is found at or above it.
        git_root: the git repository's root, when git works there (the DVC files are then
            listed with ``git ls-files``, else by walking the folders).
        timeout: seconds listing the DVC files may take.
    """
    began = time.monotonic()
    info = DvcInfo()
    root = find_root(start, Path(git_root) if git_root else None)
    if root is None and git_root:
        root = find_root(Path(git_root), Path(git_root))
    if root is None:
        info.unavailable = "not a DVC repository (no .dvc folder)"
        info.seconds = time.monotonic() - began
        return info
    info.root = str(root)
    config = read_config(root)
    info.default_remote = config.get("core", {}).get("remote")
    info.remotes = {
        name[len("remote ") :]: strip_credentials(values.get("url", ""))
        for name, values in config.items()
        if name.startswith("remote ")
    }
    info.files = list_dvc_files(root, use_git=git_root is not None, budget=timeout)
    seen: set[str] = set()
    for rel in info.files:
        try:
            outs = _parse_file(root, rel)
        except Exception as error:  # a broken file must not hide the others
            info.errors.append(f"{rel}: {type(error).__name__}: {error}")
            continue
        for out in outs:
            if out.path in seen:
                continue
            seen.add(out.path)
            out.remote = out.remote or info.default_remote
            out.remote_url = info.remotes.get(out.remote) if out.remote else None
            info.outputs.append(out)
    info.outputs.sort(key=lambda o: o.path)
    if info.errors and not info.outputs:
        info.unavailable = "could not read " + "; ".join(info.errors)[:500]
    info.seconds = time.monotonic() - began
    return info


def read_config(root: Path) -> dict[str, dict[str, str]]:
    """DVC's repository config (``.dvc/config`` then ``.dvc/config.local``) as sections."""
    sections: dict[str, dict[str, str]] = {}
    for name in ("config", "config.local"):
        try:
            lines = (root / ".dvc" / name).read_text(errors="replace").splitlines()
        except OSError:
            continue
        section = None
        for line in lines:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            header = re.match(r"^\[\s*'?(.+?)'?\s*\]$", line)
            if header:
                section = header.group(1).replace('"', "").strip()
                sections.setdefault(section, {})
            elif section and "=" in line:
                key, value = line.split("=", 1)
                sections[section][key.strip()] = value.strip()
    return sections


def list_dvc_files(root: Path, use_git: bool = True, budget: float = 5.0) -> list[str]:
    """``*.dvc`` and ``dvc.lock`` files under ``root``, relative to it, not git-ignored."""
    if use_git:
        try:
            args = ["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--"]
            result = run_git([*args, "*.dvc", "dvc.lock", "*/dvc.lock"], root, timeout=budget)
            names = result.stdout.decode("utf-8", "surrogateescape").split("\0")
            return sorted({n for n in names if n and (root / n).is_file()})
        except (GitUnavailable, NotARepository):
            pass
    deadline = time.monotonic() + budget
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _WALK_SKIP and not d.startswith(".")]
        for name in files:
            if name.endswith(".dvc") or name == "dvc.lock":
                found.append(Path(folder, name).relative_to(root).as_posix())
        if time.monotonic() > deadline:
            break
    # Do not descend into DVC outputs: their files are data, not DVC files.
    return sorted(found)


def _load_yaml(path: Path) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=loader)


def _parse_file(root: Path, rel: str) -> list[DvcOutput]:
    path = root / rel
    data = _load_yaml(path) or {}
    if not isinstance(data, dict):
        return []
    folder = Path(rel).parent
    if path.name == "dvc.lock":
        return _parse_lock(root, rel, folder, data)
    base = folder / data.get("wdir", ".") if isinstance(data.get("wdir"), str) else folder
    return [
        out
        for entry in data.get("outs") or []
        if (out := parse_output(entry, base, rel, None)) is not None
    ]


def _parse_lock(root: Path, rel: str, folder: Path, data: dict[str, Any]) -> list[DvcOutput]:
    outputs: list[DvcOutput] = []
    stages = data.get("stages")
    if isinstance(stages, dict):  # schema 2.0
        wdirs = stage_wdirs(root / folder / "dvc.yaml")
        for name, stage in stages.items():
            if not isinstance(stage, dict):
                continue
            wdir = wdirs.get(str(name).split("@")[0], ".")
            for entry in stage.get("outs") or []:
                out = parse_output(entry, folder / wdir, rel, str(name))
                if out is not None:
                    outputs.append(out)
        return outputs
    for name, stage in data.items():  # DVC 1 lock files: {stage: {outs: {path: md5}}}
        outs = stage.get("outs") if isinstance(stage, dict) else None
        if isinstance(outs, dict):
            for out_path, value in outs.items():
                out = parse_output({"path": out_path, "md5": value}, folder, rel, str(name))
                if out is not None:
                    out.dvc_format = "1"
                    outputs.append(out)
    return outputs


def stage_wdirs(dvc_yaml: Path) -> dict[str, str]:
    """Stage name -> ``wdir`` of the stages of a ``dvc.yaml`` that set one (``{}`` when it
    cannot be read): outputs in ``dvc.lock`` are relative to their stage's ``wdir``."""
    try:
        stages = (_load_yaml(dvc_yaml) or {}).get("stages") or {}
    except Exception:
        return {}
    return {
        str(name): stage["wdir"]
        for name, stage in stages.items()
        if isinstance(stage, dict) and isinstance(stage.get("wdir"), str)
    }


def parse_output(entry: Any, base: Path, source: str, stage: str | None) -> DvcOutput | None:
    """The output an ``outs`` entry of a ``.dvc`` file or ``dvc.lock`` stage records.

    Args:
        entry: the entry as parsed from YAML (a dict, or a bare path).
        base: the folder its path is relative to, from the DVC root.
        source: the ``.dvc``/``dvc.lock`` file it comes from.
        stage: the stage's name, for ``dvc.lock``.

    Returns:
        The output with its path from the DVC root and its hash, or None for a malformed entry.
    """
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        return None
    raw = entry["path"]
    if os.path.isabs(raw) or re.match(r"^[a-z0-9]+://", raw):
        path = raw  # an external output
    else:
        path = os.path.normpath(base / raw).replace(os.sep, "/")
    if "hash" in entry:
        hash_name, fmt = str(entry["hash"]), "3"
        value = entry.get(hash_name) or entry.get("md5")
    else:
        key = next((k for k in _VALUE_KEYS if entry.get(k)), None)
        value = entry.get(key) if key else None
        hash_name = "md5-dos2unix" if key == "md5" else key
        fmt = "2"
    value = str(value) if value else None
    return DvcOutput(
        path=path,
        hash=value,
        hash_name=hash_name,
        dvc_format=fmt,
        isdir=bool(value and value.endswith(".dir")),
        size=_int(entry.get("size")),
        nfiles=_int(entry.get("nfiles")),
        remote=entry.get("remote") if isinstance(entry.get("remote"), str) else None,
        remote_url=None,
        source=source,
        stage=stage,
        cache=entry.get("cache", True) is not False,
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- is the workspace data still what is recorded? ----------------------------------------------


@dataclasses.dataclass
class DataStatus:
    """Result of :func:`data_status`: "true", "false" or "unknown", with per-output details."""

    dirty: str
    outputs: dict[str, str]
    workspace_hashes: dict[str, str | None]
    seconds: float
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def data_status(info: DvcInfo, budget: float = DATA_CHECK_BUDGET) -> DataStatus:
    """Compare each output in the workspace with its recorded hash, like ``dvc status`` does.

    Unchanged files are recognised through DVC's state cache (inode, mtime and size mapped to
    a known hash), so only new or modified files are read. No DVC lock is taken and no
    ``.dvc`` file, cache object or remote is touched. Directory hashes are DVC's own ``.dir``
    hashes, so ``workspace_hashes`` holds what ``dvc add`` would record now.
    """
    began = time.monotonic()
    deadline = began + budget
    statuses: dict[str, str] = {}
    actual: dict[str, str | None] = {}
    assert info.root is not None
    root = Path(info.root)
    checked = [o for o in info.outputs if o.hash and "://" not in o.path]
    hasher = _Hasher(root, deadline)
    try:
        for out in checked:
            path = root / out.path
            if not path.exists():
                statuses[out.path], actual[out.path] = "deleted", None
                continue
            value = hasher.hash(path, out)
            actual[out.path] = value
            statuses[out.path] = "unchanged" if value == out.hash else "modified"
    except OverBudget:
        return DataStatus(
            "unknown",
            statuses,
            actual,
            time.monotonic() - began,
            f"the data check took longer than its budget of {budget:g} s",
        )
    finally:
        hasher.close()
    dirty = any(s != "unchanged" for s in statuses.values())
    return DataStatus("true" if dirty else "false", statuses, actual, time.monotonic() - began)


class _Hasher:
    """DVC's hashes of workspace files and folders, reusing DVC's state cache when it can."""

    def __init__(self, root: Path, deadline: float) -> None:
        self.root = root
        self.deadline = deadline
        self._state: StateReader | None = None
        self._opened = False
        self._ignore_rules = _has_ignore_rules(root)

    def close(self) -> None:
        if self._state is not None:
            self._state.close()

    def _check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise OverBudget()

    @property
    def state(self) -> StateReader | None:
        if not self._opened:
            self._opened = True
            self._state = StateReader.open(self.root)
        return self._state

    def hash(self, path: Path, out: DvcOutput) -> str | None:
        name = out.hash_name or "md5"
        if name not in {"md5", "md5-dos2unix"} or self._ignore_rules:
            return _dvc_build_hash(self.root, path, name)
        if path.is_dir():
            return self._tree_hash(path, name)
        return self._file_hashes({str(path): os.stat(path)}, name)[str(path)]

    def _tree_hash(self, folder: Path, name: str) -> str | None:
        stats: dict[str, os.stat_result] = {}
        base = str(folder)
        for current, dirs, files in os.walk(base):
            # DVC's default ignore list; a .dvcignore inside an output needs DVC itself.
            dirs[:] = [d for d in dirs if d not in {".git", ".hg", ".dvc"}]
            if ".dvcignore" in files:
                return _dvc_build_hash(self.root, folder, name)
            for file in files:
                if file == ".git":
                    continue
                full = f"{current}{os.sep}{file}"
                try:
                    stats[full] = os.stat(full)  # DVC follows symlinks for its state key too
                except OSError:
                    continue
            self._check_time()
        hashes = self._file_hashes(stats, name)
        skip = len(base) + 1
        entries = [
            {"md5": value, "relpath": p[skip:].replace(os.sep, "/")} for p, value in hashes.items()
        ]
        entries.sort(key=lambda e: e["relpath"])
        # DVC's tree object: the JSON list of entries; its md5 plus ".dir" (dvc_data Tree.digest).
        text = json.dumps(entries, sort_keys=True).encode("utf-8")
        return hashlib.md5(text, usedforsecurity=False).hexdigest() + ".dir"

    def _file_hashes(self, stats: dict[str, os.stat_result], name: str) -> dict[str, str]:
        hashes = self.state.lookup(stats, name) if self.state is not None else {}
        for path in stats:
            if path not in hashes:
                self._check_time()
                hashes[path] = _content_md5(path, name)
        return hashes


class StateReader:
    """Read-only access to DVC's state cache: path -> (inode, mtime, size) -> known hash.

    The database is opened read-only (``mode=ro``), so no DVC process is blocked or changed.
    An entry counts only when its checksum matches the file's current inode, mtime and size,
    the rule of ``dvc_data.hashfile.state.State``.
    """

    VERSION = 1

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    @classmethod
    def open(cls, root: Path) -> StateReader | None:
        folder = site_cache_dir(root)
        path = folder / "hashes" / "local" / "cache.db" if folder else None
        if path is None or not path.is_file():
            return None
        try:
            db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1.0)
            db.execute("SELECT key, value, raw FROM Cache LIMIT 0")
        except sqlite3.Error:
            return None
        return cls(db)

    def close(self) -> None:
        self._db.close()

    def lookup(self, stats: dict[str, os.stat_result], name: str) -> dict[str, str]:
        found: dict[str, str] = {}
        if name != "md5":
            return found  # DVC 2 (md5-dos2unix) state entries are not reused
        paths = list(stats)
        for i in range(0, len(paths), 900):
            chunk = paths[i : i + 900]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, value FROM Cache WHERE key IN ({marks}) AND raw = 1"
            try:
                rows = self._db.execute(query, chunk).fetchall()
            except sqlite3.Error:
                return found
            for key, raw in rows:
                value = self._match(raw, stats[key])
                if value:
                    found[key] = value
        return found

    def _match(self, raw: Any, st: os.stat_result) -> str | None:
        try:
            entry = json.loads(raw)
            version = entry.get("version")
            if version is None or version > self.VERSION or entry["checksum"] != state_key(st):
                return None
            value = entry["hash_info"].get("md5")
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return value if isinstance(value, str) else None


def state_key(st: os.stat_result) -> str:
    """DVC's state checksum of a file: ``str(int(tokenize([inode, mtime, size]), 16))``."""
    text = str(([st.st_ino, st.st_mtime, st.st_size],))
    return str(int(hashlib.md5(text.encode(), usedforsecurity=False).hexdigest(), 16))


def _content_md5(path: str, name: str) -> str:
    if name == "md5":
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    from dvc_data.hashfile.hash import file_md5

    return file_md5(path, name=name)


def _has_ignore_rules(root: Path) -> bool:
    try:
        lines = (root / ".dvcignore").read_text(errors="replace").splitlines()
    except OSError:
        return False
    return any(line.strip() and not line.lstrip().startswith("#") for line in lines)


def site_cache_dir(root: Path) -> Path | None:
    """Where DVC keeps this repository's state cache (the rule of ``dvc.repo.Repo``)."""
    btime_file = root / ".dvc" / "tmp" / "btime"
    if not btime_file.exists():
        return None  # DVC never ran a command here, so there is no state yet
    config = read_config(root).get("core", {})
    base = os.environ.get("DVC_SITE_CACHE_DIR") or config.get("site_cache_dir")
    if not base:
        base = "/var/tmp/dvc" if os.name == "posix" else None
    if base is None:
        import platformdirs

        base = platformdirs.site_cache_dir("dvc", "iterative", opinion=True)
    try:
        major = int(metadata.version("dvc").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return None
    token = str((str(root), None, os.path.getmtime(btime_file), getpass.getuser(), major, 0))
    return Path(base, "repo", hashlib.md5(token.encode(), usedforsecurity=False).hexdigest())


def _dvc_build_hash(root: Path, path: Path, name: str) -> str | None:
    """Hash ``path`` with DVC's full machinery (``.dvcignore`` rules, other hash types)."""
    from dvc.repo import Repo
    from dvc_data.hashfile.build import build

    repo = Repo(str(root))
    try:
        odb = repo.cache.legacy if name == "md5-dos2unix" else repo.cache.local
        _, _, obj = build(odb, str(path), repo.fs, name, ignore=repo.dvcignore, dry_run=True)
        return obj.hash_info.value
    finally:
        repo.close()
