"""Keras 3: add ``TrailCallback`` to ``fit``'s callbacks; the training becomes an MLflow run.

    python examples/keras_example.py              # a small classifier on 8x8 digits
    python examples/keras_example.py --quick      # seconds: 2 epochs, no model files

What you get: fit arguments and optimizer settings, per-epoch metrics (step = epoch) with the
learning rate, the best checkpoint by ``val_loss`` under ``checkpoints/``, EarlyStopping's
outcome, the model under ``model/`` (Keras flavor) and the git commit of this code. Works on
any Keras backend; without one configured this example uses PyTorch.
"""

from __future__ import annotations

import argparse
import importlib.util
import os

if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("tensorflow") is None:
    os.environ["KERAS_BACKEND"] = "torch"

import keras
from sklearn.datasets import load_digits

from mltrail.integrations.keras import TrailCallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="examples-keras")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2 epochs, no model files")
    args = parser.parse_args()
    epochs = 2 if args.quick else args.epochs

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callback = TrailCallback(
        experiment=args.experiment,
        checkpoints="none" if args.quick else "best",
        log_model=not args.quick,
    )
    model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=64,
        validation_split=0.2,
        callbacks=[callback, keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)],
        verbose=0,
    )
    print(f"run {callback.run_id}")
    print(f"See the run: mltrail show {callback.run_id}")


if __name__ == "__main__":
    main()
