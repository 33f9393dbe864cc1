"""Overhead of recording scikit-learn fits: plain, mltrail's TrackedEstimator, MLflow autolog.

    python benchmarks/bench_sklearn.py            # 10,000 rows x 20 features, 5 repeats
    python benchmarks/bench_sklearn.py --quick    # 2,000 rows, smaller forest, 3 repeats

Three workloads on the same synthetic classification data: ``LogisticRegression``, a
``RandomForestClassifier`` (100 trees) and a 12-candidate ``GridSearchCV`` over
``LogisticRegression`` (5 folds: 60 fits and the refit). Each is timed as a user's script spends
it: plain ``fit``; ``TrackedEstimator(estimator).fit`` with its defaults (run start and end,
params, data fingerprint, metrics, confusion matrix, the model logged under ``model/`` and, for
the search, ``cv_results.csv`` and 12 child runs); and ``fit`` under ``mlflow.sklearn.autolog()``
with its defaults (model with inferred requirements, metrics, plots, the best 5 candidates as
child runs). Variants run interleaved in a rotating order after one untimed warm-up each
(imports, store creation), each tool with its own local sqlite store, in a temporary folder.
MLflow's patches stay installed (disabled) after its variant has run, as they would in a
script; they are checked flags and cost microseconds per fit.

The JSON printed holds every time, the medians, the ratios of the medians to plain
scikit-learn and the overhead in seconds. The checks are the issue's targets: mltrail faster
than MLflow autolog on every workload, and at most 20% above plain scikit-learn for the search
(fixed costs weigh more on short fits, so ``--rows`` changes the ratios).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import numpy as np
import sklearn
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

VARIANTS = ("plain", "mltrail", "mlflow_autolog")
GRID = {"C": [0.001, 0.01, 0.1, 1.0, 10.0, 100.0], "fit_intercept": [True, False]}


def workloads(trees: int, folds: int) -> dict[str, Callable[[], Any]]:
    """Fresh, unfitted estimators for each workload."""
    return {
        "logistic_regression": lambda: LogisticRegression(max_iter=1000),
        "random_forest": lambda: RandomForestClassifier(n_estimators=trees, random_state=0),
        "grid_search_12": lambda: GridSearchCV(LogisticRegression(max_iter=1000), GRID, cv=folds),
    }


def runner(
    variant: str,
    root: Path,
    make: Callable[[], Any],
    X: np.ndarray,
    y: np.ndarray,
    options: dict[str, Any],
) -> Callable[[], Any]:
    """A function that fits once the way a user of ``variant`` would."""
    uri = f"sqlite:///{root / variant / 'mlflow.db'}"
    (root / variant).mkdir(parents=True, exist_ok=True)
    if variant == "plain":
        return lambda: make().fit(X, y)
    if variant == "mltrail":
        from mltrail.integrations.sklearn import TrackedEstimator

        def tracked() -> Any:
            return TrackedEstimator(make(), experiment="bench", tracking_uri=uri, **options)

        return lambda: tracked().fit(X, y)
    if variant == "mlflow_autolog":
        import mlflow

        def autologged() -> Any:
            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment("bench")
            mlflow.sklearn.autolog(silent=True)
            try:
                return make().fit(X, y)
            finally:
                mlflow.sklearn.autolog(disable=True)
                while mlflow.active_run():
                    mlflow.end_run()

        return autologged
    raise ValueError(variant)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, 3 repeats")
    parser.add_argument("--smoke", action="store_true", help="300 rows, 1 repeat, no autolog")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="BLAS/OpenMP threads (all)")
    parser.add_argument(
        "--max-child-runs", type=int, default=None, help="TrackedEstimator's (default: its own)"
    )
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    rows = args.rows or (300 if args.smoke else 2_000 if args.quick else 10_000)
    repeats = args.repeats or (1 if args.smoke else 3 if args.quick else 5)
    trees, folds = (20, 3) if args.quick or args.smoke else (100, 5)
    options = {} if args.max_child_runs is None else {"max_child_runs": args.max_child_runs}

    limits: Any = contextlib.nullcontext()
    if args.threads:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(args.threads)
    common.quiet()
    logging.getLogger("mlflow").setLevel(logging.ERROR)  # its warnings are noise here too
    X, y = make_classification(
        n_samples=rows, n_features=20, n_informative=10, random_state=0, flip_y=0.05
    )
    modules = {"mlflow_autolog": "mlflow.sklearn", "mltrail": "mltrail.integrations.sklearn"}
    skipped = {v: why for v in VARIANTS if (why := common.unavailable(v, modules))}
    if args.smoke:  # it only checks that the case runs: MLflow's autologged search takes long
        skipped.setdefault("mlflow_autolog", "left out of --smoke")
    variants = [v for v in VARIANTS if v not in skipped]
    times: dict[str, dict[str, list[float]]] = {}
    with limits, common.scratch("bench-sklearn-") as root:
        for name, make in workloads(trees, folds).items():
            runs = {v: runner(v, root / name, make, X, y, options) for v in variants}
            times[name] = common.interleaved(runs, repeats, common.timed)

    medians = {w: {v: statistics.median(t) for v, t in ts.items()} for w, ts in times.items()}
    ratios = {w: {v: round(m / ms["plain"], 4) for v, m in ms.items()} for w, ms in medians.items()}
    checks: dict[str, bool] = {}
    for workload, ms in medians.items():
        if "mltrail" in ms and "mlflow_autolog" in ms:
            checks[f"{workload}_mltrail_faster_than_mlflow_autolog"] = (
                ms["mltrail"] < ms["mlflow_autolog"]
            )
    if "mltrail" in medians["grid_search_12"]:
        checks["grid_search_12_mltrail_within_20pct_of_plain"] = (
            ratios["grid_search_12"]["mltrail"] <= 1.2
        )
    result = {
        "benchmark": "sklearn",
        "rows": rows,
        "features": 20,
        "forest_trees": trees,
        "search_candidates": 12,
        "search_folds": folds,
        "threads": args.threads or "all",
        "mltrail_options": options,
        "repeats": repeats,
        "seconds": {
            w: {v: [round(t, 4) for t in ts] for v, ts in vs.items()} for w, vs in times.items()
        },
        "median_seconds": {w: {v: round(m, 4) for v, m in ms.items()} for w, ms in medians.items()},
        "ratio_to_plain": ratios,
        "overhead_seconds": {
            w: {v: round(m - ms["plain"], 4) for v, m in ms.items() if v != "plain"}
            for w, ms in medians.items()
        },
        "checks": checks,
        "skipped": skipped,
        "environment": {
            **common.environment(**{"scikit-learn": sklearn.__version__}),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
    }
    return common.emit(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
