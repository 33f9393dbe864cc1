"""Kernel pieces for adapters of PyTorch trainings: optimizer and scheduler settings as params,
learning rates, a loader's batch size, the digest of a TensorDataset, the model's input example
from a batch and its output."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import mltrail

torch = pytest.importorskip("torch")

from mltrail.adapters import (  # noqa: E402 - after the skip without torch
    RunSession,
    arrays_digest,
    batch_inputs,
    fingerprint,
    forward_example,
    input_rows,
    learning_rates,
    loader_batch_size,
    log_torch_model,
    optimizer_params,
    scheduler_params,
    tensor_dataset_digest,
    torch_setting,
)


def layer() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def test_a_setting_is_a_plain_value_and_state_is_none() -> None:
    assert torch_setting(torch.tensor(0.5)) == 0.5
    assert torch_setting((0.9, 0.999)) == (0.9, 0.999)
    assert torch_setting([1, "a"]) == (1, "a")
    assert torch_setting(True) is True
    assert torch_setting(torch.ones(3)) is None
    assert torch_setting([]) is None
    assert torch_setting({"a": 1}) is None
    assert torch_setting(object()) is None


def test_one_optimizer_has_its_settings_under_optimizer_and_the_configured_rate() -> None:
    model = layer()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=0.01)
    torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    optimizer.step()
    optimizer.param_groups[0]["lr"] = 0.05  # as a scheduler changes it
    params = optimizer_params([optimizer])
    assert params["optimizer.name"] == "Adam"
    assert params["optimizer.lr"] == 0.1  # initial_lr, not the scheduled rate
    assert params["optimizer.weight_decay"] == 0.01
    assert params["optimizer.betas"] == (0.9, 0.999)
    assert not {"optimizer.params", "optimizer.initial_lr", "optimizer.foreach"} & set(params)


def test_several_optimizers_and_param_groups_are_numbered() -> None:
    model = layer()
    groups = [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.2}]
    sgd = torch.optim.SGD(groups, momentum=0.9)
    adam = torch.optim.Adam(layer().parameters(), lr=0.3)
    params = optimizer_params([sgd, adam])
    assert params["optimizer0.name"] == "SGD"
    assert params["optimizer0.pg1.lr"] == 0.1
    assert params["optimizer0.pg2.lr"] == 0.2
    assert params["optimizer0.pg2.momentum"] == 0.9
    assert params["optimizer1.name"] == "Adam"
    assert params["optimizer1.lr"] == 0.3


def test_a_scheduler_has_its_settings_and_the_trainers_but_not_its_running_state() -> None:
    optimizer = torch.optim.SGD(layer().parameters(), lr=0.1)
    step = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    params = scheduler_params([step], [{"interval": "epoch", "frequency": 1}])
    assert list(params)[:3] == [
        "lr_scheduler.name",
        "lr_scheduler.interval",
        "lr_scheduler.frequency",
    ]
    assert params["lr_scheduler.name"] == "StepLR"
    assert params["lr_scheduler.step_size"] == 3
    assert params["lr_scheduler.gamma"] == 0.5
    assert params["lr_scheduler.base_lrs"] == (0.1,)
    assert not {"lr_scheduler.last_epoch", "lr_scheduler.optimizer"} & set(params)
    assert not any(key.startswith("lr_scheduler._") for key in params)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=2)
    both = scheduler_params([step, plateau])
    assert both["lr_scheduler0.name"] == "StepLR"
    assert both["lr_scheduler1.name"] == "ReduceLROnPlateau"
    assert both["lr_scheduler1.patience"] == 2
    assert "lr_scheduler1.best" not in both
    assert "lr_scheduler0.interval" not in both


def test_learning_rates_are_named_as_lightnings_learning_rate_monitor_names_them() -> None:
    model = layer()
    first = torch.optim.Adam(model.parameters(), lr=0.1)
    second = torch.optim.Adam(
        [{"params": [model.weight], "lr": 0.2, "name": "body"}, {"params": [model.bias]}], lr=0.3
    )
    assert learning_rates([first, second]) == {
        "lr-Adam": 0.1,
        "lr-Adam-1/body": 0.2,
        "lr-Adam-1/pg2": 0.3,
    }


def test_a_loaders_batch_size_or_its_batch_samplers() -> None:
    data = torch.utils.data.TensorDataset(torch.zeros(10, 3))
    assert loader_batch_size(torch.utils.data.DataLoader(data, batch_size=4)) == 4
    sampler = torch.utils.data.BatchSampler(range(10), batch_size=5, drop_last=False)
    assert loader_batch_size(torch.utils.data.DataLoader(data, batch_sampler=sampler)) == 5
    assert loader_batch_size(object()) is None


def test_a_tensor_datasets_digest_is_its_tensors_as_float32_by_content() -> None:
    x, y = torch.arange(12.0).reshape(4, 3), torch.tensor([0, 1, 0, 1])
    digest = tensor_dataset_digest(torch.utils.data.TensorDataset(x, y))
    # Stays byte for byte what runs recorded before: the already-run check compares it.
    assert digest == fingerprint(x.numpy(), y.float().numpy())
    assert digest != fingerprint(x.numpy(), y.numpy())
    same = tensor_dataset_digest(torch.utils.data.TensorDataset(x.clone(), y.clone()))
    assert same == digest
    other = tensor_dataset_digest(torch.utils.data.TensorDataset(x + 1, y))
    assert other != digest
    assert tensor_dataset_digest(list(range(3))) == "unknown"
    assert tensor_dataset_digest(None) == "unknown"


def test_a_torch_loader_given_to_another_framework_gives_rows_and_a_digest() -> None:
    """Keras on its torch backend trains from a ``DataLoader``, whose batches collate an
    ``(x, y)`` sample into a list: the signature's rows are ``x``'s, and the digest is the
    dataset's, as Lightning's runs record it."""
    x, y = torch.arange(24.0).reshape(8, 3), torch.tensor([0, 1] * 4)
    dataset = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True)
    rows = input_rows(loader)
    assert isinstance(rows, np.ndarray) and rows.shape[1] == 3 and rows.dtype == np.float32
    assert arrays_digest(loader) == tensor_dataset_digest(dataset) != "unknown"
    listed = torch.utils.data.DataLoader(list(zip(x, y, strict=True)), batch_size=4)
    assert input_rows(listed).shape[1] == 3  # a list of samples: rows, but
    assert arrays_digest(listed) == "unknown"  # no tensors held in one place to digest


def test_batch_inputs_are_a_few_rows_of_each_tensor_the_model_may_take() -> None:
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    (rows,) = batch_inputs((x, y))
    assert torch.equal(rows, x[:5])
    (whole,) = batch_inputs(x)
    assert torch.equal(whole, x[:5])
    from_dict = batch_inputs({"a": x, "b": y, "n": 3})
    assert [r.shape for r in from_dict] == [(5, 3), (5, 1)]
    assert batch_inputs(torch.tensor(1.0)) == []
    assert batch_inputs("text") == []


def test_forward_example_is_the_first_input_the_model_takes_and_its_output() -> None:
    model = layer().eval()
    wrong, right = torch.randn(5, 4), torch.randn(5, 3)
    example, output = forward_example(model, [wrong, right])
    assert isinstance(example, np.ndarray) and np.array_equal(example, right.numpy())
    assert np.allclose(output, model(right).detach().numpy())
    assert forward_example(model, [wrong]) == (None, None)

    class Pair(torch.nn.Module):
        def forward(self, x):
            return ("tag", x * 2)

    example, output = forward_example(Pair(), [right])
    assert np.allclose(output, right.numpy() * 2)


def test_importing_the_adapter_api_imports_no_torch() -> None:
    code = "import sys, mltrail.adapters; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


QUIET = {"capture": False, "system_metrics": False}


def logged_model(client, session: RunSession, model, **kwargs) -> tuple[dict, torch.nn.Module]:
    """Log ``model`` into a run of its own; the run's tags and the module MLflow loads back."""
    import mlflow.pytorch

    trail = session.open()
    log_torch_model(trail, session, model, **kwargs)
    session.end()
    run_id = session.last_run_id
    loaded = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    return client.get_run(run_id).data.tags, loaded


