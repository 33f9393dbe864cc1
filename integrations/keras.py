"""Keras 3 adapter: ``model.fit(..., callbacks=[TrailCallback()])`` records the training in MLflow.

Works on every Keras 3 backend. The callback only translates Keras events into calls on a
:class:`mltrail.Trail`:

- params: fit arguments, the optimizer's config (learning-rate schedules included), loss and
  metric names, model name, parameter counts, backend, EarlyStopping settings;
- metrics: each epoch's logs at ``step = epoch`` plus ``learning_rate``; opt-in batch logs under
  ``step/`` at the global optimizer step; ``evaluate()`` results as ``test_*``;
- checkpoints: the best model by ``monitor`` (and the last one) as ``.keras`` files under
  ``checkpoints/``, plus the files the user's own ``ModelCheckpoint`` writes;
- the final model under ``model/`` in MLflow's Keras flavor, with signature and input example.

Keras callbacks have no exception hook, so the module wraps ``keras.Model.fit`` once per process
(a transparent pass-through unless a TrailCallback is among the callbacks): the wrapper sees the
fit arguments and sibling callbacks, ends the run FAILED (KILLED on KeyboardInterrupt) when fit
raises, and finishes the run after every callback's ``on_train_end`` (so EarlyStopping has
restored the best weights before the model is logged).
"""

from __future__ import annotations

import functools
import glob
import importlib.metadata
import inspect
import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

try:
    import keras
except ImportError as error:  # pragma: no cover - exercised in the no-framework environment
    raise ImportError(
        'mltrail.integrations.keras needs Keras 3: pip install "mltrail[keras]"'
    ) from error
if int(keras.__version__.split(".")[0]) < 3:  # pragma: no cover
    raise ImportError(
        f"mltrail.integrations.keras needs Keras 3 (found {keras.__version__}): "
        'pip install "mltrail[keras]"'
    )

import numpy as np

from mltrail.autolog import live_patch, options_for
from mltrail.errors import MltrailError, guarded
from mltrail.recording.trail import Trail, start_run

logger = logging.getLogger("mltrail.keras")

__all__ = ["TrailCallback", "autolog_patches"]

CHECKPOINT_POLICIES = ("none", "best", "best_and_last", "all")
# Intermediate best-checkpoint saves may take this share of the training wall time; a better
# epoch that does not fit the budget is kept in memory and written later (at the latest at the end).
SAVE_BUDGET = 0.01
EXAMPLE_ROWS = 5
_MAXIMIZED = ("acc", "auc", "precision", "recall", "f1", "iou", "top_k")
_BACKEND_PACKAGES = {
    "torch": "torch",
    "jax": "jax",
    "tensorflow": "tensorflow",
    "openvino": "openvino",
}
_FIT_ARGS = (
    "batch_size",
    "epochs",
    "shuffle",
    "validation_split",
    "validation_freq",
    "validation_steps",
    "validation_batch_size",
    "steps_per_epoch",
    "initial_epoch",
)
_EARLY_STOPPING_SETTINGS = (
    "monitor",
    "min_delta",
    "patience",
    "mode",
    "baseline",
    "restore_best_weights",
    "start_from_epoch",
)


