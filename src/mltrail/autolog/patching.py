"""The safe-patch contract of ``mltrail.autolog``, and what adapters ask of it.

``safe_patch`` replaces a framework function by a wrapper ``wrapper(call_original, *args,
**kwargs)`` under these rules:

- the original runs exactly once and its result is returned;
- the user's own exception (raised by the original) propagates unchanged;
- an error in the wrapper itself becomes a warning (raised in strict mode), and the original
  still runs if it had not yet;
- calls nested inside a patched call (a Pipeline fitting its steps, XGBoost's scikit-learn API
  calling ``xgb.train``) pass straight through, so one training is one run;
- MLflow's own autolog for these frameworks is paused during a call mltrail records, so a
  training is not recorded twice;
- ``revert`` puts back the very same original objects.

What adapters ask of it: :func:`call_with_callback` (a training gets the adapter's callback
unless it has one) and :class:`AutologCallbacks` (that callback also for the calls after the
training on the same trainer or model, in the framework's own list of callbacks).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mltrail.autolog.registry import frameworks
from mltrail.errors import process_errors, strict_mode

logger = logging.getLogger("mltrail.autolog")

# The state autolog() and the patches share: per-thread nesting depth, the lock over the
# tables below, and which frameworks are on with which options.
thread_state = threading.local()
lock = threading.RLock()
# (id(owner), name) -> (owner, name, the original as stored on owner or None if inherited,
# the patched object we stored, framework)
_originals: dict[tuple[int, str], tuple[Any, str, Any, Any, str]] = {}
enabled: dict[str, dict[str, Any]] = {}  # framework -> options


def in_patched_call() -> bool:
    """True while a patched training call runs in this thread (inner calls are not recorded)."""
    return getattr(thread_state, "depth", 0) > 0


@contextlib.contextmanager
def recording() -> Iterator[None]:
    """Mark a training that an adapter records on its own (a wrapper or a callback outside
    ``autolog``): patched calls inside it pass straight through, as inside a patched call."""
    thread_state.depth = getattr(thread_state, "depth", 0) + 1
    try:
        yield
    finally:
        thread_state.depth -= 1


@contextlib.contextmanager
def trainings_recorded() -> Iterator[None]:
    """Inside a patched call that is no training itself but runs the user's code (a
    hyperparameter search running the objective), the patched trainings that code makes are
    recorded again, as at the top level, instead of passing straight through."""
    depth = getattr(thread_state, "depth", 0)
    thread_state.depth = 0
    try:
        yield
    finally:
        thread_state.depth = depth


def call_with_callback(
    call: Callable[[Any], Any],
    callbacks: Iterable[Any] | None,
    kind: type,
    make: Callable[[], Any],
    stopped: Callable[[Any, BaseException], Any],
) -> Any:
    """``call(callbacks)`` with an adapter's callback among the training's callbacks.

    For an autolog patch of a framework that records through a callback: a training that has
    a callback of ``kind`` already runs as it is (``call`` gets the user's ``callbacks``);
    otherwise ``make()`` is added, in a new list (the user's stays as it was). An exception
    that escapes the call is handed to ``stopped(callback, error)``, which ends the callback's
    run (a no-op when a hook saw the exception and ended it), and propagates unchanged: some
    exceptions (a custom objective's) pass no hook of the framework.

    Args:
        call: runs the training with the callbacks it is given; its result is returned.
        callbacks: the callbacks the user gave the training (None: none).
        kind: the adapter's callback class.
        make: a new callback of ``kind`` (with autolog's options).
        stopped: ends the run of the callback that was added, for an exception.
    """
    if any(isinstance(callback, kind) for callback in callbacks or ()):
        return call(callbacks)
    callback = make()
    try:
        return call([*(callbacks or ()), callback])
    except BaseException as error:
        stopped(callback, error)
        raise


class AutologCallbacks:
    """The callback an autolog patch adds to each training on an object (a trainer, a model),
    kept for the calls after it on that object (``evaluate``, ``predict``, ``test``), whose
    metrics then go to the training's run.

    A call that has a callback of ``kind`` (the user's own) runs as it is. The ``call_*``
    methods are for frameworks that keep their callbacks in a list of their own (a trainer's):
    the callback is in that list for the length of the call, with the framework's own MLflow
    callbacks (``without``) off, so that the call is recorded once; afterwards the list is as
    it was, the same list object.

    Args:
        kind: the adapter's callback class.
        make: a new callback, with autolog's options.
        without: the framework's callback classes taken off the list during a call.
        place: where the callback goes in the list (``place(callbacks)`` gives the index;
            default: the end).
        stopped: ``stopped(callback, error)`` ends the run of the callback that was added to a
            training for an exception that escapes it (no hook of the framework saw it).
    """

    def __init__(
        self,
        kind: type,
        make: Callable[[], Any],
        *,
        without: tuple[type, ...] = (),
        place: Callable[[list[Any]], int] | None = None,
        stopped: Callable[[Any, BaseException], Any] | None = None,
    ) -> None:
        self._kind, self._make = kind, make
        self._without, self._place, self._stopped = without, place, stopped
        self._kept: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def for_training(self, owner: Any, present: Iterable[Any]) -> Any | None:
        """A new callback for a training on ``owner``, kept for the calls after it; None when
        ``present`` (the training's callbacks) has one of ``kind``: a training of the user's,
        after which nothing is kept."""
        self._kept.pop(owner, None)
        if any(isinstance(callback, self._kind) for callback in present):
            return None
        callback = self._kept[owner] = self._make()
        return callback

    def for_later(self, owner: Any, present: Iterable[Any], *, or_new: bool = False) -> Any | None:
        """The callback of the last training on ``owner`` for a call after it; None when
        ``present`` has one of ``kind`` or there was no such training (``or_new``: a new
        callback then, kept for the calls after this one)."""
        if any(isinstance(callback, self._kind) for callback in present):
            return None
        callback = self._kept.get(owner)
        if callback is None and or_new:
            callback = self._kept[owner] = self._make()
        return callback

    def call_training(self, owner: Any, callbacks: list[Any], call: Callable[[], Any]) -> Any:
        """``call()``, a training on ``owner`` whose callbacks are the list ``callbacks``,
        with a callback of :meth:`for_training` in that list."""
        callback = self.for_training(owner, callbacks)
        if callback is None:
            return call()
        try:
            return self._call_with(callbacks, callback, call)
        except BaseException as error:
            if self._stopped is not None:
                self._stopped(callback, error)
            raise

    def call_later(
        self, owner: Any, callbacks: list[Any], call: Callable[[], Any], *, or_new: bool = False
    ) -> Any:
        """``call()``, a call after a training on ``owner``, with the callback of
        :meth:`for_later` in the list ``callbacks``."""
        callback = self.for_later(owner, callbacks, or_new=or_new)
        if callback is None:
            return call()
        return self._call_with(callbacks, callback, call)

    def training_patch(self, callbacks_of: Callable[[Any], list[Any]]) -> Callable[..., Any]:
        """An autolog patch (a :func:`safe_patch` wrapper) of a trainer's training method
        (``Trainer.train``, ``Trainer.fit``): the call on its trainer, through
        :meth:`call_training`, with ``callbacks_of(trainer)`` the trainer's list of callbacks.
        Each training gets a new callback, so a new run."""

        def patch(call_original: Callable[..., Any], owner: Any, *args: Any, **kw: Any) -> Any:
            call = functools.partial(call_original, owner, *args, **kw)
            return self.call_training(owner, callbacks_of(owner), call)

        return patch

    def later_patch(
        self, callbacks_of: Callable[[Any], list[Any]], *, or_new: bool = False
    ) -> Callable[..., Any]:
        """An autolog patch of a trainer's method for the calls after a training
        (``evaluate``, ``predict``, ``test``), through :meth:`call_later` (``or_new``: see
        :meth:`for_later`), with ``callbacks_of(trainer)`` the trainer's list of callbacks."""

        def patch(call_original: Callable[..., Any], owner: Any, *args: Any, **kw: Any) -> Any:
            call = functools.partial(call_original, owner, *args, **kw)
            return self.call_later(owner, callbacks_of(owner), call, or_new=or_new)

        return patch

    def _call_with(self, callbacks: list[Any], callback: Any, call: Callable[[], Any]) -> Any:
        off = [(i, cb) for i, cb in enumerate(callbacks) if isinstance(cb, self._without)]
        for index, _ in reversed(off):
            del callbacks[index]
        at = len(callbacks) if self._place is None else self._place(callbacks)
        callbacks.insert(at, callback)
        try:
            return call()
        finally:
            # Only what was changed is undone: callbacks the call added stay.
            with contextlib.suppress(ValueError):
                callbacks.remove(callback)
            for index, taken in off:
                callbacks.insert(index, taken)


def enabled_frameworks() -> dict[str, dict[str, Any]]:
    """The frameworks autolog is on for, with their options."""
    with lock:
        return dict(enabled)


def safe_patch(framework: str, owner: Any, name: str, wrapper: Callable[..., Any]) -> None:
    """Replace ``owner.name`` by ``wrapper`` under the safe-patch contract (idempotent)."""
    key = (id(owner), name)
    with lock:
        if key in _originals:
            return
        had_own = name in vars(owner) if isinstance(owner, type) else True
        original = getattr(owner, name)
        raw = vars(owner)[name] if isinstance(owner, type) and had_own else original
        patched = _make_safe(original, wrapper, framework)
        if isinstance(raw, staticmethod | classmethod):
            patched = type(raw)(patched)
        setattr(owner, name, patched)
        _originals[key] = (owner, name, raw if had_own else None, patched, framework)


def revert(framework: str | None = None) -> None:
    """Put back the original objects patched for ``framework`` (all when None).

    A patch that someone else patched over since (``mlflow.autolog()`` called after ours) stays
    in place, inert, so that their patch keeps working.
    """
    with lock:
        for key, (owner, name, raw, patched, fw) in list(_originals.items()):
            if framework is not None and fw != framework:
                continue
            current = vars(owner).get(name) if isinstance(owner, type) else getattr(owner, name)
            if current is not patched:
                logger.debug("%s.%s was patched again after mltrail; left inert", owner, name)
            elif raw is None:
                delattr(owner, name)  # the attribute was inherited: remove our override
            else:
                setattr(owner, name, raw)
            del _originals[key]


def patched_count(framework: str | None = None) -> int:
    """How many functions are patched now (for ``framework``, or all)."""
    with lock:
        return sum(1 for *_, fw in _originals.values() if framework in (None, fw))


def _make_safe(original: Callable[..., Any], wrapper: Callable[..., Any], framework: str) -> Any:
    @functools.wraps(original)
    def patched(*args: Any, **kwargs: Any) -> Any:
        if in_patched_call() or framework not in enabled:
            return original(*args, **kwargs)
        outcome: dict[str, Any] = {}

        def call_original(*a: Any, **k: Any) -> Any:
            if "called" in outcome:  # the original runs exactly once
                raise RuntimeError("mltrail autolog wrapper called the original twice")
            outcome["called"] = True
            try:
                outcome["result"] = original(*a, **k)
            except BaseException as error:
                outcome["error"] = error
                raise
            return outcome["result"]

        thread_state.depth = getattr(thread_state, "depth", 0) + 1
        try:
            with _mlflow_autolog_paused():
                return wrapper(call_original, *args, **kwargs)
        except BaseException as error:
            if outcome.get("error") is error:
                raise  # the user's own exception, unchanged
            if strict_mode() or not isinstance(error, Exception):
                raise
            process_errors.report(f"autolog patch for {framework}", error)
        finally:
            thread_state.depth -= 1
        if "called" not in outcome:
            return original(*args, **kwargs)
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("result")

    patched.__mltrail_original__ = original  # type: ignore[attr-defined]
    patched.__mltrail_framework__ = framework  # type: ignore[attr-defined]
    return patched


def live_patch(function: Any) -> bool:
    """Whether ``function`` is an autolog patch of a framework that autolog is on for."""
    return getattr(function, "__mltrail_framework__", None) in enabled


@contextlib.contextmanager
def _mlflow_autolog_paused() -> Iterator[None]:
    """Pause MLflow's own autolog for these frameworks during a training mltrail records.

    With ``mlflow.autolog()`` on too, the training is then recorded once, by mltrail. When
    MLflow's patch sits outside ours (``mlflow.autolog()`` called after ``mltrail.autolog()``)
    its run is already open and active: the adapters join it, so it is still one run.
    """
    utils = sys.modules.get("mlflow.utils.autologging_utils")  # never import MLflow for this
    paused: list[dict[str, Any]] = []
    if utils is not None:
        integrations = getattr(utils, "AUTOLOGGING_INTEGRATIONS", {})
        for fw in frameworks().values():
            for flavor in fw.mlflow_flavors:
                config = integrations.get(flavor)
                if isinstance(config, dict) and not config.get("disable", False):
                    config["disable"] = True
                    paused.append(config)
    try:
        yield
    finally:
        for config in paused:
            config["disable"] = False


# --- frameworks imported after autolog() ---------------------------------------------------------
