"""The store goes away: training never blocks or fails, nothing is lost, sync replays once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import mltrail
from mltrail.cli import main as cli
from mltrail.errors import ErrorCounter
from mltrail.recording import lifecycle
from mltrail.recording.spool import Spool
from mltrail.recording.writer import Writer
from tests.conftest import free_port


def point_count(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_server_killed_mid_run_then_sync_replays_every_point_once(
    mlflow_server, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.setenv("MLTRAIL_STRICT", "0")  # the outage raises inside mltrail by design
    spool = tmp_path / "spool"
    trail = mltrail.start_run(
        experiment="outage",
        tracking_uri=mlflow_server.uri,
        spool_dir=spool,
        flush_interval=0.1,
        flush_timeout=5,
        system_metrics=False,
        capture=False,
    )
    trail.log_params({"lr": 0.1})
    for step in range(50):
        trail.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 100}, step=step)
    assert trail.flush(10)
    mlflow_server.stop()
    started = time.monotonic()
    for step in range(50, 120):
        trail.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 100}, step=step)
    blocked = time.monotonic() - started
    assert blocked < 1.0  # the training thread never waits on the dead server
    with pytest.warns(mltrail.MltrailWarning):
        trail.end()
    assert list(spool.glob("*/journal.jsonl")), "the unsent points were journaled"

    mlflow_server.start()
    client = MlflowClient(mlflow_server.uri)
    assert client.get_run(trail.run_id).info.status == "RUNNING"
    assert cli(["sync", "--spool-dir", str(spool), "--tracking-uri", mlflow_server.uri]) == 0
    assert "record(s) into run" in capsys.readouterr().out
    assert point_count(client, trail.run_id, "loss") == list(range(120))
    assert point_count(client, trail.run_id, "acc") == list(range(120))
    assert client.get_run(trail.run_id).info.status == "FINISHED"
    # a second sync finds nothing and adds nothing
    assert cli(["sync", "--spool-dir", str(spool), "--tracking-uri", mlflow_server.uri]) == 0
    assert "Nothing to sync" in capsys.readouterr().out
    assert point_count(client, trail.run_id, "loss") == list(range(120))


def test_server_back_before_the_end_is_replayed_in_process(
    mlflow_server, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("MLTRAIL_STRICT", "0")
    spool = tmp_path / "spool"
    trail = mltrail.start_run(
        experiment="outage",
        tracking_uri=mlflow_server.uri,
        spool_dir=spool,
        flush_interval=0.1,
        system_metrics=False,
        capture=False,
    )
    trail.log_metrics({"x": 0.0}, step=0)
    assert trail.flush(10)
    mlflow_server.stop()
    for step in range(1, 30):
        trail.log_metrics({"x": float(step)}, step=step)
    with pytest.warns(mltrail.MltrailWarning):
        assert not trail.flush(1.5) or True
        time.sleep(0.5)
    mlflow_server.start()
    trail.end()
    client = MlflowClient(mlflow_server.uri)
    assert point_count(client, trail.run_id, "x") == list(range(30))
    assert client.get_run(trail.run_id).info.status == "FINISHED"
    unsynced = [p for p in spool.glob("*/journal.jsonl") if not p.parent.name.endswith(".synced")]
    assert not unsynced


def test_unreachable_at_start_trains_offline_and_sync_creates_the_run(
    mlflow_server, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("MLTRAIL_STRICT", "0")
    spool = tmp_path / "spool"
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    trail = mltrail.start_run(
        experiment="offline-exp",
        run_name="offline",
        tracking_uri=dead,
        spool_dir=spool,
        start_timeout=5,
        system_metrics=False,
        capture=False,
    )
    assert time.monotonic() - started < 6
    assert trail.offline
    trail.log_params({"lr": 0.3})
    for step in range(10):
        trail.log_metrics({"loss": float(step)}, step=step)
    trail.end()
    assert cli(["sync", "--spool-dir", str(spool), "--tracking-uri", mlflow_server.uri]) == 0
    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("offline-exp")
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`mltrail.offline_run_id` = '{trail.run_id}'"
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "offline"
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.3"}
    assert point_count(client, run.info.run_id, "loss") == list(range(10))


def test_unwritable_spool_when_offline_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLTRAIL_STRICT", "0")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(mltrail.MltrailError, match="MLTRAIL_SPOOL_DIR"):
        mltrail.start_run(
            tracking_uri=f"http://127.0.0.1:{free_port()}",
            spool_dir=blocker / "spool",
            start_timeout=3,
            capture=False,
        )


def test_crashed_run_ends_are_journaled_and_replayed_while_still_crashed(
    client: MlflowClient, module_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The end of a crashed run found at start is a record of the starting run's writer: with
    the store away it is journaled, and sync ends the run FAILED unless it was resumed since."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    experiment = client.create_experiment("crashed-offline")
    left = {"mltrail.pid": str(dead.pid), "mltrail.host": socket.gethostname()}
    crashed = client.create_run(experiment, tags=left).info.run_id
    resumed = client.create_run(experiment, tags=left).info.run_id
    # Its process ended the run into the journal (the store was away): not a crash.
    journaled = client.create_run(experiment, tags=left).info.run_id
    waiting = Spool(tmp_path / "spool", journaled)
    waiting.open({"tracking_uri": module_store, "pid": dead.pid, "host": socket.gethostname()})
    waiting.append([{"kind": "status", "data": {"status": "FINISHED"}}])
    owner = client.create_run(experiment).info.run_id
    spool = Spool(tmp_path / "spool", owner)
    spool.open({"tracking_uri": module_store, "pid": os.getpid(), "host": socket.gethostname()})
    writer = Writer(client, owner, spool, ErrorCounter(), offline=True)  # the store is away

    found = lifecycle.repair_stale_runs(client, experiment, 60.0, writer.add, tmp_path / "spool")
    assert sorted(found) == sorted([crashed, resumed])
    assert journaled in lifecycle.repair_stale_runs(client, experiment, 60.0, lambda *a: None)
    assert writer.close(5)["spooled"] == 2
    assert client.get_run(crashed).info.status == "RUNNING"
    client.set_tag(resumed, "mltrail.pid", str(os.getpid()))  # resumed by a live process since

    assert (
        cli(["sync", "--spool-dir", str(tmp_path / "spool"), "--tracking-uri", module_store]) == 0
    )
    assert "2 record(s) into run " + owner in capsys.readouterr().out
    assert client.get_run(crashed).info.status == "FAILED"
    assert client.get_run(crashed).data.tags["mltrail.crashed"] == "true"
    assert client.get_run(resumed).info.status == "RUNNING"
    assert "mltrail.crashed" not in client.get_run(resumed).data.tags
    assert client.get_run(journaled).info.status == "FINISHED"  # replayed, never called crashed
    assert "mltrail.crashed" not in client.get_run(journaled).data.tags


def test_an_artifact_gone_before_it_is_journaled_leaves_the_journal_taking_the_rest(
    client: MlflowClient, module_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An artifact whose file is gone when it is journaled (a temporary removed at a flush
    deadline) is said missing; the spool, whose disk is fine, keeps the run's other data."""
    experiment = client.create_experiment("gone-artifact")
    run_id = client.create_run(experiment).info.run_id
    spool = Spool(tmp_path / "spool", run_id)
    spool.open({"tracking_uri": module_store, "pid": os.getpid(), "host": socket.gethostname()})
    writer = Writer(client, run_id, spool, ErrorCounter(), offline=True)  # the store is away
    writer.add_artifact(tmp_path / "gone" / "provenance.json", "mltrail", owned=True)
    assert writer.flush(10)
    writer.add_metrics([("loss", 0.5, 1_000, 0), ("loss", 0.25, 2_000, 1)])
    summary = writer.close(5)
    assert summary["spool_error"] is None
    assert summary["spooled"] == 2  # the artifact's record and the points

    # Sync sends the rest and names what it could not (the folder stays for a look).
    assert (
        cli(["sync", "--spool-dir", str(tmp_path / "spool"), "--tracking-uri", module_store]) == 1
    )
    assert "provenance.json no longer exists" in capsys.readouterr().out
    assert point_count(client, run_id, "loss") == [0, 1]
