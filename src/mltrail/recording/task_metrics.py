"""The standard metrics of a fitted classifier or regressor on given rows, with numpy alone.

The definitions are scikit-learn's (``accuracy_score``, ``precision_recall_fscore_support``
with ``average="weighted", zero_division=0``, ``log_loss``, ``roc_auc_score`` one-vs-rest
weighted, ``mean_squared_error`` and its root, ``mean_absolute_error``, ``r2_score``), and so
are the results. Its functions validate their inputs for milliseconds each: recorded after a
fit, beside the script's next one, they held the interpreter lock that fit needed (a third of a
0.5 s grid search's time under mltrail). A metric that does not apply to the targets (one class
present, labels of mixed types, probabilities that are not) is left out, and so is a value that
is not finite.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("mltrail.task_metrics")


def classification_metrics(
    y: Any, pred: Any, proba: Any = None, classes: Any = None, weight: Any = None
) -> dict[str, float]:
    """accuracy, precision, recall, f1 (weighted by support), log_loss and roc_auc of a
    classifier's ``pred`` (and ``proba``, its ``predict_proba`` whose columns are ``classes``)
    against the labels ``y``; ``y`` may be a label indicator matrix (multilabel)."""
    import numpy as np

    y, pred = np.asarray(y), np.asarray(pred)
    try:
        w = None if weight is None else np.asarray(weight, dtype=float)
    except (TypeError, ValueError):
        return {}
    if y.shape != pred.shape or y.ndim not in (1, 2):
        return {}
    if y.ndim == 2 and not (_indicator(y) and _indicator(pred)):
        return {}  # several outputs of several classes each: scikit-learn has none of these
    if _is_text(y) != _is_text(pred):
        return {}  # labels of mixed types: no label matches
    out: dict[str, Callable[[], Any]] = {
        "accuracy": lambda: np.average(
            (y == pred) if y.ndim == 1 else np.all(y == pred, axis=1), weights=w
        ),
    }
    try:
        support = _support(y, pred, w)
    except (TypeError, ValueError) as error:  # labels that do not sort (mixed objects)
        logger.debug("precision, recall and f1 not computed: %s", error)
        support = None
    if support is not None:
        for index, name in enumerate(("precision", "recall", "f1")):
            out[name] = lambda index=index: support[index]
    if proba is not None and y.ndim == 1:
        out["log_loss"] = lambda: _log_loss(y, np.asarray(proba), classes, w)
        out["roc_auc"] = lambda: _roc_auc(y, np.asarray(proba), classes, w)
    elif proba is not None:
        out["roc_auc"] = lambda: _mean_auc(y.astype(bool), np.asarray(proba), w)
    return _finite(out)


def regression_metrics(y: Any, pred: Any, weight: Any = None) -> dict[str, float]:
    """mse, rmse, mae and r2 of a regressor's ``pred`` against ``y`` (several outputs: the
    mean over them, as scikit-learn's ``multioutput="uniform_average"``)."""
    import numpy as np

    try:
        y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
        w = None if weight is None else np.asarray(weight, dtype=float)
    except (TypeError, ValueError):  # targets that are not numbers
        return {}
    y, pred = y.reshape(len(y), -1), pred.reshape(len(pred), -1)
    if y.shape != pred.shape or not len(y):
        return {}
    squared = np.average((y - pred) ** 2, axis=0, weights=w)
    return _finite(
        {
            "mse": lambda: np.average(squared),
            "rmse": lambda: np.average(np.sqrt(squared)),
            "mae": lambda: np.average(np.average(np.abs(y - pred), axis=0, weights=w)),
            "r2": lambda: _r2(y, pred, w),
        }
    )


def confusion_counts(y: Any, pred: Any, labels: Any) -> Any:
    """Counts of each (true, predicted) pair of ``labels``, rows true, as scikit-learn's
    ``confusion_matrix``; rows whose labels are not among ``labels`` are left out."""
    import numpy as np

    labels = np.asarray(labels)
    ti, tok = _positions(labels, np.asarray(y))
    pi, pok = _positions(labels, np.asarray(pred))
    kept = tok & pok
    count = len(labels)
    cells = np.bincount(ti[kept] * count + pi[kept], minlength=count * count)
    return cells.reshape(count, count)


