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
