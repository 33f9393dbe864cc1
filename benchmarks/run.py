"""One command for every benchmark: ``make bench`` (``QUICK=1`` for a quick pass).

Runs each case script of this folder in its own interpreter (each one repeats its contenders
interleaved and prints JSON), measures ``import mltrail``, and writes

- ``benchmarks/results.json``: the environment (machine, CPU count, load, package versions,
  date), every case's raw output, and the summary rows;
- the results table in ``benchmarks/README.md``, between its ``results`` markers: for each
  target of the benchmark issue, mltrail's figure, the contender's, their ratio measured in the
  same run, and whether the target is met.

``--quick`` and ``--smoke`` (tiny sizes, for the test suite) print the table and write nothing
in the repository unless ``--output``/``--readme`` say where. ``--cases`` runs a subset;
with ``--merge`` the other cases are kept from the existing results file; ``--render`` only
rebuilds the summary and the table from the results file.

Also the shared helpers of the case scripts: :func:`spread` and :class:`LocalServer`.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
README = HERE / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
PACKAGES = (
    "mltrail",
    "mlflow",
    "lightning",
    "torch",
    "keras",
    "xgboost",
    "lightgbm",
    "optuna",
    "transformers",
    "scikit-learn",
    "dvc",
    "dvclive",
    "numpy",
    "pandas",
    "SQLAlchemy",
)


# --- helpers shared by the case scripts ---------------------------------------------------------


def spread(values: list[float], digits: int = 6) -> dict[str, Any]:
    """Median, min, max and every value of repeated measurements."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": [round(v, digits) for v in values],
    }


