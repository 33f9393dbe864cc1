"""mltrail's recorder process: a script's runs recorded outside its interpreter.

Real scripts run as users run them (subprocesses in a git repository, a real sqlite store):
the runs hold what the in-process recording gives them, the script's process never imports
MLflow, and a training process that dies or is interrupted leaves no run RUNNING.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tests.conftest import git, user_env

pytest.importorskip("xgboost")

TRAINING = """
import json, os, sys
import numpy as np
import xgboost as xgb
from mltrail.integrations.xgboost import TrailCallback

rng = np.random.default_rng(0)
x = rng.normal(size=(300, 4))
y = (x[:, 0] + x[:, 1] > 0).astype(int)
dtrain, dval = xgb.DMatrix(x[:200], label=y[:200]), xgb.DMatrix(x[200:], label=y[200:])
params = {"objective": "binary:logistic", "max_depth": 2, "eta": 0.3}
"""

CONTINUED = (
    TRAINING
    + """
runs, booster = [], None
for part in range(2):
    callback = TrailCallback(experiment="recorder")
    booster = xgb.train(params, dtrain, 5, evals=[(dval, "val")], verbose_eval=False,
                        xgb_model=booster, callbacks=[callback])
    runs.append(callback.run_id)
print(json.dumps({"pid": os.getpid(), "runs": runs, "mlflow": "mlflow" in sys.modules}))
"""
)

# Rounds that wait for the test's signal once the run is open.
STOPPED = (
    TRAINING
    + """
import time
class Slow(xgb.callback.TrainingCallback):
    def __init__(self, outer):
        self.outer = outer
    def after_iteration(self, model, epoch, evals_log):
        if epoch == 2:
            print(self.outer.run_id, flush=True)
        time.sleep(0.2)
        return False
callback = TrailCallback(experiment="recorder", log_model=False, importance=False)
xgb.train(params, dtrain, 1000, evals=[(dval, "val")], verbose_eval=False,
          callbacks=[callback, Slow(callback)])
"""
)


def run_in(project: Path, store: str, *command: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``command`` in the project as a user would, and check that it succeeded."""
    done = subprocess.run(
        command,
        cwd=project,
        env=user_env(MLFLOW_TRACKING_URI=store, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture
def project(git_repo: Path) -> Path:
    (git_repo / "train.py").write_text(textwrap.dedent(CONTINUED))
    (git_repo / "stopped.py").write_text(textwrap.dedent(STOPPED))
    git(git_repo, "add", ".")
    git(git_repo, "commit", "-q", "-m", "scripts")
    return git_repo


def test_a_script_s_runs_are_recorded_in_the_recorder_process(client, project, module_store):
    done = run_in(project, module_store, sys.executable, "train.py")
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert not seen["mlflow"]  # the training's process never imported MLflow
    head = git(project, "rev-parse", "HEAD")
    for index, run_id in enumerate(seen["runs"]):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run_id, "val-logloss")]
        assert steps == list(range(5 * index, 5 * index + 5))  # the second one continues
        assert run.data.params["max_depth"] == "2"
        tags = run.data.tags
        assert tags["mltrail.pid"] == str(seen["pid"])  # the training's process, not ours
        assert tags["mltrail.framework"] == "xgboost"
        assert tags["mlflow.source.git.commit"] == head
        assert tags["mltrail.git.dirty"] == "false"
        assert tags["mlflow.source.name"].endswith("train.py")  # the script, as in-process
        paths = {a.path for a in client.list_artifacts(run_id)}
        assert {"model", "xgboost", "mltrail"} <= paths
        # The training's times, not those at which the recorder took the calls.
        stamps = [m.timestamp for m in client.get_metric_history(run_id, "val-logloss")]
        assert all(run.info.start_time <= t <= run.info.end_time for t in stamps), stamps
    assert client.get_run(seen["runs"][1]).data.tags["mltrail.xgboost.initial_rounds"] == "5"


