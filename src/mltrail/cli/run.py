"""``mltrail run -- COMMAND``: run an unmodified training job with ``mltrail.autolog()`` on
(see :mod:`mltrail.autolog.runner`)."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys

from mltrail.cli.common import add_tracking_uri

HELP = "run a training command with autolog on"
EPILOG = """\
examples:
  mltrail run -- python train.py --epochs 3     record the trainings of an unmodified script
  mltrail run --experiment tuning -o log_model=false -- python train.py
  eval "$(mltrail run --print-env)"             autolog on for this shell's Python processes

exit codes: the command's own; 127 the command was not found; 2 a usage error.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail run``."""
    parser.add_argument("--experiment", help="experiment of the recorded runs")
    parser.add_argument("--run-name", help="name of the recorded runs")
    parser.add_argument(
        "--frameworks",
        help="comma-separated framework names, e.g. sklearn,xgboost (default: every registered one)",
    )
    parser.add_argument(
        "--option",
        "-o",
        dest="options",
        action="append",
        metavar="NAME=VALUE",
        help="an autolog option, e.g. -o log_model=false (repeatable)",
    )
    add_tracking_uri(parser)
    parser.add_argument(
        "--print-env",
        action="store_true",
        help="print the environment variables as shell exports instead of running a command",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="with --print-env: the environment variables as a JSON object (schema_version 1)",
    )
    parser.add_argument("command", nargs="*", help="-- COMMAND ARGS...: the job to run")


def run_command(args: argparse.Namespace) -> int:
    """Run ``args.command`` with autolog on; returns its exit code (POSIX: never returns)."""
    from mltrail.autolog import runner
    from mltrail.errors import MltrailError

    command = list(args.command or [])
    if command[:1] == ["--"]:
        command = command[1:]
    changes = runner.environment(
        command,
        experiment=args.experiment,
        run_name=args.run_name,
        frameworks=args.frameworks,
        options=args.options,
        tracking_uri=args.tracking_uri,
    )
    if getattr(args, "json", False) and not args.print_env:
        raise MltrailError(
            "--json goes with --print-env: what a command prints is its own. Use "
            "`mltrail run --print-env --json`, or `mltrail runs --json` after the command."
        )
    if args.print_env and getattr(args, "json", False):
        from mltrail.cli.common import print_json

        print_json({"schema_version": 1, "environment": changes})
        return 0
    if args.print_env:
        for name, value in changes.items():
            print(f"export {name}={shlex.quote(value)}")
        return 0
    if not command:
        raise MltrailError(
            "Give the command to run after --, for example: mltrail run -- python train.py"
        )
    env = {**os.environ, **changes}
    executable = shutil.which(command[0], path=env.get("PATH"))
    if executable is None:
        print(f"mltrail run: command not found: {command[0]}", file=sys.stderr)
        return 127
    return runner.execute(executable, command, env)
