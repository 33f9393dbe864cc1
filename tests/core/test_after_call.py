"""after_call: a hook after a framework's method, with the exception leaving its caller (the end
of a unit of work that a framework gives no hook for)."""

from __future__ import annotations

import pytest

from mltrail.adapters import after_call


class Progress:
    """Like the object a framework closes in the ``finally`` of its loop."""

    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> str:
        self.closed += 1
        return "closed"


def loop(progress: Progress, body) -> None:
    """A framework's loop: the body, and the progress object closed in its ``finally``."""
    try:
        body()
    finally:
        progress.close()


def test_the_hook_gets_none_after_a_return_and_the_error_leaving_the_caller() -> None:
    progress, seen = Progress(), []
    after_call(progress, "close", seen.append, pytest.fail)
    after_call(progress, "close", seen.append, pytest.fail)  # wrapped once
    assert progress.close() == "closed"  # the method's own result
    loop(progress, lambda: None)
    broken = ValueError("the loop broke")

    def body() -> None:
        raise broken

    with pytest.raises(ValueError, match="the loop broke"):
        loop(progress, body)
    assert seen == [None, None, broken]
    assert progress.closed == 3


def test_an_exception_handled_around_the_loop_is_not_the_loops() -> None:
    progress, seen = Progress(), []
    after_call(progress, "close", seen.append, pytest.fail)
    try:
        raise KeyError("handled by the user")
    except KeyError:
        loop(progress, lambda: None)  # runs while the user's exception is being handled
    assert seen == [None]


def test_errors_of_the_hook_are_reported_never_raised_unless_strict(monkeypatch) -> None:
    progress, reported = Progress(), []

    def broken_hook(error: BaseException | None) -> None:
        raise RuntimeError("hook broke")

    after_call(progress, "close", broken_hook, reported.append)
    with pytest.raises(RuntimeError, match="hook broke"):  # strict mode: the suite's default
        loop(progress, lambda: None)
    monkeypatch.setenv("MLTRAIL_STRICT", "0")
    loop(progress, lambda: None)
    assert [str(error) for error in reported] == ["hook broke"]
    assert progress.closed == 2
