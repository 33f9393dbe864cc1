"""mltrail: every training run findable and reproducible.

``mltrail.start_run()`` records a run in MLflow with the code (git), data (DVC) and
environment behind it; the adapters in ``mltrail.integrations`` do it from one callback.
"""

from __future__ import annotations

from typing import Any

# Imported before the function below is defined: a first import of the submodule after it
# would rebind the name mltrail.autolog from the function to the module.
from mltrail import autolog as _autolog_module
from mltrail.errors import MltrailError, MltrailWarning
from mltrail.recording.lifecycle import wait
from mltrail.recording.trail import Trail, start_run
from mltrail.version import __version__

__all__ = [
    "MltrailError",
    "MltrailWarning",
    "Trail",
    "__version__",
    "autolog",
    "start_run",
    "wait",
]


def autolog(*args: Any, **kwargs: Any) -> Any:
    """Record every training run of the supported frameworks; see :mod:`mltrail.autolog`."""
    return _autolog_module.autolog(*args, **kwargs)
