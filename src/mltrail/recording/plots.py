"""Plots that adapters log as images, drawn once for every framework.

matplotlib is imported lazily and drawn on an Agg canvas without pyplot, so an adapter never
changes the user's backend or global figure state; without matplotlib there is no plot (the
caller counts the ImportError as one of its errors).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

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
