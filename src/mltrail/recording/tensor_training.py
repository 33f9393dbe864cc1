"""What an adapter of a PyTorch training reads of torch objects, once for every such adapter.

Lightning's trainer, a plain training loop or any other trainer on torch hands its adapter
torch optimizers, LR schedulers, data loaders, batches and ``nn.Module`` models. These functions
turn them into what a run records: the optimizers' and schedulers' settings as params
(:func:`optimizer_params`, :func:`scheduler_params`), each optimizer's current learning rate
(:func:`learning_rates`), the batch size (:func:`loader_batch_size`), the digest of a dataset of
tensors in memory (:func:`tensor_dataset_digest`), and the model's input example and output
(:func:`batch_inputs`, :func:`forward_example`); and the final ``nn.Module`` logged as an MLflow
PyTorch model, with the best checkpoint's weights when there is one (:func:`log_torch_model`).

torch is imported inside the functions that need it, never at module level: the kernel imports
no ML framework.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mltrail.recording.datasets import data_digest
from mltrail.recording.models import (
    copy_to_save,
    head_rows,
    packages_of,
    pytorch_flavor_kwargs,
    to_numpy,
)

if TYPE_CHECKING:
    from mltrail.recording.session import RunSession
    from mltrail.recording.trail import Trail

# Param-group entries that are implementation switches, not hyperparameters.
_OPTIMIZER_SKIP = {"params", "foreach", "capturable", "differentiable", "fused", "initial_lr"}
# Scheduler attributes that are running state, not settings.
_SCHEDULER_SKIP = {
    "optimizer", "last_epoch", "verbose", "best", "num_bad_epochs", "cooldown_counter",
}  # fmt: skip


def torch_setting(value: Any) -> Any:
    """``value`` as a param when it is a setting (number, string, flag, tuple of numbers or
    strings, a one-element tensor as its number); None for anything else (state, objects)."""
    import torch

    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(v, int | float | str) for v in value)
    ):
        return tuple(value)
    return None


def _numbered(base: str, count: int) -> list[str]:
    """``base`` for a single one, ``base0``, ``base1``, ... for several."""
    return [base] if count == 1 else [f"{base}{i}" for i in range(count)]


def optimizer_params(optimizers: Sequence[Any]) -> dict[str, Any]:
    """The settings of torch optimizers as params: ``optimizer.name`` (its class) and each
    param-group setting (``optimizer.lr``, ``optimizer.weight_decay``; ``optimizer.pg2.lr`` with
    several groups; ``optimizer0.``, ``optimizer1.`` with several optimizers). The learning
    rate is the configured one (``initial_lr``), before a scheduler changed it."""
    params: dict[str, Any] = {}
    for prefix, optimizer in zip(_numbered("optimizer", len(optimizers)), optimizers, strict=True):
        params[f"{prefix}.name"] = type(optimizer).__name__
        groups = optimizer.param_groups
        for index, group in enumerate(groups):
            at = prefix if len(groups) == 1 else f"{prefix}.pg{index + 1}"
            for key, value in group.items():
                if key in _OPTIMIZER_SKIP:
                    continue
                if key == "lr":  # the configured rate, before a scheduler changed it
                    value = group.get("initial_lr", value)
                value = torch_setting(value)
                if value is not None:
                    params[f"{at}.{key}"] = value
    return params


def scheduler_params(
    schedulers: Sequence[Any], settings: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The settings of torch LR schedulers as params: ``lr_scheduler.name`` (its class), the
    trainer's ``settings`` of each (how often it steps: ``{"interval": "epoch"}``), and the
    scheduler's own settings (``lr_scheduler.step_size``); ``lr_scheduler0.``,
    ``lr_scheduler1.`` with several. Running state (``last_epoch``, ``best``) is left out."""
    params: dict[str, Any] = {}
    extra = settings if settings is not None else [{} for _ in schedulers]
    prefixes = _numbered("lr_scheduler", len(schedulers))
    for prefix, scheduler, own in zip(prefixes, schedulers, extra, strict=True):
        params[f"{prefix}.name"] = type(scheduler).__name__
        params.update({f"{prefix}.{key}": value for key, value in own.items()})
        for key, value in vars(scheduler).items():
            value = None if key.startswith("_") or key in _SCHEDULER_SKIP else torch_setting(value)
            if value is not None:
                params[f"{prefix}.{key}"] = value
    return params


