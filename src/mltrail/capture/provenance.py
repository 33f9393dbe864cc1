"""Provenance of a run: the code (git), data (DVC) and environment it was started from.

:func:`capture_run` is called by ``start_run`` on the calling thread. It does only the fast
reads there (a few bounded ``git`` calls, parsing ``.dvc``/``dvc.lock`` files) and sets the tags
and dataset inputs they give; the slow work (the diff, the snapshot commit, the data check, the
package list) runs on a daemon thread and lands on the run through the same :class:`Trail`.
``Trail.end()`` calls :meth:`RunProvenance.finish`, which waits (bounded) for that thread, sets
``mltrail.fingerprint`` and writes ``mltrail/provenance.json``.

``provenance.json`` (``schema_version`` 1) holds:

- ``run_id``, ``resume`` (0, or the resume count when the run was resumed), ``captured_at``
  (ISO 8601 UTC), ``complete`` (false when the background capture ran out of time), ``errors``.
- ``git``: ``available``, ``unavailable``, ``root``, ``found_from`` ("script" or "cwd"),
  ``commit``, ``branch``, ``detached``, ``unborn``, ``shallow``, ``worktree``, ``remote``,
  ``repo_url``, ``dirty``, ``changed`` ([{path, status}]), ``untracked`` (paths),
  ``excluded`` (the MLflow store's own paths, a folder once), ``outputs`` (untracked files
  written after the training started: its outputs, not in the snapshot), ``untracked_sha256``, ``diff`` ({artifact,
  sha256, bytes, truncated, files, binary_files, insertions, deletions}) and ``snapshot``
  ({commit, tree, ref, parent, skipped}) when dirty.
- ``dvc``: ``available``, ``unavailable``, ``root``, ``default_remote``, ``remotes``
  ({name: url}), ``files``, ``outputs`` ([{path, hash, hash_name, dvc_format, isdir, size,
  nfiles, remote, remote_url, source, stage, cache}]), ``data_hash``, ``data_status``
  ({dirty, outputs: {path: unchanged|modified|deleted}, workspace_hashes, seconds, reason}),
  ``data_snapshot`` (with ``snapshot_data``, when data was modified: {outputs: {path: {hash,
  hash_name, size, nfiles, isdir, recorded, source}}, failed: {path: reason}, files: {git path
  of a .dvc/dvc.lock: {original, snapshot} blob ids}, commit, tree}; see
  :mod:`mltrail.capture.datasnap`).
- ``environment``: ``python``, ``platform``, ``cpu``, ``memory_bytes``, ``gpus``, ``command``
  ({argv, entry_script, cwd}), ``variables`` (allow-listed), ``versions`` (mltrail, mlflow,
  dvc), ``packages`` (count; the list is ``mltrail/requirements.txt``).
- ``fingerprint``: ``value`` and its ``code``, ``data`` and ``params`` components.
- ``notebook`` (a run started in a Jupyter kernel, else null): ``path``, ``found_by``,
  ``reason``, ``kernel_id``, ``cells``, ``sha256``, ``bytes``, ``artifact``,
  ``history_artifact`` (see :mod:`mltrail.capture.notebook`).
- ``hydra`` (a run inside a Hydra app, else null): ``job_name``, ``multirun``, ``role``,
  ``job_num``, ``overrides``, ``choices``, ``config_name``, ``output_dir``, ``sweep_dir``,
  ``original_cwd``, ``output_subdir``, ``rerun_args``, ``excluded``, ``config_artifact``
  (see :mod:`mltrail.capture.hydra`).
- ``timing``: ``calling_thread_seconds``, ``background_seconds``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from mltrail.capture import dvc as dvc_capture
from mltrail.capture import git as git_capture
from mltrail.digest import file_sha256
from mltrail.errors import ErrorCounter, MltrailError, guarded

logger = logging.getLogger("mltrail.provenance")

SCHEMA_VERSION = 1
PROVENANCE_ARTIFACT = "mltrail/provenance.json"
DIFF_ARTIFACT = "mltrail/git.diff"
REQUIREMENTS_ARTIFACT = "mltrail/requirements.txt"
#: The longest ``end()`` waits for the background capture before writing what it has.
FINISH_TIMEOUT = 60.0
#: Seconds each git call may take on the calling thread; slower work moves to the background.
CALLING_TIMEOUT = 2.0
_MAX_LISTED = 1000  # paths listed in provenance.json per list

_MLFLOW_GIT_TAGS = {
    "mlflow.source.git.commit": "git.commit",
    "mlflow.source.git.branch": "git.branch",
    "mlflow.source.git.repoURL": "git.repoURL",
}


class RecordingRun(Protocol):
    """What the capture needs of the run it records: :class:`mltrail.Trail` is one.

    The capture writes through the run's public API only, like an adapter; the run starts the
    capture (:func:`capture_run`) and ends it (:meth:`RunProvenance.finish`).
    """

    enabled: bool
    run_id: str | None
    experiment_id: str | None
    tracking_uri: str
    options: Any  # mltrail.config.Options
    resumed: bool
    resume_count: int
    attached_tags: dict[str, str]
    offline: bool
    client: Any
    status: str | None

    @property
    def params(self) -> dict[str, str]: ...

    @property
    def error_counter(self) -> ErrorCounter: ...

    @property
    def store_unreachable(self) -> bool: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def log_dict(self, data: Any, artifact_file: str) -> None: ...

    def log_inputs(self, datasets: Iterable[Mapping[str, Any]]) -> None: ...


def capture_run(trail: RecordingRun, started: float | None = None) -> RunProvenance | None:
    """Capture the provenance of ``trail``'s run: fast reads now, the rest in the background.

    ``started``: when the run's training started (seconds since the epoch; default now).
    Untracked files written since are the training's outputs, not its code.

    Returns the object whose ``finish(trail)`` completes the capture at the end of the run.
    """
    if not trail.enabled or not trail.run_id:
        return None
    provenance = RunProvenance(trail, started)
    provenance.start(trail)
    return provenance


def store_paths(trail: Any) -> list[str]:
    """Files of the MLflow store and the spool: they are not the user's code."""
    paths: list[Path] = []
    uri = str(getattr(trail, "tracking_uri", "") or "")
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :]).expanduser()
        paths += [db.with_name(db.name + suffix) for suffix in ("", "-journal", "-wal", "-shm")]
        paths += [db.with_name(db.name + ".mltrail.lock"), db.parent / "mlartifacts"]
        paths.append(db.parent / "mlruns")
    elif uri.startswith("file:") or (uri and "://" not in uri):
        paths.append(Path(uri.removeprefix("file://").removeprefix("file:")))
    paths.append(Path.cwd() / "mlruns")
    spool = getattr(getattr(trail, "options", None), "spool_dir", None)
    if spool:
        paths.append(Path(spool))
    return [str(p.absolute()) for p in paths]


