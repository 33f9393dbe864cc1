"""`mltrail verify` and `mltrail diff` on real git + DVC repos and real runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from tests.conftest import cli, git

import mltrail
from mltrail.capture import datasnap
from mltrail.restore import compare


def dvc_hash(repo: Path, dvc_file: str) -> str:
    import yaml

    return yaml.safe_load((repo / dvc_file).read_text())["outs"][0]["md5"]


@pytest.fixture(scope="module")
def runs(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run A on a clean tree; run B with tuned code, a new untracked file and modified data
    (snapshot_data=True). The workspace stays as B saw it."""
    from dvc.repo import Repo

    base = tmp_path_factory.mktemp("verify")
    repo = base / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    Repo.init(str(repo)).close()
    (repo / "data.csv").write_text("x,y\n1,2\n")
    with datasnap.dvc_repo(repo) as dvc:
        dvc.add([str(repo / "data.csv")])
    (repo / "train.py").write_text("print('v1')\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        mp.setenv("MLFLOW_TRACKING_URI", module_store)
        mp.setenv("MLTRAIL_SPOOL_DIR", str(base / "spool"))
        options = {"experiment": "verify", "system_metrics": False}
        with mltrail.start_run(run_name="A", **options) as a:
            a.log_params({"lr": 0.1, "epochs": 2})
            a.log_metrics({"acc": 0.8, "loss": 0.5}, step=1)
        (repo / "train.py").write_text("print('tuned')\n")
        (repo / "features.py").write_text("FEATURES = ['x']\n")
        (repo / "data.csv").write_text("x,y\n1,2\n3,4\n")
        with mltrail.start_run(run_name="B", snapshot_data=True, **options) as b:
            b.log_params({"lr": 0.2, "epochs": 2})
            b.log_metrics({"acc": 0.9}, step=1)
    return {"repo": repo, "a": a.run_id, "b": b.run_id, "a_data": dvc_hash(repo, "data.csv.dvc")}


def test_verify_the_workspace_a_run_was_made_in(runs: dict, capsys, monkeypatch) -> None:
    monkeypatch.chdir(runs["repo"])
    code, out, err = cli(capsys, "verify", runs["b"])
    assert code == 0, out + err
    assert f"Run {runs['b']} against {runs['repo']}: code match, data match" in out
    assert "python" not in out  # the same interpreter


def test_verify_lists_what_differs(runs: dict, capsys) -> None:
    code, out, _ = cli(capsys, "verify", runs["a"], "--path", str(runs["repo"]), "--json")
    assert code == 1
    result = json.loads(out)
    assert result["schema_version"] == 1 and result["run_id"] == runs["a"]
    assert result["code_matches"] is False and result["data_matches"] is False
    found = {(d["kind"], d["item"]): d for d in result["differences"]}
    assert found[("code", "train.py")]["workspace"] == "modified"
    assert found[("code", "features.py")] == {
        "kind": "code",
        "item": "features.py",
        "run": "absent",
        "workspace": "added",
    }
    data = found[("data", "data.csv")]
    assert data["run"] == runs["a_data"]
    assert data["workspace"] == hashlib.md5(b"x,y\n1,2\n3,4\n").hexdigest()
    assert not [d for d in result["differences"] if d["kind"] == "env" and d["item"] == "python"]
    code, out, _ = cli(capsys, "verify", runs["a"], "--path", str(runs["repo"]))
    assert code == 1
    assert "code DIFFER, data DIFFER" in out
    header = next(line for line in out.splitlines() if line.startswith("KIND"))
    assert header.split() == ["KIND", "ITEM", "RUN", "WORKSPACE"]
    assert any(line.split()[:2] == ["code", "train.py"] for line in out.splitlines())


def test_verify_a_restored_tree_then_change_it(runs: dict, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(runs["repo"])
    target = tmp_path / "restored"
    code, out, err = cli(capsys, "checkout", runs["b"], "--into", str(target))
    assert code == 0, out + err
    code, out, err = cli(capsys, "verify", runs["b"], "--path", str(target))
    assert code == 0, out + err
    (target / "notes.txt").write_text("later\n")
    code, out, _ = cli(capsys, "verify", runs["b"], "--path", str(target), "--json")
    result = json.loads(out)
    assert code == 1 and result["code_matches"] is False and result["data_matches"] is True
    assert [(d["item"], d["workspace"]) for d in result["differences"] if d["kind"] == "code"] == [
        ("notes.txt", "added")
    ]
    (target / "notes.txt").unlink()
    (target / "data.csv").write_text("x,y\n0,0\n")
    code, out, _ = cli(capsys, "verify", runs["b"], "--path", str(target), "--json")
    result = json.loads(out)
    assert code == 1 and result["code_matches"] is True and result["data_matches"] is False
    [data] = [d for d in result["differences"] if d["kind"] == "data"]
    assert data["item"] == "data.csv"
    assert data["run"] != data["workspace"] and len(data["workspace"]) == 32
    (target / "data.csv").unlink()
    code, out, _ = cli(capsys, "verify", runs["b"], "--path", str(target), "--json")
    [data] = [d for d in json.loads(out)["differences"] if d["kind"] == "data"]
    assert code == 1 and data["workspace"] == "missing"


def test_diff_two_runs(runs: dict, capsys, monkeypatch) -> None:
    monkeypatch.chdir(runs["repo"])
    code, out, err = cli(capsys, "diff", runs["a"], runs["b"], "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [r["run_id"] for r in data["runs"]] == [runs["a"], runs["b"]]
    assert data["params"] == [{"key": "lr", "a": "0.1", "b": "0.2"}]
    metrics = {m["key"]: (m["a"], m["b"]) for m in data["metrics"]}
    assert metrics == {"acc": (0.8, 0.9), "loss": (0.5, None)}
    assert data["code"]["same"] is False
    assert "-print('v1')" in data["code"]["patch"] and "+print('tuned')" in data["code"]["patch"]
    assert "features.py" in data["code"]["stat"]
    [changed] = data["data"]
    assert changed["path"] == "data.csv" and changed["a"] == runs["a_data"]
    assert changed["b"] not in (None, runs["a_data"])
    assert data["environment"]["packages"] == []
    code, out, _ = cli(capsys, "diff", runs["a"], runs["b"], "--stat")
    assert code == 0
    assert "diff --git" not in out and "train.py" in out
    lines = out.splitlines()
    assert lines[0].startswith(f"A  {runs['a']} (A)") and lines[1].startswith(f"B  {runs['b']} (B)")
    acc = next(line for line in lines if line.startswith("acc"))
    assert acc.split() == ["acc", "0.8", "0.9", "*"]
    code, out, _ = cli(capsys, "diff", runs["a"], runs["a"])
    assert code == 0 and "(the same)" in out and "the same (" in out


def test_diff_outside_the_repository_still_compares_the_rest(runs: dict, capsys) -> None:
    code, out, _ = cli(capsys, "diff", runs["a"], runs["b"], "--json")
    data = json.loads(out)
    assert code == 0 and "not inside the project's git repository" in data["code"]["note"]
    assert data["params"] and data["data"]


def test_requirements_are_compared_by_version() -> None:
    run = compare.parse_requirements(
        "numpy==1.26.4\n# Editable install (mltrail==0.1.0)\n-e /src/mltrail\n"
        "torch @ https://example.com/torch.whl\nScikit_Learn==1.5.0\n"
    )
    assert run == {
        "numpy": "1.26.4",
        "mltrail": "0.1.0 (editable)",
        "torch": "https://example.com/torch.whl",
        "scikit-learn": "1.5.0",
    }
    now = {**run, "numpy": "2.0.0", "pandas": "2.2.0"}
    del now["torch"]
    assert compare.package_differences(run, now) == [
        ("numpy", "1.26.4", "2.0.0"),
        ("pandas", "-", "2.2.0"),
        ("torch", "https://example.com/torch.whl", "-"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["verify", "0123456789abcdef0123456789abcdef"], "There is no run"),
        (["verify", "{a}", "--path", "{tmp}"], "is not inside a git repository"),
        (["diff", "{a}", "0123456789abcdef0123456789abcdef"], "There is no run"),
    ],
)
def test_errors_are_one_line(runs: dict, capsys, tmp_path: Path, args, message) -> None:
    values = {"a": runs["a"], "tmp": str(tmp_path)}
    code, out, err = cli(capsys, *(a.format(**values) for a in args))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith(f"mltrail {args[0]}: ")