class LocalServer:
    """``mlflow server`` on 127.0.0.1 with a sqlite backend and proxied artifact storage."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.db = folder / "mlflow.db"
        self.artifacts = folder / "artifacts"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> None:
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.db}",
            "--artifacts-destination", str(self.artifacts),
            "--workers", "1",
        ]  # fmt: skip
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - the server keeps it
        self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.folder / "server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("mlflow server did not start in time")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=10)
        self.process = None


# --- cases ---------------------------------------------------------------------------------------

# case -> (script, arguments in full, quick and smoke mode). Full mode is the sizes.
CASES: dict[str, tuple[str, dict[str, list[str]]]] = {
    "core": ("bench_core.py", {"full": [], "quick": ["--quick"], "smoke": ["--smoke"]}),
    "core_server": ("bench_core.py", {"full": [], "quick": ["--quick"], "smoke": ["--smoke"]}),
    "provenance": (
        "bench_provenance.py",
        {"full": [], "quick": ["--quick"], "smoke": ["--smoke"]},
    ),
    "lightning": (
        "bench_lightning.py",
        {
            "full": [],
            "quick": ["--quick"],
            "smoke": [
                "--epochs",
                "1",
                "--rows",
                "512",
                "--repeats",
                "1",
                "--variants",
                "none,trail_epoch,mlflow_logger",
            ],
        },
    ),
    "keras": (
        "bench_keras.py",
        {
            "full": [],
            "quick": ["--quick"],
            "smoke": [
                "--epochs",
                "1",
                "--rows",
                "128",
                "--repeats",
                "1",
                "--variants",
                "none,mltrail_metrics_only,mltrail",
            ],
        },
    ),
    "xgboost": (
        "bench_xgboost.py",
        {
            "full": [],
            "quick": ["--quick"],
            "smoke": ["--smoke"],
        },
    ),
    "lightgbm": (
        "bench_lightgbm.py",
        {"full": [], "quick": ["--quick"], "smoke": ["--smoke"]},
    ),
    "optuna": ("bench_optuna.py", {"full": [], "quick": ["--quick"], "smoke": ["--smoke"]}),
    "transformers": (
        "bench_transformers.py",
        {"full": [], "quick": ["--quick"], "smoke": ["--smoke"]},
    ),
    "sklearn": (
        "bench_sklearn.py",
        {"full": [], "quick": ["--quick"], "smoke": ["--smoke"]},
    ),
    "checkpoints": (
        "bench_checkpoints.py",
        {"full": [], "quick": ["--quick"], "smoke": ["--smoke"]},
    ),
    "scale": ("bench_scale.py", {"full": [], "quick": ["--quick"], "smoke": ["--smoke"]}),
    "cli": ("bench_cli.py", {"full": [], "quick": ["--quick"], "smoke": ["--smoke"]}),
    "scripts": (
        "bench_scripts.py",
        {
            "full": [],
            "quick": ["--quick"],
            "smoke": [
                "--smoke",
                "--workloads",
                "continued,sklearn",
                "--variants",
                "plain,explicit",
            ],
        },
    ),
}
ALL_CASES = ("import", *CASES)


def parse_json(stdout: str) -> dict[str, Any]:
    """The JSON object a case script printed last (scripts may print lines before it)."""
    lines = stdout.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("{"):
            try:
                return json.loads("\n".join(lines[index:]))
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON object in the output")


def run_case(name: str, mode: str, timeout: float, args: list[str] | None = None) -> dict[str, Any]:
    script, modes = CASES[name]
    args = list(modes[mode] if args is None else args)
    server = None
    if name == "core_server":
        server = LocalServer(Path(tempfile.mkdtemp(prefix="mltrail-bench-server-")))
        server.start()
        args += ["--tracking-uri", server.uri]
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "torch")}
    env.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "1")
    began = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(HERE / script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=tempfile.gettempdir(),
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s", "args": args}
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(server.folder, ignore_errors=True)
    seconds = round(time.perf_counter() - began, 1)
    record: dict[str, Any] = {"args": args, "seconds": seconds, "returncode": done.returncode}
    try:
        record["result"] = parse_json(done.stdout)
        record["ok"] = done.returncode == 0
    except ValueError:
        record["ok"] = False
    if not record["ok"]:
        record["error"] = (done.stderr or done.stdout)[-3000:]
    return record


def measure_imports(repeats: int) -> dict[str, Any]:
    """Wall time of a fresh interpreter importing each module, interleaved, minus a bare one."""
    statements = {
        "python": "pass",
        "mltrail": "import mltrail",
        "mlflow": "import mlflow",
    }
    times: dict[str, list[float]] = {k: [] for k in statements}
    began = time.perf_counter()
    for repeat in range(repeats + 1):
        keys = list(statements)
        shift = repeat % len(keys)
        for key in keys[shift:] + keys[:shift]:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", statements[key]], check=True)
            if repeat:  # the first round warms the file cache
                times[key].append(time.perf_counter() - start)
    bare = statistics.median(times["python"])
    return {
        "ok": True,
        "seconds": round(time.perf_counter() - began, 1),
        "result": {
            "repeats": repeats,
            "interpreter_s": {k: spread(v, 4) for k, v in times.items()},
            "import_s": {
                k: round(statistics.median(v) - bare, 4) for k, v in times.items() if k != "python"
            },
        },
    }


# --- summary -------------------------------------------------------------------------------------

Row = dict[str, Any]


def _row(
    case: str,
    measure: str,
    mltrail: str,
    other: str = "",
    ratio: float | None = None,
    target: str = "",
    met: bool | None = None,
) -> Row:
    return {
        "case": case,
        "measure": measure,
        "mltrail": mltrail,
        "other": other,
        "ratio": None if ratio is None else round(ratio, 4),
        "target": target,
        "met": met,
    }


def _n(value: float) -> str:
    """Three significant digits, without exponents."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) >= 0.001 else f"{value:.1e}"


def _t(value: Any, unit: str = "s", scale: float = 1.0) -> str:
    """'median (min–max) unit' of a spread, or a plain number."""
    if isinstance(value, dict):
        med, low, high = (value[k] * scale for k in ("median", "min", "max"))
        return f"{_n(med)} ({_n(low)}–{_n(high)}) {unit}"
    return f"{_n(value * scale)} {unit}"


