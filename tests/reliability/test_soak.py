"""Soak: 4 processes x 20 threads logging 10 metrics per step against one local ``mlflow server``.

Checks that no point is lost (every point counted in the server's database), that memory stays
flat, and prints the calling thread's latency (p50/p99/max of ``log_metrics``). The short form
runs in the test suite; the long one by hand:

    MLTRAIL_SOAK_SECONDS=60 pytest -s tests/reliability/test_soak.py
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from mltrail.cli import main as cli
from tests.reliability.conftest import python_env

pytestmark = [pytest.mark.slow, pytest.mark.server]

PROCESSES = 4
THREADS = 20
KEYS = 10
# Each thread logs a step of 10 metrics every 0.5 s (1,600 values/s in all): a rate a
# single-worker sqlite-backed server keeps up with on two busy cores, so a growing backlog would
# show as lost points or growing memory. MLTRAIL_SOAK_STEP_SECONDS=0.1 makes it 8,000 values/s.
STEP_SECONDS = float(os.environ.get("MLTRAIL_SOAK_STEP_SECONDS", "0.5"))
SECONDS = float(os.environ.get("MLTRAIL_SOAK_SECONDS", "15"))

WORKER = """
import json, sys, threading, time
import psutil
import mltrail

seconds, index, threads, keys, pause = float(sys.argv[1]), sys.argv[2], *map(int, sys.argv[3:5]), float(sys.argv[5])
trail = mltrail.start_run(experiment="soak", run_name=f"process-{index}", capture=False,
                          system_metrics=False, flush_timeout=60)
print("ready", flush=True)
sys.stdin.readline()  # every process starts logging at the same moment
latencies = [[] for _ in range(threads)]
steps = [0] * threads
done = time.monotonic() + seconds

def log(thread):
    names = [f"t{thread:02d}/m{k}" for k in range(keys)]
    step, spent = 0, latencies[thread]
    while time.monotonic() < done:
        values = {name: step + k / 10 for k, name in enumerate(names)}
        began = time.perf_counter()
        trail.log_metrics(values, step=step)
        spent.append(time.perf_counter() - began)
        step += 1
        time.sleep(pause)
    steps[thread] = step

memory = []
def sample():
    process = psutil.Process()
    while time.monotonic() < done:
        memory.append(process.memory_info().rss)
        time.sleep(0.5)

workers = [threading.Thread(target=log, args=(t,)) for t in range(threads)]
workers.append(threading.Thread(target=sample))
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
began = time.perf_counter()
trail.end()
print("result " + json.dumps({"run_id": trail.run_id, "steps": steps, "memory": memory,
                              "latencies": [x for spent in latencies for x in spent],
                              "end_seconds": time.perf_counter() - began}), flush=True)
"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def test_soak_loses_no_point_and_keeps_memory_flat(mlflow_server, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    spool = tmp_path / "spool"
    env = python_env(MLFLOW_TRACKING_URI=mlflow_server.uri, MLTRAIL_SPOOL_DIR=str(spool))
    arguments = [str(SECONDS), "", str(THREADS), str(KEYS), str(STEP_SECONDS)]
    processes = []
    for index in range(PROCESSES):
        arguments[1] = str(index)
        processes.append(
            subprocess.Popen(
                [sys.executable, str(script), *arguments],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    for process in processes:
        assert process.stdout.readline().strip() == "ready", process.stderr.read()[-3000:]
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=SECONDS + 240)
        assert process.returncode == 0, err[-3000:]
        [line] = [x for x in out.splitlines() if x.startswith("result ")]
        results.append(json.loads(line[len("result ") :]))

    # points a slow server left in the spool are uploaded by sync; then every one is there
    journaled = list(spool.glob("*/journal.jsonl"))
    if journaled:
        assert cli(["sync", "--spool-dir", str(spool), "--tracking-uri", mlflow_server.uri]) == 0
    with sqlite3.connect(mlflow_server.folder / "mlflow.db") as db:
        rows = db.execute(
            "SELECT run_uuid, key, COUNT(*), COUNT(DISTINCT step), MIN(step), MAX(step) "
            "FROM metrics GROUP BY run_uuid, key"
        ).fetchall()
    counted = {(run, key): (n, distinct, low, high) for run, key, n, distinct, low, high in rows}
    expected_points = 0
    for result in results:
        for thread, steps in enumerate(result["steps"]):
            assert steps > 0
            for k in range(KEYS):
                found = counted.get((result["run_id"], f"t{thread:02d}/m{k}"))
                assert found == (steps, steps, 0, steps - 1), (thread, k, found, steps)
                expected_points += steps

    # memory is flat: after the first quarter (imports, connection pools, warm-up) it does not
    # keep growing with the number of points logged
    growth = []
    for result in results:
        memory = result["memory"]
        settled = memory[len(memory) // 4 :]
        third = max(1, len(settled) // 3)
        growth.append(
            (statistics.median(settled[-third:]) - statistics.median(settled[:third])) / 2**20
        )
    latencies = [x for result in results for x in result["latencies"]]
    p50, p99, slowest = (percentile(latencies, q) for q in (0.5, 0.99, 1.0))
    end_seconds = max(r["end_seconds"] for r in results)
    print(
        f"\nsoak: {PROCESSES} processes x {THREADS} threads x {KEYS} metrics for {SECONDS:g} s: "
        f"{expected_points} points, all stored once{' (after sync)' if journaled else ''}; "
        f"log_metrics p50 {p50 * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us, max {slowest * 1e3:.1f} ms; "
        f"memory growth after warm-up {max(growth):.1f} MiB; slowest end() {end_seconds:.1f} s"
    )
    assert max(growth) < 32, growth
    assert p99 < 0.05, p99  # the calling thread only enqueues
    assert end_seconds < 60  # the flush budget
