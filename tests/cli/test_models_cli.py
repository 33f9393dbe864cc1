"""Registered models with provenance: `mltrail register`, `which models:/...`, `checkout
models:/...`, `best`, on a real git + DVC project, real runs and a real MLflow registry."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from tests.cli.test_checkout import make_project
from tests.conftest import cli, git

import mltrail
from mltrail.query.registry import parse_models_uri

EXPERIMENT = "models-cli"
X = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]])
Y = np.array([0, 1, 0, 1])
# skops, MLflow 3's default for scikit-learn, imports every estimator on its first save.
PICKLE = {"serialization_format": "pickle"}


def final_model_uri(client, run_id: str) -> str:
    """Where a run's final model is: its LoggedModel on MLflow 3, else its model/ folder."""
    run = client.get_run(run_id)
    found = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    found = [m for m in found if m.name == "final-model"]
    return f"models:/{found[-1].model_id}" if found else f"runs:/{run_id}/model"


@pytest.fixture(scope="module")
def project(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run "clean" (registered as churn/1 by log_model), run "dirty" (the best latest val_loss,
    and the best checkpoint), and a failed run with a lower val_loss; then the project moves on.
    """
    from mlflow import MlflowClient

    base = tmp_path_factory.mktemp("models")
    repo = make_project(base)
    folder = base / "checkpoints"
    folder.mkdir()
    runs, code = {}, {}
    model = LogisticRegression().fit(X, Y)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        mp.setenv("MLFLOW_TRACKING_URI", module_store)
        mp.setenv("MLTRAIL_SPOOL_DIR", str(base / "spool"))
        mp.setenv("MLTRAIL_END_IN_BACKGROUND", "false")
        with mltrail.start_run(
            experiment=EXPERIMENT, run_name="clean", system_metrics=False
        ) as run:
            for epoch, loss in enumerate([0.9, 0.5, 0.3]):
                run.log_metrics({"val_loss": loss}, step=epoch)
            run.log_model(
                model, "sklearn", signature_from=X, registered_model_name="churn", **PICKLE
            )
        runs["clean"] = run.run_id
        code["clean"] = (repo / "train.py").read_text()
        (repo / "train.py").write_text("print('v1, tuned')\n")
        code["dirty"] = (repo / "train.py").read_text()
        with mltrail.start_run(
            experiment=EXPERIMENT, run_name="dirty", system_metrics=False
        ) as run:
            best = None
            for epoch, loss in enumerate([0.8, 0.1, 0.2]):
                run.log_metrics({"val_loss": loss}, step=epoch)
                path = folder / f"epoch={epoch}.ckpt"
                path.write_bytes(f"weights {epoch}".encode())
                aliases = ("latest", "best") if best is None or loss < best else ("latest",)
                best = loss if best is None else min(best, loss)
                run.log_checkpoint(path, step=epoch, metrics={"val_loss": loss}, aliases=aliases)
            run.log_model(model, "sklearn", signature_from=X, **PICKLE)
        runs["dirty"] = run.run_id
        with mltrail.start_run(
            experiment=EXPERIMENT, run_name="failed", system_metrics=False, capture=False
        ) as run:
            run.log_metrics({"val_loss": 0.01}, step=0)
            run.end("FAILED")
        runs["failed"] = run.run_id
        with mltrail.start_run(experiment=EXPERIMENT, run_name="bare", capture=False) as run:
            run.log_params({"model": "none"})
        runs["bare"] = run.run_id
    client = MlflowClient(module_store)
    # A LoggedModel of the failed run (MLflow 3), as MLflow's own log_model makes one.
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    logged = client.create_logged_model(experiment, name="model", source_run_id=runs["failed"])
    # The project moves on: new code, committed.
    (repo / "train.py").write_text("print('v2')\n")
    git(repo, "commit", "-q", "-am", "v2")
    data_md5 = (repo / "data.csv.dvc").read_text().split("md5: ")[1].split()[0]
    return {
        "repo": repo,
        "runs": runs,
        "code": code,
        "client": client,
        "model_id": logged.model_id,
        "data_md5": data_md5,
    }


@pytest.fixture(scope="module")
def registered(project: dict, module_store: str) -> dict:
    """`mltrail register DIRTY churn --checkpoint best --alias champion --json`, by prefix."""
    from mltrail.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            [
                "register", project["runs"]["dirty"][:10], "churn", "--checkpoint", "best",
                "--alias", "champion", "--json", "--tracking-uri", module_store,
            ]
        )  # fmt: skip
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue())


def test_log_model_registration_carries_the_runs_provenance(project: dict) -> None:
    client, run_id = project["client"], project["runs"]["clean"]
    run = client.get_run(run_id)
    version = client.get_model_version("churn", "1")
    assert version.run_id == run_id
    assert run.data.tags["mltrail.model.registered"] == "churn/1"
    tags = version.tags
    assert tags["mltrail.run_id"] == run_id
    assert tags["mlflow.source.git.commit"] == git(project["repo"], "rev-parse", "HEAD~1")
    assert tags["mltrail.git.dirty"] == "false"
    # Set at the run's end, after the registration: copied onto the version then.
    assert tags["mltrail.fingerprint"] == run.data.tags["mltrail.fingerprint"]
    assert tags["mltrail.data.data.csv"] == project["data_md5"]
    assert "mltrail.data.images" in tags


def test_register_a_checkpoint_with_an_alias(project: dict, registered: dict) -> None:
    client, run_id = project["client"], project["runs"]["dirty"]
    run = client.get_run(run_id)
    assert registered["run_id"] == run_id
    assert registered["uri"] == f"models:/churn/{registered['version']}"
    assert registered["checkpoint"]["step"] == 1 and registered["checkpoint"]["path"] == (
        "checkpoints/epoch=1.ckpt"
    )
    version = client.get_model_version_by_alias("churn", "champion")
    assert str(version.version) == registered["version"] != "1"
    assert version.source.endswith("/checkpoints/epoch=1.ckpt")
    tags = version.tags
    assert tags["mltrail.git.dirty"] == "true"
    assert tags["mltrail.git.snapshot"] == run.data.tags["mltrail.git.snapshot"]
    assert tags["mltrail.fingerprint"] == run.data.tags["mltrail.fingerprint"]
    assert tags["mltrail.checkpoint.step"] == "1"
    assert tags["mltrail.data.data.csv"] == project["data_md5"]


def test_register_errors_name_what_to_do(project: dict, capsys) -> None:
    runs = project["runs"]
    code, _, err = cli(capsys, "register", runs["dirty"], "churn", "--checkpoint", "7")
    assert code == 2 and "no checkpoint '7'" in err and "(0, 1, 2)" in err
    code, _, err = cli(capsys, "register", runs["clean"], "churn", "--checkpoint", "best")
    assert code == 2 and "logged no checkpoint" in err
    code, _, err = cli(capsys, "register", runs["bare"], "other")
    assert code == 2 and "has no model to register" in err


def test_register_the_final_model_in_text(project: dict, capsys) -> None:
    client, run_id = project["client"], project["runs"]["clean"]
    code, out, err = cli(capsys, "register", run_id, "churn-final")
    assert code == 0, err
    assert "as models:/churn-final/1" in out and run_id in out
    assert git(project["repo"], "rev-parse", "HEAD~1") in out
    version = client.get_model_version("churn-final", "1")
    assert version.tags["mltrail.run_id"] == run_id
    expected = final_model_uri(client, run_id)  # a LoggedModel, else the model/ folder
    if expected.startswith("models:/"):
        assert version.source == expected
    else:
        assert version.source.endswith(f"/{run_id}/artifacts/model")
    import mlflow.pyfunc

    loaded = mlflow.pyfunc.load_model("models:/churn-final/1")
    assert list(loaded.predict(X)) == [0, 1, 0, 1]


def test_which_a_model_version_prints_its_run_and_provenance(
    project: dict, registered: dict, capsys
) -> None:
    runs = project["runs"]
    code, out, err = cli(capsys, "which", "models:/churn/1")
    assert code == 0, err
    assert out.startswith("models:/churn/1 is version 1 of registered model 'churn'")
    assert f"Run         {runs['clean']}" in out
    assert git(project["repo"], "rev-parse", "HEAD~1") in out and "data.csv" in out
    source = project["client"].get_model_version("churn", "1").source
    if source.startswith("models:/"):  # registered as its LoggedModel (MLflow 3)
        assert f"model        {source} (logged model)" in out
    code, out, err = cli(capsys, "which", "models:/churn@champion", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["model"]["version"] == registered["version"]
    assert data["model"]["aliases"] == ["champion"]
    assert data["runs"][0]["run"]["run_id"] == runs["dirty"]
    assert data["runs"][0]["code"]["snapshot"] == data["model"]["tags"]["mltrail.git.snapshot"]
    code, out, err = cli(capsys, "which", f"models:/{project['model_id']}")
    assert code == 0, err
    assert f"logged model {project['model_id']} of run {runs['failed']}" in out
    code, out, err = cli(capsys, "which", "models:/churn/99")
    assert code == 2 and "There is no model models:/churn/99" in err
    code, out, err = cli(capsys, "which", "models:/churn@nobody")
    assert code == 2 and "There is no model models:/churn@nobody" in err


def test_show_takes_a_models_uri(project: dict, capsys) -> None:
    code, out, err = cli(capsys, "show", "models:/churn/latest", "--json")
    assert code == 0, err
    assert json.loads(out)["run"]["run_id"] in project["runs"].values()


def test_checkout_a_model_alias_restores_its_code_and_data(
    project: dict, registered: dict, capsys, tmp_path: Path, monkeypatch
) -> None:
    repo = project["repo"]
    monkeypatch.chdir(repo)
    target = tmp_path / "prod"
    code, out, err = cli(capsys, "checkout", "models:/churn@champion", "--into", str(target))
    assert code == 0, out + err
    assert f"Restored run {project['runs']['dirty']}" in out
    assert (target / "train.py").read_text() == project["code"]["dirty"]
    assert (target / "data.csv").read_text() == "x,y\n1,2\n"
    assert (repo / "train.py").read_text() == "print('v2')\n"  # the user's tree: untouched


def test_best_run_and_best_checkpoint(project: dict, capsys) -> None:
    runs = project["runs"]
    code, out, err = cli(
        capsys, "best", "--metric", "val_loss", "--experiment", EXPERIMENT, "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    best = data["best"]
    # The failed run's 0.01 is not a finished model; dirty's latest 0.2 beats clean's 0.3.
    assert best["run_id"] == runs["dirty"] and best["value"] == 0.2
    assert data["candidates"] == 2 and data["direction"] == "min"
    assert best["model_uri"] == final_model_uri(project["client"], runs["dirty"])
    assert best["provenance"]["dirty"] == "true"
    assert best["provenance"]["data"]["data.csv"] == project["data_md5"]
    code, out, err = cli(capsys, "best", "--metric", "val_loss", "--max")
    assert code == 0, err
    assert f"run          {runs['clean']}" in out and "registered   models:/churn" in out
    assert "val_loss     0.3" in out and git(project["repo"], "rev-parse", "HEAD~1") in out
    code, out, err = cli(capsys, "best", "--metric", "val_loss", "--checkpoints", "--json")
    assert code == 0, err
    best = json.loads(out)["best"]
    assert best["run_id"] == runs["dirty"] and best["value"] == 0.1
    assert best["checkpoint"]["path"] == "checkpoints/epoch=1.ckpt"
    assert best["checkpoint"]["aliases"] == ["best"]
    code, out, err = cli(capsys, "best", "--metric", "no_such_metric")
    assert code == 1 and "has the metric 'no_such_metric'" in out
    code, out, err = cli(capsys, "best", "--metric", "val_loss", "--experiment", "nope")
    assert code == 2 and "no experiment named 'nope'" in err


def test_best_checkout_restores_the_best_runs_code(
    project: dict, capsys, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(project["repo"])
    target = tmp_path / "best"
    code, out, err = cli(capsys, "best", "--metric", "val_loss", "--max", "--checkout", str(target))
    assert code == 0, out + err
    assert f"Restored run {project['runs']['clean']}" in out
    assert (target / "train.py").read_text() == project["code"]["clean"]


@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        ("models:/churn/3", ("churn", "3", None)),
        ("models:/churn@champion", ("churn", None, "champion")),
        ("models:/m-0123456789abcdef", ("m-0123456789abcdef", None, None)),
    ],
)
def test_parse_models_uri(uri: str, parts: tuple) -> None:
    assert parse_models_uri(uri) == parts


def test_a_malformed_models_uri_is_a_usage_error(capsys) -> None:
    code, _, err = cli(capsys, "which", "models:/")
    assert code == 2 and "is not a models:/ URI" in err


def test_replayed_registration_gets_the_fingerprint_that_follows_it(project: dict) -> None:
    """`mltrail sync` replays a journal in order: the registration, then the end's tags."""
    from mltrail.recording.writer import apply_record

    client = project["client"]
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    run_id = client.create_run(experiment, tags={"mlflow.source.git.commit": "a" * 40}).info.run_id
    register = {"kind": "register", "data": {"name": "replayed", "artifact_path": "model"}}
    apply_record(client, run_id, register)
    apply_record(client, run_id, {"kind": "tags", "data": {"mltrail.fingerprint": "f" * 64}})
    tags = client.get_model_version("replayed", "1").tags
    assert tags["mlflow.source.git.commit"] == "a" * 40 and tags["mltrail.run_id"] == run_id
    assert tags["mltrail.fingerprint"] == "f" * 64
    assert client.get_run(run_id).data.tags["mltrail.model.registered"] == "replayed/1"


def test_provenance_stored_while_the_version_is_created_reaches_it(project: dict) -> None:
    """The run's provenance (captured in the background) is sent by the writer's thread while
    the model's registration is under way on the uploader's: tags and data stored after the
    registration read the run, but before the version was noted as registered, still reach the
    version, as do data logged after it."""
    from mlflow import MlflowClient

    from mltrail.recording.writer import apply_record

    client = project["client"]
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    run_id = client.create_run(experiment).info.run_id
    commit = "c" * 40

    def send(kind: str, data) -> None:
        apply_record(client, run_id, {"kind": kind, "data": data})

    class ProvenanceArrivesMeanwhile(MlflowClient):
        def create_model_version(self, *args, **kwargs):
            send("tags", {"mlflow.source.git.commit": commit})
            send("inputs", [{"name": "train.csv", "digest": "d1", "source": "{}"}])
            return super().create_model_version(*args, **kwargs)

    uploader = ProvenanceArrivesMeanwhile(client.tracking_uri)
    register = {"kind": "register", "data": {"name": "meanwhile", "artifact_path": "model"}}
    apply_record(uploader, run_id, register)
    send("inputs", [{"name": "holdout.csv", "digest": "d2", "source": "{}"}])
    tags = client.get_model_version("meanwhile", "1").tags
    assert tags["mltrail.run_id"] == run_id
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["mltrail.data.train.csv"] == "d1"
    assert tags["mltrail.data.holdout.csv"] == "d2"
