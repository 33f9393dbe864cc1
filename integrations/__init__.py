"""mltrail's adapters, one module per framework, and their autolog registrations.

This module is light on purpose: it names what ``mltrail.autolog()`` needs to know of each
built-in adapter (registered under the ``mltrail.integrations`` entry points, the way a
third-party adapter registers) without importing any framework.
"""

from __future__ import annotations

from mltrail.autolog.registry import Framework

# scikit-learn defines its estimators in submodules imported on demand; each one patches what it
# brought (cheaper than importing them all up front, as sklearn.utils.all_estimators does).
SKLEARN_MODULES = tuple(
    f"sklearn.{name}"
    for name in (  # noqa: SIM905
        "calibration cluster compose covariance cross_decomposition decomposition "
        "discriminant_analysis dummy ensemble experimental.enable_halving_search_cv "
        "feature_extraction feature_selection frozen gaussian_process impute isotonic "
        "kernel_approximation kernel_ridge linear_model manifold mixture model_selection "
        "multiclass multioutput naive_bayes neighbors neural_network pipeline preprocessing "
        "random_projection semi_supervised svm tree"
    ).split()
)


def _declared(name: str, *lists: str, beside: bool = False, **more: bool) -> Framework:
    """The built-in adapter ``mltrail.integrations.<name>`` (see :meth:`Framework.named`)."""
    return Framework.named(f"mltrail.integrations.{name}", *lists, records_beside=beside, **more)


_MODEL = "log_model registered_model_name"  # the options of the adapters that log a model

LIGHTNING = _declared(
    "lightning",
    "lightning.pytorch pytorch_lightning",
    f"log_every_n_steps checkpoints {_MODEL}",
    "pytorch",
    beside=True,
)
KERAS = _declared(
    "keras",
    "keras",
    f"log_every_n_batches checkpoints monitor mode {_MODEL}",
    "keras tensorflow",
    beside=True,
)
_BOOSTING = f"checkpoint_every importance {_MODEL}"
XGBOOST = _declared("xgboost", "xgboost", _BOOSTING, "xgboost", beside=True, models_as_files=True)
SKLEARN = _declared(
    "sklearn",
    " ".join(("sklearn", *SKLEARN_MODULES)),
    f"log_plots max_child_runs nested {_MODEL}",
    "sklearn",
    beside=True,
)
LIGHTGBM = _declared("lightgbm", "lightgbm", _BOOSTING, "lightgbm", beside=True)
OPTUNA = _declared("optuna", "optuna", "log_plots", beside=True)
# Not plain `transformers`: its Trainer takes seconds to import.
TRANSFORMERS = _declared(
    "transformers", "transformers.trainer", f"checkpoints {_MODEL}", "transformers"
)
