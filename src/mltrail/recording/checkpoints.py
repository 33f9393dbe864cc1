"""Checkpoint files, once for every adapter: which epoch is best, which files changed, and a
stable copy of each that the background upload can read while training goes on.

The upload itself, ``checkpoints/index.json`` and the ``best``/``latest`` aliases are
:meth:`mltrail.Trail.log_checkpoint`'s; so are a checkpoint as a LoggedModel (an adapter says
how to load it: :class:`CheckpointModel`, with :class:`SavedFile` for a file that is the
flavor's own serialisation) and retention (:func:`superseded`). :func:`template_files`: the
files a framework's checkpoint path template names.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mltrail.errors import MltrailError

if TYPE_CHECKING:
    from mltrail.recording.session import RunSession

#: What adapters upload: nothing, the best by the monitored metric, the best and the last
#: one, or every checkpoint.
CHECKPOINT_POLICIES = ("none", "best", "best_and_last", "all")
# Substrings of metric names that are better when larger (for mode="auto").
_MAXIMIZED = ("acc", "auc", "precision", "recall", "f1", "iou", "top_k", "map", "ndcg", "r2")
# ... unless they name an error: "mape" (mean absolute percentage error) contains "map".
_MINIMIZED = ("loss", "error", "mape")


def check_policy(policy: str) -> str:
    """Validate a ``checkpoints=`` argument.

    Raises:
        MltrailError: naming the valid policies.
    """
    if policy not in CHECKPOINT_POLICIES:
        raise MltrailError(
            f"checkpoints must be one of {', '.join(CHECKPOINT_POLICIES)}, not {policy!r}."
        )
    return policy


def mode_for(metric: str, mode: str = "auto") -> str:
    """ "min" or "max" for ``metric``; "auto" takes "max" for accuracy-like names, except
    those of errors ("val_mape")."""
    if mode not in ("auto", "min", "max"):
        raise MltrailError(f"mode must be 'auto', 'min' or 'max', not {mode!r}.")
    if mode != "auto":
        return mode
    name = metric.lower()
    if any(word in name for word in _MINIMIZED):
        return "min"
    return "max" if any(word in name for word in _MAXIMIZED) else "min"


@dataclasses.dataclass(frozen=True)
class CheckpointModel:
    """How a checkpoint file becomes an MLflow Model, for checkpoints as LoggedModels: the
    adapter's ``load(path)`` returns the model it holds, saved in MLflow's ``flavor`` with
    ``kwargs`` (``pip_requirements`` and flavor arguments, as for
    :meth:`mltrail.Trail.log_model`). ``signature_from`` and ``output_example``: a few rows of
    input and the model's output on them, for the signature and input example.

    ``model_file``: where the flavor keeps the serialised model in an MLflow Model folder
    (``data/model.keras``), when the checkpoint file is that serialisation itself. ``load`` then
    returns a stand-in that the flavor saves at no cost, and the checkpoint file takes the
    stand-in's place (a hard link where the file system allows): the checkpoint is neither
    loaded nor serialised again. ``tags``: more tags of the LoggedModel (how to load it)."""

    flavor: str
    load: Callable[[Path], Any]
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    signature_from: Any = None
    output_example: Any = None
    model_file: str | None = None
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)


class SavedFile:
    """The stand-in model that a :class:`CheckpointModel` ``load`` returns when the checkpoint
    file is the flavor's ``model_file`` and the flavor saves a model through its own
    ``save(path)`` (MLflow's Keras flavor): it writes an empty file, whose place the
    checkpoint's own file then takes."""

    def save(self, path: str, **kwargs: Any) -> None:
        Path(path).touch()


def superseded(files: Mapping[str, Any], aliases: Mapping[str, str], keep: str | int) -> list[str]:
    """The checkpoints that retention drops from the store, oldest first.

    Args:
        files: the uploaded checkpoints still kept, in upload order.
        aliases: alias -> checkpoint (``best``, ``latest``, ...).
        keep: "all" (none dropped), "best_and_last" (keep what ``best`` and ``latest`` name),
            or N (keep the N latest and the one ``best`` names).
    """
    keep = str(keep)
    if keep == "all":
        return []
    names = list(files)
    if keep == "best_and_last":
        kept = {aliases.get("best"), aliases.get("latest"), names[-1] if names else None}
    else:
        kept = {*names[-int(keep) :], aliases.get("best")}
    return [name for name in names if name not in kept]


def aliases_for(best: bool) -> tuple[str, ...]:
    """The aliases of a checkpoint saved just now: ``latest``, and ``best`` when it is."""
    return ("best", "latest") if best else ("latest",)


class BestTracker:
    """The best value of a monitored metric so far.

    Args:
        monitor: the metric; None picks ``val_loss`` when the first values have it, else
            ``loss``.
        mode: "min", "max" or "auto" (see :func:`mode_for`).

    Attributes:
        best: the best value seen (None before the first one).
        best_step: the step it was seen at.
    """

    def __init__(self, monitor: str | None = None, mode: str = "auto") -> None:
        mode_for(monitor or "loss", mode)  # validate now
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None
        self.best_step: int | None = None

    def update(self, metrics: Mapping[str, Any], step: int) -> bool:
        """Whether ``metrics`` improve on the best so far (remembered if so). NaN never does."""
        if self.monitor is None:
            self.monitor = "val_loss" if "val_loss" in metrics else "loss"
        value = metrics.get(self.monitor)
        if value is None:
            return False
        value = float(value)
        if value != value:
            return False
        larger = mode_for(self.monitor, self.mode) == "max"
        if self.best is None or (value > self.best if larger else value < self.best):
            self.best, self.best_step = value, step
            return True
        return False


class CheckpointEvery:
    """Checkpoints that an adapter saves itself every N steps (a booster after its rounds).

    Each goes into a fresh file of the session's temporary folder, then to the run with its
    step's metrics, aliased ``latest``, and ``best`` when it is the best so far by the metric
    the adapter names at a training's first checkpoint.

    Args:
        session: the adapter's :class:`~mltrail.recording.session.RunSession` (its run and
            temporary folders).
        every: save after every this many steps (None: never).
        name: the file name, a format string of ``step`` (``"xgboost-{step:06d}.ubj"``).
        model: how a checkpoint loads as a model (checkpoints as LoggedModels).
    """

    def __init__(
        self, session: RunSession, every: int | None, name: str, model: CheckpointModel | None
    ) -> None:
        self.every = every
        self._session, self._name, self._model = session, name, model
        self._best = BestTracker()

    def start(self) -> None:
        """A training starts: the next checkpoint asks for the monitor again."""
        self._best = BestTracker()

    def save(
        self,
        step: int,
        metrics: Mapping[str, Any],
        write: Callable[[str], Any],
        monitor: Callable[[], tuple[str | None, str]],
    ) -> bool:
        """Save and log a checkpoint if one is due after ``step``; returns whether one was.

        Args:
            step: the run step just finished (due when ``step + 1`` is a multiple of N).
            metrics: that step's metrics (logged with the checkpoint; the best is among them).
            write: writes the checkpoint to the file it is given (a path as ``str``).
            monitor: the metric and mode ("min", "max", "auto") that pick the best, asked once
                per training; a None metric picks ``val_loss``, else ``loss``.
        """
        trail = self._session.trail
        if not self.every or (step + 1) % self.every or trail is None or not trail.enabled:
            return False
        path = self._session.temp_dir() / self._name.format(step=step)
        write(str(path))
        if self._best.monitor is None:
            self._best.monitor, self._best.mode = monitor()
        aliases = aliases_for(self._best.update(metrics, step))
        trail.log_checkpoint(path, step=step, metrics=metrics, aliases=aliases, model=self._model)
        return True


class FileWatch:
    """Which of some files are new or changed since they were last seen (by mtime and size)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, int]] = {}

    @staticmethod
    def _signature(path: str) -> tuple[int, int] | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def baseline(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Remember ``paths`` as they are now, without reporting them (files from before)."""
        for path in paths:
            signature = self._signature(os.fspath(path))
            if signature is not None:
                self._seen[os.fspath(path)] = signature

    def changed(self, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
        """The existing ``paths`` that are new or changed since last seen, oldest first."""
        found = []
        for path in dict.fromkeys(os.fspath(p) for p in paths):
            signature = self._signature(path)
            if signature is not None and self._seen.get(path) != signature:
                self._seen[path] = signature
                found.append((signature[0], path))
        return [path for _, path in sorted(found)]


def template_files(templates: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The files that checkpoint path templates name now, for a framework's checkpoint callback
    that writes to a path with format fields (Keras' ``ModelCheckpoint("ckpt-{epoch:02d}.keras")``):
    a field matches any name; the rest of the path is taken literally."""
    files: list[str] = []
    for template in templates:
        files.extend(glob.glob(re.sub(r"\{[^}]*\}", "*", glob.escape(os.fspath(template)))))
    return files


def stable_copy(
    path: str | os.PathLike[str], folder: Path, *, link: bool = True
) -> tuple[Path, str | None]:
    """A copy of the user's file in ``folder`` that nobody rewrites or deletes while it uploads.

    With ``link``, a hard link where the file system allows it: no byte is copied, and the
    link keeps the content when the framework rotates the file away. Only for frameworks that
    replace a checkpoint by writing a new file and renaming it (Lightning): a framework that
    rewrites the file in place (Keras) would tear the upload, so it passes ``link=False``.
    Otherwise a copy, whose sha256 is computed while copying so the file is read once.

    A folder (a Transformers ``checkpoint-N``) is copied as a tree of such links or copies.

    Returns:
        The copy and its sha256 (None for a link or a folder: the upload computes it).
    """
    source = Path(path)
    target = folder / source.name
    if source.is_dir():
        shutil.copytree(source, target, copy_function=_link_or_copy if link else shutil.copy2)
        return target, None
    if link:
        try:
            os.link(source, target)
            return target, None
        except OSError:
            pass
    digest = hashlib.sha256()
    with open(source, "rb") as reader, open(target, "wb") as writer:
        for block in iter(lambda: reader.read(1 << 20), b""):
            digest.update(block)
            writer.write(block)
    shutil.copystat(source, target)
    return target, digest.hexdigest()


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
