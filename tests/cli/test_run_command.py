"""`mltrail run -- COMMAND`: unmodified scripts recorded through the start-up hook, with their
arguments, exit codes and signals passed through; the same variables for other launchers."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tests.conftest import user_env

from mltrail.cli import main

MLTRAIL = str(Path(sys.executable).with_name("mltrail"))

# An unmodified training script: it knows nothing of mltrail.
TRAIN = """
    import json, sys
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=int(sys.argv[1])).fit(X, y)
    with open("argv.json", "w") as out:
        json.dump(sys.argv[1:], out)
    sys.exit(int(sys.argv[2]))
"""

# Trains until it is stopped; writes "started" once the first round is done.
SLOW = """
    import pathlib, time
    import numpy as np
    import xgboost as xgb

    class Slow(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            pathlib.Path("started").touch()
            time.sleep(0.2)
            return False

    X = np.random.default_rng(0).normal(size=(64, 3))
    xgb.train({"max_depth": 1}, xgb.DMatrix(X, label=X[:, 0] > 0), 10_000, callbacks=[Slow()])
"""

FAST_OPTIONS = ["-o", "log_model=false", "-o", "log_plots=false", "-o", "system_metrics=false"]


def runs_of(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def mltrail_run(*args: str, cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MLTRAIL, "run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        **{"env": user_env(), **kwargs},
    )


def test_script_gets_its_arguments_and_exit_code_and_is_recorded(client, tmp_path) -> None:
    write(tmp_path / "train.py", TRAIN)
    done = mltrail_run(
        "--experiment", "zero-code", *FAST_OPTIONS,
        "--", "python", "train.py", "300", "3", "--api-token", "s3cr3t-value",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-3000:]
    assert json.loads((tmp_path / "argv.json").read_text()) == [
        "300", "3", "--api-token", "s3cr3t-value",
    ]  # fmt: skip
    (run,) = runs_of(client, "zero-code")
    assert run.info.status == "FINISHED"
    assert run.data.params["max_iter"] == "300"
    assert "train/accuracy" in run.data.metrics
    assert run.data.tags["mltrail.command"] == "python train.py 300 3 --api-token '***'"
    assert run.data.tags["mlflow.source.name"].endswith("train.py")
    assert "s3cr3t-value" not in json.dumps(run.data.tags)


def test_a_script_with_its_own_callback_gets_the_command_tag(client, tmp_path) -> None:
    """A script that records explicitly is not doubled by autolog, and its run still says
    which command line made it."""
    pytest.importorskip("xgboost")
    write(tmp_path / "train.py", """
        import sys
        import numpy as np
        import xgboost as xgb
        from mltrail.integrations.xgboost import TrailCallback

        X = np.random.default_rng(0).normal(size=(64, 3))
        callback = TrailCallback(experiment="explicit-under-run", log_model=False)
        xgb.train({"max_depth": 1}, xgb.DMatrix(X, label=X[:, 0] > 0), 2, callbacks=[callback])
    """)  # fmt: skip
    done = mltrail_run(*FAST_OPTIONS, "--", "python", "train.py", "--lr", "0.1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs_of(client, "explicit-under-run")
    assert run.data.tags["mltrail.command"] == "python train.py --lr 0.1"


def test_python_dash_m_module_is_recorded(client, tmp_path) -> None:
    write(tmp_path / "project" / "__init__.py", "")
    write(tmp_path / "project" / "train.py", TRAIN)
    done = mltrail_run(
        "--experiment", "zero-code-m", "--run-name", "as-module", *FAST_OPTIONS,
        "--", "python", "-m", "project.train", "200", "0",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs_of(client, "zero-code-m")
    assert run.info.run_name == "as-module"
    assert run.data.tags["mltrail.command"] == "python -m project.train 200 0"
    assert run.data.params["max_iter"] == "200"


@pytest.mark.parametrize(
    ("sent", "returncode"), [(signal.SIGINT, -signal.SIGINT), (signal.SIGTERM, -signal.SIGTERM)]
)
def test_signals_reach_the_job_and_the_run_ends_killed(client, tmp_path, sent, returncode) -> None:
    pytest.importorskip("xgboost")
    write(tmp_path / "slow.py", SLOW)
    experiment = f"zero-code-{sent.name}"
    process = subprocess.Popen(
        [MLTRAIL, "run", "--experiment", experiment, *FAST_OPTIONS, "--", "python", "slow.py"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 180
    while not (tmp_path / "started").exists():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.time() < deadline, "training did not start"
        time.sleep(0.2)
    process.send_signal(sent)  # to `mltrail run`'s pid: the job's own, after exec
    assert process.wait(timeout=120) == returncode, process.stderr.read()[-3000:]
    (run,) = runs_of(client, experiment)
    assert run.info.status == "KILLED"


def test_environment_variables_record_jobs_of_other_launchers(client, tmp_path) -> None:
    """`eval "$(mltrail run --print-env ...)"` in a job script: plain `python train.py` records."""
    write(tmp_path / "train.py", TRAIN)
    exports = mltrail_run("--print-env", "--experiment", "launched", *FAST_OPTIONS)
    assert exports.returncode == 0, exports.stderr
    assert "export MLTRAIL_AUTOLOG=1" in exports.stdout.splitlines()
    job = f"{exports.stdout}\n{shlex.quote(sys.executable)} train.py 100 0 && echo trained\n"
    done = subprocess.run(
        ["bash", "-c", job], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr[-3000:]
    (run,) = runs_of(client, "launched")
    assert run.data.params["max_iter"] == "100"
    assert "mltrail.command" not in run.data.tags  # no command given to --print-env

    # MLTRAIL_AUTOLOG_FRAMEWORKS leaves other frameworks alone.
    env = user_env(**_exports(exports.stdout), MLTRAIL_AUTOLOG_FRAMEWORKS="xgboost")
    subprocess.run(
        [sys.executable, "train.py", "100", "0"], cwd=tmp_path, env=env, check=True, timeout=240
    )
    assert len(runs_of(client, "launched")) == 1


def _exports(text: str) -> dict[str, str]:
    pairs = (shlex.split(line)[1].split("=", 1) for line in text.splitlines() if line)
    return dict(pairs)


def test_the_hook_keeps_an_existing_sitecustomize(client, tmp_path) -> None:
    site = write(
        tmp_path / "site" / "sitecustomize.py",
        "import pathlib; pathlib.Path('their-hook-ran').touch()\n",
    )
    env = {**os.environ, "PYTHONPATH": str(site.parent)}
    probe = "from mltrail.autolog import enabled_frameworks as e; print(sorted(e()))"
    done = mltrail_run(
        "--frameworks", "sklearn,xgboost", "--", "python", "-c", probe, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['sklearn', 'xgboost']"
    assert (tmp_path / "their-hook-ran").exists()


def test_mistakes_are_named(capsys) -> None:
    assert main(["run"]) == 2
    assert "Give the command to run after --" in capsys.readouterr().err
    assert main(["run", "--frameworks", "torch", "--", "python", "x.py"]) == 2
    assert "Unknown framework 'torch'" in capsys.readouterr().err
    assert main(["run", "-o", "log_modle=false", "--", "python", "x.py"]) == 2
    assert "Did you mean 'log_model'" in capsys.readouterr().err
    assert main(["run", "--", "no-such-command-here"]) == 127
    assert "command not found" in capsys.readouterr().err
