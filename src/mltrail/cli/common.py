"""What several verbs share: options that read the same in every ``--help``, and the one
form of ``--json`` output."""

from __future__ import annotations

import argparse
import json
from typing import Any

JSON_HELP = "stable machine-readable output (schema_version 1)"


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    """``--tracking-uri``: the store to read (default: ``MLFLOW_TRACKING_URI``)."""
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    """``--json``: machine-readable output instead of text."""
    parser.add_argument("--json", action="store_true", help=JSON_HELP)


def print_json(data: Any) -> None:
    """Print ``data`` as the verbs' ``--json`` output: indented, keys sorted."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))
