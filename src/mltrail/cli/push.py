"""``mltrail push``: share the runs' snapshot commits (git) and the data they record (DVC)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "share run snapshots and their data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail push``."""
    parser.add_argument("--remote", help="git remote (default: origin)")
    parser.add_argument("--dvc-remote", help="DVC remote (default: the repository's default)")


def push_command(args: argparse.Namespace) -> int:
    """Push the snapshot refs to the git remote and their data to the DVC remote."""
    from mltrail.capture import datasnap
    from mltrail.capture.snapshot import REF_PREFIX
    from mltrail.restore import checkout as restore

    root, name, commits = restore.push_snapshots(Path.cwd(), args.remote)
    if not commits:
        print(f"No run snapshots under {REF_PREFIX} to push.")
        return 0
    print(f"Pushed {len(commits)} run snapshot ref(s) to git remote {name!r}.")
    dvc_root = restore.dvc_root(root)
    if dvc_root is None:
        return 0
    try:
        pushed = datasnap.push_revisions(dvc_root, commits, args.dvc_remote)
    except Exception as error:
        print(
            f"mltrail push: the DVC data was not pushed: {datasnap.error_reason(error)}",
            file=sys.stderr,
        )
        return 1
    print(f"Pushed {pushed} data object(s) recorded by those snapshots to the DVC remote.")
    return 0
