"""What a script using mltrail prints: MLflow's notices that ask nothing of the user stay out."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

SCRIPT = """
import mlflow
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from mltrail.integrations.sklearn import TrackedEstimator

rng = np.random.default_rng(0)
# Integer columns: MLflow hints about them in the signatures mltrail infers.
X = pd.DataFrame(rng.integers(-3, 4, size=(60, 3)), columns=["a", "b", "c"])
y = (X["a"] > 0).astype(int)
for _ in range(2):
    model = TrackedEstimator(
        LogisticRegression(), experiment="quiet", run_options={"system_metrics": False}
    )
    model.fit(X, y)
    print("run", model.run_id_, flush=True)
# The user's own pickled model: MLflow's caution is theirs to read.
mlflow.sklearn.save_model(
    LogisticRegression().fit(X, y), "own-model", serialization_format="cloudpickle"
)
"""


def test_store_creation_and_pickle_notices_are_not_printed(tmp_path: Path) -> None:
    store = tmp_path / "fresh" / "mlflow.db"  # a new store: MLflow creates its tables
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        cwd=tmp_path,
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{store}",
            "MLTRAIL_STRICT": "0",
            "MLTRAIL_ALREADY_RUN": "ignore",
        },
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert sum(line.startswith("run ") for line in output.splitlines()) == 2, output
    assert "Creating initial MLflow database tables" not in output
    assert "Updating database tables" not in output
    # The signature is mltrail's: its hint about integer columns asks nothing of the user.
    assert "Inferred schema contains integer" not in output, output
    # Once, for the model the user saved; not for the two models mltrail logged.
    assert output.count("Saving scikit-learn models in the pickle") == 1, output

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("quiet").experiment_id])
    assert len(runs) == 2
    for run in runs:  # the models were logged all the same
        files = [f.path for f in client.list_artifacts(run.info.run_id, "model")]
        assert "model/MLmodel" in files
