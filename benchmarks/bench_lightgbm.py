"""Overhead of recording a LightGBM training: no callback, mltrail, MLflow autolog, DVCLive.

    python benchmarks/bench_lightgbm.py            # 200 iterations, 500k rows x 20 features, 5 repeats
    python benchmarks/bench_lightgbm.py --quick    # 200 iterations, 3k rows, 3 repeats
    python benchmarks/bench_lightgbm.py --smoke    # 5 iterations, 500 rows, 1 repeat

Each variant trains the same booster (200 iterations, an eval set, two metrics); the timed region
is what a user's script spends on it: creating the callback (or nothing) plus ``lgb.train``, which
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

import lightgbm as lgb
import numpy as np

VARIANTS = ("none", "mltrail", "mlflow_autolog", "dvclive")


def make_data(rows: int, features: int = 20, seed: int = 0) -> tuple[lgb.Dataset, lgb.Dataset]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    weights = rng.normal(size=features)
    logits = x @ weights + 0.5 * np.sin(3 * x[:, 0]) * x[:, 1]
    y = (logits + rng.normal(scale=1.0, size=rows) > 0).astype(np.float32)
    cut = int(rows * 0.8)
    train = lgb.Dataset(x[:cut], label=y[:cut], free_raw_data=False)
    return train, lgb.Dataset(x[cut:], label=y[cut:], reference=train, free_raw_data=False)


PARAMS = {
    "objective": "binary",
    "metric": ["binary_logloss", "binary_error"],
    "num_leaves": 63,
    "learning_rate": 0.1,
    "seed": 0,
    "verbose": -1,
}


def trainer(variant: str, root: Path, dtrain: lgb.Dataset, dval: lgb.Dataset, rounds: int):
    """A function that runs one training the way a user of ``variant`` would."""
    uri = f"sqlite:///{root / variant / 'mlflow.db'}"
    (root / variant).mkdir(parents=True, exist_ok=True)

    def plain(callbacks: list[Any]) -> lgb.Booster:
        return lgb.train(
            PARAMS, dtrain, rounds, valid_sets=[dval], valid_names=["val"], callbacks=callbacks
        )

    if variant == "none":
        return lambda: plain([])
    if variant == "mltrail":
        from mltrail.integrations.lightgbm import TrailCallback

        return lambda: plain([TrailCallback(experiment="bench", tracking_uri=uri)])
    if variant == "mlflow_autolog":
        import mlflow

        def autologged() -> lgb.Booster:
            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment("bench")
            mlflow.lightgbm.autolog(silent=True)
            try:
                return plain([])
            finally:
                mlflow.lightgbm.autolog(disable=True)

        return autologged
    if variant == "dvclive":
        from dvclive.lgbm import DVCLiveCallback

        counter = iter(range(10**6))

        def live() -> lgb.Booster:
            folder = root / variant / f"run{next(counter)}"
            return plain([DVCLiveCallback(dir=str(folder), save_dvc_exp=False)])

        return live
    raise ValueError(variant)


def available(variant: str) -> str | None:
    """None when the variant can run, else why not."""
    modules = {"mlflow_autolog": "mlflow", "dvclive": "dvclive.lgbm", "mltrail": "mltrail"}
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
    seconds = time.perf_counter() - start
    # Runs that mltrail closes in the background are closed before the next variant starts.
    wait = getattr(sys.modules.get("mltrail"), "wait", None)
    if wait is not None:
        wait()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, 3 repeats")
    parser.add_argument("--smoke", action="store_true", help="5 iterations, 500 rows, 1 repeat")
    parser.add_argument("--rounds", type=int, default=None, help="iterations (200)")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="LightGBM num_threads (all)")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    rounds = args.rounds or (5 if args.smoke else 200)
    rows = args.rows or (500 if args.smoke else 3_000 if args.quick else 500_000)
    repeats = args.repeats or (1 if args.smoke else 3 if args.quick else 5)

    if args.threads:
        PARAMS["num_threads"] = args.threads
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines go to stdout
    os.environ.setdefault("MLTRAIL_STRICT", "0")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    dtrain, dval = make_data(rows)
    skipped = {v: why for v in VARIANTS if (why := available(v))}
    if args.smoke:  # it only checks that the case runs: MLflow's model logging takes seconds
        skipped.setdefault("mlflow_autolog", "left out of --smoke")
    variants = [v for v in VARIANTS if v not in skipped]
    times: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench-lightgbm-") as folder:
        root = Path(folder)
        os.environ["MLTRAIL_SPOOL_DIR"] = str(root / "spool")
        cwd = os.getcwd()
        os.chdir(root)  # DVCLive and MLflow write relative files; keep them out of the repo
        try:
            runs = {v: trainer(v, root, dtrain, dval, rounds) for v in variants}
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
        checks["mltrail_within_3pct_of_none"] = ratios["mltrail"] <= 1.03
        for other in ("mlflow_autolog", "dvclive"):
            if other in medians:
                checks[f"mltrail_faster_than_{other}"] = medians["mltrail"] < medians[other]
    result = {
        "benchmark": "lightgbm",
        "rounds": rounds,
        "rows": rows,
        "features": 20,
        "metrics": PARAMS["metric"],
        "threads": PARAMS.get("num_threads", "all"),
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
            "lightgbm": lgb.__version__,
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