class TrailCallback(keras.callbacks.Callback):
    """Record ``Model.fit`` (and ``evaluate``) in an MLflow run through mltrail.

    Args:
        trail: an existing :class:`mltrail.Trail` to log into (the caller ends it). When None,
            the callback starts its own run with ``start_run_kwargs`` at the first ``fit`` and
            ends it when ``fit`` returns (FINISHED) or raises (FAILED; KILLED on interrupt).
        log_every_n_batches: also log the batch logs every N optimizer steps under ``step/``,
            at the global step (which never resets between epochs). Off by default.
        checkpoints: "none", "best" (the best model by ``monitor``), "best_and_last" (plus the
            model at the end of training) or "all" (one file per epoch). Except with "none",
            files written by the user's own ``ModelCheckpoint`` are uploaded too.
        monitor: the metric that picks the best checkpoint; default ``val_loss`` when the
            epoch logs have it, else ``loss``.
        mode: "min", "max" or "auto" (max for accuracy-like names, else min).
        log_model: log the final model under ``model/`` in MLflow's Keras flavor.
        registered_model_name: also register the final model under this name.
        **start_run_kwargs: passed to :func:`mltrail.start_run` (``experiment``, ``run_name``,
            ``run_id`` to resume a run, ``tags``, ``tracking_uri`` and run options).

    One instance used in several ``fit`` calls logs into one run (epochs continue where the
    previous call stopped); ``evaluate(..., callbacks=[callback])`` adds ``test_*`` metrics to it.
    """

    # The batch hook only enqueues metrics, so Keras may dispatch it on its thread pool.
    async_safe = True

    def __init__(
        self,
        trail: Trail | None = None,
        *,
        log_every_n_batches: int | None = None,
        checkpoints: str = "best_and_last",
        monitor: str | None = None,
        mode: str = "auto",
        log_model: bool = True,
        registered_model_name: str | None = None,
        **start_run_kwargs: Any,
    ) -> None:
        super().__init__()
        if trail is not None and start_run_kwargs:
            raise MltrailError(
                "TrailCallback takes either trail= (an existing Trail) or start_run keyword "
                f"arguments, not both (got {sorted(start_run_kwargs)})."
            )
        if checkpoints not in CHECKPOINT_POLICIES:
            raise MltrailError(
                f"checkpoints must be one of {CHECKPOINT_POLICIES}, not {checkpoints!r}."
            )
        if mode not in ("auto", "min", "max"):
            raise MltrailError(f"mode must be 'auto', 'min' or 'max', not {mode!r}.")
        if log_every_n_batches is not None and (
            isinstance(log_every_n_batches, bool)
            or not isinstance(log_every_n_batches, int)
            or log_every_n_batches < 1
        ):
            raise MltrailError(
                f"log_every_n_batches must be a positive int or None, not {log_every_n_batches!r}."
            )
        self._trail = trail
        self._given = trail is not None
        self._run_options = start_run_kwargs
        self._every = log_every_n_batches
        self._policy = checkpoints
        self._monitor = monitor
        self._mode = mode
        self._log_model = log_model
        self._registered_model_name = registered_model_name
        # run state
        self._summary_logged = False
        self._next_epoch = 0  # the step after the last logged epoch
        self._last_status: str | None = None
        # fit state
        self._in_fit = False
        self._guarded = False
        self._fit_args: dict[str, Any] = {}
        self._siblings: list[Any] = []
        self._offset = 0
        self._first_epoch = True
        self._epoch_start = 0
        self._spe = 1
        self._last_step: int | None = None
        self._fit_started = 0.0
        # checkpoints
        self._tmp: Path | None = None
        self._best: float | None = None
        self._best_step: int | None = None
        self._pending: dict[str, Any] | None = None  # a better epoch not yet written
        self._save_seconds = 0.0
        self._save_cost = 0.05  # a guess until the first save is timed
        self._user_files: dict[str, tuple[int, int]] = {}
        _install_fit_guard()

    # --- public --------------------------------------------------------------------------------

    @property
    def trail(self) -> Trail | None:
        """The run session in use (None before the first ``fit``)."""
        return self._trail

    @property
    def run_id(self) -> str | None:
        """The MLflow run id (None before the first ``fit``)."""
        return self._trail.run_id if self._trail is not None else None

    # --- Keras hooks ---------------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = True
        self._first_epoch = True
        self._fit_started = time.monotonic()
        self._pending = None
        with guarded("keras: starting the run"):
            trail = self._open()
            if not trail.enabled:
                return
            model = self.model
            trail.log_params(self._params(model))
            if self._every is not None:
                self._epoch_start = _int(getattr(model.optimizer, "iterations", 0))
                self._spe = _int(getattr(model, "steps_per_execution", 1)) or 1
            self._user_files = self._user_checkpoint_files()  # files there before this fit
            if not self._summary_logged:
                self._summary_logged = True
                chunks: list[str] = []
                model.summary(print_fn=lambda text, **_: chunks.append(str(text)))
                trail.log_text("\n".join(chunks), "model_summary.txt")

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._first_epoch:
            # A later fit() of the same callback that restarts at epoch 0 continues the steps.
            self._first_epoch = False
            self._offset = max(0, self._next_epoch - epoch)
        if self._every is not None:
            with guarded("keras: reading the optimizer step"):
                self._epoch_start = _int(self.model.optimizer.iterations)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        every = self._every
        if every is None or not logs:
            return
        step = self._epoch_start + batch + 1  # the optimizer step after this batch
        if step // every == (step - self._spe) // every:
            return
        with guarded("keras: logging batch metrics"):
            if self._trail is not None:
                self._trail.log_metrics({f"step/{k}": v for k, v in logs.items()}, step=step)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        trail = self._trail
        if trail is None or not trail.enabled:
            return
        step = epoch + self._offset
        self._last_step = step
        self._next_epoch = step + 1
        with guarded("keras: logging epoch metrics"):
            metrics = dict(logs or {})
            if "learning_rate" not in metrics:  # ReduceLROnPlateau/LearningRateScheduler set it
                rate = _learning_rate(self.model.optimizer)
                if rate is not None:
                    metrics["learning_rate"] = rate
            trail.log_metrics(metrics, step=step)
        if self._policy == "none":
            return
        with guarded("keras: saving checkpoints"):
            improved = self._improved(logs or {})
            if improved:
                self._best_step = step
            if self._policy == "all":
                aliases = ("best", "latest") if improved else ("latest",)
                self._save(f"epoch-{step:04d}.keras", aliases, step, logs)
            elif improved:
                self._pending = {"step": step, "metrics": dict(logs or {}), "state": None}
            self._write_pending(force=False)
            self._upload_user_checkpoints(step)

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._in_fit or not logs:
            return  # validation inside fit: already in the epoch logs as val_*
        with guarded("keras: logging evaluate() results"):
            metrics = {f"test_{k}": v for k, v in logs.items()}
            step = max(self._next_epoch - 1, 0)
            if self._given:
                if self._trail.status is None:  # type: ignore[union-attr]
                    self._trail.log_metrics(metrics, step=step)  # type: ignore[union-attr]
                return
            trail = self._open(quick=True)  # our run ended with fit(): reopen it briefly
            trail.log_metrics(metrics, step=step)
            trail.end(self._last_status or "FINISHED")
            self._last_status = trail.status

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if not self._guarded:  # no fit wrapper around this call: finish here
            self._finish()

    # --- called by the fit wrapper -------------------------------------------------------------

    def _before_fit(self, arguments: dict[str, Any], callbacks: list[Any]) -> None:
        self._guarded = True
        self._fit_args = arguments
        self._siblings = [c for c in callbacks if c is not self]

    def _after_fit(self, error: BaseException | None) -> None:
        self._guarded = False
        try:
            if error is None:
                self._finish()
            elif self._in_fit:
                self._finish(error)
        finally:
            self._fit_args = {}
            self._siblings = []

    # --- run lifecycle -------------------------------------------------------------------------

    def _open(self, quick: bool = False) -> Trail:
        """The open Trail: the given one, ours, or ours again (same run) after it ended."""
        trail = self._trail
        if trail is not None and self._given:
            if trail.status is not None:
                raise MltrailError(
                    f"The Trail given to TrailCallback has ended (run {trail.run_id}, "
                    f"{trail.status}). Give it an open Trail, or none to let it start its own run."
                )
            return trail
        if trail is not None and trail.status is None:
            return trail
        options = dict(self._run_options)
        if trail is not None and trail.owned:
            # Our earlier run ended with the previous fit(): resume it rather than start anew.
            for key in ("experiment", "run_name"):
                options.pop(key, None)
            options["run_id"] = trail.run_id
            if quick:  # reopened for evaluate(): provenance was captured already
                options.update(capture=False, system_metrics=False)
        self._trail = start_run(**options)
        return self._trail

    def _finish(self, error: BaseException | None = None) -> None:
        """End of a fit: final checkpoints, EarlyStopping outcome, the model; end our run."""
        self._in_fit = False
        trail = self._trail
        if trail is None or trail.status is not None:
            return
        if trail.enabled:
            step = self._last_step if self._last_step is not None else max(self._next_epoch - 1, 0)
            with guarded("keras: logging EarlyStopping"):
                self._log_early_stopping(step)
            if self._policy != "none":
                with guarded("keras: saving checkpoints"):
                    # After an error or EarlyStopping's restore the model is not the last epoch's.
                    unchanged = error is None and not self._restored()
                    self._write_pending(force=True, unchanged=unchanged)
                    best_is_last = self._best_step == step and unchanged
                    if error is None and self._policy == "best_and_last" and not best_is_last:
                        self._save("last.keras", ("latest",), step, None)
                    self._upload_user_checkpoints(step)
            if error is None and self._log_model:
                with guarded("keras: logging the model"):
                    self._log_final_model(trail)
        with guarded("keras: ending the run"):
            flushed = trail.flush()
            if not self._given:
                if error is None:
                    trail.end("FINISHED")
                else:
                    trail.end_with_exception(error)
                self._last_status = trail.status
            if flushed and self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def _log_final_model(self, trail: Trail) -> None:
        model = self.model
        example = output = None
        with guarded("keras: taking an input example"):
            example = _sample(self._fit_args.get("x"))
            if example is not None:
                output = _to_numpy(model(example, training=False))
        if example is None:
            logger.info("mltrail: no input example from the training data; no model signature.")
        trail.log_model(
            model,
            "keras",
            signature_from=example,
            registered_model_name=self._registered_model_name,
            output_example=output,
            background=False,  # the model must not change while it is serialised
            pip_requirements=_pip_requirements(),  # MLflow's inference would reload the model
        )

    # --- params --------------------------------------------------------------------------------

    def _params(self, model: Any) -> dict[str, Any]:
        args = self._fit_args
        params: dict[str, Any] = {k: args[k] for k in _FIT_ARGS if args.get(k) is not None}
        params.setdefault("epochs", (self.params or {}).get("epochs"))
        steps = (self.params or {}).get("steps")
        if steps is not None:
            params["steps_per_epoch"] = params.get("steps_per_epoch") or steps
        if params.get("batch_size") is None and hasattr(args.get("x"), "shape"):
            params["batch_size"] = 32  # Keras' default for array inputs
        for name in ("x", "y", "validation_data", "sample_weight"):
            if args.get(name) is not None:
                params[f"data.{name}"] = _describe(args[name])
        if args.get("class_weight"):
            params["class_weight"] = _summarize_weights(args["class_weight"])
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            params["optimizer"] = {
                "class": type(optimizer).__name__,
                **_readable(optimizer.get_config()),
            }
        compiled = model.get_compile_config() or {}
        for name in ("loss", "metrics", "weighted_metrics"):
            if compiled.get(name) is not None:
                params[f"compile.{name}"] = _names(compiled[name])
        for name in ("loss_weights", "steps_per_execution", "jit_compile", "run_eagerly"):
            if compiled.get(name) is not None:
                params[f"compile.{name}"] = compiled[name]
        params["model.name"] = model.name
        params["model.class"] = type(model).__name__
        params["model.total_params"] = model.count_params()
        params["model.trainable_params"] = int(
            sum(np.prod(w.shape) for w in model.trainable_weights)
        )
        params["keras.backend"] = keras.backend.backend()
        params["keras.version"] = keras.__version__
        for prefix, callback in self._early_stopping():
            params[prefix] = {k: getattr(callback, k, None) for k in _EARLY_STOPPING_SETTINGS}
        return params

    def _early_stopping(self) -> list[tuple[str, Any]]:
        found = [c for c in self._siblings if isinstance(c, keras.callbacks.EarlyStopping)]
        return [(f"early_stopping{'' if i == 0 else f'_{i + 1}'}", c) for i, c in enumerate(found)]

    def _restored(self) -> bool:
        """Whether an EarlyStopping restored (or will restore) its best weights."""
        return any(
            c.restore_best_weights and c.best_weights is not None for _, c in self._early_stopping()
        )

    def _log_early_stopping(self, step: int) -> None:
        for prefix, callback in self._early_stopping():
            restored = callback.restore_best_weights and callback.best_weights is not None
            metrics: dict[str, Any] = {f"{prefix}.restored_best_weights": float(restored)}
            if callback.best is not None:
                metrics[f"{prefix}.best"] = callback.best
                metrics[f"{prefix}.best_epoch"] = callback.best_epoch + self._offset
            if callback.stopped_epoch > 0:  # Keras' 0 means "did not stop early"
                metrics[f"{prefix}.stopped_epoch"] = callback.stopped_epoch + self._offset
            self._trail.log_metrics(metrics, step=step)  # type: ignore[union-attr]

    # --- checkpoints ---------------------------------------------------------------------------

    def _improved(self, logs: dict[str, Any]) -> bool:
        """Whether this epoch is the best so far by the monitored metric (remembered if so)."""
        if self._monitor is None:
            self._monitor = "val_loss" if "val_loss" in logs else "loss"
        value = logs.get(self._monitor)
        if value is None:
            return False
        value = float(value)
        if value != value:  # NaN is never the best
            return False
        mode = self._mode
        if mode == "auto":
            mode = "max" if any(word in self._monitor for word in _MAXIMIZED) else "min"
        better = self._best is None or (value > self._best if mode == "max" else value < self._best)
        if better:
            self._best = value
        return better

    def _write_pending(self, force: bool, unchanged: bool = True) -> None:
        """Write the best epoch's model now, or keep a copy of its state in memory while saving
        would cost more than ``SAVE_BUDGET`` of the training time so far (``force`` at the end).

        ``unchanged``: the model still holds the weights of the last epoch end.
        """
        pending = self._pending
        if pending is None:
            return
        elapsed = time.monotonic() - self._fit_started
        affordable = self._save_seconds + self._save_cost <= SAVE_BUDGET * elapsed
        if not (force or affordable):
            if pending["state"] is None:  # the model moves on: keep this epoch's state
                pending["state"] = _state(self.model)
            return
        self._pending = None
        aliases = ("best", "latest")
        if pending["step"] == self._last_step and unchanged:
            self._save("best.keras", aliases, pending["step"], pending["metrics"])
            return
        now = _state(self.model)  # write the kept state, then put the current one back
        _load_state(self.model, pending["state"])
        try:
            self._save("best.keras", aliases, pending["step"], pending["metrics"])
        finally:
            _load_state(self.model, now)

    def _save(self, name: str, aliases: tuple[str, ...], step: int, metrics: Any) -> None:
        started = time.monotonic()
        path = self._fresh_dir() / name  # a new folder per save: uploads never see a rewrite
        self.model.save(str(path))
        self._save_cost = time.monotonic() - started
        self._save_seconds += self._save_cost
        self._trail.log_checkpoint(path, step=step, metrics=metrics, aliases=aliases)  # type: ignore[union-attr]

    def _fresh_dir(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="mltrail-keras-"))
        return Path(tempfile.mkdtemp(dir=self._tmp))

    def _user_checkpoint_files(self) -> dict[str, tuple[int, int]]:
        """Files matching the user's ModelCheckpoint paths, with (mtime, size)."""
        files: dict[str, tuple[int, int]] = {}
        for callback in self._siblings:
            if not isinstance(callback, keras.callbacks.ModelCheckpoint):
                continue
            pattern = re.sub(r"\{[^}]*\}", "*", glob.escape(str(callback.filepath)))
            for name in glob.glob(pattern):
                try:
                    stat = Path(name).stat()
                except OSError:
                    continue
                files[name] = (stat.st_mtime_ns, stat.st_size)
        return files

    def _upload_user_checkpoints(self, step: int) -> None:
        if self._policy == "none":
            return
        for name, key in self._user_checkpoint_files().items():
            if self._user_files.get(name) == key:
                continue
            self._user_files[name] = key
            # A copy, so that ModelCheckpoint overwriting the file cannot tear the upload.
            copy = self._fresh_dir() / Path(name).name
            shutil.copy2(name, copy)
            self._trail.log_checkpoint(copy, step=step, aliases=())  # type: ignore[union-attr]