@pytest.mark.parametrize(
    ("stop", "status"), [(signal.SIGKILL, "FAILED"), (signal.SIGINT, "KILLED")]
)
def test_a_stopped_training_process_leaves_no_run_running(
    client, project, module_store, stop, status
):
    script = subprocess.Popen(
        [sys.executable, "stopped.py"],
        cwd=project,
        env=user_env(MLFLOW_TRACKING_URI=module_store),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = script.stdout.readline().strip()  # the run is open, the training goes on
        assert run_id, script.stderr.read()[-3000:]
        os.kill(script.pid, stop)
        script.wait(120)
    finally:
        if script.poll() is None:
            script.kill()
    deadline = time.monotonic() + 120  # a killed process's recorder finishes on its own
    while client.get_run(run_id).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    run = client.get_run(run_id)
    assert run.info.status == status
    assert len(client.get_metric_history(run_id, "val-logloss")) >= 3  # its rounds were kept
    if stop == signal.SIGKILL:
        assert "process exited" in run.data.tags["mltrail.exception.message"]
    else:
        assert run.data.tags["mltrail.exception.type"] == "KeyboardInterrupt"


def test_under_mltrail_run_the_recorder_starts_when_the_framework_is_imported(
    client, project, module_store
):
    """It imports MLflow and opens the store while the script goes on, ready for the first
    training; a script that trains nothing leaves no run and exits as it would."""
    (project / "imports.py").write_text(
        textwrap.dedent("""
        import json, os, time, psutil, xgboost
        children = psutil.Process().children()
        idle = False
        for _ in range(100):  # the recorder takes the idle class first thing
            idle = any(os.sched_getscheduler(p.pid) == os.SCHED_IDLE for p in children)
            if idle:
                break
            time.sleep(0.05)
        sessions = {os.getsid(p.pid) for p in children}
        print(json.dumps({"children": [" ".join(p.cmdline()) for p in children], "idle": idle,
                          "same_session": sessions == {os.getsid(0)},
                          "own_group": all(os.getpgid(p.pid) != os.getpgid(0) for p in children)}))
        """)
    )
    before = len(client.search_runs(["0"], max_results=100))
    mltrail = str(Path(sys.executable).parent / "mltrail")
    done = run_in(project, module_store, mltrail, "run", "--", sys.executable, "imports.py")
    assert done.stderr == ""
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert any("mltrail.recording.recorder" in command for command in seen["children"])
    assert seen["idle"]  # it only takes what the training leaves idle
    # Linux schedules a session's processes as one group: in a session of its own the idle
    # class would only rank it among its own threads, and it took half the CPU.
    assert seen["same_session"]
    assert seen["own_group"]  # a Ctrl-C at the terminal is the training's alone
    assert len(client.search_runs(["0"], max_results=100)) == before


def test_an_adapter_error_in_the_training_process_is_counted_in_the_run(
    client, project, module_store
):
    (project / "broken.py").write_text(
        textwrap.dedent(TRAINING)
        + textwrap.dedent("""
        import mltrail.integrations.xgboost as adapter

        def broken(*args, **kwargs):
            raise RuntimeError("configuration unreadable")

        adapter._config_params = broken  # fails in the training's process, in a hook
        callback = TrailCallback(experiment="recorder", log_model=False, importance=False)
        xgb.train(params, dtrain, 3, evals=[(dval, "val")], verbose_eval=False,
                  callbacks=[callback])
        print(callback.run_id)
        """)
    )
    done = run_in(project, module_store, sys.executable, "broken.py", MLTRAIL_STRICT="0")
    assert "configuration unreadable" in done.stderr  # warned once, where it happened
    run = client.get_run(done.stdout.split()[-1])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.errors"] == "1"  # and counted in the run
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val-logloss")] == [0, 1, 2]


def test_a_script_that_trains_nothing_does_not_wait_for_the_recorder(project, tmp_path):
    """The recorder started at ``import xgboost`` warms up for trainings to come; when none
    comes, the exit lets it go rather than waiting for MLflow's import and the store."""
    (project / "loads.py").write_text("import xgboost\nprint(xgboost.__version__)\n")
    fresh = tmp_path / "never-opened.db"  # the warm-up would create it, migrations and all
    mltrail = str(Path(sys.executable).parent / "mltrail")
    done = run_in(project, f"sqlite:///{fresh}", mltrail, "run", "--", sys.executable, "loads.py")
    assert done.stderr == ""
    time.sleep(1)  # a recorder left running would go on warming up meanwhile
    assert not fresh.exists()


def test_scikit_learn_fits_and_searches_are_recorded_in_the_recorder(client, project, tmp_path):
    """Under ``mltrail run``, scikit-learn's fits go to the recorder too: the script never
    imports MLflow, and the runs hold what the in-process recording gives them."""
    (project / "fits.py").write_text(
        textwrap.dedent("""
        import json, os, sys
        import numpy as np
        from sklearn.base import BaseEstimator, TransformerMixin
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV
        from sklearn.pipeline import make_pipeline

        class Halved(BaseEstimator, TransformerMixin):  # the script's own: pickled by value
            def fit(self, X, y=None):
                return self
            def transform(self, X):
                return X / 2

        rng = np.random.default_rng(0)
        X = rng.normal(size=(200, 3))
        y = (X[:, 0] > 0).astype(int)
        LogisticRegression(C=0.5).fit(X, y)
        make_pipeline(Halved(), LogisticRegression()).fit(X, y)
        GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0, 10.0]}, cv=3, n_jobs=2).fit(X, y)
        import psutil  # the search's workers (joblib's loky) are still alive: none records
        recorders = [p for p in psutil.Process().children(recursive=True)
                     if "mltrail.recording.recorder" in " ".join(p.cmdline())]
        print(json.dumps({"pid": os.getpid(), "mlflow": "mlflow" in sys.modules,
                          "recorders": len(recorders)}))
        """)
    )
    store = f"sqlite:///{tmp_path / 'fits.db'}"
    mltrail = str(Path(sys.executable).parent / "mltrail")
    done = run_in(project, store, mltrail, "run", "--", sys.executable, "fits.py")
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert not seen["mlflow"]  # the script's process never imported MLflow
    assert seen["recorders"] == 1  # the script's own; its workers start none
    from mlflow.tracking import MlflowClient

    store_client = MlflowClient(store)
    runs = store_client.search_runs(["0"], max_results=50)
    by_estimator = {
        r.data.tags.get("mltrail.sklearn.estimator"): r
        for r in runs
        if "mlflow.parentRunId" not in r.data.tags
    }
    assert set(by_estimator) == {"LogisticRegression", "Pipeline", "GridSearchCV"}
    for run in by_estimator.values():
        assert run.info.status == "FINISHED"
        assert run.data.tags["mltrail.pid"] == str(seen["pid"])  # recorded for the script
        assert run.data.tags["mltrail.command"]  # the provenance of the script's own run
        assert run.data.params["data.train.shape"] == "200x3"
        assert "train/accuracy" in run.data.metrics
        assert "model" in {a.path for a in store_client.list_artifacts(run.info.run_id)}
    assert by_estimator["LogisticRegression"].data.params["C"] == "0.5"
    import mlflow.sklearn

    pipeline = by_estimator["Pipeline"]
    assert "mltrail.errors" not in pipeline.data.tags
    loaded = mlflow.sklearn.load_model(f"{pipeline.info.artifact_uri}/model")
    assert type(loaded.steps[0][1]).__name__ == "Halved"
    search = by_estimator["GridSearchCV"]
    assert "best_cv_score" in search.data.metrics
    assert "cv_results.csv" in {a.path for a in store_client.list_artifacts(search.info.run_id)}
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == search.info.run_id]
    assert sorted(r.data.params["C"] for r in children) == ["0.1", "1.0", "10.0"]


