"""Trainings recorded beside them: the run opened, filled and ended on mltrail's own thread.

A training that logs nothing while it runs (a scikit-learn ``fit``) need not wait for MLflow's
import, the store, the run's creation and the provenance before it starts, nor for the model
and plots after it. It hands its recording to :func:`record_beside` and runs as it would
unrecorded; when it returns, it says so (:meth:`Pending.ended`) and returns at once. One thread
records such trainings, in order:

- ``begin`` opens the run and logs what was known before the training: once the training has
  ended, or once it has run :data:`OPEN_AFTER` seconds (a long training shows as RUNNING, with
  its system metrics, while it runs);
- ``finish`` records what the training gave (metrics, model, plots) and ends the run.

Every way out of the process waits for them first (:func:`settle`, called by the exit hooks of
:mod:`mltrail.recording.lifecycle`), so a script that ends right after its ``fit`` loses
nothing; :func:`mltrail.wait` waits for them too.

Not for every training: a run that must exist before the training starts (``already_run=
"error"`` refuses it then), a given Trail whose owner may end it, and a run joined from the
thread's context (the user's active MLflow run, a search trial's run), which another thread
cannot see, are started on the training's thread as before (:func:`can_record_later`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from mltrail.config import Options
from mltrail.errors import process_errors, strict_mode

logger = logging.getLogger("mltrail.recording.deferred")

__all__ = [
    "OPEN_AFTER",
    "Pending",
    "can_record_later",
    "current",
    "pending",
    "record_beside",
    "settle",
    "wait",
]

#: Seconds a training runs before its run is opened while it still runs.
OPEN_AFTER = 2.0
QUIET_WAIT = 0.5  # seconds exit waits for the recordings before it says so
EXIT_LIMIT = 600.0  # a recording's store calls have their own timeouts; this is a backstop


class Pending:
    """A training handed to :func:`record_beside`, recorded or not yet.

    Attributes:
        what: what is recorded ("scikit-learn LogisticRegression fit"), for messages.
        error: the exception that escaped the recording (reported already), if any.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.error: BaseException | None = None
        self._ended = threading.Event()
        self._done = threading.Event()

    def ended(self) -> None:
        """The training has returned or raised (its outcome is where ``finish`` reads it)."""
        self._ended.set()

    @property
    def training_over(self) -> bool:
        """Whether :meth:`ended` was called."""
        return self._ended.is_set()

    def wait_for_training(self, timeout: float | None = None) -> bool:
        """Wait until the training has ended; True when it has."""
        return self._ended.wait(timeout)

    @property
    def done(self) -> bool:
        """Whether the recording has ended (recorded, or failed and reported)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the training is recorded; True when it is. On mltrail's recording
        thread itself (a recording that waits for a later one) it returns at once."""
        if threading.current_thread() is _worker:
            return self.done
        return self._done.wait(timeout)


_queue: queue.SimpleQueue[tuple[Pending, Callable[[], None], Callable[[], None]] | None] = (
    queue.SimpleQueue()
)
_waiting: list[Pending] = []  # handed over and not recorded yet, in order
_lock = threading.Lock()
_worker: threading.Thread | None = None
_current: Pending | None = None  # the recording the worker is doing
_said = False  # settle has said that exit waits for recordings


def record_beside(begin: Callable[[], None], finish: Callable[[], None], what: str) -> Pending:
    """Record a training that is about to run, on mltrail's recording thread, after the
    recordings handed over before it: ``begin()`` once the training has ended or has run
    :data:`OPEN_AFTER` seconds, ``finish()`` once it has ended. The caller runs the training,
    keeps its outcome where ``finish`` reads it, then calls :meth:`Pending.ended` (also when
    it raised).

    An exception that escapes ``begin`` or ``finish`` is counted and warned about once per kind
    in the process's errors (logged with its traceback in strict mode, and kept in
    :attr:`Pending.error`): the training does not see it.

    Args:
        begin: opens the run and logs what was known before the training.
        finish: logs what the training gave and ends the run.
        what: what it records, for messages.

    Returns:
        The :class:`Pending` recording: to say when the training ended, and to wait for (a run
        id read after the training).
    """
    global _worker
    from mltrail.recording import lifecycle

    lifecycle.install()  # the exit hooks wait for this recording: its run may not exist yet
    item = Pending(what)
    with _lock:
        _waiting.append(item)
        if _worker is None or not _worker.is_alive():
            _keep_import_filters()
            _worker = threading.Thread(target=_work, name="mltrail-record", daemon=True)
            _worker.start()
    _queue.put((item, begin, finish))
    return item


def _keep_import_filters() -> None:
    """Set now the warning filters that MLflow's dependencies set when imported.

    The recording thread imports MLflow while the user's code runs, and ``warnings`` filters
    are global: a ``catch_warnings`` block of the user's thread (scikit-learn's ``fit`` has
    many) that ends meanwhile restores the filters it saved, dropping those set by the imports
    in between. Requests' own "SOCKS support requires PySocks" silencing was lost that way, and
    the warning printed.
    """
    warnings.filterwarnings("ignore", message="SOCKS support in urllib3 requires")