def _spread_of(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise_core(r: dict[str, Any], case: str) -> list[Row]:
    store = "local server" if case == "core_server" else "sqlite"
    cost = r["calling_thread_us_per_10_values"]
    e2e = r["end_to_end_seconds"]
    ratio_floor = r["ratio_mltrail_to_floor"]
    ratio_sync = r["ratio_mlflow_sync_to_mltrail"]
    ratio_e2e = r["ratio_mltrail_to_mlflow_async"]
    rows = [
        _row(
            case,
            f"calling-thread cost per 10 values ({store}) vs JSON-line floor",
            _t(cost["mltrail"], "µs"),
            "floor " + _t(cost["floor"], "µs"),
            ratio_floor,
            "≤ 3x the floor",
            ratio_floor <= 3,
        ),
        _row(
            case,
            f"calling-thread cost per 10 values ({store}) vs mlflow.log_metrics",
            _t(cost["mltrail"], "µs"),
            "mlflow sync " + _t(cost["mlflow_sync"], "µs"),
            1 / ratio_sync,
            "≥ 100x below (ratio ≤ 0.01)",
            ratio_sync >= 100,
        ),
        _row(
            case,
            f"{r['end_to_end_values']:,} values logged + flushed ({store})",
            _t(e2e["mltrail"]),
            "MLflow async " + _t(e2e["mlflow_async"]),
            ratio_e2e,
            "faster than MLflow async (ratio < 1)",
            ratio_e2e < 1,
        ),
    ]
    memory = r.get("stalled_store_memory")
    if memory:
        rows.append(
            _row(
                case,
                f"memory growth, {memory['values']:,} values logged to a stalled store",
                f"{memory['rss_growth_mb']:.1f} MB",
            )
        )
    return rows


def summarise_provenance(r: dict[str, Any], case: str) -> list[Row]:
    config = r["config"]
    where = (
        f"{config['tracked_source_files']:,} source files, "
        f"{config['dvc_tracked_files']:,}-file DVC dir"
    )
    rows = []
    for state in ("clean", "dirty"):
        block = r[f"start_run_{state}"]
        rows.append(
            _row(
                case,
                f"start_run with provenance, {state} tree ({where}): time added before "
                "training may begin",
                f"{block['added_ms']:.0f} ms",
                "without capture " + _t(block["without_capture"]["median_ms"], "ms"),
                target="≤ 150 ms (provenance issue)",
                met=block["added_ms"] <= 150,
            )
        )
    check = r["data_check"]
    rows.append(
        _row(
            case,
            "data-dirty check, fresh interpreter, vs `dvc status`",
            _t(check["mltrail_fresh_interpreter"]["median_ms"], "ms"),
            "dvc status " + _t(check["dvc_status"]["median_ms"], "ms"),
            check["ratio_fresh_interpreter"],
            "< 0.5 (provenance issue)",
            check["ratio_fresh_interpreter"] < 0.5,
        )
    )
    return rows


def summarise_import(r: dict[str, Any], case: str) -> list[Row]:
    seconds = r["interpreter_s"]
    return [
        _row(
            case,
            "`import mltrail` (fresh interpreter, minus a bare one)",
            f"{r['import_s']['mltrail']:.3f} s",
            f"`import mlflow` {r['import_s']['mlflow']:.3f} s",
            r["import_s"]["mltrail"] / max(r["import_s"]["mlflow"], 1e-9),
            "no target (reported)",
        ),
        _row(
            case,
            "interpreter with `import mltrail`, whole process",
            _t(seconds["mltrail"]),
            "bare python " + _t(seconds["python"]),
        ),
    ]


def _over(
    case: str,
    label: str,
    times: dict[str, list[float]],
    mine: str,
    base: str = "none",
    limit: float | None = None,
    target: str = "",
) -> list[Row]:
    """One row: ``mine`` against ``base``, met when the ratio of medians is at most ``limit``
    (no target when ``limit`` is None)."""
    if mine not in times or base not in times:
        return []
    ratio = statistics.median(times[mine]) / statistics.median(times[base])
    return [
        _row(
            case,
            label,
            _t(_spread_of(times[mine])),
            f"{base} " + _t(_spread_of(times[base])),
            ratio,
            target or (f"≤ {limit:.2f}" if limit is not None else "no target (reported)"),
            None if limit is None else ratio <= limit,
        )
    ]


def _versus(
    case: str, label: str, times: dict[str, list[float]], mine: str, contender: str
) -> list[Row]:
    """One row: ``mine`` against a contender measured in the same run, met below it."""
    if mine not in times or contender not in times:
        return []
    ours, theirs = statistics.median(times[mine]), statistics.median(times[contender])
    return [
        _row(
            case,
            f"{label}: mltrail vs {contender}",
            _t(_spread_of(times[mine])),
            f"{contender} " + _t(_spread_of(times[contender])),
            ours / theirs,
            "< 1 (below the contender)",
            ours < theirs,
        )
    ]


def _overhead_rows(
    case: str,
    label: str,
    times: dict[str, list[float]],
    base: str,
    mine: str,
    others: list[tuple[str, str, str]],
) -> list[Row]:
    """Overhead of ``mine`` over ``base`` (≤ 3%) and each ``(variant, contender, label)``."""
    if mine not in times or base not in times:
        return []
    rows = _over(case, f"{label}: overhead over no logging", times, mine, base, limit=1.03)
    for key, contender, vs_label in others:
        rows += _versus(case, vs_label, times, key, contender)
    return rows


def summarise_lightning(r: dict[str, Any], case: str) -> list[Row]:
    fits = {v: e["fit_runs_s"] for v, e in r["variants"].items()}
    rows = _overhead_rows(
        case,
        f"{r['epochs']} epochs, epoch-level metrics (TrailCallback, no model)",
        fits,
        "none",
        "trail_epoch",
        [
            ("trail_epoch", "mlflow_logger", "metrics only"),
            ("trail_epoch", "dvclive", "metrics only"),
            ("trail_full", "mlflow_autolog", "defaults (checkpoint + model)"),
        ],
    )
    rows += _over(
        case,
        "every-step metrics: overhead over no logging",
        fits,
        "trail_step",
        limit=1.10,
        target="≤ 1.10 (adapter issue)",
    )
    rows += _over(
        case, "defaults (last checkpoint + model): overhead over no logging", fits, "trail_full"
    )
    return rows


def summarise_keras(r: dict[str, Any], case: str) -> list[Row]:
    times = r["seconds"]
    label = f"{r['epochs']} epochs, {r['batches_per_epoch']} batches/epoch"
    rows = _overhead_rows(
        case,
        f"{label}, epoch metrics only",
        times,
        "none",
        "mltrail_metrics_only",
        [("mltrail_metrics_only", "dvclive", "metrics only")],
    )
    rows += _overhead_rows(
        case,
        f"{label}, defaults (best/last checkpoints + model)",
        times,
        "none",
        "mltrail",
        [("mltrail", "mlflow_autolog", "defaults")],
    )
    rows += _over(
        case,
        "batch-level metrics: overhead over no logging",
        times,
        "mltrail_batch",
        limit=1.10,
        target="≤ 1.10 (adapter issue)",
    )
    return rows


def _booster_summary(unit: str) -> Callable[[dict[str, Any], str], list[Row]]:
    """XGBoost and LightGBM: one training with an eval set, against no logging and the
    contenders' defaults."""

    def summarise_booster(r: dict[str, Any], case: str) -> list[Row]:
        return _overhead_rows(
            case,
            f"{r['rounds']} {unit}, {r['rows']:,} rows, eval set, 2 metrics",
            r["seconds"],
            "none",
            "mltrail",
            [("mltrail", "mlflow_autolog", "defaults"), ("mltrail", "dvclive", "defaults")],
        )

    return summarise_booster


summarise_xgboost = _booster_summary("rounds")
summarise_lightgbm = _booster_summary("iterations")


def summarise_optuna(r: dict[str, Any], case: str) -> list[Row]:
    times, trials = r["seconds"], r["trials"]
    added = r.get("overhead_per_trial_ms", {}).get("mltrail")
    rows = _over(
        case,
        f"{trials} trials of a 10 ms objective: study with a child run per trial",
        times,
        "mltrail",
        target=f"reported: {added:.0f} ms added per trial" if added is not None else "",
    )
    return rows + _versus(case, f"{trials} trials", times, "mltrail", "mlflow_callback")


def summarise_transformers(r: dict[str, Any], case: str) -> list[Row]:
    return _overhead_rows(
        case,
        f"{r['steps']} steps ({r['epochs']} epochs), per-epoch logs and evaluation, no model",
        r["seconds"],
        "none",
        "mltrail",
        [
            ("mltrail", "mlflow", "report_to='mlflow'"),
            ("mltrail", "dvclive", "report_to='dvclive'"),
        ],
    )


def summarise_sklearn(r: dict[str, Any], case: str) -> list[Row]:
    rows = []
    for workload, times in r["seconds"].items():
        rows += _overhead_rows(
            case,
            f"{workload} ({r['rows']:,} rows)",
            times,
            "plain",
            "mltrail",
            [("mltrail", "mlflow_autolog", workload)],
        )
    return rows


def summarise_checkpoints(r: dict[str, Any], case: str) -> list[Row]:
    blocked = r["blocked_s"]
    size = f"{r['checkpoints']} x {r['checkpoint_mb']:.0f} MB"
    rows = []
    for mine, other, label in (
        ("mltrail", "mlflow_log_artifact", "sqlite + local artifacts"),
        ("mltrail_http", "mlflow_log_artifact_http", "local server, proxied artifacts"),
        ("lightning_trail", "lightning_mlflow_logger", f"Lightning, {r.get('lightning_store')}"),
    ):
        if mine not in blocked or other not in blocked:
            continue
        ratio = blocked[mine]["median"] / max(blocked[other]["median"], 1e-12)
        rows.append(
            _row(
                case,
                f"training thread blocked by {size} checkpoints ({label})",
                _t(blocked[mine], "ms", 1000),
                f"{other} " + _t(blocked[other], "ms", 1000),
                ratio,
                "≤ 0.05 of synchronous upload",
                ratio <= 0.05,
            )
        )
    wall = r.get("wall_s", {})
    for mine, other, base in (
        ("mltrail", "mlflow_log_artifact", "none"),
        ("mltrail_http", "mlflow_log_artifact_http", "none"),
        ("lightning_trail", "lightning_mlflow_logger", "lightning_none"),
    ):
        if mine in wall and other in wall and base in wall:
            rows.append(
                _row(
                    case,
                    f"{mine}: wall time of the whole training, incl. waiting for the uploads "
                    "at the end",
                    _t(wall[mine]),
                    f"{other} {_t(wall[other])}; no logging {_t(wall[base])}",
                    wall[mine]["median"] / wall[other]["median"],
                    "no target (reported)",
                )
            )
    return rows


def summarise_scale(r: dict[str, Any], case: str) -> list[Row]:
    rows = []
    wide = r.get("wide_run")
    if wide:
        e2e = wide["end_to_end_s"]
        stored = wide["all_values_stored"]
        rows.append(
            _row(
                case,
                f"{wide['keys']:,} keys x {wide['steps']:,} steps into sqlite, logged + flushed"
                f" (all stored: mltrail {stored['mltrail']}, MLflow {stored['mlflow_async']})",
                _t(e2e["mltrail"]),
                "MLflow async " + _t(e2e["mlflow_async"]),
                wide["ratio_end_to_end_mltrail_to_mlflow_async"],
                "faster than MLflow async (ratio < 1)",
                wide["ratio_end_to_end_mltrail_to_mlflow_async"] < 1 and stored["mltrail"],
            )
        )
        rows.append(
            _row(
                case,
                "same, calling-thread time",
                _t(wide["calling_s"]["mltrail"]),
                "MLflow async " + _t(wide["calling_s"]["mlflow_async"]),
                wide["ratio_calling_mltrail_to_mlflow_async"],
            )
        )
    many = r.get("runs_by_commit")
    if many:
        seconds = many["seconds"]
        found = many["runs_found"]
        rows.append(
            _row(
                case,
                f"`mltrail runs --commit` on {many['runs_in_experiment']:,} runs (sqlite), "
                f"a fresh process ({found.get('cli_cold')} runs found)",
                _t(seconds["cli_cold"]),
                "MLflow alone, fresh process " + _t(seconds["mlflow_cold"]),
                seconds["cli_cold"]["median"] / seconds["mlflow_cold"]["median"],
                target="< 1 s",
                met=many["cli_cold_under_1s"],
            )
        )
        if "cli_cold_via_mlflow" in seconds:
            rows.append(
                _row(
                    case,
                    "same command made to query through MLflow (`MLTRAIL_SQLITE_FAST_READS=0`)",
                    _t(seconds["cli_cold_via_mlflow"]),
                    "MLflow alone, fresh process " + _t(seconds["mlflow_cold"]),
                    seconds["cli_cold_via_mlflow"]["median"] / seconds["mlflow_cold"]["median"],
                )
            )
        rows.append(
            _row(
                case,
                "same query in a warm process (no interpreter start or imports)",
                _t(seconds["in_process"]),
                "MlflowClient.search_runs " + _t(seconds["search_runs"]),
                seconds["in_process"]["median"] / seconds["search_runs"]["median"],
                "< 1 s",
                many["in_process_under_1s"],
            )
        )
    load = r.get("concurrent")
    if load:
        latency = load["calling_thread_latency_us"]
        rows.append(
            _row(
                case,
                f"{load['processes']} processes x {load['threads_per_process']} threads x 10 "
                f"metrics/step for {load['seconds']:g} s, local server: calling-thread latency "
                f"(values stored {load['values_stored']:,} of {load['values_logged']:,})",
                f"p50 {_n(latency['p50'])} µs, p99 {_n(latency['p99'])} µs, "
                f"max {_n(latency['max'])} µs",
                target="no lost values",
                met=load["no_lost_values"],
            )
        )
    return rows


# Whole-process targets of the real-scripts issue: (limit of the ratio to plain, label).
_SCRIPT_LIMITS = {
    "continued": (2.0, "12 continued XGBoost trainings"),
    "cv": (2.0, "5-fold CV loop, XGBClassifier"),
    "single": (1.3, "one ~3 s XGBoost training"),
    "sklearn": (None, "LogisticRegression fit + 12-candidate GridSearchCV"),
}


def summarise_scripts(r: dict[str, Any], case: str) -> list[Row]:
    rows = []
    for workload, times in r["seconds"].items():
        limit, label = _SCRIPT_LIMITS.get(workload, (None, workload))
        plain = times.get("plain")
        for variant in ("mltrail_run", "mltrail_run_cold", "mltrail_run_in_process", "explicit"):
            if variant not in times or not plain:
                continue
            ratio = statistics.median(times[variant]) / statistics.median(plain)
            rows.append(
                _row(
                    case,
                    f"{label}, {variant}: whole process vs plain ({r['rows']:,} rows)",
                    _t(_spread_of(times[variant])),
                    "plain " + _t(_spread_of(plain)),
                    ratio,
                    f"≤ {limit:g}x" if limit else "no target (reported)",
                    ratio <= limit if limit else None,
                )
            )
        if workload in ("continued", "cv") and "mlflow_autolog" in times and "mltrail_run" in times:
            mine, theirs = (statistics.median(times[v]) for v in ("mltrail_run", "mlflow_autolog"))
            rows.append(
                _row(
                    case,
                    f"{label}: mltrail run vs mlflow.autolog()",
                    _t(_spread_of(times["mltrail_run"])),
                    "mlflow_autolog " + _t(_spread_of(times["mlflow_autolog"])),
                    mine / theirs,
                    "< 1 (below the contender)",
                    mine < theirs,
                )
            )
    for key, what in (
        ("fit_s", "time inside fit added over plain"),
        # The fitting thread's own CPU: what mltrail adds on the training's thread, apart from
        # the wall time's noise (a search's moves by tens of milliseconds between runs).
        ("fit_cpu_s", "CPU time of the fitting thread added over plain"),
    ):
        for name, by_variant in (r.get(key) or {}).items():
            plain = by_variant.get("plain")
            for variant in ("mltrail_run", "mltrail_run_cold", "explicit"):
                if variant not in by_variant or not plain:
                    continue
                added = statistics.median(by_variant[variant]) - statistics.median(plain)
                rows.append(
                    _row(
                        case,
                        f"{name}, {variant}: {what}",
                        _t(added * 1000, "ms"),
                        "plain fit " + _t(_spread_of(plain)),
                        None,
                        "≤ 20 ms",
                        added <= 0.020,
                    )
                )
    return rows


def summarise_cli(r: dict[str, Any], case: str) -> list[Row]:
    seconds = r["seconds"]
    via = {"runs": "runs, through MLflow", "show PREFIX": "show PREFIX, through MLflow"}
    rows = []
    for name, value in seconds.items():
        if "through MLflow" in name or name == "python (floor)":
            continue
        other = seconds.get(via.get(name, ""))
        rows.append(
            _row(
                case,
                f"`mltrail {name}`, a fresh process, default sqlite store of "
                f"{r['sizes']['runs']:,} runs",
                _t(value),
                "through MLflow " + _t(other) if other else "",
                value["median"] / other["median"] if other else None,
                f"< {r['target_s']:g} s",
                value["median"] < r["target_s"],
            )
        )
    return rows


SUMMARISERS: dict[str, Callable[[dict[str, Any], str], list[Row]]] = {
    "import": summarise_import,
    "core": summarise_core,
    "core_server": summarise_core,
    "provenance": summarise_provenance,
    "lightning": summarise_lightning,
    "keras": summarise_keras,
    "xgboost": summarise_xgboost,
    "lightgbm": summarise_lightgbm,
    "optuna": summarise_optuna,
    "transformers": summarise_transformers,
    "sklearn": summarise_sklearn,
    "checkpoints": summarise_checkpoints,
    "scale": summarise_scale,
    "scripts": summarise_scripts,
    "cli": summarise_cli,
}


def summarise(cases: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name in ALL_CASES:
        record = cases.get(name)
        if record is None:
            continue
        if not record.get("ok"):
            rows.append(_row(name, "did not complete", "", str(record.get("error", ""))[-200:]))
            continue
        try:
            rows += SUMMARISERS[name](record["result"], name)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
            rows.append(_row(name, f"could not summarise ({error!r})", ""))
            continue
        for variant, why in (record["result"].get("skipped") or {}).items():
            rows.append(_row(name, f"{variant}: not measured", "", why.split("\n")[0][:120]))
    return rows


# --- output --------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    cpu = platform.processor()
    with_model = Path("/proc/cpuinfo")
    if with_model.exists():
        for line in with_model.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = None
    with_memory = Path("/proc/meminfo")
    if with_memory.exists():
        first = with_memory.read_text().splitlines()[0].split()
        memory = round(int(first[1]) / 1024**2, 1)
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": memory,
        "packages": versions,
    }


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    load = results.get("load_average", {})
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    missing = [k for k, v in env["packages"].items() if not v]
    lines = [
        f"Mode: **{results['mode']}**, {env['date']}; {env['cpu']}, {env['cpus']} CPUs, "
        f"{env['memory_gb']} GB; Python {env['python']} on {env['platform']}.",
        "",
        f"Load average (1 min) before / after: {load.get('before')} / {load.get('after')}; "
        f"the cases took {sum(c.get('seconds') or 0 for c in results['cases'].values()) / 60:.0f}"
        " min in all.",
        "",
        f"Packages: {packages}." + (f" Not installed: {', '.join(missing)}." if missing else ""),
        "",
        "Arguments of the case scripts: "
        + "; ".join(
            f"{name} `{' '.join(record.get('args') or []) or '(full sizes)'}`"
            for name, record in results["cases"].items()
            if name != "import"
        )
        + ".",
        "",
        "Times are median (min–max) over the repeats; ratios are mltrail / contender (or "
        "mltrail / no logging), both measured in the same run.",
        "",
        "| Case | Measure | mltrail | Compared with | Ratio | Target | Met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["summary"]:
        met = {True: "yes", False: "**no**", None: ""}[row["met"]]
        ratio = "" if row["ratio"] is None else _n(row["ratio"])
        cells = [row["case"], row["measure"], row["mltrail"], row["other"], ratio]
        cells += [row["target"], met]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def write_readme(path: Path, table: str) -> None:
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n## Results\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{table}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, for development")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes: does every case run")
    parser.add_argument(
        "--cases",
        help="comma-separated subset (default: all; --smoke: all "
        "but core_server, whose server takes long to start on a busy machine)",
    )
    parser.add_argument("--output", type=Path, help="results JSON (default in full mode: ours)")
    parser.add_argument("--readme", type=Path, help="README to update (default in full mode)")
    parser.add_argument("--merge", action="store_true", help="keep other cases of --output")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per case")
    parser.add_argument(
        "--render", action="store_true", help="only rebuild the summary and table from --output"
    )
    parser.add_argument(
        "--args",
        action="append",
        default=[],
        metavar="CASE=ARGS",
        help='arguments for one case script instead of the mode\'s, e.g. "scale=--steps 100"',
    )
    args = parser.parse_args(argv)
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    output = args.output or (RESULTS if mode_name == "full" else None)
    readme = args.readme or (README if mode_name == "full" else None)
    overrides = {}
    for item in args.args:
        case, _, text = item.partition("=")
        overrides[case] = shlex.split(text)
    default = [c for c in ALL_CASES if not (args.smoke and c == "core_server")]
    wanted = [c for c in (args.cases or ",".join(default)).split(",") if c]
    if set(wanted) - set(ALL_CASES):
        parser.error(f"unknown cases {sorted(set(wanted) - set(ALL_CASES))}; from {ALL_CASES}")

    if args.render:
        path = output or RESULTS
        results = json.loads(path.read_text())
        results["summary"] = summarise(results["cases"])
        path.write_text(json.dumps(results, indent=2) + "\n")
        write_readme(readme or README, markdown(results))
        print(markdown(results))
        return 0
    cases: dict[str, Any] = {}
    if args.merge and output and output.exists():
        cases = json.loads(output.read_text()).get("cases", {})
    results: dict[str, Any] = {
        "mode": mode_name,
        "environment": environment(),
        "load_average": {"before": round(os.getloadavg()[0], 2)},
        "cases": cases,
    }
    began = time.perf_counter()
    for name in wanted:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        if name == "import":
            record = measure_imports({"full": 5, "quick": 3, "smoke": 1}[mode_name])
        else:
            record = run_case(name, mode_name, args.timeout, overrides.get(name))
        record["load_average_after"] = round(os.getloadavg()[0], 2)
        cases[name] = record
        state = "ok" if record["ok"] else f"FAILED: {str(record.get('error'))[-500:]}"
        print(f"bench: {name} {record.get('seconds')} s {state}", file=sys.stderr, flush=True)
        results["seconds"] = round(time.perf_counter() - began, 1)
        results["load_average"]["after"] = round(os.getloadavg()[0], 2)
        results["summary"] = summarise(cases)
        if output:  # after every case: a long run keeps what it measured
            output.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    if readme:
        write_readme(readme, table)
    print(table)
    failed = [n for n in wanted if not cases[n]["ok"]]
    if failed:
        print(f"bench: failed cases: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
