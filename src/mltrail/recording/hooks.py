"""Exception safety for every framework hook of an adapter, applied in one place.

An adapter class decorated with :func:`exception_safe` has each of its hooks wrapped so that
an error inside mltrail never reaches the framework: it is counted into the run's
``mltrail.errors`` (one warning per kind), the hook returns what the framework expects
(``None``, or the object it was handed, for hooks that must return it), and training goes on.
:class:`~mltrail.MltrailError` (a mistake the user must fix, such as a run id that does not
exist) and ``KeyboardInterrupt`` pass through, and in strict mode (``MLTRAIL_STRICT=1``) every
error is raised, so that tests see it. In the spirit of MLflow's ``ExceptionSafeClass``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from mltrail.errors import MltrailError, process_errors, strict_mode

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

    @functools.wraps(method)
    def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
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

    hook.__mltrail_safe__ = True  # type: ignore[attr-defined]
    return hook
