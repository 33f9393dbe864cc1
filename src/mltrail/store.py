"""Opening the MLflow store: the client, the experiment, run creation, bounded in time.

Several processes starting at once against a fresh sqlite store race on its migrations and on
creating the same experiment; first-time set-up is serialised with a file lock beside the
database, and experiment creation is get-or-create with retries.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import posixpath
import random
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from mltrail.errors import MltrailError
from mltrail.recording.sanitize import redact_text

logger = logging.getLogger("mltrail.store")
T = TypeVar("T")


class QuietNotices(logging.Filter):
    """Drops MLflow log lines that tell a user of mltrail nothing to act on.

    Creating or migrating a local sqlite store ("Creating initial MLflow database tables...",
    "Updating database tables") at INFO, and the scikit-learn and PyTorch flavors' pickle
    cautions when the model is one that mltrail saves (on its own threads: mltrail chooses
    the pickle format, which the user cannot change). Everything else passes, warnings
    that ask the user to act included.
    """

    def __init__(self, messages: tuple[str, ...], level: int, mltrail_threads: bool) -> None:
        super().__init__()
        self.messages = messages
        self.level = level
        self.mltrail_threads = mltrail_threads

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > self.level or not str(record.msg).startswith(self.messages):
            return True
        return self.mltrail_threads and not (record.threadName or "").startswith("mltrail")


def quiet_mlflow_notices() -> None:
    """Install :class:`QuietNotices` on MLflow's loggers (once; MLflow need not be imported)."""
    for name, quiet in (
        (
            "mlflow.store.db.utils",
            QuietNotices(
                ("Creating initial MLflow database tables", "Updating database tables"),
                logging.INFO,
                mltrail_threads=False,
            ),
        ),
        (
            "mlflow.sklearn",
            QuietNotices(
                ("Saving scikit-learn models in the pickle or cloudpickle format",),
                logging.WARNING,
                mltrail_threads=True,
            ),
        ),
        (
            "mlflow.pytorch",
            QuietNotices(
                ("Saving pytorch model by Pickle or CloudPickle format",),
                logging.WARNING,
                mltrail_threads=True,
            ),
        ),
    ):
        target = logging.getLogger(name)
        if not any(isinstance(f, QuietNotices) for f in target.filters):
            target.addFilter(quiet)


#: MLflow warnings on mltrail's own threads that ask nothing of the user. The hint that a
#: signature inferred from training rows has integer columns (the rows are the user's; mltrail
#: infers the signature for them). The "Any type hint" notice of MLflow's own GenAI schemas,
#: which MLflow silences while it imports them by replacing ``warnings.showwarning`` for every
#: thread: when mltrail imports MLflow beside the user's code, a ``catch_warnings`` block of the
#: user's thread (scikit-learn's ``fit`` has many) that ends meanwhile puts the previous
#: function back, and the notice printed. Raised by the user's own MLflow calls, they pass.
QUIET_WARNINGS = (
    "Hint: Inferred schema contains integer column(s)",
    "Any type hint is inferred as AnyType",
)


def quiet_mlflow_warnings() -> None:
    """Drop :data:`QUIET_WARNINGS` raised on mltrail's threads (once per process)."""
    shown = warnings.showwarning
    if getattr(shown, "mltrail_quiet", False):
        return

    def showwarning(message: Any, category: Any, filename: str, lineno: int, *rest: Any) -> None:
        ours = threading.current_thread().name.startswith("mltrail")
        # MLflow colours some of its warnings: the text follows a terminal escape.
        if not (ours and any(text in str(message) for text in QUIET_WARNINGS)):
            shown(message, category, filename, lineno, *rest)

    showwarning.mltrail_quiet = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


quiet_mlflow_notices()
quiet_mlflow_warnings()


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """The explicit URI, else MLflow's own choice (MLFLOW_TRACKING_URI, else its default)."""
    if tracking_uri:
        return tracking_uri
    import mlflow

    return mlflow.get_tracking_uri()


#: MLflow's default store when ``./mlruns`` holds no file-store data (MLflow 3).
DEFAULT_DB = "mlflow.db"


