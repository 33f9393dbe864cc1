"""scikit-learn: wrap the estimator in ``TrackedEstimator``; each fit becomes an MLflow run.

    python examples/sklearn_example.py            # a pipeline, then a small grid search
    python examples/sklearn_example.py --quick    # seconds: smaller grid, no model files

What you get per run: the estimator's params, a fingerprint of the training data as a dataset
input, train and held-out metrics, a confusion matrix plot, the fitted model under ``model/``,
and the git commit of this code. The search is one parent run (``cv_results.csv``) with a
child run per candidate. Runs go to MLFLOW_TRACKING_URI (default: sqlite:///mlflow.db here).
"""

from __future__ import annotations

import argparse

from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mltrail.integrations.sklearn import TrackedEstimator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="examples-sklearn")
    parser.add_argument("--quick", action="store_true", help="tiny grid, no model files")
    args = parser.parse_args()

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))

    model = TrackedEstimator(pipeline, experiment=args.experiment, log_model=not args.quick)
    model.fit(X_train, y_train)
    print(f"pipeline: test accuracy {model.score(X_test, y_test):.3f}, run {model.run_id_}")

    grid = {"logisticregression__C": [0.1, 1.0] if args.quick else [0.01, 0.1, 1.0, 10.0]}
    search = TrackedEstimator(
        GridSearchCV(pipeline, grid, cv=3),
        experiment=args.experiment,
        log_model=not args.quick,
    )
    search.fit(X_train, y_train)
    best = search.estimator_.best_params_
    print(
        f"search: best {best}, test accuracy {search.score(X_test, y_test):.3f}, run {search.run_id_}"
    )
    print(f"See a run: mltrail show {search.run_id_}")


if __name__ == "__main__":
    main()
