"""``mltrail sync`` as users run it: two at once on the same spool, a run that cannot be sent
among others, and ``--run`` naming a run that is not there."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from mlflow.tracking import MlflowClient

from mltrail.recording.spool import Spool

MLTRAIL = str(Path(sys.executable).with_name("mltrail"))
EXPERIMENT = "concurrent-sync"


def journal_offline_runs(spool_dir: Path, count: int, tracking_uri: str) -> list[str]:
    """Spool folders as a process that trained offline and ended leaves them: meta.json with
    its (now dead) process id, and a journal of params, metric points and the run's end."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ids = []
    now = int(time.time() * 1000)
    for i in range(count):
        run_id = uuid.uuid4().hex
        spool = Spool(spool_dir, run_id)
        spool.open(
            {
                "tracking_uri": tracking_uri,
                "experiment_id": None,
                "experiment": EXPERIMENT,
                "run_name": f"offline-{i}",
                "created": time.time(),
                "pid": dead.pid,
                "host": socket.gethostname(),
                "offline": True,
                "resume": False,
            }
        )
        points = [["loss", 1.0 / (step + 1), now + step, step] for step in range(5)]
        spool.append(
            [
                {"kind": "params", "data": {"i": str(i)}},
                {"kind": "metrics", "data": points},
                {"kind": "status", "data": {"status": "FINISHED", "end_time": now + 10}},
            ]
        )
        ids.append(run_id)
    return ids


def sync_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [MLTRAIL, "sync", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def synced_runs(client: MlflowClient, offline_id: str) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs(
        [experiment.experiment_id], f"tags.`mltrail.offline_run_id` = '{offline_id}'"
    )


def test_two_syncs_at_once_send_each_run_once_and_report_it(
    module_store: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    ids = journal_offline_runs(spool_dir, 12, "http://127.0.0.1:9")  # a store that is away
    processes = [
        sync_process("--spool-dir", str(spool_dir), "--tracking-uri", module_store)
        for _ in range(2)
    ]
    outputs = [(p.wait(timeout=300), *p.communicate()) for p in processes]
    for code, out, err in outputs:
        assert code == 0, out + err
        assert "not an mltrail spool folder" not in out + err
        assert "Traceback" not in err
    client = MlflowClient(module_store)
    for offline_id in ids:
        # Reported as synced by exactly one of the two processes, and in the store once.
        reports = [
            line
            for _, out, _ in outputs
            for line in out.splitlines()
            if line.startswith(f"{offline_id}: ") and "record(s) into run" in line
        ]
        assert len(reports) == 1, (offline_id, outputs)
        runs = synced_runs(client, offline_id)
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        assert reports[0].startswith(f"{offline_id}: 3 record(s) into run {runs[0].info.run_id}")
        history = client.get_metric_history(runs[0].info.run_id, "loss")
        assert sorted(m.step for m in history) == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in spool_dir.iterdir()) == sorted(f"{i}.synced" for i in ids)


def test_a_run_that_cannot_be_sent_is_reported_and_the_others_are_synced(
    module_store: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    first, unsendable, last = journal_offline_runs(spool_dir, 3, module_store)
    Spool(spool_dir, unsendable).update_meta(tracking_uri="foo://bar")
    done = subprocess.run(
        [MLTRAIL, "sync", "--spool-dir", str(spool_dir)], capture_output=True, text=True
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith(f"{first}: 3 record(s) into run") for line in lines), lines
    assert any(line.startswith(f"{last}: 3 record(s) into run") for line in lines), lines
    assert f"{unsendable}: NOT SENT" in lines
    problem = lines[lines.index(f"{unsendable}: NOT SENT") + 1]
    assert problem.startswith("  problem: cannot send it to foo://bar")
    assert "1 run(s) could not be sent completely" in done.stdout
    client = MlflowClient(module_store)
    assert len(synced_runs(client, first)) == 1 and len(synced_runs(client, last)) == 1
    assert (spool_dir / unsendable / "journal.jsonl").exists()  # kept for a later sync
    # Sent to a store that works, it goes through.
    again = subprocess.run(
        [MLTRAIL, "sync", "--spool-dir", str(spool_dir), "--tracking-uri", module_store],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith(f"{unsendable}: 3 record(s) into run")


def test_sync_run_names_a_run_that_is_not_in_the_spool(module_store: str, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    (known,) = journal_offline_runs(spool_dir, 1, module_store)
    for extra in ([], ["--dry-run"]):
        done = subprocess.run(
            [MLTRAIL, "sync", "--spool-dir", str(spool_dir), "--run", "d80b7ae2", *extra],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stdout == "" and "'d80b7ae2'" in done.stderr
        assert "Nothing to sync" not in done.stderr
    done = subprocess.run(
        [MLTRAIL, "sync", "--spool-dir", str(spool_dir), "--run", known],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and done.stdout.startswith(f"{known}: 3 record(s) into run")
    again = subprocess.run(
        [MLTRAIL, "sync", "--spool-dir", str(spool_dir), "--run", known],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0 and again.stdout == f"{known}.synced: skipped (already synced)\n"
