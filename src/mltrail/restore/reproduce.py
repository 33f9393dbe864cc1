"""``mltrail reproduce RUN_ID [--into DIR] [-- COMMAND...]``: rerun a run from its code and data.

The run's code and data are restored into a fresh worktree (``mltrail checkout --into``; a new
folder under the system's temporary folder unless ``--into`` names one, kept afterwards), and
the command the run recorded (``provenance.json``: the Python script and its arguments, run
with this interpreter or another environment's, see :mod:`mltrail.restore.rebuild`, from the
same folder of the repository; paths inside the original repository point into the worktree)
runs there, logging to the same store and experiment. The
new run is tagged ``mltrail.reproduces=<run_id>``; its final metrics are compared with the
original's: ``|new - old| <= atol + rtol * |old|`` (``--rtol``, ``--atol``; ``--metric`` picks
metrics, ``--skip-metric`` leaves some out, ``system/`` metrics are never compared).

The command, its output and its exit codes are :mod:`mltrail.cli.reproduce`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mltrail.errors import MltrailError
from mltrail.progress import Progress
from mltrail.query import runs as query
from mltrail.query.display import number, table
from mltrail.restore import checkout as restore

TAG = "mltrail.reproduces"
DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 1e-9
_REDACTED = "***"


def recorded_command(record: restore.RunRecord) -> tuple[list[str], str, str]:
    """The run's command (without the interpreter), its folder and its script, both relative
    to the git root."""
    command = record.environment.get("command") or {}
    argv = list(command.get("argv") or [])
    entry = command.get("entry_script")
    git_root = ((record.provenance or {}).get("git") or {}).get("root")
    inside = bool(entry and git_root and _under(entry, git_root))
    if len(argv) < 2 or not inside:
        started = f"`{entry}`" if entry and entry not in ("-c", "-m", "-") else "no script"
        example = "python train.py"
        notebook = ((record.provenance or {}).get("notebook") or {}).get("path")
        if notebook:  # a notebook's kernel: its file is in the restored code
            started = f"the notebook {notebook}"
            rel = os.path.relpath(notebook, git_root) if git_root else notebook
            example = f"jupyter nbconvert --to notebook --execute {rel}"
        raise MltrailError(
            f"Run {record.run_id} recorded no script of its repository to rerun (it ran "
            f"{started}). Give the command after --, for example "
            f"`mltrail reproduce {record.run_id} -- {example}`."
        )
    args = argv[1:]  # argv[0] was the interpreter
    hydra = (record.provenance or {}).get("hydra") or {}
    if hydra.get("rerun_args") is not None:  # a Hydra job: its own overrides, not the sweep's
        args = [args[0], *hydra["rerun_args"]]
    if any(_REDACTED in arg for arg in args):
        raise MltrailError(
            f"Run {record.run_id}'s command line had secret-looking arguments, recorded as "
            f"{_REDACTED}. Give the command after --."
        )
    cwd = command.get("cwd") or git_root
    if not _under(cwd, git_root):
        cwd = str(Path(entry).parent)
    rel = os.path.relpath(cwd, git_root)
    return [_remap(arg, git_root) for arg in args], rel, os.path.relpath(entry, git_root)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _remap(arg: str, git_root: str) -> str:
    """Paths into the original repository become placeholders for the worktree."""
    if arg == git_root or arg.startswith(git_root.rstrip("/") + "/"):
        return "{root}" + arg[len(git_root.rstrip("/")) :]
    return arg


@dataclasses.dataclass
class Rerun:
    """What rerunning a run gave."""

    checkout: restore.Checkout  #: the worktree the command ran in, and how exactly
    exit_code: int  #: the command's
    runs: list[Any]  #: the runs it logged to the store, oldest first (tagged ``TAG``)
    argv: list[str] = dataclasses.field(default_factory=list)  #: the command that ran
    workdir: Path | None = None  #: the folder it ran in
    python: str = sys.executable  #: the interpreter of the recorded command


def rerun(
    record: restore.RunRecord,
    client: Any,
    command: Sequence[str] = (),
    into: str | os.PathLike[str] | None = None,
    remote: str | None = None,
    progress: Callable[[str], None] = print,
    data_progress: Progress | None = None,
    stdout: Any = None,
    environment: Callable[[Path], str] | None = None,
) -> Rerun:
    """Restore ``record``'s code and data into a worktree and run its command there again.

    Args:
        record: the run to rerun.
        client: an ``MlflowClient`` of its store (to find and tag the new runs).
        command: run this instead of the command the run recorded.
        into: the worktree (default: a new folder under the system's temporary folder).
        remote: the git remote to fetch missing commits from.
        progress: receives the checkout report and the command line, before the command's
            own output.
        data_progress: counts the data fetched for the checkout; closed before the command
            starts.
        stdout: where the command's standard output goes (default: this process's).
        environment: called with the worktree once the code is restored, returns the Python
            that runs the recorded command (:mod:`mltrail.restore.rebuild`); its folder comes
            first on the command's ``PATH`` (default: this interpreter, ``PATH`` unchanged).

    Raises:
        MltrailError: when the run recorded no command that can be run again.
    """
    script = None
    if command:
        rel = "."
        argv = list(command)
    else:
        recorded, rel, script = recorded_command(record)
        argv = ["{python}", *recorded]
        source = restore.find_root(".")
        if source is not None and record.code_rev:
            restore.ensure_code(source, record, remote)
            _check_script(record, script, restore.has_file(source, record.code_rev, script))
    into = into or tempfile.mkdtemp(prefix=f"mltrail-reproduce-{record.run_id[:8]}-")
    try:
        result = restore.checkout(record, into=into, remote=remote, progress=data_progress)
    finally:
        if data_progress is not None:
            data_progress.close()
    progress(result.report())
    if not result.exact:
        progress("warning: the rerun starts from code or data that differ from the run's.")
    workdir = result.target / rel
    if script is not None:
        _check_script(record, script, (result.target / script).is_file())
    python = environment(result.target) if environment is not None else sys.executable
    if argv and argv[0] == "{python}":
        argv[0] = python
    argv = [arg.replace("{root}", str(result.target), 1) for arg in argv]
    progress(f"\nRunning in {workdir}: {' '.join(argv)}")
    started = int(time.time() * 1000) - 1000
    env = _environment(record, None if python == sys.executable else python)
    process = subprocess.Popen(argv, cwd=workdir, env=env, stdout=stdout)
    code = process.wait()
    new = _new_runs(client, record.uri, process.pid, started)
    for run in new:
        client.set_tag(run.info.run_id, TAG, record.run_id)
    return Rerun(result, code, new, argv, workdir, python)


def _check_script(record: restore.RunRecord, script: str, found: bool) -> None:
    if not found:
        raise MltrailError(
            f"The run's script {script} is not part of its code (an installed tool?). Give the "
            f"command after --, for example `mltrail reproduce {record.run_id} -- python "
            "train.py`."
        )


def _environment(record: restore.RunRecord, python: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if python is not None:  # another environment's: its scripts (python, pip...) come first
        bin_dir = os.path.dirname(python)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        if os.path.isfile(os.path.join(os.path.dirname(bin_dir), "pyvenv.cfg")):
            env["VIRTUAL_ENV"] = os.path.dirname(bin_dir)
        env.pop("PYTHONHOME", None)
    env["MLFLOW_TRACKING_URI"] = record.uri
    env["MLFLOW_EXPERIMENT_ID"] = record.run.info.experiment_id
    env["MLTRAIL_ALREADY_RUN"] = "ignore"  # the rerun repeats the run on purpose
    for name in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLTRAIL_RUN_ID"):
        env.pop(name, None)
    return env


def _new_runs(client: Any, uri: str, pid: int, started: int) -> list[Any]:
    """The runs the command created: tagged with its process id, started after it."""
    experiments = query.experiment_names(client, uri, None)
    found = query.search_runs(
        client,
        uri,
        list(experiments),
        f"tags.`mltrail.pid` = '{pid}' AND attributes.start_time >= {started}",
        100,
    )
    return sorted(found, key=lambda run: run.info.start_time)


def compare_metrics(
    before: dict[str, float],
    after: dict[str, float],
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    only: list[str] | None = None,
    skip: tuple[str, ...] | list[str] = (),
) -> tuple[list[tuple[str, float | None, float | None, bool]], bool]:
    """Rows (key, original, rerun, ok) and whether every compared metric matches."""
    keys = sorted(k for k in before if not k.startswith("system/"))
    if only:
        keys = [k for k in keys if any(fnmatch.fnmatch(k, p) for p in only)]
        keys += sorted(p for p in only if p not in before and not any(c in p for c in "*?["))
    keys = [k for k in keys if not any(fnmatch.fnmatch(k, p) for p in skip)]
    rows = []
    for key in keys:
        old, new = before.get(key), after.get(key)
        ok = old is not None and new is not None and _close(old, new, rtol, atol)
        rows.append((key, old, new, ok))
    return rows, bool(rows) and all(row[3] for row in rows)


def _close(old: float, new: float, rtol: float, atol: float) -> bool:
    if math.isnan(old) or math.isnan(new):
        return math.isnan(old) and math.isnan(new)
    if math.isinf(old) or math.isinf(new):
        return old == new
    return abs(new - old) <= atol + rtol * abs(old)


def format_comparison(rows: list[tuple[str, float | None, float | None, bool]]) -> str:
    """The table of :func:`compare_metrics`'s rows: each metric, before and after."""
    if not rows:
        return "  (no metrics to compare)"
    body = [["METRIC", "ORIGINAL", "RERUN", ""]]
    for key, old, new, ok in rows:
        # Ten digits: a rerun that differs in the eighth shows it.
        body.append([key, number(old, 10), number(new, 10), "ok" if ok else "DIFFERS"])
    return table(body)
