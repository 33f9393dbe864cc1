"""Plots that adapters log as images, drawn once for every framework.

The PNGs are drawn directly with Pillow (milliseconds each, no figure machinery): bars,
cells, points and text on an RGB image, with the axes, ticks and legends a reader needs. Nothing
here imports matplotlib, so an adapter never changes the user's backend or figure state, and
recording never pays for its import. The text uses Pillow's built-in scalable font (FreeType);
a Pillow built without FreeType falls back to its small bitmap font. Without Pillow there is no
plot (the caller counts the ImportError as one of its errors).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mltrail.recording.trail import Trail

logger = logging.getLogger("mltrail.plots")

_WHITE = (255, 255, 255)
_INK = (33, 33, 33)  # text
_MUTED = (110, 110, 110)  # notes, tick labels
_FRAME = (120, 120, 120)
_GRID = (232, 232, 232)
# matplotlib's tab10: the colours readers know from most plots.
_COLORS = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
# A "Blues" ramp for counts: white for none, dark blue for the most.
_BLUES = ((247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107))
_TITLE, _TEXT, _SMALL = 15, 12, 11  # font sizes
_LABEL_CHARS = 32  # longer feature names are shortened in the middle
_MAX_TEXT_CELLS = 20  # counts are written in the cells of a matrix up to this many labels


def preload_matplotlib() -> None:
    """Prepare plotting in a background thread, so that the first plot is quick.

    The name is historical: plots are drawn with Pillow and matplotlib is never imported.
    This imports Pillow and loads its font off the caller's thread; it is cheap and safe to
    call at every training's start.
    """
    if _font.cache_info().currsize == 0:
        threading.Thread(target=_preload, name="mltrail-preload", daemon=True).start()


def _preload() -> None:
    try:
        _font(_TEXT)
    except Exception:
        logger.debug("Pillow is not available: no plots", exc_info=True)


def log_importance(
    trail: Trail,
    scores: Mapping[str, Mapping[str, float]],
    name: str,
    title: str,
    *,
    plot: Callable[[Mapping[str, Mapping[str, float]], Path, str], None] | None = None,
) -> None:
    """Log importance scores as ``{name}.json`` and their bar plot as ``{name}.png``.

    The plot is drawn on the background thread (see :meth:`mltrail.Trail.log_image`); an error
    drawing it is counted as ``"<folder>: plotting <stem>"`` ("xgboost: plotting feature
    importance" for ``name="xgboost/feature_importance"``).

    Args:
        trail: the run.
        scores: per importance type ("gain", ...), the score of each feature (or parameter).
        name: the artifact path without its suffix (``"lightgbm/feature_importance"``).
        title: the plot's title.
        plot: draws the plot, with :func:`importance_plot`'s arguments (default that one).
    """
    draw = plot or importance_plot
    folder, _, stem = name.rpartition("/")
    trail.log_dict(scores, f"{name}.json")
    trail.log_image(
        lambda path: draw(scores, path, title),
        f"{name}.png",
        what=f"{folder or 'mltrail'}: plotting {stem.replace('_', ' ')}",
    )


def importance_plot(
    scores: Mapping[str, Mapping[str, float]], path: Path, title: str, top: int = 20
) -> None:
    """A bar plot of feature importance, saved as PNG to ``path``.

    Each importance type is drawn as its share of its own total (grouped bars, one colour per
    type, named in the legend). Scores that are NaN or infinite count as 0, and the legend
    says how many there were.

    Args:
        scores: per importance type ("gain", "weight", ...), the score of each feature; the
            first type orders the features.
        path: the PNG file to write.
        title: the plot's title.
        top: how many features to show, the most important first.
    """
    kinds = list(scores)
    clean: dict[str, dict[str, float]] = {}
    dropped: dict[str, int] = {}
    for kind in kinds:
        clean[kind], dropped[kind] = _finite_scores(scores[kind])
    first = clean[kinds[0]] if kinds else {}
    order = sorted(first, key=lambda name: -first[name])[: max(top, 0)]
    shares = {}
    for kind in kinds:
        total = sum(clean[kind].values()) or 1.0  # each type as its share of its own total
        shares[kind] = [clean[kind].get(name, 0.0) / total for name in order]

    font = _font(_TEXT)
    names = [_shorten(str(name), _LABEL_CHARS) for name in order]
    label_width = max((_width(name, font) for name in names), default=0)
    width = 680
    left = min(max(label_width + 18, 60), width // 2)
    right = width - 24
    legend = [
        (kind + (f" ({dropped[kind]} not finite, drawn as 0)" if dropped[kind] else ""), color)
        for kind, color in zip(kinds, itertools.cycle(_COLORS), strict=False)
    ]
    legend_rows = _legend_rows(legend, font, right - left)
    bar = max(4, min(9, 26 // max(len(kinds), 1)))
    row = max(_font_height(font) + 6, bar * max(len(kinds), 1) + 6)
    top_edge = 40 + 18 * len(legend_rows)
    plot_height = row * len(order) + 8 if order else 60
    height = top_edge + plot_height + 52
    canvas = _Canvas(width, height)
    canvas.title(title)
    for index, entries in enumerate(legend_rows):
        canvas.legend(entries, left, 36 + 18 * index, font)

    values = [v for kind in kinds for v in shares[kind]]
    low = min([0.0, *values])
    high = max([0.0, *values]) * 1.04 or 1.0  # room after the longest bar
    axes = _Axes(canvas, (left, top_edge, right, top_edge + plot_height), (low, high), (0, 1))
    ticks = _ticks(low, high, 5)
    axes.grid_x(ticks)
    if not order:
        canvas.text_at(
            (left + right) / 2, top_edge + plot_height / 2, "no feature scores", font, _MUTED, "mm"
        )
    for position, name in enumerate(names):
        y0 = top_edge + 4 + position * row + (row - bar * len(kinds)) / 2
        for index, (kind, color) in enumerate(zip(kinds, itertools.cycle(_COLORS), strict=False)):
            share = shares[kind][position]
            x0, x1 = sorted((axes.x(0.0), axes.x(share)))
            if x1 - x0 >= 0.5:
                canvas.draw.rectangle(
                    (x0, y0 + index * bar, x1, y0 + (index + 1) * bar - 1), fill=color
                )
        canvas.text_at(left - 8, top_edge + 4 + (position + 0.5) * row, name, font, _INK, "rm")
    axes.frame()
    axes.x_ticks(ticks, lambda value: _percent(value, ticks))
    shown = f"top {len(order)} of {len(first)} features" if len(first) > len(order) else ""
    axes.x_label("Share of each type's total" + (f" ({shown})" if shown else ""))
    canvas.save(path)


def confusion_matrix_plot(matrix: Any, labels: Sequence[Any], path: Path) -> None:
    """A confusion matrix (rows: true labels, columns: predicted ones) saved as PNG to
    ``path``: each cell's colour by its count (the scale beside it), the counts written in
    the cells up to 20 labels."""
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    if counts.ndim != 2:
        counts = counts.reshape(0, 0)
    size = min(counts.shape)
    counts = counts[:size, :size]
    names = [_shorten(str(label), 14) for label in list(labels)[:size]]
    names += [str(index) for index in range(len(names), size)]
    finite = np.where(np.isfinite(counts), counts, 0.0)
    most = float(finite.max()) if size else 0.0
    level = finite / most if most > 0 else np.zeros_like(finite)

    font, small = _font(_TEXT), _font(_SMALL)
    cell = max(24, min(96, 440 // max(size, 1))) if size <= _MAX_TEXT_CELLS else 0
    side = (cell * size or 200) if cell else min(max(size, 440), 480)
    step = max(1, math.ceil(size * (_font_height(small) + 5) / max(side, 1)))  # label stride
    shown = list(range(0, size, step))
    vertical = any(_width(names[i], small) > side / max(len(shown), 1) - 4 for i in shown)
    label_height = int(max((_width(names[i], small) for i in shown), default=0)) if vertical else 14
    left = int(max(max((_width(names[i], small) for i in shown), default=0) + 40, 70))
    top_edge = 44
    width = left + side + 90
    height = top_edge + side + label_height + 48
    canvas = _Canvas(width, height)
    canvas.title("Confusion matrix" + (f" ({size} labels)" if size > _MAX_TEXT_CELLS else ""))
    if not size:
        canvas.text_at(left + side / 2, top_edge + side / 2, "no labels", font, _MUTED, "mm")
        canvas.save(path)
        return
    from PIL import Image

    if size > side:  # more labels than pixels: each pixel shows the mean of its block
        edges = np.linspace(0, size, side + 1).astype(int)[:-1]
        blocks = np.add.reduceat(np.add.reduceat(level, edges, axis=0), edges, axis=1)
        sizes = np.diff(np.append(edges, size))
        level = blocks / np.outer(sizes, sizes)
    heat = Image.fromarray(_ramp(level, _BLUES)).resize((side, side), Image.Resampling.NEAREST)
    canvas.image.paste(heat, (left, top_edge))
    if cell:
        texts = [[_count_text(count) for count in row] for row in counts]
        fitted = _fit_font(max(itertools.chain(*texts), key=len), cell - 6, _TEXT)
        for (row, col), text in np.ndenumerate(np.array(texts, dtype=object)):
            color = _WHITE if level[row, col] > 0.5 else _INK
            x, y = left + (col + 0.5) * cell, top_edge + (row + 0.5) * cell
            canvas.text_at(x, y, text, fitted, color, "mm")
    canvas.draw.rectangle((left - 1, top_edge - 1, left + side, top_edge + side), outline=_FRAME)
    scale = side / size
    for index in shown:
        middle = (index + 0.5) * scale
        x, y = left + middle, top_edge + middle
        canvas.draw.line((x, top_edge + side, x, top_edge + side + 3), fill=_FRAME)
        canvas.draw.line((left - 4, y, left - 1, y), fill=_FRAME)
        canvas.text_at(left - 7, y, names[index], small, _INK, "rm")
        if vertical:
            canvas.vertical_text(x, top_edge + side + 6, names[index], small, _INK, "top")
        else:
            canvas.text_at(x, top_edge + side + 6, names[index], small, _INK, "mt")
    below = top_edge + side + label_height + 16
    canvas.text_at(left + side / 2, below, "Predicted label", font, _INK, "mt")
    canvas.vertical_text(12, top_edge + side / 2, "True label", font, _INK, "middle")
    _colour_scale(canvas, (left + side + 16, top_edge, left + side + 28, top_edge + side), most)
    canvas.save(path)


def residual_plot(y_true: Any, y_pred: Any, path: Path, max_points: int = 5000) -> None:
    """Residuals (true - predicted) against predicted values saved as PNG to ``path``; at
    most ``max_points`` of them, drawn at random with a fixed seed. Pairs with a value that
    is NaN or infinite are left out, and the title says how many."""
    import numpy as np

    y_true = np.asarray(y_true, dtype=float).ravel()
    y_pred = np.asarray(y_pred, dtype=float).ravel()
    if y_true.size != y_pred.size:
        raise ValueError(f"{y_true.size} true values but {y_pred.size} predictions")
    finite = np.isfinite(y_true) & np.isfinite(y_pred)
    skipped = int(finite.size - finite.sum())
    y_true, y_pred = y_true[finite], y_pred[finite]
    total = len(y_true)
    if total > max_points:
        keep = np.random.default_rng(0).choice(total, max_points, replace=False)
        y_true, y_pred = y_true[keep], y_pred[keep]
    residuals = y_true - y_pred
    notes = []
    if total > len(y_true):
        notes.append(f"{len(y_true)} of {total} points")
    if skipped:
        notes.append(f"{skipped} not finite, left out")
    title = "Residuals" + (f" ({'; '.join(notes)})" if notes else "")
    x_range = _span(y_pred)
    y_range = _span(np.concatenate([residuals, [0.0]]))
    canvas, axes = _chart(title, x_range, y_range, 560, 440)
    axes.scatter(y_pred, residuals, _COLORS[0], radius=2.6, alpha=0.45)
    axes.hline(0.0, _INK)
    axes.finish("Predicted value", "Residual (true - predicted)")
    if not total:
        axes.note("no finite values")
    canvas.save(path)


def log_history(
    trail: Trail,
    points: Iterable[tuple[int, float]],
    name: str,
    title: str,
    *,
    maximize: bool = False,
) -> None:
    """Log an optimisation history (:func:`history_plot`) as ``{name}.png``.

    The plot is drawn on the background thread (see :meth:`mltrail.Trail.log_image`); an error
    drawing it is counted as ``"<folder>: plotting the <stem>"`` ("optuna: plotting the
    optimization history" for ``name="optuna/optimization_history"``).

    Args:
        trail: the run.
        points: each complete trial's number and value (read now, drawn later).
        name: the artifact path without its suffix.
        title: the plot's title.
        maximize: whether higher values are better.
    """
    folder, _, stem = name.rpartition("/")
    trail.log_image(
        functools.partial(history_plot, list(points), title=title, maximize=maximize),
        f"{name}.png",
        what=f"{folder or 'mltrail'}: plotting the {stem.replace('_', ' ')}",
    )


def history_plot(
    points: Iterable[tuple[int, float]], path: Path, title: str, *, maximize: bool = False
) -> None:
    """An optimisation history saved as PNG to ``path``: each trial's value by trial number
    and the best value so far (as Optuna plots it). Values that are NaN or infinite are left
    out, and the title says how many.

    Args:
        points: each complete trial's number and value.
        path: the PNG file to write.
        title: the plot's title.
        maximize: whether higher values are better.
    """
    pairs = list(points)
    kept = [
        (float(n), v) for n, v in ((n, _number_or_nan(v)) for n, v in pairs) if math.isfinite(v)
    ]
    skipped = len(pairs) - len(kept)
    numbers, values = [n for n, _ in kept], [v for _, v in kept]
    best = list(itertools.accumulate(values, max if maximize else min))
    if skipped:
        title += f" ({skipped} not finite, left out)"
    legend = [("value", _COLORS[0]), ("best so far", _COLORS[1])] if kept else []
    x_range = _span(numbers, integer=True)
    canvas, axes = _chart(title, x_range, _span(values), 680, 440, legend, integer_x=True)
    axes.scatter(numbers, values, _COLORS[0], radius=3.0, alpha=0.8)
    if best:
        xs = [*numbers, axes.x_range[1]]
        line = [(axes.x(xs[0]), axes.y(best[0]))]
        for index, value in enumerate(best):  # a step after each trial, as the best changes
            line += [(axes.x(xs[index + 1]), axes.y(value))]
            if index + 1 < len(best):
                line += [(axes.x(xs[index + 1]), axes.y(best[index + 1]))]
        canvas.draw.line(line, fill=_COLORS[1], width=2)
    axes.finish("Trial", "Objective value", integer_x=True)
    if not kept:
        axes.note("no finite values")
    canvas.save(path)


# --- drawing ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _font(size: int) -> Any:
    """Pillow's scalable default font at ``size`` pixels; its bitmap font without FreeType."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # no FreeType, or Pillow < 10.1
        return ImageFont.load_default()


def _text(text: str, font: Any) -> str:
    """What ``font`` can draw of ``text``: the bitmap font knows Latin-1 only."""
    from PIL import ImageFont

    if isinstance(font, ImageFont.FreeTypeFont):
        return text
    return text.encode("latin-1", "replace").decode("latin-1")


def _width(text: str, font: Any) -> float:
    return float(font.getlength(_text(text, font)))


def _font_height(font: Any) -> int:
    """The height of a line of text in ``font``, in pixels."""
    box = font.getbbox("Ag")
    return int(box[3] - box[1])


def _fit_font(text: str, width: float, size: int) -> Any:
    """The largest font up to ``size`` (down to 8 px) in which ``text`` fits ``width``."""
    font = _font(size)
    while size > 8 and _width(text, font) > width:
        size -= 1
        font = _font(size)
    return font


def _shorten(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, its middle left out: names of features often
    differ at their start (a prefix) and at their end (a category)."""
    text = " ".join(text.split())  # no newlines or tabs in a label
    if len(text) <= limit:
        return text
    head = (limit - 3 + 1) // 2
    return text[:head] + "..." + text[len(text) - (limit - 3 - head) :]


class _Canvas:
    """A white RGB picture with text helpers that place text by its own bounding box (the
    bitmap fallback font has no anchors)."""

    def __init__(self, width: int, height: int) -> None:
        from PIL import Image, ImageDraw

        self.image = Image.new("RGB", (int(width), int(height)), _WHITE)
        self.draw = ImageDraw.Draw(self.image)

    def text_at(
        self, x: float, y: float, text: str, font: Any, fill: Any, anchor: str = "la"
    ) -> None:
        """Draw ``text`` at ``x, y``: ``anchor`` is horizontal (l, m, r) then vertical (t, m,
        b, or a for the top of the text), as in Pillow's anchors."""
        from PIL import ImageFont

        if isinstance(font, ImageFont.FreeTypeFont):  # placed by FreeType: one call, no bbox
            self.draw.text((x, y), text, font=font, fill=fill, anchor=anchor)
            return
        text = _text(text, font)
        box = self.draw.textbbox((0, 0), text, font=font)
        width, height = box[2] - box[0], box[3] - box[1]
        dx = {"l": 0.0, "m": width / 2, "r": width}[anchor[0]]
        dy = {"a": 0.0, "t": 0.0, "m": height / 2, "b": height}[anchor[1]]
        self.draw.text((x - dx - box[0], y - dy - box[1]), text, font=font, fill=fill)

    def vertical_text(self, x: float, y: float, text: str, font: Any, fill: Any, at: str) -> None:
        """Draw ``text`` turned to read upwards, centred on ``x``; its top at ``y`` (``at``
        "top") or its middle (``at`` "middle")."""
        from PIL import Image, ImageDraw

        text = _text(text, font)
        box = self.draw.textbbox((0, 0), text, font=font)
        width, height = int(box[2] - box[0]) + 2, int(box[3] - box[1]) + 2
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).text((1 - box[0], 1 - box[1]), text, font=font, fill=255)
        mask = mask.transpose(Image.Transpose.ROTATE_90)
        top = y if at == "top" else y - width / 2
        self.image.paste(fill, (round(x - height / 2), round(top)), mask)

    def title(self, text: str) -> None:
        font = _font(_TITLE)
        text = _shorten(text, int(self.image.width / (0.55 * _TITLE)))
        self.text_at(self.image.width / 2, 12, text, font, _INK, "mt")

    def legend(
        self,
        entries: Sequence[tuple[str, Any]],
        x: float,
        y: float,
        font: Any,
    ) -> None:
        """One row of coloured squares and names from ``x, y``."""
        widths = [_width(name, font) for name, _ in entries]
        for (name, color), width in zip(entries, widths, strict=True):
            self.draw.rectangle((x, y + 1, x + 11, y + 11), fill=color)
            self.text_at(x + 16, y + 6, name, font, _INK, "lm")
            x += width + 28

    def save(self, path: Path) -> None:
        # The fastest compression: half the time of the default for a file about 20% larger
        # (a palette image would be smaller still, but Pillow's fast quantizer bands colours).
        self.image.save(path, format="PNG", compress_level=1)


def _legend_rows(
    entries: Sequence[tuple[str, Any]], font: Any, width: float
) -> list[list[tuple[str, Any]]]:
    """``entries`` split into rows that fit ``width``."""
    rows: list[list[tuple[str, Any]]] = []
    used = 0.0
    for name, color in entries:
        needed = _width(name, font) + 28
        if not rows or (rows[-1] and used + needed > width):
            rows.append([])
            used = 0.0
        rows[-1].append((name, color))
        used += needed
    return rows


class _Axes:
    """A plot area ``box`` (left, top, right, bottom pixels) showing ``x_range`` by
    ``y_range``."""

    def __init__(
        self,
        canvas: _Canvas,
        box: tuple[float, float, float, float],
        x_range: tuple[float, float],
        y_range: tuple[float, float],
    ) -> None:
        self.canvas, self.box = canvas, box
        self.x_range, self.y_range = x_range, y_range

    def x(self, value: float) -> float:
        left, _, right, _ = self.box
        low, high = self.x_range
        return left + (value - low) / (high - low) * (right - left)

    def y(self, value: float) -> float:
        _, top, _, bottom = self.box
        low, high = self.y_range
        return bottom - (value - low) / (high - low) * (bottom - top)

    def grid_x(self, ticks: Sequence[float]) -> None:
        _, top, _, bottom = self.box
        for tick in ticks:
            self.canvas.draw.line((self.x(tick), top, self.x(tick), bottom), fill=_GRID)

    def grid_y(self, ticks: Sequence[float]) -> None:
        left, _, right, _ = self.box
        for tick in ticks:
            self.canvas.draw.line((left, self.y(tick), right, self.y(tick)), fill=_GRID)

    def frame(self) -> None:
        left, top, right, bottom = self.box
        self.canvas.draw.rectangle((left, top, right, bottom), outline=_FRAME)

    def x_ticks(self, ticks: Sequence[float], label: Callable[[float], str]) -> None:
        _, _, _, bottom = self.box
        small = _font(_SMALL)
        for tick in ticks:
            x = self.x(tick)
            self.canvas.draw.line((x, bottom, x, bottom + 4), fill=_FRAME)
            self.canvas.text_at(x, bottom + 7, label(tick), small, _MUTED, "mt")

    def y_ticks(self, ticks: Sequence[float], label: Callable[[float], str]) -> None:
        left = self.box[0]
        small = _font(_SMALL)
        for tick in ticks:
            y = self.y(tick)
            self.canvas.draw.line((left - 4, y, left, y), fill=_FRAME)
            self.canvas.text_at(left - 7, y, label(tick), small, _MUTED, "rm")

    def x_label(self, text: str) -> None:
        left, _, right, bottom = self.box
        self.canvas.text_at((left + right) / 2, bottom + 26, text, _font(_TEXT), _INK, "mt")

    def hline(self, value: float, color: Any) -> None:
        left, _, right, _ = self.box
        self.canvas.draw.line((left, self.y(value), right, self.y(value)), fill=color, width=1)

    def note(self, text: str) -> None:
        left, top, right, bottom = self.box
        middle = ((left + right) / 2, (top + bottom) / 2)
        self.canvas.text_at(*middle, text, _font(_TEXT), _MUTED, "mm")

    def scatter(
        self, xs: Any, ys: Any, color: Sequence[int], *, radius: float, alpha: float
    ) -> None:
        """Round, antialiased, translucent points, blended where they overlap; drawn with
        numpy as a whole (thousands of points cost a few milliseconds)."""
        import numpy as np
        from PIL import Image

        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if not xs.size:
            return
        left, top, right, bottom = (int(v) for v in self.box)
        width, height = right - left - 1, bottom - top - 1  # inside the frame
        x_low, x_high = self.x_range
        y_low, y_high = self.y_range
        # Pixel coordinates inside the frame; a pixel's centre is at its integer coordinate.
        cx = (xs - x_low) / (x_high - x_low) * (right - left) - 1
        cy = (y_high - ys) / (y_high - y_low) * (bottom - top) - 1
        ix, iy = np.floor(cx).astype(np.int64), np.floor(cy).astype(np.int64)
        fx, fy = cx - ix, cy - iy
        edge = math.floor(radius + 0.5)  # pixels up to radius + 0.5 from a point are touched
        reach = np.arange(-edge, edge + 2)
        dx, dy = reach[None, :, None], reach[None, None, :]  # (point, dx, dy) below
        fx, fy = fx[:, None, None], fy[:, None, None]
        cover = np.clip(radius + 0.5 - np.hypot(dx - fx, dy - fy), 0.0, 1.0) * min(alpha, 0.999)
        x = np.broadcast_to(ix[:, None, None] + dx, cover.shape)
        y = np.broadcast_to(iy[:, None, None] + dy, cover.shape)
        inside = (cover > 0) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
        # A pixel's transparency is the product over the points covering it: sum the logs.
        log_clear = np.bincount(
            y[inside] * width + x[inside],
            weights=np.log1p(-cover[inside]),
            minlength=width * height,
        )
        touched = np.flatnonzero(log_clear)
        opacity = -np.expm1(log_clear[touched])[:, None]
        region = (left + 1, top + 1, left + 1 + width, top + 1 + height)
        pixels = np.array(self.canvas.image.crop(region)).reshape(-1, 3)
        blended = pixels[touched] * (1.0 - opacity) + np.asarray(color, dtype=float) * opacity
        pixels[touched] = blended.round().astype(np.uint8)
        self.canvas.image.paste(Image.fromarray(pixels.reshape(height, width, 3)), region[:2])

    def finish(self, x_label: str, y_label: str, *, integer_x: bool = False) -> None:
        """The frame, both axes' ticks and labels (drawn last, over the points)."""
        x_ticks = [t for t in _ticks(*self.x_range, 6) if not integer_x or t == int(t)]
        y_ticks = _ticks(*self.y_range, 5)
        self.frame()
        self.x_ticks(x_ticks, lambda value: _number(value, x_ticks))
        self.y_ticks(y_ticks, lambda value: _number(value, y_ticks))
        self.x_label(x_label)
        _, top, _, bottom = self.box
        self.canvas.vertical_text(12, (top + bottom) / 2, y_label, _font(_TEXT), _INK, "middle")


def _chart(
    title: str,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    width: int,
    height: int,
    legend: Sequence[tuple[str, Any]] = (),
    *,
    integer_x: bool = False,
) -> tuple[_Canvas, _Axes]:
    """A canvas with a title, a ``legend`` row under it and a grid-lined plot area, its left
    margin fitting the y tick labels."""
    y_ticks = _ticks(*y_range, 5)
    small = _font(_SMALL)
    label_width = max((_width(_number(t, y_ticks), small) for t in y_ticks), default=0)
    left = int(label_width) + 44
    canvas = _Canvas(width, height)
    canvas.title(title)
    top = 40
    if legend:  # above the plot: inside, it would hide points
        canvas.legend(legend, left, 36, _font(_TEXT))
        top = 60
    axes = _Axes(canvas, (left, top, width - 20, height - 52), x_range, y_range)
    x_ticks = [t for t in _ticks(*x_range, 6) if not integer_x or t == int(t)]
    axes.grid_x(x_ticks)  # first: the points and lines go over the grid
    axes.grid_y(y_ticks)
    return canvas, axes


def _colour_scale(canvas: _Canvas, box: tuple[int, int, int, int], most: float) -> None:
    """A vertical colour scale from 0 (bottom) to ``most`` (top) with its ticks."""
    import numpy as np
    from PIL import Image

    left, top, right, bottom = box
    levels = np.linspace(1.0, 0.0, bottom - top).reshape(-1, 1).repeat(right - left, axis=1)
    canvas.image.paste(Image.fromarray(_ramp(levels, _BLUES)), (left, top))
    canvas.draw.rectangle((left - 1, top - 1, right, bottom), outline=_FRAME)
    high = most if most > 0 else 1.0
    ticks = _ticks(0.0, high, 4)
    small = _font(_SMALL)
    for tick in ticks:
        y = bottom - tick / high * (bottom - top)
        canvas.draw.line((right, y, right + 3, y), fill=_FRAME)
        canvas.text_at(right + 6, y, _number(tick, ticks), small, _MUTED, "lm")


def _ramp(level: Any, stops: Sequence[tuple[int, int, int]]) -> Any:
    """RGB bytes for levels in 0..1, interpolated between colour ``stops``."""
    import numpy as np

    level = np.clip(np.asarray(level, dtype=float), 0.0, 1.0)
    anchors = np.linspace(0.0, 1.0, len(stops))
    channels = [np.interp(level, anchors, [s[c] for s in stops]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


# --- numbers ---------------------------------------------------------------------------------


def _finite_scores(scores: Mapping[str, Any]) -> tuple[dict[str, float], int]:
    """``scores`` as floats, those that are not finite numbers as 0, and how many there were."""
    clean, dropped = {}, 0
    for name, score in scores.items():
        value = _number_or_nan(score)
        if not math.isfinite(value):
            value, dropped = 0.0, dropped + 1
        clean[name] = value
    return clean, dropped


def _number_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _span(values: Any, *, integer: bool = False) -> tuple[float, float]:
    """A padded range showing all ``values`` (0..1 when there are none)."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    if not values.size:
        return (0.0, 1.0)
    low, high = float(values.min()), float(values.max())
    if high == low:
        pad = 1.0 if integer or low == 0 else abs(low) * 0.1
        return (low - pad, high + pad)
    pad = (high - low) * 0.05
    if integer:
        pad = max(pad, 0.5)
    return (low - pad, high + pad)


def _ticks(low: float, high: float, count: int) -> list[float]:
    """About ``count`` round tick values (1, 2, 2.5 or 5 times a power of ten) in
    ``low..high``."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / max(count, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)
    first = math.ceil(low / step - 1e-9)
    ticks = []
    for index in itertools.count(first):
        value = index * step
        if value > high + step * 1e-9:
            break
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
    return ticks


def _number(value: float, ticks: Sequence[float]) -> str:
    """A tick label with as many decimals as the ticks' spacing needs."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(value) or 1.0
    largest = max((abs(t) for t in ticks), default=0.0)
    if largest >= 1e6 or (0 < step < 1e-4):
        return f"{value:.3g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if round(step * 10**decimals, 6) % 1:  # 2.5, 0.25: one more decimal
        decimals += 1
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text


def _percent(value: float, ticks: Sequence[float]) -> str:
    return _number(value * 100, [t * 100 for t in ticks]) + "%"


def _count_text(count: float) -> str:
    if not math.isfinite(count):
        return str(count)
    if count == int(count):
        return str(int(count))
    return f"{count:.3g}"
