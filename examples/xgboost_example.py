"""XGBoost: add ``TrailCallback`` to the callbacks; the training becomes an MLflow run.

    python examples/xgboost_example.py            # xgb.train with early stopping
    python examples/xgboost_example.py --quick    # seconds: few rounds, no model files

What you get: the booster's params, per-round train/validation metrics (step = round),
early stopping's best iteration, checkpoints every N rounds, feature importance, the model
under ``model/`` and the git commit of this code. The scikit-learn API takes the same
callback: ``XGBClassifier(callbacks=[TrailCallback()])``.
"""

from __future__ import annotations

import argparse

import xgboost as xgb
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from mltrail.integrations.xgboost import TrailCallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="examples-xgboost")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="few rounds, no model files")
    args = parser.parse_args()
    rounds = min(args.rounds, 8) if args.quick else args.rounds

    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0)
    dtrain = xgb.DMatrix(X_train, label=y_train)
    dval = xgb.DMatrix(X_val, label=y_val)
    params = {"objective": "binary:logistic", "eval_metric": "logloss", "max_depth": 3, "eta": 0.3}

    callback = TrailCallback(
        experiment=args.experiment,
        checkpoint_every=None if args.quick else 50,
        log_model=not args.quick,
        importance=not args.quick,
    )
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=rounds,
        evals=[(dtrain, "train"), (dval, "val")],
        early_stopping_rounds=10,
        callbacks=[callback],
        verbose_eval=False,
    )
    print(f"best iteration {booster.best_iteration}, run {callback.run_id}")
    print(f"See the run: mltrail show {callback.run_id}")


if __name__ == "__main__":
    main()
