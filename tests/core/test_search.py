"""The kernel's hyperparameter-search pieces: candidates as child runs, the best first, the
results table as CSV, a finished search at once, and the child runs of units of work."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

import mltrail
from mltrail.adapters import (
    Candidate,
    ChildRuns,
    MltrailError,
    check_max_child_runs,
    log_candidates,
    log_search,
    results_csv,
)


def children_of(client, trail) -> dict[str, object]:
    """The child runs of ``trail``'s run by name."""
    runs = client.search_runs([trail.experiment_id], f"tags.mlflow.parentRunId = '{trail.run_id}'")
    return {run.info.run_name: run for run in runs}


def test_the_best_candidates_become_child_runs_best_first(client):
    candidates = [
        Candidate(index=i, params={"lr": lr}, metrics={"mean_score": score}, rank=rank)
        for i, (lr, score, rank) in enumerate([(0.1, 0.7, 3), (0.01, 0.9, 1), (1.0, 0.8, 2)])
    ]
    with mltrail.start_run(experiment="kernel-search", capture=False) as trail:
        log_candidates(trail, candidates, framework="demo", search="Grid", limit=2)
    experiment = client.get_experiment_by_name("kernel-search")
    children = [
        run
        for run in client.search_runs([experiment.experiment_id])
        if run.data.tags.get("mlflow.parentRunId") == trail.run_id
    ]
    by_rank = sorted(children, key=lambda run: int(run.data.tags["mltrail.demo.rank"]))
    assert [run.info.run_name for run in by_rank] == ["candidate-1", "candidate-2"]
    best = by_rank[0]
    assert best.info.status == "FINISHED"
    assert best.data.params == {"lr": "0.01"}
    assert best.data.metrics == {"mean_score": 0.9}
    assert best.data.tags["mltrail.demo.candidate"] == "1"
    assert best.data.tags["mltrail.demo.search"] == "Grid"


def test_results_table_as_csv():
    masked = np.ma.masked_array([1, 2], mask=[False, True])
    columns = {
        "params": [{"f": len}, {"f": None}],
        "mean_test_score": np.array([0.5, 0.25]),
        "param_n": masked,
    }
    rows = list(csv.reader(io.StringIO(results_csv(columns, lambda v: getattr(v, "__name__", v)))))
    assert rows == [
        ["params", "mean_test_score", "param_n"],
        ['{"f": "len"}', "0.5", "1"],
        ['{"f": null}', "0.25", ""],
    ]
    assert results_csv({}) == "\r\n"


@pytest.mark.parametrize("value", [None, 0, 5])
def test_max_child_runs_accepts_none_and_counts(value):
    assert check_max_child_runs(value) == value


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_max_child_runs_rejects_the_rest(value):
    with pytest.raises(MltrailError, match="max_child_runs"):
        check_max_child_runs(value)


def test_a_finished_search_at_once(client):
    table = {"params": [{"C": 1.0}, {"C": 10.0}], "rank_test_score": [2, 1]}
    candidates = [
        Candidate(index=0, params={"C": 1.0}, metrics={"rank_test_score": 2}, rank=2),
        Candidate(index=1, params={"C": 10.0}, metrics={"rank_test_score": 1}, rank=1),
    ]
    with mltrail.start_run(experiment="kernel-search", capture=False) as trail:
        log_search(
            trail,
            candidates,
            framework="demo",
            search="Grid",
            best_params={"C": 10.0, "kernel": len},
            params={"search.n_splits": 3},
            table=table,
            table_file="grid.csv",
            limit=1,
            param_value=lambda v: getattr(v, "__name__", v),
        )
    run = client.get_run(trail.run_id)
    assert run.data.tags["mltrail.demo.search"] == "Grid"
    assert run.data.params == {
        "best.C": "10.0",
        "best.kernel": "len",
        "search.n_candidates": "2",
        "search.n_splits": "3",
    }
    rows = list(
        csv.reader(
            io.StringIO(Path(client.download_artifacts(trail.run_id, "grid.csv")).read_text())
        )
    )
    assert rows == [["params", "rank_test_score"], ['{"C": 1.0}', "2"], ['{"C": 10.0}', "1"]]
    assert list(children_of(client, trail)) == ["candidate-1"]


def test_units_of_work_as_child_runs_started_early_or_logged_at_their_end(client, module_store):
    parent = mltrail.start_run(experiment="kernel-units", tracking_uri=module_store, capture=False)
    units = ChildRuns(
        "demo", {"experiment": "kernel-units", "run_name": "not-this", "tags": {"a": 1}}
    )
    # A training inside unit 0 asks for its run: started now, once, with the unit's params.
    run_id = units.run_for(parent, 0, module_store, run_name="unit-0", params={"lr": 0.1})
    assert units.run_for(parent, 0, module_store, run_name="unit-0", params={"lr": 0.1}) == run_id
    assert client.get_run(run_id).data.params == {"lr": "0.1"}
    assert units.run_for(parent, 1, "sqlite:///elsewhere.db", run_name="x", params={}) is None
    units.log(
        parent,
        0,
        run_name="unit-0",
        params={"lr": 0.1},
        metrics={"value": 0.5},
        tags={"state": "COMPLETE"},
        history={"intermediate_value": [(0, 0.9), (2, 0.5)]},
    )
    units.log(
        parent, 1, run_name="unit-1", params={"lr": 1.0}, metrics={}, tags={}, status="FAILED"
    )
    units.run_for(parent, 2, module_store, run_name="unit-2", params={"lr": 0.01})
    units.end_open()  # unit 2 never ended
    parent.end()
    children = children_of(client, parent)
    assert sorted(children) == ["unit-0", "unit-1", "unit-2"]
    started = children["unit-0"]
    assert started.info.run_id == run_id and started.info.status == "FINISHED"
    assert started.data.tags["mltrail.framework"] == "demo"
    assert "a" not in started.data.tags  # the search's own tags stay on the search's run
    assert started.data.tags["state"] == "COMPLETE"
    assert started.data.metrics["value"] == 0.5
    history = client.get_metric_history(run_id, "intermediate_value")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (2, 0.5)]
    assert children["unit-1"].info.status == "FAILED"
    assert children["unit-1"].data.params == {"lr": "1.0"}
    assert children["unit-2"].info.status == "FAILED"
