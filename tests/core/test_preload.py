"""preload_modules: a slow import started on a daemon thread, once, so that its first use later
does not pay for it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrail.adapters import preload_modules


@pytest.fixture
def slow_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of this test alone that records the thread that imported it."""
    name = f"mltrail_preload_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        "import threading\nimported_by = threading.current_thread().name\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_the_import_runs_on_a_daemon_thread_once(slow_module: str) -> None:
    thread = preload_modules(slow_module)
    assert thread is not None and thread.daemon
    thread.join(timeout=30)
    assert sys.modules[slow_module].imported_by == thread.name
    assert preload_modules(slow_module) is None  # started once per process
    assert preload_modules("json") is None  # already imported
    assert importlib.import_module(slow_module).imported_by == thread.name


def test_a_module_that_cannot_be_imported_is_left_to_its_user() -> None:
    thread = preload_modules("mltrail_no_such_module_here")
    assert thread is not None
    thread.join(timeout=30)
    with pytest.raises(ImportError):
        importlib.import_module("mltrail_no_such_module_here")
