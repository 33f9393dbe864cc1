"""``mltrail env RUN_ID [--output FILE] [--format requirements|json]``: a run's environment, for
building it your own way (conda, Docker, ``uv venv``).

``requirements`` (the default) is the run's ``mltrail/requirements.txt`` (its complete ``pip
freeze``) under a header naming the run and its Python version; editable installs (``-e
PATH``, a path on the machine of the run) are written as comments, since ``pip install -r``
elsewhere cannot follow them. ``json`` is the document ``--json`` prints:
``{schema_version, run_id, python: {version, implementation}, platform, packages: [{name,
version}], editable: [{name, version, path}], requirements}``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from mltrail.cli.common import add_json, add_tracking_uri, print_json

HELP = "write a run's Python version and packages (requirements.txt)"
USAGE = "mltrail env RUN_ID [--output FILE] [--format requirements|json]"
EPILOG = """\
examples:
  mltrail env RUN_ID                              the run's requirements on stdout
  mltrail env RUN_ID --output requirements.txt    to build the environment your own way
  mltrail env RUN_ID --format json                Python, platform and packages as JSON

exit codes: 0 written; 2 no such run, a run that recorded no package list, an unwritable file.
"""

#: The ``schema_version`` of ``mltrail env --json`` and ``--format json``.
SCHEMA_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mltrail env``."""
    parser.add_argument("run_id", metavar="RUN_ID")
    parser.add_argument("--output", "-o", metavar="FILE", help="write to FILE (default: stdout)")
    parser.add_argument(
        "--format",
        choices=("requirements", "json"),
        default="requirements",
        help="requirements.txt (default) or JSON",
    )
    add_json(parser)
    add_tracking_uri(parser)


def env_command(args: argparse.Namespace) -> int:
    """Write a run's requirements (or its environment as JSON) to a file or stdout."""
    from mltrail.errors import MltrailError
    from mltrail.restore import checkout as restore

    client, record = restore.open_run(args.tracking_uri, args.run_id)
    text = record.requirements(client)
    if text is None:
        raise MltrailError(
            f"Run {record.run_id} recorded no package list (mltrail/requirements.txt): it was "
            "made with capture off, or by a plain MLflow run."
        )
    data = describe(record, text)
    if args.format == "json":
        content = json.dumps(data, indent=2, sort_keys=True) + "\n"
    else:
        content = requirements_file(record.run_id, data["python"]["version"], text)
    if args.output:
        path = Path(args.output)
        try:
            path.write_text(content, encoding="utf-8")
        except OSError as error:
            raise MltrailError(f"Cannot write {path}: {error.strerror or error}.") from None
        data["output"] = str(path.absolute())
    if args.json:
        print_json(data)
    elif args.output:
        python = data["python"]["version"] or "an unrecorded version"
        print(
            f"Wrote {len(data['packages'])} packages of run {record.run_id} (Python {python}) "
            f"to {args.output}."
        )
    else:
        print(content, end="")
    return 0


def describe(record: Any, text: str) -> dict[str, Any]:
    """The run's environment as ``mltrail env --json`` prints it."""
    environment = record.environment
    python = environment.get("python") or {}
    packages, editable = [], []
    pending: tuple[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        marker = re.match(r"^# Editable install \((.+?)==(.+)\)$", line)
        if marker:
            pending = (marker.group(1), marker.group(2))
        elif line.startswith("-e "):
            name, version = pending or ("", "")
            editable.append({"name": name, "version": version, "path": line[3:].strip()})
            pending = None
        elif line and not line.startswith(("#", "-")):
            name, _, version = line.partition("==")
            if not version and " @ " in line:
                name, _, version = line.partition(" @ ")
            packages.append({"name": name.strip(), "version": version.strip()})
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": record.run_id,
        "python": {
            "version": python.get("version"),
            "implementation": python.get("implementation"),
        },
        "platform": (environment.get("platform") or {}).get("platform"),
        "packages": packages,
        "editable": editable,
        "requirements": text,
    }


def requirements_file(run_id: str, python: str | None, text: str) -> str:
    """The recorded list with a header, editable installs as comments."""
    lines = [
        f"# The packages of mltrail run {run_id} (Python {python or 'version not recorded'}).",
        "# Written by `mltrail env`; install with `pip install -r` into that Python.",
    ]
    for raw in text.splitlines():
        if raw.strip().startswith("-e "):
            lines.append(f"# {raw.strip()}  (editable: install this project from its code)")
        else:
            lines.append(raw)
    return "\n".join(lines) + "\n"
