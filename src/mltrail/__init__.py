"""mltrail: every training run findable and reproducible.

``mltrail.start_run()`` records a run in MLflow with the code (git), data (DVC) and
environment behind it; the adapters in ``mltrail.integrations`` do it from one callback.
"""

from __future__ import annotations

from typing import Any

from mltrail.errors import MltrailError, MltrailWarning
from mltrail.trail import Trail, start_run

__version__ = "0.1.0"
__all__ = ["MltrailError", "MltrailWarning", "Trail", "__version__", "autolog", "start_run"]


def autolog(*args: Any, **kwargs: Any) -> Any:
    """Record every training run of the supported frameworks; see :mod:`mltrail.autolog`."""
    from mltrail.autolog import autolog as _autolog

    return _autolog(*args, **kwargs)
