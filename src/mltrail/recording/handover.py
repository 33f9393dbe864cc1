"""The recorder that ``mltrail run`` starts for the script, handed over to the script's process.

``mltrail run`` replaces itself with the script's interpreter (``exec``: the process keeps its
id). The script's process used to start its recorder (:mod:`~mltrail.recording.recorder`) once
its interpreter had started and loaded mltrail, a few tenths of a second in; the recorder then
began importing MLflow and opening the store, which a script of short trainings waits for at
its end when it is the first of its session. So ``mltrail run`` starts the recorder itself,
just before the ``exec``, for the frameworks the script's file imports, and asks it to warm up
for them at once; or it takes the spare recorder that waits (:mod:`~mltrail.recording.spare`).

The recorder's pipes (or the spare's connection) stay open across the ``exec``; the variable
:data:`HANDOVER_VARIABLE` names them, and the script's process takes them when it starts its
recorder (:func:`take`), or lets them go if it records none of those frameworks after all
(:func:`let_go`). Only the process that ``mltrail run`` became takes them: the variable is
removed from its environment either way, and its subprocesses never see the descriptors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger("mltrail.recording.handover")

__all__ = ["HANDOVER_VARIABLE", "HandedProcess", "let_go", "start", "take"]

#: Environment variable: the recorder ``mltrail run`` started for the script (internal).
HANDOVER_VARIABLE = "MLTRAIL_RECORDER_HANDOVER"


# --- ``mltrail run``'s side ---------------------------------------------------------------------


def start(executable: str, command: Sequence[str], env: Mapping[str, str]) -> dict[str, str]:
    """Start the recorder of the Python script that ``command`` runs (``executable``: its
    program), or take the spare that waits, before this process becomes the script's
    interpreter with the environment ``env``. Returns the variables that hand it over; none
    when the script's process is better left to start its own (see :func:`_frameworks`)."""
    from mltrail.autolog import SCRIPT_PID_VARIABLE
    from mltrail.recording import spare

    frameworks = _frameworks(executable, command, env)
    if not frameworks:
        return {}
    script = env.get(SCRIPT_PID_VARIABLE) or str(os.getpid())
    waiting = spare.connect()
    if waiting is not None:
        connection, pid = waiting
        descriptor = connection.detach()
        os.set_inheritable(descriptor, True)
        return {HANDOVER_VARIABLE: f"spare:{script}:{pid}:{descriptor}:"}
    from mltrail.recording.recorder import ask_to_warm_up, start_process

    process, answers = start_process(env)
    for framework in frameworks:
        ask_to_warm_up(process.stdin, framework)
    requests = process.stdin.fileno()
    for descriptor in (requests, answers):
        os.set_inheritable(descriptor, True)  # across the exec, to the script's interpreter
    names = ",".join(frameworks)
    return {HANDOVER_VARIABLE: f"pipe:{script}:{process.pid}:{requests}:{answers}:{names}"}


