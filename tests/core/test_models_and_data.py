"""Kernel helpers for the model and the data of a training call: fit_arguments, example_io,
packages_of, input_rows, arrays_digest, log_weights."""

from __future__ import annotations

import collections
import json
import logging
import sys
from pathlib import Path

import numpy as np

import mltrail
from mltrail import Trail
from mltrail.adapters import (
    arrays_digest,
    data_digest,
    example_io,
    fit_arguments,
    input_rows,
    log_weights,
    packages_of,
)


class Estimator:
    def fit(self, X, y=None, sample_weight=None, **fit_params):
        return self

    def fit_transform(self, X, *, copy=True):
        return X


def test_fit_arguments_binds_the_call_by_the_methods_signature():
    model = Estimator()
    X, y = [[1.0]], [0]
    assert fit_arguments(Estimator.fit, model, (X, y), {"sample_weight": None, "tol": 1}) == (
        X,
        y,
        {"sample_weight": None, "tol": 1},
    )
    assert fit_arguments(Estimator.fit, model, (), {"X": X}) == (X, None, {})
    # No y in the signature: the second parameter is not taken for targets.
    assert fit_arguments(Estimator.fit_transform, model, (X,), {"copy": False}) == (
        X,
        None,
        {"copy": False},
    )
    # A call that does not bind: the first two positional arguments.
    assert fit_arguments(Estimator.fit, model, (X, y, None, 4), {}) == (X, y, {})


def test_example_io_takes_the_head_and_its_output():
    data = np.arange(20.0).reshape(10, 2)
    example, output = example_io(data, lambda rows: rows.sum(axis=1))
    assert example.shape == (5, 2) and list(output) == [1.0, 5.0, 9.0, 13.0, 17.0]
    assert example_io(data, None) == (None, None)
    assert example_io(None, len) == (None, None)

    def broken(rows):
        raise ValueError("odd input")

    assert example_io(data, broken) == (None, None)


class Script:
    __module__ = "__main__"


class ScriptArray(np.ndarray):
    """A class written in the script, on a library's base class."""

    __module__ = "__main__"


def test_packages_of_names_the_libraries_a_model_is_made_of():
    parts = [np.float64(1.0), collections.OrderedDict(), np.float64(2.0), Script(), Trail(), 3]
    # no standard library, script or mltrail
    assert packages_of(*parts) == ["numpy"]
    # the script's class needs the library of its base
    assert packages_of(np.zeros(2).view(ScriptArray), Script()) == ["numpy"]


def test_the_script_s_own_modules_are_no_packages(tmp_path, monkeypatch):
    """A model class from ``nets.py`` beside the script is not pinned, nor looked for among
    the installed distributions; its installed base's package is."""
    (tmp_path / "nets.py").write_text("import numpy as np\nclass Net(np.ndarray):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "nets", raising=False)
    import nets

    assert packages_of(np.zeros(2).view(nets.Net)) == ["numpy"]
    # A module in the project named as an installed distribution is that package (the
    # project installed with pip install -e .): it is pinned.
    (tmp_path / "pyyaml.py").write_text("class Loader:\n    pass\n")
    monkeypatch.delitem(sys.modules, "pyyaml", raising=False)
    import pyyaml

    assert packages_of(pyyaml.Loader()) == ["pyyaml"]


class Loader:
    """A loader that can be iterated again (a torch DataLoader): batches of (x, y)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def __iter__(self):
        for start in range(0, len(self.data), 4):
            yield self.data[start : start + 4], self.data[start : start + 4, 0]


def test_input_rows_takes_a_few_rows_of_a_training_calls_input():
    data = np.arange(40.0).reshape(20, 2)
    assert input_rows(data).shape == (5, 2)
    assert input_rows((data, data[:, 0])).shape == (5, 2)  # (x, y): x
    rows = input_rows({"a": data, "b": data[:, :1]})  # a multi-input model's dict
    assert rows["a"].shape == (5, 2) and rows["b"].shape == (5, 1)
    assert input_rows(Loader(data)).shape == (4, 2)  # the first batch of a loader
    assert input_rows(iter(Loader(data))) is None  # a generator would lose the batch
    assert input_rows([data, data]) is None  # several inputs: no tensor signature
    assert input_rows(None) is None


def test_arrays_digest_reads_arrays_and_leaves_loaders_unknown():
    x, y = np.arange(12.0).reshape(6, 2), np.arange(6)
    assert arrays_digest(x, y, None) == data_digest(x, y, None) != "unknown"
    assert arrays_digest(x, y) != arrays_digest(x, y[::-1])
    assert arrays_digest(Loader(x), y) == "unknown"
    assert arrays_digest(None) == arrays_digest() == "unknown"


class Net:
    """A model that its framework cannot save whole."""

    def save_weights(self, path: str) -> None:
        Path(path).write_bytes(b"weights")


def test_log_weights_logs_the_weights_and_the_class_with_one_warning(client, tmp_path, caplog):
    with (
        caplog.at_level(logging.WARNING, logger="mltrail"),
        mltrail.start_run(experiment="core", capture=False, system_metrics=False) as trail,
    ):
        log_weights(
            trail,
            tmp_path / "model",
            Net(),
            lambda path: Net().save_weights(str(path)),
            "model.weights.h5",
            versions={"toy": "1.0"},
            why="has no architecture",
            how="give it one",
        )
    listed = {a.path for a in client.list_artifacts(trail.run_id, "model")}
    assert listed == {"model/model.weights.h5", "model/class.json"}
    folder = Path(client.download_artifacts(trail.run_id, "model", str(tmp_path / "back")))
    kind = json.loads((folder / "class.json").read_text())
    assert kind == {"class": f"{__name__}.Net", "toy": "1.0"}
    warned = [r.getMessage() for r in caplog.records if "has no architecture" in r.getMessage()]
    assert len(warned) == 1 and "model/model.weights.h5" in warned[0] and "give it one" in warned[0]
