"""Imports started early, off the training's thread.

What an adapter logs at the end of a training may need a module that is slow to import the
first time: Optuna's parameter importances import scikit-learn, seconds on a small machine,
paid on the thread of ``study.optimize`` when the study ends. Started on a daemon thread when
the training starts, the import runs beside the training instead of after it; the code that
uses the module later waits only for what is left of the import (Python's import lock), and
computes exactly what it computed before, on its own thread.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading

logger = logging.getLogger("mltrail.preload")

_started: set[str] = set()
_lock = threading.Lock()


def preload_modules(*names: str) -> threading.Thread | None:
    """Start importing the modules ``names`` on a daemon thread, once per process.

    Returns at once. Modules already imported, or whose import was already started here, are
    skipped. An import that fails is logged at debug level and left for the code that uses
    the module to meet (and count as its error).

    Args:
        names: dotted module names ("optuna.importance").

    Returns:
        The thread importing them, or None when there was nothing left to import.
    """
    with _lock:
        todo = [name for name in names if name not in _started and name not in sys.modules]
        _started.update(todo)
    if not todo:
        return None
    thread = threading.Thread(
        target=_import, args=(todo,), name="mltrail-preload-modules", daemon=True
    )
    thread.start()
    return thread


def _import(names: list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # the module's user meets it again, and reports it
            logger.debug("preloading %s failed", name, exc_info=True)
