"""``mltrail reproduce RUN_ID [-- COMMAND ...]``: rerun a run from its code and data and compare
its final metrics with the original's (see :mod:`mltrail.restore.reproduce`).

Exit code 0 when every compared metric matches, 1 on a mismatch, a failed command or a rerun
that logged no run, 2 when the run cannot be reproduced at all (no recorded command).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mltrail.cli.common import add_json, add_tracking_uri, print_json

HELP = "rerun a run and compare metrics"
USAGE = "mltrail reproduce RUN_ID [options] [-- COMMAND ...]"
EPILOG = """\
-- COMMAND ...: run this instead of the command the run recorded

examples:
  mltrail reproduce RUN_ID                        rerun the recorded command in a new worktree
  mltrail reproduce RUN_ID --rtol 1e-3 --skip-metric 'time/*'
  mltrail reproduce RUN_ID --into ../rerun -- python train.py --epochs 2
  mltrail reproduce RUN_ID --env rebuild          in a venv of the run's Python and packages
  mltrail reproduce RUN_ID --env ../venv          in an environment you prepared
  mltrail reproduce RUN_ID --json                 the command's output goes to stderr

exit codes:
  0  every compared metric matches
  1  a metric differs, the command failed, or the rerun logged no run
  2  the run cannot be reproduced at all (no such run, no recorded command, ...)
"""

#: The ``schema_version`` of ``mltrail reproduce --json``.
SCHEMA_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail reproduce``; the command after ``--`` lands in ``command``."""
    parser.add_argument("run_id", metavar="RUN_ID", help="the run to rerun")
    parser.add_argument("--into", metavar="DIR", help="worktree to rerun in (default: new)")
    parser.add_argument("--remote", help="git remote to fetch missing commits from")
    parser.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance")
    parser.add_argument("--atol", type=float, default=1e-9, help="absolute tolerance")
    parser.add_argument(
        "--metric", action="append", help="compare only this metric (a glob; repeatable)"
    )
    parser.add_argument(
        "--skip-metric", action="append", help="do not compare this metric (a glob; repeatable)"
    )
    parser.add_argument(
        "--env",
        default="current",
        metavar="rebuild|current|PATH",
        help="rebuild: a virtual environment of the run's Python and packages (cached); "
        "current: this interpreter (default); PATH: a prepared environment",
    )
    parser.add_argument(
        "--env-cache",
        metavar="DIR",
        help="where rebuilt environments are kept (default: MLTRAIL_ENV_CACHE, else "
        "~/.cache/mltrail/envs)",
    )
    parser.set_defaults(command=[])
    add_json(parser)
    add_tracking_uri(parser)


def reproduce_command(args: argparse.Namespace) -> int:
    """Rerun a run in a fresh worktree and compare its final metrics with the original's."""
    from mltrail import progress as progress_module
    from mltrail.restore import checkout as restore
    from mltrail.restore import rebuild, reproduce
    from mltrail.store import describe_uri

    as_json = bool(getattr(args, "json", False))
    client, record = restore.open_run(args.tracking_uri, args.run_id)
    say = (lambda text: None) if as_json else (lambda text: print(text, flush=True))
    if args.env == "rebuild":
        environment = rebuild.rebuild(record, client, args.env_cache, progress=say)
    elif args.env == "current":
        environment = rebuild.current(record)
    else:
        environment = rebuild.given(args.env, record)
        say(f"Using the environment {environment.folder} (Python {environment.python_version})")
    recorded_python = environment.recorded_python
    if recorded_python and environment.python_version != recorded_python:
        say(f"note: Python {environment.python_version} (the run used {recorded_python})")
    bar = progress_module.Progress("checkout", enabled=progress_module.wanted(as_json))
    try:
        with progress_module.dvc_bars(False):
            rerun = reproduce.rerun(
                record,
                client,
                command=list(getattr(args, "command", None) or []),
                into=args.into,
                remote=args.remote,
                # Before the command's own output; with --json, stdout is the JSON document alone.
                progress=(lambda text: None) if as_json else (lambda text: print(text, flush=True)),
                data_progress=bar,
                stdout=sys.stderr if as_json else None,
                environment=environment.activate,
            )
    finally:
        bar.close()
    payload: dict = {
        "schema_version": SCHEMA_VERSION,
        "run_id": record.run_id,
        "checkout": rerun.checkout.as_dict(),
        "command": rerun.argv,
        "workdir": str(rerun.workdir) if rerun.workdir else None,
        "exit_code": rerun.exit_code,
        "rerun_run_id": None,
        "rerun_status": None,
        "rtol": args.rtol,
        "atol": args.atol,
        "metrics": [],
        "verdict": "NO_RUN",
        "environment": environment.as_dict(),
        "packages": None,
    }
    if rerun.exit_code != 0 and not as_json:
        print(f"\nThe command exited with status {rerun.exit_code}.")
    if not rerun.runs:
        if as_json:
            print_json(payload)
        else:
            print(
                f"\nThe rerun logged no mltrail run to {describe_uri(record.uri)}: "
                "nothing to compare."
            )
        return 1
    new = rerun.runs[0]
    rows, matches = reproduce.compare_metrics(
        record.run.data.metrics,
        new.data.metrics,
        args.rtol,
        args.atol,
        args.metric or None,
        args.skip_metric or (),
    )
    verdict = "MATCH" if matches and rerun.exit_code == 0 else "MISMATCH"
    rerun_record = restore.RunRecord(new, None, None, record.uri, [])
    rerun_packages = rerun_record.requirements(client)
    original_packages = record.requirements(client)
    changes = rebuild.package_changes(original_packages, rerun_packages)
    payload["environment"] = environment.as_dict()  # with what installing the project gave
    if original_packages is not None and rerun_packages is not None:
        payload["packages"] = changes
    if as_json:
        payload.update(
            rerun_run_id=new.info.run_id,
            rerun_status=new.info.status,
            verdict=verdict,
            metrics=[
                {"key": key, "original": old, "rerun": value, "ok": ok}
                for key, old, value, ok in rows
            ],
        )
        print_json(payload)
    else:
        print(f"\nRun {new.info.run_id} ({new.info.status}) reproduces {record.run_id}:")
        print(reproduce.format_comparison(rows))
        print(_packages_report(environment, changes, original_packages, rerun_packages))
        print(f"\n{verdict} (rtol={args.rtol:g}, atol={args.atol:g})")
    return 0 if verdict == "MATCH" else 1


def _packages_report(
    environment: Any, changes: list[dict[str, str]], original: str | None, rerun: str | None
) -> str:
    """Which packages differ from the run's, and what could not be installed."""
    from mltrail.query.display import table

    lines = [""]
    if original is None or rerun is None:
        which = "the run" if original is None else "the rerun"
        lines.append(f"Packages: not compared ({which} recorded no package list).")
    elif not changes:
        lines.append("Packages: the same as the run's.")
    else:
        lines.append(f"Packages that differ from the run's ({len(changes)}):")
        rows = [["PACKAGE", "ORIGINAL", "RERUN"]]
        rows += [[c["name"], c["original"], c["rerun"]] for c in changes]
        lines.append(table(rows))
    for item in environment.not_installed:
        lines.append(f"not installed: {item['requirement']} ({item['error']})")
    return "\n".join(lines)
