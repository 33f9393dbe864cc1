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

LIGHTNING = Framework(
    "mltrail.integrations.lightning",
    ("lightning.pytorch", "pytorch_lightning"),
    frozenset({"log_every_n_steps", "checkpoints", "log_model", "registered_model_name"}),
    ("pytorch",),
)
KERAS = Framework(
    "mltrail.integrations.keras",
    ("keras",),
    frozenset(
        {
            "log_every_n_batches",
            "checkpoints",
            "monitor",
            "mode",
            "log_model",
            "registered_model_name",
        }
    ),
    ("keras", "tensorflow"),
)
XGBOOST = Framework(
    "mltrail.integrations.xgboost",
    ("xgboost",),
    frozenset({"checkpoint_every", "log_model", "registered_model_name", "importance"}),
    ("xgboost",),
)
SKLEARN = Framework(
    "mltrail.integrations.sklearn",
    ("sklearn", *SKLEARN_MODULES),
    frozenset({"log_model", "registered_model_name", "log_plots", "max_child_runs", "nested"}),
    ("sklearn",),
)
LIGHTGBM = Framework(
    "mltrail.integrations.lightgbm",
    ("lightgbm",),
    frozenset({"checkpoint_every", "log_model", "registered_model_name", "importance"}),
    ("lightgbm",),
)
OPTUNA = Framework("mltrail.integrations.optuna", ("optuna",), frozenset({"log_plots"}))
TRANSFORMERS = Framework(
    "mltrail.integrations.transformers",
    ("transformers.trainer",),  # not plain `transformers`: its Trainer takes seconds to import
    frozenset({"checkpoints", "log_model", "registered_model_name"}),
    ("transformers",),
)
