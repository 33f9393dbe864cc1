"""Who called a training: the user's code, or a library.

Only the trainings a user's code starts become runs. Libraries fit helper estimators of their
own (scikit-learn's metrics fit a ``LabelEncoder``, ``CalibratedClassifierCV`` fits clones,
``permutation_importance`` and ``learning_curve`` refit models): such a fit is recorded by
nobody, whatever adapter sees it. A user's own package, installed or not, counts as user code:
only the libraries named here (and mltrail itself) do not.
"""

from __future__ import annotations

import sys

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
        "mlflow",
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


def caller_module(depth: int = 1) -> str:
    """The module of the first frame above the caller's ``depth`` frames that is not
    mltrail's own code (its adapters and autolog wrappers), or "" when there is none."""
    frame = sys._getframe(depth + 1)
    try:
        while frame is not None:
            module = frame.f_globals.get("__name__", "") or ""
            if not (module == "mltrail" or module.startswith("mltrail.")):
                return module
            frame = frame.f_back
        return ""
    finally:
        del frame


def called_by_library(depth: int = 1) -> bool:
    """Whether the code that called the caller (past mltrail's frames) belongs to a library in
    :data:`LIBRARY_PACKAGES`: then the call is the library's business, not a training to record.
    """
    return caller_module(depth + 1).split(".")[0] in LIBRARY_PACKAGES
