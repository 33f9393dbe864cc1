"""What every framework benchmark does the same way: which variants can run, a scratch folder,
timing with background closes included, variants interleaved in a rotating order, the summary
of times against a baseline, and the JSON it prints.

The case scripts import it as ``common`` (they run as scripts from this folder).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def unavailable(variant: str, modules: dict[str, str]) -> str | None:
    """None when ``variant`` can run (its module in ``modules`` imports, or it needs none)."""
    module = modules.get(variant)
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError as error:
        return f"not installed ({error})"
    return None


def quiet() -> None:
    """MLflow's INFO lines go to stdout, where the JSON result goes; mltrail's internal errors
    are warnings as a user would see them, and GitPython does not complain about a missing git."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLTRAIL_STRICT", "0")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary folder that is the working directory and holds mltrail's spool: DVCLive and
    MLflow write relative files, which must stay out of the repository."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        root = Path(folder)
        os.environ["MLTRAIL_SPOOL_DIR"] = str(root / "spool")
        os.chdir(root)
        try:
            yield root
        finally:
            os.chdir(cwd)


def closed() -> None:
    """Wait for the runs mltrail closes in the background, so that one variant's closing work
    is counted in its own time and never in the next variant's."""
    wait = getattr(sys.modules.get("mltrail"), "wait", None)
    if wait is not None:
        wait()


def timed(run: Callable[[], Any]) -> float:
    """Seconds of one call of ``run``, its stdout swallowed, background closes included."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run()
    closed()
    return time.perf_counter() - start


def interleaved(
    runs: dict[str, Callable[[], Any]], repeats: int, measure: Callable[[Callable[[], Any]], T]
) -> dict[str, list[T]]:
    """Each variant once untimed (imports, store creation, caches), then ``repeats`` rounds in a
    rotating order, so that a slow swing of the machine's load does not fall on one variant."""
    variants = list(runs)
    for variant in variants:
        measure(runs[variant])
    results: dict[str, list[T]] = {v: [] for v in variants}
    for repeat in range(repeats):
        shift = repeat % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            results[variant].append(measure(runs[variant]))
    return results


def against(times: dict[str, list[float]], base: str) -> dict[str, Any]:
    """The times of every variant, their medians and minima, and ratios and overheads against
    the ``base`` variant."""
    medians = {v: statistics.median(t) for v, t in times.items()}
    reference = medians[base]
    return {
        "seconds": {v: [round(t, 4) for t in ts] for v, ts in times.items()},
        "median_seconds": {v: round(m, 4) for v, m in medians.items()},
        "min_seconds": {v: round(min(t), 4) for v, t in times.items()},
        f"ratio_to_{base}": {v: round(m / reference, 4) for v, m in medians.items()},
        "overhead_seconds": {v: round(m - reference, 4) for v, m in medians.items() if v != base},
    }


def faster_than(medians: dict[str, float], mine: str, others: tuple[str, ...]) -> dict[str, bool]:
    """``{mine}_faster_than_{other}`` for each contender that was measured."""
    if mine not in medians:
        return {}
    return {
        f"{mine}_faster_than_{other}": medians[mine] < medians[other]
        for other in others
        if other in medians
    }


def overhead_checks(
    summary: dict[str, Any], within: float, contenders: tuple[str, ...], base: str = "none"
) -> dict[str, bool]:
    """The targets of a framework benchmark: mltrail within ``within`` (0.03: 3%) of ``base``,
    and faster than each contender that was measured."""
    checks = {}
    ratio = summary[f"ratio_to_{base}"].get("mltrail")
    if ratio is not None:
        checks[f"mltrail_within_{round(within * 100)}pct_of_{base}"] = ratio <= 1 + within
    return checks | faster_than(summary["median_seconds"], "mltrail", contenders)


def callback_trainer(
    variant: str,
    root: Path,
    train: Callable[[list[Any]], T],
    *,
    framework: str,
    dvclive: str,
) -> Callable[[], T]:
    """One training the way a user of ``variant`` would run it, for a framework whose training
    takes a list of callbacks (``train(callbacks)``): ``none``, ``mltrail`` (the adapter's
    TrailCallback), ``mlflow_autolog`` (``mlflow.<framework>.autolog``) or ``dvclive`` (the
    ``DVCLiveCallback`` of module ``dvclive``). Each variant has a store of its own in ``root``.
    """
    import importlib

    uri = f"sqlite:///{root / variant / 'mlflow.db'}"
    (root / variant).mkdir(parents=True, exist_ok=True)
    if variant == "none":
        return lambda: train([])
    if variant == "mltrail":
        callback = importlib.import_module(f"mltrail.integrations.{framework}").TrailCallback
        return lambda: train([callback(experiment="bench", tracking_uri=uri)])
    if variant == "mlflow_autolog":
        import mlflow

        flavor = importlib.import_module(f"mlflow.{framework}")

        def autologged() -> T:
            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment("bench")
            flavor.autolog(silent=True)
            try:
                return train([])
            finally:
                flavor.autolog(disable=True)

        return autologged
    if variant == "dvclive":
        live_callback = importlib.import_module(dvclive).DVCLiveCallback
        counter = iter(range(10**6))

        def live() -> T:
            folder = root / variant / f"run{next(counter)}"
            return train([live_callback(dir=str(folder), save_dvc_exp=False)])

        return live
    raise ValueError(variant)


def environment(**versions: str) -> dict[str, Any]:
    """The machine a result was measured on, with the versions of the libraries it measured."""
    return {
        "python": platform.python_version(),
        **versions,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def emit(result: dict[str, Any], output: Path | None) -> int:
    """Print the result as JSON (the harness reads it from stdout) and also write it to
    ``output`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if output:
        output.write_text(text + "\n")
    return 0
