"""Progress of the CLI's long operations (``push``, ``sync``, ``reproduce``, ``checkout``):
bytes and files done, with a rate, drawn by tqdm on stderr.

Shown only when both stdout and stderr are terminals and ``--json`` was not given. The
environment variable ``MLTRAIL_PROGRESS`` overrides the terminal check: ``1`` shows progress
anyway (for example in a CI log), ``0`` never shows it; ``--json`` always turns it off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

ENV = "MLTRAIL_PROGRESS"
_ON = {"1", "true", "yes", "on", "always"}
_OFF = {"0", "false", "no", "off", "never"}


def wanted(json_output: bool = False) -> bool:
    """Whether to show progress: never with ``--json``, else as ``MLTRAIL_PROGRESS`` says,
    else only on a terminal."""
    if json_output:
        return False
    setting = os.environ.get(ENV, "").strip().lower()
    if setting in _ON:
        return True
    if setting in _OFF:
        return False
    return _isatty(sys.stdout) and _isatty(sys.stderr)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def _fixed_width() -> int | None:
    """None to follow the terminal's width; a width where the terminal reports none (a
    pseudo-terminal nobody sized, MLTRAIL_PROGRESS=1 off a terminal)."""
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    return None if columns > 0 else 100


class Progress:
    """One progress line: bytes (with a rate) and a count of items (files, runs, objects).

    A disabled ``Progress`` does nothing, so callers need no branches. Thread-safe: DVC
    reports transfers from its worker threads.

    Args:
        desc: what is being done, e.g. ``"checkout"``.
        enabled: draw the line (see :func:`wanted`).
        total_bytes: the bytes to do, when known (then a percentage and an estimate show).
        total_items: the items to do, when known.
        unit: the name of an item, plural (``"files"``, ``"runs"``).
    """

    def __init__(
        self,
        desc: str,
        *,
        enabled: bool,
        total_bytes: int | None = None,
        total_items: int | None = None,
        unit: str = "files",
    ) -> None:
        self.enabled = enabled
        self.items = 0
        self.total_items = total_items
        self.unit = unit
        self._lock = threading.Lock()
        self._desc = desc
        self._total_bytes = total_bytes
        self._bar: Any = None
        self._closed = False

    def _line(self) -> Any:
        """The tqdm line, drawn at the first report (nothing shows for work that reports
        nothing); None when disabled or closed. The lock is held."""
        if self._bar is None and self.enabled and not self._closed:
            from tqdm import tqdm

            width = _fixed_width()
            self._bar = tqdm(
                desc=self._desc,
                total=self._total_bytes,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                dynamic_ncols=width is None,
                ncols=width,
                nrows=None if width is None else 24,  # tqdm hides lines below a 0-row screen
                leave=True,
                mininterval=0.2,
                position=0,  # one line, whatever other tqdm users (DVC, MLflow) left open
            )
            self._bar.set_postfix_str(self._items_text(), refresh=False)
        return self._bar

    def _items_text(self) -> str:
        total = f"/{self.total_items}" if self.total_items is not None else ""
        return f"{self.items}{total} {self.unit}"

    def advance(self, nbytes: int = 0, items: int = 0) -> None:
        """Count ``nbytes`` more bytes and ``items`` more items as done."""
        if not self.enabled:
            return
        with self._lock:
            bar = self._line()
            if bar is None:
                return
            if items:
                self.items += items
                bar.set_postfix_str(self._items_text(), refresh=False)
            bar.update(nbytes)

    def describe(self, desc: str) -> None:
        """Change what the line says is being done."""
        if not self.enabled:
            return
        with self._lock:
            self._desc = desc
            if self._bar is not None:
                self._bar.set_description_str(desc)

    def write(self, text: str) -> None:
        """Print a line of text to stdout, above the progress line when one is drawn."""
        with self._lock:
            if self._bar is None:
                print(text, flush=True)
            else:
                self._bar.write(text, file=sys.stdout)

    def dvc_callback(self) -> Any:
        """An fsspec callback for DVC's transfers: each file done counts as an item, the bytes
        of each file (reported by its child callback) as bytes; None when disabled."""
        if not self.enabled:
            return None
        from fsspec.callbacks import Callback

        progress = self

        class _Bytes(Callback):
            """One file's bytes; a copy that reports none (a remote folder on a local disk)
            counts the file's size when it is done."""

            def __init__(self, source: Any) -> None:
                super().__init__()
                self.source = source

            def relative_update(self, inc: int = 1) -> None:
                self.value += inc
                progress.advance(nbytes=inc)

            def absolute_update(self, value: int) -> None:
                progress.advance(nbytes=max(0, value - self.value))
                self.value = value

            def close(self) -> None:
                if self.value == 0:
                    size = self.size
                    if not size and isinstance(self.source, str) and os.path.isfile(self.source):
                        size = os.path.getsize(self.source)
                    if size:
                        self.relative_update(int(size))

        class _Files(Callback):
            def relative_update(self, inc: int = 1) -> None:
                self.value += inc
                progress.advance(items=inc)

            def branched(self, path_1: Any, path_2: Any, **kwargs: Any) -> Callback:
                return _Bytes(path_1)

        return _Files()

    def close(self) -> None:
        """End the line (it stays on the terminal with the totals and the rate)."""
        with self._lock:
            self._closed = True
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def dvc_bars(shown: bool) -> Iterator[None]:
    """DVC's own progress bars (tqdm, on stderr) on or off while the block runs: on for
    ``push``, whose upload progress only DVC knows; off where mltrail draws its own line."""
    logger = logging.getLogger("dvc.progress")
    level = logger.level
    saved = os.environ.get("DVC_IGNORE_ISATTY")
    if shown:
        logger.setLevel(logging.INFO)
        os.environ["DVC_IGNORE_ISATTY"] = "true"  # MLTRAIL_PROGRESS=1 off a terminal
    else:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
        if saved is None:
            os.environ.pop("DVC_IGNORE_ISATTY", None)
        else:
            os.environ["DVC_IGNORE_ISATTY"] = saved
