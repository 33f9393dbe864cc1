"""The already-run check: the same code, data and params in the experiment warn (or stop) once."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

import mltrail
from mltrail.capture import already_run
from mltrail.cli import main
from mltrail.errors import MltrailError

OPTIONS = {"system_metrics": False}


@pytest.fixture(autouse=True)
def _in_repo(git_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(git_repo)


def train(experiment: str, params: dict, metrics: dict | None = None, **options) -> str:
    with mltrail.start_run(experiment=experiment, **OPTIONS, **options) as trail:
        trail.log_params(params)
        trail.log_metrics(metrics or {"acc": 0.9, "loss": 0.1}, step=0)
    return trail.run_id


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mltrail.already_run"]


def test_a_repeat_warns_once_before_training(client, caplog) -> None:
    first = train("repeat", {"lr": 0.1, "epochs": 3}, {"acc": 0.91, "loss": 0.2})
    caplog.set_level(logging.WARNING, logger="mltrail.already_run")
    with mltrail.start_run(experiment="repeat", **OPTIONS) as trail:
        trail.log_params({"lr": 0.1})
        trail.log_params({"epochs": 3})  # adapters log params in a few calls
        deadline = time.monotonic() + 30
        while not warnings_in(caplog) and time.monotonic() < deadline:
            time.sleep(0.1)
        # The warning came while the run is still going: before the training would start.
        assert warnings_in(caplog), "no warning while the run was running"
        trail.flush()
        running = client.get_run(trail.run_id)
        assert running.info.status == "RUNNING"
        assert running.data.tags[already_run.TAG] == first
        trail.log_metrics({"acc": 0.91, "loss": 0.2}, step=0)
    messages = warnings_in(caplog)
    assert len(messages) == 1
    assert f"run {first} (" in messages[0] and "FINISHED" in messages[0]
    assert "acc=0.91" in messages[0] and "loss=0.2" in messages[0]
    assert "already run" in messages[0]
    tags = client.get_run(trail.run_id).data.tags
    assert tags["mltrail.fingerprint"] == client.get_run(first).data.tags["mltrail.fingerprint"]


def test_what_to_do_is_said_once_per_process(client, caplog, monkeypatch) -> None:
    """A script's folds, rerun unchanged, each match their earlier run: every one is named,
    the advice on what to do about it comes with the first warning only."""
    monkeypatch.setattr(already_run, "_ADVISED", already_run.threading.Event())
    for fold in range(2):
        train("advice", {"fold": fold})
    caplog.set_level(logging.WARNING, logger="mltrail.already_run")
    for fold in range(2):
        train("advice", {"fold": fold})
    messages = warnings_in(caplog)
    assert len(messages) == 2 and all("already run" in m for m in messages)
    assert [already_run.ADVICE in m for m in messages] == [True, False]


def test_different_params_code_or_experiment_do_not_warn(
    client, caplog, git_repo: Path, monkeypatch
) -> None:
    train("distinct", {"lr": 0.1})
    caplog.set_level(logging.WARNING, logger="mltrail.already_run")
    other_params = train("distinct", {"lr": 0.2})
    other_experiment = train("distinct-2", {"lr": 0.1})
    (git_repo / "train.py").write_text("print('changed')\n")
    other_code = train("distinct", {"lr": 0.1})
    assert warnings_in(caplog) == []
    for run_id in (other_params, other_experiment, other_code):
        assert already_run.TAG not in client.get_run(run_id).data.tags


def test_failed_runs_count_and_params_logged_late_are_checked_at_the_end(client, caplog) -> None:
    with pytest.raises(RuntimeError), mltrail.start_run(experiment="failed", **OPTIONS) as trail:
        trail.log_params({"lr": 0.3})
        raise RuntimeError("diverged")
    failed = trail.run_id
    assert client.get_run(failed).info.status == "FAILED"
    caplog.set_level(logging.WARNING, logger="mltrail.already_run")
    again = train("failed", {"lr": 0.3})
    messages = warnings_in(caplog)
    assert len(messages) == 1 and f"run {failed} (" in messages[0] and "FAILED" in messages[0]
    assert client.get_run(again).data.tags[already_run.TAG] == failed


def test_error_mode_stops_before_training(client, caplog, monkeypatch) -> None:
    first = train("strict", {"lr": 0.5})
    trained = []
    with (
        pytest.raises(MltrailError, match=f"already run: run {first}"),
        mltrail.start_run(experiment="strict", already_run="error", **OPTIONS) as trail,
    ):
        trail.log_params({"lr": 0.5})
        trained.append(True)
    assert trained == []
    stopped = client.get_run(trail.run_id)
    assert stopped.info.status == "FAILED"
    assert stopped.data.tags[already_run.STOPPED_TAG] == "true"
    assert stopped.data.tags[already_run.TAG] == first
    # The stopped attempt is not an earlier run: the next warning names the original.
    caplog.set_level(logging.WARNING, logger="mltrail.already_run")
    train("strict", {"lr": 0.5})
    messages = warnings_in(caplog)
    assert len(messages) == 1 and f"run {first} (" in messages[0]
    # A new combination is not stopped.
    monkeypatch.setenv("MLTRAIL_ALREADY_RUN", "error")
    fresh = train("strict", {"lr": 0.6})
    assert client.get_run(fresh).info.status == "FINISHED"


def test_ignore_mode_and_runs_fingerprint(client, caplog, capsys, monkeypatch) -> None:
    first = train("ignored", {"lr": 0.7})
    caplog.set_level(logging.WARNING, logger="mltrail.already_run")
    second = train("ignored", {"lr": 0.7}, already_run="ignore")
    monkeypatch.setenv("MLTRAIL_ALREADY_RUN", "ignore")
    third = train("ignored", {"lr": 0.7})
    assert warnings_in(caplog) == []
    assert already_run.TAG not in client.get_run(second).data.tags
    assert already_run.TAG not in client.get_run(third).data.tags
    # `mltrail runs --fingerprint` lists the duplicates.
    code = main(["runs", "--fingerprint", "--experiment", "ignored", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    listed = json.loads(out)["runs"]
    assert {r["run_id"] for r in listed} == {first, second, third}
    assert len({r["fingerprint"] for r in listed}) == 1


def test_bad_option_value_is_a_clear_error() -> None:
    with pytest.raises(MltrailError, match="already_run must be 'warn', 'error' or 'ignore'"):
        mltrail.start_run(experiment="bad", already_run="sometimes", **OPTIONS)