def learning_rates(optimizers: Sequence[Any]) -> dict[str, float]:
    """Each torch optimizer's current learning rate as metrics, named as Lightning's
    ``LearningRateMonitor`` names them: ``lr-Adam``, ``lr-Adam-1`` for a second Adam,
    ``lr-Adam/pg1`` (or the group's ``name``) with several param groups."""
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


def tensor_dataset_digest(dataset: Any) -> str:
    """The ``data.<role>.digest`` of a dataset of tensors in memory (a ``TensorDataset``): its
    tensors as float32, by content; "unknown" for any other dataset (read lazily from files)."""
    import torch

    tensors = getattr(dataset, "tensors", None)
    if not isinstance(tensors, tuple) or not all(isinstance(t, torch.Tensor) for t in tensors):
        return "unknown"
    return data_digest(*(t.detach().cpu().float().numpy() for t in tensors))


def loader_batch_size(loader: Any) -> int | None:
    """The batch size of a torch ``DataLoader`` (or of its batch sampler); None if unknown."""
    size = getattr(loader, "batch_size", None)
    if size is None:
        size = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    return size if isinstance(size, int) else None


def batch_inputs(batch: Any) -> list[Any]:
    """A few rows (:func:`~mltrail.recording.models.head_rows`) of each tensor in a training
    batch that the model may take as input: the batch itself, the first element of an
    ``(x, y)`` batch, or each value of a dict batch. For :func:`forward_example`."""
    import torch

    if isinstance(batch, torch.Tensor):
        items = [batch]
    elif isinstance(batch, list | tuple) and batch:
        items = [batch[0]]
    elif isinstance(batch, Mapping):
        items = list(batch.values())
    else:
        items = []
    return [head_rows(item) for item in items if isinstance(item, torch.Tensor) and item.dim()]


def _first_tensor_numpy(value: Any) -> Any:
    """A tensor, or the first tensor of a tuple (a forward's outputs), as numpy; else None."""
    import torch

    if isinstance(value, list | tuple):
        value = next((v for v in value if isinstance(v, torch.Tensor)), None)
    return to_numpy(value) if isinstance(value, torch.Tensor) else None


def forward_example(model: Any, candidates: Sequence[Any]) -> tuple[Any, Any]:
    """The model's input example and output, as numpy, for :meth:`mltrail.Trail.log_model`:
    the first of ``candidates`` (:func:`batch_inputs`) that the model's forward accepts, and
    what it returns; ``(None, None)`` when it takes none of them."""
    import torch

    for candidate in candidates:
        try:
            with torch.no_grad():
                output = model(candidate)
        except Exception:
            continue
        return _first_tensor_numpy(candidate), _first_tensor_numpy(output)
    return None, None


def log_torch_model(
    trail: Trail,
    session: RunSession,
    model: Any,
    *,
    inputs: Sequence[Any],
    best: tuple[str, Callable[[Any], None]] | None = None,
    registered_model_name: str | None = None,
) -> None:
    """Log a trained ``nn.Module`` under ``model/`` in MLflow's PyTorch flavor, with a signature
    from the first of ``inputs`` (:func:`batch_inputs`) that its forward takes; the tag
    ``mltrail.model.weights`` says which weights it holds: ``last``, or ``best:<name>``.

    A copy is saved, on the CPU, in the background, so the user's model stays untouched; a
    model that cannot be copied is saved now as it is (no best weights, no signature).

    Args:
        trail: the run.
        session: the adapter's session (an error loading the best weights is counted there and
            the model keeps its last weights).
        model: the trained module.
        inputs: candidate input examples.
        best: the best checkpoint's name and a function that loads its weights into the copy.
        registered_model_name: also register the model in the Model Registry.
    """
    # Pinned, not inferred by MLflow: the packages of the module's layers and their bases (a
    # LightningModule needs lightning to unpickle), without local labels (torch's +cpu).
    made_of = packages_of(*model.modules())
    options = {"registered_model_name": registered_model_name, **pytorch_flavor_kwargs(*made_of)}
    copied, is_copy = copy_to_save(model)
    if not is_copy:
        trail.log_model(model, "pytorch", background=False, **options)
        trail.set_tags({"mltrail.model.weights": "last"})
        return
    source = "last"
    if best is not None:
        name, load = best
        with session.guarded("loading the best checkpoint"):
            load(copied)
            source = f"best:{name}"
    copied = copied.cpu().eval()
    example, output = forward_example(copied, inputs)
    trail.set_tags({"mltrail.model.weights": source})
    trail.log_model(copied, "pytorch", signature_from=example, output_example=output, **options)
