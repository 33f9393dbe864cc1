"""mltrail's start-up hook: ``mltrail run`` puts this folder first on ``PYTHONPATH``.

Python imports ``sitecustomize`` at start-up, so every Python process of the job (the script,
``python -m`` modules, workers it spawns) turns ``mltrail.autolog()`` on as the ``MLTRAIL_AUTOLOG*``
environment variables ask, without any change to the script. Then the ``sitecustomize`` this
one hides, if any, runs as it would have. Nothing here may stop the user's program.
"""

import os
import sys


def _autolog() -> None:
    try:
        from mltrail.autolog import autolog_from_environment

        autolog_from_environment()
    except Exception as error:  # an interpreter without mltrail, a bad variable: warn, go on
        import warnings

        warnings.warn(f"mltrail: autolog is off in this process ({error})", stacklevel=2)


def _chain() -> None:
    """Run the next ``sitecustomize`` on the path, the one this module shadows."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


if os.environ.get("MLTRAIL_AUTOLOG", "").strip().lower() in {"1", "true", "yes", "on"}:
    _autolog()
_chain()
