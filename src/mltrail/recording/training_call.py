"""A framework's training method wrapped for callbacks that see neither its arguments nor its end.

Some frameworks call a callback's hooks but never hand it the training call's arguments (the
training data, for params, a digest and an input example), the call's other callbacks (the
user's checkpoint and early-stopping callbacks), or an exception that stops the training: no
hook runs when ``fit`` raises (Keras). The adapter then wraps the training method once per
process (:class:`TrainingWrapper`, a pass-through for calls without the adapter's callback):
each callback of the adapter's class among the call's callbacks is told the call's arguments
and its sibling callbacks before it runs (:class:`TrainingCall`), and its run is ended after the
call, once every callback's end hook has run, or FAILED with the exception that escaped it (which
propagates unchanged). An outer wrapper of the same method (autolog's patch, which adds the
adapter's callback to a call without one) takes a callback first; the inner one passes it by.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mltrail.autolog.patching import AutologCallbacks


class TrainingCall:
    """What one callback knows of the wrapped training call it runs in.

    The callback holds one and tells it what ends its run; :class:`TrainingWrapper` fills it in
    before the call and ends the run after it.

    Args:
        ended: ends the callback's run after the call: ``ended(error)``, with the exception
            that escaped the call or None when it returned.

    Attributes:
        arguments: the call's arguments by name, defaults applied (empty outside a wrapped
            call).
        siblings: the call's other callbacks (the user's checkpoint and early-stopping ones).
        wrapped: whether a wrapper is around the training now, and ends the run after it: the
            callback's own end hook then leaves the end to it (without one, a training called
            some other way, the end hook ends the run).
    """

    def __init__(self, ended: Callable[[BaseException | None], Any]) -> None:
        self._ended = ended
        self.arguments: dict[str, Any] = {}
        self.siblings: list[Any] = []
        self.wrapped = False

    def of_type(self, kind: type | tuple[type, ...]) -> list[Any]:
        """The call's other callbacks of class ``kind``, in their order."""
        return [callback for callback in self.siblings if isinstance(callback, kind)]

    def enter(self, owner: Any, arguments: dict[str, Any], callbacks: Iterable[Any]) -> bool:
        """A wrapped call starts with ``owner`` (the callback) among ``callbacks``: keep its
        arguments and the other callbacks. False when a wrapper outside this one has done so
        already (it ends the run then)."""
        if self.wrapped:
            return False
        self.wrapped, self.arguments = True, arguments
        self.siblings = [callback for callback in callbacks if callback is not owner]
        return True

    def exit(self, error: BaseException | None) -> None:
        """The wrapped call has returned (``error`` None) or raised ``error``: end the run,
        then forget the call (its data and callbacks are not kept past it)."""
        self.wrapped = False
        try:
            self._ended(error)
        finally:
            self.arguments, self.siblings = {}, []


class TrainingWrapper:
    """A framework's training method (``keras.Model.fit``) with the adapter's callbacks told of
    each call and their runs ended after it (see the module docstring).

    Args:
        owner: the class whose method it is (``keras.Model``).
        name: the method's name (``"fit"``); its signature binds the calls' arguments, and its
            first parameter is the object trained (``self``), for autolog's callbacks.
        kind: the adapter's callback class.
        call_of: the :class:`TrainingCall` of one of the adapter's callbacks.
        callbacks: the name of the method's parameter that takes the callbacks: a list, one
            callback, or a framework's own ``container`` of them.
        container: the framework's classes that hold a call's callbacks in their ``callbacks``
            attribute (Keras' ``CallbackList``); read, never added to.
    """

    def __init__(
        self,
        owner: type,
        name: str,
        kind: type,
        call_of: Callable[[Any], TrainingCall],
        *,
        callbacks: str = "callbacks",
        container: tuple[type, ...] = (),
    ) -> None:
        self._class, self._name = owner, name
        self._signature = inspect.signature(getattr(owner, name))
        self._owner = next(iter(self._signature.parameters))
        self._kind, self._call_of = kind, call_of
        self._param, self._container = callbacks, container

    def install(self) -> None:
        """Put the wrapped method in the method's place, once per process (at the adapter's
        import): a pass-through for calls without the adapter's callback. Autolog's patch
        (:meth:`autolog_patch`) goes over it, and disabling autolog puts it back."""
        method = getattr(self._class, self._name)

        @functools.wraps(method)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            return self.call(method, args, kwargs)

        setattr(self._class, self._name, wrapped)

    def call(
        self,
        method: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        added: AutologCallbacks | None = None,
    ) -> Any:
        """``method(*args, **kwargs)`` with the adapter's callbacks among its callbacks told of
        the call (:meth:`TrainingCall.enter`) and their runs ended after it
        (:meth:`TrainingCall.exit`); with ``added`` (autolog), a call without one gets one
        (:meth:`AutologCallbacks.for_training`, kept for the calls after it), unless its
        callbacks are in the framework's container. A call that does not bind runs as it is,
        for the framework to report."""
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError:
            return method(*args, **kwargs)
        given = bound.arguments.get(self._param)
        callbacks = self._listed(given)
        ours = [callback for callback in callbacks if isinstance(callback, self._kind)]
        if added is not None and not isinstance(given, self._container):
            new = added.for_training(bound.arguments[self._owner], callbacks)
            if new is not None:
                ours = [new]
                callbacks = bound.arguments[self._param] = [*callbacks, new]
                args, kwargs = bound.args, bound.kwargs
        bound.apply_defaults()
        arguments = bound.arguments
        ours = [c for c in ours if self._call_of(c).enter(c, arguments, callbacks)]
        if not ours:  # none, or an outer wrapper has them
            return method(*args, **kwargs)
        try:
            result = method(*args, **kwargs)
        except BaseException as error:
            for callback in ours:
                self._call_of(callback).exit(error)
            raise
        for callback in ours:
            self._call_of(callback).exit(None)
        return result

    def autolog_patch(self, added: AutologCallbacks) -> Callable[..., Any]:
        """The autolog patch (a ``safe_patch`` wrapper) of the training method: every call
        without the adapter's callback gets ``added``'s, a new run per call."""

        def patch(call_original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            return self.call(call_original, args, kwargs, added)

        return patch

    def later_patch(self, added: AutologCallbacks, name: str) -> Callable[..., Any]:
        """The autolog patch of the method ``name`` of the same class, called after the
        training on the same object (``evaluate``) and taking its callbacks in the same
        parameter: the callback of the last autologged training on that object goes in
        (:meth:`AutologCallbacks.for_later`), so its metrics go to that training's run."""
        signature = inspect.signature(getattr(self._class, name))
        owner = next(iter(signature.parameters))

        def patch(call_original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                return call_original(*args, **kwargs)
            present = self._listed(bound.arguments.get(self._param))
            callback = added.for_later(bound.arguments[owner], present)
            if callback is None:
                return call_original(*args, **kwargs)
            bound.arguments[self._param] = [*present, callback]
            return call_original(*bound.args, **bound.kwargs)

        return patch

    def _listed(self, given: Any) -> list[Any]:
        """The callbacks a call was given, as a new list."""
        if given is None or isinstance(given, self._container):
            return list(getattr(given, "callbacks", ()))
        return list(given) if isinstance(given, Iterable) else [given]