def test_a_model_made_of_the_script_s_own_modules_is_recorded(project, tmp_path):
    """``python pipeline/train.py`` finds ``pipeline/steps.py`` on its path; the recorder,
    which unpickles the model, finds it there too."""
    (project / "pipeline").mkdir()
    (project / "pipeline" / "steps.py").write_text(
        textwrap.dedent("""
        from sklearn.base import BaseEstimator, TransformerMixin

        class Halved(BaseEstimator, TransformerMixin):
            def fit(self, X, y=None):
                return self
            def transform(self, X):
                return X / 2
        """)
    )
    (project / "pipeline" / "train.py").write_text(
        textwrap.dedent("""
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from steps import Halved

        X = np.random.default_rng(0).normal(size=(100, 3))
        make_pipeline(Halved(), LogisticRegression()).fit(X, (X[:, 0] > 0).astype(int))
        """)
    )
    store = f"sqlite:///{tmp_path / 'modules.db'}"
    mltrail = str(Path(sys.executable).parent / "mltrail")
    done = run_in(project, store, mltrail, "run", "--", sys.executable, "pipeline/train.py")
    assert "MltrailWarning" not in done.stderr, done.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    store_client = MlflowClient(store)
    (run,) = store_client.search_runs(["0"])
    assert "Halved" in run.data.params["halved"]  # the params, which hold a Halved, arrived
    assert "model" in {a.path for a in store_client.list_artifacts(run.info.run_id)}


