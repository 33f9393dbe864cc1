"""The ``mltrail`` command. Each verb lives in its own module; this file only wires them."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mltrail.errors import MltrailError
from mltrail.sanitize import redact_text

# verb -> (module, function, help). The function takes the parsed args and returns an exit code.
VERBS: dict[str, tuple[str, str, str]] = {
    "runs": ("mltrail.query", "runs_command", "list runs made from a commit"),
    "show": ("mltrail.query", "show_command", "show a run's code, data, environment and results"),
    "sync": ("mltrail.sync", "sync_command", "upload runs journaled locally while offline"),
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mltrail`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
