"""scikit-learn's own estimator checks on TrackedEstimator, with every fit recorded as a run."""

from __future__ import annotations

import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from mltrail.integrations.sklearn import TrackedEstimator

EXPERIMENT = "estimator-checks"
# Recording stays on; provenance capture, system metrics, the model and the plot are what cost
# time per run and are covered by test_sklearn.py.
OPTIONS = {
    "experiment": EXPERIMENT,
    "log_model": False,
    "log_plots": False,
    "run_options": {"capture": False, "system_metrics": False},
}
ESTIMATORS = [
    TrackedEstimator(LogisticRegression(), **OPTIONS),
    TrackedEstimator(Ridge(), **OPTIONS),
    TrackedEstimator(StandardScaler(), **OPTIONS),
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with threadpool_limits(1):
        yield


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_the_checks_were_recorded(client):
    """The checks above fitted through the recorder: finished runs and failed ones (the checks
    that expect fit to raise), for each wrapped estimator."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    by_estimator: dict[str, set[str]] = {}
    for run in runs:
        name = run.data.tags["mltrail.sklearn.estimator"]
        by_estimator.setdefault(name, set()).add(run.info.status)
    assert by_estimator == {
        "LogisticRegression": {"FINISHED", "FAILED"},
        "Ridge": {"FINISHED", "FAILED"},
        "StandardScaler": {"FINISHED", "FAILED"},
    }
    assert all(run.data.params.get("estimator__copy_X") in (None, "True") for run in runs)
