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
    SearchRun,
    check_max_child_runs,
    direction_params,
    log_candidates,
    log_search,
    results_csv,
    value_names,
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


class Study:
    """A search's own object, as a framework hands it to each callback."""


def test_a_search_run_kept_with_its_search_resumed_and_ended_as_its_units_tell(
    client, module_store
):
    search = SearchRun(
        "demo", None, {"experiment": "kernel-search-run", "capture": False}, search="study"
    )
    study, other = Study(), Study()
    assert search.current(study, 0) is None
    trail = search.open(study, 0)
    assert search.current(study, 1) is trail and search.current(other, 1) is None
    search.log_unit(
        trail,
        0,
        state="COMPLETE",
        params={"x": 1},
        values={"value": 0.5},
        history={"intermediate_value": [(0, 0.9), (1, 0.5)]},
        tags={"mltrail.demo.study": "s"},
    )
    search.log_best(trail, 0, 0, 0.5, {"x": 1})
    search.log_unit(
        trail, 1, state="PRUNED", params={"x": 2}, values={"value": 0.7}, complete=False
    )
    search.run_for(trail, 2, module_store, {"x": 3})  # a training inside unit 2, never reported
    assert [n for n in range(4) if search.missed(n)] == [2, 3]
    search.end(lambda t: t.log_metrics({"summary": 1.0}, step=0), failed=[2])
    search.end(lambda t: pytest.fail("no run is open"))
    run = client.get_run(trail.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mltrail.exception.message"] == "trial 2 failed and stopped the study"
    assert run.data.tags["mltrail.demo.best_trial"] == "0"
    assert run.data.tags["mltrail.demo.best.x"] == "1"
    assert [(m.step, m.value) for m in client.get_metric_history(trail.run_id, "value")] == [
        (0, 0.5)  # the values of complete units, by unit number
    ]
    assert run.data.metrics["best_value"] == 0.5 and run.data.metrics["summary"] == 1.0
    children = children_of(client, trail)
    assert sorted(children) == ["trial-0", "trial-1", "trial-2"]
    assert children["trial-0"].data.tags["mltrail.demo.trial"] == "0"
    assert children["trial-0"].data.tags["mltrail.demo.state"] == "COMPLETE"
    assert children["trial-0"].data.tags["mltrail.demo.study"] == "s"
    assert children["trial-1"].data.tags["mltrail.demo.state"] == "PRUNED"
    assert children["trial-1"].info.status == "FINISHED"
    assert children["trial-2"].info.status == "FAILED"  # started, never reported
    history = client.get_metric_history(children["trial-0"].info.run_id, "intermediate_value")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.5)]

    # The same search loaded again: its kept run goes on; units before this call are not missed.
    again = search.open(Study(), 4, trail.run_id)
    assert again.run_id == trail.run_id and not search.missed(3)
    search.log_unit(again, 4, state="FAIL", params={}, values={}, failed=True)
    search.log_front(again, 4, [0, 4])
    search.end(lambda t: None)
    run = client.get_run(trail.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mltrail.resume_count"] == "1"
    assert run.data.tags["mltrail.demo.best_trials"] == "0,4"
    assert run.data.metrics["pareto_front_size"] == 2
    assert children_of(client, trail)["trial-4"].info.status == "FAILED"

    # A kept run that is gone: a warning and a new run that names it.
    with pytest.warns(mltrail.MltrailWarning, match="demo: resuming the study's run failed"):
        fresh = search.open(other, 0, "0" * 32)
    assert fresh.run_id != trail.run_id
    search.end(lambda t: None)
    run = client.get_run(fresh.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.demo.resumed_run"] == "0" * 32


def test_a_search_run_into_a_given_trail_never_resumes_another(client):
    given = mltrail.start_run(experiment="kernel-search-run", capture=False)
    search = SearchRun("demo", given)
    assert search.open(Study(), 0, "0" * 32) is given  # the kept run id is not looked at
    search.end(lambda t: None)
    assert given.status is None  # its owner ends it
    given.end()


class Unit:
    """A unit of work as the framework keeps it: its number and whether it failed."""

    def __init__(self, number: int, failed: bool = False) -> None:
        self.number, self.failed = number, failed


class Progress:
    """The framework's object that closes when the search's call is over."""

    def close(self) -> None:
        pass


def test_a_search_driven_by_its_lifecycle_enter_run_call_and_end(client):
    search = SearchRun("demo", None, {"experiment": "kernel-search-life", "capture": False})
    study, kept, opened, ended = Study(), [], [], []
    study.units = [Unit(0), Unit(1), Unit(2, failed=True)]

    def summary(trail, searched, unseen) -> None:
        ended.append((searched, [unit.number for unit in unseen]))

    def end(error=None) -> None:
        search.end_call(lambda s: s.units, lambda unit: unit.failed, summary, error)

    def enter(number: int, run_id=None):
        progress = Progress()

        def started(trail) -> None:  # once per search: the end of its call watched
            opened.append(trail.run_id)
            search.end_after_call(progress, "close", end)

        trail = search.enter(
            study, number, run_id, end_previous=end, opened=started, keep=kept.append, preload=()
        )
        return trail, progress

    def optimize() -> str:
        trail, progress = enter(0)
        assert enter(1)[0] is trail and opened == [trail.run_id]  # one run, opened once
        search.log_unit(trail, 0, state="COMPLETE", params={}, values={"value": 1.0})
        progress.close()  # the call is over: units 1 and 2 never reported, 2 failed
        return trail.run_id

    run_id = search.run_call(optimize, lambda: None, end)
    assert kept == [run_id] and ended == [(study, [1, 2])]
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["mltrail.exception.message"] == "trial 2 failed and stopped the search"

    # The same search again, from its kept run; the call raises: the run ends FAILED with it.
    study.units = [Unit(3)]

    def failing() -> None:
        enter(3, run_id)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search.run_call(failing, lambda: None, end)
    assert kept == [run_id] and ended[-1] == (study, [3])  # resumed: its id is kept already
    assert client.get_run(run_id).info.status == "KILLED"


def test_value_names_and_direction_params_of_one_or_several_objectives():
    assert value_names(1) == ["value"] and value_names(2) == ["value_0", "value_1"]
    assert value_names(2, ["loss", "latency"]) == ["loss", "latency"]
    assert direction_params(["minimize"]) == {"direction": "minimize"}
    assert direction_params(("minimize", "maximize")) == {"directions": ["minimize", "maximize"]}


def test_the_pareto_front_is_asked_for_only_when_a_unit_may_be_on_it() -> None:
    from mltrail.recording.search import dominated

    minimize = [True, False]  # the first objective down, the second up
    assert dominated([3.0, 1.0], {0: [2.0, 1.0]}, minimize)
    assert not dominated([2.0, 1.0], {0: [2.0, 1.0]}, minimize)  # equal: on the front too
    assert not dominated([1.0, 0.0], {0: [2.0, 1.0]}, minimize)  # better in one

    logged: list[tuple[int, list[int]]] = []
    asked: list[int] = []

    class Search(SearchRun):
        def log_front(self, trail, step, numbers):
            logged.append((step, numbers))

    search = Search("demo")
    points = {0: [2.0, 1.0], 1: [3.0, 0.5], 2: [1.0, 0.0]}

    def front(upto: int):
        asked.append(upto)
        done = {n: v for n, v in points.items() if n <= upto}
        return [(n, v) for n, v in done.items() if not dominated(v, done, minimize)]

    for step in range(3):
        search.follow_front(None, step, points[step], minimize, lambda s=step: front(s))
    search.follow_front(None, 3, None, minimize, lambda: front(3))  # pruned: no values
    assert asked == [0, 2]  # unit 1 is dominated by unit 0: the front stays
    assert logged == [(0, [0]), (1, [0]), (2, [0, 2]), (3, [0, 2])]
