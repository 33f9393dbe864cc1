"""The adapter kernel in spawned workers: a pickled RunSession and its EpochLog, and the
PyTorch flavor arguments (what Lightning's ``ddp_spawn`` needs of the kernel)."""

from __future__ import annotations

import importlib.metadata
import pickle

import pytest

import mltrail
from mltrail.adapters import EpochLog, RunSession, pinned_requirements, pytorch_flavor_kwargs


def test_a_copy_with_copies_join_records_into_the_given_run(client):
    with mltrail.start_run(experiment="session-copies", capture=False) as trail:
        session = RunSession("demo", trail, copies_join=True)
        epochs = EpochLog(session)  # a session, not a lambda: it pickles
        copied, copied_epochs = pickle.loads(pickle.dumps((session, epochs)))
        assert copied.given is None and copied.trail is None  # the live Trail stayed here
        joined = copied.open()
        assert joined is not trail and joined.run_id == trail.run_id and not copied.owns
        copied_epochs.start()
        copied_epochs.log(0, {"loss": 0.5})  # follows the copy's session, into its run
        copied.end()
        assert client.get_run(trail.run_id).info.status == "RUNNING"  # left to its owner
    assert [(m.step, m.value) for m in client.get_metric_history(trail.run_id, "loss")] == [
        (0, 0.5)
    ]
    assert client.get_run(trail.run_id).data.tags["mltrail.framework"] == "demo"


def test_a_copy_without_copies_join_starts_a_run_of_its_own(client):
    with mltrail.start_run(experiment="session-copies", capture=False) as trail:
        copied = pickle.loads(pickle.dumps(RunSession("demo", trail)))
        own = copied.open()
        assert own.run_id != trail.run_id and copied.owns
        copied.end()
    assert client.get_run(own.run_id).info.status == "FINISHED"


@pytest.mark.parametrize(
    ("version", "expected"),
    [("3.11.0", {"serialization_format": "pickle"}), ("3.10.2", {}), ("2.22.1", {})],
)
def test_pytorch_flavor_kwargs_pickle_where_mlflow_offers_the_choice(
    monkeypatch, version, expected
):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: version)
    assert pytorch_flavor_kwargs() == expected


def test_pytorch_flavor_kwargs_pin_torch_and_the_packages_named() -> None:
    with_pins = pytorch_flavor_kwargs("numpy")
    # cloudpickle: the flavor's pickle module, which loading the model needs
    assert with_pins["pip_requirements"] == pinned_requirements("torch", "cloudpickle", "numpy")
    assert with_pins["pip_requirements"][0].startswith("torch==")
    assert with_pins.items() >= pytorch_flavor_kwargs().items()
