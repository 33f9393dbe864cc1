"""Whole scripts as users run them: the time from interpreter start to exit, recorded or not.

    python benchmarks/bench_scripts.py            # the sizes below, 3 repeats
    python benchmarks/bench_scripts.py --quick    # smaller data, 2 repeats
    python benchmarks/bench_scripts.py --smoke    # tiny, 1 repeat (the test suite)

Real scripts are rarely one long training. Four workloads, each a script of its own:

- ``continued``: 12 continued XGBoost trainings of a few hundred milliseconds each
  (``xgb.train(..., xgb_model=booster)``), as a script that grows a model step by step;
- ``cv``: a 5-fold ``KFold`` loop fitting a small ``XGBClassifier`` per fold;
- ``single``: one XGBoost training of about 3 seconds;
- ``sklearn``: one ``LogisticRegression.fit`` of about 0.06 s and a 12-candidate
  ``GridSearchCV``, with the time inside each ``fit`` printed too.

Each runs as: ``plain`` (no recording), ``mltrail_run`` (the plain script under
``mltrail run``), ``mltrail_run_in_process`` (the same with ``MLTRAIL_RECORDER=thread``: the
boosting runs recorded in the script's process, not in mltrail's recorder process),
``mltrail_run_cold`` (the same with ``MLTRAIL_RECORDER_SPARE=0``: no spare recorder waits
warm for the script, as for the first script of a session; ``mltrail_run`` finds the spare
that the run before it left),
``explicit`` (mltrail's ``TrailCallback`` or ``TrackedEstimator`` in the script), ``mlflow_autolog`` (``mlflow.autolog()`` at the top) and, for the XGBoost workloads,
``dvclive`` (its XGBoost callback). Every process starts in the same git repository, with its
own sqlite store created beforehand (a user's store exists already). Variants run interleaved in
a rotating order after one untimed warm-up round, each once the machine is idle again.

The JSON printed holds every process time, the medians, the ratios to ``plain`` and the times
inside ``fit`` for the scikit-learn workload. Targets (real-scripts issue): ``continued`` and
``cv`` at most 2x plain and below ``mlflow.autolog()``; ``single`` at most 1.3x plain; the
scikit-learn fits within 20 ms of plain inside ``fit``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

VARIANTS = (
    "plain",
    "mltrail_run",
    "mltrail_run_in_process",
    "mltrail_run_cold",
    "explicit",
    "mlflow_autolog",
    "dvclive",
)
SIZES = {
    "full": {"rows": 20_000, "single_rounds": 300, "repeats": 3},
    "quick": {"rows": 5_000, "single_rounds": 100, "repeats": 2},
    "smoke": {"rows": 500, "single_rounds": 5, "repeats": 1},
}

# Each script reads VARIANT from the environment; "plain" and "mltrail_run" run it unchanged.
PRELUDE = """
import json, os, sys, time
VARIANT = os.environ["BENCH_VARIANT"]
ROWS = int(os.environ["BENCH_ROWS"])
if VARIANT == "mlflow_autolog":
    import mlflow
    mlflow.autolog(silent=True)
import numpy as np
rng = np.random.default_rng(0)
X = rng.normal(size=(ROWS, 20)).astype("float32")
y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(scale=0.5, size=ROWS) > 0).astype(int)


def xgb_callbacks():
    if VARIANT == "explicit":
        from mltrail.integrations.xgboost import TrailCallback
        return [TrailCallback()]
    if VARIANT == "dvclive":
        from dvclive.xgb import DVCLiveCallback
        return [DVCLiveCallback()]
    return []
"""

SCRIPTS = {
    "continued": """