class RunProvenance:
    """The provenance capture of one run (see the module docstring for what it records)."""

    def __init__(self, trail: RecordingRun, started: float | None = None) -> None:
        assert trail.run_id is not None
        self.run_id: str = trail.run_id
        self.options = trail.options
        self.resume: int = trail.resume_count if trail.resumed else 0
        self.previous: dict[str, str] = dict(getattr(trail, "attached_tags", None) or {})
        self.git = git_capture.GitInfo()
        self.dvc = dvc_capture.DvcInfo()
        self.diff: git_capture.Diff | None = None
        self.snapshot: Any = None
        self.untracked_sha256: str | None = None
        self.data: dvc_capture.DataStatus | None = None
        self.environment: dict[str, Any] = {}
        self.script_sha256: str | None = None
        self.record: dict[str, Any] = {}
        self.failures: list[tuple[str, BaseException]] = []
        self.fingerprint: dict[str, Any] | None = None
        self.data_snapshot: Any = None  # mltrail.capture.datasnap.DataSnapshot, with snapshot_data
        self.already: Any = None  # mltrail.capture.already_run.AlreadyRunCheck
        self.notebook: Any = None  # mltrail.capture.notebook.NotebookInfo, in a Jupyter kernel
        self.hydra: Any = None  # mltrail.capture.hydra.HydraInfo, inside a Hydra app
        self._trail = trail
        self._lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._exclude: list[str] = []
        self.started = time.time() if started is None else started  # the training's start
        self._calling_seconds = 0.0
        self._background_seconds = 0.0
        self._captured_at = datetime.datetime.now(datetime.UTC).isoformat()

    # --- names ---------------------------------------------------------------------------------

    def key(self, tag: str) -> str:
        """The tag name for this capture: on a resumed run, ``mltrail.resume.<n>.<name>``, so
        the state at the first start stays on the run."""
        if not self.resume:
            return tag
        short = _MLFLOW_GIT_TAGS.get(tag, tag.removeprefix("mltrail."))
        return f"mltrail.resume.{self.resume}.{short}"

    def artifact(self, name: str) -> str:
        if not self.resume:
            return name
        folder, _, file = name.rpartition("/")
        return f"{folder}/resume-{self.resume}/{file}"

    def _tags(self, tags: dict[str, str]) -> None:
        with self._lock:
            if not self._closed:
                self._trail.set_tags({self.key(k): v for k, v in tags.items()})

    # --- the calling thread ----------------------------------------------------------------------

    def start(self, trail: RecordingRun) -> None:
        began = time.perf_counter()
        self._exclude = store_paths(trail)
        dirs = self._frameworks(trail)
        # HEAD and the branch now (files only); `git status` on the background thread.
        self.git = git_capture.inspect(
            self._exclude, dirs=dirs, timeout=CALLING_TIMEOUT, status=False
        )
        start = Path(self.git.start_dir) if self.git.start_dir else Path.cwd()
        git_root = self.git.root if self.git.read_from == "git" else None
        self.dvc = dvc_capture.inspect(start, git_root, timeout=CALLING_TIMEOUT)
        git_tags = self.git.tags()
        if self.git.status_timed_out:  # read again in the background before saying anything
            git_tags.pop("mltrail.git.unavailable", None)
        tags = {**git_tags, **self.dvc.tags()}
        trail.set_tags({self.key(k): v for k, v in tags.items()})
        datasets = [
            out.dataset(self.git.commit, self.git.repo_url) for out in self.dvc.outputs if out.hash
        ]
        if datasets:
            trail.log_inputs(datasets)
        self._record_frameworks(trail)
        self._calling_seconds = time.perf_counter() - began
        self._thread = threading.Thread(
            target=self._background, name="mltrail-provenance", daemon=True
        )
        self._thread.start()
        from mltrail.capture.already_run import AlreadyRunCheck

        self.already = AlreadyRunCheck.start(
            trail, lambda: self.compute_fingerprint(trail.params)["value"], self.wait
        )

    def _frameworks(self, trail: RecordingRun) -> list[tuple[str, Path]] | None:
        """Read the notebook or Hydra app the run starts in (before git: a notebook's folder
        is where its repository is; Hydra's outputs are not code). The git start dirs, or None."""
        from mltrail.capture import hydra, notebook

        with guarded("reading the notebook", trail.error_counter):
            self.notebook = notebook.inspect()
        with guarded("reading the Hydra config", trail.error_counter):
            self.hydra = hydra.inspect()
            if self.hydra is not None:
                self._exclude += self.hydra.excluded
        if self.notebook is not None and self.notebook.path:
            return [("notebook", Path(self.notebook.path).parent), *git_capture.start_dirs()]
        return None

    def _record_frameworks(self, trail: RecordingRun) -> None:
        from mltrail.capture import hydra, notebook

        if self.notebook is not None:
            with guarded("recording the notebook", trail.error_counter):
                info = self.notebook
                trail.set_tags({self.key("mltrail.notebook.path"): info.path or "unknown"})
                trail.log_text(info.history(self.run_id), self.artifact(notebook.HISTORY_ARTIFACT))
                if info.text is not None:
                    trail.log_text(info.text, self.artifact(notebook.NOTEBOOK_ARTIFACT))
                    info.copied, info.text = True, None
        if self.hydra is not None:
            with guarded("recording the Hydra config", trail.error_counter):
                info = self.hydra
                trail.set_tags({self.key(k): v for k, v in info.tags().items()})
                params = info.params()
                if params:
                    trail.log_params(params)  # type: ignore[attr-defined]
                config = info.config_yaml()
                if config is not None:
                    trail.log_text(config, self.artifact(hydra.CONFIG_ARTIFACT))
                for name, text in info.output_files().items():
                    trail.log_text(text, self.artifact(name))

    def params_logged(self) -> None:
        """Params were logged: the already-run check may look for earlier runs now."""
        if self.already is not None:
            self.already.params_logged()

    # --- the background thread -------------------------------------------------------------------

    def _step(self, kind: str, func: Any) -> None:
        try:
            func()
        except git_capture.GitUnavailable as error:
            self._note_git_problem(kind, str(error))
        except Exception as error:
            logger.debug("%s failed", kind, exc_info=True)
            self.failures.append((kind, error))

    def _note_git_problem(self, kind: str, reason: str) -> None:
        text = f"{kind}: {reason}"
        self.git.unavailable = f"{self.git.unavailable}; {text}" if self.git.unavailable else text
        self._tags({"mltrail.git.unavailable": self.git.unavailable})

    def _background(self) -> None:
        began = time.perf_counter()
        if self.git.status_timed_out or self.git.status_pending:
            self._step("reading the git status", self._refresh_status)
        if self.git.usable and self.git.dirty:
            self._step("git diff", self._capture_diff)
            if self.options.snapshot:
                self._step("git snapshot", self._capture_snapshot)
            self._step("hashing untracked files", self._hash_untracked)
        if not self.git.usable:
            self._step("hashing the entry script", self._hash_script)
        if self.dvc.outputs:
            self._step("checking DVC data", self._check_data)
            if self.options.snapshot_data and self.data is not None and self.data.dirty == "true":
                self._step("storing modified DVC data", self._snapshot_data)
        self._step("capturing the environment", self._capture_environment)
        if self.resume:
            self._step("comparing with the first start", self._compare_code)
        self._background_seconds = time.perf_counter() - began

    def _refresh_status(self) -> None:
        git_capture.refresh(self.git, self._exclude, since=self.started)
        self._tags(self.git.tags())

    def _capture_diff(self) -> None:
        if not self.git.changed:
            return
        self.diff = git_capture.diff(self.git, self.options.max_diff_bytes)
        if self.diff.text:
            with self._lock:
                if not self._closed:
                    self._trail.log_text(self.diff.text, self.artifact(DIFF_ARTIFACT))

    def _capture_snapshot(self) -> None:
        from mltrail.capture import snapshot

        ref = self._snapshot_ref()
        skip = snapshot.large_untracked(self.git)
        # No run id in it: runs started on the same tree share the commit (one per tree).
        message = (
            f"mltrail snapshot of {self.git.commit or 'an unborn branch'}\n\nThe working tree "
            "at run start, with its uncommitted changes and untracked files."
        )
        self.snapshot = snapshot.create(self.git, ref, message, exclude=skip)
        self._tags({"mltrail.git.snapshot": self.snapshot.commit})

    def _snapshot_ref(self) -> str:
        from mltrail.capture import snapshot

        return snapshot.ref_name(self.run_id + (f"-resume-{self.resume}" if self.resume else ""))

    def _snapshot_data(self) -> None:
        """``snapshot_data``: store the modified data in the DVC cache and commit ``.dvc`` copies
        recording it on top of the code snapshot (see :mod:`mltrail.capture.datasnap`)."""
        from mltrail.capture import datasnap
        from mltrail.capture.snapshot import Snapshot

        assert self.data is not None
        # A commit only on top of the code as it was: the code snapshot when the tree was dirty.
        commit = self.git.usable and self.options.snapshot and self.git.root
        commit = commit and (self.snapshot is not None or not self.git.dirty)
        base = self.snapshot.tree if self.snapshot else self.git.commit
        ref = self._snapshot_ref()
        stored = datasnap.snapshot(
            self.dvc,
            self.data,
            git_root=self.git.root if commit else None,
            base=base,
            parent=self.git.commit,
            ref=ref if commit else None,
            message=f"mltrail snapshot of run {self.run_id}\n\nThe working tree at run start, "
            "with the .dvc records of the modified DVC data stored in the DVC cache.",
        )
        self.data_snapshot = stored
        tags = {"mltrail.dvc.data_snapshot": "partial" if stored.failed else "true"}
        if stored.commit:
            skipped = list(self.snapshot.skipped) if self.snapshot else []
            self.snapshot = Snapshot(
                stored.commit, stored.tree or "", ref, self.git.commit, skipped
            )
            tags["mltrail.git.snapshot"] = stored.commit
        self._tags(tags)
        with self._lock:
            if not self._closed and stored.outputs:
                self._trail.log_inputs(stored.datasets(self.git.commit, self.git.repo_url))

    def _hash_untracked(self) -> None:
        if self.git.untracked and self.git.root:
            self.untracked_sha256 = git_capture.files_digest(self.git.root, self.git.untracked)

    def _hash_script(self) -> None:
        script = git_capture.entry_script()
        if script is not None:
            self.script_sha256 = file_sha256(script)

    def _check_data(self) -> None:
        self.data = dvc_capture.data_status(self.dvc)
        self._tags({"mltrail.dvc.data_dirty": self.data.dirty})

    def _capture_environment(self) -> None:
        from mltrail.capture import env

        self.environment = env.capture()
        requirements = env.requirements()
        self.environment["packages"] = sum(
            1 for line in requirements.splitlines() if line and not line.startswith("#")
        )
        with self._lock:
            if not self._closed:
                self._trail.log_text(requirements, self.artifact(REQUIREMENTS_ARTIFACT))

    def _compare_code(self) -> None:
        """On a resumed run: did the code change since the first start? (tag ``...changed``)"""
        before_commit = self.previous.get("mlflow.source.git.commit")
        before_dirty = self.previous.get("mltrail.git.dirty")
        if before_commit is None and before_dirty is None:
            self._code_changed: bool | None = None
            return
        changed = before_commit != self.git.commit or before_dirty != _flag(self.git.dirty)
        before_snapshot = self.previous.get("mltrail.git.snapshot")
        if not changed and self.git.dirty and before_snapshot and self.snapshot and self.git.root:
            try:
                tree = git_capture.run_git(
                    ["rev-parse", "--verify", "-q", f"{before_snapshot}^{{tree}}"], self.git.root
                )
                changed = tree.stdout.decode().strip() != self.snapshot.tree
            except (git_capture.GitUnavailable, git_capture.NotARepository):
                self._code_changed = None
                return
        self._code_changed = changed

    # --- the end of the run ------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background capture; True when it is complete."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def finish(self, trail: RecordingRun) -> None:
        """Wait (bounded) for the background capture, then set the fingerprint and write
        ``mltrail/provenance.json``. Called by ``Trail.end()`` before the writer closes."""
        budget = min(FINISH_TIMEOUT, max(5.0, float(self.options.flush_timeout)))
        if getattr(trail, "status", None) == "KILLED":
            budget = min(budget, 5.0)  # a terminated process has seconds left, not minutes
        complete = self.wait(budget)
        with self._lock:
            self._closed = True
        tags: dict[str, str] = {}
        if not complete and self.data is None and self.dvc.outputs:
            tags["mltrail.dvc.data_dirty"] = "unknown"
        self.fingerprint = self.compute_fingerprint(trail.params)
        tags["mltrail.fingerprint"] = self.fingerprint["value"]
        if self.resume:
            tags["mltrail.changed"] = self._changed()
        trail.set_tags({self.key(k): v for k, v in tags.items()})
        if self.already is not None:
            self.already.finish(self.fingerprint["value"])
        self.record = self.as_dict(complete)
        trail.log_dict(self.record, self.artifact(PROVENANCE_ARTIFACT))
        failures, self.failures = self.failures, []
        for kind, error in failures:
            with guarded(kind, trail.error_counter):
                raise error

    def _changed(self) -> str:
        parts = []
        code = getattr(self, "_code_changed", None)
        before_data = self.previous.get("mltrail.dvc.data_hash")
        data_changed = before_data != self.dvc.data_hash() or (
            self.data is not None and self.data.dirty == "true"
        )
        if code is None:
            return "unknown"
        if code:
            parts.append("code")
        if data_changed:
            parts.append("data")
        return ",".join(parts) or "none"

    def compute_fingerprint(self, params: dict[str, str]) -> dict[str, Any]:
        code = {
            "commit": self.git.commit,
            "diff_sha256": self.diff.sha256 if self.diff else None,
            "untracked_sha256": self.untracked_sha256,
            "script_sha256": self.script_sha256,
        }
        status = self.data.dirty if self.data else "unknown"
        hashes = self.data.workspace_hashes if self.data else {}
        data = sorted(
            (o.path, hashes.get(o.path) or o.hash or "", status) for o in self.dvc.outputs
        )
        parts = {
            "code": _sha(code),
            "data": _sha(data),
            "params": _sha(sorted(params.items())),
        }
        return {"value": _sha(parts), **parts}

    def as_dict(self, complete: bool = True) -> dict[str, Any]:
        """The ``provenance.json`` record (schema in the module docstring)."""
        git = self.git.as_dict()
        for name in ("changed", "untracked", "excluded", "outputs"):
            if len(git[name]) > _MAX_LISTED:
                git[f"{name}_count"] = len(git[name])
                git[name] = git[name][:_MAX_LISTED]
        git["untracked_sha256"] = self.untracked_sha256
        git["diff"] = self.diff.summary(self.artifact(DIFF_ARTIFACT)) if self.diff else None
        git["snapshot"] = vars(self.snapshot) if self.snapshot else None
        dvc = self.dvc.as_dict()
        dvc["data_status"] = self.data.as_dict() if self.data else None
        dvc["data_snapshot"] = self.data_snapshot.as_dict() if self.data_snapshot else None
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "resume": self.resume,
            "captured_at": self._captured_at,
            "complete": complete,
            "errors": [f"{kind}: {type(e).__name__}: {e}" for kind, e in self.failures],
            "git": git,
            "dvc": dvc,
            "environment": self.environment,
            "fingerprint": self.fingerprint,
            "notebook": self.notebook.as_dict() if self.notebook is not None else None,
            "hydra": self.hydra.as_dict() if self.hydra is not None else None,
            "timing": {
                "calling_thread_seconds": round(self._calling_seconds, 4),
                "background_seconds": round(self._background_seconds, 4),
            },
        }


def _flag(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a ``provenance.json`` file, checking its schema version."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise MltrailError(f"{path} is not an mltrail provenance record of schema 1.")
    return data
