"""Keras 3 adapter: ``model.fit(..., callbacks=[TrailCallback()])`` records the training in MLflow.

Works on every Keras 3 backend. The callback maps Keras events to the recording kernel
(:mod:`mltrail.adapters`): fit arguments, optimizer and compile settings as params; each epoch's
logs plus ``learning_rate`` at ``step = epoch`` (batch logs under ``step/`` on request);
``evaluate()`` results as ``test_*``; the best (and last) model as ``.keras`` checkpoints, with
the files of the user's own ``ModelCheckpoint``; the final model in MLflow's Keras flavor.

Keras callbacks have no exception hook, so ``keras.Model.fit`` is wrapped once per process (a
pass-through unless a TrailCallback is among the callbacks; the kernel's
:class:`~mltrail.adapters.TrainingWrapper`): the wrapper hands the callback the fit arguments
and its sibling callbacks, and ends the run after every callback's ``on_train_end``
(EarlyStopping has restored the best weights) or FAILED when fit raises.
"""

from __future__ import annotations

from collections.abc import Callable
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

from mltrail import Trail
from mltrail.adapters import (
    AutologCallbacks,
    BestTracker,
    CheckpointFile,
    CheckpointModel,
    CheckpointUploads,
    EarlyStop,
    EpochCheckpoints,
    EpochLog,
    ModelFile,
    RunSession,
    SaveBudget,
    SavedFile,
    TrainingCall,
    TrainingWrapper,
    arrays_digest,
    check_every,
    describe,
    early_stopping_params,
    every_n,
    exception_safe,
    input_rows,
    log_weights,
    options_for,
    parameter_counts,
    pinned_requirements,
    send_models_as_files,
    template_files,
    to_numpy,
)

__all__ = ["TrailCallback", "autolog_patches"]

# Saves of the best model may take this share of the training time; a better epoch that does
# not fit the budget is kept in memory and written later (at the latest when training ends).
SAVE_BUDGET = 0.01
_FIT_ARGS = ("batch_size", "epochs", "shuffle", "validation_split", "validation_freq")
_FIT_ARGS += ("validation_steps", "validation_batch_size", "steps_per_epoch", "initial_epoch")
_STOPPING = ("monitor", "min_delta", "patience", "mode", "baseline", "restore_best_weights")
_STOPPING += ("start_from_epoch",)


def _model_file(model: Any) -> ModelFile | None:
    """A model Keras saves whole goes to mltrail's recorder process as its ``.keras`` file,
    the one MLflow's Keras flavor writes: the recorder never rebuilds the model, whose class
    may be the script's own."""
    if not _serialisable(model):
        return None
    return ModelFile.written(
        model,
        "keras",
        "model.keras",
        model.save,
        in_place_of=_KERAS_FLAVOR_FILE,
        stand_in=SavedFile,
    )


_KERAS_FLAVOR_FILE = "data/model.keras"  # where MLflow's Keras flavor keeps the model
send_models_as_files("keras", _model_file)


