"""DVC data of a run: snapshots of modified data, the data a run used, restore by hash, push.

With ``snapshot_data=True``, when DVC-tracked data in the workspace differs from its ``.dvc``
(or ``dvc.lock``) record at run start, :func:`snapshot` stores the current data in the DVC
cache, content-addressed like ``dvc commit`` does, without touching the user's ``.dvc`` files,
``dvc.lock`` or workspace. The hashes go on the run (``provenance.json``, the tag
``mltrail.dvc.data_snapshot`` and dataset inputs with the context ``dvc.snapshot``) and into the
hidden snapshot commit: its tree holds copies of the ``.dvc``/``dvc.lock`` files that record the
snapshot hashes, so ``git checkout <snapshot> && dvc checkout`` restores the data too.

:func:`run_outputs` says which hash each output had when a run used it, and
:func:`restore_outputs` brings those versions back from the local DVC cache or a DVC remote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mltrail.capture import dvc as dvc_capture
from mltrail.capture.git import git_env, run_git

logger = logging.getLogger("mltrail.datasnap")

SNAPSHOT_CONTEXT = "dvc.snapshot"
_HASH_KEYS = ("md5", "etag", "checksum", "version_id", "hash", "size", "nfiles")


@contextlib.contextmanager
def dvc_repo(root: str | os.PathLike[str]) -> Iterator[Any]:
    """DVC's ``Repo`` at ``root``, with DVC's own logging kept to errors."""
    from dvc.repo import Repo

    dvc_logger = logging.getLogger("dvc")
    level = dvc_logger.level
    if not logger.isEnabledFor(logging.DEBUG):
        dvc_logger.setLevel(logging.ERROR)
    repo = Repo(str(root))
    try:
        yield repo
    finally:
        repo.close()
        dvc_logger.setLevel(level)


# --- storing modified data at run start ----------------------------------------------------------


@dataclasses.dataclass
class DataSnapshot:
    """What :func:`snapshot` stored: per output path its new hash, and the snapshot commit."""

    outputs: dict[str, dict[str, Any]]
    failed: dict[str, str]
    files: dict[str, dict[str, str | None]]  # git path of a .dvc/dvc.lock -> original/snapshot blob
    commit: str | None = None
    tree: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def datasets(self, git_commit: str | None, repo_url: str | None) -> list[dict[str, Any]]:
        """MLflow dataset inputs for the stored data (context ``dvc.snapshot``)."""
        import json

        found = []
        for path, stored in sorted(self.outputs.items()):
            source = {
                "path": path,
                "hash": stored["hash"],
                "snapshot_commit": self.commit,
                "git_commit": git_commit,
                "repo_url": repo_url,
            }
            found.append(
                {
                    "name": path,
                    "digest": stored["hash"][: dvc_capture.MAX_DIGEST],
                    "source_type": "dvc",
                    "source": json.dumps(source, sort_keys=True),
                    "profile": json.dumps(
                        {k: stored.get(k) for k in ("size", "nfiles", "isdir", "recorded")},
                        sort_keys=True,
                    ),
                    "tags": {"mlflow.data.context": SNAPSHOT_CONTEXT},
                }
            )
        return found


def snapshot(
    info: dvc_capture.DvcInfo,
    status: dvc_capture.DataStatus,
    git_root: str | None = None,
    base: str | None = None,
    parent: str | None = None,
    ref: str | None = None,
    message: str = "mltrail data snapshot",
) -> DataSnapshot:
    """Store every modified output in the DVC cache; with ``ref``, commit the snapshot tree.

    Args:
        info: the DVC outputs as recorded (:func:`mltrail.capture.dvc.inspect`).
        status: the data check (:func:`mltrail.capture.dvc.data_status`) saying what changed.
        git_root: the git repository; without it no commit is made.
        base: the tree or commit the snapshot commit starts from (the code snapshot, or HEAD).
        parent: the parent of the snapshot commit (HEAD; None on an unborn branch).
        ref: the ref to store the snapshot commit under.
        message: its commit message.
    """
    assert info.root is not None
    root = Path(info.root)
    modified = [
        out
        for out in info.outputs
        if status.outputs.get(out.path) == "modified" and out.cache and not _external(out.path)
    ]
    result = DataSnapshot({}, {}, {})
    if not modified:
        return result
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.transfer import transfer

    with dvc_repo(root) as repo:
        odb = repo.cache.local
        for out in modified:
            try:
                staging, meta, obj = build(
                    odb, str(root / out.path), repo.fs, "md5", ignore=repo.dvcignore
                )
                # A copy into the cache: the workspace files are never relinked or protected.
                transfer(staging, odb, {obj.hash_info}, shallow=False, hardlink=False)
            except Exception as error:
                logger.debug("storing %s failed", out.path, exc_info=True)
                result.failed[out.path] = f"{type(error).__name__}: {error}"
                continue
            result.outputs[out.path] = {
                "hash": obj.hash_info.value,
                "hash_name": "md5",
                "size": meta.size,
                "nfiles": meta.nfiles,
                "isdir": bool(meta.isdir),
                "recorded": out.hash,
                "source": out.source,
            }
    if result.outputs and git_root and ref:
        _commit_snapshot(result, info, Path(git_root), base, parent, ref, message)
    return result


def _external(path: str) -> bool:
    return "://" in path or os.path.isabs(path)


def _commit_snapshot(
    result: DataSnapshot,
    info: dvc_capture.DvcInfo,
    git_root: Path,
    base: str | None,
    parent: str | None,
    ref: str,
    message: str,
) -> None:
    """Write copies of the .dvc/dvc.lock files recording the snapshot hashes into a commit."""
    from mltrail.capture.snapshot import IDENTITY

    assert info.root is not None
    prefix = Path(os.path.relpath(Path(info.root).resolve(), git_root.resolve())).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    sources = sorted({stored["source"] for stored in result.outputs.values()})
    with tempfile.TemporaryDirectory(prefix="mltrail-datasnap-") as work:
        env = git_env({"GIT_INDEX_FILE": str(Path(work) / "index"), **IDENTITY})
        if base:
            run_git(["read-tree", base], git_root, env=env, timeout=60)
        for source in sources:
            git_path = prefix + source
            original = _blob(git_root, base, git_path)
            text = (
                run_git(["cat-file", "blob", original], git_root).stdout.decode()
                if original
                else (Path(info.root) / source).read_text(encoding="utf-8")
            )
            updated = update_dvc_file(text, source, result.outputs, Path(info.root))
            blob = (
                run_git(["hash-object", "-w", "--stdin"], git_root, input=updated.encode())
                .stdout.decode()
                .strip()
            )
            run_git(
                ["update-index", "--add", "--cacheinfo", f"100644,{blob},{git_path}"],
                git_root,
                env=env,
            )
            result.files[git_path] = {"original": original, "snapshot": blob}
        tree = run_git(["write-tree"], git_root, env=env, timeout=60).stdout.decode().strip()
        args = ["commit-tree", tree, "--no-gpg-sign", "-m", message]
        if parent:
            args += ["-p", parent]
        commit = run_git(args, git_root, env=env).stdout.decode().strip()
        run_git(["update-ref", "-m", "mltrail data snapshot", ref, commit], git_root, env=env)
    result.commit, result.tree = commit, tree


def _blob(git_root: Path, base: str | None, path: str) -> str | None:
    if not base:
        return None
    found = run_git(["rev-parse", "--verify", "-q", f"{base}:{path}"], git_root, check=False)
    if found.returncode != 0:
        return None
    return found.stdout.decode().strip() or None


def update_dvc_file(
    text: str, source: str, stored: dict[str, dict[str, Any]], dvc_root: Path
) -> str:
    """``text`` of the ``.dvc`` or ``dvc.lock`` file ``source`` with the stored hashes in it."""
    from dvc.utils.serialize import dumps_yaml, parse_yaml_for_update

    data = parse_yaml_for_update(text, source)
    folder = Path(source).parent
    if Path(source).name == "dvc.lock":
        wdirs = dvc_capture.stage_wdirs(dvc_root / folder / "dvc.yaml")
        for name, stage in (data.get("stages") or {}).items():
            base = folder / wdirs.get(str(name).split("@")[0], ".")
            _update_entries(stage.get("outs") or [], base, source, stored)
    else:
        wdir = data.get("wdir")
        base = folder / wdir if isinstance(wdir, str) else folder
        _update_entries(data.get("outs") or [], base, source, stored)
    return dumps_yaml(data)


def _update_entries(
    entries: list[Any], base: Path, source: str, stored: dict[str, dict[str, Any]]
) -> None:
    for entry in entries:
        out = dvc_capture.parse_output(entry, base, source, None)
        if out is None or out.path not in stored or not isinstance(entry, dict):
            continue
        new = stored[out.path]
        path = entry["path"]
        extra = {k: v for k, v in entry.items() if k not in _HASH_KEYS and k != "path"}
        entry.clear()
        entry["md5"] = new["hash"]
        entry["size"] = new["size"]
        if new["isdir"]:
            entry["nfiles"] = new["nfiles"]
        entry["hash"] = "md5"
        entry["path"] = path
        entry.update(extra)


# --- the data a run used -------------------------------------------------------------------------


@dataclasses.dataclass
class RunOutput:
    """One DVC output as a run used it.

    ``hash`` is the version the run read (None when it is unknown or the output was absent);
    ``recorded`` is what its ``.dvc``/``dvc.lock`` file said. They differ when the data was
    modified without ``dvc add``; ``snapshot`` is True when mltrail stored that data.
    """

    path: str
    hash: str | None
    hash_name: str
    recorded: str | None
    recorded_hash_name: str
    status: str  # unchanged, modified, deleted or unknown
    snapshot: bool = False
    isdir: bool = False
    remote: str | None = None
    source: str | None = None
    cache: bool = True

    @property
    def external(self) -> bool:
        return _external(self.path)


def run_outputs(record: dict[str, Any] | None, datasets: list[Any] = ()) -> list[RunOutput]:
    """The outputs of a run from its ``provenance.json`` (else from its dataset inputs)."""
    dvc = (record or {}).get("dvc") or {}
    if not dvc.get("outputs"):
        return _outputs_from_datasets(datasets)
    status = dvc.get("data_status") or {}
    statuses = status.get("outputs") or {}
    workspace = status.get("workspace_hashes") or {}
    stored = ((dvc.get("data_snapshot") or {}).get("outputs")) or {}
    found = []
    for out in dvc["outputs"]:
        path = out["path"]
        name = _hash_name(out.get("hash_name"))
        state = statuses.get(path) or "unknown"
        used, used_name, snap = out.get("hash"), name, False
        if path in stored:
            used, used_name, snap, state = stored[path]["hash"], "md5", True, "modified"
        elif state == "modified":
            used = workspace.get(path)
        elif state == "deleted":
            used = None
        found.append(
            RunOutput(
                path=path,
                hash=used,
                hash_name=used_name,
                recorded=out.get("hash"),
                recorded_hash_name=name,
                status=state,
                snapshot=snap,
                isdir=bool(used and used.endswith(".dir")),
                remote=out.get("remote"),
                source=out.get("source"),
                cache=out.get("cache", True) is not False,
            )
        )
    return found


def _hash_name(name: str | None) -> str:
    return "md5-dos2unix" if name == "md5-dos2unix" else "md5"


def _outputs_from_datasets(datasets: list[Any]) -> list[RunOutput]:
    """A run without provenance.json (it crashed before the end): its dataset inputs."""
    import json

    found: dict[str, RunOutput] = {}
    for item in datasets:
        dataset = getattr(item, "dataset", item)
        if getattr(dataset, "source_type", None) != "dvc":
            continue
        try:
            source = json.loads(dataset.source)
        except (TypeError, ValueError):
            continue
        if not isinstance(source, dict) or not source.get("path") or not source.get("hash"):
            continue
        context = {t.key: t.value for t in getattr(item, "tags", []) or []}
        snap = context.get("mlflow.data.context") == SNAPSHOT_CONTEXT
        path, value = source["path"], source["hash"]
        if path in found and not snap:
            continue
        previous = found.get(path)
        found[path] = RunOutput(
            path=path,
            hash=value,
            hash_name="md5",
            recorded=previous.recorded if previous else value,
            recorded_hash_name="md5",
            status="modified" if snap else "unknown",
            snapshot=snap,
            isdir=value.endswith(".dir"),
            remote=source.get("remote") or (previous.remote if previous else None),
            source=source.get("dvc_file") or (previous.source if previous else None),
        )
    return sorted(found.values(), key=lambda o: o.path)


# --- restoring ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Restored:
    """The outcome of restoring one output."""

    path: str
    state: str  # restored, unverified, not_exact, missing or skipped
    hash: str | None = None
    origin: str | None = None  # "cache" or "remote <name>"
    note: str = ""

    @property
    def exact(self) -> bool:
        return self.state == "restored"


def restore_outputs(
    dvc_root: str | os.PathLike[str],
    outputs: list[RunOutput],
    remote: str | None = None,
    callback: Any = None,
) -> list[Restored]:
    """Check out every output at the hash the run used, fetching what the cache lacks.

    Objects come from the local DVC cache, else from the output's remote (or ``remote``, else
    the default remote). When the version the run used is nowhere, the recorded version is
    restored instead and reported as ``not_exact``. ``callback`` (an fsspec ``Callback``)
    follows the fetches from the remote, as DVC reports them.
    """
    results = []
    with dvc_repo(dvc_root) as repo:
        for out in outputs:
            try:
                results.append(_restore_one(repo, Path(dvc_root), out, remote, callback))
            except Exception as error:
                logger.debug("restoring %s failed", out.path, exc_info=True)
                results.append(Restored(out.path, "missing", out.hash, None, error_reason(error)))
    return results


def error_reason(error: BaseException) -> str:
    """``Type: first line of the message``: why a DVC operation failed, on one line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _restore_one(
    repo: Any, root: Path, out: RunOutput, remote: str | None, callback: Any = None
) -> Restored:
    from dvc_data.hashfile.checkout import checkout

    if out.external:
        return Restored(out.path, "skipped", out.hash, note="an external output, not restored")
    if not out.cache:
        return Restored(out.path, "skipped", out.hash, note="not cached by DVC (cache: false)")
    candidates = [(out.hash, out.hash_name)] if out.hash else []
    if out.recorded and out.recorded != out.hash:
        candidates.append((out.recorded, out.recorded_hash_name))
    if not candidates:
        return Restored(out.path, "skipped", None, note="the output did not exist at run time")
    notes = []
    for value, name in candidates:
        odb = repo.cache.legacy if name == "md5-dos2unix" else repo.cache.local
        obj, origin = _object(repo, odb, value, name, out.remote or remote, notes, callback)
        if obj is None:
            continue
        checkout(str(root / out.path), repo.fs, obj, odb, force=True, state=repo.state)
        if value != out.hash:
            note = (
                "the run used modified data that was not saved (set snapshot_data=True); "
                f"restored the version recorded in {out.source or 'its .dvc file'} instead"
            )
            if out.hash is None:
                note = "the run's version is unknown; restored the recorded version"
            return Restored(out.path, "not_exact", value, origin, note)
        if out.status == "unknown":
            note = "the run's data check did not finish: the data it read is not verified"
            return Restored(out.path, "unverified", value, origin, note)
        return Restored(out.path, "restored", value, origin)
    return Restored(out.path, "missing", out.hash, note="; ".join(notes))


