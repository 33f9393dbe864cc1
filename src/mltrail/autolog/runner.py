"""``mltrail run -- COMMAND``: run an unmodified training job with ``mltrail.autolog()`` on.

The command gets an environment in which every Python process turns autolog on at start-up:
the folder of mltrail's ``sitecustomize`` hook first on ``PYTHONPATH`` and the
``MLTRAIL_AUTOLOG*`` variables (see :data:`mltrail.autolog.ENVIRONMENT`). Jobs started by other
tools get the same effect from the same variables (``mltrail run --print-env``).

On POSIX the command replaces this process (``exec``): its arguments, exit code, signals
(Ctrl-C, ``kill``) and terminal are the command's own, with nothing in between to forward them.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from mltrail.autolog import SCRIPT_PID_VARIABLE, parse_options, registry
from mltrail.capture.env import command_line
from mltrail.errors import MltrailError

logger = logging.getLogger("mltrail.autolog.runner")

HOOK_DIR = Path(__file__).resolve().parent.parent / "_bootstrap"
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def execute(executable: str, command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` (its program found at ``executable``) with the environment ``env``.

    On POSIX the command replaces this process and this never returns; elsewhere it runs as a
    child, with Ctrl-C and SIGTERM forwarded, and its exit code is returned.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        # The command keeps this process's id: the script's own interpreter knows it is the
        # script (not a worker it starts), and may start the recorder at once.
        env = {**env, SCRIPT_PID_VARIABLE: str(os.getpid())}
        env.update(_recorder_for(executable, command, env))
        os.execve(executable, command, env)
    return _run_child([executable, *command[1:]], env)  # pragma: no cover - Windows


def _recorder_for(executable: str, command: list[str], env: dict[str, str]) -> dict[str, str]:
    """Start the script's recorder now, before the exec (see :mod:`mltrail.recording.handover`);
    the variables that hand it over. Whatever fails here, the script starts its own."""
    from mltrail.recording import handover

    try:
        return handover.start(executable, command, env)
    except Exception:
        logger.debug("starting the recorder before the script failed", exc_info=True)
        return {}


def environment(
    command: Sequence[str],
    experiment: str | None = None,
    run_name: str | None = None,
    frameworks: str | None = None,
    options: Sequence[str] | None = None,
    tracking_uri: str | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables to add to ``base`` (default: this process's) for an autologged job."""
    base = os.environ if base is None else base
    names = [n.strip() for n in (frameworks or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in registry.frameworks()]
    if unknown:
        raise MltrailError(
            f"Unknown framework {unknown[0]!r} for --frameworks; choose from {', '.join(registry.frameworks())}."
        )
    option_text = ",".join(options or ())
    parse_options(option_text)  # a typo fails here, not in the job
    if not HOOK_DIR.joinpath("sitecustomize.py").is_file():
        raise MltrailError(
            f"mltrail's start-up hook is missing from {HOOK_DIR}; reinstall mltrail."
        )
    changes = {
        "MLTRAIL_AUTOLOG": "1",
        "PYTHONPATH": _prepend(str(HOOK_DIR), base.get("PYTHONPATH")),
    }
    if command:
        changes["MLTRAIL_COMMAND"] = shlex.join(command_line(list(command)))
    for name, value in (
        ("MLTRAIL_AUTOLOG_FRAMEWORKS", ",".join(names)),
        ("MLTRAIL_EXPERIMENT", experiment),
        ("MLTRAIL_RUN_NAME", run_name),
        ("MLTRAIL_AUTOLOG_OPTIONS", option_text),
        ("MLFLOW_TRACKING_URI", tracking_uri),
    ):
        if value:
            changes[name] = value
    # As `poetry run` or `uv run` do: `python` is this environment's Python, where mltrail is.
    if sys.prefix != sys.base_prefix:
        changes["PATH"] = _prepend(str(Path(sys.executable).parent), base.get("PATH"))
    return changes


def _prepend(entry: str, current: str | None) -> str:
    parts = [p for p in (current or "").split(os.pathsep) if p and p != entry]
    return os.pathsep.join([entry, *parts])


def _run_child(command: list[str], env: dict[str, str]) -> int:  # pragma: no cover - Windows
    """Where ``exec`` does not replace the process: run the child, forward signals, wait."""
    child = subprocess.Popen(command, env=env)

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED_SIGNALS}
    try:
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
