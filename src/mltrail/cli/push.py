"""``mltrail push``: share the runs' snapshot commits (git) and the data they record (DVC)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mltrail.cli.common import add_json, print_json

HELP = "share run snapshots and their data"
EPILOG = """\
examples:
  mltrail push                            snapshots to origin, data to the default DVC remote
  mltrail push --remote upstream --dvc-remote storage
  mltrail push --json

On a terminal, DVC's progress shows the files and bytes uploaded, with the rate.

exit codes:
  0  pushed (or nothing to push)
  1  the snapshots were pushed but their DVC data was not
  2  nothing was pushed: not a git repository, no such remote, ...
"""

#: The ``schema_version`` of ``mltrail push --json``.
SCHEMA_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail push``."""
    parser.add_argument("--remote", help="git remote (default: origin)")
    parser.add_argument("--dvc-remote", help="DVC remote (default: the repository's default)")
    add_json(parser)


def push_command(args: argparse.Namespace) -> int:
    """Push the snapshot refs to the git remote and their data to the DVC remote."""
    from mltrail import progress
    from mltrail.capture import datasnap
    from mltrail.capture.snapshot import REF_PREFIX
    from mltrail.restore import checkout as restore

    as_json = bool(getattr(args, "json", False))
    root, name, commits = restore.push_snapshots(Path.cwd(), args.remote)
    payload: dict = {
        "schema_version": SCHEMA_VERSION,
        "git_remote": name,
        "snapshots": commits,
        "dvc_objects": None,
        "dvc_error": None,
    }
    if not commits:
        if as_json:
            print_json(payload)
        else:
            print(f"No run snapshots under {REF_PREFIX} to push.")
        return 0
    if not as_json:
        print(f"Pushed {len(commits)} run snapshot ref(s) to git remote {name!r}.", flush=True)
    dvc_root = restore.dvc_root(root)
    if dvc_root is None:
        if as_json:
            print_json(payload)
        return 0
    try:
        with progress.dvc_bars(progress.wanted(as_json)):
            pushed = datasnap.push_revisions(dvc_root, commits, args.dvc_remote)
    except Exception as error:
        reason = datasnap.error_reason(error)
        if as_json:
            payload["dvc_error"] = reason
            print_json(payload)
        print(f"mltrail push: the DVC data was not pushed: {reason}", file=sys.stderr)
        return 1
    payload["dvc_objects"] = pushed
    if as_json:
        print_json(payload)
    else:
        print(f"Pushed {pushed} data object(s) recorded by those snapshots to the DVC remote.")
    return 0
