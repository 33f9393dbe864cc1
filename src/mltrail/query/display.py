"""Plain text for the commands' output: numbers and aligned tables, the same in every verb
(``mltrail runs``, ``show``, ``verify``, ``diff``, ``reproduce``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def number(value: Any, digits: int = 6) -> str:
    """A metric value as printed: floats with ``digits`` significant digits ("nan", "inf"
    as such), a missing value as "-", anything else as it reads."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def table(rows: Sequence[Sequence[Any]]) -> str:
    """``rows`` (the first one the headers) as columns two spaces apart, left-aligned."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the last one "…" when something was cut."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…" if width > 0 else ""


def fit_items(items: Sequence[str], width: int, separator: str = "  ") -> str:
    """As many of ``items`` as fit in ``width`` characters, then "(+N)" for those left out."""
    shown: list[str] = []
    for index, item in enumerate(items):
        rest = len(items) - index - 1
        more = f"{separator}(+{rest})" if rest else ""
        candidate = separator.join([*shown, item])
        if len(candidate + more) > width:
            left = len(items) - len(shown)
            return separator.join([*shown, f"(+{left})"]) if shown else f"(+{left})"
        shown.append(item)
    return separator.join(shown)
