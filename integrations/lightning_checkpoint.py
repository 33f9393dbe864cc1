"""Lightning checkpoints as MLflow PyTorch models: the pickle module that loads one.

A Lightning checkpoint that mltrail made a LoggedModel (``checkpoints_as_models``) is an MLflow
Model in the ``pytorch`` flavor whose ``data/model.pth`` is the ``.ckpt`` file itself and whose
``data/pickle_module_info.txt`` names this module, so no second copy of the weights is saved.
``mlflow.pytorch.load_model`` and ``mlflow.pyfunc.load_model`` unpickle the checkpoint with it:
a checkpoint that names its LightningModule class (under :data:`CHECKPOINT_KEY`, written by
:class:`mltrail.integrations.lightning.TrailCallback`) comes back as that class's
``load_from_checkpoint``. The class must be importable where the model is loaded, as for any
pickled PyTorch model; any other pickle loads as the standard module loads it.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pickle import Pickler, dump, dumps, loads  # noqa: F401  (a pickle module's interface)
from typing import IO, Any

import torch

__all__ = ["CHECKPOINT_KEY", "Pickler", "Unpickler", "class_path", "dump", "load", "loads"]

#: The checkpoint entry naming the LightningModule class: ``{"module_class": "pkg.mod:Net"}``.
CHECKPOINT_KEY = "mltrail"


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that turns a Lightning checkpoint naming its class into the model."""

    def load(self) -> Any:
        found = super().load()
        entry = found.get(CHECKPOINT_KEY) if isinstance(found, dict) else None
        if not (isinstance(entry, dict) and entry.get("module_class")):
            return found
        return _module(found, str(entry["module_class"]))


def load(file: IO[bytes], **kwargs: Any) -> Any:
    """``pickle.load`` with :class:`Unpickler`."""
    return Unpickler(file, **kwargs).load()


def class_path(cls: type) -> str | None:
    """``module:QualName`` of ``cls`` (as entry points name objects), or None when it cannot
    be imported by that name (a class defined inside a function)."""
    if "<locals>" in cls.__qualname__:
        return None
    return f"{cls.__module__}:{cls.__qualname__}"


def _module(checkpoint: dict[str, Any], path: str) -> Any:
    """The LightningModule ``path`` names, loaded from ``checkpoint`` by its own
    ``load_from_checkpoint`` (which takes a file: the dict goes through memory once)."""
    module_name, _, name = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in name.split("."):
        target = getattr(target, part)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return target.load_from_checkpoint(buffer, weights_only=False)
