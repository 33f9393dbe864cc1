"""Overhead of recording a Transformers Trainer training: no callback, mltrail, MLflow, DVCLive.

    python benchmarks/bench_transformers.py            # 300 steps (3 epochs of 100), 5 repeats
    python benchmarks/bench_transformers.py --quick    # 150 steps (3 epochs of 50), 3 repeats
    python benchmarks/bench_transformers.py --smoke    # 8 steps (2 epochs of 4), 1 repeat

Each variant trains the same tiny BERT classifier (2 layers, hidden size 32, built from a config:
nothing is downloaded) on random token ids, evaluating and logging once per epoch, saving no
checkpoints; the timed region is what a user's script spends: building the ``Trainer`` and
``trainer.train()``, which includes starting and ending the run. mltrail is
``callbacks=[TrailCallback(log_model=False)]``; the contenders are Transformers' own
integrations, ``report_to="mlflow"`` and ``report_to="dvclive"``, with their defaults. Variants
run interleaved, in a rotating order, after one untimed warm-up each, each tool with its own
local store; the JSON printed holds every time, the medians and ratios to no callback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import common

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
import transformers

VARIANTS = ("none", "mltrail", "mlflow", "dvclive")
CONTENDERS = ("mlflow", "dvclive")
BATCH = 8


class Tokens(torch.utils.data.Dataset):
    def __init__(self, rows: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, 200, (rows, 16), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": (self.ids[i][0] >= 100).long()}


def trainer(variant: str, root: Path, steps_per_epoch: int, epochs: int):
    """A function that runs one training the way a user of ``variant`` would."""
    folder = root / variant
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    train, val = Tokens(steps_per_epoch * BATCH), Tokens(2 * BATCH, seed=1)
    config = transformers.BertConfig(
        vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, num_labels=2,
    )  # fmt: skip

    def run() -> None:
        torch.manual_seed(0)
        callbacks = []
        if variant == "mltrail":
            from mltrail.integrations.transformers import TrailCallback

            callbacks.append(TrailCallback(experiment="bench", tracking_uri=uri, log_model=False))
        if variant == "mlflow":
            import mlflow

            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment("bench")
        args = transformers.TrainingArguments(
            output_dir=str(folder / "out"), num_train_epochs=epochs,
            per_device_train_batch_size=BATCH, eval_strategy="epoch", logging_strategy="epoch",
            save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
            report_to=variant if variant in CONTENDERS else "none",
        )  # fmt: skip
        model = transformers.BertForSequenceClassification(config)
        transformers.Trainer(
            model=model, args=args, train_dataset=train, eval_dataset=val, callbacks=callbacks
        ).train()

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="150 steps, 3 repeats")
    parser.add_argument("--smoke", action="store_true", help="8 steps, 1 repeat")
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    per_epoch = args.steps_per_epoch or (4 if args.smoke else 50 if args.quick else 100)
    epochs = args.epochs or (2 if args.smoke else 3)
    repeats = args.repeats or (1 if args.smoke else 3 if args.quick else 5)

    common.quiet()
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)  # every variant on the same single thread: steadier times
    modules = {"mlflow": "mlflow", "dvclive": "dvclive", "mltrail": "mltrail"}
    skipped = {v: why for v in VARIANTS if (why := common.unavailable(v, modules))}
    variants = [v for v in VARIANTS if v not in skipped]
    with common.scratch("bench-transformers-") as root:
        runs = {v: trainer(v, root, per_epoch, epochs) for v in variants}
        times = common.interleaved(runs, repeats, common.timed)

    summary = common.against(times, "none")
    checks = common.overhead_checks(summary, 0.03, CONTENDERS)
    return common.emit(
        {
            "benchmark": "transformers",
            "steps": per_epoch * epochs,
            "epochs": epochs,
            "batch_size": BATCH,
            "repeats": repeats,
            **summary,
            "checks": checks,
            "skipped": skipped,
            "environment": common.environment(
                transformers=transformers.__version__, torch=torch.__version__
            ),
        },
        args.output,
    )


if __name__ == "__main__":
    sys.exit(main())
