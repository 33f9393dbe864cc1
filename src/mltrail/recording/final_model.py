"""A run's final model on its way to the store, never lost at exit.

The job that :meth:`mltrail.Trail.log_model` queues saves the model (an MLflow Model in a
temporary folder of its own), then sends it: the run's ``model/`` folder, its LoggedModel on
MLflow 3, its tags and a registration. What fails is journaled. When the run's end cannot wait
for the model any longer (``flush_timeout`` passed), the writer's close calls
:meth:`FinalModel.journal`: the model is saved now if its job had not started, waited for
while it is being saved (local work, and the model is what the training was for), and
journaled where its sending stopped, with the run's end behind it, for ``mltrail sync``.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mltrail.digest import SHA256_TAG_PREFIX, file_sha256
from mltrail.recording import logged_models
from mltrail.recording.writer import Writer

#: Files of an MLflow Model folder that are the same for many models (not looked up by hash).
MODEL_METADATA = {
    "MLmodel",
    "conda.yaml",
    "python_env.yaml",
    "requirements.txt",
    "input_example.json",
    "serving_input_example.json",
    "registered_model_meta",
}


class FinalModel:
    """One final model, shared by the job that saves and sends it and the writer's close.

    Args:
        save: saves the model as an MLflow Model and returns its folder (the caller's
            temporary folder, which this moves out of it).
        record: the ``logged_model`` record data for the saved folder (linked metrics).
        writer: the run's writer.
        set_tags: the run's ``set_tags``.
        sent: called with the record data of a LoggedModel the store took.
        flavor: the MLflow flavor, for the ``mltrail.model.flavor`` tag.
        registered_model_name: the registered model to add a version to, if any.
    """

    def __init__(
        self,
        save: Callable[[], Path],
        record: Callable[[Path], dict[str, Any]],
        writer: Writer,
        set_tags: Callable[[Mapping[str, Any]], None],
        sent: Callable[[dict[str, Any]], None],
        flavor: str,
        registered_model_name: str | None,
    ) -> None:
        self._save, self._record, self._writer = save, record, writer
        self._set_tags, self._sent = set_tags, sent
        self.flavor, self.registered_model_name = flavor, registered_model_name
        self.lock = threading.Lock()
        self.saved = threading.Event()
        self.stage = "queued"  # then saving, sending, done
        self.running = False  # the job is under way (it removes the folder when it ends)
        self.journaled = False  # taken over by the close: the job stops after its current step
        self.copied = False  # the close has its copy (it removes the folder when the job ended)
        self.folder: Path | None = None
        self.hashes: dict[str, str] = {}
        self.uploaded = False  # model/ is in the run's artifacts
        self.kept: str | None = None  # the model's copy in the journal
        self.data: dict[str, Any] | None = (
            None  # the LoggedModel being sent (its model_id once made)
        )
        self.state: str | None = None  # how sending it went: sent, journaled, unsupported
        self.went_to_journal = False  # the model itself waits in the journal (the exit line)

    # --- the job --------------------------------------------------------------------------------

    def run(self) -> None:
        """Save the model and send it; once the close has taken it over, the step under way is
        the last."""
        with self.lock:
            if self.journaled:
                return
            self.stage = "saving"
            self.running = True
        try:
            try:
                self._save_now()
            finally:
                self.saved.set()
            self._send()
        finally:
            with self.lock:
                self.running = False
                remove = not self.journaled or self.copied
            if remove and self.folder is not None:
                shutil.rmtree(self.folder.parent, ignore_errors=True)

    def _save_now(self) -> None:
        saved = self._save()
        # A folder of its own, not in the run's temporary folder that the end removes: an upload
        # cut by the exit deadline may still read it.
        folder = Path(tempfile.mkdtemp(prefix="mltrail-model-")) / "model"
        shutil.move(saved, folder)
        shutil.rmtree(saved.parent, ignore_errors=True)
        files = [
            f for f in sorted(folder.rglob("*")) if f.is_file() and f.name not in MODEL_METADATA
        ]
        self.hashes = {
            SHA256_TAG_PREFIX + file_sha256(f)[:16]: f"model/{f.relative_to(folder).as_posix()}"
            for f in files
        }
        self.folder = folder

    def _tags(self) -> dict[str, str]:
        return {"mltrail.model.flavor": self.flavor, **dict(list(self.hashes.items())[:100])}

    def _send(self) -> None:
        writer, folder = self._writer, self.folder
        assert folder is not None
        with self.lock:
            if self.journaled:
                return
            self.stage = "sending"
        uploaded = writer.upload_now(folder, "model", "logging the model", journal=False)
        with self.lock:
            if self.journaled:
                return
            self.uploaded = uploaded
            if not uploaded:
                kept = writer.artifact_for_spool(
                    {"kind": "artifact", "path": str(folder), "artifact_path": "model"}
                )
                writer.journal(kept)
                self.kept = kept["path"]
        state = "unsupported"
        if logged_models.supported():
            data = self._record(folder)
            with self.lock:
                self.data = data
            state = writer.send_now(
                {"kind": "logged_model", "data": data}, "logging the model", journal=False
            )
            with self.lock:
                if self.journaled:
                    return
                if state == "failed":
                    writer.journal({"kind": "logged_model", "data": self._kept_data(data)})
                    state = "journaled"
                self.state = state
            if state == "sent":
                self._sent(data)
        name = self.registered_model_name
        register = {"name": name, "artifact_path": "model"}
        with self.lock:
            if self.journaled:
                return
            self.stage = "done"
            if uploaded:
                self._set_tags(self._tags())
                if name and state == "unsupported":  # MLflow 2: the run's model/
                    writer.add("register", register)
            else:
                # The model waits in the journal: its tags and registration follow it there.
                writer.journal({"kind": "tags", "data": self._tags()})
                if name and state == "unsupported":
                    writer.journal({"kind": "register", "data": register})

    def _kept_data(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` of a ``logged_model`` record, pointing at the model's copy in the journal
        (the one ``model/`` was journaled with, else a new one)."""
        kept = self.kept or self._writer.spool.keep_copy(self.folder)  # type: ignore[arg-type]
        self.kept = str(kept) if kept is not None else None
        return {**data, "path": self.kept or data["path"]}

    # --- the writer's close ---------------------------------------------------------------------

    def journal(self) -> list[dict[str, Any]]:
        """The journal records of the model the run's end could not wait for: its ``model/``
        folder unless uploaded, the LoggedModel being sent (with the model_id it got if it
        did), its tags and, without LoggedModels, its registration."""
        with self.lock:
            stage = self.stage
            self.journaled = True
        if stage == "done":
            return []
        if stage == "queued":
            self._save_now()
        else:
            self.saved.wait()
        if self.folder is None:  # the save failed, which is counted as an error
            return []
        records: list[dict[str, Any]] = []
        try:
            with self.lock:
                if not self.uploaded and self.kept is None:
                    records.append(
                        self._writer.artifact_for_spool(
                            {"kind": "artifact", "path": str(self.folder), "artifact_path": "model"}
                        )
                    )
                    self.kept = records[-1]["path"]
                # Without LoggedModels (MLflow 2, or a server without them) the run's model/
                # is the model, registered as such.
                plain = not logged_models.supported() or self.state == "unsupported"
                if not plain and self.state not in {"sent", "journaled"}:
                    data = dict(self.data or self._record(self.folder))
                    records.append({"kind": "logged_model", "data": self._kept_data(data)})
                records.append({"kind": "tags", "data": self._tags()})
                if plain and self.registered_model_name:
                    register = {"name": self.registered_model_name, "artifact_path": "model"}
                    records.append({"kind": "register", "data": register})
        finally:
            with self.lock:
                self.copied = True
                remove = not self.running
            if remove:
                shutil.rmtree(self.folder.parent, ignore_errors=True)
        self.went_to_journal = any(r["kind"] in {"artifact", "logged_model"} for r in records)
        return records
