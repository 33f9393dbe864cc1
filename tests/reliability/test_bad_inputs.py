"""Hostile inputs at scale: huge configs, long keys and values, odd metric values, a 200 MB diff,
binary and non-UTF-8 files, corrupt repositories. Strict mode stays on: any internal error fails
the test, and what a user would look for in MLflow is checked."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import mltrail
from mltrail.recording.sanitize import MAX_KEY_LENGTH, MAX_PARAM_VALUE_LENGTH, TRUNCATION_MARKER
from tests.conftest import git

LIGHT = {"system_metrics": False}


def artifact_text(client, run_id: str, path: str) -> str:
    return Path(client.download_artifacts(run_id, path)).read_text(errors="surrogateescape")


def hydra_config() -> dict:
    """1,500 leaves, three levels deep, as a Hydra/OmegaConf config flattens."""
    return {
        f"group{g}": {
            f"module{m}": {f"option{o}": (g * 100 + m * 10 + o) / 7 for o in range(10)}
            for m in range(10)
        }
        for g in range(15)
    }


def test_params_and_metrics_at_scale(client, caplog) -> None:
    torch = pytest.importorskip("torch")
    long_key = "encoder." + "layer_norm_epsilon_" * 16  # 312 characters
    params = {**hydra_config(), "prompt": "word " * 2000, long_key: 1e-5}
    weight = torch.tensor(0.25, requires_grad=True)
    metrics = {
        "nan": float("nan"),
        "inf": float("inf"),
        "neg_inf": float("-inf"),
        "none": None,
        "grad_tensor": weight * 2,
        "array_0d": np.array(1.5),
        "half": np.float16(0.25),
        "huge_int": 2**70,
        long_key: 3.0,
    }
    with mltrail.start_run(experiment="bad-inputs", capture=False, **LIGHT) as trail:
        began = time.perf_counter()
        trail.log_params(params)
        for step in range(3):
            trail.log_metrics(metrics, step=step)
        calling = time.perf_counter() - began
    assert calling < 2.0, calling  # 1,502 params and 27 odd values only enqueue

    run = client.get_run(trail.run_id)
    assert run.info.status == "FINISHED"
    logged = run.data.params
    assert len(logged) == 1502
    assert logged["group14.module9.option9"] == str(1499 / 7)
    assert len(logged["prompt"]) == MAX_PARAM_VALUE_LENGTH
    assert logged["prompt"].endswith(TRUNCATION_MARKER)
    keys = json.loads(artifact_text(client, trail.run_id, "mltrail/keys.json"))
    short = keys[long_key]
    assert len(short) <= MAX_KEY_LENGTH and short.startswith("encoder.layer_norm")
    assert logged[short] == "1e-05"
    full = json.loads(artifact_text(client, trail.run_id, "mltrail/params.json"))["params"]
    assert full["prompt"] == "word " * 2000  # the full value is kept
    assert len(full) == 1502

    def values(key: str) -> list[float]:
        history = client.get_metric_history(trail.run_id, key)
        assert [m.step for m in history] == [0, 1, 2], key
        return [m.value for m in history]

    assert all(math.isnan(v) for v in values("nan"))
    assert values("grad_tensor") == [0.5] * 3
    assert values("array_0d") == [1.5] * 3
    assert values("half") == [0.25] * 3
    assert values("huge_int") == [float(2**70)] * 3
    assert values(short) == [3.0] * 3
    assert all(v > 1e300 for v in values("inf"))  # MLflow stores inf as the largest float
    assert all(v < -1e300 for v in values("neg_inf"))
    assert client.get_metric_history(trail.run_id, "none") == []
    assert json.loads(run.data.tags["mltrail.metrics.nonfinite"]) == {
        "nan": 3,
        "inf": 3,
        "neg_inf": 3,
    }
    dropped = [r for r in caplog.records if "non-numeric value" in r.getMessage()]
    assert len(dropped) == 1  # one warning for the key, not one per step


def full_diff_sha256(repo: Path) -> tuple[str, int]:
    """The sha256 and size of ``git diff HEAD`` with the options mltrail uses, streamed."""
    process = subprocess.Popen(
        ["git", "diff", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames",
         "--full-index", "--src-prefix=a/", "--dst-prefix=b/", "HEAD", "--"],
        cwd=repo, stdout=subprocess.PIPE,
    )  # fmt: skip
    digest, size = hashlib.sha256(), 0
    while block := process.stdout.read(1 << 20):
        digest.update(block)
        size += len(block)
    assert process.wait() == 0
    return digest.hexdigest(), size


@pytest.mark.slow
def test_200_mb_dirty_diff_is_capped_hashed_and_off_the_calling_thread(
    client, git_repo: Path, monkeypatch
) -> None:
    (git_repo / "data.csv").write_text("id,value\n")
    git(git_repo, "add", "data.csv")
    git(git_repo, "commit", "-q", "-m", "data")
    line = b"0123456789,abcdefghijklmnopqrstuvwxyz,ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
    with open(git_repo / "data.csv", "ab") as handle:
        block = line * (1 << 14)
        for _ in range(200 * 1024 * 1024 // len(block)):
            handle.write(block)
    monkeypatch.chdir(git_repo)
    cap = 1_000_000

    began = time.perf_counter()
    trail = mltrail.start_run(experiment="big-diff", max_diff_bytes=cap, flush_timeout=120, **LIGHT)
    calling = time.perf_counter() - began
    trail.log_metrics({"loss": 1.0}, step=0)
    trail.end()
    assert calling < 5.0, calling  # the diff and snapshot run in the background

    run = client.get_run(trail.run_id)
    assert run.data.tags["mltrail.git.dirty"] == "true"
    provenance = json.loads(artifact_text(client, trail.run_id, "mltrail/provenance.json"))
    diff = provenance["git"]["diff"]
    sha256, size = full_diff_sha256(git_repo)
    assert diff["truncated"] is True
    assert diff["bytes"] == size > 200 * 1024 * 1024
    assert diff["sha256"] == sha256
    artifact = Path(client.download_artifacts(trail.run_id, "mltrail/git.diff"))
    assert artifact.stat().st_size <= cap + 200  # the cap plus the truncation note
    assert artifact.read_text().rstrip().endswith(sha256)
    # the snapshot holds the whole file, and the user's index did not change
    snapshot = run.data.tags["mltrail.git.snapshot"]
    size_in_snapshot = git(git_repo, "cat-file", "-s", f"{snapshot}:data.csv")
    assert int(size_in_snapshot) == (git_repo / "data.csv").stat().st_size
    assert git(git_repo, "diff", "--cached", "--name-only") == ""


def test_binary_files_and_non_utf8_paths_and_contents(client, git_repo: Path, monkeypatch):
    (git_repo / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (git_repo / "notes.txt").write_bytes(b"caf\xe9 cr\xe8me\n")  # Latin-1, not UTF-8
    git(git_repo, "add", ".")
    git(git_repo, "commit", "-q", "-m", "binary and latin-1")
    (git_repo / "weights.bin").write_bytes(bytes(reversed(range(256))) * 4)
    (git_repo / "notes.txt").write_bytes(b"caf\xe9 cr\xe8me br\xfbl\xe9e\n")
    odd_name = b"r\xe9sultats-\xff.txt"  # a file name that is not UTF-8
    (git_repo / odd_name.decode("utf-8", "surrogateescape")).write_bytes(b"\x00\x01 binary")
    monkeypatch.chdir(git_repo)

    with mltrail.start_run(experiment="odd-files", **LIGHT) as trail:
        trail.log_metrics({"loss": 1.0}, step=0)

    run = client.get_run(trail.run_id)
    assert run.info.status == "FINISHED"
    assert "mltrail.errors" not in run.data.tags
    provenance = json.loads(artifact_text(client, trail.run_id, "mltrail/provenance.json"))
    assert provenance["git"]["diff"]["binary_files"] == ["weights.bin"]
    assert odd_name.decode("utf-8", "surrogateescape") in provenance["git"]["untracked"]
    diff = Path(client.download_artifacts(trail.run_id, "mltrail/git.diff")).read_bytes()
    assert b"+caf\xe9 cr\xe8me br\xfbl\xe9e" in diff  # the bytes as they are, not mangled
    assert b"Binary files a/weights.bin and b/weights.bin differ" in diff
    # the snapshot commit holds all three files byte for byte
    snapshot = run.data.tags["mltrail.git.snapshot"]
    names = subprocess.run(
        ["git", "ls-tree", "-r", "-z", "--name-only", snapshot],
        cwd=git_repo, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    assert odd_name in names
    blob = subprocess.run(
        ["git", "cat-file", "blob", f"{snapshot}:weights.bin"],
        cwd=git_repo, capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert blob == (git_repo / "weights.bin").read_bytes()


def corrupt(repo: Path, how: str) -> None:
    git_dir = repo / ".git"
    if how == "garbage HEAD":
        (git_dir / "HEAD").write_text("this is not a ref\n")
    elif how == "truncated index":
        (git_dir / "index").write_bytes(b"DIRC\x00")
    elif how == "missing HEAD commit object":
        commit = git(repo, "rev-parse", "HEAD")
        (git_dir / "objects" / commit[:2] / commit[2:]).unlink()
    elif how == "missing objects folder":
        shutil.rmtree(git_dir / "objects")


@pytest.mark.parametrize(
    "how",
    ["garbage HEAD", "truncated index", "missing HEAD commit object", "missing objects folder"],
)
def test_corrupt_git_repository_is_recorded_not_raised(
    how: str, client, git_repo: Path, monkeypatch
) -> None:
    (git_repo / "train.py").write_text("print('changed')\n")
    corrupt(git_repo, how)
    before = {p: p.read_bytes() for p in (git_repo / ".git").rglob("*") if p.is_file()}
    monkeypatch.chdir(git_repo)

    began = time.perf_counter()
    with mltrail.start_run(experiment="corrupt-git", **LIGHT) as trail:
        trail.log_metrics({"loss": 1.0}, step=0)
    assert time.perf_counter() - began < 30

    run = client.get_run(trail.run_id)
    assert run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(trail.run_id, "loss")] == [1.0]
    assert run.data.tags.get("mltrail.git.unavailable"), run.data.tags  # says why
    assert "mltrail.git.snapshot" not in run.data.tags
    after = {p: p.read_bytes() for p in (git_repo / ".git").rglob("*") if p.is_file()}
    assert after == before  # nothing of the user's repository was touched or "repaired"