@exception_safe()
class TrailCallback(keras.callbacks.Callback):
    """Record ``Model.fit`` (and ``evaluate``) in an MLflow run through mltrail.

    One instance used in several ``fit`` calls records one run (its epochs continue);
    ``evaluate(..., callbacks=[callback])`` adds ``test_*`` metrics to that run.

    Args:
        trail: an open :class:`mltrail.Trail` to record into (its owner ends it). When None,
            the callback starts its own run at the first ``fit`` and ends it when ``fit``
            returns (FINISHED) or raises (FAILED; KILLED on interrupt).
        log_every_n_batches: also log the batch logs every N optimizer steps under ``step/``,
            at the global step. Off by default.
        checkpoints: "none", "best" (the best model by ``monitor``), "best_and_last" (and the
            model at the end of training) or "all" (one file per epoch). Except with "none",
            the files of the user's own ``ModelCheckpoint`` are uploaded too.
        monitor: the metric that picks the best checkpoint; default ``val_loss`` when the
            epoch logs have it, else ``loss``.
        mode: "min", "max" or "auto" (max for accuracy-like names).
        log_model: log the final model under ``model/`` in MLflow's Keras flavor.
        registered_model_name: also register the final model under this name.
        **start_run_kwargs: the keyword arguments of :func:`mltrail.start_run` (``experiment``,
            ``run_name``, ``run_id`` to resume a run, ``tags``, ``tracking_uri``, run options).

    Attributes:
        run_id: the MLflow run id (None before the first ``fit``).
        trail: the Trail in use or last used (the given one; else None before the first
            ``fit``).
    """

    # The batch hook only enqueues metrics, so Keras may call it on its thread pool.
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
        self._session = RunSession("keras", trail, start_run_kwargs)
        self._epochs = EpochLog(lambda: self._session.trail)
        self._every = check_every("log_every_n_batches", log_every_n_batches)
        # Keras rewrites its files in place: copies (not links) keep the uploads whole.
        self._uploads = CheckpointUploads(self._session, checkpoints, link=False)
        # The best (and last) model saved by this callback, under SAVE_BUDGET of the training
        # time: a better epoch's model waits in memory till saving it fits.
        self._saves = EpochCheckpoints(
            self._uploads,
            BestTracker(monitor, mode),
            SaveBudget(SAVE_BUDGET),
            self._write,
            self._model_of,
            lambda: _state(self.model),
            lambda state: _load_state(self.model, state),
        )
        self._log_model = log_model
        self._registered_model_name = registered_model_name
        self._summary_logged = False
        self._trail = trail  # the Trail in use or last used, for the trail property
        # fit's arguments and other callbacks, from the fit wrapper, which ends the run after fit
        self._call = TrainingCall(self._finish)
        self._in_fit = self._first_epoch = False
        self._epoch_start, self._spe = 0, 1  # optimizer step at the epoch start, per batch call
        self._as_model: CheckpointModel | None = None  # how a .keras checkpoint is a model
        self._session.start_recorder()  # it warms up while the script builds its model

    @property
    def trail(self) -> Trail | None:
        """The Trail in use or last used (the given one; else None before the first ``fit``)."""
        return self._trail

    @property
    def run_id(self) -> str | None:
        """The MLflow run id (None before the first ``fit``)."""
        return self._session.last_run_id

    # --- Keras hooks ---------------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._in_fit = self._first_epoch = True
        self._saves.start()
        self._as_model = None  # this fit's input example
        session = self._session
        # A later fit of the same callback resumes its run (a given Trail is used as it is).
        # A first fit into run_id= at initial_epoch=k+1 resumes a checkpoint of epoch k: the
        # kernel continues the run, or forks it when the run went past epoch k.
        restart, fit = None, self._call.arguments
        if session.last_run_id is None and _int(fit.get("initial_epoch") or 0) > 0:
            restart = _int(fit["initial_epoch"])
        if session.trail is not None:
            trail = session.trail
        elif session.last_run_id is None and restart is None and session.can_open_in_recorder():
            # A new run, opened in mltrail's recorder process: this process never imports
            # MLflow, and the fit does not wait for the store.
            trail = session.open_beside("Keras training")
        else:
            trail = session.open(
                run_id=session.last_run_id,
                restart_step=restart,
                global_step=_int(self.model.optimizer.iterations) if restart else None,
            )
        self._trail = trail
        session.training_started()
        if not trail.enabled:
            return
        stopping = early_stopping_params(self._early_stops())
        trail.log_params({**_fit_params(fit, self.params), **_model_params(self.model), **stopping})
        self._spe = _int(getattr(self.model, "steps_per_execution", 1)) or 1
        self._uploads.baseline(self._user_checkpoints())  # files from before this fit
        if not self._summary_logged:
            self._summary_logged = True
            lines: list[str] = []
            self.model.summary(print_fn=lambda text, **_: lines.append(str(text)))
            trail.log_text("\n".join(lines), "model_summary.txt")

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._first_epoch:  # a fit that starts at epoch 0 again continues the run's steps
            self._first_epoch = False
            self._epochs.start(epoch)
        elif self._epochs.last_step is not None:
            # The user's ModelCheckpoints wrote the last epoch's files by now, whether they run
            # before or after this callback: uploaded with that epoch's step.
            self._upload_user_checkpoints(self._epochs.last_step)
        if self._every is not None:
            self._epoch_start = _int(self.model.optimizer.iterations)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._every is None or not logs:
            return
        step = self._epoch_start + batch + 1  # the optimizer step after this batch
        if every_n(step, step - self._spe, self._every):  # Keras reports every spe-th batch
            self._epochs.log_step(logs, step)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        trail, logs = self._session.trail, dict(logs or {})
        if trail is None or not trail.enabled:
            return
        metrics = dict(logs)
        rate = None if "learning_rate" in logs else _learning_rate(self.model.optimizer)
        if rate is not None:  # else ReduceLROnPlateau/LearningRateScheduler put it in the logs
            metrics["learning_rate"] = rate
        self._saves.epoch_end(self._epochs.log(epoch, metrics), logs)

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._in_fit or not logs:
            return  # validation inside fit: already in the epoch logs as val_*
        # evaluate() after fit adds to the run fit recorded (joined: its status stays).
        metrics = {f"test_{k}": v for k, v in logs.items()}
        self._trail = self._session.log_after(metrics, self._epochs.last_step or 0)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if not self._call.wrapped:  # no fit wrapper around this call: finish here
            self._finish()

    # --- the end of a fit ----------------------------------------------------------------------

    def _finish(self, error: BaseException | None = None) -> None:
        """Final checkpoints, EarlyStopping's outcome and the model; then end the run."""
        self._in_fit = False
        session, trail = self._session, self._session.trail
        if trail is None:
            return
        if trail.enabled:
            stops: list[EarlyStop] = []
            with session.guarded("logging EarlyStopping"):
                stops = self._early_stops()
                self._epochs.log_early_stopping(stops)
            with session.guarded("saving checkpoints"):
                # After an error or EarlyStopping's restore the model is not the last epoch's.
                last = self._epochs.last_step or 0
                restored = any(s.restored_best_weights for s in stops)
                self._saves.training_end(last, failed=error is not None, restored=restored)
                self._upload_user_checkpoints(last)
            if error is None and self._log_model:
                with session.guarded("logging the model"):
                    self._log_final_model(trail)
        with session.guarded("ending the run"):
            session.end(error)

    def _log_final_model(self, trail: Trail) -> None:
        if not _serialisable(self.model):
            self._log_weights(trail)
            return
        example, output = self._input_example()
        trail.log_model(
            self.model,
            "keras",
            signature_from=example,
            registered_model_name=self._registered_model_name,
            output_example=output,
            background=False,  # the model must not change while it is serialised
            pip_requirements=pinned_requirements("keras", keras.backend.backend(), "numpy"),
        )

    def _log_weights(self, trail: Trail) -> None:
        """A model without ``get_config`` cannot be an MLflow Model: log its weights and class,
        which rebuild it (``Net(...)``, call it once on an input, ``load_weights``)."""
        log_weights(
            trail,
            self._session.temp_dir() / "model",
            self.model,
            lambda path: self.model.save_weights(str(path)),
            "model.weights.h5",
            versions={"keras": keras.__version__},
            why="has no get_config()",
            how="implement get_config() to log a model that loads on its own",
        )

    def _early_stops(self) -> list[EarlyStop]:
        stops = []
        for stop in self._call.of_type(keras.callbacks.EarlyStopping):
            best = getattr(stop, "best", None)  # set by its on_train_begin
            restored = stop.restore_best_weights and stop.best_weights is not None
            stops.append(
                EarlyStop(
                    settings={name: getattr(stop, name, None) for name in _STOPPING},
                    stopped_epoch=stop.stopped_epoch or None,  # Keras' 0: it did not stop
                    best_score=best,
                    best_epoch=None if best is None else stop.best_epoch,
                    wait_count=stop.wait,
                    restored_best_weights=restored,
                )
            )
        return stops

    # --- checkpoints ---------------------------------------------------------------------------

    def _write(self, stem: str) -> Path:
        """The model as it is now, in a new ``<stem>.keras``; a subclassed model (no
        ``get_config``) as its weights, ``<stem>.weights.h5``, which load into its class."""
        if not _serialisable(self.model):
            path = self._session.temp_dir() / f"{stem}.weights.h5"
            self.model.save_weights(str(path))
        else:
            path = self._session.temp_dir() / f"{stem}.keras"
            self.model.save(str(path))
        return path

    def _model_of(self, path: Path) -> CheckpointModel | None:
        """A ``.keras`` file is a model; a weights file needs its class."""
        return None if path.name.endswith(".weights.h5") else self._checkpoint_model()

    def _input_example(self) -> tuple[Any, Any]:
        """A few rows of fit's input and the model's output on them (None, None when not
        cheaply had), for the signatures of the model and its checkpoints."""
        example = output = None
        with self._session.guarded("taking an input example"):
            example = _example(self._call.arguments.get("x"))
            if example is not None:
                output = to_numpy(self.model(example, training=False))
        return example, output

    def _checkpoint_model(self) -> CheckpointModel:
        """How a ``.keras`` checkpoint is a LoggedModel in MLflow's Keras flavor: the file
        Keras wrote is the flavor's model file (never saved a second time), with the signature
        of this fit's input (taken once per fit)."""
        if self._as_model is None:
            example, output = self._input_example()
            pins = pinned_requirements("keras", keras.backend.backend(), "numpy")
            self._as_model = CheckpointModel(
                "keras",
                lambda path: SavedFile(),  # an empty file, which Keras' file replaces
                {"pip_requirements": pins},
                signature_from=example,
                output_example=output,
                model_file=_KERAS_FLAVOR_FILE,
            )
        return self._as_model

    def _user_checkpoints(self) -> list[str]:
        """The files the paths of the user's ModelCheckpoint callbacks name."""
        saving = self._call.of_type(keras.callbacks.ModelCheckpoint)
        return template_files(str(callback.filepath) for callback in saving)

    def _upload_user_checkpoints(self, step: int) -> None:
        """The user's checkpoint files written since the last look, at ``step``, no aliases
        (which one is best is the user's ModelCheckpoint's choice)."""

        def describe(path: str) -> CheckpointFile | None:
            return (
                CheckpointFile(model=self._checkpoint_model()) if path.endswith(".keras") else None
            )

        self._uploads.upload_changed(self._user_checkpoints(), step, describe, latest=False)


