"""The local journal of what could not be sent, replayed later by ``mltrail sync``.

One folder per run under the spool directory: ``meta.json`` (where the run belongs),
``journal.jsonl`` (append-only records, each line fsync'd) and ``files/`` (artifacts mltrail
itself created, moved here when their upload failed). Progress of a replay is kept in
``progress.json``, written atomically, so an interrupted sync resumes without duplicates.
A folder that has been replayed completely is renamed to ``<run_id>.synced``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mltrail.errors import MltrailError
from mltrail.recording.sanitize import redact_text

logger = logging.getLogger("mltrail.spool")

SCHEMA_VERSION = 1

#: Run ids whose spool a writer of this process may still append to (see ``sync``).
writing: set[str] = set()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file, fsync and rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Spool:
    """The journal of one run. Thread-safe; every append is durable when it returns."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = Path(root)
        self.run_id = run_id
        self.path = self.root / run_id
        self._lock = threading.Lock()
        self._disabled_reason: str | None = None
        self._meta: dict[str, Any] | None = None
        self.records_written = 0

    @property
    def journal(self) -> Path:
        return self.path / "journal.jsonl"

    @property
    def disabled_reason(self) -> str | None:
        return self._disabled_reason

    def exists(self) -> bool:
        return self.journal.exists()

    def open(self, meta: dict[str, Any]) -> None:
        """Create the folder and its ``meta.json`` (once). Raises OSError when unwritable."""
        with self._lock:
            self._meta = {**meta, "schema_version": SCHEMA_VERSION, "run_id": self.run_id}
            self._meta["tracking_uri"] = redact_text(str(meta.get("tracking_uri", "")))
            self._write_meta()

    def _write_meta(self) -> None:
        """Write ``meta.json`` unless it exists (the lock is held)."""
        self.path.mkdir(parents=True, exist_ok=True)
        meta_path = self.path / "meta.json"
        if self._meta is not None and not meta_path.exists():
            write_json_atomic(meta_path, self._meta)

    def update_meta(self, **fields: Any) -> None:
        with self._lock:
            meta_path = self.path / "meta.json"
            meta = json.loads(meta_path.read_text("utf-8")) if meta_path.exists() else {}
            meta.update(fields)
            write_json_atomic(meta_path, meta)

    def append(self, records: list[dict[str, Any]]) -> bool:
        """Append records durably. Returns False (and disables the spool) when the disk refuses."""
        if self._disabled_reason or not records:
            return False
        lines = "".join(
            json.dumps({**record, "ts": record.get("ts", time.time())}, default=str) + "\n"
            for record in records
        )
        with self._lock:
            size = None
            try:
                # A folder retired at the end of the run comes back whole for a late record.
                self._write_meta()
                size = self.journal.stat().st_size if self.journal.exists() else 0
                # One write per batch: a crash leaves at most a torn last line, which readers skip.
                with open(self.journal, "a", encoding="utf-8") as handle:
                    handle.write(lines)
                    handle.flush()
                    os.fsync(handle.fileno())
                self.records_written += len(records)
                return True
            except OSError as error:
                if size is not None:
                    # A full disk may have taken part of the batch: never leave half a record.
                    try:
                        if size:
                            os.truncate(self.journal, size)
                        else:
                            self.journal.unlink(missing_ok=True)
                    except OSError:
                        pass
                self._fail(error)
                return False

    def _fail(self, error: OSError) -> None:
        """Disable the spool, with one error message (the first failure) for the user."""
        if self._disabled_reason:
            return
        self._disabled_reason = f"{type(error).__name__}: {error}"
        logger.error(
            "mltrail: cannot write the spool at %s (%s); data that cannot be sent "
            "from now on is lost. Free space or set MLTRAIL_SPOOL_DIR to a writable folder.",
            self.path,
            self._disabled_reason,
        )

    def mark_synced(self) -> None:
        """Retire the folder of a run whose data all reached the store (nothing to replay)."""
        with self._lock:
            if self.path.is_dir() and not self.journal.exists():
                shutil.rmtree(self.path, ignore_errors=True)

    def keep_file(self, path: Path) -> Path | None:
        """Move a file mltrail created into the spool so a later sync can upload it."""
        try:
            target_dir = self.path / "files" / f"{time.time_ns()}"
            target_dir.mkdir(parents=True, exist_ok=True)
            target = target_dir / Path(path).name
            shutil.move(str(path), target)
            return target
        except OSError as error:
            self._fail_unless_gone(path, error)
            return None

    def keep_copy(self, path: Path) -> Path | None:
        """Keep a copy of a file or folder the user owns in the spool (hard links when
        possible): the user may delete or rotate it before ``mltrail sync`` runs."""
        target_dir = self.path / "files" / f"{time.time_ns()}"
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            target = target_dir / Path(path).name
            if Path(path).is_dir():
                shutil.copytree(path, target, copy_function=_link_or_copy)
            else:
                _link_or_copy(path, target)
            return target
        except OSError as error:
            shutil.rmtree(target_dir, ignore_errors=True)  # no half copy left behind
            self._fail_unless_gone(path, error)
            return None

    def _fail_unless_gone(self, path: Path, error: OSError) -> None:
        """A file that is gone says nothing of the spool's disk: its record is journaled
        without it (sync reports it missing), and the spool goes on taking the others."""
        if Path(path).exists() or not isinstance(error, FileNotFoundError):
            self._fail(error)
        else:
            logger.warning("mltrail: %s is gone; it cannot be kept for `mltrail sync`", path)


def _link_or_copy(source: Any, target: Any) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def read_meta(path: Path) -> dict[str, Any]:
    meta_path = Path(path) / "meta.json"
    if not meta_path.exists():
        raise MltrailError(f"{path} is not an mltrail spool folder (no meta.json).")
    return json.loads(meta_path.read_text("utf-8"))


def read_journal(path: Path, kind: str | None = None) -> Iterator[dict[str, Any]]:
    """The records of a spool folder in order (only those of ``kind`` when given); a torn last
    line from a crash is skipped."""
    journal = Path(path) / "journal.jsonl"
    if not journal.exists():
        return
    # Lines of other kinds are passed over unparsed: a journal holds thousands of metric values.
    marker = json.dumps({"kind": kind})[1:-1] if kind else ""
    with open(journal, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if not line.endswith("\n"):
                logger.warning("mltrail: skipping a torn record at line %d of %s", number, journal)
                break
            if marker not in line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning(
                    "mltrail: skipping a corrupt record at line %d of %s", number, journal
                )
                continue
            if kind is None or record.get("kind") == kind:
                yield record


def pending_spools(root: Path) -> list[Path]:
    """Spool folders of runs not yet synced, oldest first. A folder that another process is
    creating (no ``meta.json`` yet) or moving away (a sync that just finished it) is left out."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.name.endswith(".synced") or path.name.startswith("."):
            continue
        try:
            found.append(((path / "meta.json").stat().st_mtime, path))
        except OSError:  # not a spool folder, or gone since the listing
            continue
    return [path for _, path in sorted(found)]
