"""The kernel's checkpoint uploads, save budget and per-epoch saves (mltrail.adapters), and
to_numpy."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from mltrail.adapters import (
    BestTracker,
    CheckpointFile,
    CheckpointUploads,
    DeferredSave,
    EpochCheckpoints,
    MltrailError,
    RunSession,
    SaveBudget,
    aliases_for,
    to_numpy,
)


def _write(path: Path, content: bytes, mtime: int) -> str:
    path.write_bytes(content)
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))  # an order that does not hang on the clock
    return str(path)


def test_changed_framework_files_are_uploaded_once_with_their_step_metrics_and_aliases(
    client, tmp_path: Path
) -> None:
    session = RunSession("core", None, {"capture": False, "system_metrics": False})
    uploads = CheckpointUploads(session, "best_and_last", link=False)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    old = _write(folder / "old.ckpt", b"from before", 100)
    uploads.baseline([old])
    a = _write(folder / "a.ckpt", b"a at 3", 200)
    missing = str(folder / "not-written-yet.ckpt")
    assert not uploads.active  # no run yet: nothing is taken, nothing is marked seen
    assert uploads.upload_changed([a], 3) == []

    session.open()
    b = _write(folder / "b.ckpt", b"b at 3", 300)
    best = {a: CheckpointFile(metrics={"val_loss": 0.25}, best=True)}
    assert uploads.upload_changed([old, b, a, missing], 3, best.get) == [a, b]
    _write(folder / "a.ckpt", b"a rewritten", 400)  # in place, while the upload may go on
    assert uploads.upload_changed([old, a, b], 4, latest=False) == [a]
    assert uploads.upload_changed([old, a, b], 5) == []
    own = tmp_path / "last.ckpt"
    own.write_bytes(b"saved by the adapter")
    uploads.upload(own, 5, aliases=aliases_for(False), copy=False)
    run_id = session.trail.run_id
    session.end()

    index = json.loads(
        Path(client.download_artifacts(run_id, "checkpoints/index.json")).read_text()
    )
    files = index["files"]
    assert sorted(files) == ["checkpoints/a.ckpt", "checkpoints/b.ckpt", "checkpoints/last.ckpt"]
    # a.ckpt went up twice; its entry is the second upload, of its rewritten content.
    assert (files["checkpoints/a.ckpt"]["step"], files["checkpoints/a.ckpt"]["source"]) == (4, a)
    assert files["checkpoints/a.ckpt"]["sha256"] == hashlib.sha256(b"a rewritten").hexdigest()
    assert files["checkpoints/b.ckpt"]["sha256"] == hashlib.sha256(b"b at 3").hexdigest()
    assert index["aliases"] == {"best": "checkpoints/a.ckpt", "latest": "checkpoints/last.ckpt"}
    run = client.get_run(run_id)
    assert run.data.tags["mltrail.checkpoint.best"] == "checkpoints/a.ckpt"


def test_the_policy_says_which_checkpoints_are_wanted() -> None:
    session = RunSession("core")
    assert [CheckpointUploads(session, p, link=True).wanted(False) for p in ("best", "all")] == [
        False,
        True,
    ]
    assert CheckpointUploads(session, "best", link=True).wanted(True)
    assert not CheckpointUploads(session, "none", link=True).wanted(True)
    assert aliases_for(True) == ("best", "latest")
    with pytest.raises(MltrailError, match="best_and_last"):
        CheckpointUploads(session, "some", link=True)


def test_a_save_waits_for_the_budget_with_the_state_kept_once() -> None:
    model = {"w": 1}
    captured: list[int] = []
    saved: list[tuple[int, str, int]] = []

    def capture() -> int:
        captured.append(model["w"])
        return model["w"]

    def save(step: int, metrics: str) -> None:
        saved.append((step, metrics, model["w"]))

    restore = lambda state: model.update(w=state)  # noqa: E731
    waiting = DeferredSave(SaveBudget(0.0, first_guess=1.0), capture, restore)  # never fits
    waiting.offer(1, "epoch 1")
    waiting.write(save, current=1)
    model["w"] = 2  # training goes on
    waiting.write(save, current=2)
    assert (saved, captured, waiting.step) == ([], [1], 1)
    waiting.write(save, force=True, current=2)  # training ends
    assert saved == [(1, "epoch 1", 1)]  # the kept state, put back for the save ...
    assert model["w"] == 2 and waiting.step is None  # ... and the model as it was
    assert captured == [1, 2]

    free = DeferredSave(SaveBudget(1.0, first_guess=0.0), capture, restore)  # always fits
    free.offer(3, "epoch 3")
    free.write(save, current=3)
    assert saved[-1] == (3, "epoch 3", 2) and captured == [1, 2]  # straight from the model
    free.offer(4, "epoch 4")
    free.drop()
    free.write(save, force=True)
    assert len(saved) == 2


def test_the_budget_counts_the_time_of_saves_that_succeed() -> None:
    budget = SaveBudget(0.5)
    with budget.timed():
        time.sleep(0.01)
    assert budget.spent >= 0.01
    spent = budget.spent
    with pytest.raises(OSError), budget.timed():
        raise OSError("disk full")
    assert budget.spent == spent


def test_to_numpy_takes_tensors_frames_and_their_containers() -> None:
    pd = pytest.importorskip("pandas")
    torch = pytest.importorskip("torch")
    tensor = torch.ones(2, 3, requires_grad=True) * 2
    converted = to_numpy({"x": tensor, "rest": (torch.zeros(1, dtype=torch.bfloat16), [1.5])})
    assert isinstance(converted["x"], np.ndarray) and converted["x"].tolist() == [[2.0] * 3] * 2
    half, plain = converted["rest"]
    assert half.dtype == np.float32 and [float(v) for v in plain] == [1.5]
    frame = pd.DataFrame({"a": [1, 2]})
    assert to_numpy(frame).tolist() == [[1], [2]]
    assert to_numpy(None) is None


class Model:
    """A model whose state is one number, saved as JSON."""

    def __init__(self, session: RunSession) -> None:
        self.weight, self.session = 0.0, session

    def write(self, stem: str) -> Path:
        path = self.session.temp_dir() / f"{stem}.json"
        path.write_text(json.dumps({"weight": self.weight}))
        return path

    def restore(self, weight: float) -> None:
        self.weight = weight


def _epochs(policy: str, losses: list[float], *, failed: bool = False) -> tuple[str, Model]:
    """A training with ``losses`` whose saves never fit the budget, checkpointed by ``policy``."""
    session = RunSession("core", None, {"capture": False, "system_metrics": False})
    model = Model(session)
    saves = EpochCheckpoints(
        CheckpointUploads(session, policy, link=False),
        BestTracker("loss", "min"),
        SaveBudget(0.0),  # only what the end forces is written
        model.write,
        lambda path: None,
        lambda: model.weight,
        model.restore,
    )
    session.open()
    saves.start()
    for step, loss in enumerate(losses):
        model.weight = float(step)  # what this epoch trained
        saves.epoch_end(step, {"loss": loss})
    saves.training_end(len(losses) - 1, failed=failed, restored=False)
    run_id = session.trail.run_id
    session.end()
    return run_id, model


def _checkpoints(client, run_id: str) -> tuple[dict, dict]:
    folder = Path(client.download_artifacts(run_id, "checkpoints"))
    index = json.loads((folder / "index.json").read_text())
    weights = {
        name: (entry["step"], json.loads((folder.parent / name).read_text())["weight"])
        for name, entry in index["files"].items()
    }
    return weights, index["aliases"]


def test_the_best_epoch_waits_in_memory_and_the_last_follows_at_the_end(client) -> None:
    run_id, model = _epochs("best_and_last", [1.0, 0.5, 0.7])
    weights, aliases = _checkpoints(client, run_id)
    # best.json holds epoch 1's weights, kept when the budget refused its save.
    assert weights == {"checkpoints/best.json": (1, 1.0), "checkpoints/last.json": (2, 2.0)}
    assert aliases == {"best": "checkpoints/best.json", "latest": "checkpoints/last.json"}
    assert model.weight == 2.0  # the training's model put back

    run_id, _ = _epochs("best_and_last", [1.0, 0.5], failed=True)
    weights, aliases = _checkpoints(client, run_id)
    assert weights == {"checkpoints/best.json": (1, 1.0)}  # no last after a failure


def test_every_epoch_with_all_and_nothing_with_none(client) -> None:
    run_id, _ = _epochs("all", [1.0, 0.5, 0.7])
    weights, aliases = _checkpoints(client, run_id)
    assert weights == {f"checkpoints/epoch-{i:04d}.json": (i, float(i)) for i in range(3)}
    assert aliases == {
        "best": "checkpoints/epoch-0001.json",
        "latest": "checkpoints/epoch-0002.json",  # each epoch's file is the latest
    }
    run_id, _ = _epochs("none", [1.0, 0.5])
    assert client.list_artifacts(run_id, "checkpoints") == []
