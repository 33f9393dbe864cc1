"""``mltrail sync``: upload the runs journaled locally while the store was away."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from mltrail.cli.common import add_json, add_tracking_uri, print_json

HELP = "upload runs journaled locally while offline"
EPILOG = """\
examples:
  mltrail sync                        upload every journaled run to the store it was meant for
  mltrail sync --dry-run              list what is waiting, upload nothing
  mltrail sync --run RUN_ID           only this run
  mltrail sync --tracking-uri http://mlflow.example.com:5000
                                      upload into another store than the recorded one

Runs that another process is still writing, or that another `mltrail sync` is replaying, are
skipped (run sync again later). A run that cannot be sent is reported and the others go on.

exit codes:
  0  every run was uploaded, skipped for now, or there was nothing to sync
  1  a run could not be sent, or a record of it could not be replayed (each is listed)
  2  a --run that is not in the spool, or a spool that cannot be read
"""

#: The ``schema_version`` of ``mltrail sync --json``.
SCHEMA_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail sync``."""
    parser.add_argument(
        "--spool-dir", help="spool folder (default: MLTRAIL_SPOOL_DIR or the cache)"
    )
    parser.add_argument(
        "--run",
        dest="run_ids",
        action="append",
        metavar="RUN_ID",
        help="only this run (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded")
    add_json(parser)
    add_tracking_uri(parser)


def sync_command(args: argparse.Namespace) -> int:
    """Replay the spool into the store; exit 1 when a run could not be sent."""
    from mltrail import progress
    from mltrail.config import Options
    from mltrail.errors import MltrailError
    from mltrail.recording import sync
    from mltrail.store import describe_uri

    spool_dir = Path(args.spool_dir) if args.spool_dir else Options.resolve().spool_dir
    as_json = bool(getattr(args, "json", False))
    payload: dict = {
        "schema_version": SCHEMA_VERSION,
        "spool_dir": str(spool_dir),
        "dry_run": bool(args.dry_run),
        "runs": [],
    }
    if args.dry_run:
        try:
            pending = sync.pending(spool_dir, args.run_ids)
        except OSError as error:
            raise MltrailError(f"Cannot read the spool {spool_dir}: {error}") from error
        for meta, count in pending:
            uri = describe_uri(meta.get("tracking_uri") or "")
            payload["runs"].append(
                {
                    "run_id": meta["run_id"],
                    "state": "pending",
                    "records": count,
                    "tracking_uri": uri,
                }
            )
            if not as_json:
                print(f"{meta['run_id']}  {count} record(s)  -> {uri}")
        if as_json:
            print_json(payload)
        elif not pending:
            print(f"Nothing to sync in {spool_dir}.")
        return 0

    bar = progress.Progress("sync", enabled=progress.wanted(as_json), unit="runs")

    def report(r: sync.SyncResult) -> None:
        bar.advance(nbytes=r.bytes if r.state == "synced" else 0, items=1)
        if as_json:
            return
        if r.skipped_reason:
            bar.write(f"{r.spool.name}: skipped ({r.skipped_reason})")
            return
        if r.run_id is not None:
            bar.write(
                f"{r.spool.name}: {r.records} record(s) into run {r.run_id}, "
                f"{r.metrics_sent} metric point(s) sent, {r.metrics_skipped} already there"
            )
        else:
            bar.write(f"{r.spool.name}: NOT SENT")
        for problem in r.problems:
            bar.write(f"  problem: {problem}")

    # With --json, stdout is the JSON alone: what libraries print as runs end (MLflow's
    # "View run" line on a server) goes to stderr.
    printed = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    try:
        with printed:
            results = sync.sync_all(spool_dir, args.tracking_uri, args.run_ids, on_result=report)
    except OSError as error:
        raise MltrailError(f"Cannot read the spool {spool_dir}: {error}") from error
    finally:
        bar.close()
    failed = sum(1 for r in results if r.problems)
    if as_json:
        payload["runs"] = [r.as_dict() for r in results]
        print_json(payload)
    elif not results:
        print(f"Nothing to sync in {spool_dir}.")
    elif failed:
        print(f"{failed} run(s) could not be sent completely; they stay in {spool_dir}.")
    return 1 if failed else 0
