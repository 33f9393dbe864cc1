"""Run ids by prefix in every verb, listing runs without git, tables that fit the terminal, and
read verbs that answer without starting MLflow: the ``mltrail`` command run as a user types it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import git

import mltrail

MLTRAIL = Path(sys.executable).with_name("mltrail")
LONG_NAME = "a-rather-long-experiment-name-for-the-listing"


def mltrail_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, **extra: str):
    """``mltrail ARGS`` in a fresh process, as a user types it (stdout is not a terminal)."""
    environ = {**os.environ, **(env or {})}
    environ.pop("COLUMNS", None)
    environ.update(extra)
    return subprocess.run(
        [str(MLTRAIL), *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=240
    )


@pytest.fixture(scope="module")
def store(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Runs of two experiments made in a git repository: a finished one with 30 params and a
    system metric, a failed one, a run whose data was dirty, and two runs whose ids share a
    prefix (ids set in the store's tables, as runs imported by another tool may have)."""
    base = tmp_path_factory.mktemp("ids")
    repo = base / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text("print('train')\n")
    (repo / "model.bin").write_bytes(b"weights " * 100)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    options = {"system_metrics": False, "tracking_uri": module_store}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        mp.setenv("MLTRAIL_SPOOL_DIR", str(base / "spool"))
        with mltrail.start_run(experiment="listing", run_name="wide", **options) as wide:
            wide.log_params({f"param_{i:02d}": i for i in range(30)})
            for i in range(8):
                wide.log_metrics({f"metric_with_a_long_name_{i}": 0.123456789 * i}, step=0)
            wide.log_checkpoint(repo / "model.bin")
        with (
            pytest.raises(RuntimeError),
            mltrail.start_run(experiment=LONG_NAME, run_name="crashed", **options) as failed,
        ):
            failed.log_metrics({"loss": 1.5}, step=0)
            raise RuntimeError("diverged")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(module_store)
    client.log_metric(wide.run_id, "system/cpu_utilization_percentage", 12.5)
    exp = client.get_experiment_by_name("listing").experiment_id
    tags = {"mltrail.git.dirty": "false", "mltrail.dvc.data_dirty": "true"}
    data_dirty = client.create_run(exp, run_name="data-dirty", tags=tags).info.run_id
    client.set_terminated(data_dirty)
    twins = []
    for suffix in ("1", "2"):
        made = client.create_run(exp, run_name=f"twin{suffix}").info.run_id
        client.set_terminated(made)
        twins.append(("abcdef" + "0" * 25 + suffix, made))
    db = sqlite3.connect(module_store[len("sqlite:///") :])
    with db:
        for new, old in twins:
            for table in ("runs", "tags", "latest_metrics", "metrics", "params"):
                db.execute(f"UPDATE {table} SET run_uuid = ? WHERE run_uuid = ?", (new, old))
    db.close()
    return {
        "repo": repo,
        "uri": module_store,
        "env": {"MLFLOW_TRACKING_URI": module_store},
        "wide": wide.run_id,
        "failed": failed.run_id,
        "data_dirty": data_dirty,
        "twins": [new for new, _ in twins],
    }


@pytest.mark.parametrize(
    ("verb", "expected_code"),
    [("show", 0), ("verify", 0), ("diff", 0), ("checkout", 0), ("reproduce", 1)],
)
def test_a_prefix_of_a_run_id_names_the_run_in_every_verb(
    store: dict, tmp_path: Path, verb: str, expected_code: int
) -> None:
    run_id = store["wide"]
    prefix = run_id[:8]
    args = {
        "show": ["show", prefix],
        "verify": ["verify", prefix, "--path", str(store["repo"])],
        "diff": ["diff", prefix, store["failed"][:7]],
        "checkout": ["checkout", prefix, "--into", str(tmp_path / "restored")],
        # A command that logs no run: reproduce finds the run, reruns, then has nothing to compare.
        "reproduce": ["reproduce", prefix, "--into", str(tmp_path / "rerun"), "--", "true"],
    }[verb]
    result = mltrail_cli(*args, cwd=store["repo"], env=store["env"])
    assert result.returncode == expected_code, result.stdout + result.stderr
    assert run_id in result.stdout
    assert "There is no run" not in result.stderr
    if verb == "diff":
        assert store["failed"] in result.stdout


