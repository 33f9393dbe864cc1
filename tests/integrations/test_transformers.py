"""The Transformers adapter on tiny models built from a config (no download) against a real
sqlite MLflow store: what a user sees in MLflow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the Hub: models come from a config
transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

import mltrail  # noqa: E402
from mltrail.integrations.transformers import TrailCallback  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)]


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def steps(client, run_id: str, key: str) -> list[int]:
    return [step for step, _ in history(client, run_id, key)]


def artifact_json(client, run_id: str, path: str) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, path)).read_text())


class Tokens(torch.utils.data.Dataset):
    """Random token ids; the label is whether the first token is in the upper half."""

    def __init__(self, rows: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, len(VOCAB), (rows, 8), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "labels": (ids[0] >= 25).long()}


class CausalTokens(Tokens):
    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def arguments(folder: Path, **overrides) -> transformers.TrainingArguments:
    settings = {
        "output_dir": str(folder), "per_device_train_batch_size": 8, "learning_rate": 1e-3,
        "report_to": "none", "use_cpu": True, "disable_tqdm": True, "seed": 3,
        "save_strategy": "no",
    }  # fmt: skip
    return transformers.TrainingArguments(**{**settings, **overrides})


def bert() -> transformers.PreTrainedModel:
    config = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=2,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config)


def gpt2() -> transformers.PreTrainedModel:
    config = transformers.GPT2Config(vocab_size=len(VOCAB), n_embd=16, n_layer=2, n_head=2)
    return transformers.GPT2LMHeadModel(config)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(VOCAB))
    return transformers.BertTokenizerFast(vocab_file=str(vocab))


def test_training_records_args_config_epochs_checkpoints_model_and_evaluation(
    client, tmp_path, tokenizer
) -> None:
    torch.manual_seed(0)
    model = bert()
    args = arguments(
        tmp_path / "out", num_train_epochs=2, eval_strategy="epoch", save_strategy="epoch",
        logging_steps=1, warmup_steps=1, metric_for_best_model="loss",
    )  # fmt: skip
    callback = TrailCallback(experiment="tf")
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=Tokens(16), eval_dataset=Tokens(8, seed=1),
        processing_class=tokenizer, callbacks=[callback],
    )  # fmt: skip
    trainer.train()
    trainer.evaluate(Tokens(8, seed=2), metric_key_prefix="test")
    mltrail.wait()
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.framework"] == "transformers"
    params = run.data.params
    assert (params["learning_rate"], params["num_train_epochs"]) == ("0.001", "2")
    assert (params["warmup_steps"], params["seed"], params["eval_strategy"]) == ("1", "3", "epoch")
    assert params["total_train_batch_size"] == "8"
    assert (params["model.hidden_size"], params["model.num_hidden_layers"]) == ("16", "2")
    assert params["model.architectures"] == "BertForSequenceClassification"
    assert params["model.total_params"] == str(model.num_parameters())
    # The Trainer's own logs, under the step convention: evaluation per epoch at step = epoch,
    # the per-step training logs under step/ at the global step.
    logs = trainer.state.log_history
    evals = [entry["eval_loss"] for entry in logs if "eval_loss" in entry]
    assert [v for _, v in history(client, run.info.run_id, "eval_loss")] == pytest.approx(evals)
    assert steps(client, run.info.run_id, "eval_loss") == [0, 1]
    losses = [(entry["step"], entry["loss"]) for entry in logs if "loss" in entry]
    recorded = history(client, run.info.run_id, "step/loss")
    assert [s for s, _ in recorded] == [s for s, _ in losses] == [1, 2, 3, 4]
    assert [v for _, v in recorded] == pytest.approx([v for _, v in losses])
    assert steps(client, run.info.run_id, "step/learning_rate") == [1, 2, 3, 4]
    assert steps(client, run.info.run_id, "train_loss") == [1]
    assert steps(client, run.info.run_id, "test_loss") == [1]  # evaluate() after the training
    assert "loss" not in run.data.metrics and "epoch" not in run.data.metrics
    # The checkpoint-N folders the Trainer saved, with their step, metric and aliases.
    index = artifact_json(client, run.info.run_id, "checkpoints/index.json")
    assert sorted(index["files"]) == ["checkpoints/checkpoint-2", "checkpoints/checkpoint-4"]
    assert index["files"]["checkpoints/checkpoint-4"]["step"] == 4
    assert index["files"]["checkpoints/checkpoint-2"]["metrics"] == {"eval_loss": evals[0]}
    best = os.path.basename(trainer.state.best_model_checkpoint)
    assert index["aliases"] == {"best": f"checkpoints/{best}", "latest": "checkpoints/checkpoint-4"}
    saved = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints/checkpoint-4")}
    assert "checkpoints/checkpoint-4/model.safetensors" in saved
    # The final model in the transformers flavor, with its tokenizer.
    mlmodel = Path(client.download_artifacts(run.info.run_id, "model/MLmodel")).read_text()
    assert "transformers:" in mlmodel and "text-classification" in mlmodel
    assert "tokenizer" in mlmodel
    assert run.data.tags["mltrail.model.flavor"] == "transformers"


def test_resume_continues_from_the_last_checkpoint_and_forks_from_an_older_one(
    client, tmp_path
) -> None:
    torch.manual_seed(0)
    saving = {"logging_steps": 1, "save_steps": 2, "save_strategy": "steps"}
    first = TrailCallback(experiment="tf-resume", log_model=False)
    transformers.Trainer(
        model=gpt2(),
        args=arguments(tmp_path / "out", max_steps=4, **saving),
        train_dataset=CausalTokens(32),
        callbacks=[first],
    ).train()
    state = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["TrailCallback"]["attributes"]["_resume_id"] == first.run_id

    def resume(checkpoint: str, folder: str) -> TrailCallback:
        # A new process would build everything again: a fresh callback, model and trainer.
        callback = TrailCallback(experiment="tf-resume")
        transformers.Trainer(
            model=gpt2(),
            args=arguments(tmp_path / folder, max_steps=6, **saving),
            train_dataset=CausalTokens(32),
            callbacks=[callback],
        ).train(resume_from_checkpoint=str(tmp_path / "out" / checkpoint))
        mltrail.wait()
        return callback

    # From the last checkpoint (the end of epoch 0): the same run goes on to step 6.
    second = resume("checkpoint-4", "out")
    assert second.run_id == first.run_id
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.resume_count"] == "1"
    assert steps(client, run.info.run_id, "step/loss") == [1, 2, 3, 4, 5, 6]
    index = artifact_json(client, run.info.run_id, "checkpoints/index.json")
    assert sorted(index["files"]) == [f"checkpoints/checkpoint-{n}" for n in (2, 4, 6)]
    assert index["aliases"]["latest"] == "checkpoints/checkpoint-6"
    assert run.data.tags["mltrail.model.flavor"] == "pytorch"  # no tokenizer: PyTorch flavor
    pins = client.download_artifacts(run.info.run_id, "model/requirements.txt", str(tmp_path))
    assert {"torch", "cloudpickle", "transformers"} <= {
        pin.split("==")[0] for pin in Path(pins).read_text().split()
    }

    # From an older checkpoint (step 2, inside epoch 0, which the run has values of): a fork
    # with the parent's values up to step 2; the parent keeps one point per step.
    fork = resume("checkpoint-2", "fork")
    assert fork.run_id != first.run_id
    forked = client.get_run(fork.run_id)
    assert forked.data.tags["mltrail.forked_from"] == first.run_id
    assert forked.info.status == "FINISHED"
    assert steps(client, fork.run_id, "step/loss") == [1, 2, 3, 4, 5, 6]
    parent = history(client, first.run_id, "step/loss")
    assert steps(client, first.run_id, "step/loss") == [1, 2, 3, 4, 5, 6]
    assert history(client, fork.run_id, "step/loss")[:2] == parent[:2]  # copied, not retrained


def test_autolog_beside_report_to_mlflow_gives_one_run(client, tmp_path) -> None:
    args = arguments(
        tmp_path / "out", num_train_epochs=2, logging_strategy="epoch", report_to="mlflow"
    )
    mltrail.autolog(frameworks=["transformers"], experiment="tf-auto", log_model=False, silent=True)
    try:
        trainer = transformers.Trainer(model=gpt2(), args=args, train_dataset=CausalTokens(16))
        before = list(trainer.callback_handler.callbacks)
        trainer.train()
        assert trainer.callback_handler.callbacks == before  # the trainer is left as it was
    finally:
        mltrail.autolog(disable=True, silent=True)
    mltrail.wait()
    experiment = client.get_experiment_by_name("tf-auto")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["mltrail.framework"] == "transformers"
    # Per-epoch training logs at step = epoch, by mltrail only: MLflowCallback would have logged
    # them at the global steps 2 and 4, in a run of its own in the default experiment.
    assert steps(client, run.info.run_id, "loss") == [0, 1]
    assert "step/loss" not in run.data.metrics
    assert client.search_runs(["0"]) == []
    assert run.data.params["logging_strategy"] == "epoch"


def test_beside_transformers_mlflow_callback_one_run_with_its_metrics(client, tmp_path) -> None:
    args = arguments(tmp_path / "out", max_steps=2, logging_steps=1, report_to="mlflow")
    callback = TrailCallback(experiment="tf-beside", log_model=False)
    transformers.Trainer(
        model=gpt2(), args=args, train_dataset=CausalTokens(16), callbacks=[callback]
    ).train()
    mltrail.wait()
    # MLflowCallback's run (in MLflow's current experiment) is the one run: mltrail records its
    # params, provenance and files into it and leaves the metrics to MLflowCallback.
    assert client.get_experiment_by_name("tf-beside") is None
    run = client.get_run(callback.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.framework"] == "transformers"
    assert run.data.params["model.n_layer"] == "2"
    assert steps(client, run.info.run_id, "loss") == [1, 2]  # MLflowCallback's convention
    assert "step/loss" not in run.data.metrics and "mltrail.errors" not in run.data.tags


def test_checkpoint_folders_are_logged_models_that_load(client, tmp_path) -> None:
    from mltrail.recording import logged_models

    if not logged_models.supported():
        pytest.skip("needs MLflow 3")
    import mlflow

    torch.manual_seed(0)
    saving = {"logging_steps": 1, "save_steps": 1, "save_strategy": "steps"}
    callback = TrailCallback(experiment="tf-models", log_model=False)
    trainer = transformers.Trainer(
        model=gpt2(),
        args=arguments(tmp_path / "out", max_steps=2, **saving),
        train_dataset=CausalTokens(16),
        callbacks=[callback],
    )
    trainer.train()
    mltrail.wait()
    run = client.get_run(callback.run_id)
    found = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}' AND tags.`mltrail.kind` = 'checkpoint'",
    )
    by_name = {model.name: model for model in found}
    assert sorted(by_name) == ["checkpoint-1", "checkpoint-2"]
    index = artifact_json(client, run.info.run_id, "checkpoints/index.json")
    assert (
        index["files"]["checkpoints/checkpoint-2"]["model_id"] == by_name["checkpoint-2"].model_id
    )
    # The last checkpoint loads as the model the training ended with; the first one differs.
    last = mlflow.pytorch.load_model(f"models:/{by_name['checkpoint-2'].model_id}")
    first = mlflow.pytorch.load_model(f"models:/{by_name['checkpoint-1'].model_id}")
    assert type(last) is transformers.GPT2LMHeadModel
    trained = trainer.model.state_dict()
    for key, value in last.state_dict().items():
        torch.testing.assert_close(value, trained[key])
    assert not torch.equal(first.lm_head.weight, last.lm_head.weight)
    assert "mltrail.errors" not in run.data.tags
