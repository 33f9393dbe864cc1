"""A third-party adapter, written on the public adapter API and installed with an entry point in
the ``mltrail.integrations`` group, is found by ``mltrail.autolog()`` and ``mltrail run`` without
mltrail knowing its name. The package lives only in this test (a dist-info folder on the path is
what an installed distribution is to ``importlib.metadata``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

# A framework nobody knows: a trainer calling its callbacks at each epoch end.
FRAMEWORK = """
class Trainer:
    def __init__(self, lr=0.1, callbacks=()):
        self.lr, self.callbacks = lr, list(callbacks)

    def fit(self, epochs):
        for callback in self.callbacks:
            callback.on_train_begin(self)
        error = None
        try:
            for epoch in range(epochs):
                if self.lr < 0:
                    raise ValueError("lr must be positive")
                logs = {"loss": 1.0 / (epoch + 1), "val_loss": 2.0 / (epoch + 1)}
                for callback in self.callbacks:
                    callback.on_epoch_end(epoch, logs)
        except BaseException as caught:
            error = caught
            raise
        finally:
            for callback in self.callbacks:
                callback.on_train_end(self, error)
"""

# The adapter, as its README example shows it: hooks that only translate.
ADAPTER = """
from mltrail.adapters import EpochLog, RunSession, exception_safe, options_for

import toyfw


@exception_safe()
class TrailCallback:
    def __init__(self, trail=None, *, log_lr=True, **start_run_kwargs):
        self._session = RunSession("toyfw", trail, start_run_kwargs)
        self._epochs = EpochLog(lambda: self._session.trail)
        self.log_lr = log_lr

    def on_train_begin(self, trainer):
        trail = self._session.open()
        trail.log_params({"lr": trainer.lr} if self.log_lr else {})
        self._session.training_started()
        self._epochs.start()

    def on_epoch_end(self, epoch, logs):
        if epoch == 1 and logs.get("boom"):
            raise RuntimeError("a bug in the adapter")
        self._epochs.log(epoch, logs)

    def on_train_end(self, trainer, error=None):
        self._session.end(error)


def autolog_patches(options):
    start, own = options_for("toyfw", options)

    def fit(call_original, trainer, *args, **kwargs):
        if not any(isinstance(c, TrailCallback) for c in trainer.callbacks):
            trainer.callbacks.append(TrailCallback(**start, **own))
        return call_original(trainer, *args, **kwargs)

    return [(toyfw.Trainer, "fit", fit)]
"""

SPEC = """
from mltrail.adapters import Framework

FRAMEWORK = Framework(adapter="toyfw_mltrail.adapter", triggers=("toyfw",),
                      options=frozenset({"log_lr"}))
"""

SCRIPT = """
import sys
import toyfw

toyfw.Trainer(lr=0.5).fit(3)
try:
    toyfw.Trainer(lr=-1.0).fit(3)
except ValueError:
    print("the user's error reached the script")
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the framework and the adapter distribution with its entry point."""
    root = tmp_path_factory.mktemp("site")
    (root / "toyfw.py").write_text(textwrap.dedent(FRAMEWORK))
    package = root / "toyfw_mltrail"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "adapter.py").write_text(textwrap.dedent(ADAPTER))
    (package / "spec.py").write_text(textwrap.dedent(SPEC))
    info = root / "toyfw_mltrail-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyfw-mltrail\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[mltrail.integrations]\ntoyfw = toyfw_mltrail.spec:FRAMEWORK\n"
    )
    return root


def _run(command: list[str], site: Path, cwd: Path, store: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "MLFLOW_TRACKING_URI": store,
        "MLTRAIL_SYSTEM_METRICS": "false",
        "MLTRAIL_CAPTURE": "false",
    }
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def _runs(store: str, experiment: str) -> list:
    client = MlflowClient(store)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def _check_two_runs(store: str, experiment: str) -> None:
    client = MlflowClient(store)
    finished, failed = _runs(store, experiment)
    assert finished.info.status == "FINISHED"
    assert finished.data.tags["mltrail.framework"] == "toyfw"
    assert finished.data.params == {"lr": "0.5"}
    history = client.get_metric_history(finished.info.run_id, "val_loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 2.0), (1, 1.0), (2, 2.0 / 3)]
    assert failed.info.status == "FAILED"  # the user's exception ends the run FAILED
    assert failed.data.tags["mltrail.exception.type"] == "ValueError"


def test_autolog_finds_an_installed_third_party_adapter(site: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = tmp_path / "train.py"
    script.write_text("import mltrail\nmltrail.autolog(experiment='third-party')\n" + SCRIPT)
    result = _run([sys.executable, str(script)], site, tmp_path, store)
    assert result.returncode == 0, result.stderr
    assert "the user's error reached the script" in result.stdout
    _check_two_runs(store, "third-party")


def test_mltrail_run_finds_it_and_its_options(site: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    mltrail = Path(sys.executable).parent / "mltrail"
    command = [str(mltrail), "run", "--experiment", "via-run", "--frameworks", "toyfw"]
    result = _run([*command, "--", sys.executable, str(script)], site, tmp_path, store)
    assert result.returncode == 0, result.stderr
    _check_two_runs(store, "via-run")
    # The adapter's own option is accepted by mltrail run, and an unknown one named.
    command += ["-o", "log_lr=false", "--", sys.executable, str(script)]
    result = _run(command, site, tmp_path, store)
    assert result.returncode == 0, result.stderr
    assert _runs(store, "via-run")[-2].data.params == {}
    result = _run([str(mltrail), "run", "-o", "log_rl=false", "--", "true"], site, tmp_path, store)
    assert result.returncode != 0 and "Did you mean 'log_lr'" in result.stderr


def test_an_error_in_its_hook_is_counted_not_raised(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """exception_safe: the adapter's bug becomes one warning and the run's mltrail.errors."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = tmp_path / "train.py"
    script.write_text(
        "import mltrail, toyfw\n"
        "from toyfw_mltrail.adapter import TrailCallback\n"
        "class Boom(toyfw.Trainer):\n"
        "    def fit(self, epochs):\n"
        "        for c in self.callbacks: c.on_train_begin(self)\n"
        "        for e in range(epochs):\n"
        "            for c in self.callbacks: c.on_epoch_end(e, {'loss': 1.0, 'boom': 1.0})\n"
        "        for c in self.callbacks: c.on_train_end(self)\n"
        "Boom(callbacks=[TrailCallback(experiment='bugs')]).fit(3)\n"
        "print('trained')\n"
    )
    monkeypatch.setenv("MLTRAIL_STRICT", "0")
    result = _run([sys.executable, str(script)], site, tmp_path, store)
    assert result.returncode == 0, result.stderr
    assert "trained" in result.stdout
    assert "toyfw: on_epoch_end failed (RuntimeError: a bug in the adapter)" in result.stderr
    (run,) = _runs(store, "bugs")
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.errors"] == "1"
    steps = [m.step for m in MlflowClient(store).get_metric_history(run.info.run_id, "loss")]
    assert sorted(steps) == [0, 2]  # the epoch whose hook failed is the only one missing


def test_a_framework_named_with_space_separated_lists_is_the_same_framework():
    from mltrail.adapters import Framework

    assert Framework.named("pkg.adapter", "toyfw toyfw.sub", "log_model", "toy") == Framework(
        adapter="pkg.adapter",
        triggers=("toyfw", "toyfw.sub"),
        options=frozenset({"log_model"}),
        mlflow_flavors=("toy",),
    )
    assert Framework.named("pkg.adapter", "toyfw", records_beside=True).records_beside
