"""Raw logging: mltrail's writer against the JSON-line floor and MLflow's own logging.

Measured side by side in one process, interleaved, as ratios:
- calling-thread cost of logging 10 values (mltrail, JSON line + flush, mlflow.log_metrics);
- 100,000 values logged and flushed into sqlite (mltrail, MLflow async logging);
- memory held by 1,000,000 values logged while the store is stalled.

Usage: python benchmarks/bench_core.py [--quick | --smoke] [--repeats N] [--tracking-uri URI]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("MLTRAIL_SYSTEM_METRICS", "0")
os.environ.setdefault("MLTRAIL_CAPTURE", "0")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "1")

import mlflow
import psutil

import mltrail

VALUES = {f"metric_{i}": 0.1 * i for i in range(10)}


def fresh_store(folder: Path) -> str:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.MlflowClient(uri).search_experiments()
    return uri


def per_call(func, calls: int) -> float:
    """Seconds per call of func(i), measured over ``calls`` calls."""
    gc.disable()
    try:
        start = time.perf_counter()
        for i in range(calls):
            func(i)
        return (time.perf_counter() - start) / calls
    finally:
        gc.enable()


def calling_thread_costs(uri: str, folder: Path, calls: int) -> dict[str, float]:
    trail = mltrail.start_run(experiment="bench-core", tracking_uri=uri)
    mltrail_cost = per_call(lambda i: trail.log_metrics(VALUES, step=i), calls)
    trail.end()

    with open(folder / "floor.jsonl", "a") as handle:

        def floor(i: int) -> None:
            handle.write(json.dumps({"step": i, **VALUES}) + "\n")
            handle.flush()

        floor_cost = per_call(floor, calls)

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench-core")
    with mlflow.start_run():
        sync_calls = max(20, calls // 200)
        mlflow_cost = per_call(lambda i: mlflow.log_metrics(VALUES, step=i), sync_calls)
    return {"mltrail": mltrail_cost, "floor": floor_cost, "mlflow_sync": mlflow_cost}


def end_to_end(uri: str, total_values: int) -> dict[str, float]:
    calls = total_values // len(VALUES)
    start = time.perf_counter()
    trail = mltrail.start_run(experiment="bench-e2e", tracking_uri=uri)
    for i in range(calls):
        trail.log_metrics(VALUES, step=i)
    trail.end()
    mltrail_seconds = time.perf_counter() - start

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench-e2e")
    start = time.perf_counter()
    with mlflow.start_run():
        for i in range(calls):
            mlflow.log_metrics(VALUES, step=i, synchronous=False)
        mlflow.flush_async_logging()
    mlflow_seconds = time.perf_counter() - start
    return {"mltrail": mltrail_seconds, "mlflow_async": mlflow_seconds}


class StalledClient:
    """Stands for a store that accepts requests and never answers."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __getattr__(self, name: str):
        def stall(*args, **kwargs):
            self.release.wait()

        return stall


def stalled_memory(uri: str, folder: Path, total_values: int) -> dict[str, float]:
    trail = mltrail.start_run(experiment="bench-stall", tracking_uri=uri, spool_dir=folder / "sp")
    stalled = StalledClient()
    trail._writer.client = stalled  # every request now hangs, as on a stalled server
    gc.collect()
    before = psutil.Process().memory_info().rss
    for i in range(total_values // len(VALUES)):
        trail.log_metrics(VALUES, step=i)
    gc.collect()
    grown = psutil.Process().memory_info().rss - before
    stalled.release.set()
    trail._writer.client = trail.client
    trail.end()
    return {"values": total_values, "rss_growth_mb": grown / 1e6}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="seconds, for a smoke check")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: does it run at all")
    parser.add_argument("--repeats", type=int, help="rounds (default 5; 1 with --quick)")
    parser.add_argument("--tracking-uri", help="a store to use instead of a fresh sqlite one")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick or args.smoke else 5)
    calls = 200 if args.smoke else 2_000 if args.quick else 20_000
    e2e_values = 1_000 if args.smoke else 10_000 if args.quick else 100_000
    stall_values = 5_000 if args.smoke else 50_000 if args.quick else 1_000_000

    costs: dict[str, list[float]] = {"mltrail": [], "floor": [], "mlflow_sync": []}
    e2e: dict[str, list[float]] = {"mltrail": [], "mlflow_async": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        uri = args.tracking_uri or fresh_store(folder)
        for _ in range(repeats):  # interleaved: noise hits every contender alike
            for key, value in calling_thread_costs(uri, folder, calls).items():
                costs[key].append(value)
            for key, value in end_to_end(uri, e2e_values).items():
                e2e[key].append(value)
        memory = stalled_memory(uri, folder, stall_values)

    def med(values: list[float]) -> float:
        return statistics.median(values)

    result = {
        "calling_thread_us_per_10_values": {
            k: {"median": med(v) * 1e6, "min": min(v) * 1e6, "max": max(v) * 1e6}
            for k, v in costs.items()
        },
        "ratio_mltrail_to_floor": med(costs["mltrail"]) / med(costs["floor"]),
        "ratio_mlflow_sync_to_mltrail": med(costs["mlflow_sync"]) / med(costs["mltrail"]),
        "end_to_end_seconds": {
            k: {"median": med(v), "min": min(v), "max": max(v)} for k, v in e2e.items()
        },
        "end_to_end_values": e2e_values,
        "ratio_mltrail_to_mlflow_async": med(e2e["mltrail"]) / med(e2e["mlflow_async"]),
        "stalled_store_memory": memory,
        "repeats": repeats,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
