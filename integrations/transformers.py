"""Transformers adapter: ``Trainer(..., callbacks=[TrailCallback()])`` records the training.

Params: the ``TrainingArguments`` that change results, the model's config as ``model.*`` and its
parameter counts. Metrics: the Trainer's logs at its own cadence, per-epoch values at ``step =
epoch`` and the rest under ``step/`` at the global step; the summary and later ``evaluate`` and
``predict`` metrics at the last epoch's step. Artifacts: each ``checkpoint-N`` folder (a
LoggedModel on MLflow 3), the final model in MLflow's transformers flavor, else PyTorch's.
The run id travels in each checkpoint's ``trainer_state.json``: ``train(resume_from_checkpoint=
...)`` continues that run. Only the main process writes; beside Transformers' own
``MLflowCallback`` the callback records into its run and leaves the metrics to it.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from typing import Any

try:
    import transformers
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState
except ImportError as error:  # pragma: no cover - exercised in the core-only environment
    raise ImportError(
        'mltrail.integrations.transformers needs Transformers: pip install "mltrail[transformers]"'
    ) from error

from mltrail import Trail
from mltrail.adapters import (
    AutologCallbacks,
    BestTracker,
    CheckpointModel,
    CheckpointUploads,
    EarlyStop,
    EpochLog,
    GlobalSteps,
    RunSession,
    calling_object,
    copy_to_save,
    early_stopping_params,
    exception_safe,
    options_for,
    packages_of,
    parameter_counts,
    pinned_requirements,
    pytorch_flavor_kwargs,
)

__all__ = ["TrailCallback", "autolog_patches"]

# TrainingArguments that change results (the rest are paths, logging and hardware switches).
_ARGS = (
    "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "warmup_ratio",
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
    "max_grad_norm", "optim", "optim_args", "label_smoothing_factor", "bf16", "fp16", "tf32",
    "seed", "data_seed", "full_determinism", "gradient_checkpointing", "group_by_length",
    "dataloader_drop_last", "neftune_noise_alpha", "torch_compile", "eval_strategy",
    "logging_strategy", "logging_steps", "save_strategy", "load_best_model_at_end",
    "metric_for_best_model", "greater_is_better",
)  # fmt: skip
# Model classes by the pipeline task their name ends with (for the transformers flavor).
_TASKS = {
    "ForSequenceClassification": "text-classification", "ForTokenClassification":
    "token-classification", "ForQuestionAnswering": "question-answering", "ForMaskedLM":
    "fill-mask", "ForCausalLM": "text-generation", "LMHeadModel": "text-generation",
    "ForConditionalGeneration": "text2text-generation", "ForSeq2SeqLM": "text2text-generation",
}  # fmt: skip
_CARD = "---\nlibrary_name: transformers\n---\nTrained with transformers.Trainer; recorded by mltrail.\n"


@exception_safe()
class TrailCallback(TrainerCallback, ExportableState):
    """Record a ``transformers.Trainer`` training (and later ``evaluate``/``predict``) as a run.

    Args:
        trail: log into this run (from :func:`mltrail.start_run`) instead of starting one per
            training; the run is left open for its owner to end.
        checkpoints: which ``checkpoint-N`` folders to upload under ``checkpoints/``: "all"
            (default; "best_and_last" is the same, each save being the latest), "best" (those
            that are best by ``metric_for_best_model``, else ``eval_loss``) or "none".
        log_model: log the final model under ``model/``.
        registered_model_name: also register it in the Model Registry under this name.
        **start_run_kwargs: arguments of :func:`mltrail.start_run` for the runs it starts.

    Attributes:
        run_id: the run of the current (or last) training, None before the first one.
    """

    def __init__(
        self,
        trail: Trail | None = None,
        *,
        checkpoints: str = "all",
        log_model: bool = True,
        registered_model_name: str | None = None,
        **start_run_kwargs: Any,
    ) -> None:
        self._session = RunSession("transformers", trail, start_run_kwargs)
        # Hard links: the Trainer writes each checkpoint-N folder once and deletes it later.
        self._uploads = CheckpointUploads(self._session, checkpoints, link=True)
        self.checkpoints = checkpoints
        self.log_model, self.registered_model_name = log_model, registered_model_name
        self._epochs = EpochLog(self._session)
        self._steps = GlobalSteps(self._session)  # the run's global steps, resumed or not
        self._paused_mlflow = False  # autolog took Transformers' MLflowCallback off the trainer
        self._metrics_elsewhere = False
        self._summary: dict[str, Any] = {}
        self._last: dict[str, Any] = {}  # the latest evaluation, for the checkpoint saved next
        self._stoppers: list[Any] = []  # the trainer's EarlyStoppingCallbacks

    @property
    def run_id(self) -> str | None:
        return self._session.last_run_id

    def state(self) -> dict[str, Any]:  # Transformers' ExportableState: kept in checkpoints
        own = ("checkpoints", "log_model", "registered_model_name")
        return {
            "args": {name: getattr(self, name) for name in own},
            "attributes": {"_resume_id": self.run_id},
        }

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        if not state.is_world_process_zero:
            return
        if self._session.trail is not None:  # the last training raised past every hook
            reason = "the transformers training stopped by an exception before its end"
            self._session.end(finished=False, reason=reason)
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        saved = saved[0] if isinstance(saved, list) and saved else saved
        resume_id = ((saved or {}).get("attributes") or {}).get("_resume_id")
        trail = self._session.open_checkpoint_run(
            resume_id if state.global_step else None,
            math.floor(state.epoch + 1e-6),  # the first epoch it logs
            global_step=state.global_step,
            tags={"mltrail.transformers.version": transformers.__version__},
        )
        self._session.training_started()
        self._metrics_elsewhere = (
            not trail.owned and "mlflow" in (args.report_to or []) and not self._paused_mlflow
        )
        self._steps.start(state.global_step)
        self._summary, self._last, self._best = {}, {}, _tracker(args)
        self._epochs = EpochLog(self._session)
        self._epochs.start(_epoch(state.epoch) if state.global_step else 0)
        params = _model_params(model)
        self._stoppers = _early_stoppers()
        params.update(early_stopping_params(_early_stops(self._stoppers, args, state)))
        if not self._metrics_elsewhere:  # MLflowCallback logged the arguments under these names
            params.update({k: _plain(getattr(args, k, None)) for k in _ARGS})
            params["world_size"] = args.world_size
            params["total_train_batch_size"] = (
                args.per_device_train_batch_size
                * args.gradient_accumulation_steps
                * args.world_size
            )
        trail.log_params({k: v for k, v in params.items() if v is not None})

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any):
        logs = dict(logs or {})
        if not state.is_world_process_zero or self._metrics_elsewhere or not logs:
            return
        if self._session.trail is None:  # evaluate() after the training, at its last step
            after = {k: v for k, v in logs.items() if k != "epoch"}
            self._session.log_after(after, self._epochs.last_step or 0)
            return
        if "train_runtime" in logs:  # the training's summary, logged at its end
            self._summary = {k: v for k, v in logs.items() if k != "epoch"}
            return
        step = self._steps.step(state.global_step)
        if step is None:
            return  # a resumed training redoing steps that the run has values of
        evaluation = any(k.startswith("eval_") for k in logs)
        if evaluation:
            self._last = logs
        strategy = args.eval_strategy if evaluation else args.logging_strategy
        if str(getattr(strategy, "value", strategy)) == "epoch":
            logs.pop("epoch", None)
            self._epochs.stage(_epoch(state.epoch), logs)
        else:
            self._epochs.log_step(logs, step)
        self._steps.logged(step)

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any):
        trail = self._session.trail
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if trail is None or not state.is_world_process_zero or not os.path.isdir(folder):
            return
        step = self._steps.step(state.global_step)
        if step is None:
            return  # the run has it from before the training was resumed
        self._epochs.flush()  # the epoch's values are in before its checkpoint
        chosen = state.best_model_checkpoint  # the Trainer's own choice of the best wins
        best = os.path.abspath(chosen) == os.path.abspath(folder) if chosen else None
        model = _checkpoint_model(kw.get("model"))
        self._uploads.upload_saved(
            folder, step, self._best, self._last, framework_best=best, model=model
        )

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        if self._session.trail is None:
            return
        processor = kw.get("processing_class", kw.get("tokenizer"))

        stops = _early_stops(self._stoppers, args, state)

        def summary(trail: Trail) -> None:
            self._epochs.flush()
            self._epochs.log(_epoch(state.epoch), self._summary)
            self._epochs.log_early_stopping(stops)
            if self.log_model and model is not None and trail.enabled:
                self._log_final_model(trail, model, processor)

        self._session.end_after(summary)

    def on_predict(self, args: Any, state: Any, control: Any, metrics: Any = None, **kw: Any):
        if state.is_world_process_zero and not self._metrics_elsewhere and metrics:
            self._session.log_after(metrics, self._epochs.last_step or 0)

    def _log_final_model(self, trail: Trail, model: Any, processor: Any) -> None:
        model, background = copy_to_save(model, lambda copied: copied.cpu().eval())
        task = next((t for s, t in _TASKS.items() if type(model).__name__.endswith(s)), None)
        tokenizer = isinstance(processor, transformers.PreTrainedTokenizerBase)
        options = {"registered_model_name": self.registered_model_name, "background": background}
        if task and tokenizer:
            from huggingface_hub import ModelCard  # a card of its own: fetching one needs the Hub

            trail.log_model(
                {"model": model, "tokenizer": processor},
                "transformers",
                task=task,
                model_card=ModelCard(_CARD),
                pip_requirements=pinned_requirements("transformers", "torch", "tokenizers"),
                **options,
            )
        else:
            trail.log_model(
                model,
                "pytorch",
                **options,
                # the libraries of its layers too: a PEFT wrapper needs peft to unpickle
                **pytorch_flavor_kwargs("transformers", *packages_of(*model.modules())),
            )
        trail.set_tags({"mltrail.model.task": task or "unknown"})

    def _failed(self, error: BaseException) -> None:
        """End the run for an exception that escaped ``train`` (Transformers has no hook)."""
        if self._session.trail is not None:
            self._session.end(error)


def _epoch(epoch: float | None) -> int:
    """The 0-based index of the epoch that ``state.epoch`` (a float, 1.0 at its end) is in."""
    return max(math.ceil((epoch or 0) - 1e-6) - 1, 0)


def _early_stoppers() -> list[Any]:
    """The EarlyStoppingCallbacks of the trainer whose callback handler calls this hook (a
    callback is not given its trainer: the handler is the caller a few frames up)."""
    from transformers.trainer_callback import CallbackHandler

    handler = calling_object(sys._getframe(1), CallbackHandler, 8)
    stoppers = handler.callbacks if handler is not None else []
    return [c for c in stoppers if isinstance(c, transformers.EarlyStoppingCallback)]


def _early_stops(stoppers: list[Any], args: Any, state: Any) -> list[EarlyStop]:
    """The EarlyStoppingCallbacks as every adapter names them: they watch the Trainer's
    ``metric_for_best_model`` at each evaluation, and the Trainer keeps its best value."""
    monitor, best = _monitor(args), state.best_metric
    logged = [e for e in state.log_history if best is not None and e.get(monitor) == best]
    best_epoch = _epoch(logged[0].get("epoch")) if logged else None
    restored = bool(args.load_best_model_at_end and state.best_model_checkpoint)
    stops = []
    for stop in stoppers:
        patience, waited = stop.early_stopping_patience, stop.early_stopping_patience_counter
        settings = {"monitor": monitor, "mode": "max" if args.greater_is_better else "min"}
        settings.update(patience=patience, min_delta=stop.early_stopping_threshold)
        stopped = _epoch(state.epoch) if waited >= patience else None
        stops.append(
            EarlyStop(
                settings,
                stopped_epoch=stopped,
                best_score=best,
                best_epoch=best_epoch,
                wait_count=waited,
                restored_best_weights=restored,
            )
        )
    return stops


def _plain(value: Any) -> Any:
    value = getattr(value, "value", value)  # enums
    return value if isinstance(value, bool | int | float | str | dict | type(None)) else str(value)


def _monitor(args: Any) -> str:
    """The metric the Trainer picks its best checkpoint by, as it logs it (``eval_`` first)."""
    metric = args.metric_for_best_model or "eval_loss"
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def _tracker(args: Any) -> BestTracker:
    greater = args.greater_is_better
    return BestTracker(_monitor(args), "auto" if greater is None else ("max" if greater else "min"))


def _checkpoint_model(model: Any) -> CheckpointModel | None:
    """A ``checkpoint-N`` folder as a LoggedModel: loaded by the model's class (on the upload
    thread), saved by MLflow's PyTorch flavor. None for a model that is not a
    ``PreTrainedModel`` (a PEFT wrapper), whose folder its class cannot load alone."""
    if not isinstance(model, transformers.PreTrainedModel):
        return None
    kind = type(model)
    return CheckpointModel(
        "pytorch",
        lambda path: kind.from_pretrained(str(path)).eval(),
        pytorch_flavor_kwargs("transformers"),
        tags={"mltrail.transformers.model_class": f"{kind.__module__}.{kind.__qualname__}"},
    )


def _model_params(model: Any) -> dict[str, Any]:
    """The model's config (sizes, architecture, ``_name_or_path``) and parameter counts."""
    config = getattr(model, "config", None)
    if config is None:
        return {"model.class": type(model).__name__} if model is not None else {}
    scalars = bool | int | float | str
    items = config.to_dict().items()
    params = {f"model.{k.lstrip('_')}": v for k, v in items if isinstance(v, scalars)}
    params.pop("model.transformers_version", None)
    params["model.architectures"] = ",".join(config.architectures or [type(model).__name__])
    total, trainable = model.num_parameters(), model.num_parameters(only_trainable=True)
    return {**params, **parameter_counts(total, trainable)}


# --- autolog ----------------------------------------------------------------------------------


def autolog_patches(options: dict[str, Any]) -> list[tuple[Any, str, Callable[..., Any]]]:
    """``mltrail.autolog`` patches: ``Trainer.train`` gets a :class:`TrailCallback` when it has
    none, with Transformers' own ``MLflowCallback`` off during that call (one run, mltrail's);
    ``evaluate``/``predict`` after it add to the same run. The trainer is left as it was."""
    from transformers import Trainer
    from transformers.integrations import MLflowCallback

    start, own = options_for("transformers", options)

    def make() -> TrailCallback:
        callback = TrailCallback(**start, **own)
        callback._paused_mlflow = True
        return callback

    added = AutologCallbacks(
        TrailCallback, make, without=(MLflowCallback,), stopped=TrailCallback._failed
    )

    def callbacks(trainer: Any) -> list[Any]:
        return trainer.callback_handler.callbacks

    train, later = added.training_patch(callbacks), added.later_patch(callbacks)
    return [(Trainer, "train", train), (Trainer, "evaluate", later), (Trainer, "predict", later)]