def _frameworks(executable: str, command: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The frameworks the script's recorder would be started for at its interpreter's start
    (:func:`mltrail.autolog.frameworks_imported_by`, :func:`~mltrail.recording.recorder.
    records_ahead`), where ``command`` runs a script file with this very interpreter (the
    recorder must import what the script imports); [] otherwise."""
    from mltrail.autolog import _settings_from_environment, frameworks_imported_by, registry
    from mltrail.recording.recorder import records_ahead

    script = _script(command[1:]) if _this_interpreter(executable) else None
    settings = _settings_from_environment(env)
    if script is None or settings is None:
        return []
    names, options = settings
    known = registry.frameworks()
    wanted = {name: options for name in (names or known) if name in known}
    found = frameworks_imported_by(script, wanted)
    return found if found and records_ahead(options) else []


def _this_interpreter(executable: str) -> bool:
    """Whether ``executable`` is this process's Python: the same file in the same folder (a
    virtual environment's interpreter is a link to the base one, in the environment's
    folder)."""
    if not sys.executable:
        return False
    mine = os.path.abspath(sys.executable)
    theirs = os.path.abspath(executable)
    return os.path.dirname(mine) == os.path.dirname(theirs) and os.path.realpath(
        mine
    ) == os.path.realpath(theirs)


# Interpreter options that take a value: the script is not the word after them.
_OPTIONS_WITH_VALUE = {"-W", "-X", "-Q"}
# Options under which the interpreter skips mltrail's start-up hook: nobody would take it.
_NO_HOOK = {"-E", "-I", "-S"}


def _script(arguments: Sequence[str]) -> str | None:
    """The script file that the interpreter's ``arguments`` run (``-u train.py`` and the
    like); None for ``-m``, ``-c``, standard input, an interpreter that skips the start-up
    hook (``-E``, ``-I``, ``-S``) or anything else."""
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if argument in _OPTIONS_WITH_VALUE:
            index += 2
            continue
        if argument.startswith("-"):
            if argument in {"-", "-m", "-c", *_NO_HOOK} or argument.startswith(("-m", "-c")):
                return None
            index += 1
            continue
        return argument if argument.endswith(".py") else None
    return None


# --- the script's side ---------------------------------------------------------------------------


class HandedProcess:
    """The recorder ``mltrail run`` started, as the script's recorder client uses a process: it
    is a child of this one (``exec`` kept the process id), but no ``Popen`` of ours."""

    def __init__(self, pid: int, requests: int) -> None:
        self.pid = pid
        self.stdin = os.fdopen(requests, "wb")
        self._ended: Any = None  # the thread reading its answers, which ends with it

    def read_answers_on(self, thread: Any) -> None:
        self._ended = thread

    def wait(self, timeout: float | None = None) -> int:
        """Wait for its end (its answers end with it), then collect its exit status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._ended is not None:
            self._ended.join(timeout)
            if self._ended.is_alive():
                raise subprocess.TimeoutExpired("mltrail recorder", timeout or 0.0)
        while True:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # collected already
                return 0
            if pid:
                return os.waitstatus_to_exitcode(status)
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired("mltrail recorder", timeout or 0.0)
            time.sleep(0.005)

    def kill(self) -> None:
        _end(self.pid)


def take() -> tuple[Any, Any, set[str]] | None:
    """The recorder handed over to this process: (the process, its answers stream, the
    frameworks it warms up for already), or None when there is none for this process."""
    handed = _claim()
    if handed is None:
        return None
    kind, pid, descriptors, frameworks = handed
    try:
        if kind == "spare":
            from mltrail.recording import spare

            process: Any = spare.SpareProcess(socket.socket(fileno=descriptors[0]), pid)
            return process, process.answers, set()
        process = HandedProcess(pid, descriptors[0])
        return process, os.fdopen(descriptors[1], "rb"), frameworks
    except (OSError, ValueError) as error:
        logger.debug("taking the recorder over failed: %s", error)
        _close(descriptors)
        return None


def let_go() -> None:
    """End the recorder handed over to this process if it was not taken (the script records
    none of the frameworks it was started for): its descriptors are closed, it exits."""
    handed = _claim()
    if handed is None:
        return
    kind, pid, descriptors, _ = handed
    _close(descriptors)
    if kind == "pipe":  # a spare sees its connection end, and goes on as spares do
        _end(pid)


def _end(pid: int) -> None:
    """Kill the recorder child ``pid`` and collect it."""
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.waitpid(pid, 0)


def _claim() -> tuple[str, int, list[int], set[str]] | None:
    """Remove :data:`HANDOVER_VARIABLE` from the environment and return what it names, when
    it names this process's recorder (its descriptors made private to this process)."""
    from mltrail.autolog import SCRIPT_PID_VARIABLE

    raw = os.environ.pop(HANDOVER_VARIABLE, None)
    if not raw:
        return None
    try:
        kind, script, pid, *rest = raw.split(":")
        if script != str(os.getpid()) or os.environ.get(SCRIPT_PID_VARIABLE) != script:
            return None  # another process's: a subprocess that inherited the variable
        names = rest.pop() if kind == "pipe" else ""
        descriptors = [int(value) for value in rest if value]
        if kind not in {"pipe", "spare"} or len(descriptors) != (2 if kind == "pipe" else 1):
            raise ValueError(f"unknown recorder handover {raw!r}")
        for descriptor in descriptors:
            os.set_inheritable(descriptor, False)  # raises on a descriptor that is not open
    except (OSError, ValueError) as error:
        logger.debug("no recorder handed over: %s", error)
        return None
    return kind, int(pid), descriptors, {n for n in names.split(",") if n}


def _close(descriptors: Sequence[int]) -> None:
    for descriptor in descriptors:
        with contextlib.suppress(OSError):
            os.close(descriptor)