def test_a_long_fit_recorded_in_the_recorder_samples_the_system(project, tmp_path):
    """The recorder may open a fit's run after a short fit has ended: that run has no system
    metrics (they would describe the recording); a fit still running after two seconds gets
    them, as a run opened in the script's process while its fit runs does."""
    (project / "slow.py").write_text(
        textwrap.dedent("""
        import time
        import numpy as np
        from sklearn.base import BaseEstimator, TransformerMixin
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        class Slow(BaseEstimator, TransformerMixin):
            def fit(self, X, y=None):
                time.sleep(3)
                return self
            def transform(self, X):
                return X

        X = np.random.default_rng(0).normal(size=(100, 3))
        y = (X[:, 0] > 0).astype(int)
        LogisticRegression().fit(X, y)
        make_pipeline(Slow(), LogisticRegression()).fit(X, y)
        """)
    )
    store = f"sqlite:///{tmp_path / 'slow.db'}"
    mltrail = str(Path(sys.executable).parent / "mltrail")
    run_in(project, store, mltrail, "run", "--", sys.executable, "slow.py",
           MLTRAIL_SYSTEM_METRICS="true")  # fmt: skip
    from mlflow.tracking import MlflowClient

    runs = {
        r.data.tags["mltrail.sklearn.estimator"]: r for r in MlflowClient(store).search_runs(["0"])
    }
    assert runs["Pipeline"].data.tags["mltrail.pid"]  # recorded in the recorder
    sampled = {
        name: any(m.startswith("system/") for m in r.data.metrics) for name, r in runs.items()
    }
    assert sampled == {"LogisticRegression": False, "Pipeline": True}


