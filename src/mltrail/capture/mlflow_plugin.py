"""MLflow run context provider: git and DVC tags on every MLflow run of the process.

Installed as the ``mlflow.run_context_provider`` entry point ``mltrail``, so runs created by
``mlflow.start_run()``, ``mlflow.autolog()`` and Lightning's ``MLFlowLogger`` (anything that
resolves MLflow's context tags) get, besides MLflow's own git tags:

- ``mlflow.source.git.commit`` / ``branch`` / ``repoURL`` found from the entry script or the
  working directory (so ``python -c`` and notebooks get them too), credentials stripped;
- ``mltrail.git.dirty`` ("true"/"false") and ``mltrail.git.unavailable`` (why, when unknown);
- in a Jupyter notebook, ``mlflow.source.name`` = the notebook's path instead of
  ``ipykernel_launcher.py`` (``mlflow.source.type`` NOTEBOOK, ``mltrail.notebook.path``);
- ``mltrail.dvc.outputs`` (count), ``mltrail.dvc.data_hash`` (one digest of all DVC hashes)
  and ``mltrail.dvc.out.<path>`` = the DVC hash of each output (the first
  :data:`MAX_OUTPUT_TAGS`), so runs can be searched by data version.

A provider only returns tags before the run exists, so the work that needs a run id or takes
long (the diff and snapshot commit, the data-dirty check, ``provenance.json``, dataset inputs)
is done only for runs started with ``mltrail.start_run`` or its adapters. The tags are
computed at most once every :data:`CACHE_SECONDS` per process and working directory, each git
call is bounded in time, and nothing here ever raises. ``MLTRAIL_MLFLOW_PLUGIN=0`` turns the
provider off.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

try:  # the entry point is only loaded by MLflow, but keep the module importable without it
    from mlflow.tracking.context.abstract_context import RunContextProvider
except Exception:  # pragma: no cover
    RunContextProvider = object  # type: ignore[misc,assignment]

logger = logging.getLogger("mltrail.mlflow_plugin")

ENV_SWITCH = "MLTRAIL_MLFLOW_PLUGIN"
CACHE_SECONDS = 10.0
MAX_OUTPUT_TAGS = 50
GIT_TIMEOUT = 2.0

_cache: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
_lock = threading.Lock()


def enabled() -> bool:
    """False when ``MLTRAIL_MLFLOW_PLUGIN`` is 0/false/no/off."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in {"0", "false", "no", "off"}


def context_tags() -> dict[str, str]:
    """The tags for a run created now (cached per process and working directory)."""
    import sys

    try:
        key = (os.getcwd(), sys.argv[0] if sys.argv else "")
    except OSError:
        return {}
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return dict(hit[1])
    tags = _compute()
    with _lock:
        _cache[key] = (time.monotonic(), tags)
    return dict(tags)


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def _compute() -> dict[str, str]:
    from pathlib import Path

    from mltrail.capture import dvc, git, notebook
    from mltrail.recording.sanitize import KeySanitizer, redact_value, truncate

    tags: dict[str, str] = {}
    dirs = None
    current = notebook.shell()
    if current is not None:  # a notebook, not ipykernel_launcher.py
        path, _, _ = notebook.locate(current)
        tags["mlflow.source.name"] = path or "<notebook>"
        tags["mlflow.source.type"] = "NOTEBOOK"
        tags["mltrail.notebook.path"] = path or "unknown"
        if path:
            dirs = [("notebook", Path(path).parent), *git.start_dirs()]
    info = git.inspect(dirs=dirs, timeout=GIT_TIMEOUT)
    if info.root is None:
        tags["mltrail.git.unavailable"] = info.unavailable or "not inside a git repository"
    else:
        tags.update(info.tags())
    start = Path(info.start_dir) if info.start_dir else Path.cwd()
    data = dvc.inspect(start, info.root if info.usable else None)
    if data.root is not None:
        tags.update(data.tags())
        keys = KeySanitizer()
        for out in data.outputs[:MAX_OUTPUT_TAGS]:
            if out.hash:
                tags[keys(f"mltrail.dvc.out.{out.path}")] = out.hash
    return {key: truncate(str(redact_value(key, value)), 5000) for key, value in tags.items()}


class TrailContextProvider(RunContextProvider):  # type: ignore[misc,valid-type]
    """MLflow ``RunContextProvider`` adding mltrail's git and DVC tags (see the module doc)."""

    def in_context(self) -> bool:
        """True when the switch is on and there is a git or DVC state to record."""
        return enabled() and bool(_safe_tags())

    def tags(self) -> dict[str, Any]:
        """The tags for the run being created (from the per-process cache)."""
        return _safe_tags() if enabled() else {}


def _safe_tags() -> dict[str, str]:
    try:
        return context_tags()
    except Exception:  # a provider must never break run creation
        logger.debug("mltrail context tags failed", exc_info=True)
        return {}
