"""Team scale on object storage: ``mlflow server`` on PostgreSQL with its artifacts in S3, in the
two set-ups teams use, and a DVC remote in the same bucket.

- proxied: ``--artifacts-destination s3://.../mlflow``; the server holds the storage
  credentials, the training machines only ``MLFLOW_TRACKING_URI``;
- direct: ``--default-artifact-root s3://.../direct --no-serve-artifacts``; the training
  machines write to S3 themselves, with the usual ``AWS_*`` variables and
  ``MLFLOW_S3_ENDPOINT_URL``.

The object store is ``moto_server`` on 127.0.0.1 checking credentials (see ``s3_server``). Every
adapter trains from its own machine's process in both set-ups, with a checkpoint large enough for
multipart uploads; then the runs are found and restored through the servers.

Needs PostgreSQL and moto: skipped, with the reason, without them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mltrail.cli import main as cli
from mltrail.recording.logged_models import MODEL_ID_TAG
from tests.conftest import git
from tests.reliability.conftest import S3_BUCKET, FaultProxy, python_env, team_mlflow_server
from tests.reliability.test_team_postgres import COMMON, SCRIPTS

pytestmark = [pytest.mark.postgres, pytest.mark.server, pytest.mark.timeout(900)]

#: Size of the large checkpoint; boto3 uploads files over 8 MiB in 8 MiB parts.
CHECKPOINT_MB = int(os.environ.get("MLTRAIL_S3_CHECKPOINT_MB", "200"))
PART = 8 << 20

BIG_CHECKPOINT = """
import os
import mltrail

with mltrail.start_run(experiment="team", run_name="big-checkpoint") as trail:
    trail.log_metrics({"loss": 0.5}, step=0)
    trail.log_checkpoint(os.environ["BIG_CHECKPOINT"], step=0)
"""


# A team's clients keep MLflow's patience with a busy server (the suite's default is to fail
# fast), and download through the proxied server: moto does not serve the presigned URLs that
# MLflow clients otherwise fetch large artifacts from.
PATIENT = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "120",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
}


@pytest.fixture(autouse=True)
def _patient(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in PATIENT.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def team(postgres_server: str, s3_server, tmp_path_factory: pytest.TempPathFactory):
    """The two set-ups on one PostgreSQL cluster and one bucket: ``proxied`` and ``direct``."""
    folder = tmp_path_factory.mktemp("team-s3")
    (folder / "proxied").mkdir()
    (folder / "direct").mkdir()
    servers = [
        team_mlflow_server(
            postgres_server,
            folder / "proxied",
            ["--artifacts-destination", f"s3://{S3_BUCKET}/mlflow"],
            env=s3_server.env(),  # the server holds the storage credentials
        ),
        team_mlflow_server(
            postgres_server,
            folder / "direct",
            ["--default-artifact-root", f"s3://{S3_BUCKET}/direct", "--no-serve-artifacts"],
        ),
    ]
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        proxied, direct = pool.map(stack.enter_context, servers)  # both start at once
        yield {"proxied": proxied, "direct": direct}


def client_env(team: dict, s3_server, setup: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A training machine's environment in ``setup``: storage credentials only when direct."""
    env = python_env(
        MLFLOW_TRACKING_URI=team[setup].uri,
        MLTRAIL_SPOOL_DIR=str(tmp_path / f"spool-{setup}"),
        MLTRAIL_SYSTEM_METRICS="false",
        KERAS_BACKEND="torch",
        OMP_NUM_THREADS="1",
        **PATIENT,
    )
    for name in list(env):
        if name.startswith("AWS_") or name == "MLFLOW_S3_ENDPOINT_URL":
            del env[name]
    if setup == "direct":
        env.update(s3_server.env())
    return {**env, **extra}


