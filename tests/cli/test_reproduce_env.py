"""`mltrail reproduce --env rebuild|current|PATH` and `mltrail env`: a run recorded in a small
environment (a pure-Python project installed editable, six 1.16.0 from the registry, and a
package the registry does not have) is rerun in its rebuilt environment, in this one (six
1.17.0 here) and in a prepared one."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from tests.conftest import git, user_env

from mltrail.cli import main
from mltrail.errors import MltrailError
from mltrail.restore import checkout as restore
from mltrail.restore import rebuild, reproduce

PYPROJECT = """\
[build-system]
requires = ["flit_core>=3.4,<4"]
build-backend = "flit_core.buildapi"

[project]
name = "demo-project"
version = "0.3.0"
description = "A pure-Python project"
"""
DEMO = """\
def loss(n):
    return sum(1.0 / (k * k) for k in range(1, n + 1))
"""
TRAIN = """\
import sys

import six

import demo_project
import mltrail

n = int(sys.argv[sys.argv.index("--n") + 1])
with mltrail.start_run(experiment="reproduce-env", system_metrics=False) as trail:
    trail.log_params({"n": n})
    # The metric depends on the environment: six's minor version.
    trail.log_metrics({"loss": demo_project.loss(n), "six_minor": float(six.__version__.split(".")[1])})
