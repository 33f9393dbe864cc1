"""mltrail.autolog(): unmodified scripts of every framework in fresh processes (autolog before and
after the framework's import), patch identity, one run per training when the user already
records it, nested fits, MLflow's own autolog beside ours, and failures in the patch code."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import mltrail
from mltrail import autolog as _autolog_function  # noqa: F401 - the package attribute
from mltrail.autolog import (
    RUN_OPTIONS,
    autolog_from_environment,
    enabled_frameworks,
    frameworks,
    patched_count,
    safe_patch,
)
from mltrail.errors import ErrorCounter, MltrailError, MltrailWarning

AUTOLOG = sys.modules["mltrail.autolog"]

# Unmodified training scripts: nothing of mltrail in them.
SCRIPTS = {
    "sklearn": """
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        X, y = load_iris(return_X_y=True)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200))
        model.fit(X, y)  # one run: the pipeline, not its steps
        print("accuracy", model.score(X, y))
    """,
    "xgboost": """
        import numpy as np
        import xgboost as xgb

        rng = np.random.default_rng(0)
        X = rng.normal(size=(120, 4))
        y = (X[:, 0] + X[:, 1] > 0).astype(int)
        model = xgb.XGBClassifier(n_estimators=3, max_depth=2)
        model.fit(X[:90], y[:90], eval_set=[(X[90:], y[90:])], verbose=False)  # one run
        dtrain = xgb.DMatrix(X, label=y)
        xgb.train({"max_depth": 2}, dtrain, 2, evals=[(dtrain, "train")], verbose_eval=False)
    """,
    "keras": """
        import keras
        import numpy as np

        rng = np.random.default_rng(0)
        x = rng.normal(size=(48, 4)).astype("float32")
        y = x.sum(axis=1, keepdims=True)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        model.fit(x, y, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
    """,
    "lightning": """
        import lightning.pytorch as L
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        class Regressor(L.LightningModule):
            def __init__(self, lr=0.05):
                super().__init__()
                self.save_hyperparameters()
                self.net = torch.nn.Linear(4, 1)

            def training_step(self, batch, batch_idx):
                x, y = batch
                loss = torch.nn.functional.mse_loss(self.net(x), y)
                self.log("train_loss", loss, on_step=False, on_epoch=True)
                return loss

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

        x = torch.randn(32, 4)
        data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16)
        trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(Regressor(), data)
    """,
}
MODULES = {
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "keras": "keras",
    "lightning": "lightning",
    "lightgbm": "lightgbm",
    "optuna": "optuna",
    "transformers": "transformers",
}
# What each script records: experiment's run count, one metric with its epoch/round steps.
EXPECTED = {
    "sklearn": (1, "train/accuracy", [0]),
    "xgboost": (2, "validation_0-logloss", [0, 1, 2]),
    "keras": (1, "val_loss", [0, 1]),
    "lightning": (1, "train_loss", [0, 1]),
}

# One process per layout: autolog is turned on after importing some frameworks and before
# importing the others; each script runs; a second identical autolog call must change nothing;
# disabling must put back the very objects that were patched.
# (XGBoost and Keras import scikit-learn themselves, so the layouts keep those three together.)
LAYOUTS = {
    "a": {"after": ["sklearn", "xgboost", "keras"], "before": ["lightning"]},
    "b": {"after": ["lightning"], "before": ["sklearn", "xgboost", "keras"]},
}
DRIVER = """
import importlib, json, runpy, sys
layout, folder, experiment = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
import mltrail
AUTOLOG = sys.modules["mltrail.autolog"]
PATCHING = sys.modules["mltrail.autolog.patching"]
MODULES = {"sklearn": "sklearn", "xgboost": "xgboost", "keras": "keras", "lightning": "lightning"}

def current(owner, name):
    return vars(owner).get(name) if isinstance(owner, type) else getattr(owner, name)

for framework in layout["after"]:
    importlib.import_module(MODULES[framework])
options = dict(experiment=experiment, log_model=False, checkpoints="none", system_metrics=False,
               silent=True)
mltrail.autolog(**options)
for framework in layout["before"]:
    assert MODULES[framework] not in sys.modules, framework