def big_file(path: Path, megabytes: int) -> str:
    """A file of random bytes (written in parts: quick, and no two parts alike); the ETag S3
    gives it when uploaded in 8 MiB parts."""
    digests = []
    with open(path, "wb") as handle:
        for _ in range(0, megabytes << 20, PART):
            block = os.urandom(PART)
            handle.write(block)
            digests.append(hashlib.md5(block).digest())
    return hashlib.md5(b"".join(digests)).hexdigest() + f"-{len(digests)}"


def run_prefix(run, setup: str) -> str:
    """The S3 key prefix of a run's artifacts."""
    uri = run.info.artifact_uri
    if setup == "direct":
        assert uri.startswith(f"s3://{S3_BUCKET}/direct/"), uri
        return uri.removeprefix(f"s3://{S3_BUCKET}/")
    assert uri.startswith("mlflow-artifacts:"), uri  # clients only see the server's proxy
    return "mlflow/" + uri.removeprefix("mlflow-artifacts:").lstrip("/")


def test_every_adapter_and_a_multipart_checkpoint_in_both_setups(
    team: dict, s3_server, git_repo: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    script = COMMON + "".join(SCRIPTS.values()) + BIG_CHECKPOINT
    (git_repo / "train.py").write_text(textwrap.dedent(script))
    git(git_repo, "add", ".")
    git(git_repo, "commit", "-q", "-m", "training script")
    commit = git(git_repo, "rev-parse", "HEAD")
    (git_repo / "README.md").write_text("# project\n\nS3 runs\n")  # dirty: a snapshot to restore
    checkpoint = tmp_path / "big.ckpt"
    etag = big_file(checkpoint, CHECKPOINT_MB)
    processes = {
        setup: subprocess.Popen(
            [sys.executable, "train.py"],
            cwd=git_repo,
            env=client_env(
                team,
                s3_server,
                setup,
                tmp_path,
                BIG_CHECKPOINT=str(checkpoint),
                MLTRAIL_FLUSH_TIMEOUT="120",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for setup in ("proxied", "direct")
    }  # both set-ups train at the same time
    outputs = {setup: p.communicate(timeout=400) for setup, p in processes.items()}
    for setup, process in processes.items():
        assert process.returncode == 0, (setup, outputs[setup][1][-3000:])
        spool = tmp_path / f"spool-{setup}"
        if list(spool.glob("*/journal.jsonl")):  # what a busy server did not take in time
            sync = subprocess.run(
                [sys.executable, "-m", "mltrail.cli", "sync", "--spool-dir", str(spool)],
                env=client_env(team, s3_server, setup, tmp_path), capture_output=True,
                text=True, timeout=600,
            )  # fmt: skip
            assert sync.returncode == 0, sync.stdout + sync.stderr
            print(f"\n{setup}: the end of some runs was sent by `mltrail sync`")
    expected = {*SCRIPTS, "big-checkpoint"}

    monkeypatch.chdir(git_repo)
    for setup in ("proxied", "direct"):
        if setup == "direct":  # the test process becomes a machine with storage credentials
            for name, value in s3_server.env().items():
                monkeypatch.setenv(name, value)
        uri = team[setup].uri
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("team")
        runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
        assert set(runs) == expected, setup
        for name, run in runs.items():
            # what the training process printed tells why a run stayed open
            assert run.info.status == "FINISHED", (setup, name, outputs[setup][1][-3000:])
            assert run.data.tags["mltrail.git.dirty"] == "true"
            stored = s3_server.keys(run_prefix(run, setup) + "/")
            assert any(k.endswith("/mltrail/provenance.json") for k in stored), (setup, name)
            if name in SCRIPTS:  # a model the exit deadline cut was journaled, and synced
                assert any("/model/MLmodel" in k for k in stored), (setup, name, sorted(stored))
                said = outputs[setup][1][-3000:]  # the training's warnings, if any
                assert MODEL_ID_TAG in run.data.tags, (setup, name, run.data.tags, said)
        xgboost = s3_server.keys(run_prefix(runs["xgboost"], setup) + "/checkpoints/")
        assert len([k for k in xgboost if not k.endswith("index.json")]) == 3, sorted(xgboost)

        # the large checkpoint went up in parts and is whole: S3's ETag of its 8 MiB parts
        big = runs["big-checkpoint"]
        [key] = [k for k in s3_server.keys(run_prefix(big, setup)) if k.endswith("/big.ckpt")]
        assert s3_server.keys(key)[key] == {"size": CHECKPOINT_MB << 20, "etag": etag}, setup
        index = json.loads(
            Path(client.download_artifacts(big.info.run_id, "checkpoints/index.json")).read_text()
        )
        assert index["aliases"]["latest"] == "checkpoints/big.ckpt"
        assert index["files"]["checkpoints/big.ckpt"]["size"] == CHECKPOINT_MB << 20

        # a model one machine logged loads on another
        mlflow.set_tracking_uri(uri)
        model = mlflow.pyfunc.load_model(f"runs:/{runs['sklearn'].info.run_id}/model")
        probe = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], dtype="float32")
        assert model.predict(probe).tolist() == [1, 0]

        # find, show, identify and restore through the server
        arguments = ["--tracking-uri", uri]
        capsys.readouterr()
        assert cli(["runs", "--commit", commit[:10], "--json", *arguments]) == 0
        listed = {r["run_id"] for r in json.loads(capsys.readouterr().out)["runs"]}
        assert listed == {r.info.run_id for r in runs.values()}, setup
        assert cli(["show", big.info.run_id, *arguments]) == 0
        shown = capsys.readouterr().out
        assert big.info.run_id in shown and commit in shown, shown
        assert cli(["which", str(checkpoint), *arguments]) == 0
        assert f"is checkpoints/big.ckpt of run {big.info.run_id}" in capsys.readouterr().out
        target = tmp_path / f"restored-{setup}"
        assert cli(["checkout", runs["keras"].info.run_id, "--into", str(target), *arguments]) == 0
        assert (target / "README.md").read_text() == "# project\n\nS3 runs\n"
        assert (target / "train.py").read_text() == (git_repo / "train.py").read_text()
        assert git(target, "rev-parse", "HEAD") == commit
        s3_server.delete(key)  # moto keeps objects in memory


# --- a DVC remote on S3, credentials and the canary search --------------------------------------

TRAIN_CORE = """
import json, os, sys
import mltrail

with mltrail.start_run(experiment=os.environ["EXPERIMENT"], run_name=os.environ["RUN_NAME"],
                       snapshot_data="SNAPSHOT_DATA" in os.environ, flush_timeout=20) as trail:
    print("run " + trail.run_id, flush=True)
    trail.log_params({"lr": 0.1, "storage_key": os.environ.get("AWS_ACCESS_KEY_ID", "none")})
    for step in range(5):
        trail.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    checkpoint = os.path.join(os.environ["CHECKPOINTS"], os.environ["RUN_NAME"] + ".ckpt")
    with open(checkpoint, "wb") as handle:
        handle.write(os.urandom(1 << 20))
    trail.log_checkpoint(checkpoint, step=4)
print("trained", flush=True)
"""


def database_text(uri: str) -> bytes:
    """Every row of every table of a PostgreSQL database, as COPY writes them."""
    import io

    import psycopg2

    connection = psycopg2.connect(uri)
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        dump = io.BytesIO()
        for (table,) in cursor.fetchall():
            cursor.copy_expert(f'COPY "{table}" TO STDOUT', dump)
        return dump.getvalue()
    finally:
        connection.close()


def new_key(s3_server, user: str) -> tuple[str, str]:
    """An access key of a new IAM user allowed everything."""
    from tests.reliability.conftest import _ALLOW_ALL

    iam = s3_server.client("iam")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=_ALLOW_ALL)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def test_dvc_remote_on_s3_credentials_and_canaries(
    team: dict, s3_server, git_repo: Path, tmp_path: Path
) -> None:
    from mltrail.capture import datasnap
    from tests.conftest import workspace_files
    from tests.reliability.test_secrets import canary, found_in, snapshot_contents

    direct = team["direct"].uri
    file_key, dvc_key = new_key(s3_server, "bob"), new_key(s3_server, "carol")
    canaries = {
        "env_access_key": s3_server.access_key,
        "env_secret_key": s3_server.secret_key,
        "file_access_key": file_key[0],
        "file_secret_key": file_key[1],
        "dvc_access_key": dvc_key[0],
        "dvc_secret_key": dvc_key[1],
        "wrong_secret_key": canary("wrongsecret"),
        "uri": canary("uri"),
    }
    # a project with a git remote and a DVC remote on S3 whose credentials are in config.local
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(git_repo, "remote", "add", "origin", str(origin))
    dvc = [sys.executable, "-m", "dvc"]
    for command in (
        ["init", "-q"],
        ["remote", "add", "-d", "storage", f"s3://{S3_BUCKET}/dvc"],
        ["remote", "modify", "storage", "endpointurl", s3_server.endpoint],
        ["remote", "modify", "storage", "region", "us-east-1"],
        ["remote", "modify", "--local", "storage", "access_key_id", dvc_key[0]],
        ["remote", "modify", "--local", "storage", "secret_access_key", dvc_key[1]],
    ):
        subprocess.run([*dvc, *command], cwd=git_repo, check=True, capture_output=True)
    (git_repo / "data.csv").write_text("x,y\n1,2\n")
    with datasnap.dvc_repo(git_repo) as repo:
        repo.add([str(git_repo / "data.csv")])
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "data v1")
    git(git_repo, "push", "-q", "origin", "main")
    (git_repo / "train.py").write_text(textwrap.dedent(TRAIN_CORE))
    (git_repo / "data.csv").write_text("x,y\n1,2\n3,4\n")  # modified, not added: snapshotted
    state = workspace_files(git_repo)
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = {file_key[0]}\naws_secret_access_key = {file_key[1]}\n"
    )
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    MlflowClient(direct).create_experiment(
        "missing-bucket", artifact_location="s3://mltrail-not-created/runs"
    )

    host = direct.removeprefix("http://")
    base = {
        "MLFLOW_TRACKING_URI": f"http://alice:{canaries['uri']}@{host}",
        "MLTRAIL_STRICT": "0",  # as users run it: the failing uploads warn
        "HOME": str(home),
        "CHECKPOINTS": str(checkpoints),
        "EXPERIMENT": "s3",
    }
    no_keys = {
        k: v for k, v in s3_server.env().items() if not k.startswith("AWS_") or "REGION" in k
    }
    machines = {
        # keys in the environment
        "env": {**s3_server.env(), "RUN_NAME": "env", "SNAPSHOT_DATA": "1"},
        # keys in ~/.aws/credentials only
        "file": {**no_keys, "RUN_NAME": "file"},
        # a wrong secret key
        "wrong": {**s3_server.env(), "AWS_SECRET_ACCESS_KEY": canaries["wrong_secret_key"],
                  "RUN_NAME": "wrong"},
        # the experiment's bucket does not exist
        "nobucket": {**s3_server.env(), "RUN_NAME": "nobucket", "EXPERIMENT": "missing-bucket"},
    }  # fmt: skip
    spool = tmp_path / "spool"
    processes = {}
    for name, extra in machines.items():
        env = client_env(team, s3_server, "proxied", tmp_path, **{**base, **extra})
        env["MLTRAIL_SPOOL_DIR"] = str(spool)
        processes[name] = subprocess.Popen(
            [sys.executable, "train.py"], cwd=git_repo, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
    outputs = {name: p.communicate(timeout=300) for name, p in processes.items()}
    output = ""
    runs = {}
    client = MlflowClient(direct)
    for name, process in processes.items():
        out, err = outputs[name]
        output += out + err
        assert process.returncode == 0, (name, err[-3000:])
        assert "trained" in out, (name, err[-3000:])  # the training went on
        [run_id] = [line.split()[1] for line in out.splitlines() if line.startswith("run ")]
        runs[name] = client.get_run(run_id)
        losses = client.get_metric_history(run_id, "loss")
        assert [m.step for m in losses] == list(range(5)), name
    assert {n: r.info.status for n, r in runs.items()} == dict.fromkeys(machines, "FINISHED")
    for name in ("env", "file"):
        stored = s3_server.keys(run_prefix(runs[name], "direct") + "/checkpoints/")
        assert {k.rsplit("/", 1)[1] for k in stored} == {f"{name}.ckpt", "index.json"}, name
    # a clear error naming what to fix, once per kind; the uploads are journaled
    wrong = outputs["wrong"][1]
    assert "SignatureDoesNotMatch" in wrong and "AWS_SECRET_ACCESS_KEY" in wrong, wrong[-3000:]
    assert "mltrail sync" in wrong
    assert "the bucket does not exist: create it" in outputs["nobucket"][1], outputs["nobucket"]
    assert not s3_server.keys(run_prefix(runs["wrong"], "direct") + "/checkpoints/")
    s3_server.client().create_bucket(Bucket="mltrail-not-created")
    sync = subprocess.run(
        [sys.executable, "-m", "mltrail.cli", "sync", "--spool-dir", str(spool)],
        env=client_env(team, s3_server, "direct", tmp_path), cwd=git_repo,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output += sync.stdout + sync.stderr
    assert sync.returncode == 0, sync.stdout + sync.stderr
    for name, bucket in (("wrong", S3_BUCKET), ("nobucket", "mltrail-not-created")):
        prefix = runs[name].info.artifact_uri.split("/", 3)[3] + "/checkpoints/"
        stored = s3_server.keys(prefix, bucket)
        assert {k.rsplit("/", 1)[1] for k in stored} == {f"{name}.ckpt", "index.json"}, name
        index = json.loads(s3_server.read(prefix + "index.json", bucket))
        assert index["aliases"]["latest"] == f"checkpoints/{name}.ckpt"
        digest = hashlib.sha256((checkpoints / f"{name}.ckpt").read_bytes()).hexdigest()
        assert index["files"][f"checkpoints/{name}.ckpt"]["sha256"] == digest

    # push: snapshot refs to git, snapshotted data to the S3 remote (with config.local's key)
    push_env = client_env(team, s3_server, "proxied", tmp_path, HOME=str(tmp_path / "nohome"))
    push = subprocess.run(
        [sys.executable, "-m", "mltrail.cli", "push"], cwd=git_repo, env=push_env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output += push.stdout + push.stderr
    assert push.returncode == 0, push.stdout + push.stderr
    assert "run snapshot ref(s) to git remote 'origin'." in push.stdout
    assert any(k.startswith("dvc/files/md5/") for k in s3_server.keys("dvc/"))
    assert workspace_files(git_repo) == state  # pushing touched nothing of the workspace

    # a teammate's fresh clone restores the run, data pulled from S3 with their own keys
    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(origin), str(fresh))
    teammate = client_env(team, s3_server, "direct", tmp_path, HOME=str(tmp_path / "nohome"))
    run_id = runs["env"].info.run_id
    target = tmp_path / "restored"
    for command in (
        ["checkout", run_id, "--into", str(target)],
        ["verify", run_id, "--path", str(target)],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "mltrail.cli", *command], cwd=fresh, env=teammate,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        output += done.stdout + done.stderr
        assert done.returncode == 0, (command, done.stdout + done.stderr)
    assert workspace_files(target) == state

    # the canary search: store (database, every object), spool, snapshots, pushed refs, output
    hits = []
    for setup in ("proxied", "direct"):
        dump = database_text(team[setup].database)
        hits += [f"{n}: {setup} database" for n, v in canaries.items() if v.encode() in dump]
        hits += found_in(team[setup].folder, canaries)  # the server's log
    for bucket in (S3_BUCKET, "mltrail-not-created"):
        for key in s3_server.keys("", bucket):
            data = s3_server.read(key, bucket)
            hits += [f"{n}: s3://{bucket}/{key}" for n, v in canaries.items() if v.encode() in data]
    hits += found_in(spool, canaries) + found_in(tmp_path / "spool-proxied", canaries)
    for repo in (git_repo, origin):
        refs = git(repo, "for-each-ref", "--format=%(objectname)", "refs/mltrail/").split()
        assert len(refs) == 4, repo
        snapshot = b"".join(snapshot_contents(repo, ref) for ref in refs)
        hits += [
            f"{n}: snapshot in {repo.name}" for n, v in canaries.items() if v.encode() in snapshot
        ]
    hits += [
        f"{n}: output: {line[:300]}"
        for line in output.splitlines()
        for n, v in canaries.items()
        if v in line
    ]
    assert not hits, hits
    assert runs["env"].data.params["storage_key"] == "***"  # and the param said so


# --- the object store fails during a checkpoint upload ------------------------------------------

FAULT_TRAIN = """
import json, os, sys, time
import mltrail

name = sys.argv[1]
trail = mltrail.start_run(experiment="s3-faults", run_name=name, capture=False,
                          system_metrics=False, flush_timeout=5)
print("ready", flush=True)
sys.stdin.readline()
checkpoint = os.path.join(os.environ["CHECKPOINTS"], name + ".ckpt")
slowest = 0.0
for step in range(40):
    if step == 10:  # over boto3's 8 MiB threshold: a multipart upload
        with open(checkpoint, "wb") as handle:
            handle.write(os.urandom(12 << 20))
        trail.log_checkpoint(checkpoint, step=step)
    began = time.perf_counter()
    trail.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    slowest = max(slowest, time.perf_counter() - began)
    print(f"step {step}", flush=True)
    time.sleep(0.05)
print("result " + json.dumps({"run_id": trail.run_id, "slowest": slowest}), flush=True)
trail.end()
"""


@pytest.mark.parametrize("fault", ["down", "slow"])
def test_store_down_or_hung_during_a_checkpoint_upload(
    fault: str, team: dict, s3_server, tmp_path: Path
) -> None:
    """The object store refuses connections, or answers each request seconds late, while a
    checkpoint uploads: the training goes on, the upload is journaled, no object (nor a
    multipart upload) is left half-written, the alias tags wait for the file, and ``mltrail
    sync`` finishes it."""
    proxy = FaultProxy(s3_server.port)
    proxy.delay = 4.0  # "slow": each request of the multipart upload waits that long
    try:
        (tmp_path / "checkpoints").mkdir()
        (tmp_path / "train.py").write_text(FAULT_TRAIN)
        env = client_env(team, s3_server, "direct", tmp_path, CHECKPOINTS=str(tmp_path / "checkpoints"),
                         MLTRAIL_STRICT="0", MLFLOW_S3_ENDPOINT_URL=proxy.uri)  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "train.py", fault], cwd=tmp_path, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout.readline().strip() == "ready", process.stderr.read()[-3000:]
        process.stdin.write("go\n")
        process.stdin.flush()
        result = None
        for line in process.stdout:
            if line.startswith("step 5"):
                proxy.set(fault)
            elif line.startswith("result "):
                result = json.loads(line[len("result ") :])
        stderr = process.stderr.read()
        assert process.wait(timeout=120) == 0, stderr[-3000:]
        assert result is not None, stderr[-3000:]
        assert result["slowest"] < 0.25, result  # no log_metrics call waited on the store
        assert proxy.seen[fault] > 0 or fault == "down"
    finally:
        proxy.close()

    client = MlflowClient(team["direct"].uri)
    run = client.get_run(result["run_id"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(40))
    prefix = run_prefix(run, "direct") + "/"
    key = prefix + f"checkpoints/{fault}.ckpt"
    data = (tmp_path / "checkpoints" / f"{fault}.ckpt").read_bytes()
    if key in s3_server.keys(prefix):  # a slow upload may finish late, never half-written
        assert fault == "slow" and s3_server.read(key) == data
    uploads = s3_server.client().list_multipart_uploads(Bucket=S3_BUCKET, Prefix=prefix)
    assert not uploads.get("Uploads"), uploads["Uploads"]
    assert "mltrail.checkpoint.latest" not in run.data.tags  # not the checkpoint of record yet
    assert list((tmp_path / "spool-direct").glob("*/journal.jsonl"))

    sync = subprocess.run(
        [sys.executable, "-m", "mltrail.cli", "sync", "--spool-dir", str(tmp_path / "spool-direct")],
        env=client_env(team, s3_server, "direct", tmp_path), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert s3_server.read(key) == data
    index = json.loads(s3_server.read(prefix + "checkpoints/index.json"))
    assert index["files"][f"checkpoints/{fault}.ckpt"]["sha256"] == hashlib.sha256(data).hexdigest()
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"  # the end waited in the journal behind the upload
    assert run.data.tags["mltrail.checkpoint.latest"] == f"checkpoints/{fault}.ckpt"


# --- load: 8 trainers at once against the proxied server ----------------------------------------

#: The soak's length: each trainer runs SOAK_SECONDS / STEP_SECONDS boosting rounds, logging
#: every round and uploading a checkpoint every CHECKPOINT_EVERY rounds. The long form:
#: MLTRAIL_SOAK_SECONDS=180 pytest -s tests/reliability/test_team_s3.py -k soak
SOAK_SECONDS = float(os.environ.get("MLTRAIL_SOAK_SECONDS", "4"))
STEP_SECONDS = 0.05
CHECKPOINT_EVERY = 10
TRAINERS = ("xgboost", "lightgbm") * 4

SOAK = """
import json, sys, threading, time
import numpy as np
import psutil

adapter, name, rounds, every, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
x = np.random.default_rng(0).normal(size=(200, 4))
y = (x.sum(axis=1) > 0).astype("int64")
latencies, memory, done = [], [], threading.Event()

def timed(hook):
    def wrapper(*args):
        if not latencies:  # memory is sampled once the run is started and training
            threading.Thread(target=sample, daemon=True).start()
        began = time.perf_counter()
        result = hook(*args)
        latencies.append(time.perf_counter() - began)
        time.sleep(pause)  # the rest of a training step
        return result
    return wrapper

def sample():
    process = psutil.Process()
    while not done.is_set():
        memory.append(process.memory_info().rss)
        done.wait(0.25)

options = dict(experiment="team-soak", run_name=name, checkpoint_every=every, log_model=False,
               system_metrics=False, capture=False)
if adapter == "xgboost":
    import xgboost as xgb
    from mltrail.integrations.xgboost import TrailCallback
else:
    import lightgbm as lgb
    from mltrail.integrations.lightgbm import TrailCallback
print("ready", flush=True)
sys.stdin.readline()  # every trainer starts at the same moment
if adapter == "xgboost":
    callback = TrailCallback(importance=False, **options)
    callback.after_iteration = timed(callback.after_iteration)
    data = xgb.DMatrix(x, label=y)
    xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, data, rounds,
              evals=[(data, "train")], verbose_eval=False, callbacks=[callback])
else:
    callback = TrailCallback(importance=False, **options)
    callback.after_iteration = timed(callback.after_iteration)
    data = lgb.Dataset(x, label=y)
    lgb.train({"objective": "binary", "num_leaves": 4, "verbose": -1, "num_threads": 1}, data,
              rounds, valid_sets=[data], valid_names=["train"], callbacks=[callback])
done.set()
import mltrail
mltrail.wait()
print("result " + json.dumps({"run_id": callback.run_id, "latencies": latencies,
                              "memory": memory}), flush=True)
"""


@pytest.mark.slow
def test_soak_eight_trainers_store_every_point_and_checkpoint(
    team: dict, s3_server, tmp_path: Path
) -> None:
    pytest.importorskip("xgboost")
    pytest.importorskip("lightgbm")
    from tests.reliability.test_soak import percentile

    rounds = max(CHECKPOINT_EVERY, int(SOAK_SECONDS / STEP_SECONDS))
    (tmp_path / "soak.py").write_text(SOAK)
    env = client_env(team, s3_server, "proxied", tmp_path, OMP_NUM_THREADS="1")
    processes = []
    for index, adapter in enumerate(TRAINERS):
        arguments = [adapter, f"{adapter}-{index}", str(rounds), str(CHECKPOINT_EVERY)]
        processes.append(
            subprocess.Popen(
                [sys.executable, "soak.py", *arguments, str(STEP_SECONDS)], cwd=tmp_path,
                env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )  # fmt: skip
    for process in processes:
        assert process.stdout.readline().strip() == "ready", process.stderr.read()[-3000:]
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=SOAK_SECONDS * 20 + 300)
        assert process.returncode == 0, err[-3000:]
        [line] = [x for x in out.splitlines() if x.startswith("result ")]
        results.append(json.loads(line[len("result ") :]))
    journaled = list((tmp_path / "spool-proxied").glob("*/journal.jsonl"))
    if journaled:  # what a busy server did not take in time, sync uploads
        sync = subprocess.run(
            [sys.executable, "-m", "mltrail.cli", "sync", "--spool-dir",
             str(tmp_path / "spool-proxied")],
            env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert sync.returncode == 0, sync.stdout + sync.stderr

    client = MlflowClient(team["proxied"].uri)
    growth = []
    for adapter, result in zip(TRAINERS, results, strict=True):
        run = client.get_run(result["run_id"])
        assert run.info.status == "FINISHED"
        assert "mltrail.errors" not in run.data.tags, run.data.tags
        metric = "train-logloss" if adapter == "xgboost" else "train-binary_logloss"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
        assert sorted(steps) == list(range(rounds)), (adapter, len(steps))
        stored = s3_server.keys(run_prefix(run, "proxied") + "/checkpoints/")
        assert (
            len([k for k in stored if not k.endswith("index.json")]) == rounds // CHECKPOINT_EVERY
        )
        memory = result["memory"][len(result["memory"]) // 4 :]
        third = max(1, len(memory) // 3)
        growth.append((np.median(memory[-third:]) - np.median(memory[:third])) / 2**20)
    # Rounds that save a checkpoint also serialise the model on the training's thread (the
    # framework's save_model); the others only enqueue their metrics.
    logging, saving = [], []
    for result in results:
        for index, spent in enumerate(result["latencies"]):
            (saving if (index + 1) % CHECKPOINT_EVERY == 0 else logging).append(spent)

    def summary(values: list[float]) -> str:
        p50, p99, slowest = (percentile(values, q) * 1e3 for q in (0.5, 0.99, 1.0))
        return f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {slowest:.1f} ms"

    print(
        f"\nteam soak: {len(TRAINERS)} trainers (xgboost, lightgbm) x {rounds} rounds, a "
        f"checkpoint every {CHECKPOINT_EVERY}: every point and checkpoint stored"
        f"{' (after sync)' if journaled else ''}; hook of a logging round {summary(logging)}; "
        f"of a checkpoint round {summary(saving)}; memory growth after warm-up "
        f"{max(growth):.1f} MiB"
    )
    assert max(growth) < 32, growth
