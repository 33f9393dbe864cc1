"""Scale: one wide run, a store with many runs, and many threads logging to one server.

Three measurements, each repeated and interleaved where there are contenders:

- ``wide_run``: one run with ``--keys`` metric keys x ``--steps`` steps (1,000 x 1,000 = one
  million values) logged into a fresh sqlite store through mltrail and through MLflow's async
  logging (``mlflow.log_metrics(..., synchronous=False)``): the calling thread's time, the time
  until every value is in the store (logged + flushed + run ended), and the count of stored
  values (read back with sqlite, so nothing lost goes unnoticed).
- ``runs_by_commit``: an experiment of ``--runs`` runs (10,000) in sqlite, made as mltrail
  makes them (git commit, branch, dirty flag, fingerprint tags, params, metrics), spread over
  500 commits; the latency of ``mltrail runs --commit SHA`` as a user runs it (a fresh
  process: interpreter, imports, query, printing), of the same query in a warm process, and of
  the bare ``MlflowClient.search_runs`` with the same filter (the floor).
- ``concurrent``: ``--procs`` processes x ``--threads`` threads logging 10 metrics per step,
  one step every ``--interval`` seconds, for ``--seconds``, each process through one mltrail
  run, into a local ``mlflow server`` on 127.0.0.1 (sqlite backend): the calling thread's
  latency per ``log_metrics`` call (p50, p99, max) and the stored count against the logged one
  (``--smoke`` uses a sqlite store instead of the server).

Prints one JSON object. Usage:
    python benchmarks/bench_scale.py [--quick | --smoke] [--repeats N] [--parts a,b,c]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "1")
os.environ.setdefault("MLTRAIL_CAPTURE", "0")  # provenance is measured by bench_provenance
os.environ.setdefault("MLTRAIL_SYSTEM_METRICS", "0")
os.environ.setdefault("MLTRAIL_ALREADY_RUN", "ignore")
os.environ.setdefault("MLTRAIL_STRICT", "0")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import LocalServer, spread

PARTS = ("wide_run", "runs_by_commit", "concurrent")
SIZES = {  # (keys, steps, runs, procs, threads, seconds, repeats)
    "full": dict(keys=1000, steps=1000, runs=10_000, procs=4, threads=20, seconds=20, repeats=5),
    "quick": dict(keys=100, steps=100, runs=1_000, procs=2, threads=4, seconds=3, repeats=3),
    "smoke": dict(keys=10, steps=10, runs=100, procs=1, threads=2, seconds=1, repeats=1),
}


def stored_values(db: Path, run_id: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute("SELECT COUNT(*) FROM metrics WHERE run_uuid = ?", (run_id,)).fetchone()[
            0
        ]


def fresh_sqlite(folder: Path) -> tuple[str, Path]:
    import mlflow

    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    uri = f"sqlite:///{db}"
    mlflow.MlflowClient(uri).search_experiments()
    return uri, db


# --- one wide run ------------------------------------------------------------------------------


def wide_run(contender: str, folder: Path, keys: int, steps: int) -> dict[str, float]:
    """Log keys x steps values; returns calling-thread and end-to-end seconds, values stored."""
    import mlflow

    import mltrail

    uri, db = fresh_sqlite(folder)
    names = [f"layer_{k // 10:03d}/metric_{k % 10}" for k in range(keys)]
    rows = [dict.fromkeys(names, 0.0) for _ in range(2)]
    calling = 0.0
    began = time.perf_counter()
    if contender == "mltrail":
        # A flush budget long enough for a million values into sqlite: everything must land.
        trail = mltrail.start_run(experiment="wide", tracking_uri=uri, flush_timeout=3600)
        run_id = trail.run_id
        for step in range(steps):
            values = rows[step % 2]
            for name in names:
                values[name] = step * 0.001
            start = time.perf_counter()
            trail.log_metrics(values, step=step)
            calling += time.perf_counter() - start
        trail.end()
    else:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("wide")
        with mlflow.start_run() as run:
            run_id = run.info.run_id
            for step in range(steps):
                values = rows[step % 2]
                for name in names:
                    values[name] = step * 0.001
                start = time.perf_counter()
                mlflow.log_metrics(values, step=step, synchronous=False)
                calling += time.perf_counter() - start
            mlflow.flush_async_logging()
    total = time.perf_counter() - began
    return {"calling_s": calling, "end_to_end_s": total, "stored": stored_values(db, run_id)}


def measure_wide(folder: Path, keys: int, steps: int, repeats: int) -> dict[str, Any]:
    contenders = ("mltrail", "mlflow_async")
    found: dict[str, dict[str, list[float]]] = {
        c: {"calling_s": [], "end_to_end_s": [], "stored": []} for c in contenders
    }
    for repeat in range(repeats):
        order = contenders if repeat % 2 == 0 else contenders[::-1]
        for contender in order:
            result = wide_run(contender, folder / f"{contender}-{repeat}", keys, steps)
            for key, value in result.items():
                found[contender][key].append(value)
            print(f"wide_run {contender}: {result}", file=sys.stderr)
    expected = keys * steps
    mltrail_e2e = statistics.median(found["mltrail"]["end_to_end_s"])
    mlflow_e2e = statistics.median(found["mlflow_async"]["end_to_end_s"])
    return {
        "keys": keys,
        "steps": steps,
        "values": expected,
        "repeats": repeats,
        "calling_s": {c: spread(v["calling_s"]) for c, v in found.items()},
        "end_to_end_s": {c: spread(v["end_to_end_s"]) for c, v in found.items()},
        "values_per_s": {
            c: round(expected / statistics.median(v["end_to_end_s"])) for c, v in found.items()
        },
        "all_values_stored": {c: all(n == expected for n in v["stored"]) for c, v in found.items()},
        "stored_min": {c: min(v["stored"]) for c, v in found.items()},
        "ratio_end_to_end_mltrail_to_mlflow_async": round(mltrail_e2e / mlflow_e2e, 4),
        "ratio_calling_mltrail_to_mlflow_async": round(
            statistics.median(found["mltrail"]["calling_s"])
            / statistics.median(found["mlflow_async"]["calling_s"]),
            4,
        ),
    }


# --- many runs: mltrail runs --commit ---------------------------------------------------------


def build_store(folder: Path, runs: int, commits: int) -> tuple[str, list[str]]:
    """A sqlite store with ``runs`` runs spread over ``commits`` commits; returns (uri, shas).

    A few runs are made through MlflowClient as mltrail records them; the rest are copies of
    their rows with new ids, names, times and commits (creating 10,000 runs one request at a
    time would take many minutes of the benchmark without measuring anything).
    """
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    uri, db = fresh_sqlite(folder)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("many-runs")
    shas = [uuid.UUID(int=i + 1).hex + f"{i:08x}" for i in range(commits)]
    now = int(time.time() * 1000)
    templates = []
    for i in range(4):
        run = client.create_run(experiment, run_name=f"template-{i}")
        run_id = run.info.run_id
        tags = {
            "mlflow.source.git.commit": shas[0],
            "mlflow.source.git.branch": "main",
            "mlflow.source.git.repoURL": "https://example.com/team/project.git",
            "mlflow.source.name": "train.py",
            "mltrail.git.dirty": "false",
            "mltrail.dvc.data_dirty": "false",
            "mltrail.fingerprint": uuid.uuid4().hex[:16],
        }
        client.log_batch(
            run_id,
            metrics=[
                Metric(k, 0.1 * (i + 1), now, s)
                for k in ("loss", "val_loss", "acc")
                for s in (0, 1)
            ],
            params=[Param(k, str(v)) for k, v in {"lr": 0.01 * (i + 1), "epochs": 20}.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        client.set_terminated(run_id, "FINISHED")
        templates.append(run_id)
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        tables = {
            name: [row[1] for row in con.execute(f"PRAGMA table_info('{name}')")]
            for name in ("runs", "tags", "params", "metrics", "latest_metrics")
        }
        rows = {
            (table, template): con.execute(
                f"SELECT {', '.join(columns)} FROM {table} WHERE run_uuid = ?", (template,)
            ).fetchall()
            for table, columns in tables.items()
            for template in templates
        }
        batches: dict[str, list[tuple[Any, ...]]] = {table: [] for table in tables}
        for n in range(runs - len(templates)):
            template = templates[n % len(templates)]
            new_id = uuid.uuid4().hex
            sha = shas[n % commits]
            for table, columns in tables.items():
                for row in rows[(table, template)]:
                    values = dict(zip(columns, row, strict=True))
                    values["run_uuid"] = new_id
                    if table == "runs":
                        values["name"] = f"run-{n}"
                        values["start_time"] = now - n * 1000
                        values["end_time"] = now - n * 1000 + 500
                        values["artifact_uri"] = str(values["artifact_uri"]).replace(
                            template, new_id
                        )
                    elif table == "tags" and values["key"] == "mlflow.source.git.commit":
                        values["value"] = sha
                    elif table == "tags" and values["key"] == "mlflow.runName":
                        values["value"] = f"run-{n}"
                    batches[table].append(tuple(values[c] for c in columns))
        for table, columns in tables.items():
            marks = ", ".join("?" for _ in columns)
            con.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", batches[table]
            )
    return uri, shas


def cli_command() -> list[str]:
    script = Path(sys.executable).parent / "mltrail"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from mltrail.cli import main; sys.exit(main())"]


def measure_runs_by_commit(folder: Path, runs: int, repeats: int) -> dict[str, Any]:
    import mlflow

    from mltrail.cli import build_parser
    from mltrail.cli.runs import runs_command

    commits = max(1, runs // 20)
    began = time.perf_counter()
    uri, shas = build_store(folder / "many", runs, commits)
    build_s = time.perf_counter() - began
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("many-runs").experiment_id
    total = len(client.search_runs([experiment], max_results=50_000))
    sha = shas[commits // 2]
    expected = len(range(commits // 2, runs - 4, commits))
    argv = ["runs", "--commit", sha, "--tracking-uri", uri, "--json"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    found: dict[str, list[float]] = {
        "cli_cold": [],
        "cli_cold_via_mlflow": [],
        "mlflow_cold": [],
        "in_process": [],
        "search_runs": [],
    }
    counts: dict[str, int] = {}

    def cold(name: str = "cli_cold", extra_env: dict[str, str] | None = None) -> None:
        start = time.perf_counter()
        done = subprocess.run(
            [*cli_command(), *argv],
            cwd=folder,
            env={**env, **(extra_env or {})},
            capture_output=True,
            text=True,
        )
        found[name].append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"mltrail runs failed: {done.stderr[-2000:]}")
        counts[name] = len(json.loads(done.stdout)["runs"])

    def cold_via_mlflow() -> None:
        """The same command made to go through MLflow's client instead of reading sqlite."""
        cold("cli_cold_via_mlflow", {"MLTRAIL_SQLITE_FAST_READS": "0"})

    def mlflow_cold() -> None:
        """The same search in a fresh interpreter with MLflow alone: MLflow's own floor."""
        code = (
            "import sys, mlflow\n"
            "client = mlflow.MlflowClient(sys.argv[1])\n"
            "ids = [e.experiment_id for e in client.search_experiments()]\n"
            "hits = client.search_runs(ids, sys.argv[2], max_results=1000)\n"
            "print(len(hits))\n"
        )
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code, uri, f"tags.`mlflow.source.git.commit` = '{sha}'"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
        )
        found["mlflow_cold"].append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"the MLflow search failed: {done.stderr[-2000:]}")
        counts["mlflow_cold"] = int(done.stdout.split()[-1])

    def warm() -> None:
        args = build_parser().parse_args(argv)
        output = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(output):
            runs_command(args)
        found["in_process"].append(time.perf_counter() - start)
        counts["in_process"] = len(json.loads(output.getvalue())["runs"])

    def floor() -> None:
        start = time.perf_counter()
        hits = client.search_runs(
            [experiment], f"tags.`mlflow.source.git.commit` = '{sha}'", max_results=1000
        )
        found["search_runs"].append(time.perf_counter() - start)
        counts["search_runs"] = len(hits)

    warm()  # untimed warm-up of the store and imports
    found["in_process"].clear()
    steps = [cold, cold_via_mlflow, mlflow_cold, warm, floor]
    for repeat in range(repeats):
        shift = repeat % len(steps)
        for step in steps[shift:] + steps[:shift]:
            step()
    cold_median = statistics.median(found["cli_cold"])
    return {
        "runs_in_experiment": total,
        "commits": commits,
        "runs_at_commit": expected,
        "runs_found": counts,
        "build_store_s": round(build_s, 2),
        "repeats": repeats,
        "seconds": {k: spread(v) for k, v in found.items()},
        "cli_cold_under_1s": cold_median < 1.0,
        "in_process_under_1s": statistics.median(found["in_process"]) < 1.0,
    }


