"""Runs end off the training's thread: ``fit`` returns, the run is closed in the background, and
the process waits for it once, at exit. Real scripts, run as a user runs them (subprocesses with
the default options), then read back from the store."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pytest
from tests.conftest import git, user_env

import mltrail

pytest.importorskip("sklearn")
xgb = pytest.importorskip("xgboost")

QUIET = {"MLTRAIL_SYSTEM_METRICS": "false"}


def run_script(folder: Path, body: str, **env: str) -> subprocess.CompletedProcess:
    script = folder / "train.py"
    script.write_text(textwrap.dedent(body))
    if not (folder / ".git").exists():
        git(folder, "init", "-q")
    git(folder, "add", "train.py")
    git(folder, "commit", "-q", "-m", "train", check=False)
    return subprocess.run(
        [sys.executable, "train.py"],
        cwd=folder,
        env=user_env(**{**QUIET, **env}),
        capture_output=True,
        text=True,
        timeout=300,
    )


def runs_of(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def artifact_paths(client, run_id: str, folder: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, folder):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_a_loop_of_trainings_that_exits_right_after_loses_nothing(client, tmp_path) -> None:
    done = run_script(
        tmp_path,
        """
        import numpy as np
        import xgboost as xgb
        from mltrail.integrations.xgboost import TrailCallback

        rng = np.random.default_rng(0)
        X = rng.normal(size=(300, 5))
        y = (X[:, 0] > 0).astype(int)
        dtrain, dval = xgb.DMatrix(X[:200], label=y[:200]), xgb.DMatrix(X[200:], label=y[200:])
        booster = None
        for part in range(3):
            booster = xgb.train(
                {"objective": "binary:logistic", "max_depth": 2}, dtrain, num_boost_round=4,
                evals=[(dval, "val")], xgb_model=booster,
                callbacks=[TrailCallback(experiment="loop")],
            )
        print("trained", booster.num_boosted_rounds())
        """,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained 12" in done.stdout
    runs = runs_of(client, "loop")
    assert [run.info.status for run in runs] == ["FINISHED"] * 3
    for index, run in enumerate(runs):
        files = artifact_paths(client, run.info.run_id)
        assert {"model/MLmodel", "mltrail/provenance.json"} <= files, files
        assert "xgboost/feature_importance.png" in files
        assert run.data.tags["mltrail.fingerprint"]
        history = client.get_metric_history(run.info.run_id, "val-logloss")
        # Continued trainings continue the steps: 4 rounds each, after the ones before.
        assert [m.step for m in history] == list(range(4 * index, 4 * index + 4))


def test_a_script_that_fails_after_its_trainings_keeps_their_runs(client, tmp_path) -> None:
    done = run_script(
        tmp_path,
        """
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        from mltrail.integrations.sklearn import TrackedEstimator

        X, y = load_iris(return_X_y=True)
        for c in (0.1, 1.0):
            TrackedEstimator(LogisticRegression(C=c, max_iter=300), experiment="dies").fit(X, y)
        raise RuntimeError("the report step failed")
        """,
    )
    assert done.returncode == 1
    assert "the report step failed" in done.stderr
    runs = runs_of(client, "dies")
    # The trainings ended well before the script failed: their runs are complete and FINISHED.
    assert [run.info.status for run in runs] == ["FINISHED", "FINISHED"], done.stderr[-4000:]
    assert sorted(run.data.params["estimator__C"] for run in runs) == ["0.1", "1.0"]
    for run in runs:
        assert "model/MLmodel" in artifact_paths(client, run.info.run_id)


def test_a_fit_recorded_at_exit_gets_its_snapshot(client, tmp_path) -> None:
    """The last fit of a script is recorded at exit, after the exit hooks that clean up: its
    snapshot of the dirty tree still needs the temporary index those hooks removed."""
    done = run_script(
        tmp_path,
        """
        from pathlib import Path
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        import mltrail
        from mltrail.integrations.sklearn import TrackedEstimator

        X, y = load_iris(return_X_y=True)
        Path("notes.txt").write_text("first")
        TrackedEstimator(LogisticRegression(C=0.1, max_iter=300), experiment="at-exit").fit(X, y)
        mltrail.wait()  # the first fit's snapshot is taken before the script goes on
        Path("notes.txt").write_text("second")
        TrackedEstimator(LogisticRegression(C=1.0, max_iter=300), experiment="at-exit").fit(X, y)
        """,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "snapshot failed" not in done.stderr, done.stderr[-3000:]
    runs = runs_of(client, "at-exit")
    assert [run.info.status for run in runs] == ["FINISHED", "FINISHED"]
    snapshots = [run.data.tags.get("mltrail.git.snapshot") for run in runs]
    assert all(snapshots) and snapshots[0] != snapshots[1], snapshots


SLOW_MODEL = """
    import os, time
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from mltrail.integrations.sklearn import TrackedEstimator


    class SlowToSave(LogisticRegression):
        # A model that takes a while to serialise, like a large one.
        def __getstate__(self):
            time.sleep(2.0)
            return super().__getstate__()


    X, y = load_iris(return_X_y=True)
    started = time.monotonic()
    TrackedEstimator(SlowToSave(max_iter=300), experiment=os.environ["EXPERIMENT"]).fit(X, y)
    print(f"fit returned after {time.monotonic() - started:.1f} s")
