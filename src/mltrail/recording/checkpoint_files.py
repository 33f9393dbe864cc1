"""A framework's checkpoint files to the run, once for every adapter.

Frameworks write checkpoints through callbacks of their own (Keras' and Lightning's
``ModelCheckpoint``, the Transformers Trainer's ``checkpoint-N`` folders), and adapters save some
themselves. :class:`CheckpointUploads` holds what is the same for all of them: the policy
(``checkpoints=``: which ones go up), which of the framework's files are new or changed since
the last look, a stable copy of each (hard link or copy), the ``best`` and ``latest`` aliases,
and the call to :meth:`mltrail.Trail.log_checkpoint`. The adapter says which files there are
and what it knows of each (the monitored metric's value, how it loads as a model, whether it
is the best).

:class:`SaveBudget` keeps the time an adapter spends saving checkpoints of its own under a share
of the training time; :class:`DeferredSave` keeps the model's state in memory until then.
:class:`EpochCheckpoints` is the policy for the checkpoints an adapter saves itself at the end
of each epoch (one per epoch, the best so far, the last), on those two.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mltrail.recording.checkpoints import (
    BestTracker,
    CheckpointModel,
    FileWatch,
    aliases_for,
    check_policy,
    stable_copy,
)

if TYPE_CHECKING:
    from mltrail.recording.session import RunSession


@dataclasses.dataclass(frozen=True)
class CheckpointFile:
    """What an adapter knows of one checkpoint file its framework wrote.

    Attributes:
        metrics: the monitored metric's value for this file (``{"val_loss": 0.3}``), if known.
        best: whether it is the best checkpoint so far (alias ``best``).
        model: how it loads as a model (checkpoints as LoggedModels), None for a file that is
            not a whole model (weights only).
    """

    metrics: Mapping[str, Any] | None = None
    best: bool = False
    model: CheckpointModel | None = None


class CheckpointUploads:
    """Checkpoints of one adapter into its session's current run, by its ``checkpoints=``.

    Args:
        session: the adapter's :class:`~mltrail.recording.session.RunSession`: the run to log
            into and the temporary folders the stable copies go to.
        policy: "none", "best", "best_and_last" or "all" (validated, see
            :data:`~mltrail.recording.checkpoints.CHECKPOINT_POLICIES`).
        link: stable copies are hard links where the file system allows, for frameworks that
            replace a checkpoint by writing a new file and renaming it (Lightning, Transformers);
            False for frameworks that rewrite a file in place (Keras), whose files are copied.

    Raises:
        MltrailError: for an unknown policy.
    """

    def __init__(self, session: RunSession, policy: str, *, link: bool) -> None:
        self.policy = check_policy(policy)
        self._session = session
        self._link = link
        self._watch = FileWatch()

    @property
    def active(self) -> bool:
        """Whether checkpoints are uploaded now: a policy other than "none" and a run being
        recorded (not a disabled one)."""
        trail = self._session.trail
        return self.policy != "none" and trail is not None and trail.enabled

    def wanted(self, best: bool) -> bool:
        """Whether the policy uploads a checkpoint that is (``best``) or is not the best."""
        return self.policy != "none" and (best or self.policy != "best")

    def baseline(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Files that exist before the training: not uploaded unless they change."""
        self._watch.baseline(paths)

    def upload(
        self,
        path: str | os.PathLike[str],
        step: int,
        *,
        metrics: Mapping[str, Any] | None = None,
        aliases: Iterable[str] = (),
        model: CheckpointModel | None = None,
        copy: bool = True,
    ) -> None:
        """Log the checkpoint file or folder ``path`` at ``step``; nothing without a run.

        ``copy``: ``path`` is the framework's, logged through a stable copy, with ``path`` as
        its source in the index; False for a file the adapter saved itself in its session's
        temporary folder, which nobody else writes.
        """
        trail = self._session.trail
        if trail is None:
            return
        source, digest = path, None
        if copy:
            path, digest = stable_copy(path, self._session.temp_dir(), link=self._link)
        trail.log_checkpoint(
            path,
            step=step,
            metrics=metrics,
            aliases=aliases,
            source=os.fspath(source) if copy else None,
            sha256=digest,
            model=model,
        )

    def upload_saved(
        self,
        path: str | os.PathLike[str],
        step: int,
        best: BestTracker,
        metrics: Mapping[str, Any],
        *,
        framework_best: bool | None = None,
        model: CheckpointModel | None = None,
    ) -> bool:
        """Upload, if the policy wants it, a checkpoint the framework saved just now, after its
        latest evaluation ``metrics``; for frameworks that save a checkpoint when they choose
        (a Trainer's ``save_steps``), not at a step the adapter knows in advance.

        It is the best when ``metrics`` improve on ``best`` (the monitored metric), unless the
        framework picks the best itself (``framework_best``: its choice wins). It goes up with
        the monitored metric's value, when ``metrics`` have it, and the aliases ``latest`` and,
        when best, ``best``.

        Args:
            path: the framework's checkpoint file or folder (logged through a stable copy).
            step: the run step it is logged at.
            best: the best so far by the monitored metric (updated with ``metrics``).
            metrics: the latest evaluation's values (empty: none yet).
            framework_best: whether the framework itself says this checkpoint is its best
                (None: it does not say).
            model: how it loads as a model (checkpoints as LoggedModels).

        Returns:
            Whether it was uploaded.
        """
        improved = best.update(metrics, step)
        is_best = improved if framework_best is None else framework_best
        if not self.wanted(is_best):
            return False
        monitor = best.monitor
        value = {monitor: metrics[monitor]} if monitor in metrics else None
        self.upload(path, step, metrics=value, aliases=aliases_for(is_best), model=model)
        return True

    def upload_changed(
        self,
        paths: Iterable[str | os.PathLike[str]],
        step: int,
        describe: Callable[[str], CheckpointFile | None] | None = None,
        *,
        latest: bool = True,
    ) -> list[str]:
        """Upload those of ``paths`` that are new or changed since the last look, oldest first.

        Args:
            paths: the files the framework's checkpoint callbacks write (existing or not).
            step: the step they are logged at (the epoch they were written after).
            describe: what the adapter knows of a changed file (called for those only);
                None: nothing (no metrics, not a model, not the best).
            latest: the newest changed file gets the alias ``latest``.

        Returns:
            The changed files, oldest first (none when :attr:`active` is false: they stay
            unseen until then).
        """
        if not self.active:
            return []
        changed = self._watch.changed(paths)
        for path in changed:
            found = (describe(path) if describe is not None else None) or CheckpointFile()
            marks = (("best", found.best), ("latest", latest and path == changed[-1]))
            self.upload(
                path,
                step,
                metrics=found.metrics,
                aliases=[alias for alias, hit in marks if hit],
                model=found.model,
            )
        return changed