# --- helpers -------------------------------------------------------------------------------------


def _int(value: Any) -> int:
    return int(keras.ops.convert_to_numpy(value))


def _to_numpy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_numpy(v) for v in value]
    return keras.ops.convert_to_numpy(value)


def _learning_rate(optimizer: Any) -> float | None:
    """The current learning rate; a schedule is evaluated at the optimizer's step."""
    if optimizer is None:
        return None
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except Exception:
        return None


def _state(model: Any) -> list[np.ndarray]:
    """A copy of everything ``model.save`` writes that training changes."""
    variables = list(model.variables)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def _load_state(model: Any, state: list[np.ndarray]) -> None:
    variables = list(model.variables)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    for variable, value in zip(variables, state, strict=True):
        variable.assign(value)


def _readable(config: dict[str, Any]) -> dict[str, Any]:
    """Serialized Keras objects (a learning-rate schedule) become {"class": ..., **config}."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and "class_name" in value and "config" in value:
            inner = value["config"] if isinstance(value["config"], dict) else {}
            value = {"class": value["class_name"], **_readable(inner)}
        out[key] = value
    return out


def _names(value: Any) -> str:
    """Readable names of losses/metrics given to compile (strings, objects, lists, dicts)."""
    if value is None:
        return "None"
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "class_name" in value:  # a serialized Keras object
        config = value.get("config")
        name = config.get("name") if isinstance(config, dict) else config
        return str(name or value["class_name"])
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_names(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_names(v) for v in value)
    return str(getattr(value, "name", None) or getattr(value, "__name__", type(value).__name__))


def _describe(data: Any) -> str:
    """Shape and dtype of training data, not the data ("float32[800, 32]")."""
    if isinstance(data, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in data.items()) + "}"
    if isinstance(data, list | tuple):
        return "(" + ", ".join(_describe(v) for v in data) + ")"
    shape = getattr(data, "shape", None)
    if shape is not None:
        dtype = str(getattr(data, "dtype", "")).replace("torch.", "")
        return f"{dtype}[{', '.join(str(d) for d in shape)}]"
    return type(data).__name__


def _summarize_weights(weights: Any) -> str:
    if not isinstance(weights, dict):
        return type(weights).__name__
    if len(weights) <= 20:
        return str({k: float(v) for k, v in weights.items()})
    values = [float(v) for v in weights.values()]
    return f"{len(values)} classes, weights {min(values):g}..{max(values):g}"


def _sample(data: Any, rows: int = EXAMPLE_ROWS) -> Any:
    """A few rows of training inputs for the model signature, or None when not cheaply had."""
    if data is None or isinstance(data, list | tuple):
        return None  # multi-input lists have no MLflow tensor signature
    if isinstance(data, dict):
        parts = {k: _sample(v, rows) for k, v in data.items()}
        return None if any(v is None for v in parts.values()) else parts
    if hasattr(data, "iloc"):  # pandas
        data = data.to_numpy()
    if hasattr(data, "shape") and hasattr(data, "__getitem__"):
        return np.asarray(keras.ops.convert_to_numpy(data[:rows]))
    if isinstance(data, keras.utils.PyDataset):
        batch = data[0]
    elif hasattr(data, "__iter__") and iter(data) is not data:
        batch = next(iter(data))  # a re-iterable loader (torch DataLoader, tf.data): one batch
    else:
        return None  # a generator would lose the batch we took
    if isinstance(batch, tuple):
        batch = batch[0]  # (x, y[, sample_weight])
    return _sample(batch, rows)


def _pip_requirements() -> list[str]:
    """keras, the backend's package and numpy, pinned to what is installed."""
    requirements = [f"keras=={keras.__version__}"]
    for package in (_BACKEND_PACKAGES.get(keras.backend.backend()), "numpy"):
        if package is None:
            continue
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
        requirements.append(f"{package}=={version.split('+')[0]}")  # drop local labels (+cpu)
    return requirements


