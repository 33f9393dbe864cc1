"""Kernel pieces for callbacks of trainers that count global steps and save checkpoints when
they choose (the Transformers Trainer): the run's global steps across trainings and resumes,
a checkpoint the framework saved uploaded by the policy, the autolog patches of a trainer's
methods."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mltrail
from mltrail.adapters import (
    AutologCallbacks,
    BestTracker,
    CheckpointUploads,
    EpochLog,
    GlobalSteps,
    RunSession,
)

QUIET = {"capture": False, "system_metrics": False}


def step_history(client, run_id: str, key: str = "step/loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def train(session: RunSession, steps: GlobalSteps, global_steps: range) -> list[int | None]:
    """A training's step-level logs, as an adapter records them; the run steps they got."""
    epochs, got = EpochLog(session), []
    for global_step in global_steps:
        step = steps.step(global_step)
        got.append(step)
        if step is not None:
            epochs.log_step({"loss": 1.0 / global_step}, step)
            steps.logged(step)
    return got


def test_trainings_into_one_run_go_on_past_its_global_steps(client) -> None:
    with mltrail.start_run(experiment="trainer-pieces", **QUIET) as trail:
        for _ in range(2):  # two trainings into one given Trail, each counting from 0
            session = RunSession("demo", trail)
            steps = GlobalSteps(session)
            session.open()
            steps.start(0)
            train(session, steps, range(1, 4))
            session.end()
    assert step_history(client, trail.run_id) == [1, 2, 3, 5, 6, 7]
    assert client.get_run(trail.run_id).data.tags["mltrail.demo.global_step"] == "7"


def test_a_resumed_run_skips_the_steps_it_has_unless_it_was_rewound(client) -> None:
    session = RunSession("demo", None, {"experiment": "trainer-pieces", **QUIET})
    steps = GlobalSteps(session)
    trail = session.open()
    steps.start(0)
    for epoch in range(3):  # epochs 0..2, two global steps each
        trail.log_metrics({"loss": 1.0 / (epoch + 1)}, step=epoch)
        train(session, steps, range(2 * epoch + 1, 2 * epoch + 3))
    session.end()

    # From the checkpoint of epoch 2 (global step 4), in another process: the run goes on;
    # steps 5 and 6 it has (logged after that checkpoint) are not logged again.
    again = RunSession("demo", None, {"experiment": "trainer-pieces", **QUIET})
    resumed = GlobalSteps(again)
    assert again.open(run_id=trail.run_id, restart_step=3).restart == "continue"
    resumed.start(4)
    assert train(again, resumed, range(5, 9)) == [None, None, 7, 8]
    again.end()
    assert step_history(client, trail.run_id) == [1, 2, 3, 4, 5, 6, 7, 8]

    # Rewound to epoch 0 (fork=False): the retrained steps are logged again, as they now are.
    rewound = RunSession("demo", None, {"fork": False, **QUIET})
    rewind = GlobalSteps(rewound)
    assert rewound.open(run_id=trail.run_id, restart_step=1).restart == "rewind"
    rewind.start(2)
    assert train(rewound, rewind, range(3, 5)) == [3, 4]
    rewound.end()
    assert step_history(client, trail.run_id) == [1, 2, 3, 3, 4, 4, 5, 6, 7, 8]
    assert client.get_run(trail.run_id).data.tags["mltrail.demo.global_step"] == "4"


def checkpoint(folder: Path, name: str) -> Path:
    path = folder / name
    path.mkdir()
    (path / "weights.bin").write_bytes(name.encode())
    return path


@pytest.mark.parametrize("policy", ["all", "best"])
def test_a_checkpoint_the_framework_saved_goes_up_by_the_policy(client, tmp_path, policy) -> None:
    session = RunSession("demo", None, {"experiment": "trainer-pieces", **QUIET})
    uploads = CheckpointUploads(session, policy, link=True)
    best = BestTracker("eval_loss", "min")
    trail = session.open()
    saved = [
        uploads.upload_saved(checkpoint(tmp_path, "checkpoint-1"), 1, best, {}),  # no eval yet
        uploads.upload_saved(checkpoint(tmp_path, "checkpoint-2"), 2, best, {"eval_loss": 0.5}),
        uploads.upload_saved(checkpoint(tmp_path, "checkpoint-3"), 3, best, {"eval_loss": 0.7}),
        # The framework's own choice of the best wins over the tracker's.
        uploads.upload_saved(
            checkpoint(tmp_path, "checkpoint-4"), 4, best, {"eval_loss": 0.9}, framework_best=True
        ),
    ]
    session.end()
    mltrail.wait()
    index = json.loads(
        Path(client.download_artifacts(trail.run_id, "checkpoints/index.json")).read_text()
    )
    files = index["files"]
    if policy == "all":
        assert saved == [True, True, True, True]
        assert files["checkpoints/checkpoint-1"].get("metrics") in (None, {})
        assert files["checkpoints/checkpoint-3"]["metrics"] == {"eval_loss": 0.7}
    else:
        assert saved == [False, True, False, True]
        assert sorted(files) == ["checkpoints/checkpoint-2", "checkpoints/checkpoint-4"]
    assert files["checkpoints/checkpoint-2"]["step"] == 2
    assert files["checkpoints/checkpoint-2"]["metrics"] == {"eval_loss": 0.5}
    assert index["aliases"] == {
        "best": "checkpoints/checkpoint-4",
        "latest": "checkpoints/checkpoint-4",
    }
    assert best.best == 0.5  # the tracker kept its own best


class Recorder:
    def __init__(self, name: str = "autolog's") -> None:
        self.name = name


class Trainer:
    """A trainer that keeps its callbacks in a list of its own, under another name."""

    def __init__(self) -> None:
        self.handler: list = []
        self.seen: list[list] = []

    def train(self, epochs: int = 1) -> int:
        self.seen.append(list(self.handler))
        return epochs

    evaluate = train


def test_autolog_patches_of_a_trainers_methods() -> None:
    added = AutologCallbacks(Recorder, Recorder)

    def callbacks(trainer: Trainer) -> list:
        return trainer.handler

    train, later = added.training_patch(callbacks), added.later_patch(callbacks)
    fresh = added.later_patch(callbacks, or_new=True)
    trainer = Trainer()
    assert later(Trainer.evaluate, trainer) == 1 and trainer.seen[-1] == []  # no training yet
    assert train(Trainer.train, trainer, epochs=3) == 3
    (ours,) = trainer.seen[-1]
    assert isinstance(ours, Recorder) and trainer.handler == []
    later(Trainer.evaluate, trainer)
    assert trainer.seen[-1] == [ours]  # the training's callback again
    train(Trainer.train, trainer)
    assert trainer.seen[-1][0] is not ours  # a new training: a new callback
    other = Trainer()
    fresh(Trainer.evaluate, other)
    fresh(Trainer.evaluate, other)
    assert len(other.seen[0]) == 1 and other.seen[0] == other.seen[1]  # made once, then kept
