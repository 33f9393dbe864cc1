"""mltrail's recorder process: runs opened beside their trainings, recorded in a process of
their own.

Importing MLflow and its store (SQLAlchemy) takes seconds of CPU, and each request to the store
takes Python time. In the training's interpreter all of it holds the interpreter's lock (the
GIL) that the training needs too: a script of short trainings paid for it whole, even with
the recording on background threads. A run opened beside its training
(:class:`~mltrail.recording.late_trail.LateTrail`) is recorded by a second Python process
instead: the training's process sends it what the training logs (params, metrics with their
times, checkpoint files, the model, the end) and never imports MLflow for it; the recorder
opens the runs with :func:`mltrail.start_run` and records them as the training's process
would, provenance included (it is told the script's command line and folder).

- Its runs: the boosting kernel's (XGBoost, LightGBM), those of fits that log nothing while
  they run (:class:`~mltrail.recording.fit_recording.FitRecording`: scikit-learn's), and the
  new runs of Lightning and Keras fits in a single process, with what is added to them after
  the fit (``test``, ``evaluate``; :meth:`~mltrail.recording.session.RunSession.reopen`), and
  the new runs of searches whose units report as they end (an Optuna study, its trials' child
  runs; :class:`~mltrail.recording.search.SearchRun`). A run that resumes one in the store,
  or that every rank of a distributed training must know at its start, opens in the
  training's process.
- It is started when autolog sees a framework whose runs open beside their trainings imported
  (:func:`start_early`; under ``mltrail run``, at the script's start if the script's file
  imports one), when an adapter whose runs will open in it is made
  (:meth:`~mltrail.recording.session.RunSession.start_recorder`), else at the first such run,
  and warms up at once: MLflow imported,
  the store opened, the framework imported, while the script goes on. It runs in the idle
  scheduling class, on what the training leaves idle, in the training's session (Linux
  schedules each session as one group) but not its process group (Ctrl-C is the training's).
  A recorder given no run is killed at exit rather than waited for. Where a spare recorder
  waits warm for this script (:mod:`~mltrail.recording.spare`, left by the script before it),
  the script connects to it instead of starting one.
- Messages are pickled frames on the recorder's standard input, sent from a thread of the
  training's process (the training never waits on the pipe); the recorder answers each run's
  id on a pipe of its own.
- :func:`mltrail.wait` and the exit of the training's process wait for the recorder to have
  sent everything (bounded as a run's close is); its own lines (an "already run" warning, the
  exit line) go to the same terminal.
- If the training's process dies, the recorder sees its input end (or its parent gone), ends
  the runs it left open FAILED, sends what it has, and exits.

Used when the training's process has not imported MLflow (a process that has pays nothing more
to record in itself) and is no notebook or Hydra app (whose provenance is read in-process);
``MLTRAIL_RECORDER=process`` or ``thread`` decides instead.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import io
import itertools
import logging
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from mltrail.errors import ErrorCounter, process_errors
from mltrail.recording import model_file

logger = logging.getLogger("mltrail.recording.recorder")

__all__ = ["Recorder", "RemoteTrail", "recorder"]

#: Environment variable: "process" (record runs opened beside their trainings in the recorder
#: process), "thread" (in the training's process), or unset (decided per process).
MODE_VARIABLE = "MLTRAIL_RECORDER"
_HEADER = struct.Struct("!I")
# Each request starts with the key of the run it is for (0: none), readable when its pickle is
# not: what the recorder cannot rebuild is then counted in that run.
_RUN_KEY = struct.Struct("!Q")
_FOR_A_RUN = frozenset({"open", "call", "errors", "end_exc"})
_UNREADABLE = (
    "reading what the training's process sent (MLTRAIL_RECORDER=thread records in that "
    "process instead)"
)
_ENTRY = "import sys; from mltrail.recording.recorder import main; sys.exit(main())"


def _dumps(message: tuple[Any, ...]) -> bytes:
    try:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        # pickle names a class or function of the script (a custom transformer in a Pipeline,
        # an objective) by reference to __main__, which the recorder's __main__ lacks.
        if b"__main__" not in data:
            return data
    except Exception:
        pass
    import cloudpickle  # MLflow's dependency: lambdas, closures (a plot's drawing), the script's

    return cloudpickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def _request(message: tuple[Any, ...]) -> bytes:
    """A request for the recorder: the key of the run it is for, then the pickled message."""
    key = message[1] if message[0] in _FOR_A_RUN else 0
    return _RUN_KEY.pack(key) + _dumps(message)


def _read_frame(stream: io.BufferedReader) -> bytes | None:
    """The next message, pickled, or None at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = stream.read(size)
    return body if len(body) == size else None