def _finite(metrics: dict[str, Callable[[], Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, metric in metrics.items():
        try:
            value = float(metric())
        except Exception as error:  # not applicable to these targets; not an mltrail error
            logger.debug("metric %s not computed: %s", name, error)
            continue
        if math.isfinite(value):
            out[name] = value
    return out


def _is_text(values: Any) -> bool:
    return values.dtype.kind in "OUS"


def _indicator(values: Any) -> bool:
    import numpy as np

    return values.dtype.kind in "biuf" and bool(np.isin(values, (0, 1)).all())


def _positions(labels: Any, values: Any) -> tuple[Any, Any]:
    """Where each of ``values`` is in ``labels``, and whether it is there at all."""
    import numpy as np

    order = np.argsort(labels, kind="stable")
    ordered = labels[order]
    found = np.searchsorted(ordered, values).clip(0, len(labels) - 1)
    return order[found], ordered[found] == values


def _support(y: Any, pred: Any, w: Any) -> tuple[float, float, float] | None:
    """Precision, recall and f1 per label, averaged weighted by each label's true count
    (counted per label, never as a rows-by-labels table: a million rows of a thousand classes
    stay a million numbers)."""
    import numpy as np

    weights = np.ones(len(y)) if w is None else w
    if y.ndim == 2:  # label indicators: each column a label
        truth, guess = y.astype(bool), pred.astype(bool)
        true_sum, pred_sum, hits = weights @ truth, weights @ guess, weights @ (truth & guess)
    else:
        labels = np.unique(np.concatenate([y, pred]))
        true_at, pred_at = _positions(labels, y)[0], _positions(labels, pred)[0]
        right = true_at == pred_at
        count = len(labels)
        true_sum = np.bincount(true_at, weights=weights, minlength=count)
        pred_sum = np.bincount(pred_at, weights=weights, minlength=count)
        hits = np.bincount(true_at[right], weights=weights[right], minlength=count)
    total = true_sum.sum()
    if total == 0:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_sum > 0, hits / pred_sum, 0.0)
        recall = np.where(true_sum > 0, hits / true_sum, 0.0)
        both = pred_sum + true_sum
        f1 = np.where(both > 0, 2 * hits / both, 0.0)
    return tuple(float((score * true_sum).sum() / total) for score in (precision, recall, f1))


def _log_loss(y: Any, proba: Any, classes: Any, w: Any) -> float:
    import numpy as np

    proba = proba.astype(proba.dtype if proba.dtype.kind == "f" else float)
    if proba.max() > 1 or proba.min() < 0:
        return math.nan  # not probabilities
    labels = np.unique(y if classes is None else np.asarray(classes))
    if proba.ndim == 1:
        proba = proba[:, None]
    if proba.shape[1] == 1:
        proba = np.concatenate([1 - proba, proba], axis=1)
    if len(labels) < 2 or proba.shape[1] != len(labels) or not np.isin(y, labels).all():
        return math.nan
    eps = np.finfo(proba.dtype).eps
    chosen = proba[np.arange(len(y)), _positions(labels, y)[0]]  # each row's true class
    loss = -np.log(np.clip(chosen, eps, 1 - eps))
    return float(np.average(loss, weights=w))


def _roc_auc(y: Any, proba: Any, classes: Any, w: Any) -> float:
    """Two columns: the second one's scores; more: each class against the rest, weighted by
    its count (the columns are ``classes``, which hold every label in ``y``)."""
    import numpy as np

    present = np.unique(y)
    if proba.ndim == 2 and proba.shape[1] == 2:
        if len(present) != 2:
            return math.nan
        return _auc(y == present[1], proba[:, 1], w)
    labels = present if classes is None else np.unique(np.asarray(classes))
    if (
        proba.ndim != 2
        or proba.shape[1] != len(labels)
        or not np.isin(present, labels).all()
        or not np.allclose(proba.sum(axis=1), 1)
    ):
        return math.nan
    return _mean_auc(y[:, None] == labels, proba, w)


def _mean_auc(truth: Any, scores: Any, w: Any) -> float:
    """The binary AUC of each column of ``truth`` by the same column of ``scores``, averaged
    weighted by each column's count of positives (a column without any counts nothing)."""
    import numpy as np

    if scores.shape != truth.shape:
        return math.nan
    counts = (np.ones(len(truth)) if w is None else w) @ truth
    if np.isclose(counts.sum(), 0.0):
        return 0.0
    areas = [
        _auc(truth[:, column], scores[:, column], w) if counts[column] else 0.0
        for column in range(truth.shape[1])
    ]
    return float(np.average(areas, weights=counts))


def _auc(positive: Any, score: Any, w: Any) -> float:
    """The area under the ROC curve of ``score`` ranking ``positive`` rows first (the curve's
    points at each distinct score, ties together), as trapezoids."""
    import numpy as np

    if len(np.unique(positive)) != 2:
        return math.nan  # one class present: undefined
    order = np.argsort(score, kind="mergesort")[::-1]
    score, positive = score[order], positive[order]
    weights = np.ones(len(score)) if w is None else w[order]
    last_of_ties = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
    true_positives = np.cumsum(weights * positive)[last_of_ties]
    false_positives = np.cumsum(weights * ~positive)[last_of_ties]
    with np.errstate(divide="ignore", invalid="ignore"):  # all of a class weighted 0: NaN
        tpr = np.r_[0, true_positives] / true_positives[-1]
        fpr = np.r_[0, false_positives] / false_positives[-1]
    return float((np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0).sum())


def _r2(y: Any, pred: Any, w: Any) -> float:
    import numpy as np

    if len(y) < 2:
        return math.nan
    weights = np.ones((len(y), 1)) if w is None else w[:, None]
    residual = (weights * (y - pred) ** 2).sum(axis=0)
    spread = (weights * (y - np.average(y, axis=0, weights=w)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # a constant target: 1 when predicted exactly, else 0 (scikit-learn's force_finite)
        scores = np.where(spread != 0, 1 - residual / spread, np.where(residual == 0, 1.0, 0.0))
    return float(np.average(scores))