"""


def test_exit_waits_for_the_run_being_closed_and_says_so_once(client, tmp_path) -> None:
    done = run_script(tmp_path, SLOW_MODEL, EXPERIMENT="slow-save")
    assert done.returncode == 0, done.stderr[-3000:]
    waiting = [line for line in done.stderr.splitlines() if "before exiting" in line]
    assert len(waiting) == 1, done.stderr[-3000:]
    # The fit is recorded after it returned (its run may not even exist yet at exit).
    assert "1 training(s)" in waiting[0] or "1 run(s)" in waiting[0], waiting[0]
    assert "599 s" not in waiting[0] and "600 s" not in waiting[0], waiting[0]  # no backstop
    (run,) = runs_of(client, "slow-save")
    assert run.info.status == "FINISHED"
    assert "model/MLmodel" in artifact_paths(client, run.info.run_id)


def test_ending_on_the_training_thread_when_asked(client, tmp_path) -> None:
    done = run_script(
        tmp_path, SLOW_MODEL, EXPERIMENT="slow-save-here", MLTRAIL_END_IN_BACKGROUND="false"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The model was saved before fit returned: nothing is left to wait for at exit.
    assert "before exiting" not in done.stderr
    (run,) = runs_of(client, "slow-save-here")
    assert run.info.status == "FINISHED"


def test_already_run_error_sees_the_earlier_training_of_the_same_process(client, tmp_path) -> None:
    done = run_script(
        tmp_path,
        """
        import numpy as np
        import xgboost as xgb
        from mltrail.integrations.xgboost import TrailCallback

        rng = np.random.default_rng(0)
        X = rng.normal(size=(200, 4))
        y = (X[:, 0] > 0).astype(int)
        for attempt in range(2):
            print("attempt", attempt, flush=True)
            model = xgb.XGBClassifier(
                n_estimators=3, callbacks=[TrailCallback(experiment="twice", log_model=False)]
            )
            model.fit(X, y)
        """,
        MLTRAIL_ALREADY_RUN="error",
    )
    # The first run was still being closed when the second started: the check waited for it.
    assert done.returncode == 1
    assert "attempt 1" in done.stdout
    assert "This experiment was already run" in done.stderr
    statuses = sorted(run.info.status for run in runs_of(client, "twice"))
    assert statuses == ["FAILED", "FINISHED"]


def test_wait_returns_once_the_runs_are_closed(client, monkeypatch) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from mltrail.integrations.sklearn import TrackedEstimator

    monkeypatch.setenv("MLTRAIL_END_IN_BACKGROUND", "true")
    monkeypatch.setenv("MLTRAIL_SYSTEM_METRICS", "false")
    X, y = load_iris(return_X_y=True)
    model = TrackedEstimator(LogisticRegression(max_iter=300), experiment="wait").fit(X, y)
    assert mltrail.wait(timeout=120)
    run = client.get_run(model.run_id_)
    assert run.info.status == "FINISHED"
    assert "model/MLmodel" in artifact_paths(client, run.info.run_id)
    assert mltrail.wait(timeout=0)  # nothing left: returns at once


def test_autolog_records_each_fit_of_a_reused_estimator_after_it_returns(client, tmp_path) -> None:
    # A fold loop refitting one estimator object, then the script ends at once: each fold's
    # run gets the model of its own fold, though the runs are recorded after the fits.
    done = run_script(
        tmp_path,
        """
        import json
        import numpy as np
        import mltrail
        from sklearn.linear_model import LogisticRegression

        mltrail.autolog(experiment="folds")
        rng = np.random.default_rng(0)
        X = rng.normal(size=(300, 4))
        y = (X[:, 0] + X[:, 1] > 0).astype(int)
        model = LogisticRegression(max_iter=300)
        coefs = []
        for fold in range(3):
            rows = slice(100 * fold, 100 * fold + 100)
            model.fit(X[rows] * (fold + 1), y[rows])
            coefs.append(model.coef_.ravel().tolist())
        print(json.dumps(coefs))
        """,
        MLTRAIL_SYSTEM_METRICS="true",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    coefs = json.loads(done.stdout.strip().splitlines()[-1])
    runs = runs_of(client, "folds")
    assert [run.info.status for run in runs] == ["FINISHED"] * 3
    for run, coef in zip(runs, coefs, strict=True):
        assert run.data.params["C"] == "1.0"
        assert run.data.params["data.train.shape"] == "100x4"
        assert "train/accuracy" in run.data.metrics
        # Opened after its fit: samples would describe the recording, not the fit.
        assert not [name for name in run.data.metrics if name.startswith("system/")]
        loaded = mlflow.sklearn.load_model(f"runs:/{run.info.run_id}/model")
        assert np.allclose(loaded.coef_.ravel(), coef)


def test_a_failed_fit_recorded_after_it_raised_is_failed(client, tmp_path) -> None:
    done = run_script(
        tmp_path,
        """
        import numpy as np
        import mltrail
        from sklearn.linear_model import LogisticRegression

        mltrail.autolog(experiment="bad-fit")
        X = np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 0.0]])
        try:
            LogisticRegression().fit(X, [0, 1, 0])
        except ValueError as error:
            print("caught", type(error).__name__)
        """,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "caught ValueError" in done.stdout
    (run,) = runs_of(client, "bad-fit")
    assert run.info.status == "FAILED"
    assert run.data.tags["mltrail.exception.type"] == "ValueError"
    assert run.data.params["data.train.shape"] == "3x2"


def test_run_id_and_score_right_after_a_fit_recorded_later(client, tmp_path) -> None:
    done = run_script(
        tmp_path,
        """
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        from mltrail.integrations.sklearn import TrackedEstimator

        X, y = load_iris(return_X_y=True)
        model = TrackedEstimator(LogisticRegression(max_iter=300), experiment="then-score")
        model.fit(X, y)
        print("score", model.score(X, y))
        print("run", model.run_id_)
        """,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    (run,) = runs_of(client, "then-score")
    assert run.info.run_id == lines["run"]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["score_1"] == pytest.approx(float(lines["score"]))


def test_a_long_fit_shows_its_run_while_it_runs(client, tmp_path) -> None:
    done = run_script(
        tmp_path,
        """
        import time
        import mlflow
        from sklearn.base import BaseEstimator, ClassifierMixin
        from mltrail.integrations.sklearn import TrackedEstimator


        class Slow(ClassifierMixin, BaseEstimator):
            def fit(self, X, y):
                # The run is opened 2 s into the fit (once MLflow is imported): wait for it.
                runs, deadline = [], time.monotonic() + 120
                while not runs and time.monotonic() < deadline:
                    time.sleep(0.5)
                    experiment = mlflow.get_experiment_by_name("long-fit")
                    if experiment is not None:
                        runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
                print("during", [run.info.status for run in runs], flush=True)
                time.sleep(1.5)  # system metrics sampled while the fit runs
                self.classes_ = sorted(set(y))
                return self

            def predict(self, X):
                return [self.classes_[0]] * len(X)


        TrackedEstimator(Slow(), experiment="long-fit").fit([[0.0], [1.0]], [0, 1])
        """,
        MLTRAIL_SYSTEM_METRICS="true",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "during ['RUNNING']" in done.stdout, done.stdout
    (run,) = runs_of(client, "long-fit")
    assert run.info.status == "FINISHED", (run.data.tags, done.stderr[-3000:])
    assert [name for name in run.data.metrics if name.startswith("system/")]
    assert run.data.params["data.train.shape"] == "2x1"
