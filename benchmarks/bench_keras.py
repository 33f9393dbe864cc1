"""Overhead of recording a Keras training: no callback, mltrail, MLflow autolog, DVCLive.

    python benchmarks/bench_keras.py            # 20 epochs, 4k rows, 5 repeats
    python benchmarks/bench_keras.py --quick    # 20 epochs, 1k rows, 3 repeats (a smoke run)

Each variant trains the same small MLP (32 -> 64 -> 64 -> 1, Adam, MSE + MAE, 20 epochs,
batch 64, 20% validation) on the torch backend unless KERAS_BACKEND says otherwise. The timed
region is what a user's script spends on it: creating the callback (or nothing) plus
``model.fit``, which for every tool includes starting and ending its run and, with its default
settings, logging checkpoints and the final model. Variants:

- ``none``: no callback;
- ``mltrail``: ``TrailCallback()`` with its defaults (epoch metrics, best and last checkpoints,
  the final model);
- ``mltrail_metrics_only``: ``TrailCallback(checkpoints="none", log_model=False)``, what DVCLive
  records;
- ``mltrail_batch``: the defaults plus batch metrics on every batch;
- ``mlflow_autolog``: ``mlflow.keras.autolog()`` with its defaults (it logs the model);
- ``dvclive``: ``dvclive.keras.DVCLiveCallback`` (metrics only), when dvclive is installed.

Variants run interleaved, in a rotating order, after one untimed warm-up each (imports, store
creation), each tool with its own local store. The JSON printed holds every wall time, the
medians and the ratios to no callback; the same for the CPU time of the process (all threads);
and, for mltrail, the time the training thread spent inside the callback's hooks. On a busy
machine wall times swing widely: read the ratios only from a quiet one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import common
import keras
import numpy as np

VARIANTS = (
    "none",
    "mltrail",
    "mltrail_metrics_only",
    "mltrail_batch",
    "mlflow_autolog",
    "dvclive",
)
EPOCHS = 20
BATCH_SIZE = 64
FEATURES = 32


def make_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    y = (np.tanh(x @ rng.normal(size=(FEATURES, 1))) + 0.1 * rng.normal(size=(rows, 1))).astype(
        np.float32
    )
    return x, y


def make_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(1),
        ],
        name="bench_mlp",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
    return model


HOOKS = (
    "on_train_begin",
    "on_epoch_begin",
    "on_train_batch_end",
    "on_epoch_end",
    "on_test_end",
    "on_train_end",
)


def with_hook_timer(callback: Any, spent: list[float]) -> Any:
    """Add the time spent inside the callback's hooks to ``spent[0]``."""

    def timer(method: Callable[..., Any]) -> Callable[..., Any]:
        def timed_method(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        return timed_method

    for name in HOOKS:
        setattr(callback, name, timer(getattr(callback, name)))
    # Called by the fit wrapper after fit: final checkpoints, the model, ending the run.
    callback._call.exit = timer(callback._call.exit)
    return callback


def trainer(variant: str, root: Path, x: np.ndarray, y: np.ndarray, epochs: int):
    """A function that runs one training the way a user of ``variant`` would."""
    uri = f"sqlite:///{root / variant / 'mlflow.db'}"
    (root / variant).mkdir(parents=True, exist_ok=True)

    def fit(callbacks: list[Any], spent: list[float] | None = None) -> tuple[float, ...]:
        model = make_model()  # building is outside what a callback costs, but cheap
        spent = spent if spent is not None else [0.0]
        start, cpu = time.perf_counter(), time.process_time()
        model.fit(
            x,
            y,
            batch_size=BATCH_SIZE,
            epochs=epochs,
            validation_split=0.2,
            verbose=0,
            callbacks=[c() for c in callbacks],
        )
        return time.perf_counter() - start, time.process_time() - cpu, spent[0]

    if variant == "none":
        return lambda: fit([])
    if variant.startswith("mltrail"):
        from mltrail.integrations.keras import TrailCallback

        options: dict[str, Any] = {"experiment": "bench", "tracking_uri": uri}
        if variant == "mltrail_metrics_only":
            options.update(checkpoints="none", log_model=False)
        if variant == "mltrail_batch":
            options.update(log_every_n_batches=1)

        def tracked() -> tuple[float, ...]:
            spent = [0.0]
            return fit([lambda: with_hook_timer(TrailCallback(**options), spent)], spent)

        return tracked
    if variant == "mlflow_autolog":
        import mlflow

        def autologged() -> tuple[float, ...]:
            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment("bench")
            mlflow.keras.autolog(silent=True)
            try:
                return fit([])
            finally:
                mlflow.keras.autolog(disable=True)

        return autologged
    if variant == "dvclive":
        from dvclive.keras import DVCLiveCallback

        runs = count()

        def live() -> tuple[float, ...]:
            folder = root / variant / f"run{next(runs)}"
            return fit([lambda: DVCLiveCallback(dir=str(folder), save_dvc_exp=False)])

        return live
    raise ValueError(variant)


def timed(run: Callable[[], tuple[float, ...]]) -> tuple[float, ...]:
    with contextlib.redirect_stdout(io.StringIO()):
        return run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, 3 repeats")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    rows = args.rows or (1_024 if args.quick else 4_096)
    repeats = args.repeats or (3 if args.quick else 5)

    common.quiet()
    x, y = make_data(rows)
    wanted = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(wanted) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    modules = {"mlflow_autolog": "mlflow.keras", "dvclive": "dvclive.keras"}
    modules |= {v: "mltrail.integrations.keras" for v in VARIANTS if v.startswith("mltrail")}
    skipped = {v: why for v in wanted if (why := common.unavailable(v, modules))}
    variants = [v for v in wanted if v not in skipped]
    if "none" not in variants:
        variants.insert(0, "none")
    with common.scratch("bench-keras-") as root:
        runs = {v: trainer(v, root, x, y, args.epochs) for v in variants}
        measured = common.interleaved(runs, repeats, timed)
    times = {v: [m[0] for m in ms] for v, ms in measured.items()}
    cpu = {v: [m[1] for m in ms] for v, ms in measured.items()}
    hooks = {v: [m[2] for m in ms] for v, ms in measured.items() if v.startswith("mltrail")}

    medians = {v: statistics.median(t) for v, t in times.items()}
    base = medians["none"]
    ratios = {v: round(m / base, 4) for v, m in medians.items()}
    # Each repeat runs every variant back to back: the median of per-repeat ratios follows slow
    # swings of the machine's load better than the ratio of medians.
    paired = {
        v: round(statistics.median(t / n for t, n in zip(ts, times["none"], strict=True)), 4)
        for v, ts in times.items()
    }
    cpu_medians = {v: statistics.median(t) for v, t in cpu.items()}
    cpu_ratios = {v: round(m / cpu_medians["none"], 4) for v, m in cpu_medians.items()}
    checks: dict[str, bool] = {}
    if "mltrail" in medians:
        checks["mltrail_within_3pct_of_none"] = ratios["mltrail"] <= 1.03
        for other in ("mlflow_autolog", "dvclive"):
            if other in medians:
                checks[f"mltrail_faster_than_{other}"] = medians["mltrail"] < medians[other]
    if "mltrail_batch" in medians:
        checks["mltrail_batch_within_10pct_of_none"] = ratios["mltrail_batch"] <= 1.10
    result = {
        "benchmark": "keras",
        "backend": keras.backend.backend(),
        "epochs": args.epochs,
        "rows": rows,
        "batch_size": BATCH_SIZE,
        "batches_per_epoch": -(-int(rows * 0.8) // BATCH_SIZE),
        "repeats": repeats,
        "seconds": {v: [round(t, 4) for t in ts] for v, ts in times.items()},
        "median_seconds": {v: round(m, 4) for v, m in medians.items()},
        "ratio_to_none": ratios,
        "paired_ratio_to_none": paired,
        # CPU time of the whole process (every thread): steadier than wall time on a shared
        # machine, and it counts the work mltrail moves to background threads.
        "cpu_seconds": {v: [round(t, 4) for t in ts] for v, ts in cpu.items()},
        "median_cpu_seconds": {v: round(m, 4) for v, m in cpu_medians.items()},
        "cpu_ratio_to_none": cpu_ratios,
        # Time the training thread spent inside TrailCallback's hooks, as a share of the
        # median training without a callback: the part of the overhead that is mltrail's own
        # work, whatever the noise of the machine.
        "mltrail_hook_seconds": {v: [round(t, 4) for t in ts] for v, ts in hooks.items()},
        "mltrail_hook_share_of_none": {
            v: round(statistics.median(ts) / base, 4) for v, ts in hooks.items()
        },
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "checks": checks,
        "skipped": skipped,
        "environment": common.environment(keras=keras.__version__),
    }
    return common.emit(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