def test_the_final_module_is_logged_with_its_last_weights_and_a_signature(client) -> None:
    model, rows = layer(), torch.randn(5, 3)
    session = RunSession("demo", None, {"experiment": "tensor-training", **QUIET})
    tags, loaded = logged_model(client, session, model, inputs=[torch.randn(5, 4), rows])
    assert tags["mltrail.model.weights"] == "last"
    assert torch.allclose(loaded(rows), model(rows))
    assert model.training  # the user's model untouched: a copy was put in eval mode
    from mlflow.models import get_model_info

    info = get_model_info(f"runs:/{session.last_run_id}/model")
    assert info.signature is not None
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 3)


def test_the_best_checkpoints_weights_go_into_a_copy_and_the_tag_names_it(client) -> None:
    model, best = layer(), torch.nn.Linear(3, 2)
    rows = torch.randn(5, 3)

    def load(copy: torch.nn.Module) -> None:
        copy.load_state_dict(best.state_dict())

    session = RunSession("demo", None, {"experiment": "tensor-training", **QUIET})
    before = model.weight.detach().clone()
    tags, loaded = logged_model(client, session, model, inputs=[rows], best=("best.ckpt", load))
    assert tags["mltrail.model.weights"] == "best:best.ckpt"
    assert torch.allclose(loaded(rows), best(rows))
    assert torch.equal(model.weight, before)  # the user's model keeps its weights


def test_best_weights_that_do_not_load_leave_the_last_ones_and_count_an_error(
    client, monkeypatch
) -> None:
    monkeypatch.setenv("MLTRAIL_STRICT", "0")
    model, rows = layer(), torch.randn(5, 3)

    def broken(copy: torch.nn.Module) -> None:
        raise RuntimeError("unreadable checkpoint")

    session = RunSession("demo", None, {"experiment": "tensor-training", **QUIET})
    with pytest.warns(mltrail.MltrailWarning, match="loading the best checkpoint"):
        tags, loaded = logged_model(
            client, session, model, inputs=[rows], best=("best.ckpt", broken)
        )
    assert tags["mltrail.model.weights"] == "last"
    assert tags["mltrail.errors"] == "1"
    assert torch.allclose(loaded(rows), model(rows))
