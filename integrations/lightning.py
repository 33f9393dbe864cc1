"""Lightning adapter: ``Trainer(callbacks=[TrailCallback()])`` records the whole run in MLflow.

A fit records, through one :class:`~mltrail.Trail`:

- params: the LightningModule's and the datamodule's hyperparameters, the Trainer settings that
  change results, every optimizer (class and param-group settings) and LR scheduler, the batch
  size, the model's parameter counts, EarlyStopping settings;
- metrics: ``trainer.callback_metrics`` once per epoch at ``step = epoch`` (validation values
  when validation ran in that epoch, never the sanity check), each optimizer's learning rate,
  test metrics after ``trainer.test``, optionally step-level values under ``step/``;
- artifacts: the checkpoints the user's ``ModelCheckpoint`` writes (uploaded in the background;
  on MLflow 3 each full one also a LoggedModel that MLflow's PyTorch flavor loads, see
  :mod:`mltrail.integrations.lightning_checkpoint`), the final model as an MLflow PyTorch model
  with a signature, the model summary;
- the status: FINISHED, FAILED on an exception (which propagates unchanged), KILLED on Ctrl-C.

The callback derives from the ``Callback`` class of every Lightning namespace installed
(``lightning.pytorch`` and ``pytorch_lightning`` 2.x), so either Trainer accepts it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

try:
    import torch
except ImportError as _error:
    raise ImportError(
        'mltrail.integrations.lightning needs Lightning: pip install "mltrail[lightning]"'
    ) from _error

from mltrail import Trail
from mltrail import adapters as kernel
from mltrail.integrations import lightning_checkpoint

__all__ = ["CHECKPOINT_CHOICES", "TrailCallback", "autolog_patches"]

CHECKPOINT_CHOICES = kernel.CHECKPOINT_POLICIES
# Trainer settings that change results.
_TRAINER_SETTINGS = (
    "max_epochs", "min_epochs", "max_steps", "precision", "accumulate_grad_batches",
    "gradient_clip_val", "gradient_clip_algorithm", "limit_train_batches", "limit_val_batches",
    "val_check_interval", "check_val_every_n_epoch", "num_nodes",
)  # fmt: skip


def _load_namespaces() -> list[Any]:
    """The Lightning 2.x packages installed: ``lightning.pytorch`` and/or ``pytorch_lightning``."""
    modules = []
    for name in ("lightning.pytorch", "pytorch_lightning"):
        # Installed at all? (sys.modules may still hold a submodule of a removed package.)
        if importlib.util.find_spec(name.split(".")[0]) is None:
            continue
        with contextlib.suppress(ImportError):
            module = importlib.import_module(name)
            major = str(getattr(module, "__version__", "0")).split(".")[0]
            if major.isdigit() and int(major) >= 2:  # 1.x has other hook signatures
                modules.append(module)
    if not modules:
        raise ImportError(
            'mltrail.integrations.lightning needs Lightning 2.x: pip install "mltrail[lightning]"'
        )
    return modules


_NAMESPACES = _load_namespaces()


@functools.cache
def _types(submodule: str, name: str) -> tuple[type, ...]:
    """The class ``name`` of ``<namespace>.<submodule>`` in every Lightning namespace installed."""
    return tuple(
        getattr(importlib.import_module(f"{ns.__name__}.{submodule}"), name) for ns in _NAMESPACES
    )


def _namespace_of(trainer: Any) -> Any:
    return next((ns for ns in _NAMESPACES if isinstance(trainer, ns.Trainer)), _NAMESPACES[0])


@kernel.exception_safe()
class TrailCallback(*(namespace.Callback for namespace in _NAMESPACES)):  # type: ignore[misc]
    """Record a Lightning fit (and test) as one MLflow run.

    Args:
        trail: an existing :class:`~mltrail.Trail` to record into; it is left open for its
            owner. Default: the callback starts (and ends) its own run per fit.
        log_every_n_steps: also log the step-level values (``self.log(..., on_step=True)``)
            every N optimizer steps, as ``step/<name>`` at ``step = global step``.
        checkpoints: which files of the user's ``ModelCheckpoint`` callbacks to upload under
            ``checkpoints/``: "none", "best", "best_and_last" (default) or "all". Without a
            ``ModelCheckpoint``, the last state is saved and uploaded unless "none".
        log_model: log the final model (the best checkpoint's weights when a monitored
            ``ModelCheckpoint`` exists) under ``model/`` as an MLflow PyTorch model.
        registered_model_name: also register that model in the Model Registry.
        **start_run_kwargs: keyword arguments of :func:`mltrail.start_run` (``experiment``,
            ``run_name``, ``tracking_uri``, ``tags``, options such as ``system_metrics``).

    Attributes:
        run_id: the run recorded into (known on every rank once fit started).
        trail: the :class:`~mltrail.Trail` being written during fit or test (rank 0), else None.

    The run id is kept in the callback's state in every Lightning checkpoint: resuming with
    ``trainer.fit(model, ckpt_path=...)`` continues the same run. Under DDP only global rank 0
    writes; every rank knows :attr:`run_id`. Beside Lightning's ``MLFlowLogger`` the callback
    records into the logger's run and leaves metric values to the logger.
    """

    def __init__(
        self,
        trail: Trail | None = None,
        *,
        log_every_n_steps: int | None = None,
        checkpoints: str = "best_and_last",
        log_model: bool = True,
        registered_model_name: str | None = None,
        **start_run_kwargs: Any,
    ) -> None:
        super().__init__()
        self._checkpoints = kernel.check_policy(checkpoints)
        self._every = kernel.check_every("log_every_n_steps", log_every_n_steps)
        # A copy pickled into a ddp_spawn worker records into the given Trail's run.
        self._session = kernel.RunSession("lightning", trail, start_run_kwargs, copies_join=True)
        self._given = trail is not None
        self._log_model = log_model
        self._registered_model_name = registered_model_name
        self._resume_id: str | None = None  # the run of the checkpoint fit resumes from
        self._handoff = kernel.RunIdHandoff()  # the run id, back from spawned processes
        self._reset()
        self._session.start_recorder()  # it warms up while the script builds its model

    def _reset(self) -> None:
        """Per-fit state."""
        self._begun = False
        self._logger_run = False  # recording into an MLFlowLogger's run: it logs the metrics
        self._epochs = kernel.EpochLog(self._session)
        self._train_done: int | None = None  # epoch whose train metrics are still to be read
        self._eval_keys: set[str] = set()
        self._before: dict[str, Any] = {}
        self._want_example = False
        self._example: list[Any] = []
        self._global_step = 0
        # Hard links: Lightning replaces its files by writing and renaming, never in place.
        self._uploads = kernel.CheckpointUploads(self._session, self._checkpoints, link=True)

    @property
    def run_id(self) -> str | None:
        """The MLflow run this callback records into (known on every rank once fit started)."""
        self._session.last_run_id = self._handoff.read() or self._session.last_run_id
        return self._session.last_run_id

    @property
    def trail(self) -> Trail | None:
        """The :class:`~mltrail.Trail` being written during fit or test (rank 0), else None."""
        return self._session.trail

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_id = state_dict.get("run_id")

    # --- fit -----------------------------------------------------------------------------------

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._reset()
        # Some strategies restore the checkpoint (and our run id) only after this hook; a
        # resumed fit knows its epoch only at train start (where the run may fork).
        later = getattr(trainer.strategy, "restore_checkpoint_after_setup", False)
        if not later and not getattr(trainer, "ckpt_path", None):
            self._begin(trainer, pl_module)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._begin(trainer, pl_module)
        self._global_step = trainer.global_step
        trail = self.trail
        if trail is not None:
            self._epochs.start(trainer.current_epoch)  # a resumed fit goes on at its epoch
            loader = trainer.train_dataloader
            batch_size = kernel.loader_batch_size(loader)
            if batch_size is not None and "batch_size" not in trail.params:
                trail.log_params({"batch_size": batch_size})
            digest = kernel.tensor_dataset_digest(getattr(loader, "dataset", None))
            trail.log_params({"data.train.digest": digest})

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.trail is not None:
            self._stage_train_epoch(trainer)
            self._sync_checkpoints(trainer)
            self._epochs.stage(trainer.current_epoch, kernel.learning_rates(trainer.optimizers))

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._want_example:
            self._want_example = False
            self._example = kernel.batch_inputs(batch)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step, previous = trainer.global_step, self._global_step
        self._global_step = step
        if self._every and self.trail is not None and kernel.every_n(step, previous, self._every):
            self._epochs.log_step(_step_values(trainer), step)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # The module's own on_train_epoch_end runs after this hook and may still log values:
        # read the epoch's metrics at the next epoch start or at the end of training.
        if self.trail is not None:
            self._train_done = trainer.current_epoch

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if self.trail is not None and not trainer.sanity_checking:
            self._before = dict(trainer.callback_metrics)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.trail is None or trainer.sanity_checking:
            return
        fresh = self._fresh_metrics(trainer)
        self._eval_keys.update(fresh)
        if not self._logger_run:
            self._epochs.stage(trainer.current_epoch, fresh)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._begun:
            return
        if (
            self._checkpoints != "none"
            and self._session.last_run_id  # every rank: a collective call
            and not _model_checkpoints(trainer)
        ):
            self._save_last_checkpoint(trainer)
        if self.trail is not None:
            self._close_epochs(trainer)
            self._epochs.log_early_stopping(_early_stops(trainer), _last_epoch(trainer))

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        def last_files(trail: Trail) -> None:
            self._sync_checkpoints(trainer)
            if self._log_model:
                self._log_final_model(trail, trainer, pl_module)

        self._session.end_after(last_files)

    # --- test ----------------------------------------------------------------------------------

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_rank != 0 or self.trail is not None:
            return
        trail = self._open(trainer, fit=False)
        if self._session.owns:  # a run of its own (no fit before): say what was tested
            trail.log_params(_module_params(trainer, pl_module))
        self._before = dict(trainer.callback_metrics)

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        def test_metrics(trail: Trail) -> None:
            if not self._logger_run:
                step = self._epochs.step(_last_epoch(trainer))
                trail.log_metrics(self._fresh_metrics(trainer), step=step)

        self._session.end_after(test_metrics)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        def what_it_had(trail: Trail) -> None:
            self._close_epochs(trainer)
            self._sync_checkpoints(trainer)

        self._session.end_after(what_it_had, exception)  # Lightning re-raises it after this hook

    # --- the run -------------------------------------------------------------------------------

    def _begin(self, trainer: Any, pl_module: Any) -> None:
        if self._begun:
            return
        self._begun = True
        trail, failure = None, None
        if trainer.global_rank == 0:
            try:
                trail = self._open(trainer, fit=True)
            except Exception as error:  # raised below, once the other ranks got their answer
                failure = error
        if trainer.world_size > 1:  # every rank knows the run (never one opening beside)
            run_id = trail.run_id if trail is not None else None
            self._session.last_run_id = trainer.strategy.broadcast(run_id, src=0)
        if failure is not None:
            raise failure
        if trail is None:
            return
        self._session.training_started()
        # The id of a run opening beside the training is waited for: only when it is needed.
        if not self._session.opened_beside or self._handoff.in_use:
            with self._session.guarded("passing the run id on"):
                self._handoff.write(self._session.last_run_id)
        self._want_example = self._log_model
        trail.log_params(_fit_params(trainer, pl_module))
        with self._session.guarded("summarising the model"):
            module = f"{_namespace_of(trainer).__name__}.utilities.model_summary"
            summary = importlib.import_module(module).ModelSummary(pl_module, max_depth=1)
            total, trainable = summary.total_parameters, summary.trainable_parameters
            trail.log_params(kernel.parameter_counts(total, trainable))
            trail.log_text(str(summary), "model_summary.txt")

    def _open(self, trainer: Any, *, fit: bool) -> Trail:
        """The given Trail; else MLFlowLogger's run, the fit's run for a test after it, the
        run of the checkpoint a fit resumes from, or a new run."""
        session = self._session
        tags = {"mltrail.lightning.version": _namespace_of(trainer).__version__}
        kinds = _types("loggers", "MLFlowLogger")
        mlflow_logger = next((lg for lg in trainer.loggers if isinstance(lg, kinds)), None)
        self._logger_run = mlflow_logger is not None and not self._given
        if self._logger_run:
            uri = getattr(mlflow_logger, "_tracking_uri", None)
            return session.open(run_id=mlflow_logger.run_id, join=True, tracking_uri=uri, tags=tags)
        if not fit:
            return session.open_after(tags=tags)
        # The user's run_id= wins over the checkpoint's run.
        resume_id = None if session.start_run_kwargs.get("run_id") else self._resume_id
        self._resume_id = None
        if resume_id is None and _single_process(trainer) and session.can_open_in_recorder():
            # A new run, opened in mltrail's recorder process: this process never imports
            # MLflow, and the fit does not wait for the store.
            return session.open_beside("Lightning training", tags=tags)
        checkpoint = getattr(trainer, "ckpt_path", None)
        if resume_id and checkpoint:
            tags["mltrail.lightning.resumed_from"] = str(checkpoint)
        # An older checkpoint than the run's last epoch forks (or rewinds) the run.
        return session.open_checkpoint_run(
            resume_id,
            trainer.current_epoch,
            checkpoint=checkpoint,
            global_step=trainer.global_step,
            tags=tags,
        )

    # --- metrics -------------------------------------------------------------------------------

    def _fresh_metrics(self, trainer: Any) -> dict[str, Any]:
        """The values of ``callback_metrics`` computed since ``self._before`` was taken."""
        before, self._before = self._before, {}
        return {k: v for k, v in trainer.callback_metrics.items() if before.get(k) is not v}

    def _stage_train_epoch(self, trainer: Any) -> None:
        """Stage the finished training epoch's values (all but the evaluation ones)."""
        epoch, self._train_done = self._train_done, None
        if epoch is not None and not self._logger_run:
            keys = self._eval_keys
            self._epochs.stage(
                epoch, {k: v for k, v in trainer.callback_metrics.items() if k not in keys}
            )

    def _close_epochs(self, trainer: Any) -> None:
        self._stage_train_epoch(trainer)
        self._epochs.flush()

    # --- checkpoints and the model -------------------------------------------------------------

    def _sync_checkpoints(self, trainer: Any) -> None:
        """Upload the checkpoint files written since the last look (the hooks of
        ``ModelCheckpoint`` run after ours, so new files show up at the next hook)."""
        if self._uploads.active:
            found = _checkpoint_files(trainer, self._checkpoints)
            step = self._epochs.step(_last_epoch(trainer))
            self._uploads.upload_changed(found, step, found.get)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        # The module's class, in every full checkpoint: so the file loads as an MLflow PyTorch
        # model without a second copy of its weights (see lightning_checkpoint).
        path = lightning_checkpoint.class_path(type(pl_module))
        if self._checkpoints != "none" and path is not None:
            checkpoint[lightning_checkpoint.CHECKPOINT_KEY] = {"module_class": path}

    def _save_last_checkpoint(self, trainer: Any) -> None:
        """No ModelCheckpoint: keep the final state (a collective call: every rank runs it)."""
        if trainer.global_rank == 0:
            path = os.path.join(self._session.temp_dir(), "last.ckpt")
        else:
            path = os.path.join(tempfile.gettempdir(), "mltrail-unused.ckpt")  # never written
        trainer.save_checkpoint(path, weights_only=False)
        if self.trail is not None and os.path.isfile(path):
            step = self._epochs.step(_last_epoch(trainer))
            model = _checkpoint_model(trainer)
            self._uploads.upload(path, step, aliases=("latest",), model=model, copy=False)

    def _log_final_model(self, trail: Trail, trainer: Any, pl_module: Any) -> None:
        """The module with the best checkpoint's weights when a monitored ``ModelCheckpoint``
        wrote one, else with its last weights."""
        best = None
        path = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if path and getattr(trainer.checkpoint_callback, "monitor", None) and os.path.isfile(path):

            def load(model: Any) -> None:
                # The user's own checkpoint, just written by this training.
                state = torch.load(path, map_location="cpu", weights_only=False)
                model.load_state_dict(state["state_dict"])

            best = (os.path.basename(path), load)
        kernel.log_torch_model(
            trail,
            self._session,
            pl_module,
            inputs=self._example,
            best=best,
            registered_model_name=self._registered_model_name,
        )

    # --- spawned processes (ddp_spawn) ----------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into spawned processes (the session leaves its Trail here), whose rank 0
        # passes its run id back through the handoff: read first, a copy knows the run that a
        # former copy recorded.
        self._session.last_run_id = self.run_id
        return self.__dict__.copy()