# --- many threads: calling-thread latency --------------------------------------------------------

WORKER = r"""
import json, os, sys, threading, time
import mltrail
uri, proc, threads, seconds, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
trail = mltrail.start_run(experiment="concurrent", run_name=f"proc-{proc}", tracking_uri=uri, flush_timeout=600)
latencies, logged = [], [0] * threads
ready = threading.Barrier(threads + 1)
def work(t):
    names = [f"thread_{t:02d}/metric_{k}" for k in range(10)]
    mine = []
    ready.wait()
    stop = time.perf_counter() + seconds
    step = 0
    while time.perf_counter() < stop:
        values = {name: step * 0.5 for name in names}
        start = time.perf_counter()
        trail.log_metrics(values, step=step)
        mine.append(time.perf_counter() - start)
        step += 1
        time.sleep(interval)
    logged[t] = step * 10
    latencies.extend(mine)
workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
for w in workers: w.start()
ready.wait()
for w in workers: w.join()
ended = time.perf_counter()
trail.end()
print(json.dumps({"run_id": trail.run_id, "logged": sum(logged), "latencies": latencies,
                  "end_s": time.perf_counter() - ended}))
"""


def measure_concurrent(
    folder: Path, procs: int, threads: int, seconds: float, interval: float, server: bool
) -> dict[str, Any]:
    if server:
        local = LocalServer(folder / "server")
        local.start()
        uri, db = local.uri, local.db
    else:  # --smoke: a server takes long to start on a busy machine
        uri, db = fresh_sqlite(folder)
    try:
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER,
                    uri,
                    *map(str, (p, threads, seconds, interval)),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for p in range(procs)
        ]
        reports = []
        for worker in workers:
            out, err = worker.communicate(timeout=seconds + 900)
            if worker.returncode != 0:
                raise RuntimeError(f"worker failed: {err[-2000:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        stored = sum(stored_values(db, r["run_id"]) for r in reports)
    finally:
        if server:
            local.stop()
    latencies = sorted(x for r in reports for x in r["latencies"])

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6, 1)

    logged = sum(r["logged"] for r in reports)
    return {
        "store": "local server" if server else "sqlite",
        "processes": procs,
        "threads_per_process": threads,
        "metrics_per_step": 10,
        "step_interval_s": interval,
        "seconds": seconds,
        "calls": len(latencies),
        "values_logged": logged,
        "values_stored": stored,
        "no_lost_values": stored == logged,
        "calling_thread_latency_us": {
            "p50": pct(0.50),
            "p99": pct(0.99),
            "max": round(latencies[-1] * 1e6, 1),
        },
        "end_flush_s": spread([r["end_s"] for r in reports]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, seconds")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes: does every part run")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--keys", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--procs", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between steps")
    args = parser.parse_args(argv)
    size = dict(SIZES["smoke" if args.smoke else "quick" if args.quick else "full"])
    size.update({k: v for k, v in vars(args).items() if k in size and v is not None})
    parts = [p for p in args.parts.split(",") if p]
    if set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(set(parts) - set(PARTS))}; choose from {PARTS}")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)

    result: dict[str, Any] = {"benchmark": "scale", "sizes": size}
    with tempfile.TemporaryDirectory(prefix="mltrail-bench-scale-") as tmp:
        folder = Path(tmp)
        os.environ["MLTRAIL_SPOOL_DIR"] = str(folder / "spool")
        cwd = os.getcwd()
        os.chdir(folder)  # MLflow writes relative artifact folders
        try:
            if "wide_run" in parts:
                result["wide_run"] = measure_wide(
                    folder / "wide", size["keys"], size["steps"], size["repeats"]
                )
            if "runs_by_commit" in parts:
                result["runs_by_commit"] = measure_runs_by_commit(
                    folder, size["runs"], size["repeats"]
                )
            if "concurrent" in parts:
                result["concurrent"] = measure_concurrent(
                    folder / "concurrent",
                    size["procs"],
                    size["threads"],
                    size["seconds"],
                    args.interval,
                    server=not args.smoke,
                )
        finally:
            os.chdir(cwd)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
