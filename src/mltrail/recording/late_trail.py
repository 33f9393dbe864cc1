"""A run opened beside its training: what the training logs waits in order until it opens.

A training that logs while it runs (a boosting round's metrics, a checkpoint) would wait for
MLflow's import, the store and the run's creation before its first round; a loop of short
trainings would wait for them once per training. :class:`LateTrail` stands in for the run's
:class:`~mltrail.Trail` from the first round instead: the training's calls (params, tags,
metrics with the time they were logged, checkpoints, the model, the end) are kept in order,
and the run is opened on mltrail's recording thread
(:func:`~mltrail.recording.deferred.record_beside`) once the training has ended or has run
:data:`~mltrail.recording.deferred.OPEN_AFTER` seconds; the calls kept are then made on the
real Trail, and later calls go straight to it. The run's start and end times are the
training's. In a process that has not imported MLflow the run is recorded in mltrail's
recorder process instead (:mod:`mltrail.recording.recorder`), and the calls go there at once.

Only for runs that nothing needs before the training ends (see
:meth:`mltrail.recording.session.RunSession.can_open_beside`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from mltrail.config import Options
from mltrail.errors import ErrorCounter, MltrailError, strict_mode
from mltrail.recording import deferred
from mltrail.recording.deferred import Pending
from mltrail.recording.sanitize import KeySanitizer, flatten, redact_value
from mltrail.recording.trail import _STATUSES, Trail, stored_param

logger = logging.getLogger("mltrail.recording.late_trail")

__all__ = ["LateTrail"]

#: The Trail methods a training may call before its run opens; they return nothing.
KEPT_CALLS = frozenset(
    {
        "log_params",
        "log_metrics",
        "log_metric_history",
        "set_tags",
        "delete_tags",
        "log_inputs",
        "log_artifact",
        "log_text",
        "log_dict",
        "log_image",
        "log_model",
        "log_checkpoint",
        "log_child_run",
        "remove_at_close",
        "start_system_metrics",
    }
)


class LateTrail:
    """The Trail of a run that opens after its training started (see the module doc).

    Args:
        options: the run's options (those of the start-run arguments).
        tracking_uri: the store the run will be opened in, when given (else MLflow's).

    Attributes:
        options: the run's options.
        enabled: always True: the run records.
        status: the status the training ended it with, None while it runs.
        started_ms: when the training started (the run's start time), ms since the epoch.
        pending: the recording that opens the run (set by the session).
    """

    def __init__(self, options: Options, tracking_uri: str | None = None) -> None:
        self.options = options
        self._tracking_uri = tracking_uri or ""
        self.enabled = True
        self.status: str | None = None
        self.started_ms = int(time.time() * 1000)
        self.pending: Pending | None = None
        self.error_counter = ErrorCounter()
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._params: dict[str, str] = {}  # what log_params logged through it, for params
        self._keys = KeySanitizer()
        self._trail: Trail | None = None
        self._failed = False
        self._lock = threading.Lock()
        self._settled = threading.Event()  # opened, or failed to open

    # --- what the training calls ---------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name in KEPT_CALLS:
            return lambda *args, **kwargs: self._call(name, args, kwargs)
        raise AttributeError(
            f"{type(self).__name__} has no attribute {name!r} before its run opens"
        )

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if name == "log_metrics":  # the time it was logged, not when a run or process takes it
            kwargs.setdefault("timestamp", int(time.time() * 1000))
        with self._lock:
            if name == "log_params":
                for raw_key, value in flatten(args[0] if args else kwargs["params"]).items():
                    text = stored_param(redact_value(str(raw_key), value))
                    self._params.setdefault(self._keys(raw_key), text)
            trail = self._trail
            if trail is None:
                if not self._failed:
                    self._calls.append((name, args, kwargs))
                return
        getattr(trail, name)(*args, **kwargs)

    @property
    def params(self) -> dict[str, str]:
        """The params logged through this stand-in, as :attr:`mltrail.Trail.params` holds
        them (the run may live in another process, which this one never asks)."""
        with self._lock:
            return dict(self._params)

    @property
    def run_id(self) -> str | None:
        """The run's id once it is open, else None."""
        trail = self._trail
        return trail.run_id if trail is not None else None

    @property
    def id_known(self) -> bool:
        """Whether :attr:`run_id` answers without waiting: the run is open, here or in
        mltrail's recorder process, which has sent its id."""
        trail = self._trail
        return trail is not None and getattr(trail, "id_known", True)

    @property
    def tracking_uri(self) -> str:
        """The run's store once it is open; before, the one given ("" for MLflow's own)."""
        trail = self._trail
        return trail.tracking_uri if trail is not None else self._tracking_uri

    @property
    def trail(self) -> Trail | None:
        """The real Trail once the run is open."""
        return self._trail

    @property
    def errors(self) -> dict[str, int]:
        """Internal errors of this run, by kind."""
        return dict(self.error_counter.counts)

    def flush(self, timeout: float | None = None) -> bool:
        """Flush the real Trail once open; before, there is nothing sent to wait for."""
        trail = self._trail
        return trail.flush(timeout) if trail is not None else True

    def end(self, status: str = "FINISHED", *, background: bool = False) -> None:
        """End the run with ``status`` once it is open (see :meth:`mltrail.Trail.end`)."""
        status = status.upper()
        if status not in _STATUSES:
            raise MltrailError(f"status must be one of {sorted(_STATUSES)}, not {status!r}.")
        self._end("end", status, (status,), {"background": background})

    def end_with_exception(self, exc: BaseException, *, background: bool = False) -> None:
        """End the run for ``exc`` once it is open (see :meth:`mltrail.Trail.end_with_exception`)."""
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            status = "FINISHED"
        else:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        self._end("end_with_exception", status, (exc,), {"background": background})

    def _end(self, name: str, status: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.status is not None:
            return
        self.status = status
        kwargs["end_time"] = int(time.time() * 1000)  # the training's end, not the replay's
        try:
            self._call(name, args, kwargs)
        finally:
            if self.pending is not None:
                self.pending.ended()  # the recording thread opens the run now, if not yet

    # --- what the recording thread calls -------------------------------------------------------

    def attach(self, trail: Trail) -> None:
        """The run is open: make the calls kept, in order, then send later ones straight on."""
        with self._lock:  # a call of the training's thread meanwhile waits, to keep the order
            try:
                trail.error_counter.add(self.error_counter.counts)
                self.error_counter = trail.error_counter
                for name, args, kwargs in self._calls:
                    _replay(trail, name, args, kwargs)
            finally:
                self._calls.clear()
                self._trail = trail
                self._settled.set()

    def failed(self) -> None:
        """The run could not be opened (reported already): calls from now on are dropped."""
        with self._lock:
            self._failed = True
            self._calls.clear()
        self._settled.set()

    def wait_open(self, timeout: float | None = None) -> bool:
        """Wait until the run has opened (or failed to); True when it has. On the recording
        thread itself, which opens it, it returns at once."""
        if deferred.current() is not None:
            return self._settled.is_set()
        return self._settled.wait(timeout)

    def __repr__(self) -> str:
        return f"LateTrail(run_id={self.run_id!r}, status={self.status!r})"


def _replay(trail: Trail, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    method: Callable[..., Any] = getattr(trail, name)
    try:
        method(*args, **kwargs)
    except Exception as error:
        if strict_mode():
            raise
        trail.error_counter.report(f"recording {name.replace('_', ' ')}", error)
