"""``mltrail runs`` and ``mltrail show``: find the runs of a commit, and what one run was made of.

``mltrail runs [--commit REV] [--experiment NAME] [--fingerprint [FP]] [--json]`` lists the runs
whose ``mlflow.source.git.commit`` is the commit REV resolves to (default ``HEAD``; any rev git
understands, short SHAs included), and the runs whose snapshot commit
(``refs/mltrail/runs/<run_id>``) has that commit as parent. ``--fingerprint FP`` lists the runs
with that ``mltrail.fingerprint``; ``--fingerprint`` alone lists fingerprints shared by several
runs (the same code, data and params run more than once). ``--all``, or ``--experiment`` or
``--status`` without ``--commit``, list the newest runs of any commit, without git.

``mltrail show RUN_ID [--json]`` prints the run's code, data, environment, params and metrics,
from its tags, dataset inputs and ``mltrail/provenance.json``. Every verb that takes a run id
accepts a unique prefix of one (:func:`resolve_run_id`).

The commands themselves are :mod:`mltrail.cli.runs` and :mod:`mltrail.cli.show`. ``--json``
output is stable (``schema_version`` 1); fields never change meaning, new fields may be added:

- ``runs``: ``{"schema_version", "tracking_uri", "commit", "fingerprint", "experiment",
  "status", "limit", "runs": [RUN]}``
  where RUN is ``{"run_id", "run_name", "experiment_id", "experiment", "status",
  "start_time", "end_time" (ISO 8601 UTC or null), "commit", "branch", "dirty" (true, false or
  null), "snapshot", "data_dirty" ("true", "false", "unknown" or null), "fingerprint",
  "metrics" ({key: latest value}, ``system/`` metrics left out), "match" ("commit",
  "snapshot_parent", "fingerprint", or "listed" when no commit or fingerprint was asked
  for)}``, newest first.
- ``show``: ``{"schema_version", "run": {...}, "code": {...}, "data": {...}, "environment":
  {...}, "params": {...}, "metrics": {...}, "fingerprint", "provenance"}`` (``provenance`` is
  the whole ``provenance.json`` record, or null when the run has none).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mltrail.capture import git as git_capture
from mltrail.errors import MltrailError
from mltrail.query import client as client_module
from mltrail.query import sqlite_reader
from mltrail.query.display import clip, fit_items, number, table
from mltrail.recording.sanitize import redact_text
from mltrail.store import call_with_timeout, describe_uri, sqlite_path

logger = logging.getLogger("mltrail.query")
SCHEMA_VERSION = 1
STORE_TIMEOUT = 60.0
_HEX = re.compile(r"^[0-9a-fA-F]{40}([0-9a-fA-F]{24})?$")
#: What a run id given on the command line may look like (checked before asking the store).
RUN_ID = re.compile(r"^[0-9a-zA-Z_\-]{1,64}$")
#: The fewest characters of a run id that name a run on the command line (a unique prefix).
MIN_PREFIX = 6
_MAX_MATCHES = 20
T = TypeVar("T")


# --- the store ---------------------------------------------------------------------------------


def open_store(tracking_uri: str | None) -> tuple[Any, str]:
    """An ``MlflowClient`` for a command, and the resolved tracking URI.

    Args:
        tracking_uri: ``--tracking-uri``, or None for ``MLFLOW_TRACKING_URI``/MLflow's default.

    Raises:
        MltrailError: when a sqlite store does not exist or the store cannot be opened.
    """
    # A dead server must give a one-line error in seconds, not after minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry warnings are not errors
    from mltrail.store import make_client

    uri = client_module.resolve_uri(tracking_uri)
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        raise MltrailError(
            f"There is no MLflow store at {path}. Pass --tracking-uri or set "
            "MLFLOW_TRACKING_URI to the store your runs were logged to."
        )
    reader = sqlite_reader.open_reader(uri)
    if reader is not None:  # a local sqlite store: MLflow is started only if a read needs it
        return client_module.LocalClient(reader, uri), uri
    client = store_call(lambda: make_client(uri), uri, "opening the store")
    return client, uri


def store_call(func: Callable[[], T], uri: str, what: str) -> T:
    """Call ``func`` (a read of the store at ``uri``) within :data:`STORE_TIMEOUT`.

    Returns:
        What ``func`` returns.

    Raises:
        MltrailError: one line saying what could not be read (``what``) and why, secrets
            redacted; "not found" errors are raised as they are (see :func:`is_not_found`).
    """
    try:
        return call_with_timeout(func, STORE_TIMEOUT, what)
    except MltrailError:
        raise
    except TimeoutError:
        raise MltrailError(
            f"The tracking store {describe_uri(uri)} did not answer within {STORE_TIMEOUT:g} s."
        ) from None
    except Exception as error:
        if is_not_found(error):
            raise
        text = redact_text(str(error)).strip()
        if any(m in text for m in ("Failed to establish", "Connection refused", "Max retries")):
            detail = "cannot connect (is the server running, is the URI right?)"
        else:
            lines = text.splitlines()
            detail = lines[0][:200] if lines else type(error).__name__
        raise MltrailError(
            f"Cannot read the tracking store {describe_uri(uri)} ({what}): {detail}"
        ) from None


def is_not_found(error: BaseException) -> bool:
    """True when ``error`` is the store saying that a run does not exist."""
    return getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST" or (
        "not found" in str(error).lower() and "run" in str(error).lower()
    )


def experiment_names(client: Any, uri: str, name: str | None) -> dict[str, str]:
    """Experiment id -> name: the named experiment, else every active one."""
    if name:
        found = store_call(lambda: client.get_experiment_by_name(name), uri, "reading experiments")
        if found is None:
            raise MltrailError(f"There is no experiment named {name!r} in {describe_uri(uri)}.")
        return {found.experiment_id: found.name}

    def search() -> dict[str, str]:
        found: dict[str, str] = {}
        token = None
        while True:
            page = client.search_experiments(max_results=1000, page_token=token)
            found.update({e.experiment_id: e.name for e in page})
            token = page.token
            if not token:
                return found

    return store_call(search, uri, "reading experiments")


def search_runs(
    client: Any,
    uri: str,
    ids: list[str],
    query: str,
    limit: int,
    order_by: list[str] | None = None,
) -> list[Any]:
    """Runs of experiments ``ids`` matching the MLflow filter ``query``, newest first (or in
    ``order_by``, MLflow's syntax), at most ``limit`` (through :func:`store_call`)."""

    def search() -> list[Any]:
        runs: list[Any] = []
        token = None
        while len(runs) < limit:
            page = client.search_runs(
                ids,
                query,
                max_results=min(limit - len(runs), 50_000),
                order_by=order_by or ["attributes.start_time DESC"],
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
        return runs

    return store_call(search, uri, "searching runs") if ids else []


def runs_with_tag(client: Any, uri: str, key: str, limit: int = 100) -> list[Any]:
    """The active runs (of active experiments) that have the tag ``key``, newest first."""
    if isinstance(client, client_module.LocalClient):
        reader = client.reader
        try:
            return reader.runs_with_tag(list(reader.experiments(None) or {}), key, limit=limit)
        except (sqlite_reader.Unsupported, sqlite3.Error) as error:
            logger.debug("searching tag %s through MLflow: %s", key, error)
            client = client.mlflow
    experiments = experiment_names(client, uri, None)
    return search_runs(client, uri, list(experiments), f"tags.`{key}` LIKE '%'", limit)


def runs_tagged(
    client: Any, uri: str, experiment_ids: list[str], key: str, value: str, limit: int = 100
) -> list[Any]:
    """The active runs of ``experiment_ids`` whose tag ``key`` is ``value``, newest first."""
    if isinstance(client, client_module.LocalClient):
        try:
            return client.reader.runs_with_tag(experiment_ids, key, value=value, limit=limit)
        except (sqlite_reader.Unsupported, sqlite3.Error) as error:
            logger.debug("searching tag %s through MLflow: %s", key, error)
            client = client.mlflow
    escaped = value.replace("'", "")
    return search_runs(client, uri, experiment_ids, f"tags.`{key}` = '{escaped}'", limit)


def fork_links(client: Any, uri: str, run: Any) -> dict[str, Any]:
    """A run's fork parent (``mltrail.forked_from`` at ``mltrail.forked_at_step``), its forks
    (runs of its experiment forked from it), and its rewinds (``fork=False`` resumes)."""
    tags = run.data.tags
    parent = tags.get("mltrail.forked_from")
    children = runs_tagged(
        client, uri, [run.info.experiment_id], "mltrail.forked_from", run.info.run_id
    )
    try:
        rewinds = [int(at) for at, _ in json.loads(tags.get("mltrail.rewinds") or "[]")]
    except (TypeError, ValueError):
        rewinds = []
    return {
        "forked_from": None
        if not parent
        else {"run_id": parent, "step": _int_or_none(tags.get("mltrail.forked_at_step"))},
        "forks": [
            {
                "run_id": child.info.run_id,
                "step": _int_or_none(child.data.tags.get("mltrail.forked_at_step")),
            }
            for child in sorted(children, key=lambda r: r.info.start_time or 0)
        ],
        "rewound_to": rewinds,
        "resumes": _int_or_none(tags.get("mltrail.resume_count")) or 0,
    }


def _current_metrics(client: Any, uri: str, run: Any) -> dict[str, float]:
    """The run's latest metric values; on a rewound run (``fork=False``), the latest of the
    points the rewind did not supersede (MLflow's latest may be a superseded one)."""
    if not run.data.tags.get("mltrail.rewinds"):
        return dict(run.data.metrics)
    from mltrail.recording.restart import current_history

    values = {}
    for key in run.data.metrics:
        points = store_call(
            lambda k=key: client.get_metric_history(run.info.run_id, k), uri, "reading metrics"
        )
        current = current_history(run, points)
        if current:
            values[key] = max(current, key=lambda m: (m.step, m.timestamp)).value
    return values


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


# --- git ---------------------------------------------------------------------------------------


def resolve_commit(rev: str, repo: str | os.PathLike[str] = ".") -> str:
    """The full SHA ``rev`` names in ``repo``; a full SHA is accepted without a repository."""
    try:
        result = git_capture.run_git(
            ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"],
            repo,
            check=False,
        )
    except git_capture.NotARepository:
        result = None
    except git_capture.GitUnavailable as error:
        if _HEX.match(rev):
            return rev.lower()
        raise MltrailError(f"Cannot resolve {rev!r}: {error}. Give a full commit SHA.") from None
    if result is not None and result.returncode == 0:
        return result.stdout.decode().strip()
    stderr = result.stderr.decode("utf-8", "replace") if result is not None else ""
    error = git_capture.classify_error(stderr, "rev-parse")
    if result is None or isinstance(error, git_capture.NotARepository):
        if _HEX.match(rev):
            return rev.lower()
        raise MltrailError(
            f"{Path(repo).resolve()} is not a git repository. Run this inside the repository, "
            "pass --repo PATH, give a full commit SHA with --commit, or list the runs of any "
            "commit with --all."
        )
    if stderr.strip() and isinstance(error, git_capture.GitUnavailable) and "dubious" in str(error):
        raise MltrailError(f"Cannot resolve {rev!r}: {error}.")
    raise MltrailError(f"Unknown revision {rev!r} in {Path(repo).resolve()}: not a commit.")


def snapshot_runs(commit: str, repo: str | os.PathLike[str] = ".") -> list[str]:
    """Run ids whose snapshot commit (``refs/mltrail/runs/<run_id>``) has ``commit`` as parent."""
    from mltrail.capture.snapshot import REF_PREFIX

    try:
        result = git_capture.run_git(
            ["for-each-ref", "--format=%(refname)%00%(parent)", REF_PREFIX], repo, check=False
        )
    except (git_capture.GitUnavailable, git_capture.NotARepository):
        return []
    found = []
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        ref, _, parents = line.partition("\0")
        if commit in parents.split():
            found.append(re.sub(r"-resume-\d+$", "", ref[len(REF_PREFIX) :]))
    return sorted(set(found))


# --- runs ----------------------------------------------------------------------------------------


def _time(ms: int | None) -> str | None:
    if ms is None:
        return None
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _dirty(value: str | None) -> bool | None:
    return {"true": True, "false": False}.get(value or "")


def run_summary(run: Any, experiments: dict[str, str], match: str) -> dict[str, Any]:
    """One run as listed by ``mltrail runs --json``."""
    tags = run.data.tags
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment_id": run.info.experiment_id,
        "experiment": experiments.get(run.info.experiment_id),
        "status": run.info.status,
        "start_time": _time(run.info.start_time),
        "end_time": _time(run.info.end_time),
        "commit": tags.get("mlflow.source.git.commit"),
        "branch": tags.get("mlflow.source.git.branch"),
        "dirty": _dirty(tags.get("mltrail.git.dirty")),
        "snapshot": tags.get("mltrail.git.snapshot"),
        "data_dirty": tags.get("mltrail.dvc.data_dirty"),
        "fingerprint": tags.get("mltrail.fingerprint"),
        "metrics": {
            k: v for k, v in sorted(run.data.metrics.items()) if not k.startswith("system/")
        },
        "match": match,
    }


class _MlflowRuns:
    """The queries of ``mltrail runs`` through MLflow's client: any store, any server."""

    def __init__(self, client: Any, uri: str) -> None:
        self.client, self.uri = client, uri

    def experiments(self, name: str | None) -> dict[str, str] | None:
        if name:
            found = store_call(
                lambda: self.client.get_experiment_by_name(name), self.uri, "reading experiments"
            )
            return None if found is None else {found.experiment_id: found.name}
        return experiment_names(self.client, self.uri, None)

    def runs_with_tag(
        self,
        experiment_ids: list[str],
        key: str,
        value: str | None = None,
        prefix: str | None = None,
        limit: int = 1000,
        status: str | None = None,
    ) -> list[Any]:
        if value is not None:
            query = f"tags.`{key}` = '{value}'"
        else:
            query = f"tags.`{key}` LIKE '{prefix or ''}%'"
        query += _status_filter(status)
        return search_runs(self.client, self.uri, experiment_ids, query, limit)

    def runs_by_id(
        self,
        experiment_ids: list[str],
        run_ids: list[str],
        limit: int,
        status: str | None = None,
    ) -> list[Any]:
        found = []
        for start in range(0, len(run_ids), 100):
            chunk = ", ".join(f"'{i}'" for i in run_ids[start : start + 100])
            query = f"attributes.run_id IN ({chunk})" + _status_filter(status)
            found += search_runs(self.client, self.uri, experiment_ids, query, limit)
        return found

    def all_runs(
        self, experiment_ids: list[str], limit: int = 1000, status: str | None = None
    ) -> list[Any]:
        query = _status_filter(status).removeprefix(" AND ")
        return search_runs(self.client, self.uri, experiment_ids, query, limit)


def _status_filter(status: str | None) -> str:
    return f" AND attributes.status = '{status}'" if status else ""


def check_status(status: str | None) -> str | None:
    """``--status`` as MLflow spells it (upper case), or None for any status.

    Raises:
        MltrailError: when it is not one of MLflow's run statuses.
    """
    if not status:
        return None
    if status.upper() not in sqlite_reader.STATUSES:
        raise MltrailError(
            f"{status!r} is not a run status: use one of {', '.join(sqlite_reader.STATUSES)}."
        )
    return status.upper()


def list_runs(
    tracking_uri: str | None,
    experiment: str | None = None,
    commit: str | None = None,
    fingerprint: str | None = None,
    repo: str | os.PathLike[str] = ".",
    limit: int = 1000,
    status: str | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """The runs made from ``commit`` (or sharing ``fingerprint``; with neither, every run), as
    ``mltrail runs`` lists them, and the tracking URI read.

    Args:
        tracking_uri: the store (None: ``MLFLOW_TRACKING_URI``, else MLflow's default).
        experiment: only runs of this experiment.
        commit: a full commit id (see :func:`resolve_commit`): its runs, and those whose
            snapshot sits on it.
        fingerprint: runs with this ``mltrail.fingerprint`` (a prefix is enough); "*": every
            fingerprint shared by several runs.
        repo: the git repository of ``commit`` (for its snapshot refs).
        limit: at most this many runs.
        status: only runs with this status (see :func:`check_status`).
    """
    rows: list[dict[str, Any]] | None = None
    status = check_status(status)
    uri = client_module.resolve_uri(tracking_uri)
    query = (experiment, commit, fingerprint, repo, limit, status)
    reader = sqlite_reader.open_reader(uri)
    if reader is not None:  # a local sqlite store: read it directly, in milliseconds
        try:
            rows = _find_runs(reader, uri, *query)
        except (sqlite_reader.Unsupported, sqlite3.Error) as error:
            logger.debug("reading %s through MLflow: %s", uri, error)
        finally:
            reader.close()
    if rows is None:
        client, uri = open_store(uri)
        if isinstance(client, client_module.LocalClient):
            client = client.mlflow
        rows = _find_runs(_MlflowRuns(client, uri), uri, *query)
    return rows, uri


def _find_runs(
    source: Any,
    uri: str,
    experiment: str | None,
    commit: str | None,
    fingerprint: str | None,
    repo: str | os.PathLike[str],
    limit: int,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """The rows of ``mltrail runs``, newest first, from either source of runs."""
    experiments = source.experiments(experiment)
    if experiments is None:
        raise MltrailError(f"There is no experiment named {experiment!r} in {describe_uri(uri)}.")
    ids = list(experiments)
    rows: list[dict[str, Any]] = []
    if commit is not None:
        found = source.runs_with_tag(
            ids, "mlflow.source.git.commit", value=commit, limit=limit, status=status
        )
        rows = [run_summary(r, experiments, "commit") for r in found]
        seen = {r["run_id"] for r in rows}
        extra = [i for i in snapshot_runs(commit, repo) if i not in seen and RUN_ID.match(i)]
        if extra:
            for run in source.runs_by_id(ids, extra, limit, status=status):
                rows.append(run_summary(run, experiments, "snapshot_parent"))
    if fingerprint is not None:
        rows = _fingerprint_rows(source, experiments, fingerprint, limit, rows, commit, status)
    if commit is None and fingerprint is None:
        found = source.all_runs(ids, limit=limit, status=status)
        rows = [run_summary(r, experiments, "listed") for r in found]
    rows.sort(key=lambda r: r["start_time"] or "", reverse=True)
    return rows[:limit]


def _fingerprint_rows(
    source: Any,
    experiments: dict[str, str],
    fingerprint: str,
    limit: int,
    commit_rows: list[dict[str, Any]],
    commit: str | None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    ids = list(experiments)
    if fingerprint != "*":
        if not re.match(r"^[0-9a-fA-F]{4,64}$", fingerprint):
            raise MltrailError(f"{fingerprint!r} is not a fingerprint (hexadecimal digits).")
        found = source.runs_with_tag(
            ids, "mltrail.fingerprint", prefix=fingerprint.lower(), limit=limit, status=status
        )
        rows = [run_summary(r, experiments, "fingerprint") for r in found]
    else:
        found = source.runs_with_tag(ids, "mltrail.fingerprint", limit=limit, status=status)
        rows = [run_summary(r, experiments, "fingerprint") for r in found]
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["fingerprint"]] = counts.get(row["fingerprint"], 0) + 1
        rows = [r for r in rows if counts[r["fingerprint"]] > 1]
    if commit is not None:
        wanted = {r["run_id"] for r in commit_rows}
        rows = [r for r in rows if r["run_id"] in wanted]
    return rows


#: Metrics a ``mltrail runs`` line shows when the terminal has room (then "(+N)").
RUN_METRICS = 4


def dirty_label(row: dict[str, Any]) -> str:
    """The DIRTY column of ``mltrail runs``: what differed from the commit when the run started:
    "code" (uncommitted changes), "data" (DVC data differing from the ``.dvc`` files),
    "code+data", "no", or "-" when the run recorded neither."""
    code, data = row["dirty"], row.get("data_dirty")
    parts = [name for name, flag in (("code", code is True), ("data", data == "true")) if flag]
    clean = "no" if code is False or data == "false" else "-"
    label = "+".join(parts) if parts else clean
    if row["match"] == "snapshot_parent":
        label += " (snapshot)"
    return label


def format_runs(
    rows: list[dict[str, Any]], with_fingerprint: bool = False, width: int | None = None
) -> str:
    """The ``mltrail runs`` table of ``rows`` (from :func:`list_runs`).

    Args:
        rows: the runs.
        with_fingerprint: add the FINGERPRINT column.
        width: the terminal's width: lines longer than this are made to fit (run ids
            abbreviated to a prefix ``show`` accepts, minutes without seconds, long names cut
            with "…", fewer metrics); None: whole lines.
    """
    headers = ["RUN ID", "EXPERIMENT", "NAME", "STATUS", "STARTED (UTC)", "DIRTY", "METRICS"]
    if with_fingerprint:
        headers.insert(6, "FINGERPRINT")
    cells, metrics = [], []
    for row in rows:
        items = [f"{k}={number(v)}" for k, v in row["metrics"].items()]
        metrics.append(items)
        line = [
            row["run_id"],
            row["experiment"] or row["experiment_id"],
            row["run_name"] or "",
            row["status"],
            (row["start_time"] or "-").replace("T", " ").rstrip("Z"),
            dirty_label(row),
        ]
        if with_fingerprint:
            line.append((row["fingerprint"] or "-")[:12])
        cells.append(line)

    def render(metric_width: int | None) -> str:
        body = []
        for line, items in zip(cells, metrics, strict=True):
            if metric_width is None:
                text = "  ".join(items[:RUN_METRICS])
                if len(items) > RUN_METRICS:
                    text += f"  (+{len(items) - RUN_METRICS})"
            else:
                text = fit_items(items, metric_width)
            body.append([*line, text or "-"])
        return table([headers, *body])

    text = render(None)
    if width is None or max(map(len, text.splitlines())) <= width:
        return text
    # Too wide: abbreviate what stays usable, cut long names, give the metrics what is left.
    for line in cells:
        line[0], line[4] = line[0][:SHORT_ID], line[4][:16]

    def widest(index: int) -> int:
        return max(len(str(r[index])) for r in [headers, *cells])

    names = [min(widest(1), NAME_WIDTH), min(widest(2), NAME_WIDTH)]
    others = sum(widest(i) for i in range(len(cells[0])) if i not in (1, 2))
    spare = width - others - 2 * len(cells[0]) - MIN_METRICS
    while sum(names) > spare and max(names) > MIN_NAME:
        names[names.index(max(names))] -= 1
    for line in [headers, *cells]:
        line[1], line[2] = clip(line[1], names[0]), clip(line[2], names[1])
    room = width - others - sum(names) - 2 * len(cells[0])
    text = render(max(room, len("(+99)")))
    return "\n".join(clip(line, width) for line in text.splitlines())


#: How many characters of a run id ``mltrail runs`` shows when the full id does not fit.
SHORT_ID = 12
#: How many characters of an experiment or run name ``mltrail runs`` shows when lines are cut
#: (down to ``MIN_NAME`` on a narrow terminal, keeping ``MIN_METRICS`` for the metrics).
NAME_WIDTH = 20
MIN_NAME = 8
MIN_METRICS = 24


# --- show ----------------------------------------------------------------------------------------


def run_json(client: Any, tracking_uri: str, run_id: str, artifact: str) -> dict[str, Any] | None:
    """A JSON object the run logged as ``artifact`` (a path in the run's artifacts).

    Args:
        client: an ``MlflowClient`` (or :class:`mltrail.query.client.LocalClient`) of the store.
        tracking_uri: the store's URI, for the error message.
        run_id: the run.
        artifact: the artifact's path, e.g. ``"mltrail/provenance.json"``.

    Returns:
        The parsed object, or None when the run has no such artifact or it holds no JSON object.

    Raises:
        MltrailError: when the store cannot be read (see :func:`store_call`).
    """

    def download() -> dict[str, Any] | None:
        folder = artifact.rpartition("/")[0] or None
        if not any(f.path == artifact for f in client.list_artifacts(run_id, folder)):
            return None
        with tempfile.TemporaryDirectory(prefix="mltrail-") as tmp:
            path = client.download_artifacts(run_id, artifact, tmp)
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        return data if isinstance(data, dict) else None

    return store_call(download, tracking_uri, f"reading {artifact}")


def load_provenance(client: Any, uri: str, run_id: str) -> dict[str, Any] | None:
    """The run's ``mltrail/provenance.json`` record, or None when it has none."""
    from mltrail.capture.provenance import PROVENANCE_ARTIFACT

    return run_json(client, uri, run_id, PROVENANCE_ARTIFACT)


def resolve_run_id(client: Any, uri: str, text: str) -> str:
    """The full id of the run that ``text`` names: a run id, a unique prefix of one at least
    :data:`MIN_PREFIX` characters long (prefixes match runs that are not deleted), or a
    ``models:/`` URI (the run the model came from, :mod:`mltrail.query.registry`). Every verb
    that takes a run id resolves it here (:func:`read_run` does for the verbs that read one).

    Raises:
        MltrailError: when ``text`` is not a run id, names no run, or is a prefix of several
            (the message lists them).
    """
    return _find_run(client, uri, text)[0]


def _find_run(client: Any, uri: str, text: str) -> tuple[str, Any]:
    """The full id of the run ``text`` names (see :func:`resolve_run_id`), and the run."""
    run_id = text.strip()
    if run_id.startswith("models:/"):  # a registered or logged model: the run it came from
        from mltrail.query.registry import resolve_model

        run_id = resolve_model(client, uri, run_id).run_id
    if not RUN_ID.match(run_id):
        raise MltrailError(f"{text!r} is not a run id.")
    try:
        return run_id, store_call(lambda: client.get_run(run_id), uri, "reading the run")
    except Exception as error:
        if not is_not_found(error):
            raise
    matches: list[str] = []
    if len(run_id) >= MIN_PREFIX:
        matches = store_call(lambda: _ids_with_prefix(client, run_id), uri, "searching run ids")
    if not matches:
        hint = ""
        if len(run_id) < MIN_PREFIX:
            hint = f" (a prefix of a run id needs at least {MIN_PREFIX} characters)"
        raise MltrailError(f"There is no run {run_id!r} in {describe_uri(uri)}{hint}.")
    if len(matches) > 1:
        many = f"{len(matches)} or more" if len(matches) >= _MAX_MATCHES else str(len(matches))
        lines = [f"{run_id!r} is the start of {many} run ids; give more characters:"]
        for match in matches[:10]:
            lines.append("  " + _describe_match(client, uri, match))
        if len(matches) > 10:
            lines.append(f"  ... and {len(matches) - 10} more")
        raise MltrailError("\n".join(lines))
    full = matches[0]
    return full, store_call(lambda: client.get_run(full), uri, "reading the run")


def _ids_with_prefix(client: Any, prefix: str) -> list[str]:
    if isinstance(client, client_module.LocalClient):
        return client.run_ids_with_prefix(prefix, _MAX_MATCHES)
    return client_module.mlflow_run_ids_with_prefix(client, prefix, _MAX_MATCHES)


def _describe_match(client: Any, uri: str, run_id: str) -> str:
    """One line naming a run among several that a prefix matches."""
    try:
        run = store_call(lambda: client.get_run(run_id), uri, "reading the run")
    except Exception:  # the list of ids is the answer; the details are a courtesy
        return run_id
    started = _short_time(_time(run.info.start_time))
    name = f"  {run.info.run_name}" if run.info.run_name else ""
    return f"{run_id}{name}  {run.info.status}  started {started}"


def read_run(client: Any, uri: str, run_id: str) -> tuple[Any, str | None, dict[str, Any] | None]:
    """A run, the name of its experiment and its ``provenance.json`` record (None without).

    Raises:
        MltrailError: when ``run_id`` is not a run id or the store has no such run.
    """
    run_id, run = _find_run(client, uri, run_id)
    experiment = store_call(
        lambda: client.get_experiment(run.info.experiment_id), uri, "reading the experiment"
    )
    record = load_provenance(client, uri, run_id)
    return run, experiment.name if experiment else None, record


def show_data(client: Any, uri: str, run_id: str) -> dict[str, Any]:
    """Everything ``mltrail show --json`` prints for ``run_id``."""
    run, experiment_name, record = read_run(client, uri, run_id)
    tags = run.data.tags
    git = (record or {}).get("git") or {}
    dvc = (record or {}).get("dvc") or {}
    env = (record or {}).get("environment") or {}
    statuses = ((dvc.get("data_status") or {}).get("outputs")) or {}
    datasets = []
    for item in run.inputs.dataset_inputs if run.inputs else []:
        ds = item.dataset
        try:
            source = json.loads(ds.source)
        except (TypeError, ValueError):
            source = ds.source
        context = {t.key: t.value for t in item.tags or []}.get("mlflow.data.context")
        datasets.append(
            {
                "name": ds.name,
                "digest": ds.digest,
                "source_type": ds.source_type,
                "source": source,
                "context": context,
                "status": statuses.get(ds.name),
            }
        )
    diff = git.get("diff") or None
    start, end = run.info.start_time, run.info.end_time
    return {
        "schema_version": SCHEMA_VERSION,
        "run": {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "experiment_id": run.info.experiment_id,
            "experiment": experiment_name,
            "status": run.info.status,
            "start_time": _time(start),
            "end_time": _time(end),
            "duration_seconds": (end - start) / 1000 if start and end else None,
            "user": tags.get("mlflow.user"),
            "source": tags.get("mlflow.source.name"),
        },
        "code": {
            "commit": tags.get("mlflow.source.git.commit"),
            "branch": tags.get("mlflow.source.git.branch"),
            "repo_url": tags.get("mlflow.source.git.repoURL"),
            "dirty": _dirty(tags.get("mltrail.git.dirty")),
            "snapshot": tags.get("mltrail.git.snapshot"),
            "snapshot_ref": (git.get("snapshot") or {}).get("ref"),
            "unavailable": tags.get("mltrail.git.unavailable"),
            "changed": git.get("changed"),
            "untracked": git.get("untracked"),
            "diff": None
            if not diff
            else {
                k: diff.get(k)
                for k in ("files", "insertions", "deletions", "binary_files", "sha256", "truncated")
            },
        },
        "data": {
            "data_dirty": tags.get("mltrail.dvc.data_dirty"),
            "unavailable": tags.get("mltrail.dvc.unavailable"),
            "datasets": datasets,
        },
        "environment": {
            "python": env.get("python"),
            "platform": env.get("platform"),
            "cpu": env.get("cpu"),
            "memory_bytes": env.get("memory_bytes"),
            "gpus": env.get("gpus"),
            "packages": env.get("packages"),
            "command": env.get("command"),
            "versions": env.get("versions"),
        },
        "params": dict(sorted(run.data.params.items())),
        "metrics": dict(sorted(_current_metrics(client, uri, run).items())),
        "fingerprint": tags.get("mltrail.fingerprint"),
        "lineage": fork_links(client, uri, run),
        "provenance": record,
    }


#: Params ``mltrail show`` lists before folding the rest behind a count (``--all``: every one).
SHOW_PARAMS = 20


def format_show(data: dict[str, Any], show_all: bool = False) -> str:
    """The human-readable ``mltrail show`` text: model metrics before ``system/`` ones, at most
    :data:`SHOW_PARAMS` params (a framework's whole configuration can be 50) unless ``show_all``.
    """
    run, code, dvc, env = data["run"], data["code"], data["data"], data["environment"]
    lines = [
        f"Run         {run['run_id']}" + (f"  ({run['run_name']})" if run["run_name"] else ""),
        f"Experiment  {run['experiment']} ({run['experiment_id']})",
        f"Status      {run['status']}, started {_short_time(run['start_time'])}"
        + (f", {run['duration_seconds']:.1f} s" if run["duration_seconds"] is not None else ""),
    ]
    lines += _lineage_lines(data.get("lineage") or {})
    lines += ["", "Code"]
    if code["commit"]:
        branch = f" (branch {code['branch']})" if code["branch"] else " (detached HEAD)"
        lines.append(f"  commit    {code['commit']}{branch}")
    if code["repo_url"]:
        lines.append(f"  remote    {code['repo_url']}")
    dirty = {True: "yes", False: "no", None: "unknown"}[code["dirty"]]
    details = []
    diff = code["diff"]
    if diff:
        files = diff.get("files") or []
        details.append(
            f"{len(files)} file(s) changed, +{diff.get('insertions') or 0} "
            f"-{diff.get('deletions') or 0}"
        )
        if diff.get("binary_files"):
            details.append(f"{len(diff['binary_files'])} binary")
    if code["untracked"]:
        details.append(f"{len(code['untracked'])} untracked file(s)")
    lines.append(f"  dirty     {dirty}" + (f": {', '.join(details)}" if details else ""))
    files = (diff or {}).get("files") or []
    for item in files[:20]:
        stat = "binary" if item.get("binary") else f"+{item.get('added')} -{item.get('deleted')}"
        lines.append(f"              {item['path']}  {stat}")
    if len(files) > 20:
        lines.append(f"              ... and {len(files) - 20} more (mltrail/git.diff)")
    if code["snapshot"]:
        ref = f"  ({code['snapshot_ref']})" if code["snapshot_ref"] else ""
        lines.append(f"  snapshot  {code['snapshot']}{ref}")
    if code["unavailable"]:
        lines.append(f"  note      {code['unavailable']}")
    lines += ["", f"Data (data dirty: {dvc['data_dirty'] or 'not checked'})"]
    if dvc["unavailable"]:
        lines.append(f"  note      {dvc['unavailable']}")
    rows = []
    for ds in dvc["datasets"]:
        source = ds["source"] if isinstance(ds["source"], dict) else {}
        details = []
        if ds.get("source_type") not in (None, "dvc"):
            details.append(f"from {ds['source_type']}")
        if ds.get("context") not in (None, ds["name"], ds.get("source_type"), "dvc.snapshot"):
            details.append(f"context {ds['context']}")
        if source.get("remote"):
            details.append(f"remote {source['remote']}")
        if ds.get("context") == "dvc.snapshot":  # datasnap.SNAPSHOT_CONTEXT: data mltrail stored
            details.append("[used: modified, stored by mltrail]")
        elif ds.get("status"):
            details.append(f"[{ds['status']}]")
        # The name column is at least as wide as "note    ", so values line up under it.
        rows.append([ds["name"].ljust(8), ds["digest"] or "-", "  ".join(details)])
    lines += ["  " + line for line in table(rows).splitlines()] if rows else []
    if not dvc["datasets"] and not dvc["unavailable"]:
        lines.append("  (no datasets)")
    lines += ["", "Environment"]
    python, platform, cpu = env["python"] or {}, env["platform"] or {}, env["cpu"] or {}
    if python:
        lines.append(
            f"  Python {python.get('version')} ({python.get('implementation')}) on "
            f"{platform.get('platform')}"
        )
        memory = env.get("memory_bytes")
        lines.append(
            f"  {cpu.get('count')} CPU(s) {cpu.get('model') or ''}"
            + (f", {memory / 2**30:.1f} GiB memory" if memory else "")
        )
        gpus = env.get("gpus") or []
        lines.append(
            "  GPUs: "
            + (", ".join(f"{g.get('name')} (driver {g.get('driver')})" for g in gpus) or "none")
        )
        if env.get("packages"):
            lines.append(f"  {env['packages']} packages (mltrail/requirements.txt)")
        command = (env.get("command") or {}).get("argv")
        if command:
            lines.append(f"  command: {' '.join(command)}")
    else:
        lines.append("  (no provenance.json on this run)")
    params = list(data["params"].items())
    folded = not show_all and len(params) > SHOW_PARAMS
    lines += ["", f"Params ({len(params)})" if folded else "Params"]
    lines += [f"  {k} = {v}" for k, v in params[: SHOW_PARAMS if folded else None]]
    if folded:
        lines.append(f"  ... and {len(params) - SHOW_PARAMS} more (--all shows every param)")
    if not params:
        lines.append("  (none)")
    lines += ["", "Metrics (latest)"]
    metrics = sorted(data["metrics"].items(), key=lambda kv: (kv[0].startswith("system/"), kv[0]))
    lines += [f"  {k} = {number(v)}" for k, v in metrics] or ["  (none)"]
    if data["fingerprint"]:
        lines += ["", f"Fingerprint {data['fingerprint']}"]
    return "\n".join(lines)


def _lineage_lines(lineage: dict[str, Any]) -> list[str]:
    """The fork parent, forks, rewinds and resumes of a run, under its status line."""
    lines = []
    parent = lineage.get("forked_from")
    if parent:
        lines.append(f"Lineage     forked from  {parent['run_id']} at step {parent['step']}")
    for child in lineage.get("forks") or []:
        label = "Lineage     " if not lines else "            "
        lines.append(f"{label}fork         {child['run_id']} at step {child['step']}")
    if lineage.get("rewound_to"):
        label = "Lineage     " if not lines else "            "
        steps = ", ".join(str(s) for s in lineage["rewound_to"])
        lines.append(f"{label}rewound to   step {steps} (fork=False)")
    if lineage.get("resumes"):
        label = "Lineage     " if not lines else "            "
        lines.append(f"{label}resumed      {lineage['resumes']} time(s)")
    return lines


def _short_time(text: str | None) -> str:
    return (text or "-").replace("T", " ").rstrip("Z") + (" UTC" if text else "")
