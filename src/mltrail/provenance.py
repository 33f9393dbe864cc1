"""Provenance capture at run start (git, DVC, environment); filled in by the capture modules."""

from __future__ import annotations

from typing import Any


def capture_run(trail: Any) -> Any:
    return None
