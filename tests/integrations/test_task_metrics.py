"""The kernel's task metrics (numpy alone) against scikit-learn's own metric functions, on
binary, multiclass, multilabel and regression targets, with and without sample weights."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn import metrics as m
from sklearn.datasets import load_iris, make_classification
from sklearn.linear_model import LogisticRegression

from mltrail.recording.task_metrics import (
    classification_metrics,
    confusion_counts,
    regression_metrics,
)

RNG = np.random.default_rng(7)


def _sklearn_classification(y, pred, proba, classes, weight):
    """The metrics as scikit-learn computes them; those it refuses or leaves undefined left out."""
    kw = {} if weight is None else {"sample_weight": weight}
    compute = {
        "accuracy": lambda: m.accuracy_score(y, pred, **kw),
        "precision": lambda: m.precision_score(y, pred, average="weighted", zero_division=0, **kw),
        "recall": lambda: m.recall_score(y, pred, average="weighted", zero_division=0, **kw),
        "f1": lambda: m.f1_score(y, pred, average="weighted", zero_division=0, **kw),
    }
    if proba is not None and np.ndim(y) == 1:
        compute["log_loss"] = lambda: m.log_loss(y, y_proba=proba, labels=classes, **kw)
        if proba.ndim == 2 and proba.shape[1] == 2:
            compute["roc_auc"] = lambda: m.roc_auc_score(y, proba[:, 1], **kw)
        else:
            compute["roc_auc"] = lambda: m.roc_auc_score(
                y, proba, multi_class="ovr", average="weighted", labels=classes, **kw
            )
    elif proba is not None:
        compute["roc_auc"] = lambda: m.roc_auc_score(y, proba, average="weighted", **kw)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, metric in compute.items():
            try:
                value = float(metric())
            except ValueError:
                continue
            if math.isfinite(value):
                out[name] = value
    return out


def _same(ours, theirs):
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, rel=1e-10, abs=1e-12), name


def _fitted(X, y):
    model = LogisticRegression(max_iter=500).fit(X, y)
    return model.predict(X), model.predict_proba(X), model.classes_


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(
    "case", ["binary", "binary_text", "multiclass", "multiclass_text", "class_missing", "ties"]
)
def test_classification_matches_scikit_learn(case, weighted):
    if case.startswith("binary"):
        X, y = make_classification(120, 5, random_state=1)
    else:
        X, y = load_iris(return_X_y=True)
    if case.endswith("text"):
        y = np.array(["cat", "dog", "eel"])[y]
    pred, proba, classes = _fitted(X, y)
    if case == "class_missing":  # the rows measured lack one class the model knows
        rows = y != 2
        X, y, pred, proba = X[rows], y[rows], pred[rows], proba[rows]
    if case == "ties":  # many equal scores: the curve's points take each tie at once
        proba = np.round(proba, 1)
        proba = proba / proba.sum(axis=1, keepdims=True)
    weight = RNG.uniform(0.1, 3.0, len(y)) if weighted else None
    ours = classification_metrics(y, pred, proba, classes, weight)
    _same(ours, _sklearn_classification(y, pred, proba, classes, weight))
    assert {"accuracy", "precision", "recall", "f1", "log_loss"} <= set(ours)
    assert "roc_auc" in ours


def test_one_class_present_leaves_roc_auc_out():
    y = np.ones(20, dtype=int)
    proba = np.column_stack([RNG.uniform(size=20), np.zeros(20)])
    proba[:, 1] = 1 - proba[:, 0]
    pred = (proba[:, 1] > 0.5).astype(int)
    ours = classification_metrics(y, pred, proba, np.array([0, 1]))
    _same(ours, _sklearn_classification(y, pred, proba, np.array([0, 1]), None))
    assert "roc_auc" not in ours and "accuracy" in ours


def test_multilabel_indicators():
    y = (RNG.uniform(size=(60, 4)) > 0.5).astype(int)
    proba = np.clip(y * 0.6 + RNG.uniform(size=y.shape) * 0.5, 0, 1)
    pred = (proba > 0.5).astype(int)
    ours = classification_metrics(y, pred, proba)
    _same(ours, _sklearn_classification(y, pred, proba, None, None))
    assert {"accuracy", "precision", "roc_auc"} <= set(ours)


def test_labels_of_mixed_types_give_no_metric():
    assert classification_metrics(np.array([0, 1, 1]), np.array(["a", "b", "b"])) == {}
    assert classification_metrics(np.array([0, 1]), np.array([0, 1, 1])) == {}  # lengths
    assert regression_metrics(np.array(["a", "b"]), np.array([1.0, 2.0])) == {}
    mixed = np.array([1, "a", 1], dtype=object)  # labels that do not sort: no per-label metric
    assert set(classification_metrics(mixed, mixed)) == {"accuracy"}


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("outputs", [1, 3])
def test_regression_matches_scikit_learn(outputs, weighted):
    y = RNG.normal(size=(50, outputs)).squeeze()
    pred = y + RNG.normal(scale=0.3, size=y.shape)
    weight = RNG.uniform(0.1, 2.0, 50) if weighted else None
    kw = {} if weight is None else {"sample_weight": weight}
    expected = {
        "mse": m.mean_squared_error(y, pred, **kw),
        "rmse": m.root_mean_squared_error(y, pred, **kw),
        "mae": m.mean_absolute_error(y, pred, **kw),
        "r2": m.r2_score(y, pred, **kw),
    }
    _same(regression_metrics(y, pred, weight), expected)


def test_constant_target_r2_is_finite_as_scikit_learns():
    y = np.full(10, 3.0)
    assert regression_metrics(y, y)["r2"] == m.r2_score(y, y) == 1.0
    assert regression_metrics(y, y + 1)["r2"] == m.r2_score(y, y + 1) == 0.0
    assert "r2" not in regression_metrics([1.0], [1.5])  # one row: undefined


def test_confusion_counts_match_scikit_learn():
    y = RNG.choice(["a", "b", "c", "d"], 200)
    pred = RNG.choice(["a", "b", "c", "z"], 200)
    for labels in (["a", "b", "c", "d"], ["c", "a"], ["d", "b", "a", "c", "z"]):
        expected = m.confusion_matrix(y, pred, labels=labels)
        assert np.array_equal(confusion_counts(y, pred, np.array(labels)), expected)
