"""Run lifecycle for runs mltrail owns: exit, uncaught exceptions, SIGTERM, crashed runs.

- Interpreter exit ends open runs FINISHED (or FAILED/KILLED after an uncaught exception).
- An uncaught exception ends them FAILED (KeyboardInterrupt: KILLED); the hook chains to the
  previous ``sys.excepthook``.
- SIGTERM ends them KILLED, then hands over to the handler that was installed before.
- A script stopped by Ctrl-C still exits killed by SIGINT, as it would without mltrail.
- A run whose process died without any of this (SIGKILL, OOM) still says RUNNING; the next
  mltrail process on the same host (or any, once the heartbeat is stale) marks it FAILED.
- Runs that adapters end in the background (``end_in_background``) are waited for once, at
  interpreter exit (each within its own ``flush_timeout``), or by :func:`wait`.
- Trainings handed over to be recorded after they ran (:mod:`mltrail.recording.deferred`) are
  recorded before any of this: their runs end as their trainings did, not as the process does.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mltrail.recording import deferred, recorder
from mltrail.recording.spool import read_journal
from mltrail.recording.writer import POOLS_OPEN, crashed_run_data
from mltrail.store import describe_uri

logger = logging.getLogger("mltrail.lifecycle")

_open: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
_installed = False
_previous_excepthook: Any = None
_previous_sigterm: Any = None
_interrupted = False
_exiting = False
QUIET_EXIT_WAIT = 0.5  # seconds exit waits for closing runs before it says so
# Runs being closed in the background: thread -> (trail, deadline on the monotonic clock).
_closing: dict[threading.Thread, tuple[Any, float]] = {}

#: Queues a record (kind, data) for the store: a run's ``Writer.add``.
Send = Callable[[str, Any], None]


def register(trail: Any) -> None:
    if not trail.owned:
        return
    with _lock:
        _open.add(trail)
        _install()


def unregister(trail: Any) -> None:
    with _lock:
        _open.discard(trail)


def open_trails() -> list[Any]:
    with _lock:
        return list(_open)


def close_soon(trail: Any, close: Callable[[], None], budget: float) -> None:
    """Run ``close`` (the rest of ``trail``'s end) on a thread of its own, so that the training
    returns at once; interpreter exit waits for it. Once exit has begun, it runs here."""
    with _lock:
        background = not _exiting and not sys.is_finalizing()
        if background:
            _install()
            thread = threading.Thread(target=close, name=f"mltrail-end-{trail.run_id}", daemon=True)
            _closing[thread] = (trail, time.monotonic() + budget)
            thread.start()
    if not background:
        close()


def _still_closing(run_id: str | None = None) -> list[tuple[threading.Thread, Any, float]]:
    with _lock:
        for thread in [t for t in _closing if not t.is_alive() and t.ident is not None]:
            del _closing[thread]
        return [
            (thread, trail, deadline)
            for thread, (trail, deadline) in _closing.items()
            if (run_id is None or trail.run_id == run_id)
            and thread is not threading.current_thread()
        ]


def wait_for_earlier_closes(timeout: float) -> None:
    """Wait (``timeout`` seconds at most) for the runs whose close began before the caller's,
    from a run's close: what it looks up in the store (the same run before it) is there then.
    Only earlier ones, so that two closes never wait for each other."""
    stop = time.monotonic() + timeout
    me = threading.current_thread()
    with _lock:
        began = list(_closing)
    earlier = began[: began.index(me)] if me in began else began
    for thread in earlier:
        thread.join(max(0.0, stop - time.monotonic()))


def wait(
    timeout: float | None = None,
    run_id: str | None = None,
    before: deferred.Pending | None = None,
) -> bool:
    """Wait until the runs being ended in the background (all, or only ``run_id``) are closed:
    everything sent to the store or journaled for ``mltrail sync``. Without ``run_id``, the
    trainings still being recorded after they ran (:mod:`mltrail.recording.deferred`) first.

    Args:
        timeout: seconds to wait at most; None waits as long as the runs' own
            ``flush_timeout`` lets them take.
        run_id: wait for this run only.
        before: of the trainings being recorded, wait only for those handed over before this
            one (the caller's own recording, see :func:`deferred.current`).

    Returns:
        True when no run is being closed (nor any training recorded) any more.
    """
    stop = None if timeout is None else time.monotonic() + timeout
    # Trainings still being recorded end their runs too (none of a training still running).
    recorded = deferred.wait(timeout, before) if run_id is None else True
    for thread, _trail, _deadline in _still_closing(run_id):
        left = None if stop is None else max(0.0, stop - time.monotonic())
        thread.join(left)
    process = recorder.running()
    if process is not None and run_id is None:  # the runs recorded in mltrail's recorder
        left = None if stop is None else max(0.0, stop - time.monotonic())
        recorded = process.wait(left) and recorded
    return recorded and not _still_closing(run_id)


def _close_recorder(
    limit: float | None = None, *, killed: bool = False, announced: bool = False
) -> None:
    """Let mltrail's recorder process (if started) finish the runs it records, and wait for it:
    at most about a run's close (:meth:`Trail.end` in the background), or ``limit``
    (``announced``: this process said it waits already; the recorder says nothing more)."""
    process = recorder.running()
    if process is None:
        return
    if limit is None:
        from mltrail.config import Options

        timeout = Options.resolve().flush_timeout
        limit = max(5.0, timeout) + timeout + 10
    if not process.close(limit, killed=killed, announced=announced):
        logger.warning(
            "mltrail: the recorder process is still sending the last data of this process's "
            "runs; it finishes on its own."
        )


def _wait_at_exit(limit: float | None = None, *, announced: bool = False) -> None:
    """Wait for the runs still being closed, once, with one line when it takes a moment
    (``announced``: the trainings recorded at exit said it already)."""
    if wait(QUIET_EXIT_WAIT):  # usually done by now: nothing to say
        return
    closing = _still_closing()
    if not closing:  # done since
        return
    until = max(deadline for _thread, _trail, deadline in closing)
    if limit is not None:
        until = min(until, time.monotonic() + limit)
    stores = sorted({describe_uri(trail.tracking_uri) for _thread, trail, _deadline in closing})
    logger.log(
        logging.DEBUG if announced else logging.WARNING,
        "mltrail: sending the last data of %d run(s) to %s before exiting (at most %.0f s).",
        len(closing),
        ", ".join(stores),
        max(0.0, until - time.monotonic()),
    )
    try:
        for thread, _trail, _deadline in closing:
            thread.join(max(0.0, until - time.monotonic()))
    except KeyboardInterrupt:
        logger.warning("mltrail: stopped waiting; data not yet sent is lost.")
        return
    left = _still_closing()
    if left:
        logger.warning(
            "mltrail: run(s) %s did not finish sending in time; the store may show them RUNNING "
            "until the next mltrail process marks them FAILED.",
            ", ".join(str(trail.run_id) for _thread, trail, _deadline in left),
        )


def install() -> None:
    """Install the exit hooks now (a training recorded later has no open run yet)."""
    with _lock:
        _install()


def _install() -> None:
    global _installed, _previous_excepthook, _previous_sigterm
    if _installed:
        return
    _installed = True
    atexit.register(_at_exit)
    _previous_excepthook = sys.excepthook
    sys.excepthook = _excepthook
    if threading.current_thread() is threading.main_thread():
        try:
            _previous_sigterm = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):
            _previous_sigterm = None


@contextlib.contextmanager
def _thread_pools_open() -> Iterator[None]:
    """Let ``concurrent.futures`` take work while the runs end at exit.

    Stores upload through thread pools (boto3's S3 transfers, for one), and Python stops its
    pools from taking work when it starts shutting threads down, before ``atexit`` handlers
    run: runs ended at exit lost their last uploads to "cannot schedule new futures after
    interpreter shutdown". Ending runs from a threading exit hook instead would end them before
    the user's own threads finish, so the pools take work again for the time of the wait.
    """
    try:
        from concurrent.futures import thread as pools
    except ImportError:
        yield
        return
    closed = getattr(pools, "_shutdown", None)
    if closed is True:
        pools._shutdown = False
    POOLS_OPEN.set()  # uploads that met the closed pools since the script ended try again
    try:
        yield
    finally:
        if closed is True:
            pools._shutdown = True


def _end_all(status: str | None = None, error: BaseException | None = None) -> None:
    for trail in open_trails():
        try:
            if error is not None:
                trail.end_with_exception(error)
            else:
                trail.end(status or "FINISHED")
        except Exception:
            logger.debug("ending run %s failed", trail.run_id, exc_info=True)


def _at_exit(announced: bool = False) -> None:
    """End what is open and wait for what is being sent, saying so once (``announced``: the
    process that hands this one its runs, the recorder's training, said it already)."""
    global _exiting
    _exiting = True  # from here on, runs end on this thread
    with _thread_pools_open():
        announced = deferred.settle() or announced
        _end_all("FINISHED")
        _wait_at_exit(announced=announced)
        _close_recorder(announced=announced)
    if _interrupted:
        _keep_sigint_exit()


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    global _interrupted
    deferred.settle()  # trainings that returned before the exception end as they did
    _end_all(error=exc)
    (_previous_excepthook or sys.__excepthook__)(exc_type, exc, tb)
    if exc_type is KeyboardInterrupt and not (sys.flags.interactive or hasattr(sys, "ps1")):
        _interrupted = True
        _keep_sigint_exit()


def _keep_sigint_exit() -> None:
    """Make the interpreter exit killed by SIGINT after an uncaught KeyboardInterrupt.

    CPython does so only while its "unhandled KeyboardInterrupt" flag is set, and every
    ``exec``/``eval`` of a string clears that flag: ending a run (imports, dataclasses, other
    threads) can do that, and the job would exit 1, which shells and schedulers read as a crash
    rather than an interrupt. Evaluating a string that raises KeyboardInterrupt sets it again.
    """
    try:
        exec("raise KeyboardInterrupt")
    except KeyboardInterrupt:
        pass


def _on_sigterm(signum: int, frame: Any) -> None:
    announced = deferred.settle(limit=5.0)  # a terminated process has seconds, not minutes
    for trail in open_trails():
        trail.set_tags({"mltrail.exception.type": "SIGTERM"})
    _end_all("KILLED")
    _wait_at_exit(limit=5.0, announced=announced)
    _close_recorder(5.0, killed=True, announced=announced)
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:
        # Default behaviour: terminate with the signal, as if mltrail were not there.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


# --- crashed runs -----------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` of this host exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(tags: dict[str, str], heartbeat_interval: float, now: float | None = None) -> bool:
    """True when a RUNNING run's recorded process is gone (same host) or its heartbeat stopped."""
    now = time.time() if now is None else now
    if tags.get("mltrail.host") == socket.gethostname() and "mltrail.pid" in tags:
        try:
            pid = int(tags["mltrail.pid"])
        except ValueError:
            return False
        if pid != os.getpid() and not pid_alive(pid):
            return True
    beat = tags.get("mltrail.heartbeat")
    return beat is not None and now - float(beat) > 3 * heartbeat_interval + 60


def end_journaled(spool_dir: Path | str | None, run_id: str) -> bool:
    """True when the end of run ``run_id`` waits in this host's journal (its process exited
    before the store took it): ``mltrail sync``, or the replay of dead spools, ends the run."""
    if not spool_dir:
        return False
    try:
        return any(read_journal(Path(spool_dir) / run_id, kind="status"))
    except OSError:
        return False


def repair_stale_runs(
    client: Any,
    experiment_id: str,
    heartbeat_interval: float,
    send: Send,
    spool_dir: Path | str | None = None,
) -> list[str]:
    """Find the crashed mltrail runs of an experiment and have them marked FAILED.

    Args:
        client: an ``MlflowClient`` to search with (this only reads).
        experiment_id: the experiment to look in.
        heartbeat_interval: the heartbeat interval runs were started with.
        send: queues a record for the store: the ``add`` of the :class:`Writer` of the run
            that found them, so the end of each crashed run (a ``crashed_run`` record) is
            journaled when the store is away, like everything the run writes.
        spool_dir: this host's spool: a run whose end waits there did not crash (see
            :func:`end_journaled`) and is left to the replay.

    Returns:
        The ids of the crashed runs.
    """
    repaired = []
    runs = client.search_runs(
        [experiment_id],
        filter_string="attributes.status = 'RUNNING' and tags.`mltrail.pid` != ''",
        max_results=200,
    )
    for run in runs:
        if is_stale(run.data.tags, heartbeat_interval) and not end_journaled(
            spool_dir, run.info.run_id
        ):
            send("crashed_run", crashed_run_data(run.info.run_id, run.data.tags.get("mltrail.pid")))
            repaired.append(run.info.run_id)
            logger.warning(
                "mltrail: run %s was left RUNNING by a process that died; marking it FAILED.",
                run.info.run_id,
            )
    return repaired


_repaired: set[tuple[str, str]] = set()


def repair_stale_runs_soon(
    client: Any,
    tracking_uri: str,
    experiment_id: str,
    heartbeat_interval: float,
    send: Send,
    spool_dir: Path | str | None = None,
) -> threading.Thread | None:
    """:func:`repair_stale_runs` on a background thread, which this returns.

    Once per store and experiment in a process (None the other times): later runs would only
    find the same runs.
    """
    key = (tracking_uri, str(experiment_id))
    with _lock:
        if key in _repaired:
            return None
        _repaired.add(key)

    def work() -> None:
        try:
            repair_stale_runs(client, experiment_id, heartbeat_interval, send, spool_dir)
        except Exception:
            logger.debug("stale-run repair failed", exc_info=True)

    thread = threading.Thread(target=work, name="mltrail-repair", daemon=True)
    thread.start()
    return thread
