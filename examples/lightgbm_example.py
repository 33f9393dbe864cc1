"""LightGBM: add ``TrailCallback`` to the callbacks; the training becomes an MLflow run.

    python examples/lightgbm_example.py            # lgb.train with early stopping
    python examples/lightgbm_example.py --quick    # seconds: few iterations, no model files

What you get: the booster's params, per-iteration train/validation metrics (step = iteration),
early stopping's best iteration, checkpoints every N iterations, feature importance (gain and
split), the model under ``model/`` and the git commit of this code. The scikit-learn API takes
the same callback: ``LGBMClassifier().fit(X, y, callbacks=[TrailCallback()])``.
"""

from __future__ import annotations

import argparse

import lightgbm as lgb
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from mltrail.integrations.lightgbm import TrailCallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="examples-lightgbm")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="few iterations, no model files")
    args = parser.parse_args()
    iterations = min(args.iterations, 8) if args.quick else args.iterations

    data = load_breast_cancer(as_frame=True)
    X_train, X_val, y_train, y_val = train_test_split(
        data.data, data.target, test_size=0.25, random_state=0
    )
    train = lgb.Dataset(X_train, label=y_train)
    val = lgb.Dataset(X_val, label=y_val, reference=train)
    params = {
        "objective": "binary",
        "metric": ["binary_logloss", "auc"],
        "num_leaves": 15,
        "learning_rate": 0.1,
        "verbose": -1,
    }

    callback = TrailCallback(
        experiment=args.experiment,
        checkpoint_every=None if args.quick else 50,
        log_model=not args.quick,
        importance=not args.quick,
    )
    booster = lgb.train(
        params,
        train,
        num_boost_round=iterations,
        valid_sets=[train, val],
        valid_names=["train", "val"],
        callbacks=[lgb.early_stopping(10, first_metric_only=True, verbose=False), callback],
    )
    print(f"best iteration {booster.best_iteration}, run {callback.run_id}")
    print(f"See the run: mltrail show {callback.run_id}")


if __name__ == "__main__":
    main()