class SaveBudget:
    """Time spent saving checkpoints, kept under a share of the training time: a save that does
    not fit waits (the adapter keeps what it would save in memory) until it fits or training
    ends.

    Args:
        share: the share of the training time (since :meth:`start`) that saves may take.
        first_guess: the seconds a save is assumed to take before one was timed.
    """

    def __init__(self, share: float, first_guess: float = 0.05) -> None:
        self.share = share
        self.spent = 0.0  # seconds of every timed save, across trainings
        self._last = first_guess
        self._started = time.monotonic()

    def start(self) -> None:
        """A training starts: its time counts from now (the seconds spent so far stay)."""
        self._started = time.monotonic()

    def allows(self) -> bool:
        """Whether one more save (as long as the last one) stays within the budget."""
        return self.spent + self._last <= self.share * (time.monotonic() - self._started)

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Time a save (a save that raises is not counted)."""
        started = time.monotonic()
        yield
        self._last = time.monotonic() - started
        self.spent += self._last


class DeferredSave:
    """A checkpoint an adapter saves itself (the best epoch's model), written at once while
    saves fit the :class:`SaveBudget`, else the model's state kept in memory (taken once) and
    written when the budget allows or training ends.

    Args:
        budget: the adapter's budget (its other saves are timed against it too).
        capture: the model's state now, as a copy that training does not change.
        restore: put a captured state back into the model.
    """

    def __init__(
        self, budget: SaveBudget, capture: Callable[[], Any], restore: Callable[[Any], None]
    ) -> None:
        self.budget = budget
        self._capture = capture
        self._restore = restore
        self._pending: list[Any] | None = None  # [step, metrics, state or None]

    @property
    def step(self) -> int | None:
        """The step of the checkpoint waiting to be written, None when none waits."""
        return None if self._pending is None else self._pending[0]

    def offer(self, step: int, metrics: Any) -> None:
        """The model as it is now, at ``step``, is to be saved (replacing one still waiting)."""
        self._pending = [step, metrics, None]

    def drop(self) -> None:
        """Forget the checkpoint waiting (a new training)."""
        self._pending = None

    def write(
        self, save: Callable[[int, Any], None], *, force: bool = False, current: int | None = None
    ) -> None:
        """``save(step, metrics)`` the waiting checkpoint when the budget allows or ``force``;
        else keep the model's state (once) until then.

        Args:
            save: writes the model as it is now.
            force: write whatever the budget (training ends).
            current: the step whose state the model still holds (None: another one, after an
                error or a restore of the best weights); a checkpoint of that step is saved
                straight from the model, any other from its kept state, put back for the save.
        """
        pending = self._pending
        if pending is None:
            return
        step, metrics, state = pending
        if not force and not self.budget.allows():
            if state is None:  # the model moves on: keep this step's state
                pending[2] = self._capture()
            return
        self._pending = None
        if step == current:
            save(step, metrics)
            return
        now = self._capture()  # write the kept state, then put the current one back
        self._restore(state)
        try:
            save(step, metrics)
        finally:
            self._restore(now)


class EpochCheckpoints:
    """The checkpoints an adapter saves itself at the end of each epoch, by its policy.

    "all": one file per epoch (``epoch-0003``), aliased ``best`` when it is the best so far;
    "best" and "best_and_last": the best epoch's model (``best``), written when saving fits
    the budget, else kept in memory (:class:`DeferredSave`) and written later, at the latest
    when the training ends; "best_and_last" also saves the model as it is at the end
    (``last``, alias ``latest``) unless that is the best one, already saved. "none": nothing.

    Args:
        uploads: the adapter's :class:`CheckpointUploads` (the policy and the run).
        best: which epoch is best (the monitored metric and its mode).
        budget: the share of the training time that saves may take.
        write: writes the model as it is now into a new file named after the stem it is
            given (``"best"``: the adapter adds its suffix) and returns the file; timed.
        model_of: how that file loads as a model (checkpoints as LoggedModels), or None.
        capture: the model's state now, as a copy that training does not change.
        restore: put a captured state back into the model.
    """

    def __init__(
        self,
        uploads: CheckpointUploads,
        best: BestTracker,
        budget: SaveBudget,
        write: Callable[[str], Path],
        model_of: Callable[[Path], CheckpointModel | None],
        capture: Callable[[], Any],
        restore: Callable[[Any], None],
    ) -> None:
        self._uploads, self.best, self.budget = uploads, best, budget
        self._write, self._model_of = write, model_of
        self._best_model = DeferredSave(budget, capture, restore)

    def start(self) -> None:
        """A training starts: its time counts for the budget; a best model still waiting from
        a former training is dropped."""
        self.budget.start()
        self._best_model.drop()

    def epoch_end(self, step: int, metrics: Mapping[str, Any]) -> None:
        """The epoch logged at ``step`` ended with ``metrics`` (the monitored one among them)."""
        policy = self._uploads.policy
        if policy == "none":
            return
        improved = self.best.update(metrics, step)
        if policy == "all":
            self._save(f"epoch-{step:04d}", aliases_for(improved), step, metrics)
        elif improved:
            self._best_model.offer(step, metrics)
        self._best_model.write(self._save_best, current=step)

    def training_end(self, last_step: int, *, failed: bool, restored: bool) -> None:
        """The training ended after the epoch at ``last_step``: the best model still waiting is
        written, and with "best_and_last" the model as it is now (unless the training
        ``failed``).

        Args:
            last_step: the step of the last epoch.
            failed: the training raised.
            restored: the model no longer holds the last epoch's weights (early stopping put
                the best ones back).
        """
        policy = self._uploads.policy
        if policy == "none":
            return
        unchanged = not failed and not restored
        self._best_model.write(
            self._save_best, force=True, current=last_step if unchanged else None
        )
        best_is_last = self.best.best_step == last_step and unchanged
        if not failed and policy == "best_and_last" and not best_is_last:
            self._save("last", ("latest",), last_step, None)

    def _save_best(self, step: int, metrics: Any) -> None:
        self._save("best", ("best", "latest"), step, metrics)

    def _save(
        self, stem: str, aliases: Iterable[str], step: int, metrics: Mapping[str, Any] | None
    ) -> None:
        with self.budget.timed():
            path = self._write(stem)
        model = self._model_of(path)
        self._uploads.upload(path, step, metrics=metrics, aliases=aliases, model=model, copy=False)
