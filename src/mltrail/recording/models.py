"""What an adapter hands :meth:`mltrail.Trail.log_model` besides the model: a few rows of
input for the signature and input example, pinned requirements, and flavor arguments; a copy
of the model that can be saved in the background; the model's size as params; and a model
that cannot be an MLflow Model logged as its weights and class (:func:`log_weights`).

Pinned requirements matter for speed: without them MLflow infers them by importing the model
again in a subprocess, which costs seconds per model.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.metadata
import json
import logging
import os
import sys
import sysconfig
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mltrail.recording.trail import Trail

logger = logging.getLogger("mltrail.models")

#: Rows of training input kept as the model's input example.
EXAMPLE_ROWS = 5
# Import names whose distribution is named otherwise.
_DISTRIBUTIONS = {"sklearn": "scikit-learn"}


def pinned_requirements(*packages: str) -> list[str]:
    """``name==version`` of each installed package (import or distribution names), in order,
    without local version labels (``torch==2.5.0``, not ``+cpu``); absent ones are left out."""
    requirements: list[str] = []
    for package in packages:
        line = _pinned(package)
        if line is not None and line not in requirements:
            requirements.append(line)
    return requirements


@functools.cache
def _pinned(package: str) -> str | None:
    """``name==version`` of one package, looked up once per process: each lookup scans the
    installed distributions (tens of milliseconds), and every model of a script needs it."""
    from mltrail.capture.env import package_version

    name = _distribution(package)
    version = None if name is None else package_version(name)
    return None if version is None else f"{name}=={version.split('+')[0]}"


def packages_of(*objects: Any) -> list[str]:
    """The top-level packages the classes of ``objects`` and their bases come from, sorted, for
    :func:`pinned_requirements` of a model made of parts from several libraries (a Pipeline
    with an XGBoost step needs xgboost too; a LightningModule written in the script needs
    lightning, its base); the standard library, ``__main__``, the script's own modules and
    mltrail left out."""
    names = {cls.__module__.split(".")[0] for part in objects for cls in type(part).__mro__}
    names -= set(sys.stdlib_module_names) | {"__main__", "mltrail"}
    return sorted(name for name in names if not _script_module(name))


def _script_module(name: str) -> bool:
    """Whether the top-level module ``name`` is one of the script's own files (``nets.py``
    beside it), not an installed package: no distribution pins it, and looking for one by
    import name scans every installed distribution (half a second on the training's thread).
    A distribution of that very name (the project installed with ``pip install -e .``) counts
    as installed."""
    from mltrail.capture.env import package_version

    module = sys.modules.get(name)
    file = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), None)
    if not file:
        return False
    path = os.path.realpath(file)
    if any(_inside(path, folder) for folder in _installed_folders()):
        return False  # a project's own .venv may lie in its folder
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    folders = {os.getcwd(), *([os.path.dirname(os.path.abspath(main))] if main else [])}
    return any(_inside(path, folder) for folder in folders) and package_version(name) is None


@functools.cache
def _installed_folders() -> tuple[str, ...]:
    """The folders installed packages live in: the interpreter's site-packages and the user's."""
    import site

    folders = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    with contextlib.suppress(Exception):  # site's functions are missing in some embeddings
        folders.update(site.getsitepackages())
        folders.add(site.getusersitepackages())
    return tuple(os.path.realpath(folder) for folder in folders)


def _inside(path: str, folder: str) -> bool:
    return path.startswith(os.path.realpath(folder).rstrip(os.sep) + os.sep)


def _distribution(package: str) -> str | None:
    """The installed distribution of an import or distribution name, or None."""
    from mltrail.capture.env import package_version

    name = _DISTRIBUTIONS.get(package, package)
    if package_version(name) is not None:
        return name
    names = _import_names().get(package) or []  # scanning every distribution: the slow path
    return names[0] if names else None


@functools.cache
def _import_names() -> dict[str, list[str]]:
    try:
        return dict(importlib.metadata.packages_distributions())
    except Exception:  # broken metadata of an unrelated package
        logger.debug("reading package metadata failed", exc_info=True)
        return {}


def pytorch_flavor_kwargs(*packages: str) -> dict[str, Any]:
    """Flavor arguments for :meth:`mltrail.Trail.log_model` with MLflow's ``pytorch`` flavor:
    save the model pickled, as MLflow's own Lightning autolog does. MLflow 3's default,
    ``torch.export``, takes seconds per model and rejects data-dependent control flow.

    Args:
        *packages: the packages the model needs besides torch ("transformers"); given, the
            arguments also pin ``pip_requirements``: torch, cloudpickle (the flavor's pickle
            module) and these, installed versions.
    """
    if packages:
        pins = pinned_requirements("torch", "cloudpickle", *packages)
        return {**pytorch_flavor_kwargs(), "pip_requirements": pins}
    for distribution in ("mlflow", "mlflow-skinny"):
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
        parts = [int(p) if p.isdigit() else 0 for p in version.split(".")[:2]]
        # MLflow 3.11 added serialization_format; later releases default it to torch.export.
        return {"serialization_format": "pickle"} if tuple(parts) >= (3, 11) else {}
    return {}


def head_rows(data: Any, rows: int = EXAMPLE_ROWS) -> Any:
    """The first ``rows`` of array-like training input, as an independent copy (the model may
    be saved in the background while the user's data changes); None when not cheaply had.

    Handles pandas objects, scipy sparse matrices, numpy arrays, torch tensors and other
    sliceable array-likes; dicts of those (multi-input models) become dicts of heads.
    """
    if data is None:
        return None
    if isinstance(data, dict):
        parts = {key: head_rows(value, rows) for key, value in data.items()}
        return None if any(value is None for value in parts.values()) else parts
    if hasattr(data, "iloc"):
        return data.iloc[:rows].copy()
    if hasattr(data, "tocsr") and hasattr(data, "nnz"):
        return data.tocsr()[:rows].copy()
    if hasattr(data, "detach") and hasattr(data, "cpu"):  # a torch tensor
        return data[:rows].detach().cpu().clone()
    if hasattr(data, "shape") and hasattr(data, "__getitem__"):
        import numpy as np

        return np.array(data[:rows])
    if isinstance(data, list) and data:
        import numpy as np

        try:
            return np.asarray(data[:rows])
        except Exception:
            return None
    return None


def input_rows(data: Any) -> Any:
    """A few rows (:func:`head_rows`, as numpy) of a training call's input, for the model's
    signature and input example; None when not cheaply had.

    ``data`` is what the call takes as input: arrays, or a dict of them (a multi-input
    model); an ``(x, y[, sample_weight])`` tuple, whose ``x`` is taken; or a loader that can be
    iterated again (a torch ``DataLoader``, a ``tf.data`` dataset), whose first batch is read.
    A generator gives None (iterating it would lose the batch taken), and so do lists of
    several inputs (no MLflow tensor signature).
    """
    if not (data is None or hasattr(data, "shape") or isinstance(data, dict | list | tuple)):
        if not hasattr(data, "__iter__") or iter(data) is data:
            return None  # a generator would lose the batch we took
        data = next(iter(data))  # a re-iterable loader: one batch
        if isinstance(data, list):
            data = tuple(data)  # a torch DataLoader collates an (x, y) sample into [x, y]
    if isinstance(data, tuple):
        data = data[0]  # (x, y[, sample_weight])
    if isinstance(data, list | tuple):
        return None  # multi-input lists have no MLflow tensor signature
    rows = head_rows(data)
    return None if rows is None else to_numpy(rows)


def to_numpy(value: Any) -> Any:
    """``value`` as numpy, for input and output examples and data digests: a torch tensor
    detached, on the CPU (bfloat16 as float32, which numpy lacks); a pandas object through
    ``to_numpy()``; other arrays (numpy, JAX, TensorFlow) through numpy's array protocol; dicts
    and lists (tuples too) of those element by element, as a dict and a list; None stays None.
    """
    if value is None:
        return None
    if isinstance(value, dict):
        return {key: to_numpy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_numpy(item) for item in value]
    if hasattr(value, "iloc"):
        return value.to_numpy()
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu()
        return (value.float() if str(value.dtype) == "torch.bfloat16" else value).numpy()
    import numpy as np

    return np.asarray(value)


def example_io(data: Any, predict: Callable[[Any], Any] | None) -> tuple[Any, Any]:
    """The model's input example (:func:`head_rows` of ``data``) and ``predict``'s output on
    it, for :meth:`mltrail.Trail.log_model`'s signature; ``(None, None)`` when there is no
    ``predict`` or either fails (odd inputs such as ragged lists: the model goes without)."""
    if predict is None:
        return None, None
    try:
        example = head_rows(data)
        return (None, None) if example is None else (example, predict(example))
    except Exception as error:
        logger.debug("no input example for the model: %s", error)
        return None, None


def copy_to_save(model: Any, prepare: Callable[[Any], Any] | None = None) -> tuple[Any, bool]:
    """A copy of the user's model for :meth:`mltrail.Trail.log_model` to save in the
    background while the original stays untouched (it may train on or change).

    Args:
        model: the trained model.
        prepare: what the copy needs before it is saved (``lambda m: m.cpu().eval()``).

    Returns:
        ``(copy, True)``; ``(model, False)`` when it cannot be copied (or prepared): the
        original, to be saved now (``log_model(..., background=False)``).
    """
    try:
        copied = copy.deepcopy(model)
        return (copied if prepare is None else prepare(copied)), True
    except Exception as error:
        logger.debug("the model is saved in the foreground: no copy of it (%s)", error)
        return model, False


def log_weights(
    trail: Trail,
    folder: Path,
    model: Any,
    save: Callable[[Path], Any],
    file: str,
    *,
    versions: Mapping[str, str],
    why: str,
    how: str,
) -> None:
    """Log a model that cannot be an MLflow Model (its framework cannot save its architecture)
    under ``model/`` as its weights and its class, which rebuild it, with one warning.

    Args:
        trail: the run.
        folder: a new folder (made here) in the adapter's session's ``temp_dir()``, uploaded
            as ``model/``.
        model: the trained model; its class goes into ``class.json`` as ``module.QualName``.
        save: writes the model's weights into the path it is given (``folder / file``).
        file: the weights file's name (``model.weights.h5``).
        versions: the versions of the packages that load the weights, kept in ``class.json``
            (``{"keras": "3.6.0"}``).
        why: why the model is no MLflow Model, for the warning ("has no get_config()").
        how: what the user does to log a model that loads on its own, for the warning.
    """
    kind = type(model)
    folder.mkdir(parents=True, exist_ok=True)
    save(folder / file)
    (folder / "class.json").write_text(
        json.dumps({"class": f"{kind.__module__}.{kind.__qualname__}", **versions})
    )
    trail.log_artifact(folder, "model")
    logger.warning(
        "mltrail: %s %s, so it is logged as weights (model/%s) and its class, not as an "
        "MLflow Model; %s.",
        kind.__qualname__,
        why,
        file,
        how,
    )


def parameter_counts(total: int, trainable: int) -> dict[str, int]:
    """The model's size as params, under the names every adapter uses:
    ``model.total_params`` and ``model.trainable_params``."""
    return {"model.total_params": total, "model.trainable_params": trainable}
