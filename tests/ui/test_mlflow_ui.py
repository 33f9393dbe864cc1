"""The MLflow UI as a user sees it: a real `mlflow server` over the store the demo filled, the run
page opened in headless Chromium (driven through chromedriver's WebDriver HTTP API, no extra
package). The page must show the git commit, the dirty flag, the DVC dataset and the metric
charts; screenshots are saved with the test's output (and to docs/ with
MLTRAIL_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.server,
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
        reason="needs headless Chromium and chromedriver "
        "(Debian: apt-get install chromium chromium-driver)",
    ),
]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1000",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.time() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


class Browser:
    """Headless Chromium through chromedriver's W3C WebDriver endpoints."""

    def __init__(self, profile: Path) -> None:
        port = free_port()
        self.process = subprocess.Popen(
            [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{port}"
        wait_for(lambda: self._call("GET", "/status")["ready"], 30, "chromedriver")
        options = {"binary": CHROMIUM, "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]}
        capabilities = {"browserName": "chrome", "goog:chromeOptions": options}
        session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        self.session = f"/session/{session['sessionId']}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data, {"Content-Type": "application/json"}, method=method
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["value"]

    def open(self, url: str) -> None:
        self._call("POST", self.session + "/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self._call(
            "POST", self.session + "/execute/sync", {"script": script, "args": list(args)}
        )

    def text(self) -> str:
        return self.js("return document.body.innerText")

    def screenshot(self, *paths: Path) -> None:
        png = base64.b64decode(self._call("GET", self.session + "/screenshot"))
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)

    def close(self) -> None:
        try:
            self._call("DELETE", self.session)
        finally:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def demo(demo_run: dict) -> dict[str, Any]:
    """The store of the session's `make demo` run (tests/conftest.py)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{demo_run['output'] / 'mlflow.db'}"
    runs = _demo_runs(uri)
    assert len(runs) >= 2
    return {"output": demo_run["output"], "run": runs[-1], "client": MlflowClient(uri)}


def _demo_runs(uri: str) -> list[Any]:
    """The demo's finished runs, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("demo")
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id], "attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
    )  # fmt: skip
    return list(runs)


@pytest.fixture(scope="module")
def server(demo: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("ui-server")
    port = free_port()
    log = open(folder / "server.log", "ab")  # noqa: SIM115 - the server keeps it
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{demo['output'] / 'mlflow.db'}", "--workers", "1",
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, (folder / "server.log").read_text()[-3000:]
        with urllib.request.urlopen(uri + "/health", timeout=2) as response:
            return response.status == 200

    try:
        wait_for(healthy, 120, "mlflow server")
        yield uri
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
        log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    browser = Browser(tmp_path / "profile")
    yield browser
    browser.close()


def _close_assistant(browser: Browser) -> None:
    """MLflow's assistant panel covers a third of the page; a user would close it too."""
    browser.js(
        "const b = document.querySelector("
        "'[data-component-id=\"mlflow.assistant.chat_panel.close\"]'); if (b) b.click();"
    )


def test_run_page_shows_commit_dirty_flag_datasets_and_metric_charts(
    demo, server, browser, tmp_path
) -> None:
    run = demo["run"]
    page = f"{server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    commit = run.data.tags["mlflow.source.git.commit"]
    (dataset,) = run.inputs.dataset_inputs
    screenshots = []
    update_docs = os.environ.get("MLTRAIL_UPDATE_SCREENSHOTS") == "1"

    browser.open(page)
    text = wait_for(
        lambda: (t := browser.text()) and "Datasets" in t and "mltrail.git.dirty" in t and t,
        90,
        "the run overview",
    )
    _close_assistant(browser)
    assert run.info.run_id in text
    assert commit[:7] in text  # the Source line: script, branch, commit
    assert re.search(r"mltrail\.git\.dirty\s*:\s*false", text)
    assert f"{dataset.dataset.name} ({dataset.dataset.digest})" in text  # the DVC hash
    assert "Dvc" in text or "dvc" in text  # the dataset's source type
    overview = tmp_path / "mlflow-run.png"
    time.sleep(1)  # let the panel's close animation finish
    browser.screenshot(overview, *([ROOT / "docs" / "mlflow-run.png"] if update_docs else []))
    screenshots.append(overview)

    metrics = [k for k in run.data.metrics if not k.startswith("system/")]
    browser.open(page + "/model-metrics")
    wait_for(
        lambda: (
            browser.js("return document.querySelectorAll('.js-plotly-plot').length") >= len(metrics)
        ),
        90,
        "the metric charts",
    )
    text = browser.text()
    for key in ("val-logloss", "train-logloss", "val-error"):
        assert key in text
    # Each chart drew its line: one point per boosting round.
    points = browser.js(
        "return Array.from(document.querySelectorAll('.js-plotly-plot')).map("
        "p => p.querySelectorAll('.scatterlayer .point').length)"
    )
    rounds = len(demo["client"].get_metric_history(run.info.run_id, "val-logloss"))
    assert points and all(n == rounds for n in points), points
    _close_assistant(browser)
    charts = tmp_path / "mlflow-run-metrics.png"
    time.sleep(1)
    browser.screenshot(charts, *([ROOT / "docs" / "mlflow-run-metrics.png"] if update_docs else []))
    screenshots.append(charts)
    assert all(p.stat().st_size > 10_000 for p in screenshots)  # real pictures, not blanks
    print("screenshots:", *screenshots)


def test_run_page_lists_the_logged_model_and_who_created_the_run(
    demo, server, browser, tmp_path
) -> None:
    """MLflow 3's run page: the final model under "Logged models", "Created by" the user, in an
    experiment created as a model-training one."""
    run, client = demo["run"], demo["client"]
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    model_id = run.data.tags["mltrail.model.id"]
    user = run.data.tags["mlflow.user"]
    assert user and user != "unknown"
    # MLflow 3.17's UI takes its mode from the GenAI / Model training switch (remembered by the
    # browser); a fresh browser starts on GenAI, whose run page has no model section.
    page = (
        f"{server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        "?workflowType=machine_learning"
    )
    browser.open(page)
    text = wait_for(
        lambda: (
            (t := browser.text())
            and "Created by" in t
            and re.search(r"Logged models \(1\)[\s\S]*\bfinal-model\s+Ready\b", t)
            and t
        ),  # the model's row renders after the section's header
        90,
        "the run page's logged models",
    )
    assert re.search(r"Created by\s+" + re.escape(user) + r"\s", text)
    section = text[text.index("Logged models (") :]
    assert section.startswith("Logged models (1)")
    assert re.search(r"\bfinal-model\s+Ready\b", section), section[:400]
    # the row links to the LoggedModel's own page
    links = browser.js(
        "return Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))"
    )
    assert any(model_id in (href or "") for href in links), links
    _close_assistant(browser)
    time.sleep(1)
    browser.js("window.scrollTo(0, document.body.scrollHeight)")
    shot = tmp_path / "mlflow-logged-models.png"
    browser.screenshot(shot)
    assert shot.stat().st_size > 10_000
