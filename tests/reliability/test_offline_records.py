"""Child runs and model registration are records of the writer: a search recorded while the
store is unreachable is journaled whole, and ``mltrail sync`` gives the same runs as online."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

from mlflow.tracking import MlflowClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from threadpoolctl import threadpool_limits

import mltrail
from mltrail.integrations.sklearn import TrackedEstimator
from tests.conftest import cli, free_port

GRID = {"C": [0.1, 1.0, 10.0], "fit_intercept": [True, False]}  # 6 candidates
PARENT = "mlflow.parentRunId"


def search(run_options: dict | None = None, **settings) -> TrackedEstimator:
    X, y = load_iris(return_X_y=True)
    model = TrackedEstimator(
        GridSearchCV(LogisticRegression(max_iter=200), GRID, cv=3),
        run_options={"system_metrics": False, "capture": False, **(run_options or {})},
        log_plots=False,
        **settings,
    )
    with threadpool_limits(1):  # BLAS threads fighting over shared cores make tiny fits slow
        return model.fit(X, y)


def timeless(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics without the search's fit and score times, which differ from fit to fit."""
    return {k: v for k, v in metrics.items() if "_time" not in k}


def recorded(client: MlflowClient, run_id: str) -> dict:
    """What a search run holds: its params, metrics, tags of interest, registration and each
    child (by candidate) with its params, metrics, status, experiment and parent."""
    run = client.get_run(run_id)
    experiment = run.info.experiment_id
    children = {}
    for child in client.search_runs([experiment], f"tags.`{PARENT}` = '{run_id}'"):
        tags = child.data.tags
        children[tags["mltrail.sklearn.candidate"]] = {
            "name": child.info.run_name,
            "params": child.data.params,
            "metrics": timeless(child.data.metrics),
            "rank": tags["mltrail.sklearn.rank"],
            "status": child.info.status,
            "experiment": child.info.experiment_id == experiment,
        }
    return {
        "status": run.info.status,
        "params": run.data.params,
        "metrics": timeless(run.data.metrics),
        "search": run.data.tags.get("mltrail.sklearn.search"),
        "registered": run.data.tags.get("mltrail.model.registered", "").split("/")[-1],
        "children": children,
    }


def test_search_recorded_offline_is_synced_like_the_same_search_online(
    module_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    client = MlflowClient(module_store)
    online = search(experiment="search-online", registered_model_name="search-online")
    expected = recorded(client, online.run_id_)
    assert len(expected["children"]) == 6 and expected["registered"] == "1"

    monkeypatch.setenv("MLTRAIL_STRICT", "0")  # the unreachable store raises inside by design
    spool = tmp_path / "offline-spool"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        offline = search(
            experiment="search-offline",
            registered_model_name="search-offline",
            tracking_uri=f"http://127.0.0.1:{free_port()}",
            run_options={"start_timeout": 3, "spool_dir": spool},
        )
    assert not [w for w in caught if issubclass(w.category, mltrail.MltrailWarning)]
    monkeypatch.setenv("MLTRAIL_STRICT", "1")
    offline_id = offline.run_id_
    assert list(spool.glob(f"{offline_id}/journal.jsonl")), "the run was journaled"

    code, out, err = cli(capsys, "sync", "--spool-dir", str(spool), "--tracking-uri", module_store)
    assert code == 0, out + err
    experiment = client.get_experiment_by_name("search-offline")
    [synced] = client.search_runs(
        [experiment.experiment_id], f"tags.`mltrail.offline_run_id` = '{offline_id}'"
    )
    assert recorded(client, synced.info.run_id) == expected
    [version] = client.search_model_versions("name = 'search-offline'")
    assert version.run_id == synced.info.run_id

    # Replayed once: a second sync finds nothing, and the store holds no second copy.
    code, out, _ = cli(capsys, "sync", "--spool-dir", str(spool), "--tracking-uri", module_store)
    assert code == 0 and "Nothing to sync" in out
    assert len(client.search_runs([experiment.experiment_id])) == 1 + 6
    assert len(client.search_model_versions("name = 'search-offline'")) == 1