# --- the fit wrapper -----------------------------------------------------------------------------

_guard_lock = threading.Lock()


def _flat_callbacks(callbacks: Any) -> list[Any]:
    if callbacks is None:
        return []
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return list(callbacks.callbacks)
    if isinstance(callbacks, Iterable):
        return list(callbacks)
    return [callbacks]


def _fit_guard(
    original: Callable[..., Any], signature: inspect.Signature | None = None
) -> Callable[..., Any]:
    signature = signature or inspect.signature(original)

    @functools.wraps(original)
    def fit(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return original(*args, **kwargs)  # let Keras report the bad call
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        callbacks = _flat_callbacks(arguments.get("callbacks"))
        ours = [c for c in callbacks if isinstance(c, TrailCallback)]
        if not ours:
            return original(*args, **kwargs)
        for callback in ours:
            callback._before_fit(arguments, callbacks)
        try:
            result = original(*args, **kwargs)
        except BaseException as error:
            for callback in ours:
                with guarded("keras: ending a failed run"):
                    callback._after_fit(error)
            raise
        for callback in ours:
            callback._after_fit(None)
        return result

    fit.__mltrail_fit_guard__ = True  # type: ignore[attr-defined]
    return fit


def _has_fit_guard() -> bool:
    """Whether every fit already goes through a guard: ours, or autolog's live patch."""
    current: Any = keras.Model.fit
    while current is not None:
        if getattr(current, "__mltrail_fit_guard__", False) or live_patch(current):
            return True
        current = getattr(current, "__wrapped__", None)
    return False


def _install_fit_guard() -> None:
    """Wrap ``keras.Model.fit`` once per process (see the module docstring for why)."""
    with _guard_lock:
        if not _has_fit_guard():
            keras.Model.fit = _fit_guard(keras.Model.fit)


# --- autolog ------------------------------------------------------------------------------------


def autolog_patches(options: dict[str, Any]) -> list[tuple[Any, str, Callable[..., Any]]]:
    """Patches for ``mltrail.autolog()``: every ``Model.fit`` without a TrailCallback gets one
    (a new run per fit call), built from the autolog options this adapter understands."""

    # The patch guards the fits itself, so that disabling autolog leaves Model.fit as it was.
    guarded_below = _has_fit_guard()
    start, own = options_for("keras", options)
    settings = {**start, **own}
    signature = inspect.signature(keras.Model.fit)

    def fit(call_original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return call_original(*args, **kwargs)
        call = call_original if guarded_below else _fit_guard(call_original, signature)
        callbacks = bound.arguments.get("callbacks")
        present = _flat_callbacks(callbacks)
        if isinstance(callbacks, keras.callbacks.CallbackList) or any(
            isinstance(c, TrailCallback) for c in present
        ):
            return call(*args, **kwargs)
        bound.arguments["callbacks"] = [*present, TrailCallback(**settings)]
        return call(*bound.args, **bound.kwargs)

    return [(keras.Model, "fit", fit)]
