"""The ``mltrail`` command. Each verb lives in its own module; this file only wires them."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mltrail.errors import MltrailError
from mltrail.recording.sanitize import redact_text

# verb -> (module, function, help). The function takes the parsed args and returns an exit code.
VERBS: dict[str, tuple[str, str, str]] = {
    "runs": ("mltrail.query.runs", "runs_command", "list runs made from a commit"),
    "show": (
        "mltrail.query.runs",
        "show_command",
        "show a run's code, data, environment and results",
    ),
    "sync": (
        "mltrail.recording.sync",
        "sync_command",
        "upload runs journaled locally while offline",
    ),
    "checkout": ("mltrail.restore.checkout", "checkout_command", "restore a run's code and data"),
    "verify": ("mltrail.restore.compare", "verify_command", "check a workspace against a run"),
    "diff": ("mltrail.restore.compare", "diff_command", "compare two runs"),
    "reproduce": (
        "mltrail.restore.reproduce",
        "reproduce_command",
        "rerun a run and compare metrics",
    ),
    "push": ("mltrail.restore.checkout", "push_command", "share run snapshots and their data"),
    "which": ("mltrail.restore.checkout", "which_command", "find the run that logged a model file"),
    "run": ("mltrail.autolog.runner", "run_command", "run a training command with autolog on"),
}


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mltrail",
        description="Find and reproduce MLflow training runs by their code, data and environment.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show debug logging")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    runs = verbs.add_parser("runs", help=VERBS["runs"][2])
    runs.add_argument(
        "--commit",
        help="a commit: full or short SHA, or any rev such as HEAD~2 (default: HEAD)",
    )
    runs.add_argument("--experiment", help="only runs of this experiment (default: all)")
    runs.add_argument(
        "--fingerprint",
        nargs="?",
        const="*",
        metavar="FP",
        help="runs with this mltrail.fingerprint (a prefix is enough); without FP: every "
        "fingerprint shared by several runs (the same code, data and params run again)",
    )
    runs.add_argument("--repo", default=".", help="git repository to resolve --commit in")
    runs.add_argument("--max-results", type=int, default=1000, help="at most this many runs")
    runs.add_argument(
        "--json", action="store_true", help="stable machine-readable output (schema_version 1)"
    )
    _add_store_options(runs)

    show = verbs.add_parser("show", help=VERBS["show"][2])
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument(
        "--json", action="store_true", help="stable machine-readable output (schema_version 1)"
    )
    _add_store_options(show)

    sync = verbs.add_parser("sync", help=VERBS["sync"][2])
    sync.add_argument("--spool-dir", help="spool folder (default: MLTRAIL_SPOOL_DIR or the cache)")
    sync.add_argument("--run", dest="run_ids", action="append", help="only this run (repeatable)")
    sync.add_argument("--dry-run", action="store_true", help="list what would be uploaded")
    _add_store_options(sync)
    _add_restore_verbs(verbs)

    from mltrail.autolog.runner import add_arguments as add_run_arguments

    add_run_arguments(verbs.add_parser("run", help=VERBS["run"][2]))
    return parser


def _add_restore_verbs(verbs: argparse._SubParsersAction) -> None:
    json_help = "stable machine-readable output (schema_version 1)"
    checkout = verbs.add_parser("checkout", help=VERBS["checkout"][2])
    checkout.add_argument("run_id", metavar="RUN_ID")
    checkout.add_argument("--into", metavar="DIR", help="restore into a new worktree at DIR")
    checkout.add_argument("--remote", help="git remote to fetch missing commits from")
    checkout.add_argument("--dvc-remote", help="DVC remote to fetch missing data from")
    _add_store_options(checkout)

    verify = verbs.add_parser("verify", help=VERBS["verify"][2])
    verify.add_argument("run_id", metavar="RUN_ID")
    verify.add_argument("--path", metavar="DIR", help="the workspace (default: here)")
    verify.add_argument("--json", action="store_true", help=json_help)
    _add_store_options(verify)

    diff = verbs.add_parser("diff", help=VERBS["diff"][2])
    diff.add_argument("run_a", metavar="RUN_A")
    diff.add_argument("run_b", metavar="RUN_B")
    diff.add_argument("--stat", action="store_true", help="summarise the code diff")
    diff.add_argument("--json", action="store_true", help=json_help)
    _add_store_options(diff)

    reproduce = verbs.add_parser(
        "reproduce",
        help=VERBS["reproduce"][2],
        usage="mltrail reproduce RUN_ID [options] [-- COMMAND ...]",
        epilog="-- COMMAND ...: run this instead of the command the run recorded",
    )
    reproduce.add_argument("run_id", metavar="RUN_ID")
    reproduce.add_argument("--into", metavar="DIR", help="worktree to rerun in (default: new)")
    reproduce.add_argument("--remote", help="git remote to fetch missing commits from")
    reproduce.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance")
    reproduce.add_argument("--atol", type=float, default=1e-9, help="absolute tolerance")
    reproduce.add_argument(
        "--metric", action="append", help="compare only this metric (a glob; repeatable)"
    )
    reproduce.add_argument(
        "--skip-metric", action="append", help="do not compare this metric (a glob; repeatable)"
    )
    reproduce.set_defaults(command=[])
    _add_store_options(reproduce)

    push = verbs.add_parser("push", help=VERBS["push"][2])
    push.add_argument("--remote", help="git remote (default: origin)")
    push.add_argument("--dvc-remote", help="DVC remote (default: the repository's default)")

    which = verbs.add_parser("which", help=VERBS["which"][2])
    which.add_argument("path", metavar="PATH")
    which.add_argument("--json", action="store_true", help=json_help)
    _add_store_options(which)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mltrail`` console script."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `mltrail VERB [options] -- COMMAND...`: the command after "--" is not parsed; verbs that
    # take one have a `command` attribute.
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    if split < len(argv):
        if not hasattr(args, "command"):
            parser.error(f"unrecognized arguments: {' '.join(argv[split:])}")
        args.command = [*(args.command or []), *argv[split + 1 :]]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(message)s",
    )
    module_name, function_name, _ = VERBS[args.verb]
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        return int(function(args) or 0)
    except MltrailError as error:
        print(f"mltrail {args.verb}: {redact_text(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if args.verbose:
            raise
        message = redact_text(f"{type(error).__name__}: {error}").splitlines()[0]
        print(f"mltrail {args.verb}: {message} (run with -v for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
