"""The MLflow run context provider: mltrail's git and DVC tags on runs MLflow itself creates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

import mltrail
from mltrail.capture import mlflow_plugin

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "DVC_NO_ANALYTICS": "1",
}


def sh(repo: Path, *args: str) -> str:
    result = subprocess.run(args, cwd=repo, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("plugin") / "repo"
    repo.mkdir()
    sh(repo, "git", "init", "-q", "-b", "main")
    (repo / "data.csv").write_text("a,b\n1,2\n")
    (repo / "train.py").write_text("print('train')\n")
    # Real DVC commands, run in one interpreter.
    code = "from dvc.cli import main\nassert not main(['init', '-q'])\nassert not main(['add', '-q', 'data.csv'])\n"
    sh(repo, sys.executable, "-c", code)
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "init")
    return repo


@pytest.fixture
def repo(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(template, copy, symlinks=True)
    monkeypatch.chdir(copy)
    mlflow_plugin.clear_cache()
    yield copy
    mlflow_plugin.clear_cache()


def data_md5(repo: Path) -> str:
    return yaml.safe_load((repo / "data.csv.dvc").read_text())["outs"][0]["md5"]


def mltrail_tags(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if k.startswith("mltrail.")}


def test_registered_through_the_entry_point() -> None:
    from mlflow.tracking.context.registry import _run_context_provider_registry

    providers = [type(p) for p in _run_context_provider_registry]
    assert mlflow_plugin.TrailContextProvider in providers


def test_plain_mlflow_run_gets_git_and_dvc_tags(repo: Path, client) -> None:
    (repo / "train.py").write_text("print('edited')\n")
    with mlflow.start_run() as run:
        pass
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == sh(repo, "git", "rev-parse", "HEAD")
    assert tags["mlflow.source.git.branch"] == "main"
    assert mltrail_tags(tags) == {
        "mltrail.git.dirty": "true",
        "mltrail.dvc.outputs": "1",
        "mltrail.dvc.data_hash": tags["mltrail.dvc.data_hash"],
        "mltrail.dvc.out.data.csv": data_md5(repo),
    }
    # Searchable by data version, like the dataset inputs of mltrail's own runs.
    found = client.search_runs(
        [run.info.experiment_id], f"tags.`mltrail.dvc.out.data.csv` = '{data_md5(repo)}'"
    )
    assert run.info.run_id in [r.info.run_id for r in found]


def test_switched_off_by_environment(repo: Path, client, monkeypatch) -> None:
    monkeypatch.setenv("MLTRAIL_MLFLOW_PLUGIN", "0")
    with mlflow.start_run() as run:
        pass
    assert mltrail_tags(client.get_run(run.info.run_id).data.tags) == {}
    assert mlflow_plugin._cache == {}  # nothing was computed


def test_cached_per_process(repo: Path, client) -> None:
    with mlflow.start_run() as first:
        pass
    key, (stamp, _) = next(iter(mlflow_plugin._cache.items()))
    with mlflow.start_run() as second:
        pass
    assert mlflow_plugin._cache[key][0] == stamp  # the second run reused the first's tags
    for run in (first, second):
        assert client.get_run(run.info.run_id).data.tags["mltrail.git.dirty"] == "false"


def test_never_breaks_run_creation(repo: Path, client, tmp_path: Path, monkeypatch) -> None:
    (repo / "dvc.lock").write_text("stages: [this is: not valid")
    empty = tmp_path / "nobin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with mlflow.start_run() as run:
        pass
    tags = client.get_run(run.info.run_id).data.tags
    assert (
        tags["mlflow.source.git.commit"]
        == (repo / ".git" / "refs" / "heads" / "main").read_text().strip()
    )
    assert tags["mltrail.git.unavailable"].startswith("the git executable was not found")
    assert tags["mltrail.dvc.out.data.csv"] == data_md5(repo)
    # A working directory that no longer exists: no tags, no exception.
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    provider = mlflow_plugin.TrailContextProvider()
    assert provider.in_context() is False and provider.tags() == {}


def test_mlflow_autolog_runs(repo: Path, client) -> None:
    import numpy as np
    from sklearn.linear_model import LinearRegression

    mlflow.sklearn.autolog(log_models=False, log_datasets=False, silent=True)
    try:
        LinearRegression().fit(np.arange(8.0).reshape(4, 2), np.arange(4.0))
    finally:
        mlflow.sklearn.autolog(disable=True)
    run = mlflow.last_active_run()
    assert run is not None
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["mltrail.git.dirty"] == "false"
    assert tags["mltrail.dvc.out.data.csv"] == data_md5(repo)


def test_lightning_mlflow_logger(repo: Path, client, module_store: str) -> None:
    from lightning.pytorch.loggers import MLFlowLogger

    logger = MLFlowLogger(experiment_name="lightning", tracking_uri=module_store)
    try:
        run_id = logger.run_id
    finally:
        mlflow.set_tracking_uri(None)  # the logger sets MLflow's global URI; later tests use theirs
    tags = client.get_run(run_id).data.tags
    assert tags["mlflow.source.git.commit"] == sh(repo, "git", "rev-parse", "HEAD")
    assert tags["mltrail.git.dirty"] == "false"
    assert tags["mltrail.dvc.out.data.csv"] == data_md5(repo)


def test_mltrail_runs_do_not_go_through_the_provider(repo: Path, client) -> None:
    with mltrail.start_run(experiment="own", system_metrics=False) as trail:
        pass
    assert mlflow_plugin._cache == {}  # mltrail creates its runs without MLflow's providers
    tags = client.get_run(trail.run_id).data.tags
    assert tags["mltrail.git.dirty"] == "false" and "mltrail.dvc.data_dirty" in tags


def test_python_c_gets_the_commit_of_the_working_directory(
    repo: Path, module_store: str, client
) -> None:
    code = "import mlflow\nwith mlflow.start_run() as run:\n    print(run.info.run_id)\n"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo,
        env={**ENV, "MLFLOW_TRACKING_URI": module_store},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert "Failure attempting to register context provider" not in result.stderr
    tags = client.get_run(result.stdout.strip().splitlines()[-1]).data.tags
    assert tags["mlflow.source.git.commit"] == sh(repo, "git", "rev-parse", "HEAD")
    assert tags["mltrail.git.dirty"] == "false"
