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


# MLflow silences its own "Any type hint" notice while it imports its GenAI schemas, by
# replacing ``warnings.showwarning`` for every thread. When mltrail imports MLflow on its thread
# and a ``catch_warnings`` block of the user's thread (scikit-learn's ``fit``) ends meanwhile,
# the user's block restores the function it saved and the notice reaches it. The script emits
# the notice as it then arrives: on mltrail's thread, with nothing of MLflow's in the way.
INTERLEAVED_IMPORT = """
import threading, typing, warnings

import mltrail  # noqa: F401  (what a recorded script has imported)
from mlflow.types.type_hints import _infer_colspec_type_from_type_hint


def mltrail_thread_imports_mlflow():
    _infer_colspec_type_from_type_hint(typing.Any)


thread = threading.Thread(target=mltrail_thread_imports_mlflow, name="mltrail-record")
thread.start()
thread.join()
print("user:", flush=True)
_infer_colspec_type_from_type_hint(typing.Any)  # the user's own call: the notice is theirs
"""


def test_mlflows_own_schema_notice_on_mltrails_thread_is_not_printed(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(INTERLEAVED_IMPORT)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "default"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "user:"
    # Once: for the user's own call, none for the one on mltrail's thread.
    assert done.stderr.count("Any type hint is inferred as AnyType") == 1, done.stderr
