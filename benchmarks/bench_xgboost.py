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
import contextlib
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

VARIANTS = ("none", "mltrail", "mlflow_autolog", "dvclive")


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
    uri = f"sqlite:///{root / variant / 'mlflow.db'}"
    (root / variant).mkdir(parents=True, exist_ok=True)

    def plain(callbacks: list[Any]) -> xgb.Booster:
        return xgb.train(
            PARAMS, dtrain, rounds, evals=evals, verbose_eval=False, callbacks=callbacks
        )

    if variant == "none":
        return lambda: plain([])
    if variant == "mltrail":
        from mltrail.integrations.xgboost import TrailCallback

        return lambda: plain([TrailCallback(experiment="bench", tracking_uri=uri)])
    if variant == "mlflow_autolog":
        import mlflow

        def autologged() -> xgb.Booster:
            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment("bench")
            mlflow.xgboost.autolog(silent=True)
            try:
                return plain([])
            finally:
                mlflow.xgboost.autolog(disable=True)

        return autologged
    if variant == "dvclive":
        from dvclive.xgb import DVCLiveCallback

        counter = iter(range(10**6))

        def live() -> xgb.Booster:
            folder = root / variant / f"run{next(counter)}"
            return plain([DVCLiveCallback(dir=str(folder), save_dvc_exp=False)])

        return live
    raise ValueError(variant)


def available(variant: str) -> str | None:
    """None when the variant can run, else why not."""
    modules = {"mlflow_autolog": "mlflow", "dvclive": "dvclive.xgb", "mltrail": "mltrail"}
    if variant not in modules:
        return None
    try:
        __import__(modules[variant])
    except ImportError as error:
        return f"not installed ({error})"
    return None


def timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, 3 repeats")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="XGBoost nthread (all cores)")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    rows = args.rows or (3_000 if args.quick else 500_000)
    repeats = args.repeats or (3 if args.quick else 5)

    if args.threads:
        PARAMS["nthread"] = args.threads
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines go to stdout
    os.environ.setdefault("MLTRAIL_STRICT", "0")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    dtrain, dval = make_data(rows)
    skipped = {v: why for v in VARIANTS if (why := available(v))}
    variants = [v for v in VARIANTS if v not in skipped]
    times: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench-xgboost-") as folder:
        root = Path(folder)
        os.environ["MLTRAIL_SPOOL_DIR"] = str(root / "spool")
        cwd = os.getcwd()
        os.chdir(root)  # DVCLive and MLflow write relative files; keep them out of the repo
        try:
            runs = {v: trainer(v, root, dtrain, dval, args.rounds) for v in variants}
            for variant in variants:  # warm-up: imports, store creation, caches
                timed(runs[variant])
            for repeat in range(repeats):
                shift = repeat % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    times[variant].append(timed(runs[variant]))
        finally:
            os.chdir(cwd)

    medians = {v: statistics.median(t) for v, t in times.items()}
    base = medians["none"]
    ratios = {v: round(m / base, 4) for v, m in medians.items()}
    checks: dict[str, bool] = {}
    if "mltrail" in medians:
        checks["mltrail_within_5pct_of_none"] = ratios["mltrail"] <= 1.05
        for other in ("mlflow_autolog", "dvclive"):
            if other in medians:
                checks[f"mltrail_faster_than_{other}"] = medians["mltrail"] < medians[other]
    result = {
        "benchmark": "xgboost",
        "rounds": args.rounds,
        "rows": rows,
        "features": 20,
        "metrics": PARAMS["eval_metric"],
        "threads": PARAMS.get("nthread", "all"),
        "repeats": repeats,
        "seconds": {v: [round(t, 4) for t in ts] for v, ts in times.items()},
        "median_seconds": {v: round(m, 4) for v, m in medians.items()},
        "min_seconds": {v: round(min(t), 4) for v, t in times.items()},
        "ratio_to_none": ratios,
        "overhead_seconds": {v: round(m - base, 4) for v, m in medians.items() if v != "none"},
        "checks": checks,
        "skipped": skipped,
        "environment": {
            "python": platform.python_version(),
            "xgboost": xgb.__version__,
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
