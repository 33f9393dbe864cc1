"""The checkpoint helpers of the recording kernel (mltrail.adapters)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mltrail.adapters import mode_for, stable_copy


@pytest.mark.parametrize(
    ("metric", "mode"),
    [
        ("val_loss", "min"),
        ("val_accuracy", "max"),
        ("top_k_categorical_accuracy", "max"),
        ("val_AUC", "max"),
        ("map@5", "max"),
        ("val_r2", "max"),
        ("merror", "min"),
        # "mape" contains "map", but it is an error: smaller is better.
        ("val_mape", "min"),
        ("mean_absolute_percentage_error", "min"),
    ],
)
def test_auto_mode_follows_the_metric_name(metric: str, mode: str) -> None:
    assert mode_for(metric) == mode
    assert mode_for(metric, "max") == "max"  # an explicit mode wins


def test_a_copy_keeps_its_content_when_the_file_is_rewritten_in_place(tmp_path: Path) -> None:
    source = tmp_path / "user.keras"
    source.write_bytes(b"epoch 1")
    folder = tmp_path / "copies"
    folder.mkdir()
    copy, digest = stable_copy(source, folder, link=False)
    with open(source, "r+b") as file:  # what Keras' ModelCheckpoint does to its file
        file.write(b"epoch 2")
    assert copy.read_bytes() == b"epoch 1"
    assert digest == hashlib.sha256(b"epoch 1").hexdigest()