# --- reading the trainer ------------------------------------------------------------------------


def _single_process(trainer: Any) -> bool:
    """A training in this process alone: no other rank, nothing spawned."""
    return trainer.world_size == 1 and getattr(trainer.strategy, "launcher", None) is None


def _last_epoch(trainer: Any) -> int:
    """The last completed epoch (``current_epoch`` counts completed epochs after each one)."""
    return max(int(trainer.current_epoch) - 1, 0)


def _model_checkpoints(trainer: Any) -> list[Any]:
    kinds = _types("callbacks", "ModelCheckpoint")
    return [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, kinds)]


def _checkpoint_files(trainer: Any, policy: str) -> dict[str, kernel.CheckpointFile]:
    """The files of the user's ModelCheckpoints that ``policy`` uploads, each with its
    callback's monitored metric and its score, best when it is the monitored best of the
    trainer's first ModelCheckpoint, and a model unless it holds the weights only."""
    primary = trainer.checkpoint_callback
    best = getattr(primary, "best_model_path", "") if getattr(primary, "monitor", None) else ""
    model = _checkpoint_model(trainer)
    found: dict[str, kernel.CheckpointFile] = {}
    for callback in _model_checkpoints(trainer):
        paths = [callback.best_model_path]
        if policy in ("best_and_last", "all"):
            paths.append(callback.last_model_path)
        if policy == "all":
            paths.extend(callback.best_k_models)
        for path in paths:
            if path and path not in found:
                score = callback.best_k_models.get(path)
                if score is None and path == callback.best_model_path:
                    score = callback.best_model_score
                monitor = callback.monitor
                found[path] = kernel.CheckpointFile(
                    metrics={monitor: score} if monitor and score is not None else None,
                    best=path == best,
                    # A weights-only file names no class: not a model.
                    model=None if callback.save_weights_only else model,
                )
    return found


