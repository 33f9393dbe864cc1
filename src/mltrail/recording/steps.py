"""The step convention, once for every adapter.

- Epoch-level values are logged at ``step = epoch`` (0-based), each epoch in one call with all
  its values, however many framework hooks contributed to it (:meth:`EpochLog.stage`).
- Step-level values, when asked for, go under ``step/`` at the global optimizer step
  (:meth:`EpochLog.log_step`).
- A run that goes on (a second ``fit`` of the same callback, continued boosting, a resumed
  checkpoint, several trainings into one given Trail) continues the steps, never restarts
  them: the first epoch a training reports is moved past the last step the run has
  (:meth:`EpochLog.start`). Trainings that share one Trail share its next free step.
- Step-level values of a framework that counts global steps across a resume
  (:class:`GlobalSteps`) go on past the run's last global step, never log one twice.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mltrail.errors import MltrailError
from mltrail.recording.early_stopping import EarlyStop, early_stopping_metrics
from mltrail.recording.trail import Trail

if TYPE_CHECKING:
    from mltrail.recording.session import RunSession

STEP_PREFIX = "step/"

# The next free epoch step of each run, shared by every EpochLog writing to it.
_next_steps: weakref.WeakKeyDictionary[Trail, int] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def next_free_step(trail: Trail) -> int:
    """The step after the last epoch any adapter logged into ``trail`` in this process."""
    with _lock:
        return _next_steps.get(trail, 0)


def _advance(trail: Trail, step: int) -> None:
    with _lock:
        _next_steps[trail] = max(_next_steps.get(trail, 0), step + 1)


class EpochLog:
    """Epoch metrics of one adapter, at ``step = epoch + offset``.

    Args:
        trail: a callable returning the Trail to write to (None: nothing is logged), so the
            log follows the adapter's current run; or the adapter's ``RunSession`` itself
            (its current run), which, unlike a lambda, survives pickling into spawned workers.
    """

    def __init__(self, trail: Callable[[], Trail | None] | Any) -> None:
        if not callable(trail):  # a RunSession: a partial of getattr pickles, a lambda would not
            trail = functools.partial(getattr, trail, "trail")
        self._trail = trail
        self.offset = 0
        self.last_step: int | None = None
        self._epoch: int | None = None
        self._pending: dict[str, Any] = {}
        self._step_keys: dict[str, str] = {}

    def start(self, first_epoch: int = 0, *, resumed_from: int | None = None) -> int:
        """A training begins (or goes on) at ``first_epoch`` of the framework's count.

        The offset moves it past the steps the run has: those logged in this process, or
        ``resumed_from`` (the next step of a run resumed from elsewhere). Returns the offset.
        """
        trail = self._trail()
        taken = max(next_free_step(trail) if trail is not None else 0, resumed_from or 0)
        if self.last_step is not None:
            taken = max(taken, self.last_step + 1)
        self.offset = max(0, taken - first_epoch)
        self._epoch = None
        self._pending = {}
        return self.offset

    def step(self, epoch: int) -> int:
        """The run step of the framework's ``epoch``."""
        return epoch + self.offset

    def stage(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Collect values of ``epoch``; the previous epoch is sent when a new one begins."""
        if self._epoch is not None and self._epoch != epoch:
            self.flush()
        self._epoch = epoch
        self._pending.update(metrics)

    def flush(self) -> None:
        """Send the staged epoch, if any."""
        epoch, pending = self._epoch, self._pending
        self._epoch, self._pending = None, {}
        if epoch is not None and pending:
            self.log(epoch, pending)

    def log(self, epoch: int, metrics: Mapping[str, Any]) -> int:
        """Log ``metrics`` of ``epoch`` now; returns the step they got."""
        step = self.step(epoch)
        self.last_step = step if self.last_step is None else max(self.last_step, step)
        trail = self._trail()
        if trail is not None:
            _advance(trail, step)
            if metrics:
                trail.log_metrics(metrics, step=step)
        return step

    def log_at_last(self, metrics: Mapping[str, Any]) -> None:
        """Log end-of-training values (early stopping, best iteration) at the last step."""
        trail = self._trail()
        if trail is not None and metrics:
            trail.log_metrics(metrics, step=self.last_step or 0)

    def log_early_stopping(self, stops: Sequence[EarlyStop], epoch: int | None = None) -> None:
        """The outcome of the training's early-stopping callbacks
        (:func:`~mltrail.recording.early_stopping.early_stopping_metrics`), the framework's
        epochs moved to this log's steps, at the last step or at ``epoch``'s."""
        metrics = early_stopping_metrics(stops, self.offset)
        if not metrics:
            return
        if epoch is None:
            self.log_at_last(metrics)
        else:
            self.log(epoch, metrics)

    def log_step(self, metrics: Mapping[str, Any], global_step: int) -> None:
        """Step-level values under ``step/`` at the global optimizer step."""
        trail = self._trail()
        if trail is None or not metrics:
            return
        keys = self._step_keys
        values = {}
        for name, value in metrics.items():
            key = keys.get(name)
            if key is None:
                key = keys[name] = STEP_PREFIX + name
            values[key] = value
        trail.log_metrics(values, step=global_step)


# The next free global step of each run (by run id), for trainings that count from 0 again.
_next_global: dict[str, int] = {}


class GlobalSteps:
    """The global optimizer steps of one adapter's trainings, on the steps of the run they log to.

    For a framework whose trainings count their global steps from 0, and from a checkpoint's step
    when resumed (the Transformers Trainer). A run never gets values of one global step twice:

    - a training that starts at step 0 into a run that has steps already (a second training into
      one given Trail) goes on after the last step the run got in this process;
    - a training resumed from a checkpoint into a run that goes on (continued, not rewound)
      skips the steps that the run has values of already (those the stopped training logged
      after that checkpoint). The run's last step is kept in its tag
      ``mltrail.<framework>.global_step``, so that a resume in another process knows it.

    Args:
        session: the adapter's :class:`~mltrail.recording.session.RunSession` (its current run,
            and its framework, which names the tag).

    Attributes:
        tag: the run tag that holds the last global step the run has values of.
        offset: what moves the framework's global steps to the run's (a training from step 0
            into a run that has steps).
    """

    def __init__(self, session: RunSession) -> None:
        self._session = session
        self.tag = f"mltrail.{session.framework}.global_step"
        self.offset = 0
        self._skip_to = 0

    def start(self, global_step: int) -> None:
        """A training into the session's current run begins at the framework's ``global_step``
        (0, or the step of the checkpoint it resumes from)."""
        trail = self._session.trail
        if trail is None:
            self.offset = self._skip_to = 0
            return
        continued = trail.resumed and trail.restart != "rewind"  # a rewound run logs them again
        self._skip_to = int(trail.attached_tags.get(self.tag, 0)) if continued else 0
        with _lock:
            self.offset = 0 if global_step else _next_global.get(trail.run_id, 0)

    def step(self, global_step: int) -> int | None:
        """The run's step of the framework's ``global_step``; None when the run has values of
        that step already (a resumed training redoing it)."""
        step = global_step + self.offset
        return None if self._skip_to and step <= self._skip_to else step

    def logged(self, step: int) -> None:
        """Values of the run's ``step`` were logged: the run's last step, for later trainings."""
        trail = self._session.trail
        if trail is None:
            return
        trail.set_tags({self.tag: step})
        with _lock:
            _next_global[trail.run_id] = step + 1


def every_n(step: int, previous: int, n: int) -> bool:
    """Whether a multiple of ``n`` lies in ``(previous, step]``: log at this optimizer step
    (frameworks that advance several steps per call report only the last)."""
    return step // n != previous // n


def check_every(name: str, value: Any) -> int | None:
    """Validate a cadence argument (``log_every_n_steps=``...): a positive int or None.

    Raises:
        MltrailError: naming the argument and the value.
    """
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise MltrailError(f"{name} must be a positive whole number or None, not {value!r}.")
    return value
