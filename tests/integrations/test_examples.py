"""The examples, run as a user runs them (one command each, in a subprocess), and what they
leave in the store; `make demo`'s end-to-end story in a git + DVC workspace."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import user_env

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MLTRAIL = str(Path(sys.executable).with_name("mltrail"))


def run_example(*command: str, cwd: Path, timeout: float = 300) -> str:
    env = user_env(MLTRAIL_SYSTEM_METRICS="false")
    done = subprocess.run(
        list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


def runs_of(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def printed_run(stdout: str) -> str:
    return re.findall(r"mltrail show (\w+)", stdout)[-1]


def test_sklearn_example(client, tmp_path) -> None:
    pytest.importorskip("sklearn")
    out = run_example(
        sys.executable, str(EXAMPLES / "sklearn_example.py"), "--quick",
        "--experiment", "ex-sklearn", cwd=tmp_path,
    )  # fmt: skip
    runs = runs_of(client, "ex-sklearn")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 2 and len(children) == 2  # the pipeline, the search + 2 candidates
    search = client.get_run(printed_run(out))
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {search.info.run_id}
    assert "cv_results.csv" in artifacts(client, search.info.run_id)
    assert search.data.metrics["best_cv_score"] > 0.9
    assert all(r.info.status == "FINISHED" for r in runs)


def test_xgboost_example(client, tmp_path) -> None:
    pytest.importorskip("xgboost")
    out = run_example(
        sys.executable, str(EXAMPLES / "xgboost_example.py"), "--quick",
        "--experiment", "ex-xgboost", cwd=tmp_path,
    )  # fmt: skip
    run = client.get_run(printed_run(out))
    assert run.info.status == "FINISHED"
    assert steps(client, run.info.run_id, "val-logloss") == list(range(8))
    assert run.data.params["max_depth"] == "3"


def test_lightgbm_example(client, tmp_path) -> None:
    pytest.importorskip("lightgbm")
    out = run_example(
        sys.executable, str(EXAMPLES / "lightgbm_example.py"), "--quick",
        "--experiment", "ex-lightgbm", cwd=tmp_path,
    )  # fmt: skip
    run = client.get_run(printed_run(out))
    assert run.info.status == "FINISHED"
    assert steps(client, run.info.run_id, "val-binary_logloss") == list(range(8))
    assert run.data.params["num_leaves"] == "15"


def test_optuna_example(client, tmp_path) -> None:
    pytest.importorskip("optuna")
    pytest.importorskip("lightgbm")
    out = run_example(
        sys.executable, str(EXAMPLES / "optuna_example.py"), "--quick",
        "--experiment", "ex-optuna", cwd=tmp_path,
    )  # fmt: skip
    study = client.get_run(printed_run(out))
    runs = runs_of(client, "ex-optuna")
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == study.info.run_id]
    assert len(runs) == 5 and len(trials) == 4  # the study and its trials, no other runs
    for trial in trials:  # each trial's LightGBM training recorded into its run
        assert steps(client, trial.info.run_id, "val-binary_logloss")
        assert trial.data.tags["mltrail.optuna.state"] in ("COMPLETE", "PRUNED")
    assert study.info.status == "FINISHED"


def test_keras_example(client, tmp_path) -> None:
    pytest.importorskip("keras")
    out = run_example(
        sys.executable, str(EXAMPLES / "keras_example.py"), "--quick",
        "--experiment", "ex-keras", cwd=tmp_path,
    )  # fmt: skip
    run = client.get_run(printed_run(out))
    assert run.info.status == "FINISHED"
    assert steps(client, run.info.run_id, "val_accuracy") == [0, 1]
    assert steps(client, run.info.run_id, "learning_rate") == [0, 1]


def test_lightning_example(client, tmp_path) -> None:
    pytest.importorskip("lightning")
    out = run_example(
        sys.executable, str(EXAMPLES / "lightning_example.py"), "--quick",
        "--experiment", "ex-lightning", cwd=tmp_path,
    )  # fmt: skip
    run = client.get_run(printed_run(out))
    assert run.info.status == "FINISHED"
    assert steps(client, run.info.run_id, "val_loss") == [0, 1]
    assert run.data.params["hidden"] == "16"
    assert "checkpoints/last.ckpt" in artifacts(client, run.info.run_id)


def test_transformers_example(client, tmp_path) -> None:
    pytest.importorskip("transformers")
    out = run_example(
        sys.executable, str(EXAMPLES / "transformers_example.py"), "--quick",
        "--experiment", "ex-transformers", cwd=tmp_path,
    )  # fmt: skip
    run = client.get_run(printed_run(out))
    tags, params = run.data.tags, run.data.params
    assert run.info.status == "FINISHED"
    assert tags["mltrail.framework"] == "transformers"
    assert (params["num_train_epochs"], params["model.hidden_size"]) == ("2", "32")
    assert params["model.architectures"] == "BertForSequenceClassification"
    # 32 rows in batches of 16: evaluation per epoch, the training loss at each global step;
    # the evaluate() after the training adds its value at the last epoch's step.
    assert steps(client, run.info.run_id, "eval_loss") == [0, 1, 1]
    assert steps(client, run.info.run_id, "step/loss") == [1, 2, 3, 4]
    evaluated = float(re.search(r"eval_loss (\S+), run", out).group(1))
    assert run.data.metrics["eval_loss"] == pytest.approx(evaluated, abs=1e-4)
    # The example's code is this repository's: its commit and whether it was dirty.
    assert re.fullmatch(r"[0-9a-f]{40}", tags["mlflow.source.git.commit"])
    assert tags["mltrail.git.dirty"] in ("true", "false")


def test_plain_script_with_mltrail_run(client, tmp_path) -> None:
    pytest.importorskip("sklearn")
    script = EXAMPLES / "plain_train.py"
    assert "mltrail" not in script.read_text().split('"""')[2]  # the code never mentions it
    run_example(
        MLTRAIL, "run", "--experiment", "ex-plain", "-o", "log_model=false",
        "--", "python", str(script), "--n-estimators", "5",
        cwd=tmp_path,
    )  # fmt: skip
    (run,) = runs_of(client, "ex-plain")
    assert run.info.status == "FINISHED"
    assert run.data.params["n_estimators"] == "5"
    assert run.data.tags["mltrail.command"].endswith("plain_train.py --n-estimators 5")
    assert run.data.metrics["train/accuracy"] > 0.9