"""
#: A package of the run that no registry has (a private one).
PRIVATE = "mltrail-test-unpublished"


def _installed(purelib: Path, name: str, version: str, editable: Path | None = None) -> None:
    """What pip leaves of an install: a dist-info folder (and, editable, a .pth file)."""
    info = purelib / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text(f"{info.name}/METADATA,,\n{info.name}/INSTALLER,,\n")
    if editable is not None:
        url = {"url": editable.as_uri(), "dir_info": {"editable": True}}
        (info / "direct_url.json").write_text(json.dumps(url))
        (purelib / f"__editable__.{name}.pth").write_text(f"{editable}\n")


@pytest.fixture(scope="module")
def original(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A run of train.py made in a small environment of its own."""
    base = tmp_path_factory.mktemp("reproduce-env")
    repo = base / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "pyproject.toml").write_text(PYPROJECT)
    (repo / "demo_project.py").write_text(DEMO)
    (repo / "train.py").write_text(TRAIN)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    # The run's environment: six 1.16.0, the project (editable), a private package, mltrail.
    env = rebuild.ensure("six==1.16.0\n", platform.python_version(), cache=base / "envs-of-runs")
    assert env.installed == ["six==1.16.0"] and not env.not_installed
    purelib = next((env.folder / "lib").glob("python*/site-packages"))
    _installed(purelib, PRIVATE, "0.0.1")
    _installed(purelib, "demo-project", "0.3.0", editable=repo)  # as `pip install -e` would
    spool = str(base / "spool")
    done = subprocess.run(
        [env.python, "train.py", "--n", "3"],
        cwd=repo,
        env=user_env(MLFLOW_TRACKING_URI=module_store, MLTRAIL_SPOOL_DIR=spool),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(module_store)
    [run] = client.search_runs([client.get_experiment_by_name("reproduce-env").experiment_id])
    assert run.data.metrics["six_minor"] == 16.0
    return {"repo": repo, "run": run, "env": env, "cache": base / "envs"}


def _reruns(client, run) -> list:
    return client.search_runs(
        [run.info.experiment_id],
        f"tags.`{reproduce.TAG}` = '{run.info.run_id}'",
        order_by=["attributes.start_time DESC"],
    )


# Installs from the registry and a training in a subprocess: slow on a busy machine.
@pytest.mark.timeout(900)
def test_rebuild_reruns_in_the_recorded_environment(
    original: dict, capfd, client, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(original["repo"])
    run = original["run"]
    assert metadata.version("six") != "1.16.0"  # this environment has another six
    target = tmp_path / "rerun"
    cache = original["cache"]
    code = main(
        ["reproduce", run.info.run_id[:8], "--env", "rebuild", "--env-cache", str(cache),
         "--into", str(target)]
    )  # fmt: skip
    out = capfd.readouterr().out
    assert code == 0, out
    [venv] = cache.glob("py*/venv")
    assert f"Creating a Python {sys.version_info[0]}.{sys.version_info[1]} environment" in out
    assert f"Running in {target}: {venv}/bin/python train.py --n 3" in out
    assert f"not installed: {PRIVATE}==0.0.1 (" in out  # listed, and the rest went on
    assert "MATCH (rtol=1e-06, atol=1e-09)" in out
    # Compared with the run's packages, only the one that could not be installed differs.
    differ = out.split("Packages that differ from the run's (1):", 1)[1].splitlines()
    assert differ[2].split() == [PRIVATE, "0.0.1", "-"]
    [rerun] = _reruns(client, run)
    assert rerun.info.status == "FINISHED"
    assert rerun.data.metrics["six_minor"] == 16.0  # six 1.16.0, as the run had
    assert rerun.data.metrics["loss"] == run.data.metrics["loss"]
    record = restore.load_run(client, client.tracking_uri, rerun.info.run_id)
    requirements = record.requirements(client)
    assert "six==1.16.0" in requirements.splitlines()
    # The project was installed from the restored code, not from its recorded folder.
    assert f"# Editable install (demo-project==0.3.0)\n-e {target}\n" in requirements
    assert record.environment["python"]["prefix"] == str(venv)
    # six came from the registry into the venv; MLflow, at this installation's version, is
    # linked from here instead of downloaded.
    purelib = next((venv / "lib").glob("python*/site-packages"))
    assert (purelib / "six.py").is_file() and not (purelib / "mlflow").exists()
    assert (venv.parent / "overlay" / "mlflow").is_symlink()


def test_a_second_rebuild_reuses_the_environment(original: dict, client) -> None:
    cache = original["cache"]
    record = restore.load_run(client, client.tracking_uri, original["run"].info.run_id)
    if not list(cache.glob("py*/venv")):  # this test alone: make it first
        rebuild.rebuild(record, client, cache, progress=[].append)
    [venv] = cache.glob("py*/venv")
    again = rebuild.rebuild(record, client, cache, progress=[].append)
    # Nothing to install but what failed before.
    assert again.reused and again.folder == venv and again.installed == []
    assert [item["requirement"] for item in again.not_installed] == [f"{PRIVATE}==0.0.1"]


def test_current_environment_reports_the_changed_package(
    original: dict, capfd, client, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(original["repo"])
    run = original["run"]
    code = main(
        ["reproduce", run.info.run_id, "--env", "current", "--into", str(tmp_path / "r"), "--json"]
    )
    data = json.loads(capfd.readouterr().out)
    assert code == 1 and data["verdict"] == "MISMATCH"
    assert data["environment"]["kind"] == "current"
    assert data["environment"]["python"] == sys.executable
    six = metadata.version("six")
    assert {"name": "six", "original": "1.16.0", "rerun": six} in data["packages"]
    assert {
        "key": "six_minor",
        "original": 16.0,
        "rerun": float(six.split(".")[1]),
        "ok": False,
    } in data["metrics"]


def test_a_prepared_environment_is_used_as_it_is(
    original: dict, capfd, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(original["repo"])
    run_id = original["run"].info.run_id
    prepared = original["env"].folder
    # A command after -- finds the environment's python first on PATH.
    show = "import six, sys; print('prefix', sys.prefix, 'six', six.__version__)"
    code = main(
        ["reproduce", run_id, "--env", str(prepared), "--into", str(tmp_path / "r"), "--",
         "python", "-c", show]
    )  # fmt: skip
    out = capfd.readouterr().out
    assert f"Using the environment {prepared} (Python {platform.python_version()})" in out
    assert f"prefix {prepared} six 1.16.0" in out
    assert code == 1 and "logged no mltrail run" in out  # the command records none

    code = main(["reproduce", run_id, "--env", str(tmp_path)])
    assert code == 2
    assert "no Python there" in capfd.readouterr().err
    assert main(["reproduce", run_id, "--env", "rebuilt"]) == 2
    assert "neither rebuild, current, nor an existing" in capfd.readouterr().err


def test_a_missing_python_names_what_to_install() -> None:
    with pytest.raises(MltrailError, match=r"no python3\.99 was found.*uv python install 3\.99"):
        rebuild.find_python("3.99.1")
    assert rebuild.find_python(platform.python_version()) == sys.executable


def test_env_writes_the_run_requirements(original: dict, capsys, tmp_path: Path) -> None:
    run_id = original["run"].info.run_id
    output = tmp_path / "requirements.txt"
    assert main(["env", run_id[:8], "--output", str(output)]) == 0
    assert f"to {output}" in capsys.readouterr().out
    lines = output.read_text().splitlines()
    assert lines[0] == (
        f"# The packages of mltrail run {run_id} (Python {platform.python_version()})."
    )
    assert "six==1.16.0" in lines and f"{PRIVATE}==0.0.1" in lines
    assert f"# -e {original['repo']}  (editable: install this project from its code)" in lines

    assert main(["env", run_id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema_version"] == 1 and data["python"]["version"] == platform.python_version()
    assert {"name": "six", "version": "1.16.0"} in data["packages"]
    assert {"name": "demo-project", "version": "0.3.0", "path": str(original["repo"])} in data[
        "editable"
    ]
    assert main(["env", "0123456789abcdef"]) == 2


def test_a_run_without_an_environment_record_cannot_be_rebuilt(capsys) -> None:
    import mltrail

    with mltrail.start_run(
        experiment="reproduce-env-none", system_metrics=False, capture=False
    ) as trail:
        trail.log_metrics({"acc": 1.0})
    assert main(["reproduce", trail.run_id, "--env", "rebuild"]) == 2
    assert (
        "recorded no Python version: its environment cannot be rebuilt" in capsys.readouterr().err
    )
    assert main(["env", trail.run_id]) == 2
    assert "recorded no package list" in capsys.readouterr().err
