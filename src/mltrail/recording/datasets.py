"""Training data as a run records it: shape, a content fingerprint, a schema, and an MLflow
dataset input, for any adapter (numpy arrays, pandas objects, scipy sparse matrices, lists);
and :func:`fit_arguments`, which finds the data among the arguments of a patched training call.

The fingerprint identifies the data by content: arrays up to 256 MiB are hashed whole, larger
ones from evenly spaced rows, so that a training on the same data has the same digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from mltrail.recording.models import to_numpy

_FULL_HASH_BYTES = 256 << 20  # larger arrays are fingerprinted from evenly spaced rows


def describe(data: Any) -> str:
    """Shape and dtype of training input, not the data (``float32[800, 32]``); nested dicts
    and tuples of arrays read as such."""
    if isinstance(data, dict):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in data.items()) + "}"
    if isinstance(data, list | tuple):
        return "(" + ", ".join(describe(v) for v in data) + ")"
    shape = getattr(data, "shape", None)
    if shape is not None:
        dtype = str(getattr(data, "dtype", "")).replace("torch.", "")
        return f"{dtype}[{', '.join(str(d) for d in shape)}]"
    return type(data).__name__


def shape_of(data: Any) -> tuple[int, ...] | None:
    shape = getattr(data, "shape", None)
    if shape is None:
        try:
            shape = np.shape(data)
        except Exception:
            return None
    return tuple(int(n) for n in shape)


def dataset_input(X: Any, y: Any, role: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Params (``data.<role>.shape``, ``.digest``, ``.y_shape``, ``data.feature_names``) and an
    MLflow dataset input (for :meth:`mltrail.Trail.log_inputs`) describing ``X``/``y``."""
    digest = fingerprint(X, y)
    x_shape, y_shape = shape_of(X), shape_of(y) if y is not None else None
    params: dict[str, Any] = {
        f"data.{role}.shape": "x".join(map(str, x_shape)) if x_shape is not None else "unknown",
        f"data.{role}.digest": digest,
    }
    if y_shape is not None:
        params[f"data.{role}.y_shape"] = "x".join(map(str, y_shape))
    columns = getattr(X, "columns", None)
    if role == "train" and columns is not None:
        params["data.feature_names"] = ",".join(str(c) for c in columns)
    profile: dict[str, Any] = {"features_shape": x_shape}
    if y_shape is not None:
        profile["targets_shape"] = y_shape
    dataset = {
        "name": role,
        "digest": digest,
        "source_type": "code",
        "source": json.dumps({"tags": {"mlflow.source.name": entry_point()}}),
        "schema": json.dumps(schema(X, y)),
        "profile": json.dumps(profile),
        "tags": {"mlflow.data.context": role},
    }
    return params, dataset


def entry_point() -> str:
    return sys.argv[0] if sys.argv and sys.argv[0] else "<interactive>"


def fingerprint(*parts: Any) -> str:
    """A content hash of arrays, DataFrames, sparse matrices or lists (16 hex digits)."""
    digest = hashlib.sha256()
    for part in parts:
        hash_into(digest, part)
    return digest.hexdigest()[:16]


def data_digest(*parts: Any) -> str:
    """The ``data.<role>.digest`` param of training data: :func:`fingerprint` of its parts, or
    "unknown" when there is nothing to hash or it cannot be read back (so that the already-run
    check never takes data it could not read for data it knows)."""
    if not parts or parts[0] is None:
        return "unknown"
    try:
        return fingerprint(*parts)
    except Exception:
        return "unknown"


def arrays_digest(*parts: Any) -> str:
    """The ``data.<role>.digest`` of training data given as arrays: numpy, pandas, or any
    framework's tensors (read with :func:`~mltrail.recording.models.to_numpy`); a torch
    ``DataLoader`` over tensors in memory (a ``TensorDataset``) by its dataset's content, as
    :func:`~mltrail.recording.tensor_training.tensor_dataset_digest` reads it; "unknown" when
    its first part is another loader or a generator, which the framework iterates itself. Parts
    after the first (labels, weights) may be None."""
    if parts and _torch_loader(parts[0]):
        from mltrail.recording.tensor_training import tensor_dataset_digest

        return tensor_dataset_digest(parts[0].dataset)  # "unknown" unless tensors in memory
    if not parts or not hasattr(parts[0], "shape"):
        return "unknown"
    return data_digest(*(None if part is None else to_numpy(part) for part in parts))


def _torch_loader(data: Any) -> bool:
    """Whether ``data`` is a torch ``DataLoader`` (or another loader of ``torch.utils.data``)."""
    return type(data).__module__.startswith("torch.utils.data") and hasattr(data, "dataset")


def in_memory(rows: Any) -> Any:
    """``rows`` when they are data held in memory; None for a file's path (``str`` or
    ``os.PathLike``), which frameworks also take as training data and load themselves."""
    return None if isinstance(rows, str | os.PathLike) else rows


_DIGESTS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_DIGESTS_LOCK = threading.Lock()