def test_demo_tells_the_end_to_end_story(demo_run: dict) -> None:
    """What `make demo` runs: two trainings on two DVC data versions, found and compared."""
    from mlflow.tracking import MlflowClient

    output, out = demo_run["output"], demo_run["stdout"]
    first, second = re.search(r"Runs (\w+) \(data v1\) and (\w+) \(data v2\)", out).groups()
    uri = f"sqlite:///{output / 'mlflow.db'}"
    assert f"mlflow ui --backend-store-uri {uri} --port {demo_run['port']}" in out
    assert "$ mltrail runs --commit HEAD~1" in out and f"$ mltrail show {second}" in out

    client = MlflowClient(uri)
    a, b = client.get_run(first), client.get_run(second)
    assert a.data.tags["mltrail.git.dirty"] == b.data.tags["mltrail.git.dirty"] == "false"
    commit_a, commit_b = (r.data.tags["mlflow.source.git.commit"] for r in (a, b))
    assert commit_a != commit_b
    (input_a,) = a.inputs.dataset_inputs
    (input_b,) = b.inputs.dataset_inputs
    assert input_a.dataset.name == input_b.dataset.name == "data/dataset.csv"
    assert input_a.dataset.digest != input_b.dataset.digest  # the two data versions
    assert steps(client, second, "val-logloss") == list(range(10))
    # Each commit finds its own run, and the comparison shows both data hashes.
    sections = out.split("\n== ")
    runs_section = next(s for s in sections if s.startswith("5."))
    head_1, head = runs_section.split("$ mltrail runs --commit HEAD\n")
    assert first in head_1 and second not in head_1 and second in head
    diff_section = next(s for s in sections if s.startswith("7."))
    assert input_a.dataset.digest in diff_section and input_b.dataset.digest in diff_section
    assert (output / "workspace" / "data" / "dataset.csv.dvc").exists()
