"""``mltrail lineage``: a run's commit, snapshot, DVC data, checkpoints, model, registered
versions and forks, as a graph (--json), SVG, PNG, and an offline HTML page checked in
headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from tests.conftest import cli, git

import mltrail
from mltrail.adapters import EpochLog, RunSession

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
HAS_BROWSER = os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)
DATA_HASH = "0123456789abcdef0123456789abcdef"
OPTIONS = {"system_metrics": False, "end_in_background": False}


@pytest.fixture(scope="module")
def project(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A dirty git repo with a DVC-tracked file on a remote; a run with two checkpoints, a
    registered model (alias champion), a fork of it at step 1, and another run on the data."""
    repo = tmp_path_factory.mktemp("lineage") / "repo"
    (repo / ".dvc").mkdir(parents=True)
    (repo / ".dvc" / "config").write_text(
        "[core]\n    remote = storage\n['remote \"storage\"']\n    url = s3://bucket/dvc\n"
    )
    (repo / "data.csv.dvc").write_text(f"outs:\n- md5: {DATA_HASH}\n  size: 4\n  path: data.csv\n")
    (repo / ".gitignore").write_text("/data.csv\n")
    (repo / "data.csv").write_text("a,b\n")
    (repo / "train.py").write_text("print('train')\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "initial")
    (repo / "train.py").write_text("print('train, tweaked')\n")  # dirty: a snapshot
    old = os.getcwd()
    os.chdir(repo)
    try:
        options = {"experiment": "lineage", "tracking_uri": module_store, **OPTIONS}
        session = RunSession("toy", None, {"run_name": "baseline", **options})
        trail = session.open()
        log = EpochLog(session)
        log.start(0)
        for epoch in range(3):
            log.log(epoch, {"val_loss": 1.0 / (epoch + 1)})
            if epoch in (0, 2):
                ckpt = repo / f"epoch-{epoch}.ckpt"
                ckpt.write_bytes(bytes([epoch]) * 16)
                aliases = ("best", "latest") if epoch == 2 else ("latest",)
                trail.log_checkpoint(ckpt, step=epoch, metrics={"val_loss": 1.0 / (epoch + 1)}, aliases=aliases)  # fmt: skip
        session.end()
        parent = session.last_run_id
        fork = RunSession("toy", None, {"run_id": parent, **options})
        fork.open(restart_step=2)
        fork.end()
        with mltrail.start_run(run_name="other", already_run="ignore", **options):
            pass
    finally:
        os.chdir(old)
    from mlflow.tracking import MlflowClient

    # The run's model and its registration, as the Models tab and registry hold them.
    client = MlflowClient(module_store)
    experiment = client.get_run(parent).info.experiment_id
    model = client.create_logged_model(experiment, name="model", source_run_id=parent)
    client.create_registered_model("lineage-model")
    version = client.create_model_version(
        "lineage-model", model.artifact_location, run_id=parent, model_id=model.model_id
    )
    client.set_registered_model_alias("lineage-model", "champion", version.version)
    others = client.search_runs([experiment], "attributes.run_name = 'other'")
    return {"parent": parent, "fork": fork.last_run_id, "other": others[0].info.run_id}


def test_lineage_graph_of_a_model_uri(project: dict, capsys) -> None:
    code, out, err = cli(capsys, "lineage", "models:/lineage-model@champion", "--json")
    assert code == 0, err
    graph = json.loads(out)
    assert graph["run_id"] == project["parent"]
    nodes = {n["id"]: n for n in graph["nodes"]}
    kinds = {n["kind"] for n in graph["nodes"]}
    assert kinds == {"commit", "snapshot", "data", "run", "checkpoint", "model", "version"}
    data = nodes[f"data:data.csv:{DATA_HASH}"]
    assert data["details"]["hash"] == DATA_HASH and data["details"]["remote"] == "storage"
    assert data["details"]["remote_url"] == "s3://bucket/dvc"
    steps = sorted(n["details"]["step"] for n in graph["nodes"] if n["kind"] == "checkpoint")
    assert steps == [0, 2]
    version = next(n for n in graph["nodes"] if n["kind"] == "version")
    assert version["focus"] and version["details"]["aliases"] == ["champion"]
    edges = {(e["source"], e["target"]): e for e in graph["edges"]}
    run = f"run:{project['parent']}"
    assert edges[(run, f"run:{project['fork']}")]["label"] == "fork @ step 1"
    assert any(e["kind"] == "code" and e["target"] == run for e in graph["edges"])
    assert (data["id"], run) in edges
    # The run on the same data hash is drawn, linked from the data.
    assert edges[(data["id"], f"run:{project['other']}")]["kind"] == "same-data"


def test_a_run_recorded_instead_of_the_one_its_checkpoint_named_links_to_it(
    project: dict, capsys, module_store: str
) -> None:
    gone = "0" * 32  # the run id a Transformers checkpoint kept, no longer in the store
    session = RunSession("transformers", None, {"tracking_uri": module_store, **OPTIONS})
    with pytest.warns(mltrail.MltrailWarning, match="resuming the checkpoint's run"):
        session.open_checkpoint_run(gone, 2)
    session.end()
    code, out, err = cli(capsys, "lineage", session.last_run_id, "--json")
    assert code == 0, err
    edges = {(e["source"], e["target"]): e for e in json.loads(out)["edges"]}
    assert edges[(f"run:{gone}", f"run:{session.last_run_id}")]["kind"] == "resume"


def test_lineage_svg_png_and_bad_output(project: dict, capsys, tmp_path: Path) -> None:
    out_svg = tmp_path / "lineage.svg"
    code, _, err = cli(capsys, "lineage", project["fork"], "--output", str(out_svg))
    assert code == 0, err
    root = ET.parse(out_svg).getroot()
    ids = {g.get("data-id") for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("data-id")}
    assert {f"run:{project['fork']}", f"run:{project['parent']}"} <= ids
    code, _, err = cli(capsys, "lineage", project["fork"], "--output", str(tmp_path / "x.pdf"))
    assert code == 2 and ".html, .svg or .png" in err
    if not HAS_BROWSER:
        return
    png = tmp_path / "lineage.png"
    code, _, err = cli(capsys, "lineage", project["parent"], "-o", str(png))
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.browser
@pytest.mark.skipif(not HAS_BROWSER, reason="needs headless Chromium and chromedriver")
def test_lineage_html_opens_offline_in_chromium(project: dict, capsys, tmp_path: Path) -> None:
    from tests.ui.test_mlflow_ui import Browser

    page = tmp_path / "lineage.html"
    code, out, err = cli(capsys, "lineage", project["parent"], "-o", str(page))
    assert code == 0 and str(page) in out, err
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text and "<script src" not in text  # nothing fetched: offline
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(page.as_uri())
        nodes = browser.js(
            "return [document.body.dataset.ready, Array.from(document.querySelectorAll("
            "'.node')).map(n => [n.dataset.kind, n.dataset.id, n.getBBox().width])]"
        )
        ready, drawn = nodes
        assert int(ready) == len(drawn)
        kinds = {kind for kind, _, _ in drawn}
        assert {"commit", "snapshot", "data", "run", "checkpoint", "model", "version"} <= kinds
        assert all(width > 100 for _, _, width in drawn)  # laid out, not collapsed
        # The run is shown first; clicking the data box shows its hash and remote.
        assert browser.js("return document.getElementById('details').dataset.shown") == (
            f"run:{project['parent']}"
        )
        browser.js(
            "document.querySelector('.node[data-kind=\"data\"]')"
            ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
        )
        panel = browser.js("return document.getElementById('details').innerText")
        assert DATA_HASH in panel and "storage" in panel
    finally:
        browser.close()