@pytest.mark.parametrize("through", ["sqlite", "mlflow"])
def test_an_ambiguous_prefix_lists_the_runs_it_matches(
    store: dict, tmp_path: Path, through: str
) -> None:
    extra = {"MLTRAIL_SQLITE_FAST_READS": "0"} if through == "mlflow" else {}
    result = mltrail_cli("show", "abcdef00", cwd=tmp_path, env=store["env"], **extra)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "mltrail show: 'abcdef00' is the start of 2 run ids; give more characters:"
    assert {line.split()[0] for line in lines[1:]} == set(store["twins"])
    assert all("twin" in line for line in lines[1:])
    # One more character is enough.
    result = mltrail_cli("show", store["twins"][1], "--json", cwd=tmp_path, env=store["env"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["run"]["run_name"] == "twin2"


def test_a_prefix_needs_six_characters(store: dict, tmp_path: Path) -> None:
    result = mltrail_cli("diff", store["wide"][:5], store["failed"], cwd=tmp_path, env=store["env"])
    assert result.returncode == 2
    assert "needs at least 6 characters" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_runs_lists_without_git(store: dict, tmp_path: Path) -> None:
    """Outside any git repository: every run, one experiment, one status, the newest N."""
    result = mltrail_cli("runs", "--all", "--json", cwd=tmp_path, env=store["env"])
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    ids = [r["run_id"] for r in listed["runs"]]
    mine = {store["wide"], store["failed"], store["data_dirty"], *store["twins"]}
    assert mine <= set(ids) and listed["commit"] is None
    assert {r["match"] for r in listed["runs"]} == {"listed"}
    starts = [r["start_time"] for r in listed["runs"]]
    assert starts == sorted(starts, reverse=True)

    result = mltrail_cli(
        "runs", "--experiment", LONG_NAME, "--json", cwd=tmp_path, env=store["env"]
    )
    assert [r["run_id"] for r in json.loads(result.stdout)["runs"]] == [store["failed"]]

    result = mltrail_cli("runs", "--status", "failed", "--json", cwd=tmp_path, env=store["env"])
    runs = json.loads(result.stdout)["runs"]
    assert store["failed"] in {r["run_id"] for r in runs}
    assert {r["status"] for r in runs} == {"FAILED"}

    result = mltrail_cli("runs", "--all", "--limit", "2", cwd=tmp_path, env=store["env"])
    assert result.returncode == 0
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ids[:2]

    result = mltrail_cli("runs", "--status", "DONE", cwd=tmp_path, env=store["env"])
    assert result.returncode == 2 and "is not a run status" in result.stderr


def test_runs_lines_fit_the_terminal_and_show_data_dirty(store: dict, tmp_path: Path) -> None:
    whole = mltrail_cli("runs", "--all", cwd=tmp_path, env=store["env"])
    assert max(len(line) for line in whole.stdout.splitlines()) > 100  # the case needs cutting
    rows = {line.split()[0]: line.split() for line in whole.stdout.splitlines()[1:]}
    assert rows[store["data_dirty"]][6] == "data"  # DIRTY: the run's data differed
    assert rows[store["wide"]][6] == "no"

    for columns in (100, 80):
        fitted = mltrail_cli("runs", "--all", cwd=tmp_path, env=store["env"], COLUMNS=str(columns))
        assert fitted.returncode == 0, fitted.stderr
        lines = fitted.stdout.splitlines()
        assert max(len(line) for line in lines) <= columns, fitted.stdout
        assert len(lines) == len(whole.stdout.splitlines())
        short = {line.split()[0]: line for line in lines[1:]}
        wide = next(line for key, line in short.items() if store["wide"].startswith(key))
        assert "(+" in wide  # metrics left out are counted
        assert " data " in next(
            line for key, line in short.items() if store["data_dirty"].startswith(key)
        )
    # The abbreviated id is one that `show` takes.
    shown = mltrail_cli("show", wide.split()[0], cwd=tmp_path, env=store["env"])
    assert shown.returncode == 0 and store["wide"] in shown.stdout


def test_show_puts_model_metrics_first_and_folds_long_params(store: dict, tmp_path: Path) -> None:
    result = mltrail_cli("show", store["wide"], cwd=tmp_path, env=store["env"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "Params (30)" in lines
    params = [line for line in lines if line.startswith("  param_")]
    assert len(params) == 20
    assert "  ... and 10 more (--all shows every param)" in lines
    metrics = lines[lines.index("Metrics (latest)") + 1 :]
    names = [line.split()[0] for line in metrics if line.startswith("  ")]
    assert names[-1] == "system/cpu_utilization_percentage"
    assert names[0] == "metric_with_a_long_name_0"

    result = mltrail_cli("show", store["wide"], "--all", cwd=tmp_path, env=store["env"])
    assert len([line for line in result.stdout.splitlines() if line.startswith("  param_")]) == 30
    assert "more (--all" not in result.stdout


def test_show_aligns_the_data_of_a_scikit_learn_run(store: dict, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression

    from mltrail.integrations.sklearn import TrackedEstimator

    model = TrackedEstimator(
        LogisticRegression(), experiment="listing", log_model=False, log_plots=False
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(store["repo"])
        model.fit([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 1.0]], [0, 1, 0, 1])
    result = mltrail_cli("show", model.run_id_, cwd=tmp_path, env=store["env"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    data = lines[lines.index(next(x for x in lines if x.startswith("Data ("))) + 1 :]
    data = data[: data.index("")]
    note = next(line for line in data if line.startswith("  note "))
    train = next(line for line in data if line.startswith("  train "))
    column = len(note) - len(note[2:].split(maxsplit=1)[1])  # where the note's text begins
    assert train[column - 2 : column] == "  " and train[column] != " ", data


def test_read_verbs_do_not_start_mlflow_on_the_default_store(store: dict, tmp_path: Path) -> None:
    """A fresh process on the default store (./mlflow.db, no MLFLOW_TRACKING_URI) answers every
    read without importing MLflow, errors included."""
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(store["uri"][len("sqlite:///") :], work / "mlflow.db")  # artifact URIs are absolute
    model = work / "model.bin"
    shutil.copy(store["repo"] / "model.bin", model)
    commit = git(store["repo"], "rev-parse", "HEAD")
    verbs = [
        ["runs", "--all"],
        ["runs", "--commit", commit, "--repo", str(store["repo"])],
        ["show", store["wide"][:8]],
        ["show", "0123456789abcdef"],
        ["diff", store["wide"][:8], store["failed"][:8]],
        ["verify", store["wide"][:8], "--path", str(store["repo"])],
        ["which", str(model)],
        ["checkout", "0123456789abcdef"],
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    for args in verbs:
        code = (
            "import contextlib, io, sys\n"
            "from mltrail.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            f"    code = main({args!r})\n"
            "print(code, 'mlflow' in sys.modules, out.getvalue().count('\\n'))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
            timeout=240,
        )  # fmt: skip
        exit_code, imported, lines = result.stdout.split()
        assert imported == "False", (args, result.stderr)
        expected = 2 if "0123456789abcdef" in args else 0
        assert int(exit_code) == expected, (args, result.stderr)
        assert expected or int(lines) > 0, args
