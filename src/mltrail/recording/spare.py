"""The spare recorder: mltrail's recorder process, warmed up ahead of the next script.

A recorder (:mod:`~mltrail.recording.recorder`) spends its first seconds of CPU importing
MLflow, opening the store and importing the framework; for a script of short trainings that is
most of what recording costs, and a user runs such scripts one after another. So when a
recorder's script has ended, it starts a spare: a new recorder process that warms up at once
(MLflow, the store, the frameworks that script used) and then waits for the next script of the
same user, interpreter and installation. That script's process connects to it instead of
starting a recorder of its own, and sends it its runs as it would to its own; the spare takes
on the script's environment, folder, command line, module path and terminal (its standard
output and error), records the runs, starts the next spare and exits.

- A spare serves one script and had served none before: nothing of another script's is left
  in it. It waits :data:`LINGER_VARIABLE` seconds (default :data:`DEFAULT_LINGER`), in the
  idle scheduling class, then exits; ``MLTRAIL_RECORDER_SPARE=0`` starts none.
- It listens on an abstract Unix socket named after the user, the interpreter, mltrail's
  version and the state of the installation: a package installed or removed since it started
  (its folder changes) gives another name, so a spare never records with older modules than
  the script's. Both ends check that the other is the same user.
- A script uses only a spare of its own session: Linux schedules a session's processes as one
  group, and a recorder in another group would take CPU from the training as an equal.
- Its standard streams are /dev/null until a script hands it its own: a spare never holds a
  terminal or a pipe that someone waits to see closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import struct
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger("mltrail.recording.spare")

__all__ = ["connect", "linger", "start"]

#: Environment variable: the seconds a spare recorder waits for a script (0: no spares).
LINGER_VARIABLE = "MLTRAIL_RECORDER_SPARE"
DEFAULT_LINGER = 300.0
_ENTRY = "import sys; from mltrail.recording.spare import main; sys.exit(main())"
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_TAKEN = b"\1"


def linger() -> float:
    """The seconds a spare waits for a script; 0 when spares are off (or not supported here:
    they need Linux's abstract sockets)."""
    if not sys.platform.startswith("linux"):
        return 0.0
    raw = os.environ.get(LINGER_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_LINGER
    try:
        return max(0.0, float(raw))
    except ValueError:
        logger.warning("%s=%r is not a number of seconds; spares are off", LINGER_VARIABLE, raw)
        return 0.0


def _address() -> bytes:
    """The abstract socket of the spare for this user, interpreter and installation."""
    import mltrail
    import mltrail.integrations  # light: names only; its folder is apart in a source checkout
    from mltrail.version import __version__

    states = []
    for folder in sorted({sysconfig.get_paths()[key] for key in ("purelib", "platlib")}):
        with contextlib.suppress(OSError):
            states.append(f"{folder}:{os.stat(folder).st_mtime_ns}")
    # mltrail's own files too (its adapters included): a source checkout installed in place
    # changes without pip.
    for module in (mltrail, mltrail.integrations):
        package = os.path.dirname(os.path.abspath(module.__file__ or ""))
        newest = 0
        for folder, subfolders, files in os.walk(package):
            subfolders[:] = [name for name in subfolders if name != "__pycache__"]
            for name in files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime_ns)
        states.append(f"{package}:{newest}")
    identity = "\0".join([sys.executable, sys.prefix, __version__, *states])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return f"\0mltrail-recorder-{os.getuid()}-{digest}".encode()


def _peer(connection: socket.socket) -> tuple[int, int]:
    """The process id and user id of the other end of ``connection``."""
    raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
    pid, uid, _ = _CREDENTIALS.unpack(raw)
    return pid, uid


# --- the script's side ---------------------------------------------------------------------------


def connect() -> tuple[socket.socket, int] | None:
    """The connection to a spare recorder ready for this script, and the spare's process id;
    None when there is none (start a recorder of its own then)."""
    if linger() <= 0:
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.settimeout(1.0)
        connection.connect(_address())
        pid, uid = _peer(connection)
        if uid != os.getuid() or os.getsid(pid) != os.getsid(0):
            raise ConnectionRefusedError("a spare of another user or session")
        # This process's output is the spare's: its warnings and exit line go where ours do.
        streams = [_stream(1), _stream(2)]
        try:
            socket.send_fds(connection, [b"\0"], streams)
        finally:
            for fd, own in zip(streams, (1, 2), strict=True):
                if fd != own:
                    os.close(fd)
        if connection.recv(1) != _TAKEN:  # another script's, or it stopped waiting
            raise ConnectionRefusedError("the spare was taken")
        connection.settimeout(None)
    except Exception as error:  # none listening (the usual case), or not ours
        logger.debug("no spare recorder: %s", error)
        connection.close()
        return None
    return connection, pid


def _stream(fd: int) -> int:
    """``fd`` if it is open, else /dev/null's (a daemon may have closed its output)."""
    try:
        os.fstat(fd)
    except OSError:
        return os.open(os.devnull, os.O_WRONLY)
    return fd


class SpareProcess:
    """The spare serving this script, as the recorder's client uses a process: its input (the
    connection's sending half), its answers, and waiting for its end (the connection's end:
    the spare is no child of ours to wait for)."""

    def __init__(self, connection: socket.socket, pid: int) -> None:
        self.pid = pid
        self._connection = connection
        self.stdin = connection.makefile("wb")
        self.answers = connection.makefile("rb")
        self._ended: Any = None  # the thread reading the answers, which ends with the spare

    def read_answers_on(self, thread: Any) -> None:
        self._ended = thread

    def wait(self, timeout: float | None = None) -> int:
        if self._ended is not None:
            self._ended.join(timeout)
            if self._ended.is_alive():
                raise subprocess.TimeoutExpired("mltrail spare recorder", timeout or 0.0)
        return 0

    def kill(self) -> None:
        """Let the spare go: it was given nothing (it starts the next spare and exits)."""
        with contextlib.suppress(OSError):
            self._connection.shutdown(socket.SHUT_RDWR)


# --- the recorder's side -------------------------------------------------------------------------


def start(frameworks: Iterable[str]) -> None:
    """Start a spare that warms up for ``frameworks``, unless spares are off; returns at once
    (a spare already waiting keeps its place, and the new one exits)."""
    frameworks = sorted(set(frameworks))
    if linger() <= 0 or not frameworks:  # nothing to warm up for: of no use to a script
        return
    from mltrail.recording.recorder import MODE_VARIABLE

    try:
        subprocess.Popen(
            [sys.executable, "-c", _ENTRY, *frameworks],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, MODE_VARIABLE: "thread", "MLTRAIL_AUTOLOG": "0"},
            close_fds=True,
            process_group=0,  # the session's, as its script's recorder (see the module doc)
        )
    except OSError:
        logger.debug("starting a spare recorder failed", exc_info=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of a spare (its arguments: the frameworks to warm up for)."""
    import threading

    from mltrail.recording import recorder

    frameworks = sys.argv[1:] if argv is None else argv
    recorder._import_apart_from_the_folder()
    recorder._yield_to_the_training()
    recorder._collect_after_warm_up()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(_address())  # first: a second spare learns at once it is not needed
    except OSError:
        return 0
    server.listen(8)
    taken: list[tuple[socket.socket, int]] = []
    # A script that connects while this warms up is taken at once (it waits a moment for the
    # answer, then starts a recorder of its own), and served once warm.
    accepting = threading.Thread(target=lambda: taken.extend(_accept(server, linger())))
    accepting.start()
    for framework in frameworks:
        recorder._warm_up(framework, now=True)  # idle: nothing else to do
    accepting.join()
    if taken:
        connection, pid = taken[0]
        recorder.serve(connection.fileno(), connection.makefile("wb"), pid, spare_for=frameworks)
    return 0


def _accept(server: socket.socket, wait: float) -> list[tuple[socket.socket, int]]:
    """The first script of this user to connect within ``wait`` seconds, told it is taken,
    its output taken on: [(the connection, the script's process id)], or [] if none came."""
    server.settimeout(wait)
    try:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # waited long enough
                return []
            pid, uid = _peer(connection)
            try:
                if uid != os.getuid():
                    raise PermissionError(f"user {uid}")
                connection.settimeout(5.0)
                _, fds, _, _ = socket.recv_fds(connection, 1, 2)
                if len(fds) != 2:  # no script of ours
                    for fd in fds:
                        os.close(fd)
                    raise ConnectionError("no output handed over")
                connection.sendall(_TAKEN)
            except OSError:
                connection.close()
                continue
            break
    finally:
        server.close()  # the scripts queued behind start recorders of their own; the next
        # spare takes the name
    connection.settimeout(None)
    for target, fd in zip((1, 2), fds, strict=False):
        os.dup2(fd, target)
        os.close(fd)
    return [(connection, pid)]
