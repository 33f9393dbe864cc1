"""Runs inside a real Hydra app (examples/hydra_app: two config groups) in a git repository.

One two-job multirun (Hydra's basic launcher, in this process, as `python train.py -m ...`
runs it) is shared by the tests; one of its jobs is then reproduced from the CLI.
"""

from __future__ import annotations

import json
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from mltrail.capture import hydra as hydra_capture
from mltrail.cli import main
from mltrail.restore import reproduce
from tests.conftest import git

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hydra_app"
SWEEP = ["model=small,large", "optimizer=adam", "epochs=2"]


@pytest.fixture(scope="module")
def sweep(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("hydra")
    repo = base / "repo"
    shutil.copytree(EXAMPLE, repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "hydra app")
    argv = ["train.py", "-m", *SWEEP, "hydra/job_logging=none", "hydra/hydra_logging=none"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        mp.setenv("MLFLOW_TRACKING_URI", module_store)
        mp.setenv("MLTRAIL_SPOOL_DIR", str(base / "spool"))
        mp.setenv("MLTRAIL_END_IN_BACKGROUND", "false")
        mp.setenv("MLTRAIL_SYSTEM_METRICS", "false")
        mp.setattr(sys, "argv", argv)
        runpy.run_path("train.py", run_name="__main__")
        hydra_capture.end_sweep_runs()  # the process goes on: the sweep is over
    from mlflow.tracking import MlflowClient

    client = MlflowClient(module_store)
    experiment = client.get_experiment_by_name("hydra-example").experiment_id
    runs = client.search_runs([experiment])
    parents = [r for r in runs if r.data.tags.get("mltrail.hydra.role") == "sweep"]
    jobs = sorted(
        (r for r in runs if r.data.tags.get("mltrail.hydra.role") == "job"),
        key=lambda r: int(r.data.tags["mltrail.hydra.job_num"]),
    )
    return {"repo": repo, "parents": parents, "jobs": jobs, "client": client}


def test_a_multirun_is_one_parent_run_with_a_child_per_job(sweep: dict) -> None:
    [parent] = sweep["parents"]
    jobs = sweep["jobs"]
    assert [r.data.tags["mltrail.hydra.job_num"] for r in jobs] == ["0", "1"]
    assert parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in jobs)
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    sweep_dir = parent.data.tags["mltrail.hydra.sweep_dir"]
    assert Path(sweep_dir).parent.parent == sweep["repo"] / "multirun"
    assert {r.data.tags["mltrail.hydra.sweep_dir"] for r in jobs} == {sweep_dir}
    assert parent.data.tags["mltrail.hydra.overrides"] == " ".join(SWEEP)
    files = [a.path for a in sweep["client"].list_artifacts(parent.info.run_id, "mltrail/hydra")]
    assert files == ["mltrail/hydra/multirun.yaml"]


def test_each_job_records_its_config_overrides_and_hydra_output(sweep: dict) -> None:
    client = sweep["client"]
    for job, model, width in zip(sweep["jobs"], ("small", "large"), ("8", "64"), strict=True):
        overrides = f"model={model} optimizer=adam epochs=2"
        assert job.data.tags["mltrail.hydra.overrides"] == overrides
        params = job.data.params
        assert params["hydra.overrides"] == overrides
        assert params["model.width"] == width
        assert params["optimizer.name"] == "adam" and params["optimizer.lr"] == "0.01"
        assert params["epochs"] == "2"
        assert params["hydra.choices.model"] == model
        assert params["hydra.choices.optimizer"] == "adam"
        assert len(client.get_metric_history(job.info.run_id, "loss")) == 2
        folder = Path(client.download_artifacts(job.info.run_id, "mltrail"))
        config = yaml.safe_load((folder / "config.yaml").read_text())
        assert config["model"] == {"width": int(width), "depth": 2 if model == "small" else 4}
        assert config["optimizer"]["betas"] == [0.9, 0.999]
        assert yaml.safe_load((folder / "hydra" / "overrides.yaml").read_text()) == [
            f"model={model}",
            "optimizer=adam",
            "epochs=2",
        ]
        hydra_yaml = yaml.safe_load((folder / "hydra" / "hydra.yaml").read_text())
        assert hydra_yaml["hydra"]["runtime"]["choices"]["model"] == model
        assert yaml.safe_load((folder / "hydra" / "config.yaml").read_text())["epochs"] == 2
        record = json.loads((folder / "provenance.json").read_text())["hydra"]
        assert record["multirun"] is True and record["job_num"] == int(
            job.data.tags["mltrail.hydra.job_num"]
        )
        assert record["rerun_args"] == overrides.split()
        # Hydra's output folder is not code: the committed app is clean.
        assert job.data.tags["mltrail.git.dirty"] == "false"
        assert record["excluded"] == [str(sweep["repo"] / "multirun")]


def test_reproduce_reruns_one_job_with_its_own_overrides(
    sweep: dict, capfd: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(sweep["repo"])
    job = sweep["jobs"][1]
    target = tmp_path / "rerun"
    code = main(["reproduce", job.info.run_id, "--into", str(target)])
    out = capfd.readouterr().out
    assert code == 0, out
    assert "train.py model=large optimizer=adam epochs=2\n" in out
    assert "MATCH" in out
    client = sweep["client"]
    [rerun] = client.search_runs(
        [job.info.experiment_id], f"tags.`{reproduce.TAG}` = '{job.info.run_id}'"
    )
    tags = rerun.data.tags
    assert tags["mltrail.hydra.overrides"] == job.data.tags["mltrail.hydra.overrides"]
    assert "mltrail.hydra.job_num" not in tags and "mlflow.parentRunId" not in tags
    params = {k: v for k, v in rerun.data.params.items()}
    assert params == job.data.params
    assert rerun.data.metrics["loss"] == job.data.metrics["loss"]


def test_a_job_reruns_with_its_config_flags_and_overrides_only() -> None:
    argv = ["-m", "--config-name", "big", "-cp=conf2", "model=a,b", "hydra.sweep.dir=x"]
    assert hydra_capture.rerun_args(argv, ["model=b"]) == [
        "--config-name",
        "big",
        "-cp=conf2",
        "model=b",
    ]
    assert hydra_capture._sweep_overrides(argv) == ["model=a,b"]
    assert hydra_capture._redact_override("db.password=hunter22") == "db.password=***"
    assert hydra_capture._redact_override("+db.url=postgresql://u:pw@host/db") == (
        "+db.url=postgresql://u:***@host/db"
    )
    assert hydra_capture._redact_override("model.tokenizer=bpe") == "model.tokenizer=bpe"
