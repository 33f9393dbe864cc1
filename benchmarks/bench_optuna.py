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
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
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

    common.quiet()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    modules = {"mltrail": "mltrail", "mlflow_callback": "optuna_integration.mlflow"}
    skipped = {v: why for v in VARIANTS if (why := common.unavailable(v, modules))}
    variants = [v for v in VARIANTS if v not in skipped]
    with common.scratch("bench-optuna-") as root:
        runs = {v: study_runner(v, root, trials) for v in variants}
        times = common.interleaved(runs, repeats, common.timed)

    summary = common.against(times, "none")
    per_trial = {v: round(s / trials * 1000, 2) for v, s in summary["overhead_seconds"].items()}
    return common.emit(
        {
            "benchmark": "optuna",
            "trials": trials,
            "objective_seconds": 0.010,
            "repeats": repeats,
            **summary,
            "overhead_per_trial_ms": per_trial,
            "checks": common.faster_than(
                summary["median_seconds"], "mltrail", ("mlflow_callback",)
            ),
            "skipped": skipped,
            "environment": common.environment(optuna=optuna.__version__),
        },
        args.output,
    )


if __name__ == "__main__":
    sys.exit(main())
