"""The run session: ``start_run`` returns a :class:`Trail`, the one object adapters talk to."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import json
import logging
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mltrail.config import Options
from mltrail.digest import SHA256_TAG_PREFIX, file_sha256, tree_sha256
from mltrail.errors import ErrorCounter, MltrailError, guard, guarded, strict_mode
from mltrail.recording import distributed, lifecycle, logged_models, scopes
from mltrail.recording.checkpoints import CheckpointModel, superseded
from mltrail.recording.final_model import FinalModel
from mltrail.recording.model_file import ModelFile
from mltrail.recording.sanitize import (
    MAX_PARAM_VALUE_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    KeySanitizer,
    flatten,
    metric_value,
    param_text,
    redact_text,
    redact_value,
    truncate,
)
from mltrail.recording.spool import Spool
from mltrail.recording.sync import replay, replay_dead_spools_soon
from mltrail.recording.writer import Writer, child_run_data
from mltrail.store import (
    call_with_timeout,
    describe_uri,
    experiment_id,
    forget_experiment,
    make_client,
    resolve_tracking_uri,
    sqlite_path,
)
from mltrail.version import __version__

logger = logging.getLogger("mltrail")

_STATUSES = {"FINISHED", "FAILED", "KILLED"}
#: One model serialised at a time: MLflow's saves share module state (see _unchecked_pins).
_SAVING = threading.Lock()
#: Seconds ``end()`` waits for the crashed-run repair started with the run to queue its records.
REPAIR_WAIT = 2.0
#: Run tag: why the run's models have no signature and input example (categorical columns).
NO_SIGNATURE_TAG = "mltrail.model.no_signature"
#: When the training of a run opened after it started began (ms since the epoch): the run's
#: start time, set by the recording that opens it (see :mod:`mltrail.recording.late_trail`).
RUN_START_TIME: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "mltrail_run_start_time", default=None
)


def start_run(
    experiment: str | None = None,
    run_name: str | None = None,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    join: bool = False,
    parent_run_id: str | None = None,
    **options: Any,
) -> Trail:
    """Start (or resume, or join) an MLflow run and return its :class:`Trail`.

    Args:
        experiment: experiment name, created if missing. Default: MLflow's current experiment
            (``MLFLOW_EXPERIMENT_NAME``/``MLFLOW_EXPERIMENT_ID``, else "Default").
        run_name: display name of a new run.
        tracking_uri: any MLflow tracking URI. Default: ``MLFLOW_TRACKING_URI``, else MLflow's
            default (``sqlite:///mlflow.db`` in the working directory).
        run_id: resume this existing run: its status goes back to RUNNING, ``mltrail.resume_count``
            is incremented and new metrics continue its steps.
        tags: extra run tags.
        join: with ``run_id``, log into that existing run without owning it: no resume is
            recorded and its status stays with its owner (for example Lightning's
            MLFlowLogger); ``end()`` only flushes.
        parent_run_id: start a new run nested under this one (the tag ``mlflow.parentRunId``),
            a trial of a search for example; it joins no active or provided run.
        **options: any field of :class:`mltrail.config.Options` (``flush_timeout``,
            ``system_metrics``, ``capture``, ...).

    Returns:
        The run session, usable as a context manager: the run ends FINISHED on success, FAILED
        on an exception (which propagates unchanged) and KILLED on KeyboardInterrupt.

    Raises:
        MltrailError: for an unknown option or a ``run_id`` that does not exist.

    If an MLflow run is active in this thread and no ``run_id`` is given, mltrail logs into that
    run and leaves it open for its owner to end; so it does into a run that an adapter provides
    for the trainings inside its unit of work (see :mod:`mltrail.recording.scopes`).
    """
    resolved = Options.resolve(**options)
    if join and not run_id:
        raise MltrailError("start_run(join=True) needs the run_id of the run to join.")
    if not distributed.is_rank_zero():
        return Trail._passive(os.environ.get("MLTRAIL_RUN_ID"), resolved)
    if parent_run_id:
        tags = {**(tags or {}), "mlflow.parentRunId": parent_run_id}
    trail = Trail._open(
        experiment,
        run_name,
        tracking_uri,
        run_id,
        dict(tags or {}),
        resolved,
        join=join,
        nested=bool(parent_run_id),
    )
    return trail


def stored_param(value: Any) -> str:
    """A param's value as MLflow stores it: text, cut to MLflow's limit with a visible marker
    (``value`` redacted already where its name looks secret)."""
    return truncate(param_text(value), MAX_PARAM_VALUE_LENGTH)


class Trail:
    """One MLflow run being recorded. Every ``log_*`` method returns at once; the writer sends."""

    def __init__(self) -> None:  # use start_run()
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.tracking_uri = ""
        self.options = Options()
        self.owned = False
        self.enabled = False
        self.offline = False
        self.resumed = False
        # How a resume from a checkpoint went: "continue", "fork" or "rewind" (restart.py).
        self.restart: str | None = None
        self.resume_count = 0
        self.status: str | None = None
        self.client: Any = None
        self._errors = ErrorCounter()
        self._writer: Writer | None = None
        self._keys = KeySanitizer()
        self._params: dict[str, str] = {}
        self._full_params: dict[str, Any] = {}
        self._param_changes: dict[str, list[str]] = {}
        self._auto_steps: Counter[str] = Counter()
        self._nonfinite: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._nonfinite_values: dict[str, list[str]] = {}  # key -> "nan", "inf", "-inf" seen
        self._bad_steps = 0  # log_metrics calls with a step that is no integer
        self._lock = threading.Lock()
        self._late_run: dict[str, str] = {}  # see _adopt_late_run
        self._tmp: Path | None = None
        self._remove_at_close: list[Path] = []  # adapters' temporary folders, see remove_at_close
        self._checkpoints: dict[str, Any] = {"files": {}, "aliases": {}}
        # Metric points the models are linked to, the dataset inputs they were evaluated on,
        # and the LoggedModels sent: id -> (a checkpoint's step or None for the final model,
        # points linked so far).
        self._points = logged_models.MetricPoints()
        self._datasets: list[dict[str, Any]] = []
        self._linked_models: dict[str, tuple[int | None, int]] = {}
        self._monitor: Any = None
        self._ended = threading.Event()
        self._repair: threading.Thread | None = None  # crashed runs found at start
        self._final_models: list[FinalModel] = []  # the exit line says if one was journaled
        self._end_ms = 0  # when end() was called: the run's end time
        self.provenance: Any = None
        self.attached_tags: dict[str, str] = {}  # tags of a run joined or resumed, at attach

    # --- opening -------------------------------------------------------------------------------

    @classmethod
    def _passive(cls, run_id: str | None, options: Options) -> Trail:
        """A Trail for a non-zero rank: it knows the run id and writes nothing."""
        trail = cls()
        trail.run_id = run_id
        trail.options = options
        return trail

    @classmethod
    def _open(
        cls,
        experiment: str | None,
        run_name: str | None,
        tracking_uri: str | None,
        run_id: str | None,
        tags: dict[str, Any],
        options: Options,
        join: bool = False,
        nested: bool = False,
    ) -> Trail:
        trail = cls()
        trail.tracking_uri = resolve_tracking_uri(tracking_uri)
        joined = None
        if not run_id and not nested:
            joined = scopes.provided_run(trail.tracking_uri)
            if joined:  # the provider's run has the provenance and the system metrics
                options = dataclasses.replace(options, capture=False, system_metrics=False)
            else:
                joined = _user_active_run(trail.tracking_uri)
            if not joined and "hydra" in sys.modules:  # a Hydra multirun job: under its sweep
                with guarded("finding the run of the Hydra sweep", trail._errors):
                    from mltrail.capture import hydra

                    parent = hydra.sweep_parent(trail.tracking_uri, experiment, options.capture)
                    if parent:
                        tags = {**tags, "mlflow.parentRunId": parent}
        if options.capture:  # the git layer's import overlaps with opening the store
            from mltrail.capture.git import preload_gitpython

            preload_gitpython()
        trail.options = options
        trail.enabled = True
        try:
            trail.client = call_with_timeout(
                lambda: make_client(trail.tracking_uri), trail._start_budget(), "opening the store"
            )
            if run_id or joined:
                lifecycle.wait(run_id=run_id or joined)  # this process may still be closing it
                trail._attach(run_id or joined, resume=run_id is not None and not join)
            else:
                run_name = run_name or fresh_run_name()
                trail._create(experiment, run_name, options)
        except MltrailError:
            raise
        except Exception as error:
            if strict_mode() and not isinstance(error, TimeoutError):
                raise
            trail._go_offline(error, run_id, experiment, run_name)
        trail._start_writer()
        base_tags = {
            "mltrail.version": __version__,
            "mltrail.host": socket.gethostname(),
            "mltrail.pid": str(os.getpid()),
        }
        if os.environ.get("MLTRAIL_COMMAND"):  # under `mltrail run`, explicit adapters too
            base_tags["mltrail.command"] = os.environ["MLTRAIL_COMMAND"]
        if trail.resumed:
            base_tags["mltrail.resume_count"] = str(trail.resume_count)
            base_tags["mltrail.resumed_at"] = str(int(time.time()))
        trail.set_tags({**base_tags, **tags})
        os.environ["MLTRAIL_RUN_ID"] = trail.run_id or ""  # for other ranks and subprocesses
        lifecycle.register(trail)
        if options.capture:
            with guarded("capturing provenance", trail._errors):
                # Imported when capture is on: the git and DVC capture modules take import
                # time that `capture=False` runs and `mltrail --help` need not pay.
                from mltrail.capture import provenance

                began = RUN_START_TIME.get()  # a run opened after its training started
                started = began / 1000 if began is not None else None
                trail.provenance = provenance.capture_run(trail, started)
        if options.system_metrics:
            trail.start_system_metrics()
        if trail.owned and not trail.offline:
            trail._repair = lifecycle.repair_stale_runs_soon(
                trail.client,
                trail.tracking_uri,
                str(trail.experiment_id),
                options.heartbeat_interval,
                trail._writer.add,  # type: ignore[union-attr]
                options.spool_dir,
            )
            replay_dead_spools_soon(options.spool_dir, trail.tracking_uri)
        return trail

    def _start_budget(self) -> float:
        """How long opening the store may take. A local sqlite store cannot hang like a server;
        it can only be busy (first-time migrations, other processes starting), so it gets longer."""
        if sqlite_path(self.tracking_uri) is not None:
            return max(self.options.start_timeout, 120.0)
        return self.options.start_timeout

    def _create(self, experiment: str | None, run_name: str | None, options: Options) -> None:
        began = RUN_START_TIME.get()  # read here: create() runs on a thread of its own

        def create() -> Any:
            exp_id = experiment_id(self.client, experiment, self.tracking_uri)
            try:
                return self.client.create_run(
                    exp_id, start_time=began, run_name=run_name, tags=_source_tags()
                )
            except Exception:
                if experiment is None:
                    raise
                # The experiment remembered from an earlier run may have been deleted since.
                forget_experiment(self.tracking_uri, experiment)
                exp_id = experiment_id(self.client, experiment, self.tracking_uri)
                return self.client.create_run(
                    exp_id, start_time=began, run_name=run_name, tags=_source_tags()
                )

        run = call_with_timeout(
            create, self._start_budget(), "creating the run", late=self._adopt_late_run
        )
        self.run_id = run.info.run_id
        self.experiment_id = run.info.experiment_id
        self.owned = True

    def _attach(self, run_id: str, *, resume: bool) -> None:
        try:
            run = call_with_timeout(
                lambda: self.client.get_run(run_id), self._start_budget(), "reading the run"
            )
        except TimeoutError:
            raise
        except Exception as error:
            if (
                getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"
                or "not found" in str(error).lower()
            ):
                raise MltrailError(
                    f"Run {run_id!r} does not exist in {describe_uri(self.tracking_uri)}. Check the "
                    "run id and the tracking URI (MLFLOW_TRACKING_URI), or omit run_id to start "
                    "a new run."
                ) from None
            raise
        self.run_id = run.info.run_id
        self.experiment_id = run.info.experiment_id
        self.owned = resume
        self.resumed = resume
        self.attached_tags = dict(run.data.tags)
        for key, value in run.data.params.items():
            self._params[key] = value
        if resume:
            self.resume_count = int(run.data.tags.get("mltrail.resume_count", "0")) + 1
            if run.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            self._checkpoints = _previous_checkpoints(self.client, run_id) or self._checkpoints

    def _go_offline(
        self, error: BaseException, run_id: str | None, experiment: str | None, name: str | None
    ) -> None:
        import uuid

        self.offline = True
        self.owned = True
        self.run_id = run_id or uuid.uuid4().hex
        with self._lock:
            self._offline_meta = {
                "experiment": experiment,
                "run_name": name,
                "resume": bool(run_id),
                **self._late_run,
            }
        logger.warning(
            "mltrail: the tracking store %s is unreachable (%s). Training goes on; the run is "
            "journaled locally as %s and `mltrail sync` uploads it later.",
            describe_uri(self.tracking_uri),
            redact_text(f"{type(error).__name__}: {error}"),
            self.run_id,
        )

    def _adopt_late_run(self, run: Any) -> None:
        """The store created the run after this process gave up waiting for it and went
        offline: ``mltrail sync`` replays the journal into that run instead of creating a
        second one (the first would stay RUNNING beside it, with nothing in it)."""
        with self._lock:
            self._late_run = {"server_run_id": run.info.run_id}
            if hasattr(self, "_offline_meta"):
                self._offline_meta.update(self._late_run)
            writer = self._writer
        if writer is not None:
            writer.spool.update_meta(**self._late_run)

    def _start_writer(self) -> None:
        assert self.run_id is not None
        spool = Spool(self.options.spool_dir, self.run_id)
        meta = {
            "tracking_uri": self.tracking_uri,
            "experiment_id": self.experiment_id,
            "created": time.time(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "offline": self.offline,
            **getattr(self, "_offline_meta", {}),
        }
        if self.offline:
            try:
                spool.open(meta)
            except OSError as error:
                raise MltrailError(
                    f"The tracking store is unreachable and the spool directory "
                    f"{self.options.spool_dir} is not writable ({error}). Set MLTRAIL_SPOOL_DIR "
                    "to a writable folder."
                ) from error
        else:
            with contextlib.suppress(OSError):
                spool.open(meta)
        self._writer = Writer(
            self.client,
            self.run_id,
            spool,
            self._errors,
            flush_interval=self.options.flush_interval,
            retries=self.options.request_retries,
            max_queue_values=self.options.max_queue_values,
            offline=self.offline,
            heartbeat=self._heartbeat_tags if self.owned else None,
            heartbeat_interval=self.options.heartbeat_interval,
        )
        with self._lock:
            late = dict(self._late_run)
        if late and self.offline:  # the run was created while the writer was being made
            spool.update_meta(**late)

    def _heartbeat_tags(self) -> dict[str, str]:
        return {"mltrail.heartbeat": str(int(time.time()))}

    # --- logging -------------------------------------------------------------------------------

    @guard("logging params")
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log hyperparameters. Nested mappings are flattened with "." (``optimizer.lr``).

        Values are redacted when their name looks secret and cut to MLflow's limit with a
        visible marker; ``mltrail/params.json`` keeps the full values. Logging a key again with
        a different value never raises: the change is kept in ``params.json`` and the tag
        ``mltrail.params.changed``.
        """
        if not self.enabled:
            return
        new: dict[str, str] = {}
        changed = False
        with self._lock:
            for raw_key, value in flatten(params).items():
                key = self._keys(raw_key)
                value = redact_value(str(raw_key), value)
                text = stored_param(value)
                if key in self._params:
                    if self._params[key] != text:
                        self._param_changes.setdefault(key, [self._params[key]]).append(text)
                        changed = True
                    continue
                self._params[key] = text
                self._full_params[key] = value if _jsonable(value) else param_text(value)
                new[key] = text
        if new:
            self._writer.add("params", new)  # type: ignore[union-attr]
            if self.provenance is not None:
                self.provenance.params_logged()  # the already-run check; may raise MltrailError
        if changed:
            keys = ",".join(sorted(self._param_changes))
            self.set_tags({"mltrail.params.changed": keys})
            logger.warning(
                "mltrail: params %s were logged again with different values; MLflow keeps the "
                "first value, mltrail/params.json keeps every value.",
                keys,
            )

    def log_metrics(
        self,
        metrics: Mapping[str, Any],
        step: int | None = None,
        epoch: int | None = None,
        *,
        timestamp: int | None = None,
    ) -> None:
        """Log metric values at ``step`` (per-key auto-increment when None), at ``timestamp``
        (milliseconds since the epoch; default: now).

        Values may be Python, numpy or torch scalars, or numeric strings. NaN and inf are
        counted (``mltrail.metrics.nonfinite``) and which ones a key had is kept in
        ``mltrail.metrics.nonfinite.values``; NaN is stored as NaN, while MLflow stores inf and
        -inf as the largest finite floats (±1.797e308). ``nonfinite="skip"`` drops them instead.
        None and non-numeric values are dropped with one warning per key. A ``step`` that is not
        an integer is a mistake warned about once; those values get the next steps of their
        keys. ``epoch`` is logged as the metric ``epoch`` at the same step.
        """
        if not self.enabled:
            return
        if step is not None and type(step) is not int:
            step = self._user_step(step)
        try:
            ts = int(time.time() * 1000) if timestamp is None else int(timestamp)
            keys = self._keys
            items = []
            for raw, value in metrics.items():
                if type(value) is not float:
                    value = metric_value(value)
                    if value is None:
                        self._drop(raw, metrics[raw])
                        continue
                if value - value != 0:  # NaN or inf
                    self._nonfinite[raw] += 1
                    self._note_nonfinite(raw, value)
                    if self.options.nonfinite == "skip":
                        continue
                at = step if step is not None else self._next_step(raw)
                items.append((keys(raw), value, ts, int(at)))
            if epoch is not None:
                at = step if step is not None else epoch
                items.append(("epoch", float(epoch), ts, int(at)))
            self._points.add(items)
            self._writer.add_metrics(items)  # type: ignore[union-attr]
        except Exception as error:
            if strict_mode():
                raise
            self._errors.report("logging metrics", error)

    @guard("copying metric history")
    def log_metric_history(self, points: Iterable[tuple[str, float, int, int]]) -> None:
        """Log metric points that already have their time: ``(key, value, timestamp_ms, step)``
        (a fork's copy of its parent's history keeps the original timestamps)."""
        if not self.enabled:
            return
        items = [(self._keys(k), float(v), int(ts), int(s)) for k, v, ts, s in points]
        if items:
            self._writer.add_metrics(items)  # type: ignore[union-attr]

    def _user_step(self, step: Any) -> int | None:
        """A ``step`` given as another integral type (numpy, 3.0), or None (the keys' next steps)
        with one warning naming a value that is no step at all (``step="five"``)."""
        value = metric_value(step) if not isinstance(step, bool) else None
        if value is not None and value - value == 0 and value.is_integer():
            return int(value)
        if not self._bad_steps:
            logger.warning(
                "mltrail: log_metrics(step=%r): a step must be an integer; these values are "
                "logged at the next steps of their keys instead.",
                step,
            )
        self._bad_steps += 1
        return None

    def _note_nonfinite(self, key: str, value: float) -> None:
        """Keep which non-finite values a key had (``mltrail.metrics.nonfinite.values``): the
        store cannot tell inf from the largest float, this tag can."""
        kind = "nan" if value != value else ("inf" if value > 0 else "-inf")
        with self._lock:
            kinds = self._nonfinite_values.setdefault(str(key), [])
            if kind in kinds:
                return
            kinds.append(kind)
            text = json.dumps(self._nonfinite_values, sort_keys=True)
        self.set_tags({"mltrail.metrics.nonfinite.values": text})

    def _next_step(self, key: str) -> int:
        step = self._auto_steps[key]
        self._auto_steps[key] += 1
        return step

    def _drop(self, key: str, value: Any) -> None:
        self._dropped[key] += 1
        if self._dropped[key] == 1:
            logger.warning(
                "mltrail: metric %r has a non-numeric value (%s); such values are not logged.",
                key,
                type(value).__name__,
            )

    @guard("setting tags")
    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values redacted when secret-looking, cut to MLflow's limit)."""
        if not self.enabled:
            return
        clean = {}
        for raw, value in tags.items():
            if value is None:
                continue
            text = redact_value(str(raw), value if isinstance(value, str) else str(value))
            clean[self._keys(raw)] = truncate(text, MAX_TAG_VALUE_LENGTH)
        if clean:
            self._writer.add("tags", clean)  # type: ignore[union-attr]

    @guard("setting tags")
    def delete_tags(self, keys: Iterable[str]) -> None:
        """Delete run tags this run set (a search's best params that its new best lacks), in
        order with the tags set before and after; one the store does not hold is skipped."""
        if not self.enabled:
            return
        for key in keys:
            self._writer.add("delete_tag", self._keys(key))  # type: ignore[union-attr]

    @guard("logging artifacts")
    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Upload a file or a folder in the background under ``artifact_path``."""
        if not self.enabled:
            return
        path = Path(path)
        if not path.exists():
            raise MltrailError(f"Cannot log artifact {path}: no such file or folder.")
        self._writer.add_artifact(path, artifact_path)  # type: ignore[union-attr]

    @guard("logging artifacts")
    def log_text(self, text: str, artifact_file: str) -> None:
        """Write ``text`` (secrets redacted) to ``artifact_file`` in the run's artifacts."""
        if not self.enabled:
            return
        path = self._temp_file(artifact_file)
        path.write_text(redact_text(text), encoding="utf-8", errors="surrogateescape")
        self._writer.add_artifact(path, _parent(artifact_file), owned=True)  # type: ignore[union-attr]

    def log_dict(self, data: Any, artifact_file: str) -> None:
        """Write ``data`` as JSON to ``artifact_file`` in the run's artifacts."""
        self.log_text(json.dumps(data, indent=2, sort_keys=True, default=str), artifact_file)

    def log_image(
        self, draw: Callable[[Path], None], artifact_file: str, *, what: str = "drawing a plot"
    ) -> None:
        """Log the picture that ``draw(path)`` saves to ``path`` as ``artifact_file``.

        Drawing (milliseconds for the plots of :mod:`mltrail.recording.plots`) runs on the
        background thread, so the training returns first; an error in ``draw`` is counted as
        ``what``, not raised.
        """
        if not self.enabled:
            return

        def job() -> None:
            path = self._temp_file(artifact_file)
            draw(path)
            if path.exists():
                self._writer.upload_now(path, _parent(artifact_file), what)  # type: ignore[union-attr]

        job.kind = what  # type: ignore[attr-defined]
        self._writer.add_job(job)  # type: ignore[union-attr]

    @guard("logging dataset inputs")
    def log_inputs(self, datasets: Iterable[Mapping[str, Any]]) -> None:
        """Log dataset inputs: dicts with name, digest, source, and optional source_type,
        schema, profile and tags (the ``mlflow.data.context`` tag names their role)."""
        if not self.enabled:
            return
        specs = [dict(d) for d in datasets]
        if specs:
            self._datasets.extend(specs)  # for the metrics of models: which data they were on
            self._writer.add("inputs", specs)  # type: ignore[union-attr]

    def start_system_metrics(self) -> None:
        """Sample ``system/`` metrics from now on, every ``system_metrics_interval`` seconds,
        as a run started with ``system_metrics=True`` does: for a run opened without them
        whose training turned out long. Does nothing once sampling, nor offline or ended."""
        if self._monitor is not None or not self.enabled or self.offline:
            return
        if self.status is not None:  # ended
            return
        with guarded("starting system metrics", self._errors):
            from mltrail.recording.system_metrics import SystemMonitor

            self._monitor = SystemMonitor(self, self.options.system_metrics_interval)
            self._monitor.start()  # known before it starts: an end meanwhile stops it

    @guard("logging child runs")
    def log_child_run(
        self,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        *,
        history: Mapping[str, Iterable[tuple[int, Any]]] | None = None,
        status: str = "FINISHED",
    ) -> None:
        """Record a finished child run of this run, shown nested under it in the MLflow UI.

        For results that are runs of their own but need no session of their own, such as the
        candidates of a hyperparameter search: ``params`` (flattened and redacted like
        :meth:`log_params`), ``metrics`` at step 0, ``history`` (each key's ``(step, value)``
        points), ``tags`` and its ``status`` (FINISHED, FAILED or KILLED). The child is created
        in the background, in this run's experiment, with the tag ``mlflow.parentRunId``; when
        the store is away it is journaled with the rest of the run, and ``mltrail sync``
        creates it.
        """
        if not self.enabled:
            return
        keys = KeySanitizer()
        flat = {keys(k): stored_param(redact_value(k, v)) for k, v in flatten(params or {}).items()}
        values = {keys(k): metric_value(v) for k, v in (metrics or {}).items()}
        child_tags = {
            keys(k): truncate(redact_value(k, str(v)), MAX_TAG_VALUE_LENGTH)
            for k, v in (tags or {}).items()
            if v is not None
        }
        points = [
            (keys(k), int(step), number)
            for k, series in (history or {}).items()
            for step, value in series
            if (number := metric_value(value)) is not None
        ]
        data = child_run_data(
            run_name or fresh_run_name(),
            flat,
            {k: v for k, v in values.items() if v is not None},
            {**child_tags, **_source_tags()},
            self.experiment_id,
            history=points,
            status=status.upper(),
        )
        self._writer.add("child_run", data)  # type: ignore[union-attr]

    @guard("logging a checkpoint")
    def log_checkpoint(
        self,
        path: str | os.PathLike[str],
        step: int | None = None,
        metrics: Mapping[str, Any] | None = None,
        aliases: Iterable[str] = ("latest",),
        source: str | os.PathLike[str] | None = None,
        sha256: str | None = None,
        model: CheckpointModel | None = None,
    ) -> None:
        """Upload a checkpoint file (or folder) in the background under ``checkpoints/``.

        ``checkpoints/index.json`` lists every uploaded checkpoint with its step, metrics and
        sha256, and which file each alias ("best", "latest") points to; the tags
        ``mltrail.checkpoint.<alias>`` name the same files. The local file is never touched.
        ``source`` is the file's origin recorded in the index, when ``path`` is a temporary
        link or copy of it; ``sha256`` its digest when already known (computed while copying),
        so the file is not read once more. A folder (a Transformers ``checkpoint-N``) goes to
        ``checkpoints/<name>/``, its sha256 taken over its files (:func:`tree_sha256`).

        ``model`` says how the adapter loads the checkpoint as a model: with the option
        ``checkpoints_as_models`` (default "auto": on MLflow 3), the checkpoint is also a
        LoggedModel named ``checkpoint-<step>``, linked to the run at ``step`` with the metrics
        logged at that step, and its id is the entry's ``model_id`` in the index. The option
        ``keep_checkpoints`` deletes superseded checkpoints from the store (never the local
        files) and lists them under ``dropped`` in the index.
        """
        if not self.enabled:
            return
        path = Path(path)
        folder = path.is_dir()
        target = f"checkpoints/{path.name}" if folder else "checkpoints"
        if not folder and not path.is_file():
            # The caller's mistake, not mltrail's: warned about, never raised into training.
            logger.warning(
                "mltrail: log_checkpoint(%r): no such file; no checkpoint was logged.", str(path)
            )
            return
        aliases = tuple(aliases)
        values = {k: metric_value(v) for k, v in (metrics or {}).items()}

        name = f"checkpoints/{path.name}"

        def enter(digest: str, extra: dict[str, Any]) -> tuple[dict[str, str], Any]:
            """Enter the checkpoint in the index; the tags and the index that name it."""
            files = [f for f in path.rglob("*") if f.is_file()] if folder else [path]
            entry = {
                "step": step,
                "metrics": values,
                "sha256": digest,
                "size": sum(f.stat().st_size for f in files),
                "source": str(source or path),
                **extra,
            }
            with self._lock:
                before = self._checkpoints["files"].get(name) or {}
                if extra.get("model_id") and before.get("model_id"):
                    # The file was uploaded again under its name (best.keras, last.ckpt): the
                    # LoggedModel of its former content goes, as the run's artifact did.
                    self._writer.add(  # type: ignore[union-attr]
                        "drop_checkpoint", {"path": None, "model_id": before["model_id"]}
                    )
                    self._linked_models.pop(before["model_id"], None)
                self._checkpoints["files"][name] = entry
                for alias in aliases:
                    self._checkpoints["aliases"][alias] = name
                dropped = self._drop_superseded()
                index = json.loads(json.dumps(self._checkpoints, default=str))
            tags = {f"mltrail.checkpoint.{a}": name for a in aliases}
            if dropped:
                tags["mltrail.checkpoints.dropped"] = str(len(self._checkpoints["dropped"]))
            return {**tags, SHA256_TAG_PREFIX + digest[:16]: name}, index

        def upload() -> None:
            digest = sha256 or (tree_sha256(path) if folder else file_sha256(path))
            uploaded = self._writer.upload_now(path, target, "uploading a checkpoint")  # type: ignore[union-attr]
            extra = {}
            if model is not None and self._checkpoints_as_models():
                with guarded("logging a checkpoint as a model", self._errors):
                    extra["model_id"] = self._checkpoint_model(path, name, step, model)
            tags, index = enter(digest, extra)
            if uploaded:
                self.set_tags(tags)
                self.log_dict(index, "checkpoints/index.json")
            else:  # journaled: its tags and index follow it, never name it before it is stored
                for record in self._index_records(tags, index):
                    self._writer.journal(record)  # type: ignore[union-attr]

        def fallback() -> list[dict[str, Any]]:
            kept = self._writer.artifact_for_spool(  # type: ignore[union-attr]
                {"kind": "artifact", "path": str(path), "artifact_path": target}
            )
            digest = sha256 or (tree_sha256(path) if folder else file_sha256(path))
            return [kept, *self._index_records(*enter(digest, {}))]

        upload.kind = "uploading a checkpoint"  # type: ignore[attr-defined]
        # At an exit that cannot wait for the upload: keep a copy of the file, and its tags and
        # index behind it, for `mltrail sync`.
        upload.fallback = fallback  # type: ignore[attr-defined]
        self._writer.add_job(upload)  # type: ignore[union-attr]

    def _index_records(self, tags: dict[str, str], index: Any) -> list[dict[str, Any]]:
        """The journal records of a checkpoint's tags and ``checkpoints/index.json``."""
        path = self._temp_file("checkpoints/index.json")
        path.write_text(json.dumps(index, indent=2, sort_keys=True, default=str))
        kept = self._writer.artifact_for_spool(  # type: ignore[union-attr]
            {"kind": "artifact", "path": str(path), "artifact_path": "checkpoints", "owned": True}
        )
        return [{"kind": "tags", "data": tags}, kept]

    def _checkpoints_as_models(self) -> bool:
        choice = self.options.checkpoints_as_models
        return choice != "false" and logged_models.supported()

    def _checkpoint_model(
        self, path: Path, name: str, step: int | None, spec: CheckpointModel
    ) -> str | None:
        """Save checkpoint ``path`` as an MLflow Model and send it as a LoggedModel; its id,
        or None when journaled for ``mltrail sync`` (the store is away)."""
        folder = self._save_flavor(
            spec.load(path), spec.flavor, spec.signature_from, spec.output_example, spec.kwargs
        )
        try:
            if spec.model_file:  # the checkpoint is the flavor's model file: no second save
                logged_models.adopt_model_file(path, folder, spec.model_file)
            points = self._points.at_step(step) if step is not None else []
            data = logged_models.model_record(
                f"checkpoint-{step}" if step is not None else Path(name).stem,
                str(folder),
                step=step or 0,
                metrics=logged_models.linked_metrics(points, self._datasets),
                tags={
                    logged_models.KIND_TAG: "checkpoint",
                    logged_models.CHECKPOINT_TAG: name,
                    "mltrail.model.flavor": spec.flavor,
                    **spec.tags,
                },
                experiment_id=self.experiment_id,
            )
            state = self._writer.send_now(  # type: ignore[union-attr]
                {"kind": "logged_model", "data": data}, "logging a checkpoint as a model"
            )
        finally:
            shutil.rmtree(folder.parent, ignore_errors=True)
        if state != "sent":
            return None
        with self._lock:
            self._linked_models[data["model_id"]] = (step or 0, len(points))
        return data["model_id"]

    def _drop_superseded(self) -> list[str]:
        """Retention (``keep_checkpoints``): move superseded checkpoints from the index's files
        to its ``dropped`` ones and queue their deletion from the store. Under ``self._lock``."""
        files = self._checkpoints["files"]
        dropped = superseded(files, self._checkpoints["aliases"], self.options.keep_checkpoints)
        now = int(time.time())
        for name in dropped:
            entry = files.pop(name)
            self._checkpoints.setdefault("dropped", {})[name] = {**entry, "dropped_at": now}
            self._writer.add(  # type: ignore[union-attr]
                "drop_checkpoint", {"path": name, "model_id": entry.get("model_id")}
            )
        return dropped

    def _link_late_metrics(self) -> None:
        """Link the LoggedModels to metrics logged after they were sent: a checkpoint's to the
        values of its step a framework reported after saving it, the final model's to values
        logged after it (early stopping's summary). Runs on the uploader thread, behind the
        checkpoint uploads still queued at the end."""
        with self._lock:
            models = dict(self._linked_models)
        for model_id, (step, linked) in models.items():
            points = self._points.final_and_best() if step is None else self._points.at_step(step)
            if len(points) > linked:
                rows = logged_models.linked_metrics(points, self._datasets)
                self._writer.add("model_metrics", {"model_id": model_id, "metrics": rows})  # type: ignore[union-attr]

    @guard("logging the model")
    def log_model(
        self,
        model: Any,
        flavor: str,
        signature_from: Any = None,
        registered_model_name: str | None = None,
        *,
        output_example: Any = None,
        background: bool = True,
        **flavor_kwargs: Any,
    ) -> None:
        """Log ``model`` under ``model/`` as an MLflow Model in ``flavor`` ("pytorch", "keras",
        "sklearn", "xgboost", ...), with a signature and input example from ``signature_from``.

        Serialisation runs on the background thread (``background=False`` runs it now);
        ``registered_model_name`` also registers it in the Model Registry. A model the store has
        not taken when the run ends within ``flush_timeout`` (a busy or unreachable store) is
        saved if it is not yet and journaled, with the run's end behind it, for ``mltrail sync``.
        """
        if not self.enabled:
            return

        def save() -> Path:
            return self._save_flavor(model, flavor, signature_from, output_example, flavor_kwargs)

        def record(folder: Path) -> dict[str, Any]:
            """The LoggedModel of the final model, linked to the run's last and best points."""
            return logged_models.model_record(
                logged_models.FINAL_MODEL_NAME,
                str(folder),
                step=self._points.last_step(),
                metrics=logged_models.linked_metrics(self._points.final_and_best(), self._datasets),
                tags={logged_models.KIND_TAG: "model", "mltrail.model.flavor": flavor},
                experiment_id=self.experiment_id,
                register=registered_model_name,
                final=True,
            )

        def sent(data: dict[str, Any]) -> None:
            with self._lock:
                self._linked_models[data["model_id"]] = (None, len(data["metrics"]))

        job = FinalModel(
            save,
            record,
            self._writer,  # type: ignore[arg-type]
            self.set_tags,
            sent,
            flavor,
            registered_model_name,
        )
        self._final_models.append(job)

        def fallback() -> list[dict[str, Any]]:
            try:  # the writer's close journals the rest of the run after this
                return job.journal()
            except Exception as error:
                if strict_mode():
                    raise
                self._errors.report("logging the model", error)
                return []

        def run() -> None:  # a function: the writer reads its kind and fallback
            job.run()

        run.kind = "logging the model"  # type: ignore[attr-defined]
        # At an exit that cannot wait for it: the model, its LoggedModel and its tags go to the
        # journal, for `mltrail sync`.
        run.fallback = fallback  # type: ignore[attr-defined]
        if background:
            self._writer.add_job(run)  # type: ignore[union-attr]
        else:
            run()

    def _save_flavor(
        self,
        model: Any,
        flavor: str,
        example: Any,
        output: Any,
        flavor_kwargs: Mapping[str, Any],
    ) -> Path:
        """Save ``model`` as an MLflow Model in ``flavor`` (signature and input example from
        ``example`` and ``output``) into a temporary folder, which the caller removes."""
        try:
            module = importlib.import_module(f"mlflow.{flavor}")
        except ImportError as error:
            raise MltrailError(f"MLflow has no model flavor {flavor!r}.") from error
        from mlflow.models import infer_signature

        categorical = _categorical_columns(example)
        if categorical:
            # MLflow's schemas have no categorical type: the signature would say "string", and
            # the pyfunc would refuse the very DataFrames the model was trained on.
            self.set_tags({NO_SIGNATURE_TAG: f"categorical columns: {', '.join(categorical)}"})
            example = None
        signature = None
        if example is not None:
            with guarded("inferring the model signature", self._errors):
                signature = infer_signature(example, output)
        target = self._temp_dir("model") / "model"
        target.mkdir()  # mlflow.keras.save_model writes the input example before creating it
        kwargs = dict(flavor_kwargs)
        if example is not None:
            kwargs.setdefault("input_example", example)
        if not {"pip_requirements", "extra_pip_requirements", "conda_env"} & kwargs.keys():
            # The flavor's own pins: inferring requirements re-imports the model in a
            # subprocess, which costs seconds per model.
            defaults = getattr(module, "get_default_pip_requirements", None)
            if defaults is not None:
                kwargs["pip_requirements"] = defaults()
        with _SAVING, _unchecked_pins():
            if isinstance(model, ModelFile):  # written by the training's process
                if model.in_place_of is not None:
                    model.save_in_place(module, target, signature, **kwargs)
                    return target
                if model.save(target, signature, kwargs):
                    return target
                model = model.rebuilt()
            module.save_model(model, str(target), signature=signature, **kwargs)
        return target

    # --- ending --------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything logged so far is sent or journaled; False when out of time."""
        if not self._writer:
            return True
        return self._writer.flush(self.options.flush_timeout if timeout is None else timeout)

    def end(
        self, status: str = "FINISHED", *, background: bool = False, end_time: int | None = None
    ) -> None:
        """End the run with ``status`` (FINISHED, FAILED or KILLED), flushing within the budget.

        A run that mltrail joined (the user's own active run) is flushed but left open.
        Calling ``end`` again does nothing. ``background=True`` returns at once and closes the
        run on a thread of its own (what adapters do, see ``end_in_background``): the
        interpreter's exit, or ``mltrail.wait()``, waits for it. The run's end time is when
        ``end`` is called (``end_time``: that time in ms since the epoch), not when its last
        data has been sent.
        """
        status = status.upper()
        if status not in _STATUSES:
            raise MltrailError(f"status must be one of {sorted(_STATUSES)}, not {status!r}.")
        if self._ended.is_set() or not self.enabled:
            return
        self._ended.set()
        self._end_ms = int(time.time() * 1000) if end_time is None else int(end_time)
        lifecycle.unregister(self)
        self.status = status
        if background:
            # The provenance wait (at most max(5 s, flush_timeout)), the flush and the replay of
            # an outage's spool (flush_timeout together), and a margin.
            timeout = self.options.flush_timeout
            lifecycle.close_soon(
                self, lambda: self._close(status), max(5.0, timeout) + timeout + 10
            )
        else:
            self._close(status)

    def _close(self, status: str) -> None:
        """The work of :meth:`end` after the status is decided: summaries, provenance, flush."""
        try:
            with guarded("ending the run", self._errors):
                if self._monitor is not None:
                    self._monitor.stop()
                if self.provenance is not None:
                    with guarded("finishing provenance", self._errors):
                        self.provenance.finish(self)
                self._write_summary_artifacts()

                def late() -> None:  # behind the checkpoint uploads still queued
                    self._link_late_metrics()

                late.kind = "linking metrics to models"  # type: ignore[attr-defined]
                self._writer.add_job(late)  # type: ignore[union-attr]
                if self._repair is not None:
                    # Usually done in a moment; a later end goes to the spool (Writer.add).
                    self._repair.join(min(REPAIR_WAIT, self.options.flush_timeout))
        finally:
            # Whatever failed above, the status is sent and the queues are flushed.
            self._close_writer(status)
        for folder in [self._tmp, *self._remove_at_close]:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        if self._errors.total():
            logger.warning(
                "mltrail: %d internal error(s) during run %s: %s",
                self._errors.total(),
                self.run_id,
                dict(self._errors.counts),
            )

    def _close_writer(self, status: str) -> None:
        summary: dict[str, Any] = {}
        with guarded("ending the run", self._errors):
            started = time.monotonic()
            # The queued work first (the model, plots): its errors count in mltrail.errors.
            self._writer.flush(self.options.flush_timeout)  # type: ignore[union-attr]
            end_tags: dict[str, Any] = {}
            if self._nonfinite:
                end_tags["mltrail.metrics.nonfinite"] = json.dumps(dict(self._nonfinite))
            if self._errors.total():
                end_tags["mltrail.errors"] = str(self._errors.total())
            self.set_tags(end_tags)
            if self.owned:
                self._writer.add(  # type: ignore[union-attr]
                    "status", {"status": status, "end_time": self._end_ms}
                )
            left = max(0.0, self.options.flush_timeout - (time.monotonic() - started))
            summary = self._writer.close(left)  # type: ignore[union-attr]
            if summary.get("spool_path") and not self.offline:
                # The store may be back after an outage: replay now, in what is left of the budget.
                left = self.options.flush_timeout - (time.monotonic() - started)
                summary = self._replay_spool(summary, left)
            if summary.get("dropped_jobs"):
                logger.warning(
                    "mltrail: the store did not take run %s's data within flush_timeout (%g s); "
                    "not done: %s. A longer flush_timeout gives it more time.",
                    self.run_id,
                    self.options.flush_timeout,
                    ", ".join(summary["dropped_jobs"]),
                )
            if summary.get("spool_path") and any(m.went_to_journal for m in self._final_models):
                logger.warning(
                    "mltrail: the final model of run %s was still being sent to %s when "
                    "flush_timeout (%g s) passed; it is journaled%s, and `mltrail sync` uploads it.",
                    self.run_id,
                    describe_uri(self.tracking_uri),
                    self.options.flush_timeout,
                    " with the run's end behind it (the run shows RUNNING until then)"
                    if self.owned
                    else "",
                )
            if summary.get("spool_path"):
                logger.warning(
                    "mltrail: %d record(s) of run %s could not be sent to %s and are kept in %s; "
                    "run `mltrail sync` to upload them.",
                    summary["spooled"],
                    self.run_id,
                    describe_uri(self.tracking_uri),
                    summary["spool_path"],
                )
            elif summary.get("spool_error"):
                # The spool logged the error when it failed; this is the run's summary.
                logger.warning(
                    "mltrail: some data of run %s could not be sent to %s nor journaled (%s).",
                    self.run_id,
                    describe_uri(self.tracking_uri),
                    summary["spool_error"],
                )
            else:
                self._writer.spool.mark_synced()  # type: ignore[union-attr]

    def remove_at_close(self, folder: Path) -> None:
        """Remove ``folder`` (an adapter's temporary files) once the run is closed and its files
        are sent or journaled, which may be after ``end()`` returned."""
        self._remove_at_close.append(Path(folder))

    def _replay_spool(self, summary: dict[str, Any], budget: float) -> dict[str, Any]:
        if budget <= 1:
            return summary
        spool = self._writer.spool  # type: ignore[union-attr]
        try:
            call_with_timeout(
                lambda: replay(spool.path, self.client, self.tracking_uri, force=True),
                budget,
                "replaying the spool",
            )
        except Exception as error:
            logger.debug("in-process replay failed: %s", error)
            return summary
        if not spool.path.exists():  # replayed completely and retired
            return {**summary, "spool_path": None}
        return summary

    def _write_summary_artifacts(self) -> None:
        if self._full_params or self._param_changes:
            data = {
                "params": self._full_params,
                "changes": self._param_changes,
            }
            self.log_dict(data, "mltrail/params.json")
        if self._keys.changed:
            self.log_dict(self._keys.changed, "mltrail/keys.json")

    def __enter__(self) -> Trail:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.end("FINISHED")
        else:
            self.end_with_exception(exc)

    def end_with_exception(
        self, exc: BaseException, *, background: bool = False, end_time: int | None = None
    ) -> None:
        """End the run for ``exc``: KILLED for interrupts, FAILED otherwise, with its type
        (``end_time``: see :meth:`end`)."""
        killed = isinstance(exc, KeyboardInterrupt)
        if not isinstance(exc, SystemExit) or exc.code not in (0, None):
            self.set_tags(
                {
                    "mltrail.exception.type": type(exc).__name__,
                    "mltrail.exception.message": redact_text(str(exc))[:1000],
                }
            )
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            self.end("FINISHED", background=background, end_time=end_time)
        else:
            self.end("KILLED" if killed else "FAILED", background=background, end_time=end_time)

    # --- helpers -------------------------------------------------------------------------------

    @property
    def params(self) -> dict[str, str]:
        """The params logged so far, as MLflow stores them (first value of each key)."""
        with self._lock:
            return dict(self._params)

    @property
    def errors(self) -> dict[str, int]:
        """Internal errors of this run, by kind."""
        return dict(self._errors.counts)

    @property
    def error_counter(self) -> ErrorCounter:
        """The counter of this run's internal errors (its ``mltrail.errors`` tag): adapters
        report their own errors into it (see :mod:`mltrail.recording.session`)."""
        return self._errors

    @property
    def store_unreachable(self) -> bool:
        """True while what is logged goes to the spool rather than the store: the run started
        offline, or a request failed moments ago. Searches would only wait for a timeout."""
        return self._writer is not None and self._writer.is_offline()

    def _temp_dir(self, name: str) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="mltrail-"))
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self._tmp))
        return path

    def _temp_file(self, artifact_file: str) -> Path:
        return self._temp_dir("artifact") / Path(artifact_file).name

    def __repr__(self) -> str:
        return f"Trail(run_id={self.run_id!r}, status={self.status!r})"


