"""Exception safety for every framework hook of an adapter, applied in one place.

An adapter class decorated with :func:`exception_safe` has each of its hooks wrapped so that
an error inside mltrail never reaches the framework: it is counted into the run's
``mltrail.errors`` (one warning per kind), the hook returns what the framework expects
(``None``, or the object it was handed, for hooks that must return it), and training goes on.
:class:`~mltrail.MltrailError` (a mistake the user must fix, such as a run id that does not
exist) and ``KeyboardInterrupt`` pass through, and in strict mode (``MLTRAIL_STRICT=1``) every
error is raised, so that tests see it. In the spirit of MLflow's ``ExceptionSafeClass``.

A warning that the framework raises while a hook runs (XGBoost's "Parameters { ... } are not
used" comes when the adapter first asks the booster anything) would be shown at the adapter's
line; it is shown at the framework's line that called the hook instead, where it belongs.

Where a framework has no hook for the end of a unit of work, :func:`after_call` makes one from
a method it calls in that unit's ``finally`` (Optuna closes its progress object there), with
the same safety.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from mltrail.errors import MltrailError, MltrailWarning, process_errors, strict_mode

C = TypeVar("C", bound=type)

#: Method names taken for hooks when :func:`exception_safe` is given none.
HOOK_PREFIXES = ("on_", "before_", "after_")


def exception_safe(
    hooks: Iterable[str] | None = None,
    *,
    returns_argument: Iterable[str] = (),
    session: str = "_session",
) -> Callable[[C], C]:
    """Class decorator: wrap the adapter's hooks (see the module docstring).

    Args:
        hooks: the methods to wrap; default every method defined by the class whose name
            starts with ``on_``, ``before_`` or ``after_``.
        returns_argument: hooks that must return the object they were given (XGBoost's
            ``before_training``/``after_training`` return the model); on an error they
            return that argument.
        session: the attribute holding the adapter's :class:`~mltrail.recording.session.
            RunSession`, whose run counts the errors (the process-wide counter without one).
    """
    keep_first = frozenset(returns_argument)

    def decorate(cls: C) -> C:
        names = (
            list(hooks)
            if hooks is not None
            else [
                name
                for name, value in vars(cls).items()
                if name.startswith(HOOK_PREFIXES) and callable(value)
            ]
        )
        for name in names:
            setattr(cls, name, _safe(getattr(cls, name), name, name in keep_first, session))
        return cls

    return decorate


def _safe(method: Callable[..., Any], name: str, keep_first: bool, session: str) -> Any:
    if getattr(method, "__mltrail_safe__", False):
        return method

    adapter_file = method.__code__.co_filename

    @functools.wraps(method)
    def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1)
        shown = warnings.showwarning
        ours = _shown_at(shown, adapter_file, caller.f_code.co_filename, caller.f_lineno)
        warnings.showwarning = ours
        try:
            return method(self, *args, **kwargs)
        except MltrailError:
            raise
        except Exception as error:
            if strict_mode():
                raise
            owner = getattr(self, session, None)
            if owner is not None:
                owner.report(name, error)
            else:
                process_errors.report(f"{type(self).__name__}.{name}", error)
            return args[0] if keep_first and args else None
        finally:
            if warnings.showwarning is ours:  # another thread may have put its own since
                warnings.showwarning = shown

    hook.__mltrail_safe__ = True  # type: ignore[attr-defined]
    return hook


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../mltrail


def _shown_at(show: Any, adapter_file: str, filename: str, lineno: int) -> Any:
    """``warnings.showwarning`` that shows the framework's warnings raised inside a hook (at
    the adapter's or mltrail's lines) at ``filename:lineno``, the framework's call of the hook.
    mltrail's own warnings stay where they are."""

    def showwarning(
        message: Any, category: Any, at: str, line_number: int, file: Any = None, line: Any = None
    ) -> Any:
        if (at == adapter_file or at.startswith(_PACKAGE)) and not issubclass(
            category, MltrailWarning
        ):
            at, line_number, line = filename, lineno, None
        return show(message, category, at, line_number, file, line)

    return showwarning


def after_call(
    obj: Any,
    name: str,
    then: Callable[[BaseException | None], Any],
    report: Callable[[BaseException], Any],
) -> None:
    """Call ``then(error)`` after every call of ``obj``'s method ``name``, in its ``finally``.

    ``error`` is the exception leaving the code that called the method, when it called it
    while that exception was on its way out (from its ``finally``); None when it returns, and
    for an exception that was handled around it (it is not that code's). An error of ``then``
    never reaches the framework: ``report(error)`` counts it (raised in strict mode). Wrapping
    the same method again changes nothing.

    Args:
        obj: the framework's object; its method is replaced on this object only.
        name: the method's name.
        then: what runs after each call.
        report: counts an error of ``then`` (a :meth:`RunSession.report` with its kind).
    """
    method = getattr(obj, name)
    if getattr(method, "__mltrail_after__", False):
        return

    def called(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        finally:
            error = sys.exc_info()[1]
            tb = error.__traceback__ if error is not None else None
            while tb is not None and tb.tb_frame is not sys._getframe(1):
                tb = tb.tb_next  # an exception handled around the caller is not its own
            try:
                then(error if tb is not None else None)
            except Exception as failure:  # never into the framework (raised when strict)
                if strict_mode():
                    raise
                report(failure)

    called.__mltrail_after__ = True  # type: ignore[attr-defined]
    setattr(obj, name, called)