# --- reading Keras ------------------------------------------------------------------------------


def _fit_params(args: dict[str, Any], keras_params: dict[str, Any] | None) -> dict[str, Any]:
    """fit()'s arguments; the training data by shape and dtype, not by value."""
    params = {k: args[k] for k in _FIT_ARGS if args.get(k) is not None}
    params.setdefault("epochs", (keras_params or {}).get("epochs"))
    params["steps_per_epoch"] = params.get("steps_per_epoch") or (keras_params or {}).get("steps")
    if params.get("batch_size") is None and hasattr(args.get("x"), "shape"):
        params["batch_size"] = 32  # Keras' default for array inputs
    for name in ("x", "y", "validation_data", "sample_weight"):
        if args.get(name) is not None:
            params[f"data.{name}"] = describe(args[name])
    # The training data by content when it is held in arrays; "unknown" for loaders.
    params["data.train.digest"] = arrays_digest(
        args.get("x"), args.get("y"), args.get("sample_weight")
    )
    weights = args.get("class_weight")
    if weights:  # a dict {class: weight}, summarised when long
        values = {k: float(v) for k, v in weights.items()}
        low, high = min(values.values()), max(values.values())
        many = f"{len(values)} classes, weights {low:g}..{high:g}"
        params["class_weight"] = str(values) if len(values) <= 20 else many
    return {k: v for k, v in params.items() if v is not None}


