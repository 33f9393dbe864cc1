"""What a run records is what happened: package pins, the user, bad steps, inf, bad URIs."""

from __future__ import annotations

import json
import logging
import os
import pwd
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

import mltrail
from mltrail.capture import env
from mltrail.errors import MltrailError

OPTIONS = {"experiment": "recorded", "system_metrics": False, "already_run": "ignore"}


def artifact_text(client, run_id: str, path: str) -> str:
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=path, tracking_uri=client._tracking_client.tracking_uri
    )
    return Path(local).read_text(encoding="utf-8")


def python(script: str, cwd: Path, env_vars: dict[str, str], drop: tuple[str, ...] = ()) -> str:
    """Run ``script`` in a fresh interpreter of this environment; returns stdout and stderr."""
    environ = {k: v for k, v in {**os.environ, **env_vars}.items() if k not in drop}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


# --- package list -----------------------------------------------------------------------------


def test_requirements_round_trip_and_verify_finds_no_package_difference(
    client, module_store: str, git_repo: Path, monkeypatch
) -> None:
    """Package names with "auth" or "token" in them are not secrets (google-auth==2.63.0)."""
    monkeypatch.chdir(git_repo)
    with mltrail.start_run(**OPTIONS) as trail:
        trail.log_params({"lr": 0.1})
    logged = artifact_text(client, trail.run_id, "mltrail/requirements.txt")
    assert logged == env.requirements()  # this environment's list, unchanged
    assert "***" not in logged
    for name in ("google-auth", "mlflow", "GitPython"):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        assert f"\n{name.lower()}=={version}\n" in "\n" + logged.lower()
    done = subprocess.run(
        [sys.executable, "-m", "mltrail.cli", "verify", trail.run_id, "--json"],
        cwd=git_repo,
        env={**os.environ, "MLFLOW_TRACKING_URI": module_store},
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(done.stdout)
    assert [d for d in result["differences"] if d["kind"] == "env"] == [], done.stdout
    assert done.returncode == 0, done.stdout + done.stderr


# --- mlflow.user --------------------------------------------------------------------------------


def test_user_without_user_variables_is_what_mlflow_records(module_store: str, tmp_path) -> None:
    out = python(
        """
        import mlflow, mltrail
        with mltrail.start_run(experiment="recorded", system_metrics=False, capture=False) as t:
            pass
        with mlflow.start_run() as plain:
            pass
        client = mlflow.MlflowClient()
        print("mltrail", client.get_run(t.run_id).data.tags["mlflow.user"])
        print("mlflow", client.get_run(plain.info.run_id).data.tags["mlflow.user"])
        """,
        tmp_path,
        {"MLFLOW_TRACKING_URI": module_store},
        drop=("USER", "LOGNAME", "MLFLOW_TRACKING_USERNAME"),
    )
    users = dict(line.split() for line in out.splitlines() if line.startswith("ml"))
    assert users["mltrail"] == users["mlflow"] == pwd.getpwuid(os.getuid()).pw_name


# --- the caller's mistakes: a warning, in strict mode too ----------------------------------------


@pytest.mark.parametrize("strict", ["0", "1"])
def test_a_step_that_is_no_integer_is_a_warning_not_an_internal_error(
    client, monkeypatch, caplog, strict: str
) -> None:
    monkeypatch.setenv("MLTRAIL_STRICT", strict)
    with mltrail.start_run(**OPTIONS) as trail, caplog.at_level(logging.WARNING, "mltrail"):
        trail.log_metrics({"loss": 0.5}, step=4)
        trail.log_metrics({"loss": 0.4}, step="five")
        trail.log_metrics({"loss": 0.3}, step="six")
        trail.log_metrics({"acc": 0.9}, step=2.0)  # an integral float is a step
    run = client.get_run(trail.run_id)
    assert "mltrail.errors" not in run.data.tags
    assert run.data.tags.get("mltrail.status") != "error"
    history = [(m.step, m.value) for m in client.get_metric_history(trail.run_id, "loss")]
    assert sorted(v for _, v in history) == [0.3, 0.4, 0.5]  # nothing lost
    assert [(m.step, m.value) for m in client.get_metric_history(trail.run_id, "acc")] == [(2, 0.9)]
    named = [r for r in caplog.records if "step='five'" in r.getMessage()]
    assert len(named) == 1 and "integer" in named[0].getMessage()
    assert not [r for r in caplog.records if "step='six'" in r.getMessage()]  # once per run


@pytest.mark.parametrize("strict", ["0", "1"])
def test_a_missing_checkpoint_file_is_a_warning(
    client, monkeypatch, caplog, tmp_path: Path, strict: str
) -> None:
    monkeypatch.setenv("MLTRAIL_STRICT", strict)
    real = tmp_path / "real.pt"
    real.write_bytes(b"weights")
    with mltrail.start_run(**OPTIONS) as trail, caplog.at_level(logging.WARNING, "mltrail"):
        trail.log_checkpoint("missing.pt", step=1)
        trail.log_checkpoint(real, step=2)
    run = client.get_run(trail.run_id)
    assert "mltrail.errors" not in run.data.tags
    assert run.data.tags["mltrail.checkpoint.latest"] == "checkpoints/real.pt"
    warned = [r for r in caplog.records if "missing.pt" in r.getMessage()]
    assert len(warned) == 1 and "no such file" in warned[0].getMessage()


def test_a_missing_checkpoint_outside_strict_mode_prints_no_traceback(
    module_store: str, tmp_path: Path
) -> None:
    out = python(
        """
        import mltrail
        with mltrail.start_run(experiment="recorded", system_metrics=False, capture=False) as t:
            t.log_checkpoint("missing.pt")
            t.log_metrics({"loss": 1.0}, step="five")
        print("training went on")
        """,
        tmp_path,
        {"MLFLOW_TRACKING_URI": module_store, "MLTRAIL_STRICT": "0"},
    )
    assert "training went on" in out
    assert "Traceback" not in out and "internal error" not in out
    assert "log_checkpoint('missing.pt'): no such file" in out
    assert "log_metrics(step='five')" in out


# --- inf and NaN ---------------------------------------------------------------------------------


def test_nonfinite_values_are_kept_exactly_in_a_tag(client) -> None:
    inf = float("inf")
    with mltrail.start_run(**OPTIONS) as trail:
        trail.log_metrics({"up": inf, "down": -inf, "nan": float("nan"), "ok": 1.0}, step=0)
        trail.log_metrics({"up": inf, "down": 2.0, "nan": -inf}, step=1)
    run = client.get_run(trail.run_id)
    # MLflow stores inf as the largest finite float; the tag says which points were inf.
    assert [m.value for m in client.get_metric_history(trail.run_id, "up")] == [
        sys.float_info.max
    ] * 2
    assert client.get_metric_history(trail.run_id, "down")[0].value == -sys.float_info.max
    assert json.loads(run.data.tags["mltrail.metrics.nonfinite.values"]) == {
        "up": ["inf"],
        "down": ["-inf"],
        "nan": ["nan", "-inf"],
    }
    assert json.loads(run.data.tags["mltrail.metrics.nonfinite"]) == {"up": 2, "down": 1, "nan": 2}


def test_nonfinite_skip_drops_them_and_says_which(client) -> None:
    with mltrail.start_run(nonfinite="skip", **OPTIONS) as trail:
        trail.log_metrics({"loss": float("inf")}, step=0)
        trail.log_metrics({"loss": 0.5}, step=1)
    run = client.get_run(trail.run_id)
    assert [(m.step, m.value) for m in client.get_metric_history(trail.run_id, "loss")] == [
        (1, 0.5)
    ]
    assert json.loads(run.data.tags["mltrail.metrics.nonfinite.values"]) == {"loss": ["inf"]}


# --- tracking URIs that no store supports ----------------------------------------------------------


def test_an_unsupported_uri_scheme_is_a_configuration_error(tmp_path: Path, monkeypatch) -> None:
    spool = tmp_path / "spool-unsupported"
    monkeypatch.setenv("MLTRAIL_SPOOL_DIR", str(spool))
    for strict in ("0", "1"):
        monkeypatch.setenv("MLTRAIL_STRICT", strict)
        with pytest.raises(MltrailError) as error:
            mltrail.start_run(tracking_uri="foo://bar", **OPTIONS)
        message = str(error.value)
        assert "'foo://bar'" in message
        assert "sqlite://" in message and "http://" in message and "file://" in message
    assert not spool.exists() or not any(spool.iterdir())  # nothing journaled for `sync`


def test_plugin_schemes_are_supported_and_listed(module_store: str, tmp_path: Path) -> None:
    """A scheme that an installed MLflow plugin registers is one of the supported schemes."""
    plugin = tmp_path / "plugin"
    (plugin / "trailstore_plugin-1.0.dist-info").mkdir(parents=True)
    (plugin / "trailstore_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: trailstore-plugin\nVersion: 1.0\n"
    )
    (plugin / "trailstore_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[mlflow.tracking_store]\ntrailstore = trailstore:builder\n"
    )
    (plugin / "trailstore.py").write_text(
        "def builder(store_uri=None, artifact_uri=None):\n    raise RuntimeError('unused')\n"
    )
    out = python(
        """
        import mltrail
        from mltrail.store import check_tracking_uri
        check_tracking_uri("trailstore://somewhere")  # supported: no error
        try:
            mltrail.start_run(tracking_uri="foo://bar")
        except mltrail.MltrailError as error:
            print(error)
        """,
        tmp_path,
        {"PYTHONPATH": str(plugin), "MLFLOW_TRACKING_URI": module_store},
    )
    assert "No MLflow tracking store supports the URI 'foo://bar'" in out
    assert "trailstore://" in out


# --- dataset inputs ---------------------------------------------------------------------------


def test_runs_logging_the_same_data_at_once_each_keep_it(client) -> None:
    """A fold loop's runs log the same data, one run's writer while the previous one's still
    sends. SQL stores look a dataset up before inserting it, so both insert it and the second
    was refused (its run lost the input, and in strict mode its writer stopped)."""
    import threading

    from mltrail.recording.writer import apply_record

    experiment = client.create_experiment("same-data-at-once")

    def send(run_id: str, spec: dict, start: threading.Barrier, errors: list) -> None:
        start.wait()
        try:
            apply_record(client, run_id, {"kind": "inputs", "data": [spec]})
        except Exception as error:  # the test reports what escaped
            errors.append(error)

    for round_ in range(12):
        runs = [client.create_run(experiment).info.run_id for _ in range(2)]
        spec = {"name": "train", "digest": f"digest-{round_}", "source": "{}"}
        start, errors = threading.Barrier(len(runs)), []
        threads = [
            threading.Thread(target=send, args=(run_id, spec, start, errors)) for run_id in runs
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        for run_id in runs:
            (found,) = client.get_run(run_id).inputs.dataset_inputs
            assert (found.dataset.name, found.dataset.digest) == ("train", f"digest-{round_}")
