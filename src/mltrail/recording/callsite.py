"""Who called a training: the user's code, or a library.

Only the trainings a user's code starts become runs. Libraries fit helper estimators of their
own (scikit-learn's metrics fit a ``LabelEncoder``, ``CalibratedClassifierCV`` fits clones,
``permutation_importance`` and ``learning_curve`` refit models): such a fit is recorded by
nobody, whatever adapter sees it. A user's own package, installed or not, counts as user code:
only the libraries named here (and mltrail itself) do not.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

#: Top-level packages whose calls to a framework's ``fit`` are not the user's trainings.
LIBRARY_PACKAGES = frozenset(
    {
        "catboost",
        "category_encoders",
        "imblearn",
        "joblib",
        "keras",
        "lightgbm",
        "lightning",
        "numpy",
        "optuna",
        "pandas",
        "pytorch_lightning",
        "scipy",
        "shap",
        "sklearn",
        "skops",
        "statsmodels",
        "torch",
        "transformers",
        "xgboost",
    }
)


#: Modules whose frames only pass a call on: mltrail's adapters and autolog wrappers, and the
#: patches of other autologging tools (MLflow's autolog wrapping the same ``fit`` calls it from
#: its flavor modules).
PASS_THROUGH = ("mltrail", "mlflow", "gorilla", "wrapt")


def caller_module(depth: int = 1) -> str:
    """The module of the first frame above the caller's ``depth`` frames that is not one of
    :data:`PASS_THROUGH`'s, or "" when there is none."""
    frame = sys._getframe(depth + 1)
    try:
        while frame is not None:
            module = frame.f_globals.get("__name__", "") or ""
            if not any(module == p or module.startswith(p + ".") for p in PASS_THROUGH):
                return module
            frame = frame.f_back
        return ""
    finally:
        del frame


def frames_above(frame: FrameType | None, limit: int) -> Iterator[FrameType]:
    """``frame`` and the frames of its callers, nearest first, at most ``limit`` of them.

    For an adapter whose framework hands a callback little (a booster, an iteration's state):
    a bounded, read-only look at the training call the callback runs inside, for its
    arguments and objects. Take what is needed from a frame's ``f_locals`` while iterating;
    keeping the frames would keep the training's objects alive.
    """
    for _ in range(limit):
        if frame is None:
            return
        yield frame
        frame = frame.f_back


def calling_object(frame: FrameType | None, kind: type | tuple[type, ...], limit: int) -> Any:
    """The nearest object of ``kind`` whose method is among ``frame`` and its callers (at most
    ``limit`` frames), or None: the framework's container that calls a callback's hook (XGBoost's
    ``CallbackContainer``, Transformers' ``CallbackHandler``), which hands the callback neither
    itself nor the other callbacks."""
    for each in frames_above(frame, limit):
        caller = each.f_locals.get("self")
        if isinstance(caller, kind):
            return caller
    return None


def called_by_library(depth: int = 1) -> bool:
    """Whether the code that called the caller (past pass-through frames) belongs to a library in
    :data:`LIBRARY_PACKAGES`: then the call is the library's business, not a training to record.
    """
    return caller_module(depth + 1).split(".")[0] in LIBRARY_PACKAGES
