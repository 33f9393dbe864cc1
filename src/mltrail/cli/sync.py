"""``mltrail sync``: upload the runs journaled locally while the store was away."""

from __future__ import annotations

import argparse
from pathlib import Path

from mltrail.cli.common import add_tracking_uri

HELP = "upload runs journaled locally while offline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail sync``."""
    parser.add_argument(
        "--spool-dir", help="spool folder (default: MLTRAIL_SPOOL_DIR or the cache)"
    )
    parser.add_argument("--run", dest="run_ids", action="append", help="only this run (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded")
    add_tracking_uri(parser)


def sync_command(args: argparse.Namespace) -> int:
    """Replay the spool into the store; exit 1 when a record could not be replayed."""
    from mltrail.config import Options
    from mltrail.errors import MltrailError
    from mltrail.recording import sync
    from mltrail.store import describe_uri

    spool_dir = Path(args.spool_dir) if args.spool_dir else Options.resolve().spool_dir
    if args.dry_run:
        pending = sync.pending(spool_dir)
        for meta, count in pending:
            print(f"{meta['run_id']}  {count} record(s)  -> {describe_uri(meta['tracking_uri'])}")
        if not pending:
            print(f"Nothing to sync in {spool_dir}.")
        return 0
    try:
        results = sync.sync_all(spool_dir, args.tracking_uri, args.run_ids)
    except OSError as error:
        raise MltrailError(f"Cannot read the spool {spool_dir}: {error}") from error
    if not results:
        print(f"Nothing to sync in {spool_dir}.")
        return 0
    failed = 0
    for r in results:
        if r.skipped_reason:
            print(f"{r.spool.name}: skipped ({r.skipped_reason})")
            continue
        line = (
            f"{r.spool.name}: {r.records} record(s) into run {r.run_id}, "
            f"{r.metrics_sent} metric point(s) sent, {r.metrics_skipped} already there"
        )
        print(line)
        for problem in r.problems:
            failed += 1
            print(f"  problem: {problem}")
    return 1 if failed else 0