def test_what_the_recorder_cannot_read_is_counted_in_its_run(project, tmp_path):
    """A model whose class the recorder cannot import (here a module that exists only in the
    script's memory) is lost, but not silently: the run counts it in ``mltrail.errors`` and
    the warning says how to record in the script's process instead."""
    (project / "vanishing.py").write_text(
        textwrap.dedent("""
        import sys, types
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        module = types.ModuleType("made_in_memory")
        sys.modules["made_in_memory"] = module

        class Weights(dict):
            pass

        Weights.__module__ = module.__name__
        module.Weights = Weights
        X = np.random.default_rng(0).normal(size=(100, 3))
        y = (X[:, 0] > 0).astype(int)
        LogisticRegression(class_weight=Weights({0: 1.0, 1: 2.0})).fit(X, y)
        """)
    )
    store = f"sqlite:///{tmp_path / 'vanishing.db'}"
    mltrail = str(Path(sys.executable).parent / "mltrail")
    done = run_in(project, store, mltrail, "run", "--", sys.executable, "vanishing.py")
    assert "MLTRAIL_RECORDER=thread" in done.stderr, done.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    (run,) = MlflowClient(store).search_runs(["0"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.errors"] == "1"
    assert "train/accuracy" in run.data.metrics  # the rest of the run is there


def test_under_mltrail_run_a_script_that_imports_xgboost_has_its_recorder_from_the_start(
    project, tmp_path
):
    """Its file imports XGBoost: the recorder starts before the script's first line, so that
    MLflow's import overlaps the script's own imports. A script that imports none of the
    frameworks it records starts none."""
    first_line = (
        "import json, psutil\n"
        "print(json.dumps([' '.join(p.cmdline()) for p in psutil.Process().children()]))\n"
    )
    (project / "early.py").write_text(first_line + "import xgboost\n")
    (project / "plain.py").write_text(first_line + "import json\n")
    # One that imports MLflow records in its own process: no recorder. MLflow imported in a
    # branch may never be: the recorder starts (and is let go at the exit if unused).
    (project / "own.py").write_text(first_line + "import mlflow\nimport xgboost\n")
    (project / "maybe.py").write_text(
        first_line + "import sys\nif 'mlflow' in sys.argv:\n    import mlflow\nimport xgboost\n"
    )
    mltrail = str(Path(sys.executable).parent / "mltrail")
    store = f"sqlite:///{tmp_path / 'early.db'}"
    children = {}
    for script in ("early.py", "plain.py", "own.py", "maybe.py"):
        done = run_in(project, store, mltrail, "run", "--", sys.executable, script)
        children[script] = json.loads(done.stdout.strip().splitlines()[-1])
    for script in ("early.py", "maybe.py"):
        assert any("mltrail.recording.recorder" in command for command in children[script])
    assert children["plain.py"] == children["own.py"] == []


# What the script's recorder has loaded: its shared libraries (XGBoost's, scikit-learn's
# compiled modules), read from Linux's map of its memory.
RECORDER_LIBRARIES = """
import psutil
def recorder_libraries():
    (recorder,) = [p for p in psutil.Process().children()
                   if "mltrail.recording.recorder" in " ".join(p.cmdline())]
    maps = open(f"/proc/{recorder.pid}/maps").read()
    return sorted(name for name in ("xgboost", "sklearn") if f"/{name}/" in maps)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_recorder_of_an_xgboost_script_never_imports_xgboost(project, tmp_path):
    """The models come as the files the script's process wrote: the recorder imports neither
    XGBoost nor (with it) scikit-learn, which the first script of a session waited for at its
    exit; the models load and predict as the script's own."""
    (project / "files.py").write_text(
        textwrap.dedent(TRAINING)
        + textwrap.dedent(RECORDER_LIBRARIES)
        + textwrap.dedent("""
        import mltrail
        booster = xgb.train(params, dtrain, 5, evals=[(dval, "val")], verbose_eval=False)
        estimator = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(x[:200], y[:200])
        mltrail.wait()  # the models are saved
        print(json.dumps({"loaded": recorder_libraries(),
                          "booster": booster.predict(dval).tolist(),
                          "estimator": estimator.predict_proba(x[200:])[:, 1].tolist()}))
        """)
    )
    store = f"sqlite:///{tmp_path / 'files.db'}"
    mltrail = str(Path(sys.executable).parent / "mltrail")
    done = run_in(project, store, mltrail, "run", "--", sys.executable, "files.py")
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "xgboost" not in seen["loaded"]
    import mlflow
    import numpy as np
    import xgboost as xgb
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(store).search_runs(["0"], max_results=10)
    by_class = {}
    for run in runs:
        assert run.info.status == "FINISHED"
        info = mlflow.models.get_model_info(f"{run.info.artifact_uri}/model")
        by_class[info.flavors["xgboost"]["model_class"]] = run.info.artifact_uri
    assert set(by_class) == {"xgboost.core.Booster", "xgboost.sklearn.XGBClassifier"}
    rows = np.random.default_rng(0).normal(size=(300, 4))[200:]  # the script's validation rows
    booster = mlflow.xgboost.load_model(f"{by_class['xgboost.core.Booster']}/model")
    assert np.allclose(booster.predict(xgb.DMatrix(rows)), seen["booster"])
    estimator = mlflow.xgboost.load_model(f"{by_class['xgboost.sklearn.XGBClassifier']}/model")
    assert np.allclose(estimator.predict_proba(rows)[:, 1], seen["estimator"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_framework_whose_models_come_pickled_is_imported_while_the_script_is_busy(
    project, tmp_path
):
    """The recorder imports scikit-learn (which unpickling its models needs) once the script
    has been busy a second, so that the fit at the end of a long script does not wait for it,
    and not as soon as the script imports it (XGBoost imports it for nothing of the recorder)."""
    (project / "busy.py").write_text(
        textwrap.dedent(RECORDER_LIBRARIES)
        + textwrap.dedent("""
        import json, time
        import sklearn.linear_model
        for _ in range(600):  # the script's long work (its data, say) before a fit
            if "sklearn" in recorder_libraries():
                break
            time.sleep(0.1)
        print(json.dumps(recorder_libraries()))
        """)
    )
    mltrail = str(Path(sys.executable).parent / "mltrail")
    store = f"sqlite:///{tmp_path / 'busy.db'}"
    done = run_in(project, store, mltrail, "run", "--", sys.executable, "busy.py")
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["sklearn"]


def test_a_training_run_twice_is_said_already_run_in_the_recorder(project, tmp_path):
    """Two identical short trainings: the second run's check, made as it ends, waits for the
    first one still closing in the recorder, and names it."""
    (project / "twice.py").write_text(
        textwrap.dedent(TRAINING)
        + textwrap.dedent("""
        runs = []
        for attempt in range(2):
            callback = TrailCallback(experiment="twice", log_model=False, importance=False)
            xgb.train(params, dtrain, 3, evals=[(dval, "val")], verbose_eval=False,
                      callbacks=[callback])
            runs.append(callback.run_id)
        print(json.dumps(runs))
        """)
    )
    store = f"sqlite:///{tmp_path / 'twice.db'}"
    done = run_in(project, store, sys.executable, "twice.py")
    first, second = json.loads(done.stdout.strip().splitlines()[-1])
    assert f"already run: run {first}" in done.stderr, done.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    store_client = MlflowClient(store)
    assert store_client.get_run(second).data.tags["mltrail.already_run"] == first
    assert store_client.get_run(second).data.tags["mltrail.pid"]  # recorded in the recorder
    assert "mltrail.already_run" not in store_client.get_run(first).data.tags


def test_what_the_script_sets_in_its_environment_is_what_its_runs_get(project, tmp_path):
    """The recorder started at XGBoost's import; the script names its experiment after."""
    (project / "late.py").write_text(
        textwrap.dedent(TRAINING)
        + textwrap.dedent("""
        os.environ["MLFLOW_EXPERIMENT_NAME"] = "named-late"
        callback = TrailCallback(log_model=False, importance=False)
        xgb.train(params, dtrain, 2, evals=[(dval, "val")], verbose_eval=False,
                  callbacks=[callback])
        print(callback.run_id)
        """)
    )
    store = f"sqlite:///{tmp_path / 'late.db'}"
    mltrail = str(Path(sys.executable).parent / "mltrail")
    done = run_in(project, store, mltrail, "run", "--", sys.executable, "late.py")
    from mlflow.tracking import MlflowClient

    store_client = MlflowClient(store)
    run = store_client.get_run(done.stdout.split()[-1])
    assert store_client.get_experiment(run.info.experiment_id).name == "named-late"


# --- the spare recorder ------------------------------------------------------------------------

SPARE_ENTRY = "mltrail.recording.spare import main"

# Two identical trainings, the second "already run"; it reports its recorder children.
REPEATED = (
    TRAINING
    + """
import psutil
runs = []
for attempt in range(2):
    callback = TrailCallback(importance=False)
    xgb.train(params, dtrain, 3, evals=[(dval, "val")], verbose_eval=False,
              callbacks=[callback])
    runs.append(callback.run_id)
children = [" ".join(p.cmdline()) for p in psutil.Process().children()]
print(json.dumps({"pid": os.getpid(), "runs": runs, "children": children}))
"""
)


def _spares() -> list[int]:
    """The spare recorders of this user and interpreter running now."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline", "uids"]):
        command = " ".join(process.info["cmdline"] or ())
        uids = process.info["uids"]
        ours = uids and uids.real == os.getuid() and command.startswith(sys.executable)
        if ours and SPARE_ENTRY in command:
            found.append(process.pid)
    return found


def _listening_spare(other_than: int | None = None, timeout: float = 60.0) -> int:
    """The spare waiting for a script (bound to its name), once there is one."""
    from mltrail.recording import spare

    name = "@" + spare._address()[1:].decode()  # this installation's, not another checkout's
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name in Path("/proc/net/unix").read_text():
            found = [pid for pid in _spares() if pid != other_than]
            if found:
                return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no spare recorder is waiting: {_spares()}")


@pytest.fixture
def spares():
    """Spares on for this test's scripts (the suite turns them off), none left after it."""
    for pid in _spares():  # a spare of an earlier test or session would serve ours
        os.kill(pid, signal.SIGKILL)
    yield {"MLTRAIL_RECORDER_SPARE": "120"}
    for pid in _spares():
        os.kill(pid, signal.SIGKILL)


def _second_project(tmp_path: Path) -> Path:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    (other / "repeated.py").write_text(textwrap.dedent(REPEATED))
    git(other, "add", ".")
    git(other, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-qm", "s")
    return other


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="spares are Linux's")
def test_the_next_script_is_recorded_by_the_spare_that_the_last_one_left(project, tmp_path, spares):
    """A spare waits warm for the next script: that script starts no recorder, and its runs
    are recorded as its own recorder would record them: its store, its experiment, its
    repository's commit, its process, its terminal for the warnings."""
    run_in(project, f"sqlite:///{tmp_path / 'first.db'}", sys.executable, "train.py", **spares)
    spare = _listening_spare()
    other = _second_project(tmp_path)
    store = f"sqlite:///{tmp_path / 'second.db'}"
    done = run_in(
        other, store, sys.executable, "repeated.py", MLFLOW_EXPERIMENT_NAME="second", **spares
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert not any("mltrail.recording" in command for command in seen["children"])
    assert f"already run: run {seen['runs'][0]}" in done.stderr  # the spare's, on our stderr
    from mlflow.tracking import MlflowClient

    store_client = MlflowClient(store)
    head = git(other, "rev-parse", "HEAD")
    for run_id in seen["runs"]:
        run = store_client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert store_client.get_experiment(run.info.experiment_id).name == "second"
        assert run.data.tags["mlflow.source.git.commit"] == head
        assert run.data.tags["mlflow.source.name"].endswith("repeated.py")
        assert run.data.tags["mltrail.pid"] == str(seen["pid"])
        assert "model" in {a.path for a in store_client.list_artifacts(run_id)}
    first = MlflowClient(f"sqlite:///{tmp_path / 'first.db'}")
    ids = [e.experiment_id for e in first.search_experiments()]
    pids = {r.data.tags["mltrail.pid"] for r in first.search_runs(ids)}
    assert str(seen["pid"]) not in pids  # nothing of it went to the first script's store
    # It served one script and left; the next spare waits.
    assert _listening_spare(other_than=spare) != spare
    assert spare not in _spares()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="spares are Linux's")
def test_a_spare_whose_script_s_folder_is_removed_serves_the_next_script(project, tmp_path, spares):
    """The folder of the script that left the spare goes while the spare warms up (a
    temporary one): the spare imports nothing from it, and records the next script's runs in
    its store (it once failed to import MLflow there, then sent them to the journal)."""
    run_in(project, f"sqlite:///{tmp_path / 'first.db'}", sys.executable, "train.py", **spares)
    shutil.rmtree(project)
    _listening_spare()
    other = _second_project(tmp_path)
    store = f"sqlite:///{tmp_path / 'second.db'}"
    done = run_in(other, store, sys.executable, "repeated.py", **spares)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert not any("mltrail.recording" in command for command in seen["children"])
    assert "unreachable" not in done.stderr, done.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    store_client = MlflowClient(store)
    for run_id in seen["runs"]:
        run = store_client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["mltrail.pid"] == str(seen["pid"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="spares are Linux's")
def test_a_spare_serves_one_script_of_its_own_session(project, tmp_path, spares):
    """Two scripts at once: one is served by the spare, the other starts its own recorder,
    and both have all their runs. A script of another session starts its own."""
    run_in(project, f"sqlite:///{tmp_path / 'first.db'}", sys.executable, "train.py", **spares)
    spare = _listening_spare()
    other = _second_project(tmp_path)
    scripts = [
        subprocess.Popen(
            [sys.executable, "repeated.py"],
            cwd=other,
            env=user_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / f'{n}.db'}", **spares),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in ("a", "b")
    ]
    outputs = [script.communicate(timeout=300) for script in scripts]
    from mlflow.tracking import MlflowClient

    served = 0
    for name, (out, err) in zip(("a", "b"), outputs, strict=True):
        seen = json.loads(out.strip().splitlines()[-1])
        served += not any("mltrail.recording" in c for c in seen["children"])
        store_client = MlflowClient(f"sqlite:///{tmp_path / f'{name}.db'}")
        for run_id in seen["runs"]:
            assert store_client.get_run(run_id).info.status == "FINISHED", err[-3000:]
    assert served == 1
    spare = _listening_spare(other_than=spare)
    alone = subprocess.run(
        [sys.executable, "repeated.py"],
        cwd=other,
        env=user_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'c.db'}", **spares),
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    seen = json.loads(alone.stdout.strip().splitlines()[-1])
    assert any("mltrail.recording.recorder" in c for c in seen["children"])
    assert spare in _spares()  # still waiting for a script of its session


# A script under `mltrail run` that trains once and says which recorder recorded it, whether
# the variable that handed it over is left for anyone, and the recorder's process id.
HANDED = (
    TRAINING
    + """
import subprocess
from mltrail.recording import recorder
booster = xgb.train(params, dtrain, 4, evals=[(dval, "val")], verbose_eval=False)
process = recorder.running().process
child = subprocess.run(
    [sys.executable, "-c", "import os; print(os.environ.get('MLTRAIL_RECORDER_HANDOVER'))"],
    capture_output=True, text=True,
).stdout.strip()
print(json.dumps({"process": type(process).__name__, "recorder": process.pid,
                  "variable": os.environ.get("MLTRAIL_RECORDER_HANDOVER"), "child": child}))
"""
)


def _last_json(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_mltrail_run_starts_the_recorder_before_the_script_s_interpreter(project, tmp_path):
    """`mltrail run -- python train.py` starts the recorder itself, warming up for XGBoost,
    before it becomes the script's interpreter; the script's process takes it over: its run is
    recorded in full, nothing of the handover reaches its subprocesses, and the recorder is
    gone after the exit. A command that is not this interpreter starts its own, as before."""
    (project / "handed.py").write_text(textwrap.dedent(HANDED))
    mltrail = str(Path(sys.executable).parent / "mltrail")
    store = f"sqlite:///{tmp_path / 'handed.db'}"
    done = run_in(project, store, mltrail, "run", "--", sys.executable, "handed.py")
    seen = _last_json(done)
    assert seen["process"] == "HandedProcess"
    assert seen["variable"] is None and seen["child"] == "None"
    import psutil

    assert not psutil.pid_exists(seen["recorder"])
    from mlflow.tracking import MlflowClient

    store_client = MlflowClient(store)
    (run,) = store_client.search_runs(["0"])
    assert run.info.status == "FINISHED"
    assert run.data.params["max_depth"] == "2"
    assert [m.step for m in store_client.get_metric_history(run.info.run_id, "val-logloss")] == [
        0,
        1,
        2,
        3,
    ]
    assert "model" in {a.path for a in store_client.list_artifacts(run.info.run_id)}
    # Through a shell the interpreter is the shell's child: it starts its own recorder.
    command = f"{sys.executable} handed.py"
    done = run_in(project, store, mltrail, "run", "--", "sh", "-c", command)
    assert _last_json(done)["process"] == "Popen"
    assert len(store_client.search_runs(["0"])) == 2


@pytest.mark.parametrize(
    ("arguments", "script"),
    [
        (["train.py", "--lr", "0.1"], "train.py"),
        (["-u", "-X", "importtime", "src/train.py"], "src/train.py"),
        (["-W", "ignore", "train.py"], "train.py"),
        (["-m", "package.train"], None),
        (["-mpackage.train"], None),
        (["-c", "import xgboost"], None),
        (["-"], None),
        (["-I", "train.py"], None),
        (["notebook.ipynb"], None),
        ([], None),
    ],
)
def test_the_script_file_is_read_from_the_interpreter_s_arguments(arguments, script):
    from mltrail.recording import handover

    assert handover._script(arguments) == script


def test_a_recorder_handed_over_but_not_taken_is_let_go(tmp_path):
    """Where the script's process records none of the frameworks the recorder was started
    for, it ends the recorder; the variable names only the process `mltrail run` became."""
    code = textwrap.dedent("""
        import json, os, subprocess, sys
        from mltrail.recording import handover
        child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                 stdin=subprocess.PIPE)
        answers, _ = os.pipe()
        os.environ["MLTRAIL_SCRIPT_PID"] = str(os.getpid())
        requests = child.stdin.fileno()
        value = f"pipe:{os.getpid() + int(sys.argv[1])}:{child.pid}:{requests}:{answers}:xgboost"
        os.environ["MLTRAIL_RECORDER_HANDOVER"] = value
        handover.let_go()  # named for another process: left alone
        alive = child.poll() is None
        os.environ["MLTRAIL_RECORDER_HANDOVER"] = value.replace(
            f"pipe:{os.getpid() + int(sys.argv[1])}:", f"pipe:{os.getpid()}:")
        handover.let_go()
        print(json.dumps({"alive_before": alive, "ended": child.poll() is not None,
                          "variable": os.environ.get("MLTRAIL_RECORDER_HANDOVER")}))
        """)
    done = subprocess.run(
        [sys.executable, "-c", code, "1"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert _last_json(done) == {"alive_before": True, "ended": True, "variable": None}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="spares are Linux's")
def test_mltrail_run_hands_the_waiting_spare_to_the_script(project, tmp_path, spares):
    """With a spare waiting, `mltrail run` takes it for the script instead of starting a
    recorder, and the script's runs are recorded by it."""
    (project / "handed.py").write_text(textwrap.dedent(HANDED))
    mltrail = str(Path(sys.executable).parent / "mltrail")
    run_in(project, f"sqlite:///{tmp_path / 'first.db'}", sys.executable, "train.py", **spares)
    spare = _listening_spare()
    store = f"sqlite:///{tmp_path / 'second.db'}"
    done = run_in(project, store, mltrail, "run", "--", sys.executable, "handed.py", **spares)
    seen = _last_json(done)
    assert seen["process"] == "SpareProcess" and seen["recorder"] == spare
    assert seen["variable"] is None and seen["child"] == "None"
    from mlflow.tracking import MlflowClient

    (run,) = MlflowClient(store).search_runs(["0"])
    assert run.info.status == "FINISHED"
    assert run.data.params["max_depth"] == "2"


def test_a_recorder_collects_garbage_again_once_warm(project):
    """The collector is off while the recorder imports MLflow and the framework (it walked
    their objects over and over), and on again after, with those objects left out of it."""
    code = textwrap.dedent("""
        import gc, json
        from mltrail.recording import recorder
        recorder._collect_after_warm_up()
        off = not gc.isenabled()
        recorder._warm_up("xgboost")
        print(json.dumps([off, gc.isenabled(), gc.get_freeze_count() > 100_000]))
    """)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=project, env=user_env(), capture_output=True, text=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, True, True], done.stderr


def test_a_spare_is_named_after_the_code_it_would_run():
    """An adapter changed in a source checkout (no pip involved) names another spare: one
    started before the change never records with the old code."""
    import mltrail.integrations
    from mltrail.recording import spare

    adapter = Path(mltrail.integrations.__file__)
    before = spare._address()
    stat = adapter.stat()
    newest = max(path.stat().st_mtime_ns for path in adapter.parent.glob("*.py"))
    try:
        os.utime(adapter, ns=(stat.st_atime_ns, newest + 10**9))  # edited: the newest now
        assert spare._address() != before
    finally:
        os.utime(adapter, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert spare._address() == before