def _previous_checkpoints(client: Any, run_id: str) -> dict[str, Any] | None:
    """The checkpoint index of a run being resumed, which its new checkpoints add to."""
    try:
        with tempfile.TemporaryDirectory() as folder, _no_progress_bar():
            local = client.download_artifacts(run_id, "checkpoints/index.json", folder)
            index = json.loads(Path(local).read_text())
    except Exception:  # no checkpoints yet
        return None
    if isinstance(index.get("files"), dict) and isinstance(index.get("aliases"), dict):
        return index
    return None


_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
_progress_bar_lock = threading.Lock()


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """No MLflow download progress bar ("Downloading artifacts: 0/1") on the user's terminal
    while mltrail reads a file of a run itself, as a resumed run reads its checkpoint index."""
    with _progress_bar_lock:  # one at a time, so that each puts back what it found
        before = os.environ.get(_PROGRESS_BAR)
        os.environ[_PROGRESS_BAR] = "false"
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(_PROGRESS_BAR, None)
            else:
                os.environ[_PROGRESS_BAR] = before


def _parent(artifact_file: str) -> str | None:
    parent = str(Path(artifact_file).parent)
    return None if parent in {"", "."} else parent


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None) | list | tuple | dict)


_names = random.SystemRandom()


def fresh_run_name() -> str:
    """A name like MLflow's ("bright-owl-417"), drawn from the OS's randomness.

    MLflow draws run names from Python's global ``random``, which training scripts seed
    (``seed_everything(7)``): every seeded run would then get the same name.
    """
    try:
        from mlflow.utils.name_utils import _GENERATOR_NOUNS as nouns
        from mlflow.utils.name_utils import _GENERATOR_PREDICATES as predicates
    except ImportError:  # private to MLflow: any version may move them
        return f"run-{_names.getrandbits(32):08x}"
    name = ""
    for _ in range(10):  # MLflow keeps its names within 20 characters
        words = (_names.choice(predicates), _names.choice(nouns), str(_names.randint(0, 999)))
        name = "-".join(words).lower()
        if len(name) <= 20:
            break
    return name[:20]


