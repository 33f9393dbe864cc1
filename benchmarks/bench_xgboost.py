"""Overhead of recording an XGBoost training: no callback, mltrail, MLflow autolog, DVCLive.

    python benchmarks/bench_xgboost.py            # 200 rounds, 500k rows x 20 features, 5 repeats
    python benchmarks/bench_xgboost.py --quick    # 200 rounds, 3k rows, 3 repeats

Each variant trains the same booster (200 rounds, an eval set, two metrics); the timed region is
what a user's script spends on it: creating the callback (or nothing) plus ``xgb.train``, which
for every tool includes starting and ending its run and logging the final model. Variants run
interleaved, in a rotating order, after one untimed warm-up each (imports, store creation), each
tool with its default settings and its own local store (sqlite for MLflow and mltrail, a folder
for DVCLive; DVCLive without creating a DVC experiment, as outside a DVC repo). The JSON printed
holds every time, the medians and minimums, the ratios of the medians to no callback, and the
overhead in seconds: starting and ending a run and logging the model are a fixed cost, so the
ratio depends on how long the training itself takes (``--rows`` sets it); quick mode only checks
that every variant runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import common
import numpy as np
import xgboost as xgb

VARIANTS = ("none", "mltrail", "mlflow_autolog", "dvclive")
CONTENDERS = ("mlflow_autolog", "dvclive")


def make_data(rows: int, features: int = 20, seed: int = 0) -> tuple[xgb.DMatrix, xgb.DMatrix]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    weights = rng.normal(size=features)
    logits = x @ weights + 0.5 * np.sin(3 * x[:, 0]) * x[:, 1]
    y = (logits + rng.normal(scale=1.0, size=rows) > 0).astype(np.float32)
    cut = int(rows * 0.8)
    return xgb.DMatrix(x[:cut], label=y[:cut]), xgb.DMatrix(x[cut:], label=y[cut:])


PARAMS = {
    "objective": "binary:logistic",
    "eval_metric": ["logloss", "error"],
    "tree_method": "hist",
    "max_depth": 6,
    "learning_rate": 0.1,
    "seed": 0,
}


def trainer(variant: str, root: Path, dtrain: xgb.DMatrix, dval: xgb.DMatrix, rounds: int):
    """A function that runs one training the way a user of ``variant`` would."""
    evals = [(dval, "val")]

    def plain(callbacks: list[Any]) -> xgb.Booster:
        return xgb.train(
            PARAMS, dtrain, rounds, evals=evals, verbose_eval=False, callbacks=callbacks
        )

    return common.callback_trainer(variant, root, plain, framework="xgboost", dvclive="dvclive.xgb")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, 3 repeats")
    parser.add_argument("--smoke", action="store_true", help="5 rounds, 500 rows, 1 repeat")
    parser.add_argument("--rounds", type=int, default=None, help="boosting rounds (200)")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="XGBoost nthread (all cores)")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    rounds = args.rounds or (5 if args.smoke else 200)
    rows = args.rows or (500 if args.smoke else 3_000 if args.quick else 500_000)
    repeats = args.repeats or (1 if args.smoke else 3 if args.quick else 5)

    if args.threads:
        PARAMS["nthread"] = args.threads
    common.quiet()
    dtrain, dval = make_data(rows)
    modules = {"mlflow_autolog": "mlflow", "dvclive": "dvclive.xgb", "mltrail": "mltrail"}
    skipped = {v: why for v in VARIANTS if (why := common.unavailable(v, modules))}
    if args.smoke:  # it only checks that the case runs: MLflow's model logging takes seconds
        skipped.setdefault("mlflow_autolog", "left out of --smoke")
    variants = [v for v in VARIANTS if v not in skipped]
    with common.scratch("bench-xgboost-") as root:
        runs = {v: trainer(v, root, dtrain, dval, rounds) for v in variants}
        times = common.interleaved(runs, repeats, common.timed)

    summary = common.against(times, "none")
    checks = common.overhead_checks(summary, 0.05, CONTENDERS)
    return common.emit(
        {
            "benchmark": "xgboost",
            "rounds": rounds,
            "rows": rows,
            "features": 20,
            "metrics": PARAMS["eval_metric"],
            "threads": PARAMS.get("nthread", "all"),
            "repeats": repeats,
            **summary,
            "checks": checks,
            "skipped": skipped,
            "environment": common.environment(xgboost=xgb.__version__),
        },
        args.output,
    )


if __name__ == "__main__":
    sys.exit(main())
