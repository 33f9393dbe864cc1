"""The kernel's hyperparameter-search pieces: candidates as child runs, the best first, and the
results table as CSV."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

import mltrail
from mltrail.adapters import (
    Candidate,
    MltrailError,
    check_max_child_runs,
    log_candidates,
    results_csv,
)


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