def _source_tags() -> dict[str, str]:
    from mlflow.utils.mlflow_tags import MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER

    from mltrail.capture.env import mlflow_user
    from mltrail.capture.notebook import source_name

    entry = sys.argv[0] if sys.argv and sys.argv[0] else "<interactive>"
    kind = "LOCAL"
    notebook = source_name()  # a notebook's path, not ipykernel_launcher.py
    if notebook is not None:
        entry, kind = notebook, "NOTEBOOK"
    user = mlflow_user()
    return {MLFLOW_SOURCE_NAME: entry, MLFLOW_SOURCE_TYPE: kind, MLFLOW_USER: user}


def _user_active_run(tracking_uri: str) -> str | None:
    """The run id of the user's active MLflow run in this thread, when it is on the same store."""
    try:
        import mlflow

        run = mlflow.active_run()
        if run is None or mlflow.get_tracking_uri() != tracking_uri:
            return None
        return run.info.run_id
    except Exception:
        return None


@contextlib.contextmanager
def _unchecked_pins() -> Iterator[None]:
    """Skip MLflow's check that the model's pip pins match the installed packages.

    The pins are the flavor's own, read from this very environment, so the check cannot fail;
    but its first call maps every installed file to its package (seconds with a large
    environment, holding the GIL while the training runs). Only during mltrail's own save.
    """
    from mlflow.utils import environment

    check = getattr(environment, "warn_dependency_requirement_mismatches", None)
    if check is None:
        yield
        return
    environment.warn_dependency_requirement_mismatches = lambda requirements: None
    try:
        yield
    finally:
        environment.warn_dependency_requirement_mismatches = check


def _categorical_columns(example: Any) -> list[str]:
    """The pandas ``category`` columns of a DataFrame example (none for other examples)."""
    dtypes = getattr(example, "dtypes", None)
    if not hasattr(dtypes, "items"):
        return []
    return [str(name) for name, dtype in dtypes.items() if str(dtype) == "category"]