def _model_params(model: keras.Model) -> dict[str, Any]:
    """The optimizer (schedules included), the compile settings and the model's size."""
    params: dict[str, Any] = {}
    if getattr(model, "optimizer", None) is not None:
        config = _readable(model.optimizer.get_config())
        params["optimizer"] = {"class": type(model.optimizer).__name__, **config}
    compiled = model.get_compile_config() or {}
    for name in ("loss", "metrics", "weighted_metrics"):
        if compiled.get(name) is not None:
            params[f"compile.{name}"] = _names(compiled[name])
    for name in ("loss_weights", "steps_per_execution", "jit_compile", "run_eagerly"):
        if compiled.get(name) is not None:
            params[f"compile.{name}"] = compiled[name]
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    params.update({"model.name": model.name, "model.class": type(model).__name__})
    params.update(parameter_counts(model.count_params(), trainable))
    params.update({"keras.backend": keras.backend.backend(), "keras.version": keras.__version__})
    return params


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
    if value is None or isinstance(value, str):
        return str(value)
    if isinstance(value, dict) and "class_name" in value:  # a serialized Keras object
        config = value.get("config")
        return str(
            (config.get("name") if isinstance(config, dict) else config) or value["class_name"]
        )
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_names(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_names(v) for v in value)
    return str(getattr(value, "name", None) or getattr(value, "__name__", type(value).__name__))


