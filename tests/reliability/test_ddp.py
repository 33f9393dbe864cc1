"""DDP with plain ``torchrun`` and the core API: two CPU processes (gloo), one run, rank 0 writes.

(The Lightning adapter under ``ddp_spawn`` is tested in tests/integrations/test_lightning_ddp.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import git
from tests.reliability.conftest import python_env

pytest.importorskip("torch")

SCRIPT = """
import json, os
import torch
import torch.distributed as dist
import mltrail

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

trail = mltrail.start_run(experiment="torchrun", system_metrics=False)  # every rank calls it
trail.log_params({"lr": 0.1, "world_size": world, "rank": rank})
for epoch in range(3):
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(10 * rank + epoch))
    loss = torch.nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    trail.log_metrics({"loss": loss.item(), "rank": float(rank)}, step=epoch)
trail.log_text("from rank %d" % rank, "who.txt")
trail.end()
weights = [round(v, 6) for v in model.module.weight.flatten().tolist()]
print("result " + json.dumps({"rank": rank, "pid": os.getpid(), "enabled": trail.enabled,
                              "run_id": trail.run_id, "weights": weights}), flush=True)
dist.destroy_process_group()
"""


def test_torchrun_two_processes_record_one_run_from_rank_zero(
    client, git_repo: Path, tmp_path: Path
) -> None:
    (git_repo / "train.py").write_text(SCRIPT)  # a dirty tree: the snapshot is taken once
    git(git_repo, "add", "train.py")
    spool = tmp_path / "spool"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "train.py"],
        cwd=git_repo, capture_output=True, text=True, timeout=300,
        env=python_env(MLTRAIL_SPOOL_DIR=str(spool), OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = {}
    for line in result.stdout.splitlines():
        if line.startswith("result "):
            report = json.loads(line[len("result ") :])
            ranks[report["rank"]] = report
    assert set(ranks) == {0, 1}
    assert ranks[0]["weights"] == ranks[1]["weights"]  # DDP kept the replicas in sync
    assert ranks[0]["enabled"] and not ranks[1]["enabled"]

    experiment = client.get_experiment_by_name("torchrun")
    [run] = client.search_runs([experiment.experiment_id])  # exactly one run
    assert run.info.run_id == ranks[0]["run_id"]
    assert run.info.status == "FINISHED"
    assert run.data.params["rank"] == "0" and run.data.params["world_size"] == "2"
    assert run.data.tags["mltrail.pid"] == str(ranks[0]["pid"])
    history = client.get_metric_history(run.info.run_id, "rank")
    assert [(m.step, m.value) for m in history] == [(0, 0.0), (1, 0.0), (2, 0.0)]
    who = Path(client.download_artifacts(run.info.run_id, "who.txt")).read_text()
    assert who == "from rank 0"
    # git was captured once: one snapshot ref, the one on the run
    refs = git(git_repo, "for-each-ref", "--format=%(objectname)", "refs/mltrail/").split()
    assert refs == [run.data.tags["mltrail.git.snapshot"]]
    # rank 1 journaled nothing either: at most rank 0's (retired) spool folder exists
    assert [p.name for p in spool.glob("*") if p.is_dir()] in ([], [run.info.run_id])
    # without a shared MLTRAIL_RUN_ID, rank 1 does not know the run id (torchrun starts the
    # ranks as separate processes; the user broadcasts it when other ranks need it)
    assert ranks[1]["run_id"] in (None, run.info.run_id)
