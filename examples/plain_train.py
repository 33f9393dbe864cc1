"""A plain training script that knows nothing of mltrail. Record it without changing a line:

    mltrail run --experiment plain -- python examples/plain_train.py --n-estimators 50

``mltrail run`` starts it with ``mltrail.autolog()`` on, so the random forest's fit below is
recorded (params, data fingerprint, metrics, model, git commit) together with this command line.
"""

from __future__ import annotations

import argparse

from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser(description="Train a random forest on the wine dataset.")
    parser.add_argument("--n-estimators", type=int, default=100)
    parser.add_argument("--max-depth", type=int, default=None)
    args = parser.parse_args()

    X, y = load_wine(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    model = RandomForestClassifier(
        n_estimators=args.n_estimators, max_depth=args.max_depth, random_state=0
    )
    model.fit(X_train, y_train)
    print(f"test accuracy {model.score(X_test, y_test):.3f}")


if __name__ == "__main__":
    main()