def _int(value: Any) -> int:
    return int(keras.ops.convert_to_numpy(value))


def _learning_rate(optimizer: Any) -> float | None:
    """The current learning rate; a schedule is evaluated at the optimizer's step."""
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except Exception:  # no optimizer, or one without a readable rate
        return None


def _variables(model: keras.Model) -> list[Any]:
    """Everything ``model.save`` writes that training changes."""
    optimizer = getattr(model, "optimizer", None)
    return [*model.variables, *(optimizer.variables if optimizer is not None else ())]


def _serialisable(model: keras.Model) -> bool:
    """Whether Keras can save the whole model (a subclassed one without ``get_config`` cannot)."""
    try:
        model.get_config()
    except NotImplementedError:
        return False
    return True


def _state(model: keras.Model) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v)) for v in _variables(model)]


def _load_state(model: keras.Model, state: list[np.ndarray]) -> None:
    for variable, value in zip(_variables(model), state, strict=True):
        variable.assign(value)


def _example(data: Any) -> Any:
    """A few rows of fit's input for the model signature (a PyDataset's from its first
    batch), or None when not cheaply had."""
    return input_rows(data[0] if isinstance(data, keras.utils.PyDataset) else data)


# --- the fit wrapper ----------------------------------------------------------------------------

# Once per process, at import: a pass-through for fits without a TrailCallback. autolog's patch
# goes over it, and disabling autolog puts it back.
_FITS = TrainingWrapper(
    keras.Model,
    "fit",
    TrailCallback,
    lambda callback: callback._call,
    container=(keras.callbacks.CallbackList,),  # read, never added to
)
_FITS.install()


# --- autolog ------------------------------------------------------------------------------------


def autolog_patches(options: dict[str, Any]) -> list[tuple[Any, str, Callable[..., Any]]]:
    """Patches for ``mltrail.autolog()``: every ``Model.fit`` without a TrailCallback gets one
    (a new run per fit), built from the autolog options this adapter takes; ``evaluate()``
    after an autologged fit adds ``test_*`` to that fit's run, as the explicit callback does."""
    start, own = options_for("keras", options)
    added = AutologCallbacks(TrailCallback, lambda: TrailCallback(**start, **own))
    fit, evaluate = _FITS.autolog_patch(added), _FITS.later_patch(added, "evaluate")
    return [(keras.Model, "fit", fit), (keras.Model, "evaluate", evaluate)]
