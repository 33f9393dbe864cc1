"""Checkpoints: how long logging them blocks the training thread.

A training saves ``--checkpoints`` checkpoints of ``--mb`` MB each (10 x 200 MB), one after
each "epoch" of ``--steps`` optimizer steps of a small MLP that carries a large buffer (the
weights of a big model, as far as the checkpoint is concerned). Contenders, interleaved in a
rotating order and repeated:

plain PyTorch loop (``torch.save`` each checkpoint, then log it):
    none                       saving only, no logging (the baseline)
    mltrail                    ``Trail.log_checkpoint(path)`` into sqlite + local artifacts
    mlflow_log_artifact        ``mlflow.log_artifact(path)`` (synchronous), same store
    mltrail_http               ``Trail.log_checkpoint`` into a local ``mlflow server``
                               (127.0.0.1, proxied artifact storage)
    mlflow_log_artifact_http   ``mlflow.log_artifact`` into the same server
Lightning (``ModelCheckpoint(save_top_k=-1)`` writes the checkpoints; the same server, or
sqlite with ``--smoke``, which starts no server and leaves out the ``_http`` contenders):
    lightning_none             no logger
    lightning_trail            ``TrailCallback(checkpoints="all", log_model=False)``
    lightning_mlflow_logger    ``MLFlowLogger(log_model="all")``

For each run: ``start_s``, the time starting the run took; ``blocked_s``, the time the training thread spent inside the logging calls while
training (``log_checkpoint``/``log_artifact``; the callback's hooks; the logger's
``after_save_checkpoint``), ``end_s``, the time it then waited at the end of the run (mltrail
finishing its background uploads, the logger's final scan), and ``wall_s``, the whole training
from start to the run ended. After each run the stored checkpoints are counted in the artifact
store (every one must be there) and deleted, so the disk holds at most one run's files.

Prints one JSON object. Usage:
    python benchmarks/bench_checkpoints.py [--quick | --smoke] [--repeats N] [--contenders ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "1")
os.environ.setdefault("MLTRAIL_STRICT", "0")
os.environ.setdefault("MLTRAIL_ALREADY_RUN", "ignore")

import lightning.pytorch as L
import mlflow
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from torch.utils.data import DataLoader, TensorDataset

import mltrail
from mltrail.integrations.lightning import TrailCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import LocalServer, spread

CONTENDERS = (
    "none",
    "mltrail",
    "mlflow_log_artifact",
    "mltrail_http",
    "mlflow_log_artifact_http",
    "lightning_none",
    "lightning_trail",
    "lightning_mlflow_logger",
)
SIZES = {
    "full": dict(checkpoints=10, mb=200, steps=100, repeats=5),
    "quick": dict(checkpoints=3, mb=20, steps=20, repeats=2),
    "smoke": dict(checkpoints=2, mb=1, steps=2, repeats=1),
}
FEATURES, HIDDEN, BATCH = 32, 256, 128
# mltrail's end() waits at most flush_timeout for uploads; give it room so every checkpoint
# lands and the count below can hold it to that.
FLUSH_TIMEOUT = 1800


class Net(L.LightningModule):
    """A small MLP that carries ``buffer`` (the bulk of the checkpoint) as a state entry."""

    def __init__(self, buffer: torch.Tensor) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 1)
        )
        self.register_buffer("frozen", buffer, persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Bench:
    def __init__(self, folder: Path, server: LocalServer | None, size: dict[str, int]) -> None:
        self.folder, self.server, self.size = folder, server, size
        self.count = 0
        generator = torch.Generator().manual_seed(0)
        self.buffer = torch.randn(size["mb"] * 250_000, generator=generator)  # 4 bytes each
        rows = size["steps"] * BATCH
        x = torch.randn(rows, FEATURES, generator=generator)
        y = x[:, :4].sum(dim=1, keepdim=True)
        self.data = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
        self.local_uri = f"sqlite:///{folder / 'local' / 'mlflow.db'}"
        (folder / "local").mkdir()
        self.local_artifacts = folder / "local" / "artifacts"
        mlflow.MlflowClient(self.local_uri).create_experiment(
            "checkpoints", artifact_location=str(self.local_artifacts)
        )
        if server is not None:
            mlflow.MlflowClient(server.uri).create_experiment("checkpoints")
        # Lightning's contenders log to the server when there is one.
        self.lightning_uri = server.uri if server is not None else self.local_uri

    # --- one run -----------------------------------------------------------------------------

    def run(self, contender: str) -> dict[str, float]:
        self.count += 1
        checkpoints = self.folder / f"ckpt-{self.count}"
        checkpoints.mkdir()
        try:
            if contender.startswith("lightning"):
                result = self.lightning(contender, checkpoints)
            else:
                result = self.plain(contender, checkpoints)
        finally:
            shutil.rmtree(checkpoints, ignore_errors=True)
        run_id = result.pop("run_id", None)
        if run_id:
            result["stored"] = self.collect(run_id)
        return result

    def plain(self, contender: str, checkpoints: Path) -> dict[str, Any]:
        torch.manual_seed(0)
        model = Net(self.buffer)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        http = contender.endswith("_http")
        uri = self.server.uri if http and self.server else self.local_uri
        blocked = 0.0
        log: Callable[[Path, int], None] = lambda path, epoch: None  # noqa: E731
        run_id = None
        began = time.perf_counter()
        if contender.startswith("mltrail"):
            trail = mltrail.start_run(
                experiment="checkpoints", tracking_uri=uri, flush_timeout=FLUSH_TIMEOUT
            )
            run_id = trail.run_id

            def log(path: Path, epoch: int) -> None:
                trail.log_checkpoint(path, step=epoch)

        elif contender.startswith("mlflow"):
            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment("checkpoints")
            run_id = mlflow.start_run().info.run_id

            def log(path: Path, epoch: int) -> None:
                mlflow.log_artifact(str(path), "checkpoints")

        started = time.perf_counter() - began
        for epoch in range(self.size["checkpoints"]):
            for x, y in self.data:
                optimizer.zero_grad()
                torch.nn.functional.mse_loss(model(x), y).backward()
                optimizer.step()
            path = checkpoints / f"epoch={epoch}.pt"
            torch.save({"epoch": epoch, "state_dict": model.state_dict()}, path)
            start = time.perf_counter()
            log(path, epoch)
            blocked += time.perf_counter() - start
        start = time.perf_counter()
        if contender.startswith("mltrail"):
            trail.end()
        elif contender.startswith("mlflow"):
            mlflow.end_run()
        done = time.perf_counter()
        return {
            "start_s": started,
            "blocked_s": blocked,
            "end_s": done - start,
            "wall_s": done - began,
            "run_id": run_id,
        }

    def lightning(self, contender: str, checkpoints: Path) -> dict[str, Any]:
        torch.manual_seed(0)
        spent = {"start": 0.0, "blocked": 0.0, "end": 0.0}
        callbacks: list[Any] = [
            ModelCheckpoint(dirpath=checkpoints, save_top_k=-1, every_n_epochs=1, monitor=None)
        ]
        logger: Any = False
        run_id: Callable[[], str | None] = lambda: None  # noqa: E731
        if contender == "lightning_trail":
            callback = TrailCallback(
                experiment="checkpoints",
                tracking_uri=self.lightning_uri,
                checkpoints="all",
                log_model=False,
                flush_timeout=FLUSH_TIMEOUT,
            )
            for name in dir(callback):
                if name.startswith("on_") and callable(getattr(callback, name)):
                    part = {"on_fit_start": "start", "on_fit_end": "end"}.get(name, "blocked")
                    setattr(callback, name, timed(getattr(callback, name), spent, part))
            callbacks.append(callback)
            run_id = lambda: callback.run_id  # noqa: E731
        elif contender == "lightning_mlflow_logger":
            logger = MLFlowLogger(
                experiment_name="checkpoints", tracking_uri=self.lightning_uri, log_model="all"
            )
            logger.after_save_checkpoint = timed(logger.after_save_checkpoint, spent, "blocked")
            logger.finalize = timed(logger.finalize, spent, "end")
            run_id = lambda: logger.run_id  # noqa: E731
        trainer = L.Trainer(
            max_epochs=self.size["checkpoints"],
            logger=logger,
            callbacks=callbacks,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            accelerator="cpu",
            devices=1,
            default_root_dir=str(checkpoints),
        )
        began = time.perf_counter()
        trainer.fit(Net(self.buffer), self.data)
        wall = time.perf_counter() - began
        return {
            "start_s": spent["start"],
            "blocked_s": spent["blocked"],
            "end_s": spent["end"],
            "wall_s": wall,
            "run_id": run_id(),
        }

    # --- checking and cleaning the store -------------------------------------------------------

    def collect(self, run_id: str) -> int:
        """Count the run's stored checkpoints, then delete its artifacts."""
        smallest = self.size["mb"] * 1_000_000 * 0.9
        stored = 0
        roots = [self.local_artifacts] + ([self.server.artifacts] if self.server else [])
        for root in roots:
            # <root>/<run_id> for an experiment's own location, <root>/<exp id>/<run_id> else
            for folder in [*root.glob(run_id), *root.glob(f"*/{run_id}")]:
                stored += sum(
                    1 for f in folder.rglob("*") if f.is_file() and f.stat().st_size >= smallest
                )
                shutil.rmtree(folder, ignore_errors=True)
        return stored