def mlflow_loaded() -> bool:
    """Whether MLflow finished importing in this process. One that another thread is still
    importing counts as not loaded: nothing can have set its tracking URI or started a run
    yet, and asking it would wait for the rest of its import (seconds)."""
    module = sys.modules.get("mlflow")
    return module is not None and not getattr(module.__spec__, "_initializing", False)


def resolve_tracking_uri_unloaded(tracking_uri: str | None) -> str:
    """:func:`resolve_tracking_uri` without importing MLflow for it: the explicit URI, else
    ``MLFLOW_TRACKING_URI``, else MLflow's default (``sqlite:///<cwd>/mlflow.db``, or
    ``./mlruns`` when that folder holds MLflow file-store data). MLflow is asked only when it
    is loaded already (its ``set_tracking_uri`` then counts) or for the ``./mlruns`` case."""
    if tracking_uri:
        return tracking_uri
    if mlflow_loaded() or _has_mlruns_data(Path("mlruns")):
        return resolve_tracking_uri(None)
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    # As mlflow.utils.file_utils.path_to_local_sqlite_uri writes it.
    path = posixpath.abspath(urllib.request.pathname2url(os.path.abspath(DEFAULT_DB)))
    return "sqlite:///" + path


def _has_mlruns_data(folder: Path) -> bool:
    """MLflow's test for a default file store (an experiment folder with ``meta.yaml``)."""
    try:
        with os.scandir(folder) as entries:
            return any(
                e.is_dir() and e.name.isdigit() and os.path.lexists(Path(e.path, "meta.yaml"))
                for e in entries
            )
    except OSError:
        return False


def check_tracking_uri(tracking_uri: str) -> None:
    """Refuse a URI that no MLflow tracking store supports (a typo, not an outage).

    The schemes are MLflow's own registry of tracking stores, plugins' schemes included.

    Raises:
        MltrailError: naming the URI and the supported schemes.
    """
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    from mlflow.utils.uri import get_uri_scheme

    schemes = _tracking_store_registry._registry
    if tracking_uri in schemes or get_uri_scheme(tracking_uri) in schemes:
        return
    supported = ", ".join(f"{s}://" for s in sorted(schemes) if s)
    raise MltrailError(
        f"No MLflow tracking store supports the URI {describe_uri(tracking_uri)!r}. Supported "
        f"schemes: {supported}, or a local path. Check tracking_uri (or MLFLOW_TRACKING_URI)."
    )