def _checkpoint_model(trainer: Any) -> kernel.CheckpointModel | None:
    """How a full checkpoint of the trainer's module is a LoggedModel: MLflow's PyTorch flavor
    with the ``.ckpt`` file as its ``data/model.pth``, unpickled by
    :mod:`~mltrail.integrations.lightning_checkpoint` into the module (its class tagged); None
    for a class that cannot be imported by name."""
    path = lightning_checkpoint.class_path(type(trainer.lightning_module))
    if path is None:
        return None
    namespace = _namespace_of(trainer).__name__.split(".")[0]
    return kernel.CheckpointModel(
        "pytorch",
        lambda _: torch.nn.Module(),  # a stand-in, whose file the checkpoint replaces
        {
            **kernel.pytorch_flavor_kwargs(namespace, "mltrail"),
            "pickle_module": lightning_checkpoint,
        },
        model_file="data/model.pth",
        tags={"mltrail.lightning.module_class": path},
    )


def _early_stops(trainer: Any) -> list[kernel.EarlyStop]:
    """The trainer's EarlyStopping callbacks (whose ``stopped_epoch`` 0 means "did not stop")."""
    kinds = _types("callbacks", "EarlyStopping")
    return [
        kernel.EarlyStop(
            settings={
                "monitor": cb.monitor,
                "mode": cb.mode,
                "patience": cb.patience,
                "min_delta": abs(float(cb.min_delta)),  # stored signed by mode
                "stopping_threshold": getattr(cb, "stopping_threshold", None),
                "divergence_threshold": getattr(cb, "divergence_threshold", None),
            },
            stopped_epoch=cb.stopped_epoch or None,
            best_score=float(cb.best_score),
            wait_count=cb.wait_count,
        )
        for cb in trainer.callbacks
        if isinstance(cb, kinds)
    ]


