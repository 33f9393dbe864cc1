"""TrainingWrapper and TrainingCall (mltrail.adapters): a toy framework's training method,
wrapped as the Keras adapter wraps ``Model.fit``, hands the adapter's callbacks the call's
arguments and other callbacks, and ends their runs after the call, with the exception that
escaped it."""

from __future__ import annotations

from typing import Any

import pytest

from mltrail.adapters import AutologCallbacks, TrainingCall, TrainingWrapper


class Callback:
    """The toy framework's callback base: it calls ``on_train_end`` when fit returns."""

    def on_train_end(self) -> None:
        pass


class CallbackList:
    """The toy framework's own container of callbacks."""

    def __init__(self, callbacks: list[Any]) -> None:
        self.callbacks = callbacks


class Boom(Exception):
    pass


class Model:
    def fit(self, x: Any, epochs: int = 1, callbacks: Any = None, fail: bool = False) -> str:
        listed = callbacks.callbacks if isinstance(callbacks, CallbackList) else callbacks
        if fail:
            raise Boom("the user's error")
        for callback in listed or ():
            callback.on_train_end()
        return f"fitted {x} for {epochs}"

    def evaluate(self, x: Any, callbacks: Any = None) -> list[Any]:
        return list(callbacks or ())


class Recorder(Callback):
    """The adapter's callback: records what it learns of the call and how it ended."""

    def __init__(self) -> None:
        self.call = TrainingCall(self._ended)
        self.seen: list[Any] = []

    def on_train_end(self) -> None:
        # Inside a wrapped call the wrapper ends the run, after every callback's end.
        self.seen.append(("train_end", self.call.wrapped, dict(self.call.arguments)))

    def _ended(self, error: BaseException | None) -> None:
        self.seen.append(("ended", error, self.call.of_type(Other)))


class Other(Callback):
    pass


def wrapper() -> TrainingWrapper:
    return TrainingWrapper(
        Model, "fit", Recorder, lambda callback: callback.call, container=(CallbackList,)
    )


@pytest.fixture
def wrapped_fit(monkeypatch: pytest.MonkeyPatch) -> TrainingWrapper:
    """Model.fit wrapped for the test's length."""
    fits = wrapper()
    monkeypatch.setattr(Model, "fit", Model.fit)  # restored after the test
    fits.install()
    return fits


def test_the_callback_gets_the_arguments_and_siblings_and_its_run_ends_after_the_call(
    wrapped_fit: TrainingWrapper,
) -> None:
    ours, other = Recorder(), Other()
    assert Model().fit("data", callbacks=[other, ours]) == "fitted data for 1"
    (_, wrapped, arguments), ended = ours.seen
    assert wrapped is True  # its own end hook leaves the end to the wrapper
    assert arguments["x"] == "data" and arguments["epochs"] == 1  # defaults applied
    assert ended == ("ended", None, [other])  # after every end hook, siblings still known
    assert ours.call.arguments == {} and ours.call.siblings == [] and not ours.call.wrapped
    assert Model.fit.__name__ == "fit"  # the method's own name and docs


def test_an_exception_ends_the_run_with_it_and_propagates_unchanged(
    wrapped_fit: TrainingWrapper,
) -> None:
    ours = Recorder()
    with pytest.raises(Boom) as raised:
        Model().fit("data", callbacks=ours, fail=True)  # one callback, not in a list
    assert ours.seen == [("ended", raised.value, [])]


def test_calls_without_the_callback_or_that_do_not_bind_pass_through(
    wrapped_fit: TrainingWrapper,
) -> None:
    other = Other()
    assert Model().fit("data", 3, [other]) == "fitted data for 3"
    with pytest.raises(TypeError):  # the framework's own error for a bad call
        Model().fit("data", unknown=True)
    ours = Recorder()
    Model().fit("data", callbacks=CallbackList([ours]))  # the framework's container is read
    assert [kind for kind, *_ in ours.seen] == ["train_end", "ended"]


def test_without_a_wrapper_the_callbacks_own_end_hook_sees_no_wrapped_call() -> None:
    ours = Recorder()
    Model().fit("data", callbacks=[ours])
    assert ours.seen == [("train_end", False, {})]


def test_an_outer_wrapper_takes_the_callback_and_ends_its_run_once(
    wrapped_fit: TrainingWrapper,
) -> None:
    added = AutologCallbacks(Recorder, Recorder)
    patch = wrapped_fit.autolog_patch(added)
    inner = Model.fit  # the installed wrapper, which autolog's patch goes over
    ours = Recorder()

    def fit(*args: Any, **kwargs: Any) -> Any:
        return patch(inner, *args, **kwargs)

    fit(Model(), "data", callbacks=[ours])
    assert [kind for kind, *_ in ours.seen] == ["train_end", "ended"]  # once, not twice


def test_autolog_adds_a_callback_to_a_training_without_one_and_to_the_calls_after_it(
    wrapped_fit: TrainingWrapper,
) -> None:
    made: list[Recorder] = []

    def make() -> Recorder:
        made.append(Recorder())
        return made[-1]

    added = AutologCallbacks(Recorder, make)
    fit = wrapped_fit.autolog_patch(added)
    evaluate = wrapped_fit.later_patch(added, "evaluate")
    model, user = Model(), [Other()]
    fit(Model.fit, model, "data", callbacks=user)
    assert len(made) == 1 and made[0].seen[-1] == ("ended", None, user)
    assert len(user) == 1  # the user's list is left as it was
    # evaluate() after it gets that callback, so its metrics go to that run.
    assert evaluate(Model.evaluate, model, "test") == [made[0]]
    assert evaluate(Model.evaluate, Model(), "test") == []  # another model: none
    # A training whose callbacks are in the framework's container gets none.
    fit(Model.fit, model, "data", callbacks=CallbackList([]))
    assert len(made) == 1