def sqlite_path(tracking_uri: str) -> Path | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///") :]).expanduser()


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """An inter-process lock for set-up of a local sqlite store (a no-op for servers)."""
    path = sqlite_path(tracking_uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".mltrail.lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_jitter = random.SystemRandom()  # never the global RNG: training scripts seed that one


def with_retries(func: Callable[[], T], what: str, attempts: int = 8) -> T:
    """Retry ``func`` on transient store errors (sqlite locks, concurrent creation)."""
    for attempt in range(attempts):
        try:
            return func()
        except Exception as error:
            text = str(error).lower()
            transient = any(
                word in text
                for word in ("database is locked", "already exists", "unique constraint")
            )
            if not transient or attempt == attempts - 1:
                raise
            logger.debug("retrying %s after %s", what, error)
            time.sleep(0.05 * 2**attempt + _jitter.random() * 0.05)
    raise AssertionError("unreachable")


# Opened once per process and store: a script of many short trainings opens its store once.
_clients: dict[str, Any] = {}
_experiments: dict[tuple[str, str | None], str] = {}
_cache_lock = threading.Lock()
_sqlite_turns: dict[Path, threading.RLock] = {}


def sqlite_turns(tracking_uri: str) -> contextlib.AbstractContextManager[Any]:
    """Held while one of this process's threads writes to a local sqlite store (a no-op for
    other stores).

    SQLite lets one connection write at a time. The runs of a loop each send from a thread of
    their own; a dozen of them writing at once wait in SQLite's busy handler, which sleeps in
    growing steps and leaves the file idle between writers: a cross-validation loop's writes
    slowed to the point of missing their flush deadline and going to the journal. Taking turns
    in the process hands the file over at once.
    """
    path = sqlite_path(tracking_uri)
    if path is None:
        return contextlib.nullcontext()
    with _cache_lock:
        return _sqlite_turns.setdefault(path.resolve(), threading.RLock())


# A forked child has none of its parent's threads: a turn one of them held would never end.
os.register_at_fork(after_in_child=_sqlite_turns.clear)


def make_client(tracking_uri: str) -> Any:
    """The MLflow client of ``tracking_uri``, opened (and a local store migrated) once per
    process."""
    with _cache_lock:
        client = _clients.get(tracking_uri)
    if client is not None:
        return client
    from mlflow.tracking import MlflowClient

    check_tracking_uri(tracking_uri)
    with store_lock(tracking_uri):
        client = MlflowClient(tracking_uri)
        if sqlite_path(tracking_uri) is not None:
            # Touch the store under the lock so that its migrations run in one process only.
            with_retries(lambda: client.search_experiments(max_results=1), "opening the store")
    with _cache_lock:
        return _clients.setdefault(tracking_uri, client)


def forget_experiment(tracking_uri: str, name: str | None) -> None:
    """Drop a remembered experiment id (it was deleted or renamed since it was looked up)."""
    with _cache_lock:
        _experiments.pop((tracking_uri, name), None)


#: Tags of the experiments mltrail creates: MLflow 3's UI files them under model training
#: (without the kind it may guess "GenAI / Evaluation runs").
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(client: Any, name: str | None, tracking_uri: str) -> str:
    """The id of experiment ``name`` (created if missing), or MLflow's current experiment."""
    if name is None:
        env_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
        if env_id:
            return env_id
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if name is None:
        import mlflow

        with contextlib.suppress(Exception):
            current = mlflow.tracking.fluent._get_experiment_id()
            if current:
                return str(current)
        return "0"

    def get_or_create() -> str:
        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise MltrailError(
                    f"Experiment {name!r} is deleted. Restore it (mlflow experiments restore) "
                    "or choose another name."
                )
            return found.experiment_id
        try:
            return client.create_experiment(
                name, artifact_location=_artifact_location(tracking_uri), tags=EXPERIMENT_TAGS
            )
        except Exception:
            found = client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            raise

    key = (tracking_uri, name)
    with _cache_lock:
        known = _experiments.get(key)
    if known is not None:
        return known
    with store_lock(tracking_uri):
        found = with_retries(get_or_create, f"creating experiment {name!r}")
    with _cache_lock:
        _experiments[key] = found
    return found


def _artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a local sqlite store live beside the database, not in the working directory."""
    path = sqlite_path(tracking_uri)
    return (path.resolve().parent / "mlartifacts").as_uri() if path is not None else None


def call_with_timeout(
    func: Callable[[], T],
    timeout: float,
    what: str,
    late: Callable[[T], None] | None = None,
) -> T:
    """Run ``func`` on a helper thread and give up waiting after ``timeout`` seconds.

    Raises TimeoutError when the store does not answer in time; the call may still complete
    later on its thread, which the caller must tolerate: ``late(value)`` is then called there
    with what it returned (a run the server created after the client gave up on it).
    """
    result: dict[str, Any] = {}
    done = threading.Event()
    lock = threading.Lock()

    def target() -> None:
        try:
            result["value"] = func()
        except BaseException as error:
            result["error"] = error
        finally:
            with lock:
                done.set()
                abandoned = result.get("abandoned", False)
        if abandoned and late is not None and "value" in result:
            try:
                late(result["value"])
            except Exception:
                logger.debug("handling the late answer of %s failed", what, exc_info=True)

    threading.Thread(target=target, name=f"mltrail-{what}", daemon=True).start()
    if not done.wait(timeout):
        with lock:
            result["abandoned"] = not done.is_set()
        if result["abandoned"]:
            raise TimeoutError(f"{what} took longer than {timeout:g} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def describe_uri(tracking_uri: str) -> str:
    return redact_text(tracking_uri)
