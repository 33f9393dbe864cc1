"""Provenance capture cost at run start, and the DVC data check against `dvc status`.

On a temporary git repository with 1,000 tracked source files and a DVC-tracked folder of
10,000 files (``--quick``: 100 and 1,000), measured side by side in one run, interleaved:

- the calling-thread time of ``mltrail.start_run`` with provenance capture and without it
  (the difference is what capture adds before training may begin), on the clean workspace and
  with one modified and one untracked file (diff and snapshot then run in the background);
- the data-dirty check (``mltrail.capture.dvc.data_status``) on the unchanged dataset, in this
  process and in a fresh interpreter, against ``dvc status`` on the same repository.

Prints one JSON dict of results (medians, min and max in milliseconds, ratios, targets).

Usage: python benchmarks/bench_provenance.py [--quick | --smoke] [--repeats N] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def sh(cwd: Path, *args: str) -> str:
    result = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr}")
    return result.stdout


def build_repo(repo: Path, sources: int, data_files: int) -> None:
    repo.mkdir(parents=True)
    sh(repo, "git", "init", "-q", "-b", "main")
    for i in range(sources):
        folder = repo / "src" / f"pkg_{i // 50:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"module_{i:04d}.py").write_text(f'"""Module {i}."""\n\nVALUE = {i}\n' * 5)
    (repo / "train.py").write_text("print('train')\n")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "sources")
    sh(repo, sys.executable, "-m", "dvc", "init", "-q")
    images = repo / "data" / "images"
    for i in range(data_files):
        folder = images / f"{i // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img_{i:05d}.txt").write_text(f"pixels of image {i}\n" * 4)
    sh(repo, sys.executable, "-m", "dvc", "add", "-q", "data/images")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "data")


def stats(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "median_ms": round(statistics.median(ms), 2),
        "min_ms": round(min(ms), 2),
        "max_ms": round(max(ms), 2),
    }


def time_start_runs(uri: str, repeats: int) -> dict[str, list[float]]:
    import mltrail

    found: dict[str, list[float]] = {"capture": [], "no_capture": [], "inside": [], "bg": []}
    for i in range(repeats + 1):  # the first round warms imports and the store
        for capture in (True, False) if i % 2 == 0 else (False, True):
            began = time.perf_counter()
            trail = mltrail.start_run(
                experiment="bench-provenance",
                tracking_uri=uri,
                capture=capture,
                system_metrics=False,
            )
            elapsed = time.perf_counter() - began
            trail.end()
            if i == 0:
                continue
            found["capture" if capture else "no_capture"].append(elapsed)
            if capture:
                found["inside"].append(trail.provenance._calling_seconds)
                found["bg"].append(trail.provenance._background_seconds)
    return found


def time_data_checks(repo: Path, repeats: int) -> dict[str, list[float]]:
    from mltrail.capture import dvc as dvc_capture

    check = (
        "import sys, time\n"
        "began = time.perf_counter()\n"
        "from pathlib import Path\n"
        "from mltrail.capture import dvc\n"
        "info = dvc.inspect(Path('.'), '.')\n"
        "status = dvc.data_status(info)\n"
        "assert status.dirty == 'false', status\n"
        "print(time.perf_counter() - began)\n"
    )
    found: dict[str, list[float]] = {"inprocess": [], "subprocess": [], "dvc_status": []}
    sh(repo, sys.executable, "-m", "dvc", "status", "-q")  # DVC's state is warm for everyone
    for i in range(repeats):
        order = ["inprocess", "subprocess", "dvc_status"]
        for name in order[i % 3 :] + order[: i % 3]:
            if name == "inprocess":
                began = time.perf_counter()
                info = dvc_capture.inspect(repo, str(repo))
                status = dvc_capture.data_status(info)
                found[name].append(time.perf_counter() - began)
                assert status.dirty == "false", status
            elif name == "subprocess":
                began = time.perf_counter()
                sh(repo, sys.executable, "-c", check)
                found[name].append(time.perf_counter() - began)
            else:
                began = time.perf_counter()
                sh(repo, sys.executable, "-m", "dvc", "status", "-q")
                found[name].append(time.perf_counter() - began)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small repository, 2 repeats")
    parser.add_argument("--smoke", action="store_true", help="tiny repository, 1 repeat")
    parser.add_argument("--repeats", type=int, help="rounds per measurement (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    sources, data_files = (20, 100) if args.smoke else (100, 1000) if args.quick else (1000, 10_000)
    repeats = args.repeats or (1 if args.smoke else 2 if args.quick else 5)

    base = Path(tempfile.mkdtemp(prefix="mltrail-bench-provenance-"))
    try:
        repo = base / "repo"
        began = time.perf_counter()
        build_repo(repo, sources, data_files)
        build_seconds = time.perf_counter() - began
        store = base / "store"
        store.mkdir()
        uri = f"sqlite:///{store / 'mlflow.db'}"
        cwd = os.getcwd()
        os.chdir(repo)
        try:
            clean = time_start_runs(uri, repeats)
            (repo / "train.py").write_text("print('train')\nlr = 0.3\n")
            (repo / "notes.md").write_text("untracked notes\n")
            dirty = time_start_runs(uri, repeats)
            (repo / "train.py").write_text("print('train')\n")
            (repo / "notes.md").unlink()
            checks = time_data_checks(repo, repeats)
        finally:
            os.chdir(cwd)
    finally:
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)

    def added(found: dict[str, list[float]]) -> float:
        return statistics.median(found["capture"]) - statistics.median(found["no_capture"])

    dvc_status = statistics.median(checks["dvc_status"])
    results = {
        "benchmark": "provenance",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "config": {
            "tracked_source_files": sources,
            "dvc_tracked_files": data_files,
            "repeats": repeats,
            "quick": args.quick,
            "build_seconds": round(build_seconds, 1),
        },
        "start_run_clean": {
            "with_capture": stats(clean["capture"]),
            "without_capture": stats(clean["no_capture"]),
            "capture_on_calling_thread": stats(clean["inside"]),
            "capture_in_background": stats(clean["bg"]),
            "added_ms": round(added(clean) * 1000, 2),
        },
        "start_run_dirty": {
            "with_capture": stats(dirty["capture"]),
            "without_capture": stats(dirty["no_capture"]),
            "capture_on_calling_thread": stats(dirty["inside"]),
            "capture_in_background": stats(dirty["bg"]),
            "added_ms": round(added(dirty) * 1000, 2),
        },
        "data_check": {
            "mltrail_in_process": stats(checks["inprocess"]),
            "mltrail_fresh_interpreter": stats(checks["subprocess"]),
            "dvc_status": stats(checks["dvc_status"]),
            "ratio_in_process": round(statistics.median(checks["inprocess"]) / dvc_status, 3),
            "ratio_fresh_interpreter": round(
                statistics.median(checks["subprocess"]) / dvc_status, 3
            ),
        },
    }
    results["targets"] = {
        "capture_adds_at_most_150_ms": max(added(clean), added(dirty)) <= 0.150,
        "data_check_under_half_of_dvc_status": results["data_check"]["ratio_fresh_interpreter"]
        < 0.5,
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
