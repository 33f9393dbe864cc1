"""Transformers: add ``TrailCallback`` to the Trainer's callbacks; the training becomes an MLflow run.

    python examples/transformers_example.py            # a small BERT classifier, 3 epochs
    python examples/transformers_example.py --quick    # seconds: 2 tiny epochs, no model files

The model is built from a config and the tokenizer from a vocabulary written here, so nothing
is downloaded. What you get: the TrainingArguments that change results, the model's config and
parameter counts, per-epoch evaluation at step = epoch, the per-step training loss under
``step/``, each ``checkpoint-N`` folder under ``checkpoints/`` (best and latest aliases), the
final model with its tokenizer in MLflow's transformers flavor, and the git commit of this code.
``trainer.train(resume_from_checkpoint=...)`` continues the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers

from mltrail.integrations.transformers import TrailCallback

WORDS = [f"w{i}" for i in range(60)]


class Sentences(torch.utils.data.Dataset):
    """Random sentences; the label says whether "w7" occurs in the first half."""

    def __init__(self, tokenizer, rows: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        picks = torch.randint(0, len(WORDS), (rows, 12), generator=generator)
        texts = [" ".join(WORDS[i] for i in row) for row in picks.tolist()]
        self.labels = [int(7 in row[:6]) for row in picks.tolist()]
        self.encoded = tokenizer(texts, padding="max_length", max_length=16, truncation=True)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {k: torch.tensor(v[i]) for k, v in self.encoded.items()}
        return {**item, "labels": torch.tensor(self.labels[i])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="examples-transformers")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 tiny epochs, no model files")
    parser.add_argument("--output-dir", default=None, help="checkpoints (default: a temp folder)")
    args = parser.parse_args()

    work = Path(args.output_dir or tempfile.mkdtemp(prefix="mltrail-transformers-"))
    work.mkdir(parents=True, exist_ok=True)
    vocab = work / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab))
    config = transformers.BertConfig(
        vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, num_labels=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    rows = 32 if args.quick else 512
    training = transformers.TrainingArguments(
        output_dir=str(work / "out"), num_train_epochs=2 if args.quick else args.epochs,
        per_device_train_batch_size=16, learning_rate=3e-3, warmup_steps=2,
        eval_strategy="epoch", save_strategy="no" if args.quick else "epoch",
        logging_steps=1 if args.quick else 10, save_total_limit=2, load_best_model_at_end=not
        args.quick, metric_for_best_model="loss", report_to="none", use_cpu=True,
        disable_tqdm=True, seed=0,
    )  # fmt: skip
    callback = TrailCallback(experiment=args.experiment, log_model=not args.quick)
    trainer = transformers.Trainer(
        model=model,
        args=training,
        train_dataset=Sentences(tokenizer, rows, seed=0),
        eval_dataset=Sentences(tokenizer, rows // 4, seed=1),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.train()
    print(f"eval_loss {trainer.evaluate()['eval_loss']:.4f}, run {callback.run_id}")
    print(f"See the run: mltrail show {callback.run_id}")


if __name__ == "__main__":
    main()
