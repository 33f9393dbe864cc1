"""Plots that adapters log as images, drawn once for every framework.

matplotlib is imported lazily and drawn on an Agg canvas without pyplot, so an adapter never
changes the user's backend or global figure state; without matplotlib there is no plot (the
caller counts the ImportError as one of its errors).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("mltrail.plots")


def preload_matplotlib() -> None:
    """Start importing matplotlib in a background thread (a framework that releases the GIL
    while it trains hides the import), so that plotting at the end of training is quick."""
    if "matplotlib.figure" not in sys.modules:
        threading.Thread(target=_import_matplotlib, name="mltrail-preload", daemon=True).start()


def _import_matplotlib() -> None:
    try:
        import matplotlib.backends.backend_agg
        import matplotlib.figure  # noqa: F401
    except Exception:
        logger.debug("matplotlib is not available: no plots", exc_info=True)


def importance_plot(
    scores: Mapping[str, Mapping[str, float]], path: Path, title: str, top: int = 20
) -> None:
    """A bar plot of feature importance, saved as PNG to ``path``.

    Args:
        scores: per importance type ("gain", "weight", ...), the score of each feature; the
            first type orders the features.
        path: the PNG file to write.
        title: the plot's title.
        top: how many features to show, the most important first.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    first = next(iter(scores.values()), {})
    order = sorted(first, key=first.get, reverse=True)[:top][::-1]  # type: ignore[arg-type]
    width = max((len(name) for name in order), default=1)
    figure = Figure(figsize=(7, max(3.0, 0.32 * len(order) + 1.4)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = np.arange(len(order))
    height = 0.8 / max(len(scores), 1)
    for index, (kind, values) in enumerate(scores.items()):
        total = sum(values.values()) or 1.0  # each type as its share of its own total
        shares = [values.get(name, 0.0) / total for name in order]
        axes.barh(positions + (1 - index) * height, shares, height=height, label=kind)
    axes.set_yticks(positions, order)
    axes.set_title(title)
    axes.legend(ncol=len(scores), loc="upper center", bbox_to_anchor=(0.5, -0.06), frameon=False)
    # One panel and a margin from the label length: cheaper than tight_layout.
    figure.subplots_adjust(
        left=min(0.5, 0.04 + 0.013 * width),
        right=0.97,
        top=1 - 0.45 / figure.get_figheight(),
        bottom=0.8 / figure.get_figheight(),  # room for the tick labels and the legend
    )
    figure.savefig(path, dpi=80)


def confusion_matrix_plot(matrix: Any, labels: Sequence[Any], path: Path) -> None:
    """A confusion matrix (rows: true labels, columns: predicted ones) saved as PNG to
    ``path``, with the counts written in the cells up to 20 labels."""
    import numpy as np

    matrix = np.asarray(matrix)
    axes = _axes()
    axes.imshow(matrix, cmap="Blues")
    ticks = range(len(labels))
    axes.set_xticks(ticks, [str(label) for label in labels], rotation=45, ha="right")
    axes.set_yticks(ticks, [str(label) for label in labels])
    if len(labels) <= 20:
        middle = (matrix.max() + matrix.min()) / 2  # imshow spans min..max: dark above
        for (row, col), count in np.ndenumerate(matrix):
            color = "white" if count > middle else "black"
            axes.text(col, row, str(count), ha="center", va="center", color=color)
    axes.set(xlabel="Predicted label", ylabel="True label", title="Confusion matrix")
    axes.figure.savefig(path, format="png")


def residual_plot(y_true: Any, y_pred: Any, path: Path, max_points: int = 5000) -> None:
    """Residuals (true - predicted) against predicted values saved as PNG to ``path``; at
    most ``max_points`` of them, drawn at random with a fixed seed."""
    import numpy as np

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) > max_points:
        keep = np.random.default_rng(0).choice(len(y_true), max_points, replace=False)
        y_true, y_pred = y_true[keep], y_pred[keep]
    axes = _axes()
    axes.scatter(y_pred, y_true - y_pred, s=8, alpha=0.5)
    axes.axhline(0.0, color="black", linewidth=1)
    axes.set(xlabel="Predicted value", ylabel="Residual (true - predicted)", title="Residuals")
    axes.figure.savefig(path, format="png")


def _axes() -> Any:
    """One panel of a small figure of its own (no pyplot: thread-safe, no backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4.5), dpi=80)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.2, bottom=0.2, right=0.95, top=0.9)  # tight_layout is slow
    return figure.subplots()
