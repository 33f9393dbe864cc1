"""Run options: keyword arguments of ``start_run`` and their environment variables."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from mltrail.errors import MltrailError, reject_unknown
from mltrail.flags import is_true

ENV_PREFIX = "MLTRAIL_"


def default_spool_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mltrail" / "spool"


@dataclasses.dataclass
class Options:
    """Everything a run can be tuned with. Each field can also be set as ``MLTRAIL_<NAME>``.

    Attributes:
        flush_timeout: seconds ``end()`` and interpreter exit may spend sending what is queued.
        start_timeout: seconds run creation may block the caller before going offline.
        flush_interval: seconds between background sends.
        request_retries: attempts per request before the batch goes to the spool.
        spool_dir: where unsendable data is journaled for ``mltrail sync``.
        max_queue_values: metric values held in memory before overflow goes to the spool.
        system_metrics: sample CPU, memory, disk, network and GPU use as ``system/`` metrics.
        system_metrics_interval: seconds between system samples.
        capture: record git, DVC and environment provenance.
        snapshot: save a dirty working tree as a hidden commit under ``refs/mltrail/``.
        snapshot_data: store modified DVC data in the DVC cache so the run stays restorable.
        max_diff_bytes: cap of the ``mltrail/git.diff`` artifact.
        nonfinite: what to do with NaN/inf metric values: "log" them (counted) or "skip" them.
        heartbeat_interval: seconds between heartbeat tags (used to find crashed runs).
        already_run: what to do when the same code, data and params ran before: "warn",
            "error" or "ignore".
        end_in_background: adapters end their runs on a thread of their own, so that ``fit``
            returns at once; interpreter exit (or ``mltrail.wait()``) waits for them.
        checkpoints_as_models: each uploaded checkpoint is also an MLflow 3 LoggedModel (its
            step and metrics linked): True, False, or "auto" (on MLflow 3, for the checkpoints
            an adapter can load as a model).
        keep_checkpoints: which uploaded checkpoints stay in the store: "all", "best_and_last"
            (those the ``best`` and ``latest`` aliases name), or N (the N latest and the best);
            superseded ones are deleted from the store (never the local files) and listed
            under ``dropped`` in ``checkpoints/index.json``.
        fork: resuming a run from a checkpoint older than its last logged step starts a new
            run forked from it (``mltrail.forked_from``); False continues the old run and
            records the rewind (``mltrail.rewound_to_step``). See :mod:`mltrail.recording.restart`.
    """

    flush_timeout: float = 30.0
    start_timeout: float = 15.0
    flush_interval: float = 1.0
    request_retries: int = 3
    spool_dir: Path = dataclasses.field(default_factory=default_spool_dir)
    max_queue_values: int = 500_000
    system_metrics: bool = True
    system_metrics_interval: float = 10.0
    capture: bool = True
    snapshot: bool = True
    snapshot_data: bool = False
    max_diff_bytes: int = 5_000_000
    nonfinite: str = "log"
    heartbeat_interval: float = 60.0
    already_run: str = "warn"
    end_in_background: bool = True
    checkpoints_as_models: str = "auto"
    keep_checkpoints: str = "all"
    fork: bool = True

    @classmethod
    def resolve(cls, **overrides: Any) -> Options:
        """Build options from defaults, then ``MLTRAIL_*`` variables, then keyword arguments."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        reject_unknown(
            overrides, fields, "Unknown mltrail option {name}.{hint} Valid options: {known}."
        )
        options = cls()
        for name, field in fields.items():
            env = os.environ.get(ENV_PREFIX + name.upper())
            if name in overrides and overrides[name] is not None:
                setattr(options, name, _convert(name, overrides[name], field))
            elif env not in (None, ""):
                setattr(options, name, _convert(name, env, field))
        if options.nonfinite not in {"log", "skip"}:
            raise MltrailError(f"nonfinite must be 'log' or 'skip', not {options.nonfinite!r}.")
        options.checkpoints_as_models = _as_models(options.checkpoints_as_models)
        options.keep_checkpoints = _keep(options.keep_checkpoints)
        if options.already_run not in {"warn", "error", "ignore"}:
            raise MltrailError(
                f"already_run must be 'warn', 'error' or 'ignore', not {options.already_run!r}."
            )
        return options


def _as_models(value: Any) -> str:
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in {"true", "1", "yes", "on", "false", "0", "no", "off"}:
        return "true" if is_true(text) else "false"
    raise MltrailError(f"checkpoints_as_models must be True, False or 'auto', not {value!r}.")


def _keep(value: Any) -> str:
    text = str(value).strip().lower()
    if text in {"all", "best_and_last"} or (text.isdigit() and int(text) > 0):
        return text
    raise MltrailError(
        f"keep_checkpoints must be 'all', 'best_and_last' or a number of checkpoints (1 or "
        f"more), not {value!r}."
    )


def _convert(name: str, value: Any, field: dataclasses.Field[Any]) -> Any:
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    try:
        if kind == "bool":
            return is_true(value) if isinstance(value, str) else bool(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "Path":
            return Path(value).expanduser()
        return str(value)
    except (TypeError, ValueError) as error:
        raise MltrailError(f"Option {name!r} expects a {kind}, got {value!r}.") from error