for framework in layout["after"] + layout["before"]:
    runpy.run_path(f"{folder}/train_{framework}.py", run_name="__main__")
entries = dict(PATCHING._originals)  # scikit-learn patches each submodule as it is imported
frameworks = sorted({fw for *_, fw in entries.values()})
patched = {k: current(v[0], v[1]) for k, v in entries.items()}
mltrail.autolog(**options)  # again: nothing changes
same = {k: current(v[0], v[1]) for k, v in PATCHING._originals.items()} == patched
mltrail.autolog(disable=True, silent=True)
restored = all(
    (current(owner, name) is raw) if raw is not None else (name not in vars(owner))
    for owner, name, raw, _, _ in entries.values()
)
json.dump({"frameworks": frameworks, "same": same, "restored": restored,
           "left": AUTOLOG.patched_count(), "finder": AUTOLOG._finder is not None},
          open(f"{folder}/report.json", "w"))
"""


def runs_of(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=100)


def steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_unmodified_scripts_are_recorded(client, tmp_path: Path, layout: str) -> None:
    """Every framework, autolog on before and after its import (across the two layouts)."""
    for framework in SCRIPTS:
        pytest.importorskip(MODULES[framework])
        (tmp_path / f"train_{framework}.py").write_text(textwrap.dedent(SCRIPTS[framework]))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    experiment = f"auto-layout-{layout}"
    process = subprocess.run(
        [sys.executable, str(driver), json.dumps(LAYOUTS[layout]), str(tmp_path), experiment],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["frameworks"] == sorted(SCRIPTS)  # each one was patched
    assert report["same"] and report["restored"], report
    assert report["left"] == 0 and not report["finder"]

    runs = runs_of(client, experiment)
    assert {r.info.status for r in runs} == {"FINISHED"}
    for framework, (count, metric, expected_steps) in EXPECTED.items():
        mine = sorted(
            (
                r
                for r in runs
                if r.data.tags["mlflow.source.name"].endswith(f"train_{framework}.py")
            ),
            key=lambda r: r.info.start_time,
        )
        assert len(mine) == count, framework
        assert steps(client, mine[0].info.run_id, metric) == expected_steps, framework
        assert mine[0].data.params, framework  # the adapter's params


# --- in-process: identity, options, duplicates, nesting, failures ------------------------------


@pytest.fixture
def autolog_off():
    yield
    mltrail.autolog(disable=True, silent=True)
    assert patched_count() == 0


def test_patch_and_unpatch_restore_the_same_objects(autolog_off) -> None:
    sklearn_linear = pytest.importorskip("sklearn.linear_model")
    xgb = pytest.importorskip("xgboost")
    owners = [
        (sklearn_linear.LogisticRegression, "fit"),
        (xgb, "train"),
        (xgb.XGBClassifier, "fit"),
    ]
    before = [vars(o).get(n) if isinstance(o, type) else getattr(o, n) for o, n in owners]
    mltrail.autolog(frameworks=["sklearn", "xgboost"], log_model=False, silent=True)
    patched = [vars(o).get(n) if isinstance(o, type) else getattr(o, n) for o, n in owners]
    assert all(p is not b for p, b in zip(patched, before, strict=True))
    assert patched[0].__mltrail_original__ is before[0]
    count = patched_count()
    mltrail.autolog(frameworks=["sklearn", "xgboost"], log_model=False, silent=True)
    again = [vars(o).get(n) if isinstance(o, type) else getattr(o, n) for o, n in owners]
    assert again == patched and patched_count() == count  # a second call changes nothing
    mltrail.autolog(frameworks=["sklearn", "xgboost"], log_model=True, silent=True)
    assert enabled_frameworks()["xgboost"] == {"log_model": True}  # new options, new wrappers
    mltrail.autolog(disable=True, silent=True)
    after = [vars(o).get(n) if isinstance(o, type) else getattr(o, n) for o, n in owners]
    assert all(a is b for a, b in zip(after, before, strict=True))
    assert patched_count() == 0 and enabled_frameworks() == {}
    assert not any(isinstance(f, AUTOLOG._PostImportFinder) for f in sys.meta_path)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(MltrailError, match="Unknown framework 'torch'"):
        mltrail.autolog(frameworks=["torch"])
    with pytest.raises(MltrailError, match="Did you mean 'experiment'"):
        mltrail.autolog(experimnt="x")
    assert enabled_frameworks() == {}


@pytest.mark.parametrize("framework", list(frameworks()))
def test_registry_lists_each_adapters_options(framework: str) -> None:
    """autolog validates options against this registry: it must match what the adapters take."""
    pytest.importorskip(MODULES[framework])
    adapter = __import__(frameworks()[framework].adapter, fromlist=["_"])
    if framework == "sklearn":  # TrackedEstimator's and the autolog patch's settings
        taken = {field.name for field in dataclasses.fields(adapter._Settings)}
    else:
        taken = set(inspect.signature(adapter.TrailCallback).parameters)
    plumbing = {"trail", "start_run_kwargs", "start", "prefix"}  # not autolog options
    assert taken - RUN_OPTIONS - plumbing == frameworks()[framework].options


def test_environment_turns_autolog_on(autolog_off, monkeypatch) -> None:
    assert not autolog_from_environment({})
    assert not autolog_from_environment({"MLTRAIL_AUTOLOG": "0"})
    assert enabled_frameworks() == {}
    assert autolog_from_environment(
        {
            "MLTRAIL_AUTOLOG": "1",
            "MLTRAIL_AUTOLOG_FRAMEWORKS": "sklearn, xgboost",
            "MLTRAIL_EXPERIMENT": "from-env",
            "MLTRAIL_RUN_NAME": "nightly",
            "MLTRAIL_COMMAND": "python train.py --lr 0.1",
        }
    )
    expected = {
        "experiment": "from-env",
        "run_name": "nightly",
        "tags": {"mltrail.command": "python train.py --lr 0.1"},
    }
    assert enabled_frameworks() == {"sklearn": expected, "xgboost": expected}


def test_nested_fits_are_one_run(client, autolog_off) -> None:
    pytest.importorskip("sklearn")
    xgb = pytest.importorskip("xgboost")
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True)
    experiment = "auto-nested"
    mltrail.autolog(experiment=experiment, log_model=False, log_plots=False, silent=True)
    # A Pipeline fitting an XGBoost step, which calls xgboost.train: one run.
    make_pipeline(StandardScaler(), xgb.XGBClassifier(n_estimators=2, max_depth=2)).fit(X, y)
    (pipeline_run,) = runs_of(client, experiment)
    assert "mltrail.xgboost.api" not in pipeline_run.data.tags  # recorded as the pipeline
    # A search fitting 2 candidates x 2 folds and the refit: one parent run, one child each.
    search = GridSearchCV(xgb.XGBClassifier(n_estimators=2), {"max_depth": [1, 2]}, cv=2)
    search.fit(X, y)
    runs = runs_of(client, experiment)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 2
    search_run = next(r for r in parents if r.info.run_id != pipeline_run.info.run_id)
    assert len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {search_run.info.run_id}


def test_explicit_recording_is_not_doubled(client, autolog_off) -> None:
    """A TrackedEstimator or an XGBoost TrailCallback the user added: autolog adds no run."""
    pytest.importorskip("sklearn")
    xgb = pytest.importorskip("xgboost")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from mltrail.integrations.sklearn import TrackedEstimator
    from mltrail.integrations.xgboost import TrailCallback as XgbCallback

    X, y = load_iris(return_X_y=True)
    experiment = "auto-explicit"
    mltrail.autolog(experiment=experiment, log_model=False, silent=True)
    tracked = TrackedEstimator(LogisticRegression(max_iter=200), experiment=experiment)
    tracked.set_params(log_model=False).fit(X, y)
    assert len(runs_of(client, experiment)) == 1
    callback = XgbCallback(experiment=experiment, log_model=False)
    xgb.XGBClassifier(n_estimators=2, callbacks=[callback]).fit(X, y)
    xgb.train(
        {"max_depth": 1},
        xgb.DMatrix(X, label=y),
        2,
        callbacks=[XgbCallback(experiment=experiment, log_model=False)],
    )
    runs = runs_of(client, experiment)
    assert len(runs) == 3
    assert callback.run_id in {r.info.run_id for r in runs}


def test_keras_trail_callback_and_lightning_mlflow_logger_are_not_doubled(
    client, tmp_path, autolog_off
) -> None:
    keras = pytest.importorskip("keras")
    L = pytest.importorskip("lightning.pytorch")
    import numpy as np
    import torch
    from lightning.pytorch.loggers import MLFlowLogger
    from torch.utils.data import DataLoader, TensorDataset

    from mltrail.integrations.keras import TrailCallback as KerasCallback

    experiment = "auto-own-logger"
    mltrail.autolog(
        experiment=experiment, log_model=False, checkpoints="none", system_metrics=False,
        silent=True,
    )  # fmt: skip
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    explicit = KerasCallback(experiment=experiment, checkpoints="none", log_model=False)
    model.fit(x, x[:, :1], epochs=2, verbose=0, callbacks=[explicit])
    (keras_run,) = runs_of(client, experiment)
    assert keras_run.info.run_id == explicit.run_id
    assert steps(client, explicit.run_id, "loss") == [0, 1]

    logger = MLFlowLogger(experiment_name=experiment, tracking_uri=client.tracking_uri)
    features = torch.randn(32, 4)
    data = DataLoader(TensorDataset(features, features.sum(1, keepdim=True)), batch_size=16)
    trainer = L.Trainer(
        max_epochs=2, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(_lightning_module(L, torch), data)
    runs = runs_of(client, experiment)
    assert len(runs) == 2  # the logger's run, which mltrail recorded into
    (lightning_run,) = [r for r in runs if r.info.run_id == logger.run_id]
    assert lightning_run.data.tags["mltrail.framework"] == "lightning"
    assert lightning_run.data.params["optimizer.lr"] == "0.05"

    from mltrail.integrations.lightning import TrailCallback as LightningCallback

    explicit = LightningCallback(experiment=experiment, checkpoints="none", log_model=False)
    trainer = L.Trainer(
        max_epochs=1, logger=False, callbacks=[explicit], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(_lightning_module(L, torch), data)
    runs = runs_of(client, experiment)
    assert len(runs) == 3 and explicit.run_id in {r.info.run_id for r in runs}


def _lightning_module(L, torch):
    class Regressor(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return Regressor()


def test_mlflow_xgboost_autolog_is_paused_while_mltrail_records(client, autolog_off) -> None:
    import mlflow

    xgb = pytest.importorskip("xgboost")
    import numpy as np

    X = np.random.default_rng(0).normal(size=(60, 3))
    experiment = "auto-with-mlflow-xgboost"
    mlflow.set_experiment(experiment)
    mlflow.xgboost.autolog(log_models=False, log_datasets=False, silent=True)
    mltrail.autolog(frameworks=["xgboost"], experiment=experiment, log_model=False, silent=True)
    try:
        dtrain = xgb.DMatrix(X, label=X[:, 0] > 0)
        xgb.train({"max_depth": 1}, dtrain, 3, evals=[(dtrain, "train")], verbose_eval=False)
        (run,) = runs_of(client, experiment)
        assert "mlflow.autologging" not in run.data.tags  # MLflow's autolog stayed out
        assert run.data.tags["mltrail.framework"] == "xgboost"
        assert steps(client, run.info.run_id, "train-rmse") == [0, 1, 2]
    finally:
        mlflow.xgboost.autolog(disable=True)
        mlflow.set_experiment("Default")


@pytest.mark.parametrize("first", ["mlflow", "mltrail"])
def test_mlflow_autolog_on_too_gives_one_run(client, autolog_off, first: str) -> None:
    import mlflow

    pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    experiment = f"auto-with-mlflow-{first}"
    mlflow.set_experiment(experiment)  # MLflow's autolog runs land here
    turn_on = [
        lambda: mlflow.sklearn.autolog(log_models=False, log_datasets=False, silent=True),
        lambda: mltrail.autolog(
            frameworks=["sklearn"], experiment=experiment, log_model=False, silent=True
        ),
    ]
    for step in turn_on if first == "mlflow" else reversed(turn_on):
        step()
    try:
        LogisticRegression(max_iter=300).fit(X, y)
        (run,) = runs_of(client, experiment)
        metrics = set(run.data.metrics)
        assert "train/accuracy" in metrics  # mltrail recorded it
        if first == "mlflow":  # ours is outermost: MLflow's autolog was paused
            assert "training_accuracy_score" not in metrics
            assert "mlflow.autologging" not in run.data.tags
        else:  # MLflow's run was open first: mltrail recorded into it
            assert run.data.tags["mlflow.autologging"] == "sklearn"
        mltrail.autolog(disable=True, silent=True)
        LogisticRegression(max_iter=300).fit(X, y)  # MLflow's own autolog still works
        runs = runs_of(client, experiment)
        assert len(runs) == 2
        assert any("training_accuracy_score" in r.data.metrics for r in runs if r != run)
    finally:
        mlflow.sklearn.autolog(disable=True)
        mlflow.set_experiment("Default")


# --- the safe-patch contract -------------------------------------------------------------------


class Trainer:
    calls = 0

    def fit(self, value: int) -> int:
        Trainer.calls += 1
        if value < 0:
            raise ValueError("negative")  # the user's own error
        return value * 2


@pytest.fixture(autouse=True)
def _fresh_error_counts(monkeypatch) -> None:
    """mltrail warns once per kind of error and process: each test starts uncounted."""
    monkeypatch.setattr(AUTOLOG, "process_errors", ErrorCounter())
    monkeypatch.setattr(sys.modules["mltrail.autolog.patching"], "process_errors", ErrorCounter())


@pytest.fixture
def toy(monkeypatch):
    """A fake framework 'toy' with one patchable method, enabled as autolog would."""
    monkeypatch.setitem(AUTOLOG.enabled, "toy", {})
    original = Trainer.fit
    Trainer.calls = 0
    yield
    AUTOLOG.revert("toy")
    assert Trainer.fit is original


@pytest.mark.parametrize("where", ["before", "after", "twice"])
def test_patch_code_errors_warn_and_the_training_runs_once(toy, monkeypatch, where: str) -> None:
    def wrapper(call_original, trainer, value):
        if where == "before":
            raise RuntimeError("patch broke before")
        call_original(trainer, value)
        if where == "twice":
            call_original(trainer, value)
        raise RuntimeError("patch broke after")

    safe_patch("toy", Trainer, "fit", wrapper)
    monkeypatch.setenv("MLTRAIL_STRICT", "0")
    with pytest.warns(MltrailWarning, match="autolog patch for toy"):
        assert Trainer().fit(21) == 42
    assert Trainer.calls == 1
    monkeypatch.setenv("MLTRAIL_STRICT", "1")
    with pytest.raises(RuntimeError, match=r"patch broke|twice"):  # strict mode: raised
        Trainer().fit(1)


def test_user_errors_propagate_unchanged(toy) -> None:
    seen: list[BaseException] = []

    def wrapper(call_original, trainer, value):
        try:
            return call_original(trainer, value)
        except ValueError as error:
            seen.append(error)
            raise

    safe_patch("toy", Trainer, "fit", wrapper)
    with pytest.raises(ValueError, match="negative") as info:
        Trainer().fit(-1)
    assert info.value is seen[0] and Trainer.calls == 1
    assert Trainer().fit(2) == 4


def test_a_failing_adapter_leaves_real_training_intact(client, autolog_off, monkeypatch) -> None:
    """Injected failure in the sklearn adapter's recording: a warning, the model is fitted once."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import mltrail.integrations.sklearn as adapter

    fits = []
    real_fit = LogisticRegression.fit

    def counting_fit(self, *args, **kwargs):
        fits.append(1)
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", counting_fit)

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure in the patch")

    monkeypatch.setattr(adapter, "fit_arguments", broken)
    monkeypatch.setenv("MLTRAIL_STRICT", "0")
    X, y = load_iris(return_X_y=True)
    mltrail.autolog(frameworks=["sklearn"], experiment="auto-broken", log_model=False, silent=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = LogisticRegression(max_iter=200)
        assert model.fit(X, y) is model
    assert len(fits) == 1 and model.score(X, y) > 0.9
    assert any("injected failure" in str(w.message) for w in caught)
    assert runs_of(client, "auto-broken") == []
    mltrail.autolog(disable=True, silent=True)
    assert LogisticRegression.fit is counting_fit
