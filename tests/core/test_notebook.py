"""Runs started from a real notebook, executed by `jupyter nbconvert --execute` in a real
IPython kernel, in a git repository where the notebook is new (untracked).

One execution is shared by the tests. As Jupyter Server does for the kernels it starts, the
kernel gets ``JPY_SESSION_NAME`` (here relative, as older servers set it); a later cell
removes it, and the next run cannot know its notebook. A cell also runs code that is not in
the saved file (as a cell edited and run again does), which only the history explains.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mltrail.capture.notebook import HISTORY_ARTIFACT, NOTEBOOK_ARTIFACT
from tests.conftest import cli, git, user_env

CELLS = [
    "import os\nimport mltrail\nlr = 0.1",
    'get_ipython().run_cell("lr = 0.5  # edited, run again", store_history=True);',
    'with mltrail.start_run(experiment="notebook", system_metrics=False) as trail:\n'
    '    trail.log_params({"lr": lr})\n'
    "print(trail.run_id)",
    'os.environ.pop("JPY_SESSION_NAME")\n'
    'with mltrail.start_run(experiment="notebook", system_metrics=False) as second:\n'
    "    pass\n"
    "print(second.run_id)",
    # VS Code's kernel names the notebook in the user's namespace.
    '__vsc_ipynb_file__ = os.path.abspath("analysis.ipynb")\n'
    "from mltrail.capture import notebook\n"
    "print(notebook.locate(get_ipython()))",
    # A plain MLflow run in the notebook gets the path too (mltrail's run-context provider).
    "import mlflow\n"
    'mlflow.set_experiment("notebook")\n'
    "with mlflow.start_run() as plain:\n"
    "    pass\n"
    "print(plain.info.run_id)",
]


@pytest.fixture(scope="module")
def executed(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("notebook")
    repo = base / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# analysis\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "initial")
    # A kernel spec for this interpreter, found through JUPYTER_PATH: nothing installed by hand.
    spec = base / "jupyter" / "kernels" / "mltrail-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "mltrail test", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(code) for code in CELLS]
    notebook.metadata["kernelspec"] = {"name": "mltrail-test", "display_name": "mltrail test"}
    path = repo / "analysis.ipynb"
    nbformat.write(notebook, path)
    on_disk = path.read_bytes()
    (base / "runtime").mkdir()  # no running Jupyter server to ask
    env = user_env(
        MLFLOW_TRACKING_URI=module_store,
        MLTRAIL_SPOOL_DIR=str(base / "spool"),
        JUPYTER_PATH=str(base / "jupyter"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JPY_SESSION_NAME="analysis.ipynb",
    )
    out = base / "out.ipynb"
    command = [sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute"]
    result = subprocess.run(
        [*command, "--output", str(out), "analysis.ipynb"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    done = nbformat.read(out, as_version=4)
    run_ids = [
        "".join(o.get("text", "") for o in done.cells[i].outputs if o.get("name") == "stdout")
        .strip()
        .splitlines()[-1]
        for i in (2, 3, 4, 5)
    ]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(module_store)
    return {
        "repo": repo,
        "path": path,
        "on_disk": on_disk,
        "runs": run_ids[:2],
        "vscode": run_ids[2],
        "plain": run_ids[3],
        "client": client,
    }


def _artifacts(executed: dict, run_id: str) -> Path:
    return Path(executed["client"].download_artifacts(run_id, "mltrail"))


def test_a_notebook_run_is_named_by_its_notebook(executed: dict) -> None:
    run = executed["client"].get_run(executed["runs"][0])
    path = str(executed["path"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.source.name"] == path  # not ipykernel_launcher.py
    assert run.data.tags["mlflow.source.type"] == "NOTEBOOK"
    assert run.data.tags["mltrail.notebook.path"] == path
    record = json.loads((_artifacts(executed, run.info.run_id) / "provenance.json").read_text())
    notebook = record["notebook"]
    assert notebook["path"] == path and notebook["found_by"] == "JPY_SESSION_NAME"
    assert notebook["artifact"] == NOTEBOOK_ARTIFACT and notebook["cells"] == 4
    assert record["git"]["found_from"] == "notebook"


def test_the_history_explains_code_that_is_not_in_the_saved_notebook(executed: dict) -> None:
    run = executed["client"].get_run(executed["runs"][0])
    assert run.data.params["lr"] == "0.5"  # the file says 0.1: the history says why
    history = (_artifacts(executed, run.info.run_id) / Path(HISTORY_ARTIFACT).name).read_text()
    cells = [CELLS[0], CELLS[1], "lr = 0.5  # edited, run again", CELLS[2]]
    positions = [history.index(f"# In[{n}]:\n{code}") for n, code in enumerate(cells, 1)]
    assert positions == sorted(positions)
    assert CELLS[3] not in history  # ran after the run started


def test_the_notebook_file_is_stored_and_snapshotted_like_any_file(
    executed: dict, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch
) -> None:
    run_id = executed["runs"][0]
    run = executed["client"].get_run(run_id)
    folder = _artifacts(executed, run_id)
    assert (folder / "notebook.ipynb").read_bytes() == executed["on_disk"]
    record = json.loads((folder / "provenance.json").read_text())
    assert run.data.tags["mltrail.git.dirty"] == "true"
    assert record["git"]["untracked"] == ["analysis.ipynb"]
    snapshot = run.data.tags["mltrail.git.snapshot"]
    shown = subprocess.run(
        ["git", "show", f"{snapshot}:analysis.ipynb"],
        cwd=executed["repo"],
        capture_output=True,
        check=True,
    )
    assert shown.stdout == executed["on_disk"]
    # `mltrail checkout` brings the notebook back with the rest of the code.
    monkeypatch.chdir(executed["repo"])
    target = tmp_path / "restored"
    code, out, err = cli(capsys, "checkout", run_id, "--into", str(target))
    assert code == 0, out + err
    assert (target / "analysis.ipynb").read_bytes() == executed["on_disk"]


def test_an_unknown_notebook_path_is_named_with_its_reason(executed: dict) -> None:
    run = executed["client"].get_run(executed["runs"][1])
    assert run.data.tags["mltrail.notebook.path"] == "unknown"
    assert run.data.tags["mlflow.source.name"] == "<notebook>"
    record = json.loads((_artifacts(executed, run.info.run_id) / "provenance.json").read_text())
    assert record["notebook"]["path"] is None
    assert "JPY_SESSION_NAME" in record["notebook"]["reason"]
    assert record["notebook"]["cells"] == 5
    assert os.path.basename(HISTORY_ARTIFACT) in os.listdir(_artifacts(executed, run.info.run_id))


def test_reproduce_names_the_command_that_reruns_a_notebook(
    executed: dict, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.chdir(executed["repo"])
    code, out, err = cli(capsys, "reproduce", executed["runs"][0])
    assert code == 2, out + err
    assert f"it ran the notebook {executed['path']}" in err
    assert "-- jupyter nbconvert --to notebook --execute analysis.ipynb`" in err


def test_vscode_names_the_notebook_in_the_namespace(executed: dict) -> None:
    assert executed["vscode"] == repr((str(executed["path"]), "vscode", None))


def test_a_plain_mlflow_run_in_a_notebook_is_named_by_it(executed: dict) -> None:
    run = executed["client"].get_run(executed["plain"])
    assert run.data.tags["mlflow.source.name"] == str(executed["path"])
    assert run.data.tags["mlflow.source.type"] == "NOTEBOOK"
    head = git(executed["repo"], "rev-parse", "HEAD")
    assert run.data.tags["mlflow.source.git.commit"] == head  # its repository, found from it
