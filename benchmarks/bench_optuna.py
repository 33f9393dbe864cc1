"""Cost of recording an Optuna study: no callback, mltrail, optuna-integration's MLflowCallback.

    python benchmarks/bench_optuna.py            # 50 trials of a 10 ms objective, 5 repeats
    python benchmarks/bench_optuna.py --quick    # the same, 3 repeats
    python benchmarks/bench_optuna.py --smoke    # 5 trials, 1 repeat

Each variant runs the same study (TPE sampler with a fixed seed, two float params, an objective
that sleeps 10 ms, as a stand-in for a short training); the timed region is what a user's script
spends on it: creating the callback (or nothing), the study and ``study.optimize``, which for
mltrail includes starting the study's run, one child run per trial and, at the end, the plots
and parameter importances. Variants run interleaved, in a rotating order, after one untimed
warm-up each, each with its own sqlite store. The JSON printed holds every time, the medians,
the ratios to no callback and the added seconds per trial. ``MLflowCallback`` (package
``optuna-integration``) is measured when it is installed, and reported as skipped otherwise.
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
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

VARIANTS = ("none", "mltrail", "mlflow_callback")


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5, 5)
    y = trial.suggest_float("y", -5, 5)
    time.sleep(0.010)
    return (x - 1) ** 2 + (y + 2) ** 2


def study_runner(variant: str, root: Path, trials: int) -> Callable[[], Any]:
    """A function that runs one study the way a user of ``variant`` would."""
    folder = root / variant
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"

    def run(callbacks: list[Any]) -> optuna.Study:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
        study.optimize(objective, n_trials=trials, callbacks=callbacks)
        return study

    if variant == "none":
        return lambda: run([])
    if variant == "mltrail":
        from mltrail.integrations.optuna import TrailCallback

        return lambda: run([TrailCallback(experiment="bench", tracking_uri=uri)])
    if variant == "mlflow_callback":
        from optuna_integration.mlflow import MLflowCallback

        return lambda: run([MLflowCallback(tracking_uri=uri, metric_name="value")])
    raise ValueError(variant)


def available(variant: str) -> str | None:
    """None when the variant can run, else why not."""
    modules = {"mltrail": "mltrail", "mlflow_callback": "optuna_integration.mlflow"}
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
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--smoke", action="store_true", help="5 trials, 1 repeat")
    parser.add_argument("--trials", type=int, default=None, help="trials per study (50)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    trials = args.trials or (5 if args.smoke else 50)
    repeats = args.repeats or (1 if args.smoke else 3 if args.quick else 5)

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    os.environ.setdefault("MLTRAIL_STRICT", "0")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    skipped = {v: why for v in VARIANTS if (why := available(v))}
    variants = [v for v in VARIANTS if v not in skipped]
    times: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench-optuna-") as folder:
        root = Path(folder)
        os.environ["MLTRAIL_SPOOL_DIR"] = str(root / "spool")
        cwd = os.getcwd()
        os.chdir(root)  # MLflow writes relative files; keep them out of the repo
        try:
            runs = {v: study_runner(v, root, trials) for v in variants}
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
    checks: dict[str, bool] = {}
    if "mltrail" in medians and "mlflow_callback" in medians:
        checks["mltrail_faster_than_mlflow_callback"] = (
            medians["mltrail"] < medians["mlflow_callback"]
        )
    result = {
        "benchmark": "optuna",
        "trials": trials,
        "objective_seconds": 0.010,
        "repeats": repeats,
        "seconds": {v: [round(t, 4) for t in ts] for v, ts in times.items()},
        "median_seconds": {v: round(m, 4) for v, m in medians.items()},
        "ratio_to_none": {v: round(m / base, 4) for v, m in medians.items()},
        "overhead_seconds": {v: round(m - base, 4) for v, m in medians.items() if v != "none"},
        "overhead_per_trial_ms": {
            v: round((m - base) / trials * 1000, 2) for v, m in medians.items() if v != "none"
        },
        "checks": checks,
        "skipped": skipped,
        "environment": {
            "python": platform.python_version(),
            "optuna": optuna.__version__,
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