def _requests(
    fd: int, alive: Callable[[], bool], idle: Callable[[], bool] = lambda: False
) -> Iterator[bytes]:
    """The messages on ``fd``, until it ends or the training's process is no longer
    ``alive()`` (a forked child of the training may hold the pipe open after it died).
    ``idle()`` does some work after a second without messages (the training is busy)."""

    def exactly(size: int) -> bytes | None:
        chunks, left = [], size
        while left:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                if not alive():
                    return None
                idle()
                continue
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    while (header := exactly(_HEADER.size)) is not None:
        body = exactly(_HEADER.unpack(header)[0])
        if body is None:
            return
        yield body


def _write_frame(stream: Any, data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def start_process(env: Mapping[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start a recorder process with the environment ``env``: the process (its input takes
    the requests) and the descriptor its answers are read from."""
    answers_read, answers_write = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _ENTRY, str(answers_write)],
            stdin=subprocess.PIPE,
            env={**env, MODE_VARIABLE: "thread", "MLTRAIL_AUTOLOG": "0"},
            pass_fds=(answers_write,),
            close_fds=True,
            # Out of the terminal's process group: a Ctrl-C is the training's to handle (its
            # runs end KILLED); the recorder ends when the training's pipe closes, however.
            # Not out of its session: Linux schedules each session's processes as one group
            # (autogroup), and a recorder in a session of its own took half the CPU from the
            # training whatever its class (a 12-candidate search ran 3x slower).
            process_group=0,
        )
    except BaseException:
        os.close(answers_read)
        raise
    finally:
        os.close(answers_write)
    return process, answers_read


def ask_to_warm_up(stream: Any, framework: str) -> None:
    """Ask the recorder whose input is ``stream`` to warm up for ``framework``'s runs."""
    _write_frame(stream, _request(("warm", framework)))


# --- the training's process ----------------------------------------------------------------------


class RemoteTrail:
    """Stands in for a run's Trail in the training's process; the run lives in the recorder.

    Its methods are those a training calls on its run (see
    :data:`~mltrail.recording.late_trail.KEPT_CALLS`) and the run's end; each one sends a
    message and returns at once.
    """

    def __init__(self, owner: Recorder, key: int, options: Any) -> None:
        self._owner = owner
        self._key = key
        self.options = options
        self.enabled = True
        self.error_counter = _RunErrors(self)
        self._opened = threading.Event()
        self._run_id: str | None = None
        self._tracking_uri = ""

    def __getattr__(self, name: str) -> Any:
        from mltrail.recording.late_trail import KEPT_CALLS

        if name not in KEPT_CALLS:
            raise AttributeError(name)
        return lambda *args, **kwargs: self._owner.send(("call", self._key, name, args, kwargs))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._owner.send(("call", self._key, "log_params", (_portable_params(params),), {}))

    def log_model(self, model: Any, flavor: str, *args: Any, **kwargs: Any) -> None:
        # The model's file where its flavor has one: the recorder need not import the framework.
        model = model_file.for_recorder(model, flavor)
        self._owner.send(("call", self._key, "log_model", (model, flavor, *args), kwargs))

    def end(self, status: str = "FINISHED", **kwargs: Any) -> None:
        self._owner.send(("call", self._key, "end", (status,), kwargs))

    def end_with_exception(self, exc: BaseException, **kwargs: Any) -> None:
        # The exception itself may not pickle; the run keeps its type's name and message.
        described = (type(exc).__name__, str(exc), _exception_kind(exc))
        self._owner.send(("end_exc", self._key, described, kwargs))

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def opened(self, run_id: str | None, tracking_uri: str) -> None:
        self._run_id, self._tracking_uri = run_id, tracking_uri
        self._opened.set()

    @property
    def id_known(self) -> bool:
        """Whether the recorder has answered with the run's id (:attr:`run_id` waits for it)."""
        return self._opened.is_set()

    @property
    def run_id(self) -> str | None:
        """The run's id, once the recorder has created it (waited for, a while at most)."""
        self._opened.wait(self.options.start_timeout + 30)
        return self._run_id

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    @property
    def recorder(self) -> Recorder:
        """The recorder process the run lives in."""
        return self._owner


class _RunErrors(ErrorCounter):
    """The errors of a run recorded in the recorder that the training's process meets (an
    adapter's hook): warned about here, counted in the run's ``mltrail.errors`` there."""

    def __init__(self, trail: RemoteTrail) -> None:
        super().__init__()
        self._trail = trail

    def report(self, kind: str, error: BaseException) -> None:
        super().report(kind, error)
        self._trail._owner.send(("errors", self._trail._key, {kind: 1}))

    def add(self, counts: Mapping[str, int]) -> None:
        super().add(counts)
        if counts:
            self._trail._owner.send(("errors", self._trail._key, dict(counts)))


class Recorder:
    """The recorder process of this process, and the thread that feeds it."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._trails: dict[int, RemoteTrail] = {}
        self._waits: dict[int, threading.Event] = {}
        self._keys = itertools.count(1)
        self._broken = False
        self._warmed: set[str] = set()
        self._given_runs = False  # until then, nothing would be lost without it
        self._lock = threading.Lock()
        from mltrail.recording import handover, spare

        handed = handover.take()  # the recorder `mltrail run` started for this script
        waiting = None if handed is not None else spare.connect()  # or one warmed up already
        if handed is not None:
            self.process: Any = handed[0]
            self._answers, self._warmed = handed[1], handed[2]
        elif waiting is not None:
            self.process = spare.SpareProcess(*waiting)
            self._answers = self.process.answers
        else:
            self.process, answers = start_process(os.environ)
            self._answers = os.fdopen(answers, "rb")
        self._facts = _facts()
        self._queue.put(_request(("hello", self._facts)))
        threading.Thread(target=self._feed, name="mltrail-recorder-feed", daemon=True).start()
        listener = threading.Thread(
            target=self._listen, name="mltrail-recorder-answers", daemon=True
        )
        listener.start()
        if handed is not None or waiting is not None:
            self.process.read_answers_on(listener)

    def open(
        self,
        start_run_kwargs: Mapping[str, Any],
        tags: Mapping[str, Any],
        began: int,
        options: Any,
        framework: str,
    ) -> RemoteTrail:
        """Have the recorder start a run (``mltrail.start_run(**start_run_kwargs)``, tagged
        ``tags``, started at ``began``) of a ``framework`` training, and return its stand-in."""
        self.warm_up(framework)
        key = next(self._keys)
        trail = RemoteTrail(self, key, options)
        with self._lock:
            self._trails[key] = trail
        run_tags = {**tags, "mltrail.pid": str(os.getpid())}  # the training's, not ours
        facts = _facts()
        if facts != self._facts:  # started with the interpreter, or the script changed them
            self._facts = facts
            self.send(("hello", facts))
        self._given_runs = True
        self.send(("open", key, dict(start_run_kwargs), run_tags, began))
        return trail

    def warm_up(self, framework: str) -> None:
        """Have the recorder import MLflow, open the store and import ``framework`` and its
        MLflow flavor now, in the background, ready for the runs to come."""
        if framework not in self._warmed:
            self._warmed.add(framework)
            self.send(("warm", framework))

    def send(self, message: tuple[Any, ...]) -> None:
        """Queue ``message`` for the recorder (pickled now: what the training changes later
        does not change what was logged)."""
        if self._broken:
            return
        try:
            data = _request(message)
        except Exception as error:
            what = message[2] if message[0] == "call" else message[0]
            process_errors.report(f"sending {what} to mltrail's recorder process", error)
            return
        self._queue.put(data)

    def wait(self, timeout: float | None) -> bool:
        """Wait until the recorder has sent everything it was given so far; True when it has."""
        if self._broken or not self._given_runs:
            return True
        token, answered = next(self._keys), threading.Event()
        with self._lock:
            self._waits[token] = answered
        self.send(("wait", token, timeout))
        return answered.wait(None if timeout is None else timeout + 5)

    def close(self, timeout: float, *, killed: bool = False, announced: bool = False) -> bool:
        """Tell the recorder that this process ends (``killed``: by a signal, its runs end
        KILLED), and wait for it to finish (True) within ``timeout`` seconds; past it, the
        recorder finishes on its own."""
        if not self._given_runs:
            # Started for trainings that never came (a script that imports XGBoost to load a
            # model): its warm-up is of no use, and the exit does not wait for it.
            self._queue.put(None)
            with contextlib.suppress(OSError):
                self.process.kill()
            return True
        if killed:
            self.send(("terminated",))
        # Not only the pipe's end (a forked child may hold it open); ``announced``: this
        # process said it waits for its runs already, the recorder need not say it again.
        self.send(("close", announced))
        self._queue.put(None)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _feed(self) -> None:
        stream = self.process.stdin
        assert stream is not None
        while True:
            data = self._queue.get()
            if data is None:
                break
            try:
                _write_frame(stream, data)
            except OSError as error:  # the recorder died: count it once, drop what follows
                self._broken = True
                process_errors.report("sending to mltrail's recorder process", error)
                for event in list(self._waits.values()) + [
                    t._opened for t in self._trails.values()
                ]:
                    event.set()
                return
        with contextlib.suppress(OSError):
            stream.close()

    def _listen(self) -> None:
        while True:
            frame = _read_frame(self._answers)  # type: ignore[arg-type]
            if frame is None:
                break
            answer = pickle.loads(frame)
            kind = answer[0]
            with self._lock:
                if kind == "opened":
                    trail = self._trails.pop(answer[1], None)
                    if trail is not None:
                        trail.opened(answer[2], answer[3])
                        if answer[2]:
                            os.environ["MLTRAIL_RUN_ID"] = answer[2]  # for subprocesses
                elif kind == "waited":
                    event = self._waits.pop(answer[1], None)
                    if event is not None:
                        event.set()
        with self._lock:  # the recorder has ended: nobody waits for an answer any more
            for trail in self._trails.values():
                trail.opened(None, "")
            for event in self._waits.values():
                event.set()


_recorder: Recorder | None = None
_recorder_lock = threading.Lock()


def use_recorder() -> bool:
    """Whether runs opened beside their trainings go to the recorder process (see the module
    doc)."""
    mode = os.environ.get(MODE_VARIABLE, "").strip().lower()
    if os.name != "posix" or not sys.executable or mode == "thread":
        return False
    return mode == "process" or not ({"mlflow", "ipykernel", "hydra"} & sys.modules.keys())


def recorder() -> Recorder | None:
    """This process's recorder, started now if need be; None when runs are recorded here."""
    global _recorder
    if not use_recorder():
        return None
    with _recorder_lock:
        if _recorder is None:
            from mltrail.recording import lifecycle

            lifecycle.install()  # the exit waits for the recorder
            try:
                _recorder = Recorder()
            except (OSError, subprocess.SubprocessError) as error:  # record in-process
                process_errors.report("starting mltrail's recorder process", error)
                os.environ[MODE_VARIABLE] = "thread"
                return None
        return _recorder


def start_early(framework: str, start_run_kwargs: Mapping[str, Any]) -> None:
    """Start the recorder now if the runs of ``framework``'s trainings started with these
    start-run arguments will use it: it imports MLflow, opens the store and imports the
    framework while the script imports its own modules, before the first training."""
    try:
        if records_ahead(start_run_kwargs):
            process = recorder()
            if process is not None:
                process.warm_up(framework)
    except Exception:  # the first run starts it, or records in this process
        logger.debug("starting mltrail's recorder process early failed", exc_info=True)


def records_ahead(start_run_kwargs: Mapping[str, Any]) -> bool:
    """Whether this process's trainings started with these start-run arguments have their runs
    recorded by a recorder process that is worth starting before they come: not in a worker of
    a larger job, not off rank zero, not for runs that must open on the training's thread."""
    from mltrail.recording import distributed
    from mltrail.recording.deferred import can_record_later

    return (
        use_recorder()
        and distributed.is_rank_zero()
        and not _worker_process()
        and can_record_later(start_run_kwargs)
    )


def _facts() -> dict[str, Any]:
    """What the recorder reads as its own to record a run as the training's process would:
    the command line, the main file, the folder, the module search path (a model's classes are
    imported from it), the process id and the environment."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return {
        "argv": list(sys.argv),
        "main_file": main_file,
        "cwd": os.getcwd(),
        "path": list(sys.path),
        "pid": os.getpid(),
        # What the script set since the recorder started (MLFLOW_EXPERIMENT_NAME, say) is
        # what its runs are recorded with; a spare started with another script's. Not the
        # run id this process is told for its subprocesses: the recorder sets its own.
        "env": {k: v for k, v in os.environ.items() if k != "MLTRAIL_RUN_ID"},
    }


def _worker_process() -> bool:
    """Whether this is a worker that Python's ``multiprocessing`` (or joblib's loky) started:
    it imports the framework to run a piece of a larger job (a search's fold), seldom a
    training of its own, and many of them would each warm up a recorder for nothing."""
    multiprocessing = sys.modules.get("multiprocessing")
    return multiprocessing is not None and multiprocessing.parent_process() is not None


def running() -> Recorder | None:
    """The recorder if this process started one."""
    return _recorder


def _forget_after_fork() -> None:
    """A forked child writes to no pipe of its parent's: it starts its own recorder."""
    global _recorder, _recorder_lock
    _recorder, _recorder_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def _portable_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Params that pickle: a value that does not is sent as the text it is logged as."""
    from mltrail.recording.sanitize import flatten, param_text

    plain: dict[str, Any] = {}
    for key, value in flatten(params).items():
        try:
            pickle.dumps(value)
            plain[key] = value
        except Exception:
            plain[key] = param_text(value)
    return plain


def _exception_kind(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupt"
    if isinstance(exc, SystemExit):
        return "exit-ok" if exc.code in (0, None) else "exit"
    return "error"


# --- the recorder process ------------------------------------------------------------------------


def _rebuilt_exception(name: str, message: str, kind: str) -> BaseException:
    if kind == "interrupt":
        return KeyboardInterrupt(message)
    if kind in {"exit", "exit-ok"}:
        return SystemExit(0 if kind == "exit-ok" else 1)
    return type(name, (Exception,), {})(message)


def _serve(requests: Iterator[bytes], answers: Any) -> bool:
    """The recorder's loop: open runs, make the training's calls on them, answer waits.
    Returns whether the training's process said at its exit that it waits for its runs."""
    import mltrail
    from mltrail.recording import lifecycle
    from mltrail.recording.trail import RUN_START_TIME

    trails: dict[int, Any] = {}  # the runs open, by the training process's key
    announced = False
    for frame in requests:
        kind = "message"
        (key,) = _RUN_KEY.unpack_from(frame)
        try:
            message = pickle.loads(memoryview(frame)[_RUN_KEY.size :])  # imports a model's class
        except Exception as error:  # a class the recorder cannot import: lost, counted, said
            trail = trails.get(key)
            if trail is not None:
                trail.error_counter.report(_UNREADABLE, error)
            else:
                process_errors.report(_UNREADABLE, error)
                if key:  # a run's opening: the training must not wait for its id
                    _write_frame(answers, _dumps(("opened", key, None, "")))
            continue
        try:
            kind = message[0]
            if kind == "close":
                announced = bool(message[1:] and message[1])
                break
            if kind == "hello":
                _take_on(message[1])
            elif kind == "warm":
                # Here, not on a thread: a model unpickled meanwhile would import its framework
                # on this thread while the warm-up imports it on the other.
                _warm_up(message[1])
            elif kind == "open":
                _, key, kwargs, tags, began = message
                token = RUN_START_TIME.set(began)
                trail = None
                try:
                    trail = mltrail.start_run(tags=tags, **kwargs)
                    trails[key] = trail
                finally:
                    RUN_START_TIME.reset(token)
                    run_id = trail.run_id if trail is not None else None
                    uri = trail.tracking_uri if trail is not None else ""
                    _write_frame(answers, _dumps(("opened", key, run_id, uri)))
            elif kind == "call":
                _, key, name, args, kwargs = message
                if key in trails:
                    getattr(trails[key], name)(*args, **kwargs)
                    if name == "end":
                        del trails[key]  # it closes on its own; its memory goes with it
            elif kind == "errors":
                _, key, counts = message
                if key in trails:
                    trails[key].error_counter.add(counts)
            elif kind == "end_exc":
                _, key, (name, text, how), kwargs = message
                if key in trails:
                    trail = trails.pop(key)
                    trail.end_with_exception(_rebuilt_exception(name, text, how), **kwargs)
            elif kind == "terminated":
                for trail in trails.values():
                    if trail.status is None:
                        trail.set_tags({"mltrail.exception.type": "SIGTERM"})
                        trail.end("KILLED", background=True)
            elif kind == "wait":
                _, token, timeout = message
                done = lifecycle.wait(timeout)
                _write_frame(answers, _dumps(("waited", token, done)))
        except Exception as error:  # one call failed: the others still count
            process_errors.report(f"recording ({kind})", error)
    # The training's process has ended: a run it left open ended with it.
    for trail in trails.values():
        if trail.status is None:
            trail.set_tags(
                {
                    "mltrail.exception.type": "unknown",
                    "mltrail.exception.message": "the training's process exited before the "
                    "training ended",
                }
            )
            trail.end("FAILED", background=True)
    return announced


_warmed: set[str] = set()  # the frameworks this recorder warmed up for (its spare does too)
_later: list[str] = []  # packages to import once the training is busy (_import_when_idle)


def _warm_up(framework: str, *, now: bool = False) -> None:
    """What the runs of ``framework``'s trainings need, done before the first one asks: MLflow
    imported, the configured store opened, the flavor imported, git's layer and the plots' font
    loaded; the framework itself (whose models the runs' ends unpickle) imported ``now`` or
    when the recorder is idle, never where its models come as files."""
    from mltrail.autolog import registry
    from mltrail.capture.git import preload_gitpython
    from mltrail.recording.plots import preload_matplotlib
    from mltrail.store import make_client, resolve_tracking_uri

    _warmed.add(framework)
    declared = registry.frameworks().get(framework)
    # Lightning's models are MLflow's "pytorch" flavor, and come from `lightning.pytorch`.
    # A framework declared without a flavor logs no model (Optuna's studies): neither its
    # flavor nor the framework is imported here.
    flavors = declared.mlflow_flavors[:1] if declared is not None else (framework,)
    package = declared.triggers[0] if declared and declared.triggers else framework
    try:
        preload_gitpython()
        make_client(resolve_tracking_uri(None))
        for name in (*(f"mlflow.{flavor}" for flavor in flavors), "mlflow.models.signature"):
            importlib.import_module(name)
        preload_matplotlib()
        if flavors and (declared is None or not declared.models_as_files):
            # Later by default, while the training is busy: scikit-learn, which XGBoost
            # imports, is no training of the script's until one of its models comes
            # (unpickling it imports it then).
            if now:
                _import(package)
            else:
                _later.append(package)
    except Exception:  # the run that needs it meets it again, and reports it
        logger.debug("warming up for %s failed", framework, exc_info=True)
        _forget_half_imported(("mlflow", framework))
    # What the warm-up made lives as long as the recorder: out of every later collection.
    gc.freeze()
    gc.enable()


def _forget_half_imported(packages: Sequence[str]) -> None:
    """Forget the submodules a failed import of a package left imported: imported again, the
    package would lack them as attributes (``module 'mlflow' has no attribute 'store'``), so
    the run that needs it imports it whole instead, or meets the same error as the warm-up."""
    for package in packages:
        if package not in sys.modules:
            for name in [name for name in sys.modules if name.startswith(package + ".")]:
                sys.modules.pop(name, None)


def _import_apart_from_the_folder() -> None:
    """Import nothing from the folder this process started in (Python's ``''`` entry of the
    module path, started with ``-c``): a recorder outlives the script that started it, whose
    folder (a temporary one) may be removed meanwhile, and every import would then fail. The
    script's own module path comes with its runs (:func:`_search_path`)."""
    sys.path[:] = [entry for entry in sys.path if entry]


def _import_when_idle() -> bool:
    """Import the next framework the warm-up left for later (False: none was left), so that
    its model is unpickled at once when it comes. Called after a second without messages, not
    as soon as none waits: the training may be about to send the calls of a run just opened."""
    if not _later:
        return False
    _import(_later.pop(0))
    return True


def _import(framework: str) -> None:
    try:
        importlib.import_module(framework)
    except Exception:  # the model that needs it meets it again, and reports it
        logger.debug("importing %s failed", framework, exc_info=True)


def _take_on(facts: Mapping[str, Any]) -> None:
    """Read the training's command line and folder as this process's own (provenance)."""
    sys.argv[:] = list(facts["argv"])
    main = sys.modules.get("__main__")
    if main is not None:
        if facts.get("main_file"):
            main.__file__ = facts["main_file"]
        else:
            with contextlib.suppress(AttributeError):
                del main.__file__
    with contextlib.suppress(OSError):
        os.chdir(facts["cwd"])
    _search_path(facts.get("path", ()))
    if "env" in facts:  # key by key: the recorder's threads never see it half empty
        env = {**facts["env"], MODE_VARIABLE: "thread", "MLTRAIL_AUTOLOG": "0"}
        for key in set(os.environ) - set(env):
            os.environ.pop(key, None)
        os.environ.update(env)


def _search_path(path: Sequence[str]) -> None:
    """Find modules where the training finds them: a model's class in a module beside the
    script (``src/train.py`` importing ``src/models.py``) is imported when it is unpickled."""
    sys.path[:] = [*path, *(entry for entry in sys.path if entry not in path)]


def _collect_after_warm_up() -> None:
    """No garbage collection until :func:`_warm_up` ends: importing MLflow, SQLAlchemy and
    the framework makes millions of objects, and the collector walked them over and over
    (0.8 s of a recorder's 3-4 s of CPU for a script of 12 short trainings; 0.05 s without)."""
    gc.disable()


def _yield_to_the_training() -> None:
    """Run only on what the training leaves idle. A training on every core (XGBoost's threads
    wait for each other every round) lost 10x its speed to a recorder importing MLflow beside
    it: Linux's idle class gives the recorder a core only when nothing else wants it."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):  # not Linux: the lowest priority there is
        with contextlib.suppress(OSError):
            os.nice(19)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the recorder process (its argument: the descriptor to answer on)."""
    _import_apart_from_the_folder()
    _yield_to_the_training()
    _collect_after_warm_up()
    argv = sys.argv[1:] if argv is None else argv
    serve(sys.stdin.fileno(), os.fdopen(int(argv[0]), "wb"), os.getppid())
    return 0


def serve(
    requests: int, answers: Any, training: int, *, spare_for: Sequence[str] | None = None
) -> None:
    """Record what the training's process ``training`` sends on the descriptor ``requests``,
    answering on the stream ``answers``, until it ends; then start a spare recorder for the
    next script (:mod:`~mltrail.recording.spare`) and exit. ``spare_for``: this is a spare,
    warmed up for these frameworks (the training is no parent of it)."""
    from mltrail.recording import lifecycle, spare

    if spare_for is None:

        def alive() -> bool:
            return os.getppid() == training

    else:

        def alive() -> bool:
            return lifecycle.pid_alive(training)

    # Stray prints of the libraries it runs go to the terminal, never into the answers.
    sys.stdout = sys.stderr
    announced = _serve(_requests(requests, alive, _import_when_idle), answers)
    # The exit's own work (the runs' last data, as at any exit), then no interpreter teardown:
    # unloading MLflow, SQLAlchemy and the framework took a second the training waited for.
    lifecycle._at_exit(announced=announced)
    sys.stderr.flush()
    spare.start([*(spare_for or ()), *_warmed])
    os._exit(0)