def timed(method: Callable[..., Any], spent: dict[str, float], part: str) -> Callable[..., Any]:
    """``method``, adding its time to ``spent[part]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[part] += time.perf_counter() - start

    return wrapper


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="3 x 20 MB, 2 repeats")
    mode.add_argument("--smoke", action="store_true", help="2 x 1 MB, 1 repeat")
    parser.add_argument("--checkpoints", type=int)
    parser.add_argument("--mb", type=int)
    parser.add_argument("--steps", type=int, help="optimizer steps between checkpoints")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--contenders", help="comma-separated subset (default: all)")
    args = parser.parse_args(argv)
    size = dict(SIZES["smoke" if args.smoke else "quick" if args.quick else "full"])
    size.update({k: v for k, v in vars(args).items() if k in size and v is not None})
    default = [c for c in CONTENDERS if not (args.smoke and c.endswith("_http"))]
    contenders = [c for c in (args.contenders or ",".join(default)).split(",") if c]
    if set(contenders) - set(CONTENDERS):
        parser.error(f"unknown contenders; choose from {', '.join(CONTENDERS)}")
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "mlflow", "mltrail", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(1)

    found: dict[str, dict[str, list[float]]] = {
        c: {"start_s": [], "blocked_s": [], "end_s": [], "wall_s": [], "stored": []}
        for c in contenders
    }
    with tempfile.TemporaryDirectory(prefix="mltrail-bench-checkpoints-") as tmp:
        folder = Path(tmp)
        os.environ["MLTRAIL_SPOOL_DIR"] = str(folder / "spool")
        cwd = os.getcwd()
        os.chdir(folder)  # Lightning and MLflow write relative folders
        # The server takes long to start on a busy machine: --smoke does without it.
        server = None
        if any(c.endswith("_http") for c in contenders) or not args.smoke:
            server = LocalServer(folder / "server")
            server.start()
        try:
            bench = Bench(folder, server, size)
            for repeat in range(size["repeats"]):
                shift = repeat % len(contenders)
                for contender in contenders[shift:] + contenders[:shift]:
                    result = bench.run(contender)
                    for key, value in result.items():
                        found[contender][key].append(value)
                    print(f"{contender:25s} {result}", file=sys.stderr, flush=True)
        finally:
            if server is not None:
                server.stop()
            os.chdir(cwd)

    expected = size["checkpoints"]
    report: dict[str, Any] = {
        "benchmark": "checkpoints",
        "checkpoints": expected,
        "checkpoint_mb": size["mb"] * 1.0,
        "steps_between_checkpoints": size["steps"],
        "repeats": size["repeats"],
        "lightning_store": "local server" if server is not None else "sqlite + local artifacts",
    }
    for key in ("start_s", "blocked_s", "end_s", "wall_s"):
        report[key] = {c: spread(v[key]) for c, v in found.items()}
    report["all_stored"] = {
        c: all(n >= expected for n in v["stored"]) for c, v in found.items() if v["stored"]
    }
    report["stored_counts"] = {c: v["stored"] for c, v in found.items() if v["stored"]}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
