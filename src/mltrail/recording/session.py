"""An adapter's hold on a run: the ``trail=`` handshake, start/resume/join, the end, errors.

Every adapter records through one :class:`RunSession`. It owns what is the same for every
framework, so that an adapter only translates its framework's events:

- the handshake: an adapter takes either ``trail=`` (a :class:`~mltrail.Trail` its owner ends)
  or the keyword arguments of :func:`~mltrail.start_run`, never both, checked once, here;
- opening: start a run of its own (tagged ``mltrail.framework``), resume one (a checkpoint's
  run id), join one that somebody else owns (Lightning's MLFlowLogger, a finished run that a
  later ``evaluate`` adds to), or hand out the given Trail; :meth:`RunSession.log_after`:
  an ``evaluate``/``predict``/``test`` after the training into the training's run;
  :meth:`RunSession.open_checkpoint_run`: the run whose id a checkpoint holds, else a new one
  (:meth:`RunSession.open_kept_run`, for any run id an adapter keeps with its framework);
  :meth:`RunSession.open_beside`: a run that opens beside a training that logs while it runs
  (boosting rounds), which never waits for it;
- ending: FINISHED, FAILED with the exception (KILLED on KeyboardInterrupt), or FAILED for a
  training that stopped where no hook could see why; a given Trail is only flushed;
  :meth:`RunSession.end_after` logs the run's last values first;
- errors: mltrail's own errors in hooks are counted into the run's ``mltrail.errors``;
- a training still running when the interpreter exits (a worker that died in a spawned
  process) ends FAILED, before mltrail's exit hook would end it FINISHED;
- a temporary folder per run for the files an adapter writes, removed once they are sent.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import logging
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mltrail.config import Options
from mltrail.errors import ErrorCounter, MltrailError, guarded, process_errors, reject_unknown
from mltrail.recording import deferred, distributed
from mltrail.recording.late_trail import LateTrail
from mltrail.recording.recorder import Recorder, RemoteTrail, recorder, start_early
from mltrail.recording.steps import next_free_step
from mltrail.recording.trail import RUN_START_TIME, Trail, start_run

logger = logging.getLogger("mltrail.session")

#: The names of :func:`mltrail.start_run`'s keyword arguments, run options included.
START_RUN_ARGS = frozenset({"experiment", "run_name", "tracking_uri", "run_id", "tags"}) | {
    field.name for field in dataclasses.fields(Options)
}
_RUN_NAMES = frozenset({"experiment", "run_name", "tracking_uri", "run_id", "tags"})


def check_start_run_kwargs(kwargs: Mapping[str, Any], owner: str = "TrailCallback") -> None:
    """Fail at construction, not mid-training, on an unknown or badly typed start_run argument.

    Raises:
        MltrailError: naming the argument, a close match and the valid names.
    """
    reject_unknown(
        kwargs,
        START_RUN_ARGS,
        f"{owner} got an unknown argument {{name}}.{{hint}} It takes trail= or the keyword "
        "arguments of mltrail.start_run: {known}.",
    )
    Options.resolve(**{k: v for k, v in kwargs.items() if k not in _RUN_NAMES})


class RunSession:
    """One adapter's run at a time: the given Trail, or runs it starts, resumes or joins.

    Args:
        framework: the adapter's framework ("keras", ...), recorded as ``mltrail.framework``
            and prefixed to the kinds of errors it reports.
        trail: an open :class:`~mltrail.Trail` to record into; its owner ends it.
        start_run_kwargs: keyword arguments of :func:`~mltrail.start_run` for the runs this
            session starts.
        owner: how the user knows the adapter, for error messages ("TrailCallback").
        copies_join: a copy of this session (pickled into a spawned worker process, where the
            given Trail cannot follow) records into the given Trail's run, joined, instead of
            starting runs of its own.

    Raises:
        MltrailError: for both ``trail`` and start-run arguments, a ``trail`` that is not a
            Trail, or an unknown or badly typed start-run argument.

    Attributes:
        trail: the Trail of the run being recorded, None between runs.
        owns: whether the current run is this session's to end.
        last_run_id: the run id of the current or last run.
        last_tracking_uri: the store of that run (None: the configured one).
        last_status: the status the last run ended with (None for a given or joined run).
    """

    def __init__(
        self,
        framework: str,
        trail: Trail | None = None,
        start_run_kwargs: Mapping[str, Any] | None = None,
        *,
        owner: str = "TrailCallback",
        copies_join: bool = False,
    ) -> None:
        kwargs = dict(start_run_kwargs or {})
        if trail is not None and not isinstance(trail, Trail):
            raise MltrailError(
                f"{owner}(trail=...) takes the Trail that mltrail.start_run() returned."
            )
        if trail is not None and kwargs:
            raise MltrailError(
                f"{owner} takes either trail= (an existing Trail) or start_run keyword arguments "
                f"({', '.join(sorted(kwargs))}), not both."
            )
        check_start_run_kwargs(kwargs, owner)
        self.framework = framework
        self.owner = owner
        self.given = trail
        self.start_run_kwargs = kwargs
        self.trail: Trail | None = None
        self.owns = False
        self._last_run_id: str | None = trail.run_id if trail is not None else None
        self._late: LateTrail | None = None  # the last run opened beside its training
        self.last_tracking_uri: str | None = (trail.tracking_uri or None) if trail else None
        self.last_status: str | None = None
        # Plain data, kept in copies: where a copy finds the given Trail's run.
        self._given_run = (
            (trail.run_id, trail.tracking_uri) if copies_join and trail is not None else None
        )
        self._tmp: Path | None = None
        self._training = False
        self._release: weakref.finalize | None = None  # see end_when_released

    @property
    def last_run_id(self) -> str | None:
        """The run id of the current or last run; of a run opened beside its training
        (:meth:`open_beside`) once it has opened, which this waits for (a moment at most)."""
        late = self._late
        if late is not None:
            late.wait_open(deferred.OPEN_AFTER + late.options.start_timeout)
            if late.run_id is not None:
                return late.run_id
        return self._last_run_id

    @last_run_id.setter
    def last_run_id(self, run_id: str | None) -> None:
        self._last_run_id = run_id

    @property
    def opened_beside(self) -> bool:
        """Whether the current run opened beside its training (:meth:`open_beside`): its id
        is not known at once, and reading it waits for it."""
        return self._late is not None and self.trail is self._late

    # --- opening -------------------------------------------------------------------------------

    def open(
        self,
        *,
        run_id: str | None = None,
        join: bool = False,
        tracking_uri: str | None = None,
        tags: Mapping[str, Any] | None = None,
        light: bool = False,
        restart_step: int | None = None,
        checkpoint: str | None = None,
        global_step: int | None = None,
        steps_name: str | None = None,
        how_to_continue: str = "continue the same model",
        sample_system: bool = True,
    ) -> Trail:
        """The Trail to record into: the given one, or a run this session starts.

        Args:
            run_id: resume this run (``join=False``) or log into it without owning it
                (``join=True``: its status stays with its owner).
            join: see ``run_id``.
            tracking_uri: the store of ``run_id`` when it is not the configured one.
            tags: more tags for the run (``mltrail.framework`` is always set).
            light: no provenance capture and no system metrics (adding to a run that has them).
            restart_step: when resuming a run (``run_id``, or the start-run arguments'), the
                first step this training logs: the checkpoint holds the state after step
                ``restart_step - 1``. Restarting before the run's last step forks the run, or
                with ``fork=False`` rewinds it (see :mod:`mltrail.recording.restart`).
            checkpoint: the checkpoint file the training resumes from (``mltrail.resumed_from``).
            global_step: the optimizer step of that checkpoint (``step/`` values copied to a fork).
            steps_name: what the steps count ("XGBoost rounds"). Given with ``restart_step``, a
                training into the given Trail must start past the steps that Trail holds
                (:func:`~mltrail.recording.steps.next_free_step`): one that would log the same
                steps again is refused.
            how_to_continue: what the user does instead, for that error ("continue the same
                booster with xgb_model=").
            sample_system: ``False``: no system metrics for a run started now (a training
                recorded after it ended: they would describe the recording, not the training).

        Raises:
            MltrailError: when the given Trail has ended, ``run_id`` does not exist, or a
                training would log steps the given Trail holds (see ``steps_name``).
        """
        if self.given is not None:
            if self.given.status is not None:
                raise MltrailError(
                    f"The Trail given to {self.owner} has ended (run {self.given.run_id}, "
                    f"{self.given.status}). Give it an open Trail, or none to let it start its "
                    "own run."
                )
            if (
                steps_name is not None
                and restart_step is not None
                and (taken := next_free_step(self.given)) > restart_step
            ):
                raise MltrailError(
                    f"Run {self.given.run_id} already holds {steps_name} up to step {taken - 1}; "
                    f"this training would log them again from step {restart_step}. Use a new "
                    f"{self.owner}() without trail= (one run per training), or "
                    f"{how_to_continue} so that the steps go on."
                )
            self.trail, self.owns = self.given, False
            if not self.given.attached_tags.get("mltrail.framework"):
                self.given.set_tags({"mltrail.framework": self.framework})
            return self.given
        return self._start(
            run_id,
            join,
            tracking_uri,
            tags,
            light,
            (restart_step, checkpoint, global_step),
            sample_system=sample_system,
        )

    def _start(
        self,
        run_id: str | None,
        join: bool,
        tracking_uri: str | None,
        tags: Mapping[str, Any] | None,
        light: bool,
        restart: tuple[int | None, str | None, int | None] = (None, None, None),
        *,
        sample_system: bool = True,
    ) -> Trail:
        """Start, resume or join a run with this session's start-run arguments (see open)."""
        if self._given_run is not None:  # a copy of a session given a Trail (copies_join)
            run_id, tracking_uri = self._given_run
            join = True
        kwargs, run_tags = self._start_args(run_id, join, tracking_uri, tags, light, sample_system)
        restart_step, checkpoint, global_step = restart
        resuming = kwargs.get("run_id") is not None and not join and self._given_run is None
        if resuming and restart_step is not None:  # continue, fork or rewind: the kernel decides
            from mltrail.recording.restart import open_resumed

            self.trail = open_resumed(
                kwargs.pop("run_id"),
                restart_step,
                tags=run_tags,
                checkpoint=checkpoint,
                global_step=global_step,
                **kwargs,
            )
        else:
            self.trail = start_run(tags=run_tags, join=join and run_id is not None, **kwargs)
        self._late = None
        self.owns = not (join and run_id is not None)
        self.last_run_id = self.trail.run_id
        self.last_tracking_uri = self.trail.tracking_uri or None
        self.last_status = None
        return self.trail

    def _start_args(
        self,
        run_id: str | None,
        join: bool,
        tracking_uri: str | None,
        tags: Mapping[str, Any] | None,
        light: bool,
        sample_system: bool,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The start-run arguments of a run of this session, and its tags."""
        kwargs = dict(self.start_run_kwargs)
        run_tags = {
            **(kwargs.pop("tags", None) or {}),
            "mltrail.framework": self.framework,
            **(tags or {}),
        }
        if run_id is not None:
            kwargs.pop("experiment", None)
            kwargs.pop("run_name", None)
            kwargs.update(run_id=run_id)
        if tracking_uri:
            kwargs["tracking_uri"] = tracking_uri
        if light:
            kwargs.update(capture=False, system_metrics=False)
        if not sample_system:
            kwargs["system_metrics"] = False
        return kwargs, run_tags

    def can_open_beside(self) -> bool:
        """Whether this session's next run may open beside its training (:meth:`open_beside`):
        a new run of its own, in the main process of a training (rank zero), that nothing needs
        before the training ends (:func:`~mltrail.recording.deferred.can_record_later`)."""
        return (
            self.given is None
            and self._given_run is None
            and "run_id" not in self.start_run_kwargs
            and distributed.is_rank_zero()
            and deferred.can_record_later(self.start_run_kwargs)
        )

    def start_recorder(self) -> None:
        """Start mltrail's recorder process now if this session's runs will open in it
        (:meth:`can_open_in_recorder`): it imports MLflow and opens the store while the script
        goes on, ready by the first training. For an adapter made before its training."""
        if self.given is None and "run_id" not in self.start_run_kwargs:
            start_early(self.framework, self.start_run_kwargs)

    def can_open_in_recorder(self) -> bool:
        """Whether this session's next run may open beside its training
        (:meth:`can_open_beside`) in mltrail's recorder process: then the training's process
        never imports MLflow for it, and never shares its interpreter with the recording.
        Only for a framework registered with ``records_beside``: the recorder warms up for
        its runs (another's flavor, Transformers', would take seconds to import there)."""
        from mltrail.autolog import registry

        declared = registry.frameworks().get(self.framework)
        return (
            declared is not None
            and declared.records_beside
            and self.can_open_beside()
            and recorder() is not None
        )

    def open_beside(
        self, what: str, *, tags: Mapping[str, Any] | None = None, sample_system: bool = True
    ) -> LateTrail:
        """Open a new run beside the training: in mltrail's recorder process
        (:mod:`mltrail.recording.recorder`) where this process has not imported MLflow, else on
        mltrail's recording thread. The training logs into the
        :class:`~mltrail.recording.late_trail.LateTrail` returned at once, and waits for
        neither MLflow, the store nor the run (only when :meth:`can_open_beside`).

        Args:
            what: what the run records, for messages ("XGBoost training").
            tags: more tags for the run (``mltrail.framework`` is always set).
            sample_system: ``False``: no system metrics from the recorder's run until
                :meth:`~mltrail.Trail.start_system_metrics` (a training that may end before
                the recorder opens its run); on mltrail's thread they are sampled when the run
                opens while the training runs.
        """
        fields = Options.__dataclass_fields__
        options = Options.resolve(**{k: v for k, v in self.start_run_kwargs.items() if k in fields})
        late = LateTrail(options, self.start_run_kwargs.get("tracking_uri"))
        self.trail, self.owns, self.last_status = late, True, None  # type: ignore[assignment]
        self._late = late
        process = recorder()
        if process is not None:  # recorded in mltrail's recorder process, opened at once
            kwargs, run_tags = self._start_args(None, False, None, tags, False, sample_system)
            remote = process.open(kwargs, run_tags, late.started_ms, options, self.framework)
            late.attach(remote)  # type: ignore[arg-type]
            return late

        def begin() -> None:
            running = late.pending is not None and not late.pending.training_over
            kwargs, run_tags = self._start_args(None, False, None, tags, False, running)
            token = RUN_START_TIME.set(late.started_ms)
            try:
                trail = start_run(tags=run_tags, **kwargs)
            except BaseException:
                late.failed()
                raise
            finally:
                RUN_START_TIME.reset(token)
            if self._late is late:
                self.last_tracking_uri = trail.tracking_uri or None
            late.attach(trail)

        late.pending = deferred.record_beside(begin, _nothing, what)
        return late

    def reopen(self) -> Trail:
        """Add to the run this session recorded last (an ``evaluate`` after ``fit``): joined,
        so its status and end time stay; :meth:`end` only flushes. A given Trail that its
        owner has ended since, and the run of a session copied into another process, are
        joined by run id in the store they were recorded in."""
        if self.trail is not None:
            return self.trail
        if self.given is not None and self.given.status is None:
            return self.open()
        if self.last_run_id is None:
            raise MltrailError(f"{self.owner} has recorded no run yet.")
        late = self._late
        if late is not None and isinstance(late.trail, RemoteTrail):
            return self._reopen_in_recorder(late.trail.recorder, late)
        return self._start(self.last_run_id, True, self.last_tracking_uri, None, True)

    def _reopen_in_recorder(self, process: Recorder, fit: LateTrail) -> Trail:
        """Join the run that the recorder process recorded last (:meth:`open_beside`) there,
        where MLflow is imported already: this process still never imports it."""
        joined = LateTrail(fit.options, fit.tracking_uri)
        kwargs, run_tags = self._start_args(fit.run_id, True, fit.tracking_uri, None, True, False)
        remote = process.open(
            {**kwargs, "join": True}, run_tags, joined.started_ms, fit.options, self.framework
        )
        joined.attach(remote)
        self.trail, self.owns, self.last_status = joined, False, None  # type: ignore[assignment]
        return self.trail  # type: ignore[return-value]

    def open_after(self, *, tags: Mapping[str, Any] | None = None) -> Trail:
        """The run of a call after the training (``evaluate``, ``predict``, ``test``): the run
        this session recorded last, reopened (:meth:`reopen`: joined, its status stays), or a
        run of its own, tagged ``tags``, when it recorded none (in mltrail's recorder process
        where it can be, :meth:`can_open_in_recorder`)."""
        if self.last_run_id is not None:
            return self.reopen()
        if self.can_open_in_recorder():
            return self.open_beside(f"{self.framework} run", tags=tags)  # type: ignore[return-value]
        return self.open(tags=tags)

    def log_after(self, metrics: Mapping[str, Any], step: int) -> Trail | None:
        """Log the metrics of a call after the training at ``step`` (the training's last step)
        into the run of :meth:`open_after`, then end it again (a reopened run only gets them).

        Returns:
            The Trail they went to; None when a run of this session is open (the call runs
            inside the training, whose hooks record it), and nothing is logged.
        """
        if self.trail is not None:
            return None
        trail = self.open_after()
        self.end_after(lambda trail: trail.log_metrics(metrics, step=step))
        return trail

    def open_checkpoint_run(
        self,
        resume_id: str | None,
        restart_step: int,
        *,
        global_step: int | None = None,
        checkpoint: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> Trail:
        """The run of a training resumed from a checkpoint that holds a run id.

        ``resume_id`` (the run id the adapter kept in the framework's checkpoint) is resumed
        at ``restart_step``: continued, forked or rewound as :meth:`open` decides. Without
        one, and with a given Trail, this is :meth:`open`. A run that cannot be resumed (deleted,
        in another store) is reported (one warning, counted) and a new run recorded instead,
        tagged ``mltrail.<framework>.resumed_run`` with the run id it could not resume.

        Args:
            resume_id: the run id found in the checkpoint (None: a new run).
            restart_step: the first step the resumed training logs (see :meth:`open`).
            global_step: the optimizer step of the checkpoint.
            checkpoint: the checkpoint file the training resumes from.
            tags: more tags for the run, resumed or new.
        """
        return self.open_kept_run(
            resume_id,
            what="the checkpoint's run",
            tags=tags,
            restart_step=restart_step,
            checkpoint=checkpoint,
            global_step=global_step,
        )

    def open_kept_run(
        self,
        run_id: str | None,
        *,
        what: str,
        tags: Mapping[str, Any] | None = None,
        **resume: Any,
    ) -> Trail:
        """The run whose id the adapter kept with the framework's own object (a checkpoint, an
        Optuna study's user attrs), resumed; else a new run.

        Without ``run_id``, and with a given Trail, this is :meth:`open`. A run that cannot be
        resumed (deleted, in another store) is reported as ``resuming <what>`` (one warning,
        counted) and a new run recorded instead, tagged ``mltrail.<framework>.resumed_run``
        with the run id it could not resume.

        Args:
            run_id: the run id the adapter kept (None: a new run).
            what: that run, as the report names it ("the checkpoint's run").
            tags: more tags for the run, resumed or new.
            **resume: more arguments of :meth:`open` for resuming it (``restart_step``,
                ``checkpoint``, ``global_step``).
        """
        if run_id and self.given is None:
            try:
                return self.open(run_id=run_id, tags=tags, **resume)
            except MltrailError as error:
                self.report(f"resuming {what}", error)
                tags = {**(tags or {}), f"mltrail.{self.framework}.resumed_run": run_id}
        return self.open(tags=tags)

    # --- the training --------------------------------------------------------------------------

    def training_started(self) -> None:
        """The training is on: if the process exits before :meth:`end`, the run ends FAILED."""
        self._training = True
        _watch(self)

    def end_when_released(
        self, obj: Any, stopped: Callable[[], Any] | None = None, *, reason: str | None = None
    ) -> None:
        """End the current run when ``obj`` is released before the run ends.

        For frameworks that skip every hook when training raises (XGBoost and LightGBM on an
        exception in the booster update): an object that only the training call holds (its
        per-call callback list) goes with the call's frame, so its release before :meth:`end`
        tells that the call raised where no hook saw it. Then ``stopped()`` is called, which
        ends the run (the adapter logs what it has first); without it the run ends FAILED with
        ``reason``. Watching stops when the run ends, or when another object is watched; at
        interpreter exit the exit hook of :meth:`training_started` ends the run instead.

        Args:
            obj: the object to watch (weakly referenced: watching does not keep it alive).
            stopped: what ends the run, called without arguments.
            reason: why the run ended, for the run's tags and the warning (without ``stopped``).
        """
        self._stop_watching()
        if stopped is None:
            stopped = functools.partial(self.end, finished=False, reason=reason)
        self._release = weakref.finalize(obj, stopped)
        self._release.atexit = False

    def _stop_watching(self) -> None:
        if self._release is not None:
            self._release.detach()
            self._release = None

    def end(
        self,
        error: BaseException | None = None,
        *,
        finished: bool = True,
        reason: str | None = None,
    ) -> None:
        """End the current run, once: FINISHED, or for ``error`` FAILED (KILLED on an interrupt).

        ``finished=False`` without an error: the training stopped where no hook saw why (an
        exception inside the framework that was caught); the run ends FAILED with ``reason``.
        A given run is not ended, only flushed, so the adapter's files are sent before its
        temporary folder goes; a joined run is closed with its status left to its owner.
        Owned and joined runs are closed in the background unless ``end_in_background`` is off.
        """
        trail = self.trail
        self._training = False
        _unwatch(self)
        self._stop_watching()
        if trail is None:
            return
        self.trail = None
        flushed = True
        background = trail.options.end_in_background
        if self._tmp is not None and trail is not self.given and trail.status is None:
            trail.remove_at_close(self._tmp)  # its files may still be on their way then
            self._tmp = None
        try:
            if trail is self.given:
                if self._tmp is not None:
                    flushed = trail.flush()
            elif not self.owns:
                # Joined: sends what we logged and leaves the status to its owner.
                trail.end(background=background)
            elif trail.status is None:
                if error is not None:
                    trail.end_with_exception(error, background=background)
                elif finished:
                    trail.end("FINISHED", background=background)
                else:
                    message = reason or f"the {self.framework} training stopped before its end"
                    run = trail.run_id or "of this training"  # one still opening beside it
                    logger.warning("mltrail: run %s: %s; marked FAILED.", run, message)
                    trail.set_tags(
                        {"mltrail.exception.type": "unknown", "mltrail.exception.message": message}
                    )
                    trail.end("FAILED")
                self.last_status = trail.status
        finally:
            if self._tmp is not None and flushed:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def end_after(
        self,
        summary: Callable[[Trail], Any],
        error: BaseException | None = None,
        *,
        finished: bool = True,
        reason: str | None = None,
    ) -> None:
        """Log what the run gets at its end (``summary(trail)``: pending epochs, early stopping,
        the final model), then :meth:`end` it as told. Errors in ``summary`` are counted; one
        that escapes it (strict mode, an interrupt) ends the run with that error, then raises.
        """
        trail = self.trail
        if trail is None:
            return
        try:
            with self.guarded("ending the run"):
                summary(trail)
        except BaseException as escaped:
            self.end(error or escaped)
            raise
        self.end(error, finished=finished, reason=reason)

    def _abandon(self) -> None:
        if self._training and self.trail is not None:
            self.end(
                finished=False,
                reason=f"the process exited while the {self.framework} training was running",
            )

    # --- errors --------------------------------------------------------------------------------

    @property
    def errors(self) -> ErrorCounter:
        """Where this adapter's internal errors are counted: the current run's counter (its
        ``mltrail.errors`` tag), else the given Trail's, else the process-wide one."""
        trail = self.trail or self.given
        return trail.error_counter if trail is not None else process_errors

    def report(self, kind: str, error: BaseException) -> None:
        """Count an internal error of this adapter (one warning per kind)."""
        self.errors.report(f"{self.framework}: {kind}", error)

    @contextlib.contextmanager
    def guarded(self, kind: str) -> Iterator[None]:
        """A block of adapter code whose errors are counted, not raised (raised when strict)."""
        with guarded(f"{self.framework}: {kind}", self.errors):
            yield

    # --- files ---------------------------------------------------------------------------------

    def temp_dir(self) -> Path:
        """A fresh folder under this run's temporary folder, removed when the run's files are
        sent (a new folder per file: a background upload never sees a file rewritten)."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix=f"mltrail-{self.framework}-"))
        return Path(tempfile.mkdtemp(dir=self._tmp))

    # --- copies: a session holds a live run; copies start their own (or join, copies_join) -------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(trail=None, given=None, _tmp=None, _training=False, _release=None, _late=None)
        return state

    def __repr__(self) -> str:
        target = f"given {self.given!r}" if self.given is not None else "own runs"
        return f"RunSession({self.framework!r}, {target}, run={self.last_run_id!r})"


class CopiedBySettings:
    """Mixin for an adapter's callback: its copies are built from its settings, fresh.

    scikit-learn's ``clone`` deep-copies the callbacks an estimator holds: the copy is a new
    callback with the same settings and the same run target (the given Trail, or runs of its
    own). joblib pickles estimators into worker processes, where a Trail cannot follow: the
    copy starts runs of its own. Neither copy holds the original's run, training or data.

    The class lists in ``copied_settings`` the keyword arguments of its constructor that it
    keeps as attributes of the same names; ``_session`` holds its :class:`RunSession`, whose
    start-run arguments the copies get too. The constructor takes the Trail first.
    """

    copied_settings: tuple[str, ...] = ()
    _session: RunSession

    def copied_kwargs(self) -> dict[str, Any]:
        """The keyword arguments a copy is built with: the settings, then the start-run ones."""
        own = {name: getattr(self, name) for name in self.copied_settings}
        return {**own, **self._session.start_run_kwargs}

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return type(self)(self._session.given, **self.copied_kwargs())

    def __reduce__(self) -> tuple[Any, ...]:
        return functools.partial(type(self), **self.copied_kwargs()), ()


# --- trainings still running at interpreter exit -------------------------------------------------

_running: weakref.WeakSet[RunSession] = weakref.WeakSet()
_running_lock = threading.Lock()
_exit_hook = False


def _watch(session: RunSession) -> None:
    """Registered after the run started, so this exit hook runs before mltrail's own (atexit is
    last-in first-out), which would end an unfinished training's run FINISHED."""
    global _exit_hook
    with _running_lock:
        _running.add(session)
        if not _exit_hook:
            _exit_hook = True
            atexit.register(_end_abandoned)


def _unwatch(session: RunSession) -> None:
    with _running_lock:
        _running.discard(session)


def _end_abandoned() -> None:
    # Trainings that ended and are still being recorded beside them end their own runs.
    deferred.settle()
    with _running_lock:
        sessions = list(_running)
    for session in sessions:
        with contextlib.suppress(Exception):
            session._abandon()


def _nothing() -> None:
    """A run opened beside its training is ended by the training's own end."""
