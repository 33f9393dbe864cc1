"""Fixtures of the reliability suite: a switchable fault proxy, PostgreSQL, subprocess helpers."""

from __future__ import annotations

import contextlib
import glob
import http.client
import http.server
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
import urllib.request
from collections import Counter
from pathlib import Path

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

MODES = ("pass", "down", "hang", "429", "503")


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
    ``hang`` accepts and reads each request and never answers; ``429``/``503`` answer every
    request with that status. ``seen`` counts the requests each mode handled.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.mode = "pass"
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
