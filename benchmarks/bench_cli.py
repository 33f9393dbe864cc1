"""The read verbs of the ``mltrail`` command, each a fresh process, on a local sqlite store.

A git repository whose MLflow store is the default one (``./mlflow.db``, no
``MLFLOW_TRACKING_URI``), holding 10,000 runs (``--quick``: 1,000; ``--smoke``: 3): three
recorded by ``mltrail.start_run`` on the repository's commit (provenance, params, metrics, a
checkpoint) and the rest copies of MLflow runs spread over other commits (see
``bench_scale.build_store``). Timed, interleaved, as a user types them:

``runs`` (HEAD), ``runs --all``, ``show PREFIX``, ``show`` of an unknown run (the error),
``diff A B``, ``verify A``, ``which CHECKPOINT``, ``checkout`` of an unknown run (everything
before restoring), and, through MLflow (``MLTRAIL_SQLITE_FAST_READS=0``, what every verb paid
before it read the store itself), ``runs`` and ``show``. Also a bare interpreter, for the floor.

Prints one JSON dict: seconds per command (median, min, max, every repeat), the target (under
1 s from a fresh process) and whether each command meets it.

``--smoke`` (3 runs, one round, nothing through MLflow) only checks that every command runs.

Usage: python benchmarks/bench_cli.py [--quick | --smoke] [--repeats N] [--runs N] [--keep]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import build_store, cli_command
from run import spread

# smoke: no warm-up round and no command through MLflow (each costs seconds): does it run.
SIZES = {
    "full": {"runs": 10_000, "repeats": 5, "warmup": 1, "through_mlflow": True},
    "quick": {"runs": 1_000, "repeats": 3, "warmup": 1, "through_mlflow": True},
    "smoke": {"runs": 3, "repeats": 1, "warmup": 0, "through_mlflow": False},
}
TARGET_S = 1.0
ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}
ENV.pop("MLFLOW_TRACKING_URI", None)  # the default store: ./mlflow.db
ENV["MLTRAIL_CAPTURE"] = "1"  # train.py's runs record their provenance (bench_scale turns it off)


def sh(cwd: Path, *args: str) -> str:
    result = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr}")
    return result.stdout


TRAIN = """\
import json, os
import mltrail

ids = []
for i in range(3):
    with mltrail.start_run(experiment="bench-cli", run_name=f"run-{i}", system_metrics=False) as t:
        t.log_params({"lr": 0.01 * (i + 1), "epochs": 3, "seed": i})
        for epoch in range(3):
            t.log_metrics({"loss": 1 / (epoch + i + 1), "acc": 0.5 + 0.1 * epoch}, epoch)
        if i == 0:
            with open("model.ckpt", "wb") as handle:
                handle.write(os.urandom(64 * 1024))
            t.log_checkpoint("model.ckpt")
        ids.append(t.run_id)
print(json.dumps(ids))
"""


def prepare(folder: Path, runs: int) -> dict[str, Any]:
    """The repository, its default store with ``runs`` runs, and the ids the commands use:
    three runs recorded by the repository's ``train.py`` (``mltrail.start_run``), the rest
    copies of MLflow runs."""
    repo = folder / "project"
    repo.mkdir()
    sh(repo, "git", "init", "-q", "-b", "main")
    (repo / "train.py").write_text(TRAIN)
    (repo / ".gitignore").write_text("mlflow.db*\nmlartifacts/\nmlruns/\n*.ckpt\n")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "v1")
    os.chdir(repo)  # MLflow writes relative artifact folders
    if runs > 3:  # else train.py creates the store
        build_store(repo, max(runs - 3, 4), commits=50)
    ids = json.loads(sh(repo, sys.executable, "train.py").strip().splitlines()[-1])
    return {"repo": repo, "ids": ids, "checkpoint": repo / "model.ckpt"}


def commands(setup: dict[str, Any]) -> dict[str, tuple[list[str], dict[str, str], set[int]]]:
    """name -> (arguments, extra environment, accepted exit codes)."""
    a, b = setup["ids"][0], setup["ids"][1]
    unknown = "0123456789abcdef0123456789abcdef"
    mlflow = {"MLTRAIL_SQLITE_FAST_READS": "0"}
    return {
        "runs": (["runs"], {}, {0}),
        "runs --all": (["runs", "--all"], {}, {0}),
        "show PREFIX": (["show", a[:8]], {}, {0}),
        "show (unknown run)": (["show", unknown], {}, {2}),
        "diff A B": (["diff", a[:8], b[:8]], {}, {0}),
        "verify A": (["verify", a[:8]], {}, {0, 1}),
        "which CHECKPOINT": (["which", str(setup["checkpoint"])], {}, {0}),
        "checkout (unknown run)": (["checkout", unknown], {}, {2}),
        "runs, through MLflow": (["runs"], mlflow, {0}),
        "show PREFIX, through MLflow": (["show", a[:8]], mlflow, {0}),
    }


def measure(
    setup: dict[str, Any], repeats: int, warmup: int = 1, through_mlflow: bool = True
) -> dict[str, Any]:
    cases = commands(setup)
    if not through_mlflow:
        cases = {n: c for n, c in cases.items() if "through MLflow" not in n}
    cli = cli_command()
    times: dict[str, list[float]] = {name: [] for name in [*cases, "python (floor)"]}
    for repeat in range(repeats + warmup):  # warm-up rounds warm the file cache
        names = list(times)
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            if name == "python (floor)":
                command, extra, accepted = [sys.executable, "-c", "pass"], {}, {0}
            else:
                args, extra, accepted = cases[name]
                command = [*cli, *args]
            start = time.perf_counter()
            done = subprocess.run(
                command, cwd=setup["repo"], env={**ENV, **extra}, capture_output=True, text=True
            )
            elapsed = time.perf_counter() - start
            if done.returncode not in accepted:
                raise RuntimeError(f"{name}: exit {done.returncode}: {done.stderr[-2000:]}")
            if repeat >= warmup:
                times[name].append(elapsed)
    seconds = {name: spread(values, 4) for name, values in times.items()}
    fast = [n for n in cases if "through MLflow" not in n]
    return {
        "seconds": seconds,
        "target_s": TARGET_S,
        "under_target": {n: seconds[n]["median"] < TARGET_S for n in fast},
        "all_under_target": all(seconds[n]["median"] < TARGET_S for n in fast),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1,000 runs, 3 repeats")
    mode.add_argument("--smoke", action="store_true", help="3 runs, 1 round: does it run")
    parser.add_argument("--runs", type=int, help="runs in the store")
    parser.add_argument("--repeats", type=int, help="timed repeats of each command")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    size = dict(SIZES["smoke" if args.smoke else "quick" if args.quick else "full"])
    size.update({k: v for k, v in vars(args).items() if k in size and v is not None})
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)

    folder = Path(tempfile.mkdtemp(prefix="mltrail-bench-cli-"))
    os.environ["MLTRAIL_SPOOL_DIR"] = str(folder / "spool")
    cwd = os.getcwd()
    try:
        os.chdir(folder)  # MLflow writes relative artifact folders
        began = time.perf_counter()
        setup = prepare(folder, size["runs"])
        prepared_s = round(time.perf_counter() - began, 1)
        os.chdir(setup["repo"])
        result = {
            "benchmark": "cli",
            "sizes": size,
            "store": "default (./mlflow.db in the repository)",
            "prepare_s": prepared_s,
            **measure(setup, size["repeats"], size["warmup"], size["through_mlflow"]),
        }
    finally:
        os.chdir(cwd)
        if args.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