def _object(
    repo: Any,
    odb: Any,
    value: str,
    name: str,
    remote: str | None,
    notes: list[str],
    callback: Any = None,
) -> tuple[Any, str | None]:
    """The object ``value`` from the cache, fetching it from the remote when needed."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.transfer import transfer
    from fsspec.callbacks import DEFAULT_CALLBACK

    callback = callback or DEFAULT_CALLBACK
    info = HashInfo(name, value)
    obj = _complete(odb, info)
    if obj is not None:
        return obj, "cache"
    try:
        remote_odb = repo.cloud.get_remote_odb(remote, "fetch", hash_name=name)
    except Exception as error:
        notes.append(f"{value} is not in the DVC cache and there is no usable remote ({error})")
        return None, None
    label = f"remote {remote or repo.config['core'].get('remote') or ''}".strip()
    # First the object itself (for a directory, its listing), then a directory's files.
    transfer(remote_odb, odb, [info], shallow=True, callback=callback)
    if info.isdir and odb.exists(value):
        transfer(remote_odb, odb, [info], shallow=False, cache_odb=odb, callback=callback)
    obj = _complete(odb, info)
    if obj is None:
        notes.append(f"{value} is neither in the DVC cache nor on {label}")
        return None, None
    return obj, label


def _complete(odb: Any, info: Any) -> Any:
    """The object when it and (for a directory) all its files are in ``odb``, else None."""
    from dvc_data.hashfile import load
    from dvc_data.hashfile.tree import Tree

    try:
        obj = load(odb, info)
    except (FileNotFoundError, OSError, ValueError):
        return None
    if isinstance(obj, Tree):
        return obj if all(odb.exists(oid.value) for _, _, oid in obj) else None
    return obj if odb.exists(info.value) else None


def in_cache(dvc_root: str | os.PathLike[str], hashes: dict[str, tuple[str, str]]) -> set[str]:
    """The paths of ``hashes`` (path -> (hash, hash name)) whose data is in the local cache."""
    from dvc_data.hashfile.hash_info import HashInfo

    found = set()
    with dvc_repo(dvc_root) as repo:
        for path, (value, name) in hashes.items():
            odb = repo.cache.legacy if name == "md5-dos2unix" else repo.cache.local
            if _complete(odb, HashInfo(name, value)) is not None:
                found.add(path)
    return found


def cache_dir(dvc_root: str | os.PathLike[str]) -> str | None:
    """The local DVC cache folder of the repository at ``dvc_root``."""
    with dvc_repo(dvc_root) as repo:
        return repo.cache.local_cache_dir


def share_cache(target: Path, source: Path) -> None:
    """Make the DVC repository at ``target`` use ``source``'s local config and cache.

    ``target`` is a new worktree of the same project: its ``.dvc/config.local`` (not in git)
    becomes a copy of ``source``'s, pointing at ``source``'s cache, so nothing is copied twice.
    """
    from dvc.config import Config

    local = source / ".dvc" / "config.local"
    if local.is_file():
        (target / ".dvc" / "config.local").write_bytes(local.read_bytes())
    folder = cache_dir(source)
    if folder:
        config = Config(dvc_dir=str(target / ".dvc"))
        with config.edit("local") as conf:
            conf["cache"]["dir"] = folder


def push_revisions(
    dvc_root: str | os.PathLike[str], revisions: list[str], remote: str | None = None
) -> int:
    """Push the DVC data the ``.dvc``/``dvc.lock`` files of ``revisions`` record; returns the
    number of objects uploaded."""
    with dvc_repo(dvc_root) as repo:
        return int(repo.push(revs=revisions, workspace=False, remote=remote) or 0)