def digest_once(data: Any, compute: Callable[[], str]) -> str:
    """``compute()`` for ``data``, once per object while it lives: for training inputs whose
    content cannot change after they are built (an XGBoost ``DMatrix``, a LightGBM
    ``Dataset``), which a loop of trainings passes again and again. Never for arrays."""
    try:
        with _DIGESTS_LOCK:
            known = _DIGESTS.get(data)
    except TypeError:  # not weakly referable
        return compute()
    if known is None:
        known = compute()
        with contextlib.suppress(TypeError), _DIGESTS_LOCK:
            _DIGESTS[data] = known
    return known


def built_data_digest(data: Any, rows: Callable[[], Any], *parts: Any) -> str:
    """The ``data.<role>.digest`` of a framework's built training data (an XGBoost
    ``DMatrix``, a LightGBM ``Dataset``).

    Its rows are digested once per object (:func:`digest_once`): they cannot change once it is
    built, and a framework may free them after its first training, which a loop of trainings
    on one object would otherwise see as unknown data. ``parts`` (its labels and weights,
    which can be set again) are digested with them at each call.

    Args:
        data: the framework's data object.
        rows: reads its rows (None when it has none in memory); an error it raises propagates.
        *parts: what else identifies the data now.

    Returns:
        The digest, or "unknown" when the rows cannot be read.
    """
    values = digest_once(data, lambda: data_digest(rows()))
    return values if values == "unknown" else data_digest(values, *parts)


def hash_into(digest: Any, data: Any) -> None:
    if data is None:
        digest.update(b"<none>")
        return
    if hasattr(data, "iloc"):  # pandas DataFrame or Series
        import pandas as pd

        names = list(data.columns) if hasattr(data, "columns") else [data.name]
        dtypes = list(data.dtypes) if hasattr(data, "columns") else [data.dtype]
        digest.update(repr((names, [str(t) for t in dtypes], data.shape)).encode())
        digest.update(pd.util.hash_pandas_object(data, index=False).to_numpy().tobytes())
        return
    if hasattr(data, "tocsr") and hasattr(data, "nnz"):  # scipy sparse
        csr = data.tocsr()
        digest.update(repr(("sparse", csr.shape, str(csr.dtype))).encode())
        for array in (csr.data, csr.indices, csr.indptr):
            digest.update(np.ascontiguousarray(array).tobytes())
        return
    array = np.asarray(data)
    digest.update(repr((array.shape, str(array.dtype))).encode())
    if array.dtype.hasobject:
        try:
            import pandas as pd

            digest.update(pd.util.hash_array(array.ravel()).tobytes())
        except Exception:  # no pandas, or objects it cannot hash
            digest.update(repr(array.tolist()).encode())
        return
    if array.nbytes > _FULL_HASH_BYTES and array.ndim:
        stride = math.ceil(array.nbytes / _FULL_HASH_BYTES)
        array = array[::stride]
    digest.update(np.ascontiguousarray(array).tobytes())


def mlflow_type(dtype: Any) -> str:
    kind = getattr(dtype, "kind", "O")
    if kind == "b":
        return "boolean"
    if kind in "iu":
        return "long" if dtype.itemsize >= 8 or kind == "u" else "integer"
    if kind == "f":
        return "double" if dtype.itemsize >= 8 else "float"
    if kind == "M":
        return "datetime"
    return "string"


def schema(X: Any, y: Any) -> dict[str, Any]:
    """The dataset schema in MLflow's JSON form: columns for a DataFrame, tensors otherwise."""
    if hasattr(X, "columns") and hasattr(X, "dtypes"):
        return {
            "mlflow_colspec": [
                {"type": mlflow_type(dtype), "name": str(name), "required": True}
                for name, dtype in list(zip(X.columns, X.dtypes, strict=False))[:1000]
            ]
        }

    def tensor(data: Any) -> str | None:
        if data is None:
            return None
        shape = shape_of(data) or ()
        dtype = getattr(data, "dtype", None) or np.asarray(data[:1]).dtype
        spec = {"dtype": str(dtype), "shape": [-1, *shape[1:]]}
        return json.dumps([{"type": "tensor", "tensor-spec": spec}])

    try:
        return {"mlflow_tensorspec": {"features": tensor(X), "targets": tensor(y)}}
    except Exception:  # ragged lists and other array-likes without a dtype
        return {"mlflow_tensorspec": {"features": None, "targets": None}}


def fit_arguments(
    method: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, Any, dict[str, Any]]:
    """The data of a training call ``method(instance, *args, **kwargs)`` as an autolog patch
    sees it, bound by the method's signature: ``X`` (the parameter after ``self``), ``y`` (the
    next one, when it is named ``y`` or ``Y``) and the other arguments by name, ``**kwargs``
    spread. A call that does not bind gives its first two positional arguments and nothing else.
    """
    try:
        bound = inspect.signature(method).bind(instance, *args, **kwargs)
    except (TypeError, ValueError):
        return (args[0] if args else kwargs.get("X")), (args[1] if len(args) > 1 else None), {}
    parameters = bound.signature.parameters
    names = list(parameters)
    values = dict(bound.arguments)
    values.pop(names[0], None)  # self
    X = values.pop(names[1], None) if len(names) > 1 else None
    y = values.pop(names[2], None) if len(names) > 2 and names[2] in {"y", "Y"} else None
    rest: dict[str, Any] = {}
    for name, value in values.items():
        kind = parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            rest.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            rest[name] = value
    return X, y, rest