def _work() -> None:
    global _current
    while True:
        entry = _queue.get()
        if entry is None:
            return
        item, begin, finish = entry
        _current = item
        try:
            item.wait_for_training(OPEN_AFTER)
            begin()
            item.wait_for_training()
            finish()
        except BaseException as error:  # the training never sees it: report, never raise
            item.error = error
            if strict_mode():
                logger.exception("mltrail: recording %s failed", item.what)
            process_errors.report(f"recording {item.what}", error)
        finally:
            with _lock:
                if item in _waiting:
                    _waiting.remove(item)
            _current = None
            item._done.set()


def pending() -> list[Pending]:
    """The recordings handed over and not finished yet, oldest first."""
    with _lock:
        return list(_waiting)


def current() -> Pending | None:
    """The recording under way when called on mltrail's recording thread (what a run opened
    there belongs to), else None."""
    return _current if threading.current_thread() is _worker else None


def _can_end(before: Pending | None = None) -> list[Pending]:
    """The pending recordings that can end without waiting for a training: those before the
    first whose training still runs (the thread records them in order), and before
    ``before``."""
    with _lock:
        ready = []
        for item in _waiting:
            if not item.training_over or item is before:
                break
            ready.append(item)
        return ready


def wait(timeout: float | None = None, before: Pending | None = None) -> bool:
    """Wait until the recordings handed over so far have ended, but for those of trainings
    still running (a wait from inside one would never end); True when none is left.

    Args:
        timeout: seconds to wait at most (None: until they have ended).
        before: wait only for the recordings handed over before this one (a run being
            recorded that waits for the process's earlier runs, not for itself).
    """
    stop = None if timeout is None else time.monotonic() + timeout
    for item in _can_end(before):
        item.wait(None if stop is None else max(0.0, stop - time.monotonic()))
    return not _can_end(before) if before is not None else not pending()


def settle(limit: float | None = None) -> bool:
    """Wait for the recordings handed over so far: at exit, before the runs still open end.

    Says so in one line when it takes more than a moment (the line also covers the runs'
    last data, which the exit sends next). The recording of a training still running then
    (in a thread the exit does not wait for) is left to the exit's end of open runs.

    Args:
        limit: seconds to wait at most (None: :data:`EXIT_LIMIT`).

    Returns:
        Whether it said so, now or at an earlier call (exit hooks call it one after another).
    """
    global _said
    if not _can_end() or threading.current_thread() is _worker:
        return _said
    until = time.monotonic() + (EXIT_LIMIT if limit is None else limit)
    if wait(min(QUIET_WAIT, until - time.monotonic())) or not _can_end():
        return _said
    _said = True
    # The backstop is no deadline worth announcing ("at most 599 s" read as a hang to come);
    # a limit that the exit set (a terminated process has seconds) is.
    bound = "" if limit is None else f" (at most {max(0.0, until - time.monotonic()):.0f} s)"
    logger.warning(
        "mltrail: recording %d training(s) that ended and sending their last data before "
        "exiting%s.",
        len(_can_end()),
        bound,
    )
    try:
        wait(max(0.0, until - time.monotonic()))
    except KeyboardInterrupt:
        logger.warning("mltrail: stopped waiting; trainings not yet recorded are lost.")
        return True
    left = _can_end()
    if left:
        logger.warning(
            "mltrail: %s not recorded in time; lost.", ", ".join(item.what for item in left)
        )
    return True


def can_record_later(start_run_kwargs: Mapping[str, Any]) -> bool:
    """Whether a training started with these :func:`~mltrail.start_run` arguments may be
    recorded beside it, by :func:`record_beside`: its run needs nothing from the training's
    thread nor from before the training.

    False for ``already_run="error"`` (the run must refuse the training before it starts),
    with ``end_in_background=False`` (the user waits for each run), and in a thread whose
    runs join another run: the user's active MLflow run, or the run a provider offers (a
    search trial's; see :mod:`mltrail.recording.scopes`).
    """
    from mltrail.recording import scopes
    from mltrail.recording.trail import _user_active_run
    from mltrail.store import mlflow_loaded, resolve_tracking_uri_unloaded

    fields = Options.__dataclass_fields__
    options = Options.resolve(**{k: v for k, v in start_run_kwargs.items() if k in fields})
    if options.already_run == "error" or not options.end_in_background:
        return False
    # No MLflow yet, so no active run: nothing to import MLflow for. Nor to ask a provider
    # (Optuna's, registered at its import) for the URI: asked as a framework imports, it has
    # nothing to provide, and MLflow's import took seconds of the script's own imports.
    loaded = mlflow_loaded()
    if not loaded and not scopes.has_providers():
        return True
    uri = resolve_tracking_uri_unloaded(start_run_kwargs.get("tracking_uri"))
    if loaded and _user_active_run(uri):
        return False
    return not scopes.provided_run(uri)


def _forget_after_fork() -> None:
    """A forked child has none of its parent's threads: it records its own trainings."""
    global _worker, _queue, _waiting, _lock
    _worker, _queue, _waiting, _lock = None, queue.SimpleQueue(), [], threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