def _module_params(trainer: Any, pl_module: Any) -> dict[str, Any]:
    module_hparams = dict(getattr(pl_module, "hparams", None) or {})
    datamodule = getattr(trainer, "datamodule", None)
    params: dict[str, Any] = {}
    for key, value in dict(getattr(datamodule, "hparams", None) or {}).items():
        params[f"datamodule.{key}" if key in module_hparams else key] = value
    params.update(module_hparams)
    params["model.class"] = type(pl_module).__name__
    return params


def _fit_params(trainer: Any, pl_module: Any) -> dict[str, Any]:
    params = _module_params(trainer, pl_module)
    for name in _TRAINER_SETTINGS:
        value = getattr(trainer, name, None)
        params[f"trainer.{name}"] = getattr(value, "value", value)  # enums as their value
    params["trainer.deterministic"] = torch.are_deterministic_algorithms_enabled()
    params["trainer.strategy"] = type(trainer.strategy).__name__
    params["trainer.accelerator"] = type(trainer.accelerator).__name__
    params["trainer.devices"] = trainer.num_devices
    seed = os.environ.get("PL_GLOBAL_SEED")  # set by seed_everything()
    if seed is not None and "seed" not in params:
        params["seed"] = int(seed) if seed.lstrip("-").isdigit() else seed
    params.update(kernel.optimizer_params(trainer.optimizers))
    params.update(_scheduler_params(trainer.lr_scheduler_configs))
    params.update(kernel.early_stopping_params(_early_stops(trainer)))
    return params


