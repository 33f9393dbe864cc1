"""Kernel helpers for the model and the data of a training call: fit_arguments, example_io,
packages_of."""

from __future__ import annotations

import collections

import numpy as np

from mltrail import Trail
from mltrail.adapters import example_io, fit_arguments, packages_of


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


def test_packages_of_names_the_libraries_a_model_is_made_of():
    parts = [np.float64(1.0), collections.OrderedDict(), np.float64(2.0), Script(), Trail(), 3]
    assert packages_of(*parts) == ["collections", "numpy"]  # no builtins, script or mltrail
