"""Overhead of mltrail's Lightning callback against no logging and MLflow's own integrations.

Trains a small MLP on random data with each configuration, interleaved and repeated, and prints
JSON with the median wall time of ``trainer.fit`` (everything the user waits for: run start,
training, final flush), of the training loop alone (``on_train_start`` to ``on_train_end``: the
per-epoch hot path) and the process CPU time of the fit (all threads, so background sending
counts; far less sensitive than wall time to other load on the machine), each with its ratio
to the run without logging.

Configurations:
    none            no logging, no checkpoints
    trail_epoch     TrailCallback, epoch-level metrics (no model, no checkpoints)
    trail_step      TrailCallback, plus step-level metrics at every optimizer step
    trail_full      TrailCallback with its defaults (final model and last checkpoint logged)
    mlflow_logger   Lightning's MLFlowLogger (metrics every 50 steps, params)
    mlflow_autolog  mlflow.pytorch.autolog() with its defaults (model and checkpoints logged)
    dvclive         DVCLive's DVCLiveLogger (metrics, params), when dvclive is installed

Usage: python benchmarks/bench_lightning.py [--quick] [--repeats N] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import mlflow
import mlflow.pytorch
import torch
from torch.utils.data import DataLoader, TensorDataset

from mltrail.integrations.lightning import TrailCallback

VARIANTS = (
    "none",
    "trail_epoch",
    "trail_step",
    "trail_full",
    "mlflow_logger",
    "mlflow_autolog",
    "dvclive",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 epochs, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per configuration")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (less noise)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    epochs = args.epochs or (5 if args.quick else 20)
    repeats = args.repeats or (2 if args.quick else 5)
    variants = [v for v in args.variants.split(",") if v]
    try:
        import dvclive.lightning  # noqa: F401
    except ImportError:  # an optional contender
        variants = [v for v in variants if v != "dvclive"]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")

    folder = Path(tempfile.mkdtemp(prefix="mltrail-bench-lightning-"))
    os.chdir(folder)  # MLflow and Lightning write relative paths; keep them out of the repo
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ.setdefault("MLTRAIL_SPOOL_DIR", str(folder / "spool"))
    warnings.filterwarnings("ignore")
    for name in (
        "lightning",
        "lightning.pytorch",
        "pytorch_lightning",
        "mlflow",
        "mltrail",
        "alembic",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)

    bench = Bench(epochs=epochs, rows=args.rows, threads=args.threads, folder=folder)
    for variant in variants:  # warm-up: imports, store creation, first-time costs
        bench.run(variant, epochs=1)
    results: dict[str, dict[str, list[float]]] = {
        v: {"fit": [], "loop": [], "cpu": []} for v in variants
    }
    order = list(variants)
    shuffler = random.Random(0)
    for _ in range(repeats):
        shuffler.shuffle(order)  # interleaved, in a new order each round
        for variant in order:
            fit, loop, cpu = bench.run(variant, epochs=epochs)
            results[variant]["fit"].append(fit)
            results[variant]["loop"].append(loop)
            results[variant]["cpu"].append(cpu)
            print(
                f"{variant:15s} fit {fit:7.3f}s  loop {loop:7.3f}s  cpu {cpu:7.3f}s",
                file=sys.stderr,
            )

    report = summarise(results, epochs=epochs, repeats=repeats, bench=bench)
    print(json.dumps(report, indent=2))
    return 0


def summarise(results: dict[str, Any], *, epochs: int, repeats: int, bench: Bench) -> dict:
    medians = {
        v: {k: statistics.median(times) for k, times in r.items()} for v, r in results.items()
    }
    base = medians.get("none")
    variants = {}
    for variant, median in medians.items():
        entry: dict[str, Any] = {
            "fit_median_s": round(median["fit"], 4),
            "fit_min_s": round(min(results[variant]["fit"]), 4),
            "loop_median_s": round(median["loop"], 4),
            "loop_min_s": round(min(results[variant]["loop"]), 4),
            "cpu_median_s": round(median["cpu"], 4),
            "fit_runs_s": [round(t, 4) for t in results[variant]["fit"]],
        }
        if base:
            entry["fit_ratio"] = round(median["fit"] / base["fit"], 4)
            entry["loop_ratio"] = round(median["loop"] / base["loop"], 4)
            entry["cpu_ratio"] = round(median["cpu"] / base["cpu"], 4)
        variants[variant] = entry
    checks = {}
    if base:

        def ratio(v: str, key: str) -> float | None:
            return variants[v][key] if v in variants else None

        checks = {
            "trail_epoch_loop_within_3pct": _le(ratio("trail_epoch", "loop_ratio"), 1.03),
            "trail_step_loop_within_10pct": _le(ratio("trail_step", "loop_ratio"), 1.10),
            "trail_epoch_fit_within_3pct": _le(ratio("trail_epoch", "fit_ratio"), 1.03),
            "trail_step_fit_within_10pct": _le(ratio("trail_step", "fit_ratio"), 1.10),
            "trail_epoch_cpu_within_3pct": _le(ratio("trail_epoch", "cpu_ratio"), 1.03),
            "trail_step_cpu_within_10pct": _le(ratio("trail_step", "cpu_ratio"), 1.10),
            "trail_epoch_faster_than_mlflow_logger": _lt(
                medians, "trail_epoch", "mlflow_logger", "fit"
            ),
            "trail_full_faster_than_mlflow_autolog": _lt(
                medians, "trail_full", "mlflow_autolog", "fit"
            ),
        }
    return {
        "benchmark": "lightning",
        "epochs": epochs,
        "repeats": repeats,
        "rows": bench.rows,
        "steps_per_epoch": bench.steps_per_epoch,
        "torch_threads": bench.threads,
        "variants": variants,
        "checks": checks,
    }


def _le(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _lt(medians: dict, a: str, b: str, key: str) -> bool | None:
    if a not in medians or b not in medians:
        return None
    return medians[a][key] < medians[b][key]


class Bench:
    def __init__(self, *, epochs: int, rows: int, threads: int, folder: Path) -> None:
        torch.set_num_threads(threads)
        self.epochs, self.rows, self.threads, self.folder = epochs, rows, threads, folder
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(rows, 32, generator=generator)
        y = x[:, :4].sum(dim=1, keepdim=True) + 0.1 * torch.randn(rows, 1, generator=generator)
        self.train = DataLoader(TensorDataset(x, y), batch_size=256, shuffle=True)
        self.val = DataLoader(TensorDataset(x[:2048], y[:2048]), batch_size=512)
        self.steps_per_epoch = len(self.train)
        self.count = 0

    def run(self, variant: str, epochs: int) -> tuple[float, float, float]:
        """One fit; returns (fit wall time, training-loop wall time, fit CPU time)."""
        self.count += 1
        timer = LoopTimer()
        callbacks: list[Any] = [timer]
        logger: Any = False
        checkpointing = False
        if variant.startswith("trail"):
            if variant == "trail_full":
                callback = TrailCallback(experiment="bench-lightning", run_name=variant)
            else:
                callback = TrailCallback(
                    experiment="bench-lightning",
                    run_name=variant,
                    log_every_n_steps=1 if variant == "trail_step" else None,
                    log_model=False,
                    checkpoints="none",
                )
            callbacks.append(callback)
        elif variant == "mlflow_logger":
            from lightning.pytorch.loggers import MLFlowLogger

            logger = MLFlowLogger(
                experiment_name="bench-lightning",
                run_name=variant,
                tracking_uri=os.environ["MLFLOW_TRACKING_URI"],
            )
        elif variant == "dvclive":
            from dvclive.lightning import DVCLiveLogger

            logger = DVCLiveLogger(
                dir=str(self.folder / f"dvclive{self.count}"), save_dvc_exp=False
            )
        elif variant == "mlflow_autolog":
            mlflow.set_experiment("bench-lightning")
            mlflow.pytorch.autolog(silent=True)  # brings its own checkpoint callback
        trainer = L.Trainer(
            max_epochs=epochs,
            logger=logger,
            callbacks=callbacks,
            enable_checkpointing=checkpointing,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            accelerator="cpu",
            devices=1,
            default_root_dir=str(self.folder / f"run{self.count}"),
        )
        model = Mlp()
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            trainer.fit(model, self.train, self.val)
        finally:
            fit = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            if variant == "mlflow_autolog":
                mlflow.pytorch.autolog(disable=True)
                while mlflow.active_run():
                    mlflow.end_run()
        return fit, timer.elapsed, cpu


class LoopTimer(L.Callback):
    """Wall time from on_train_start to on_train_end: the training loop alone."""

    def __init__(self) -> None:
        self.started = 0.0
        self.elapsed = 0.0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.started = time.perf_counter()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.elapsed = time.perf_counter() - self.started


class Mlp(L.LightningModule):
    def __init__(self, hidden: int = 256, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(32, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, 1),
        )

    def forward(self, x: Any) -> Any:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


if __name__ == "__main__":
    sys.exit(main())
