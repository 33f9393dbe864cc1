"""The checkpoint helpers of the recording kernel (mltrail.adapters)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mltrail.adapters import SavedFile, mode_for, stable_copy, template_files


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


def test_a_checkpoint_folder_is_linked_uploaded_and_indexed(client, tmp_path: Path) -> None:
    import mltrail
    from mltrail.digest import tree_sha256

    source = tmp_path / "out" / "checkpoint-4"
    (source / "sub").mkdir(parents=True)
    (source / "model.safetensors").write_bytes(b"weights-4")
    (source / "sub" / "state.json").write_text("{}")
    folder = tmp_path / "copies"
    folder.mkdir()
    copy, digest = stable_copy(source, folder)
    assert digest is None
    (source / "model.safetensors").unlink()  # the framework rotates its checkpoints away
    assert (copy / "model.safetensors").read_bytes() == b"weights-4"
    with mltrail.start_run(experiment="core", capture=False, system_metrics=False) as trail:
        trail.log_checkpoint(copy, step=4, metrics={"eval_loss": 0.5}, aliases=("best", "latest"))
    listed = {a.path for a in client.list_artifacts(trail.run_id, "checkpoints/checkpoint-4")}
    assert listed == {"checkpoints/checkpoint-4/model.safetensors", "checkpoints/checkpoint-4/sub"}
    local = Path(client.download_artifacts(trail.run_id, "checkpoints/index.json"))
    entry = json.loads(local.read_text())["files"]["checkpoints/checkpoint-4"]
    assert entry["sha256"] == tree_sha256(copy) != tree_sha256(source)
    assert (entry["step"], entry["size"], entry["metrics"]) == (4, 11, {"eval_loss": 0.5})
    run = client.get_run(trail.run_id)
    assert run.data.tags["mltrail.checkpoint.best"] == "checkpoints/checkpoint-4"


def test_a_resumed_run_adds_to_its_checkpoint_index(client, tmp_path: Path, capsys) -> None:
    import mltrail

    first, second = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    first.write_bytes(b"1")
    second.write_bytes(b"2")
    quiet = {"capture": False, "system_metrics": False}
    with mltrail.start_run(experiment="core", **quiet) as trail:
        trail.log_checkpoint(first, step=0, aliases=("best", "latest"))
    with mltrail.start_run(run_id=trail.run_id, **quiet) as resumed:
        resumed.log_checkpoint(second, step=1)
    assert "Downloading artifacts" not in capsys.readouterr().err  # read quietly on resume
    local = Path(client.download_artifacts(trail.run_id, "checkpoints/index.json"))
    index = json.loads(local.read_text())
    assert sorted(index["files"]) == ["checkpoints/a.ckpt", "checkpoints/b.ckpt"]
    assert index["aliases"] == {"best": "checkpoints/a.ckpt", "latest": "checkpoints/b.ckpt"}


def test_template_files_are_those_a_checkpoint_path_template_names(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt [v1]"  # glob's special characters in the path are literal
    folder.mkdir()
    for name in ("model-01-0.50.keras", "model-02-0.40.keras", "model.keras", "other-01.keras"):
        (folder / name).write_text(name)
    template = folder / "model-{epoch:02d}-{val_loss:.2f}.keras"
    found = template_files([template, str(folder / "missing-{epoch}.keras")])
    assert sorted(Path(path).name for path in found) == [
        "model-01-0.50.keras",
        "model-02-0.40.keras",
    ]
    assert template_files([folder / "model.keras"]) == [str(folder / "model.keras")]


def test_a_saved_file_stand_in_saves_an_empty_file(tmp_path: Path) -> None:
    target = tmp_path / "data" / "model.keras"
    target.parent.mkdir()
    SavedFile().save(str(target), include_optimizer=True)
    assert target.read_bytes() == b""
