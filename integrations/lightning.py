"""Lightning adapter: ``Trainer(callbacks=[TrailCallback()])`` records the whole run in MLflow.

A fit records, through one :class:`~mltrail.Trail`:

- params: the LightningModule's and the datamodule's hyperparameters, the Trainer settings that
  change results, every optimizer (class and param-group settings) and LR scheduler, the batch
  size, the model's parameter counts, EarlyStopping settings;
- metrics: ``trainer.callback_metrics`` once per epoch at ``step = epoch`` (validation values
  when validation ran in that epoch, never the sanity check), each optimizer's learning rate,
  test metrics after ``trainer.test``, optionally step-level values under ``step/``;
- artifacts: the checkpoints the user's ``ModelCheckpoint`` writes (uploaded in the background),
  the final model as an MLflow PyTorch model with a signature, the model summary;
- the status: FINISHED, FAILED on an exception (which propagates unchanged), KILLED on Ctrl-C.

The callback derives from the ``Callback`` class of every Lightning namespace installed
(``lightning.pytorch`` and ``pytorch_lightning`` 2.x), so either Trainer accepts it.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

try:
    import torch
except ImportError as _error:
    raise ImportError(
        'mltrail.integrations.lightning needs Lightning: pip install "mltrail[lightning]"'
    ) from _error

from mltrail.autolog import options_for
from mltrail.config import Options
from mltrail.errors import ErrorCounter, MltrailError, guard, guarded
from mltrail.recording.trail import Trail, start_run

logger = logging.getLogger("mltrail.lightning")

CHECKPOINT_CHOICES = ("none", "best", "best_and_last", "all")
_START_RUN_ARGS = ("experiment", "run_name", "tracking_uri", "run_id", "tags")
# Param-group entries that are implementation switches, not hyperparameters.
_OPTIMIZER_SKIP = {"params", "foreach", "capturable", "differentiable", "fused", "initial_lr"}
# Scheduler attributes that are running state, not settings.
_SCHEDULER_SKIP = {
    "optimizer",
    "last_epoch",
    "verbose",
    "best",
    "num_bad_epochs",
    "cooldown_counter",
}
_EXAMPLE_ROWS = 5


def _load_namespaces() -> list[Any]:
    """The Lightning 2.x packages installed: ``lightning.pytorch`` and/or ``pytorch_lightning``."""
    modules = []
    for name in ("lightning.pytorch", "pytorch_lightning"):
        if importlib.util.find_spec(name.split(".")[0]) is None:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        major = str(getattr(module, "__version__", "0")).split(".")[0]
        if major.isdigit() and int(major) >= 2:  # 1.x has other hook signatures
            modules.append(module)
    if not modules:
        raise ImportError(
            'mltrail.integrations.lightning needs Lightning 2.x: pip install "mltrail[lightning]"'
        )
    return modules


_NAMESPACES = _load_namespaces()


@cache
def _types(submodule: str, name: str) -> tuple[type, ...]:
    """The class ``name`` of ``<namespace>.<submodule>`` in every Lightning namespace installed."""
    found = []
    for namespace in _NAMESPACES:
        with contextlib.suppress(ImportError, AttributeError):
            found.append(
                getattr(importlib.import_module(f"{namespace.__name__}.{submodule}"), name)
            )
    return tuple(found)


def _namespace_of(trainer: Any) -> Any:
    return next((ns for ns in _NAMESPACES if isinstance(trainer, ns.Trainer)), _NAMESPACES[0])


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
        if checkpoints not in CHECKPOINT_CHOICES:
            raise MltrailError(
                f"checkpoints must be one of {', '.join(CHECKPOINT_CHOICES)}, not {checkpoints!r}."
            )
        if log_every_n_steps is not None and (
            isinstance(log_every_n_steps, bool)
            or not isinstance(log_every_n_steps, int)
            or log_every_n_steps < 1
        ):
            raise MltrailError(
                f"log_every_n_steps must be a positive integer, not {log_every_n_steps!r}."
            )
        if trail is not None and not isinstance(trail, Trail):
            raise MltrailError("trail= takes the Trail that mltrail.start_run() returned.")
        if trail is not None and start_run_kwargs:
            raise MltrailError(
                "Pass either trail= or start_run arguments "
                f"({', '.join(sorted(start_run_kwargs))}) to TrailCallback, not both."
            )
        # Bad options fail here, not in the middle of training.
        Options.resolve(**{k: v for k, v in start_run_kwargs.items() if k not in _START_RUN_ARGS})
        self._given = trail
        self._given_run = (trail.run_id, trail.tracking_uri) if trail is not None else None
        self._run_kwargs = start_run_kwargs
        self._every = log_every_n_steps
        self._checkpoints = checkpoints
        self._log_model = log_model
        self._registered_model_name = registered_model_name
        self._errors = ErrorCounter()
        self._run_id: str | None = trail.run_id if trail is not None else None
        self._tracking_uri: str | None = trail.tracking_uri if trail is not None else None
        self._resume_id: str | None = None
        self._handoff: str | None = None  # file carrying the run id out of spawned processes
        self._trail: Trail | None = None
        self._reset()

    def _reset(self) -> None:
        """Per-fit state."""
        self._trail = None  # the Trail written to during the current stage (rank 0 only)
        self._owns = False  # whether this callback ends it
        self._logger_run = False  # recording into an MLFlowLogger's run: it logs the metrics
        self._begun = False
        self._fitting = False
        self._pending_epoch: int | None = None
        self._pending: dict[str, Any] = {}
        self._train_done: int | None = None  # epoch whose train metrics are still to be read
        self._eval_keys: set[str] = set()
        self._before: dict[str, Any] = {}
        self._want_example = False
        self._example: list[Any] = []
        self._step_keys: dict[str, str] = {}
        self._last_step = -1
        self._uploaded: dict[str, tuple[int, int]] = {}
        self._links = 0
        self._tmp: str | None = None

    # --- public --------------------------------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        """The MLflow run this callback records into (known on every rank once fit started)."""
        self._read_handoff()
        return self._run_id

    @property
    def trail(self) -> Trail | None:
        """The :class:`~mltrail.Trail` being written during fit or test (rank 0), else None."""
        return self._trail

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_id = state_dict.get("run_id")

    # --- fit -----------------------------------------------------------------------------------

    @guard("lightning: starting the run")
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._reset()
        self._fitting = True
        # Some strategies restore the checkpoint (and our run id) only after this hook.
        if not getattr(trainer.strategy, "restore_checkpoint_after_setup", False):
            self._begin(trainer, pl_module)

    @guard("lightning: starting the run")
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._begin(trainer, pl_module)
        if self._trail is not None:
            batch_size = _batch_size(trainer.train_dataloader)
            if batch_size is not None and "batch_size" not in self._trail.params:
                self._trail.log_params({"batch_size": batch_size})

    def _begin(self, trainer: Any, pl_module: Any) -> None:
        if self._begun:
            return
        self._begun = True
        failure: Exception | None = None
        if trainer.global_rank == 0:
            try:
                self._open(trainer, stage="fit")
            except Exception as error:  # raised below, once the other ranks got their answer
                failure = error
        run_id = self._trail.run_id if self._trail is not None else None
        if trainer.world_size > 1:
            run_id = trainer.strategy.broadcast(run_id, src=0)
        if failure is not None:
            raise failure
        self._run_id = run_id
        if self._trail is None:
            return
        _watch(self)
        self._write_handoff()
        self._want_example = self._log_model
        self._trail.log_params(self._fit_params(trainer, pl_module))
        self._log_summary(trainer, pl_module)

    def _open(self, trainer: Any, stage: str) -> None:
        """Start, resume or join the run for ``stage`` ("fit" or "test")."""
        self._owns = True
        self._logger_run = False
        if self._given is not None:
            self._trail, self._owns = self._given, False
            self._tracking_uri = self._trail.tracking_uri
            return
        kwargs = dict(self._run_kwargs)
        tags = {**(kwargs.pop("tags", None) or {}), "mltrail.framework": "lightning"}
        tags["mltrail.lightning.version"] = _namespace_of(trainer).__version__
        mlflow_logger = next(
            (lg for lg in trainer.loggers if isinstance(lg, _types("loggers", "MLFlowLogger"))),
            None,
        )
        join: tuple[str | None, str | None] | None = None
        if self._given_run is not None:  # a copy of a user's Trail in a spawned process
            join = self._given_run
        elif mlflow_logger is not None:
            join = (mlflow_logger.run_id, getattr(mlflow_logger, "_tracking_uri", None))
            self._logger_run = True
        elif stage == "test" and self.run_id is not None:
            join = (self._run_id, self._tracking_uri)  # test after fit: the fit's run
            kwargs.update(capture=False, system_metrics=False)
        if join is not None:
            for key in ("experiment", "run_name"):
                kwargs.pop(key, None)
            kwargs.update(run_id=join[0], join=True)
            if join[1]:
                kwargs["tracking_uri"] = join[1]
            self._trail = start_run(tags=tags, **kwargs)
        elif stage == "fit" and self._resume_id and not kwargs.get("run_id"):
            resume_id, self._resume_id = self._resume_id, None
            if getattr(trainer, "ckpt_path", None):
                tags["mltrail.lightning.resumed_from"] = str(trainer.ckpt_path)
            try:
                self._trail = start_run(tags=tags, run_id=resume_id, **kwargs)
            except MltrailError as error:
                logger.warning(
                    "mltrail: cannot resume run %s from the checkpoint (%s); recording a new run.",
                    resume_id,
                    error,
                )
                tags["mltrail.lightning.resumed_run"] = resume_id
                self._trail = start_run(tags=tags, **kwargs)
        else:
            self._trail = start_run(tags=tags, **kwargs)
        self._tracking_uri = self._trail.tracking_uri

    @guard("lightning: logging the learning rates")
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self._trail is None:
            return
        self._collect_train_epoch(trainer)
        self._flush()
        self._sync_checkpoints(trainer)
        self._stage(trainer.current_epoch, _learning_rates(trainer.optimizers))

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._want_example:
            self._want_example = False
            with guarded("lightning: keeping an input example", self._errors):
                self._example = _input_candidates(batch)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._every is None or self._trail is None:
            return
        step = trainer.global_step
        if step == self._last_step or step % self._every:
            return
        self._last_step = step
        with guarded("lightning: logging step metrics", self._errors):
            keys = self._step_keys
            values = {}
            for name, value in _step_values(trainer).items():
                key = keys.get(name)
                if key is None:
                    key = keys[name] = f"step/{name}"
                values[key] = value
            if values:
                self._trail.log_metrics(values, step=step)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # The module's own on_train_epoch_end runs after this hook and may still log values:
        # read the epoch's metrics at the next epoch start or at the end of training.
        if self._trail is not None:
            self._train_done = trainer.current_epoch

    @guard("lightning: logging validation metrics")
    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if self._trail is not None and not trainer.sanity_checking:
            self._before = dict(trainer.callback_metrics)

    @guard("lightning: logging validation metrics")
    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self._trail is None or trainer.sanity_checking:
            return
        fresh = self._fresh_metrics(trainer)
        self._eval_keys.update(fresh)
        if not self._logger_run:
            self._stage(trainer.current_epoch, fresh)

    @guard("lightning: ending the epochs")
    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._begun:
            return
        if (
            self._checkpoints != "none"
            and self._run_id is not None
            and not _model_checkpoints(trainer)
        ):
            self._save_last_checkpoint(trainer)
        if self._trail is None:
            return
        self._collect_train_epoch(trainer)
        self._flush()
        stops = _early_stopping_metrics(trainer)
        if stops:
            self._trail.log_metrics(stops, step=_last_epoch(trainer))

    @guard("lightning: ending the run")
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._fitting = False
        if self._trail is None:
            return
        self._sync_checkpoints(trainer)
        if self._log_model:
            with guarded("lightning: logging the model", self._errors):
                self._log_final_model(trainer, pl_module)
        self._finish()

    # --- test ----------------------------------------------------------------------------------

    @guard("lightning: starting the test run")
    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_rank != 0 or self._trail is not None:
            return
        self._open(trainer, stage="test")
        if self._trail is not None and self._owns and self._run_id != self._trail.run_id:
            # A run of its own (no fit before): say what was tested.
            self._run_id = self._trail.run_id
            self._trail.log_params(self._module_params(trainer, pl_module))
        self._before = dict(trainer.callback_metrics)

    @guard("lightning: logging test metrics")
    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        if self._trail is None:
            return
        if not self._logger_run:
            self._trail.log_metrics(self._fresh_metrics(trainer), step=_last_epoch(trainer))
        self._finish()

    # --- failures ------------------------------------------------------------------------------

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._fitting = False
        trail = self._trail
        if trail is None:
            return
        # Never raise from here: Lightning re-raises the user's exception after this hook.
        try:
            self._collect_train_epoch(trainer)
            self._flush()
            self._sync_checkpoints(trainer)
        except Exception as error:
            self._errors.report("lightning: saving what the failed run had", error)
        try:
            if self._owns:
                trail.end_with_exception(exception)  # KeyboardInterrupt ends it KILLED
        except Exception as error:
            self._errors.report("lightning: ending the failed run", error)
        self._cleanup()

    def _abandon(self) -> None:
        """The process exits while fit still runs (an exception in a spawned DDP worker)."""
        if not (self._fitting and self._trail is not None and self._owns):
            return
        self._trail.set_tags(
            {
                "mltrail.exception.type": "ProcessExit",
                "mltrail.exception.message": "the process exited while Trainer.fit was running",
            }
        )
        self._trail.end("FAILED")

    # --- metrics -------------------------------------------------------------------------------

    def _fresh_metrics(self, trainer: Any) -> dict[str, Any]:
        """The values of ``callback_metrics`` computed since ``self._before`` was taken."""
        before = self._before
        self._before = {}
        return {k: v for k, v in trainer.callback_metrics.items() if before.get(k) is not v}

    def _collect_train_epoch(self, trainer: Any) -> None:
        if self._train_done is None:
            return
        epoch, self._train_done = self._train_done, None
        if self._logger_run:
            return
        eval_keys = self._eval_keys
        metrics = {k: v for k, v in trainer.callback_metrics.items() if k not in eval_keys}
        self._stage(epoch, metrics)

    def _stage(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Collect the values of ``epoch``; each epoch is sent once, with all its values."""
        if self._pending_epoch is not None and self._pending_epoch != epoch:
            self._flush()
        self._pending_epoch = epoch
        self._pending.update(metrics)

    def _flush(self) -> None:
        if self._pending and self._trail is not None:
            self._trail.log_metrics(self._pending, step=self._pending_epoch)
        self._pending = {}
        self._pending_epoch = None

    # --- params --------------------------------------------------------------------------------

    def _module_params(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        module_hparams = dict(getattr(pl_module, "hparams", None) or {})
        datamodule = getattr(trainer, "datamodule", None)
        params: dict[str, Any] = {}
        for key, value in dict(getattr(datamodule, "hparams", None) or {}).items():
            params[f"datamodule.{key}" if key in module_hparams else key] = value
        params.update(module_hparams)
        params["model.class"] = type(pl_module).__name__
        return params

    def _fit_params(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        params = self._module_params(trainer, pl_module)
        for name in (
            "max_epochs",
            "min_epochs",
            "max_steps",
            "precision",
            "accumulate_grad_batches",
            "gradient_clip_val",
            "gradient_clip_algorithm",
            "limit_train_batches",
            "limit_val_batches",
            "val_check_interval",
            "check_val_every_n_epoch",
            "num_nodes",
        ):
            value = getattr(trainer, name, None)
            params[f"trainer.{name}"] = getattr(value, "value", value)  # enums as their value
        params["trainer.deterministic"] = torch.are_deterministic_algorithms_enabled()
        params["trainer.strategy"] = type(trainer.strategy).__name__
        params["trainer.accelerator"] = type(trainer.accelerator).__name__
        params["trainer.devices"] = trainer.num_devices
        seed = os.environ.get("PL_GLOBAL_SEED")  # set by seed_everything()
        if seed is not None and "seed" not in params:
            params["seed"] = int(seed) if seed.lstrip("-").isdigit() else seed
        params.update(_optimizer_params(trainer.optimizers))
        params.update(_scheduler_params(trainer.lr_scheduler_configs))
        params.update(_early_stopping_params(trainer))
        return params

    def _log_summary(self, trainer: Any, pl_module: Any) -> None:
        assert self._trail is not None
        with guarded("lightning: summarising the model", self._errors):
            summary_type = importlib.import_module(
                f"{_namespace_of(trainer).__name__}.utilities.model_summary"
            ).ModelSummary
            summary = summary_type(pl_module, max_depth=1)
            self._trail.log_params(
                {
                    "model.total_params": summary.total_parameters,
                    "model.trainable_params": summary.trainable_parameters,
                }
            )
            self._trail.log_text(str(summary), "model_summary.txt")

    # --- checkpoints ---------------------------------------------------------------------------

    def _sync_checkpoints(self, trainer: Any) -> None:
        """Upload the checkpoint files written since the last look (the hooks of
        ``ModelCheckpoint`` run after ours, so new files show up at the next hook)."""
        if self._checkpoints == "none" or self._trail is None:
            return
        primary = trainer.checkpoint_callback
        best = getattr(primary, "best_model_path", "") if getattr(primary, "monitor", None) else ""
        found: dict[str, tuple[Any, Any]] = {}  # path -> (its callback, its score)
        for callback in _model_checkpoints(trainer):
            paths = [callback.best_model_path]
            if self._checkpoints in ("best_and_last", "all"):
                paths.append(callback.last_model_path)
            if self._checkpoints == "all":
                paths.extend(callback.best_k_models)
            for path in paths:
                if path and path not in found:
                    score = callback.best_k_models.get(path)
                    if score is None and path == callback.best_model_path:
                        score = callback.best_model_score
                    found[path] = (callback, score)
        stats = {}
        for path in found:
            with contextlib.suppress(OSError):
                stat = os.stat(path)
                stats[path] = (stat.st_mtime_ns, stat.st_size)
        if not stats:
            return
        newest = max(stats, key=lambda p: stats[p][0])
        for path, signature in stats.items():
            if self._uploaded.get(path) == signature:
                continue
            self._uploaded[path] = signature
            callback, score = found[path]
            marks = (("best", path == best), ("latest", path == newest))
            aliases = [alias for alias, hit in marks if hit]
            metrics = {callback.monitor: score} if callback.monitor and score is not None else None
            self._trail.log_checkpoint(
                self._pinned(path),
                step=_last_epoch(trainer),
                metrics=metrics,
                aliases=aliases,
                source=path,
            )

    def _pinned(self, path: str) -> str:
        """A hard link to the user's file, so the background upload still finds it after
        ``ModelCheckpoint`` rotates it away; the file itself when linking is not possible."""
        self._links += 1
        link = os.path.join(self._temp_dir(), str(self._links), os.path.basename(path))
        try:
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.link(path, link)
        except OSError:
            return path
        return link

    def _save_last_checkpoint(self, trainer: Any) -> None:
        """No ModelCheckpoint: keep the final state (a collective call: every rank runs it)."""
        if trainer.global_rank == 0:
            path = os.path.join(self._temp_dir(), "last.ckpt")
        else:
            path = os.path.join(tempfile.gettempdir(), "mltrail-unused.ckpt")  # never written
        trainer.save_checkpoint(path, weights_only=False)
        if self._trail is not None and os.path.isfile(path):
            self._trail.log_checkpoint(path, step=_last_epoch(trainer), aliases=("latest",))

    def _temp_dir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="mltrail-lightning-")
        return self._tmp

    # --- model ---------------------------------------------------------------------------------

    def _log_final_model(self, trainer: Any, pl_module: Any) -> None:
        assert self._trail is not None
        try:
            # A copy, serialised in the background while the user's model stays untouched.
            model = copy.deepcopy(pl_module)
        except Exception:
            model = None
        source = "last"
        if model is None:
            self._trail.log_model(
                pl_module,
                "pytorch",
                registered_model_name=self._registered_model_name,
                background=False,
                **_pytorch_flavor_kwargs(),
            )
            self._trail.set_tags({"mltrail.model.weights": source})
            return
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if best and getattr(trainer.checkpoint_callback, "monitor", None) and os.path.isfile(best):
            with guarded("lightning: loading the best checkpoint", self._errors):
                # The user's own checkpoint, just written by this training.
                state = torch.load(best, map_location="cpu", weights_only=False)
                model.load_state_dict(state["state_dict"])
                source = f"best:{os.path.basename(best)}"
        model = model.cpu().eval()
        example, output = _example_io(model, self._example)
        self._trail.set_tags({"mltrail.model.weights": source})
        self._trail.log_model(
            model,
            "pytorch",
            signature_from=example,
            output_example=output,
            registered_model_name=self._registered_model_name,
            **_pytorch_flavor_kwargs(),
        )

    # --- ending --------------------------------------------------------------------------------

    def _finish(self) -> None:
        trail = self._trail
        if trail is None:
            return
        if self._owns:
            trail.end("FINISHED")
        elif self._tmp is not None:
            trail.flush()  # our temporary files must be uploaded before they go
        self._cleanup()

    def _cleanup(self) -> None:
        self._trail = None
        _unwatch(self)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # --- spawned processes (ddp_spawn) ----------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into spawned processes: the Trail (threads, clients) stays here, and a small
        # file brings rank 0's run id back so that this object knows the run after fit.
        if self._handoff is None:
            folder = tempfile.mkdtemp(prefix="mltrail-lightning-")
            weakref.finalize(self, shutil.rmtree, folder, True)
            self._handoff = os.path.join(folder, "run")
        self._read_handoff()
        state = self.__dict__.copy()
        state.update(_trail=None, _given=None, _errors=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._errors = ErrorCounter()

    def _write_handoff(self) -> None:
        if (
            self._handoff
            and self._trail is not None
            and os.path.isdir(os.path.dirname(self._handoff))
        ):
            with guarded("lightning: passing the run id on", self._errors):
                Path(self._handoff).write_text(f"{self._trail.run_id}\n{self._trail.tracking_uri}")

    def _read_handoff(self) -> None:
        if self._handoff and os.path.isfile(self._handoff):
            with contextlib.suppress(OSError, ValueError):
                self._run_id, self._tracking_uri = Path(self._handoff).read_text().split("\n", 1)


# --- helpers ------------------------------------------------------------------------------------

_watched: weakref.WeakSet[TrailCallback] = weakref.WeakSet()
_atexit_installed = False


def _watch(callback: TrailCallback) -> None:
    """Remember a recording callback: a spawned worker that dies of an exception exits without
    any Lightning hook, and its run must end FAILED, not FINISHED at interpreter exit."""
    global _atexit_installed
    _watched.add(callback)
    if not _atexit_installed:
        _atexit_installed = True
        atexit.register(_end_abandoned)  # runs before the lifecycle's own exit handler


def _unwatch(callback: TrailCallback) -> None:
    _watched.discard(callback)


def _end_abandoned() -> None:
    for callback in list(_watched):
        with contextlib.suppress(Exception):
            callback._abandon()


def _last_epoch(trainer: Any) -> int:
    """The last completed epoch (``current_epoch`` counts completed epochs after each one)."""
    return max(int(trainer.current_epoch) - 1, 0)


def _model_checkpoints(trainer: Any) -> list[Any]:
    kinds = _types("callbacks", "ModelCheckpoint")
    return [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, kinds)]


def _plain(value: Any) -> Any:
    """``value`` as a param when it is a setting (number, string, flag, tuple of numbers)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(v, bool | int | float | str) for v in value)
    ):
        return tuple(value)
    return None


def _prefixes(base: str, count: int) -> list[str]:
    return [base] if count == 1 else [f"{base}{i}" for i in range(count)]


def _optimizer_params(optimizers: list[Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for prefix, optimizer in zip(_prefixes("optimizer", len(optimizers)), optimizers, strict=True):
        params[f"{prefix}.name"] = type(optimizer).__name__
        groups = optimizer.param_groups
        for index, group in enumerate(groups):
            at = prefix if len(groups) == 1 else f"{prefix}.pg{index + 1}"
            for key, value in group.items():
                if key in _OPTIMIZER_SKIP:
                    continue
                if key == "lr":  # the configured rate, before a scheduler changed it
                    value = group.get("initial_lr", value)
                value = _plain(value)
                if value is not None:
                    params[f"{at}.{key}"] = value
    return params


def _scheduler_params(configs: list[Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for prefix, config in zip(_prefixes("lr_scheduler", len(configs)), configs, strict=True):
        scheduler = config.scheduler
        params[f"{prefix}.name"] = type(scheduler).__name__
        params[f"{prefix}.interval"] = config.interval
        params[f"{prefix}.frequency"] = config.frequency
        if config.monitor:
            params[f"{prefix}.monitor"] = config.monitor
        for key, value in vars(scheduler).items():
            if key.startswith("_") or key in _SCHEDULER_SKIP:
                continue
            value = _plain(value)
            if value is not None:
                params[f"{prefix}.{key}"] = value
    return params


def _early_stoppings(trainer: Any) -> list[Any]:
    kinds = _types("callbacks", "EarlyStopping")
    return [cb for cb in trainer.callbacks if isinstance(cb, kinds)]


def _early_stopping_params(trainer: Any) -> dict[str, Any]:
    params: dict[str, Any] = {}
    stoppers = _early_stoppings(trainer)
    for prefix, stopper in zip(_prefixes("early_stopping", len(stoppers)), stoppers, strict=True):
        params[f"{prefix}.monitor"] = stopper.monitor
        params[f"{prefix}.mode"] = stopper.mode
        params[f"{prefix}.patience"] = stopper.patience
        params[f"{prefix}.min_delta"] = abs(float(stopper.min_delta))  # stored signed by mode
        for name in ("stopping_threshold", "divergence_threshold"):
            if getattr(stopper, name, None) is not None:
                params[f"{prefix}.{name}"] = getattr(stopper, name)
    return params


def _early_stopping_metrics(trainer: Any) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    stoppers = _early_stoppings(trainer)
    for prefix, stopper in zip(_prefixes("early_stopping", len(stoppers)), stoppers, strict=True):
        metrics[f"{prefix}.stopped_epoch"] = stopper.stopped_epoch
        metrics[f"{prefix}.wait_count"] = stopper.wait_count
        metrics[f"{prefix}.best_score"] = stopper.best_score
    return metrics


def _learning_rates(optimizers: list[Any]) -> dict[str, float]:
    """Each optimizer's current learning rate, named as Lightning's LearningRateMonitor does."""
    rates: dict[str, float] = {}
    seen: dict[str, int] = {}
    for optimizer in optimizers:
        name = f"lr-{type(optimizer).__name__}"
        count = seen.get(name, 0)
        seen[name] = count + 1
        if count:
            name = f"{name}-{count}"
        groups = optimizer.param_groups
        for index, group in enumerate(groups):
            key = name if len(groups) == 1 else f"{name}/{group.get('name', f'pg{index + 1}')}"
            rates[key] = group["lr"]
    return rates


def _batch_size(loader: Any) -> int | None:
    size = getattr(loader, "batch_size", None)
    if size is None:
        size = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    return size if isinstance(size, int) else None


def _step_values(trainer: Any) -> Mapping[str, Any]:
    """The values logged with ``on_step=True`` in this very step (what loggers get per step)."""
    results = getattr(trainer, "_results", None)
    if results is not None and hasattr(results, "metrics"):
        return results.metrics(True)["log"]
    return {k: v for k, v in trainer.callback_metrics.items() if not k.endswith("_epoch")}


def _input_candidates(batch: Any) -> list[Any]:
    """A few rows of what the model may take as input: the batch, or its first element."""
    if isinstance(batch, torch.Tensor):
        items = [batch]
    elif isinstance(batch, list | tuple) and batch:
        items = [batch[0]]
    elif isinstance(batch, Mapping):
        items = list(batch.values())
    else:
        items = []
    return [
        item[:_EXAMPLE_ROWS].detach().cpu().clone()
        for item in items
        if isinstance(item, torch.Tensor) and item.dim() > 0
    ]


def _numpy(value: Any) -> Any:
    if isinstance(value, list | tuple):
        value = next((v for v in value if isinstance(v, torch.Tensor)), None)
    if not isinstance(value, torch.Tensor):
        return None
    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
        value = value.float()
    return value.numpy()


def _pytorch_flavor_kwargs() -> dict[str, Any]:
    """Save the model pickled, as MLflow's own Lightning autolog does: MLflow 3's default,
    ``torch.export``, takes seconds per model and rejects data-dependent control flow."""
    for distribution in ("mlflow", "mlflow-skinny"):
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
        parts = [int(p) if p.isdigit() else 0 for p in version.split(".")[:2]]
        # MLflow 3.11 added serialization_format; later releases default it to torch.export.
        return {"serialization_format": "pickle"} if tuple(parts) >= (3, 11) else {}
    return {}


def _example_io(model: Any, candidates: list[Any]) -> tuple[Any, Any]:
    """An input the model's forward accepts, and its output, as numpy arrays."""
    for candidate in candidates:
        try:
            with torch.no_grad():
                output = model(candidate)
        except Exception:
            continue
        return _numpy(candidate), _numpy(output)
    return None, None


# --- autolog ------------------------------------------------------------------------------------


def autolog_patches(options: dict[str, Any]) -> list[tuple[Any, str, Callable[..., Any]]]:
    """Patches for ``mltrail.autolog()``: ``Trainer.fit`` gets a :class:`TrailCallback` when the
    trainer has none, and ``Trainer.test`` after it records into the same run. The callback is
    removed again when the call returns, so the trainer is left as the user made it."""
    start, own = options_for("lightning", options)
    kwargs = {**start, **own}
    fitted: weakref.WeakKeyDictionary[Any, TrailCallback] = weakref.WeakKeyDictionary()

    def around(call_original: Callable[..., Any], trainer: Any, *args: Any, **kw: Any) -> Any:
        if any(isinstance(cb, TrailCallback) for cb in trainer.callbacks):
            return call_original(trainer, *args, **kw)
        callback = fitted.get(trainer) or TrailCallback(**kwargs)
        callbacks = trainer.callbacks
        checkpoint_types = tuple(ns.callbacks.Checkpoint for ns in _NAMESPACES)
        at = next(
            (i for i, cb in enumerate(callbacks) if isinstance(cb, checkpoint_types)),
            len(callbacks),
        )
        callbacks.insert(at, callback)  # before ModelCheckpoint, as Lightning orders them
        try:
            return call_original(trainer, *args, **kw)
        finally:
            with contextlib.suppress(ValueError):
                callbacks.remove(callback)
            if callback.run_id is not None:
                fitted[trainer] = callback

    def fit(call_original: Callable[..., Any], trainer: Any, *args: Any, **kw: Any) -> Any:
        fitted.pop(trainer, None)  # a new fit is a new run
        return around(call_original, trainer, *args, **kw)

    def test(call_original: Callable[..., Any], trainer: Any, *args: Any, **kw: Any) -> Any:
        return around(call_original, trainer, *args, **kw)

    patches: list[tuple[Any, str, Callable[..., Any]]] = []
    for namespace in _NAMESPACES:
        if namespace.__name__ in sys.modules:
            patches.append((namespace.Trainer, "fit", fit))
            patches.append((namespace.Trainer, "test", test))
    return patches
