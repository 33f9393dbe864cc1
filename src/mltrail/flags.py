"""Boolean switches in environment variables: one meaning of "on" for every flag mltrail reads
(``MLTRAIL_STRICT``, ``MLTRAIL_AUTOLOG``, boolean ``MLTRAIL_<OPTION>``, ...).

A leaf module: :mod:`mltrail.errors` reads the strict-mode switch with it, and
:mod:`mltrail.config` (which imports :mod:`mltrail.errors`) its boolean options.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: The values that turn a switch on (any case, surrounding spaces ignored); anything else is off.
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def is_true(text: str) -> bool:
    """True when ``text`` says "on": 1, true, yes or on."""
    return text.strip().lower() in TRUE_WORDS


def env_flag(name: str, default: bool = False, environ: Mapping[str, str] | None = None) -> bool:
    """The switch ``name`` of the environment (``os.environ`` unless ``environ`` is given).

    Args:
        name: the variable's full name, such as ``MLTRAIL_STRICT``.
        default: the value when the variable is unset or empty.
        environ: the environment to read.
    """
    value = (os.environ if environ is None else environ).get(name)
    if value is None or not value.strip():
        return default
    return is_true(value)