def _scheduler_params(configs: list[Any]) -> dict[str, Any]:
    """The LR schedulers with how Lightning steps each (interval, frequency, monitor)."""
    settings = [
        {
            "interval": config.interval,
            "frequency": config.frequency,
            **({"monitor": config.monitor} if config.monitor else {}),
        }
        for config in configs
    ]
    return kernel.scheduler_params([config.scheduler for config in configs], settings)


def _step_values(trainer: Any) -> Mapping[str, Any]:
    """The values logged with ``on_step=True`` in this very step (what loggers get per step)."""
    results = getattr(trainer, "_results", None)
    if results is not None and hasattr(results, "metrics"):
        return results.metrics(True)["log"]
    return {k: v for k, v in trainer.callback_metrics.items() if not k.endswith("_epoch")}


# --- autolog ------------------------------------------------------------------------------------


def autolog_patches(options: dict[str, Any]) -> list[tuple[Any, str, Callable[..., Any]]]:
    """Patches for ``mltrail.autolog()``: ``Trainer.fit`` gets a :class:`TrailCallback` when the
    trainer has none, and ``Trainer.test`` after it records into the same run. The callback is
    removed again when the call returns, so the trainer is left as the user made it."""
    start, own = kernel.options_for("lightning", options)
    checkpoint_types = tuple(ns.callbacks.Checkpoint for ns in _NAMESPACES)

    def before_checkpoints(callbacks: list[Any]) -> int:
        """Before the first ModelCheckpoint, as Lightning orders callbacks."""
        found = (i for i, cb in enumerate(callbacks) if isinstance(cb, checkpoint_types))
        return next(found, len(callbacks))

    added = kernel.AutologCallbacks(
        TrailCallback, lambda: TrailCallback(**start, **own), place=before_checkpoints
    )

    def callbacks(trainer: Any) -> list[Any]:
        return trainer.callbacks

    fit = added.training_patch(callbacks)  # a new fit is a new run
    test = added.later_patch(callbacks, or_new=True)  # a test without a fit: a run of its own

    patches: list[tuple[Any, str, Callable[..., Any]]] = []
    for namespace in _NAMESPACES:
        if namespace.__name__ in sys.modules:
            patches.append((namespace.Trainer, "fit", fit))
            patches.append((namespace.Trainer, "test", test))
    return patches
