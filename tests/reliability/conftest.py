"""Fixtures of the reliability suite: a switchable fault proxy, PostgreSQL, an S3-compatible
object store, subprocess helpers."""

from __future__ import annotations

import contextlib
import glob
import http.client
import http.server
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import types
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mltrail.recording.sanitize import redact_text
from tests.conftest import MlflowServer, free_port, user_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="package")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, template_db: Path):
    """One real ``mlflow server`` for the whole reliability suite (each start costs seconds);
    the tests use their own experiments and never stop it (faults go through the proxy)."""
    server = MlflowServer(tmp_path_factory.mktemp("server"), template_db)
    server.start()
    yield server
    server.stop()


# --- a loopback HTTP proxy that can be switched to fail ---------------------------------------

MODES = ("pass", "down", "hang", "slow", "429", "503")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, *args: object) -> None:  # keep the test output quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._body()
        mode = proxy.mode
        proxy.seen[mode] += 1
        if mode == "down":  # a request on a connection opened before: dropped unanswered
            self.close_connection = True
            return
        if mode == "hang":  # accepted and read, never answered
            proxy.closed.wait()
            self.close_connection = True
            return
        if mode == "slow":  # forwarded, after a while
            time.sleep(proxy.delay)
        if mode in {"429", "503"}:
            payload = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "try later"}'
            self.send_response(int(mode))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
            headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        except OSError:
            self.send_error(502)
            return
        finally:
            upstream.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in {"transfer-encoding", "content-length", "connection"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class _ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy


class FaultProxy:
    """A proxy on 127.0.0.1 in front of a real ``mlflow server``, switchable between modes.

    ``pass`` forwards every request; ``down`` closes the port (connections are refused);
    ``hang`` accepts and reads each request and never answers; ``slow`` forwards each request
    after ``delay`` seconds; ``429``/``503`` answer every request with that status. ``seen``
    counts the requests each mode handled.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.mode = "pass"
        self.delay = 5.0
        self.seen: Counter[str] = Counter()
        self.closed = threading.Event()
        self._server: _ProxyServer | None = None
        self._listen()

    def _listen(self) -> None:
        self._server = _ProxyServer(("127.0.0.1", self.port), _Handler)
        self._server.proxy = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _close_port(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def set(self, mode: str) -> None:
        assert mode in MODES, mode
        if mode == "down":
            self._close_port()
        elif self._server is None:
            self._listen()
        self.mode = mode

    def close(self) -> None:
        self.closed.set()
        self._close_port()


@pytest.fixture
def proxy(mlflow_server):
    """A :class:`FaultProxy` in front of the module's real mlflow server, in ``pass`` mode."""
    proxy = FaultProxy(mlflow_server.port)
    yield proxy
    proxy.close()


# --- PostgreSQL --------------------------------------------------------------------------------


def _initdb() -> str | None:
    found = shutil.which("initdb")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return candidates[-1] if candidates else None


class PrivateCluster:
    """A throw-away PostgreSQL cluster on a free port with trust authentication."""

    def __init__(self, initdb: str) -> None:
        self.bin = Path(initdb).parent
        self.folder = Path(tempfile.mkdtemp(prefix="mltrail-pg-"))
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def _as_owner(self) -> dict[str, object]:
        if os.geteuid() != 0:
            return {}
        owner = pwd.getpwnam("postgres")  # PostgreSQL refuses to run as root
        return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    def start(self) -> str:
        data = self.folder / "data"
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        kwargs = {**self._as_owner(), "capture_output": True, "check": True, "timeout": 120}
        subprocess.run(
            [self.bin / "initdb", "-D", data, "-A", "trust", "-U", self.user, "--no-sync"],
            **kwargs,
        )
        subprocess.run(
            [
                self.bin / "pg_ctl", "-D", data, "-l", self.folder / "log", "-w", "start",
                "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c max_connections=200",
            ],
            **kwargs,
        )  # fmt: skip
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            [self.bin / "pg_ctl", "-D", self.folder / "data", "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
            **self._as_owner(),
        )
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_server():
    """The admin URI of a PostgreSQL server whose role may create databases.

    ``MLTRAIL_TEST_POSTGRES`` (e.g. ``postgresql://mltrail:mltrail@127.0.0.1:5432/postgres``)
    names a running server; without it, a private cluster is started when PostgreSQL's
    binaries are installed. Otherwise the tests skip, saying how to enable them.
    """
    try:
        import psycopg2
    except ImportError:
        pytest.skip("PostgreSQL tests need psycopg2 (pip install psycopg2-binary)")
    uri = os.environ.get("MLTRAIL_TEST_POSTGRES")
    cluster = None
    if not uri:
        initdb = _initdb()
        if initdb is None:
            pytest.skip(
                "PostgreSQL is not available: install it (apt-get install postgresql) or set "
                "MLTRAIL_TEST_POSTGRES to the URI of a server whose role may create databases"
            )
        cluster = PrivateCluster(initdb)
        try:
            uri = cluster.start()
        except (subprocess.SubprocessError, OSError, KeyError) as error:
            cluster.stop()
            pytest.skip(f"could not start a private PostgreSQL cluster: {error}")
    try:
        psycopg2.connect(uri, connect_timeout=5).close()
    except psycopg2.Error as error:
        if cluster:
            cluster.stop()
        pytest.skip(f"PostgreSQL at {redact_text(uri)} is not reachable: {error}")
    yield uri
    if cluster is not None:
        cluster.stop()


@contextlib.contextmanager
def postgres_database(admin_uri: str, name: str):
    """A new, empty database on the server of ``admin_uri``; dropped afterwards."""
    import psycopg2

    def execute(sql: str) -> None:
        connection = psycopg2.connect(admin_uri)
        connection.autocommit = True
        try:
            connection.cursor().execute(sql)
        finally:
            connection.close()

    execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    execute(f"CREATE DATABASE {name}")
    base, _, _ = admin_uri.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- processes ---------------------------------------------------------------------------------


def python_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python that imports this checkout's tests and mltrail."""
    env = user_env(**extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_script(
    path: Path, body: str, *, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Write ``body`` (dedented) to ``path`` and run it with this interpreter."""
    path.write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or python_env(),
        cwd=path.parent,
    )


def wait_http(url: str, timeout: float = 120, process: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def socket_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


# --- an S3-compatible object store -------------------------------------------------------------

S3_BUCKET = "mltrail-team"
S3_REGION = "us-east-1"
_ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
# IAM calls that set the server up before it starts checking credentials (see S3Server.start).
_SETUP_ACTIONS = 3


class S3Server:
    """``moto_server`` on 127.0.0.1: an in-memory S3 that checks credentials like AWS does.

    After the first ``_SETUP_ACTIONS`` requests (which create the IAM user ``trainer`` with an
    allow-all policy and its access key), every request must be signed with a key it knows:
    a wrong secret gets ``SignatureDoesNotMatch``, an unknown key ``InvalidAccessKeyId``.
    ``access_key``/``secret_key`` are the user's; the bucket ``S3_BUCKET`` exists.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.access_key = self.secret_key = ""

    def start(self, timeout: float = 60) -> None:
        moto = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        if moto is None:
            raise FileNotFoundError("moto_server")
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_ACTIONS)}
        with open(self.folder / "moto.log", "ab") as log:
            self.process = subprocess.Popen(
                [moto, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=log, env=env, start_new_session=True,
            )  # fmt: skip
        deadline = time.time() + timeout
        while socket_free(self.port):
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError((self.folder / "moto.log").read_text()[-2000:])
            time.sleep(0.1)
        iam = self.client("iam", "setup", "setup")
        iam.create_user(UserName="trainer")
        iam.put_user_policy(UserName="trainer", PolicyName="all", PolicyDocument=_ALLOW_ALL)
        key = iam.create_access_key(UserName="trainer")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        self.client().create_bucket(Bucket=S3_BUCKET)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(timeout=30)
        self.process = None

    def client(self, service: str = "s3", access_key: str = "", secret_key: str = "") -> Any:
        """A boto3 client of this server (with the trainer's key unless given another)."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=S3_REGION,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
        )

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """What a machine that writes to the store directly sets: the usual ``AWS_*`` variables
        and MLflow's endpoint (``endpoint`` to go through a :class:`FaultProxy`)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": S3_REGION,
            "MLFLOW_S3_ENDPOINT_URL": endpoint or self.endpoint,
        }

    def keys(self, prefix: str = "", bucket: str = S3_BUCKET) -> dict[str, dict[str, Any]]:
        """Every object under ``prefix``: key -> ``{"size", "etag"}``."""
        found = {}
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        for page in pages:
            for item in page.get("Contents", []):
                found[item["Key"]] = {"size": item["Size"], "etag": item["ETag"].strip('"')}
        return found

    def read(self, key: str, bucket: str = S3_BUCKET) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def delete(self, prefix: str, bucket: str = S3_BUCKET) -> None:
        """Free the memory of the objects under ``prefix`` (moto keeps them in memory)."""
        s3 = self.client()
        for key in self.keys(prefix, bucket):
            s3.delete_object(Bucket=bucket, Key=key)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """An :class:`S3Server` for the module; skipped, with the reason, only when moto's server
    cannot be started (``pip install "moto[server]"``)."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        pytest.skip('S3 tests need boto3 and moto (pip install "moto[server]" boto3)')
    server = S3Server(tmp_path_factory.mktemp("s3"))
    try:
        server.start()
    except (OSError, RuntimeError) as error:
        server.stop()
        pytest.skip(f"could not start moto_server, an S3-compatible server: {error}")
    yield server
    server.stop()


@contextlib.contextmanager
def team_mlflow_server(
    admin_uri: str, folder: Path, artifacts: list[str], env: dict[str, str] | None = None
) -> Iterator[types.SimpleNamespace]:
    """``mlflow server`` on 127.0.0.1 on a new PostgreSQL database of ``admin_uri``.

    Args:
        admin_uri: the PostgreSQL server (see ``postgres_server``).
        folder: for the server's log.
        artifacts: the artifact options, e.g. ``["--artifacts-destination", "s3://b/mlflow"]``.
        env: added to the server's environment (its storage credentials).

    Yields:
        A namespace with ``uri``, ``folder`` and ``database``.
    """
    name = f"mltrail_team_{uuid.uuid4().hex[:8]}"
    with postgres_database(admin_uri, name) as database:
        port = free_port()
        command = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            # SQLAlchemy 2.1 reads postgresql:// as psycopg 3; the pinned driver is psycopg2
            "--backend-store-uri", database.replace("postgresql://", "postgresql+psycopg2://"),
            *artifacts, "--workers", "2",
        ]  # fmt: skip
        with open(folder / "server.log", "ab") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=log, start_new_session=True, cwd=folder,
                env={**os.environ, **(env or {})},
            )  # fmt: skip
        try:
            uri = f"http://127.0.0.1:{port}"
            wait_http(uri + "/health", timeout=240, process=process)
            yield types.SimpleNamespace(uri=uri, folder=folder, database=database)
        finally:
            os.killpg(process.pid, 9)
            process.wait(timeout=30)