import xgboost as xgb
dtrain = xgb.DMatrix(X[: ROWS * 4 // 5], label=y[: ROWS * 4 // 5])
dval = xgb.DMatrix(X[ROWS * 4 // 5 :], label=y[ROWS * 4 // 5 :])
params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.3, "nthread": 1}
booster = None
for part in range(12):
    booster = xgb.train(params, dtrain, 10, evals=[(dval, "val")], xgb_model=booster,
                        verbose_eval=False, callbacks=xgb_callbacks())
print(json.dumps({"rounds": booster.num_boosted_rounds()}))
""",
    "cv": """
import xgboost as xgb
from sklearn.model_selection import KFold
scores = []
for train, test in KFold(5, shuffle=True, random_state=0).split(X):
    model = xgb.XGBClassifier(n_estimators=30, max_depth=3, n_jobs=1, callbacks=xgb_callbacks())
    model.fit(X[train], y[train], eval_set=[(X[test], y[test])], verbose=False)
    scores.append(float((model.predict(X[test]) == y[test]).mean()))
print(json.dumps({"accuracy": sum(scores) / len(scores)}))
""",
    "single": """
import xgboost as xgb
dtrain = xgb.DMatrix(X, label=y)
params = {"objective": "binary:logistic", "max_depth": 8, "eta": 0.1, "nthread": 1}
booster = xgb.train(params, dtrain, int(os.environ["BENCH_ROUNDS"]), evals=[(dtrain, "train")],
                    verbose_eval=False, callbacks=xgb_callbacks())
print(json.dumps({"rounds": booster.num_boosted_rounds()}))
""",
    "sklearn": """
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

def wrap(estimator):
    if VARIANT == "explicit":
        from mltrail.integrations.sklearn import TrackedEstimator
        return TrackedEstimator(estimator)
    return estimator

fit_s, fit_cpu_s = {}, {}
for name, estimator in (
    ("logistic_regression", LogisticRegression(max_iter=1000)),
    ("grid_search_12", GridSearchCV(LogisticRegression(max_iter=1000),
                                    {"C": [0.001, 0.01, 0.1, 1.0, 10.0, 100.0],
                                     "fit_intercept": [True, False]}, cv=5)),
):
    model = wrap(estimator)
    began, began_cpu = time.perf_counter(), time.thread_time()
    model.fit(X, y)
    fit_s[name] = time.perf_counter() - began
    fit_cpu_s[name] = time.thread_time() - began_cpu
print(json.dumps({"fit_s": fit_s, "fit_cpu_s": fit_cpu_s}))
""",
}
XGBOOST_ONLY = ("continued", "cv", "single")


def _git(folder: Path, *args: str) -> None:
    identity = {
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
    }
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True,
                   env={**os.environ, **identity})  # fmt: skip


def _workspace(root: Path) -> Path:
    """A git repository holding the scripts, committed: a clean tree, as a user's would be."""
    repo = root / "project"
    repo.mkdir()
    for name, body in SCRIPTS.items():
        (repo / f"train_{name}.py").write_text(textwrap.dedent(PRELUDE) + textwrap.dedent(body))
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "scripts")
    return repo


def _store(root: Path, template: Path, key: str) -> str:
    folder = root / "stores" / key
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def _available(variant: str) -> str | None:
    """Why a variant cannot run here (None when it can)."""
    if variant == "dvclive":
        try:
            import dvclive  # noqa: F401
        except ImportError as error:
            return str(error)
    return None


def _run_once(
    repo: Path, workload: str, variant: str, store: str, env: dict[str, str], settle: bool = True
) -> tuple[float, dict[str, Any]]:
    command = [sys.executable, f"train_{workload}.py"]
    env = {**env, "BENCH_VARIANT": variant, "MLFLOW_TRACKING_URI": store}
    if variant in ("mltrail_run", "mltrail_run_in_process", "mltrail_run_cold"):
        command = [str(Path(sys.executable).parent / "mltrail"), "run", "--", *command]
    if variant == "mltrail_run_in_process":  # no recorder process: every run recorded in-process
        env["MLTRAIL_RECORDER"] = "thread"
    if variant == "mltrail_run_cold":  # no spare recorder: each script warms up its own
        env["MLTRAIL_RECORDER_SPARE"] = "0"
    if settle:
        _settle()
    began = time.perf_counter()
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{workload}/{variant} failed:\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def _settle(limit: float = 20.0) -> None:
    """Wait until the machine is idle (a spare recorder warming up in the background, the
    tail of the last process): each process is timed alone, whatever ran before it."""
    try:
        with open("/proc/stat") as stat:
            first = [int(v) for v in stat.readline().split()[1:]]
    except OSError:  # not Linux: nothing runs in the background to wait for
        return
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.3)
        with open("/proc/stat") as stat:
            now = [int(v) for v in stat.readline().split()[1:]]
        busy = [b - a for a, b in zip(first, now, strict=False)]
        total = sum(busy) or 1
        if (busy[3] + busy[4]) / total > 0.9:  # idle and iowait
            return
        first = now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--workloads", default=",".join(SCRIPTS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    sizes = SIZES[mode]
    repeats = args.repeats or sizes["repeats"]
    workloads = [w for w in args.workloads.split(",") if w]
    variants = [v for v in args.variants.split(",") if v]
    skipped = {v: why for v in variants if (why := _available(v))}
    root = Path(tempfile.mkdtemp(prefix="mltrail-bench-scripts-"))
    try:
        from mlflow.tracking import MlflowClient

        template = root / "template.db"
        MlflowClient(f"sqlite:///{template}").search_experiments()  # migrated once
        repo = _workspace(root)
        env = {
            **os.environ,
            "BENCH_ROWS": str(sizes["rows"]),
            "BENCH_ROUNDS": str(sizes["single_rounds"]),
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "1",
            "MLTRAIL_SPOOL_DIR": str(root / "spool"),
            "DVCLIVE_OPEN": "false",
        }
        env.pop("MLTRAIL_STRICT", None)
        seconds: dict[str, dict[str, list[float]]] = {}
        fit_s: dict[str, dict[str, list[float]]] = {}
        fit_cpu_s: dict[str, dict[str, list[float]]] = {}
        for workload in workloads:
            runnable = [
                v
                for v in variants
                if v not in skipped and (v != "dvclive" or workload in XGBOOST_ONLY)
            ]
            seconds[workload] = {v: [] for v in runnable}
            # Round 0 warms caches and is not counted; the smoke run (the test suite's check
            # that the case works) has no figures to protect and skips it.
            first = 1 if mode == "smoke" else 0
            for repeat in range(first, repeats + 1):
                shift = repeat % len(runnable)
                for variant in runnable[shift:] + runnable[:shift]:
                    store = _store(root, template, f"{workload}-{variant}-{repeat}")
                    # The smoke run (the test suite's) has no figures to protect.
                    settle = mode != "smoke"
                    took, output = _run_once(repo, workload, variant, store, env, settle)
                    if repeat == 0:
                        continue
                    seconds[workload][variant].append(round(took, 4))
                    for found, into in (
                        (output.get("fit_s"), fit_s),
                        (output.get("fit_cpu_s"), fit_cpu_s),
                    ):
                        for name, value in (found or {}).items():
                            into.setdefault(name, {}).setdefault(variant, []).append(
                                round(value, 4)
                            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    medians = {w: {v: statistics.median(t) for v, t in by.items()} for w, by in seconds.items()}
    result = {
        "mode": mode,
        "rows": sizes["rows"],
        "repeats": repeats,
        "seconds": seconds,
        "median_s": medians,
        "ratio_to_plain": {
            w: {v: round(m / by["plain"], 3) for v, m in by.items()}
            for w, by in medians.items()
            if by.get("plain")
        },
        "fit_s": fit_s,
        "fit_cpu_s": fit_cpu_s,
        "skipped": skipped,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
