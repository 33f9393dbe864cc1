"""``mltrail runs`` and ``mltrail show``: find the runs of a commit, and what one run was made of.

``mltrail runs [--commit REV] [--experiment NAME] [--fingerprint [FP]] [--json]`` lists the runs
whose ``mlflow.source.git.commit`` is the commit REV resolves to (default ``HEAD``; any rev git
understands, short SHAs included), and the runs whose snapshot commit
(``refs/mltrail/runs/<run_id>``) has that commit as parent. ``--fingerprint FP`` lists the runs
with that ``mltrail.fingerprint``; ``--fingerprint`` alone lists fingerprints shared by several
runs (the same code, data and params run more than once).

``mltrail show RUN_ID [--json]`` prints the run's code, data, environment, params and metrics,
from its tags, dataset inputs and ``mltrail/provenance.json``.

The commands themselves are :mod:`mltrail.cli.runs` and :mod:`mltrail.cli.show`. ``--json``
output is stable (``schema_version`` 1); fields never change meaning, new fields may be added:

- ``runs``: ``{"schema_version", "tracking_uri", "commit", "fingerprint", "runs": [RUN]}``
  where RUN is ``{"run_id", "run_name", "experiment_id", "experiment", "status",
  "start_time", "end_time" (ISO 8601 UTC or null), "commit", "branch", "dirty" (true, false or
  null), "snapshot", "data_dirty" ("true", "false", "unknown" or null), "fingerprint",
  "metrics" ({key: latest value}, ``system/`` metrics left out), "match" ("commit",
  "snapshot_parent" or "fingerprint")}``, newest first.
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
from mltrail.query import sqlite_reader
from mltrail.query.display import number, table
from mltrail.recording.sanitize import redact_text
from mltrail.store import call_with_timeout, describe_uri, sqlite_path

logger = logging.getLogger("mltrail.query")
SCHEMA_VERSION = 1
STORE_TIMEOUT = 60.0
_HEX = re.compile(r"^[0-9a-fA-F]{40}([0-9a-fA-F]{24})?$")
#: What a run id given on the command line may look like (checked before asking the store).
RUN_ID = re.compile(r"^[0-9a-zA-Z_\-]{1,64}$")
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
    from mltrail.store import make_client, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        raise MltrailError(
            f"There is no MLflow store at {path}. Pass --tracking-uri or set "
            "MLFLOW_TRACKING_URI to the store your runs were logged to."
        )
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


def search_runs(client: Any, uri: str, ids: list[str], query: str, limit: int) -> list[Any]:
    """Runs of experiments ``ids`` matching the MLflow filter ``query``, newest first, at
    most ``limit`` (through :func:`store_call`)."""

    def search() -> list[Any]:
        runs: list[Any] = []
        token = None
        while len(runs) < limit:
            page = client.search_runs(
                ids,
                query,
                max_results=min(limit - len(runs), 50_000),
                order_by=["attributes.start_time DESC"],
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
        return runs

    return store_call(search, uri, "searching runs") if ids else []


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
            "pass --repo PATH, or give a full commit SHA with --commit."
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
    ) -> list[Any]:
        if value is not None:
            query = f"tags.`{key}` = '{value}'"
        else:
            query = f"tags.`{key}` LIKE '{prefix or ''}%'"
        return search_runs(self.client, self.uri, experiment_ids, query, limit)

    def runs_by_id(self, experiment_ids: list[str], run_ids: list[str], limit: int) -> list[Any]:
        found = []
        for start in range(0, len(run_ids), 100):
            chunk = ", ".join(f"'{i}'" for i in run_ids[start : start + 100])
            found += search_runs(
                self.client, self.uri, experiment_ids, f"attributes.run_id IN ({chunk})", limit
            )
        return found


def _explicit_uri(tracking_uri: str | None) -> str | None:
    """The URI given or set in the environment, known without importing MLflow."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def list_runs(
    tracking_uri: str | None,
    experiment: str | None = None,
    commit: str | None = None,
    fingerprint: str | None = None,
    repo: str | os.PathLike[str] = ".",
    limit: int = 1000,
) -> tuple[list[dict[str, Any]], str]:
    """The runs made from ``commit`` (or sharing ``fingerprint``), as ``mltrail runs`` lists
    them, and the tracking URI read.

    Args:
        tracking_uri: the store (None: ``MLFLOW_TRACKING_URI``, else MLflow's default).
        experiment: only runs of this experiment.
        commit: a full commit id (see :func:`resolve_commit`): its runs, and those whose
            snapshot sits on it.
        fingerprint: runs with this ``mltrail.fingerprint`` (a prefix is enough); "*": every
            fingerprint shared by several runs.
        repo: the git repository of ``commit`` (for its snapshot refs).
        limit: at most this many runs.
    """
    rows: list[dict[str, Any]] | None = None
    uri = _explicit_uri(tracking_uri)
    reader = sqlite_reader.open_reader(uri) if uri else None
    if reader is not None:  # a local sqlite store: read it directly, in milliseconds
        try:
            rows = _find_runs(reader, uri, experiment, commit, fingerprint, repo, limit)
        except (sqlite_reader.Unsupported, sqlite3.Error) as error:
            logger.debug("reading %s through MLflow: %s", uri, error)
        finally:
            reader.close()
    if rows is None:
        client, uri = open_store(tracking_uri)
        source = _MlflowRuns(client, uri)
        rows = _find_runs(source, uri, experiment, commit, fingerprint, repo, limit)
    assert uri is not None
    return rows, uri


def _find_runs(
    source: Any,
    uri: str,
    experiment: str | None,
    commit: str | None,
    fingerprint: str | None,
    repo: str,
    limit: int,
) -> list[dict[str, Any]]:
    """The rows of ``mltrail runs``, newest first, from either source of runs."""
    experiments = source.experiments(experiment)
    if experiments is None:
        raise MltrailError(f"There is no experiment named {experiment!r} in {describe_uri(uri)}.")
    ids = list(experiments)
    rows: list[dict[str, Any]] = []
    if commit is not None:
        found = source.runs_with_tag(ids, "mlflow.source.git.commit", value=commit, limit=limit)
        rows = [run_summary(r, experiments, "commit") for r in found]
        seen = {r["run_id"] for r in rows}
        extra = [i for i in snapshot_runs(commit, repo) if i not in seen and RUN_ID.match(i)]
        if extra:
            for run in source.runs_by_id(ids, extra, limit):
                rows.append(run_summary(run, experiments, "snapshot_parent"))
    if fingerprint is not None:
        rows = _fingerprint_rows(source, experiments, fingerprint, limit, rows, commit)
    rows.sort(key=lambda r: r["start_time"] or "", reverse=True)
    return rows[:limit]


def _fingerprint_rows(
    source: Any,
    experiments: dict[str, str],
    fingerprint: str,
    limit: int,
    commit_rows: list[dict[str, Any]],
    commit: str | None,
) -> list[dict[str, Any]]:
    ids = list(experiments)
    if fingerprint != "*":
        if not re.match(r"^[0-9a-fA-F]{4,64}$", fingerprint):
            raise MltrailError(f"{fingerprint!r} is not a fingerprint (hexadecimal digits).")
        found = source.runs_with_tag(
            ids, "mltrail.fingerprint", prefix=fingerprint.lower(), limit=limit
        )
        rows = [run_summary(r, experiments, "fingerprint") for r in found]
    else:
        found = source.runs_with_tag(ids, "mltrail.fingerprint", limit=limit)
        rows = [run_summary(r, experiments, "fingerprint") for r in found]
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["fingerprint"]] = counts.get(row["fingerprint"], 0) + 1
        rows = [r for r in rows if counts[r["fingerprint"]] > 1]
    if commit is not None:
        wanted = {r["run_id"] for r in commit_rows}
        rows = [r for r in rows if r["run_id"] in wanted]
    return rows


def format_runs(rows: list[dict[str, Any]], with_fingerprint: bool = False) -> str:
    """The ``mltrail runs`` table of ``rows`` (from :func:`list_runs`)."""
    headers = ["RUN ID", "EXPERIMENT", "NAME", "STATUS", "STARTED (UTC)", "DIRTY", "METRICS"]
    if with_fingerprint:
        headers.insert(6, "FINGERPRINT")
    lines = []
    for row in rows:
        dirty = {True: "yes", False: "no", None: "-"}[row["dirty"]]
        if row["match"] == "snapshot_parent":
            dirty += " (snapshot)"
        started = (row["start_time"] or "-").replace("T", " ").rstrip("Z")
        metrics = "  ".join(f"{k}={number(v)}" for k, v in list(row["metrics"].items())[:4])
        if len(row["metrics"]) > 4:
            metrics += f"  (+{len(row['metrics']) - 4})"
        cells = [
            row["run_id"],
            row["experiment"] or row["experiment_id"],
            row["run_name"] or "",
            row["status"],
            started,
            dirty,
            metrics or "-",
        ]
        if with_fingerprint:
            cells.insert(6, (row["fingerprint"] or "-")[:12])
        lines.append(cells)
    return table([headers, *lines])


# --- show ----------------------------------------------------------------------------------------


def load_provenance(client: Any, uri: str, run_id: str) -> dict[str, Any] | None:
    """The run's ``mltrail/provenance.json`` record, or None when it has none."""
    from mltrail.capture.provenance import PROVENANCE_ARTIFACT

    def download() -> dict[str, Any] | None:
        folder = PROVENANCE_ARTIFACT.rpartition("/")[0]
        if not any(f.path == PROVENANCE_ARTIFACT for f in client.list_artifacts(run_id, folder)):
            return None
        with tempfile.TemporaryDirectory(prefix="mltrail-show-") as tmp:
            path = client.download_artifacts(run_id, PROVENANCE_ARTIFACT, tmp)
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        return data if isinstance(data, dict) else None

    return store_call(download, uri, "reading provenance.json")


def read_run(client: Any, uri: str, run_id: str) -> tuple[Any, str | None, dict[str, Any] | None]:
    """A run, the name of its experiment and its ``provenance.json`` record (None without).

    Raises:
        MltrailError: when ``run_id`` is not a run id or the store has no such run.
    """
    run_id = run_id.strip()
    if not RUN_ID.match(run_id):
        raise MltrailError(f"{run_id!r} is not a run id.")
    try:
        run = store_call(lambda: client.get_run(run_id), uri, "reading the run")
    except Exception as error:
        if is_not_found(error):
            raise MltrailError(f"There is no run {run_id!r} in {describe_uri(uri)}.") from None
        raise
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
        "metrics": dict(sorted(run.data.metrics.items())),
        "fingerprint": tags.get("mltrail.fingerprint"),
        "provenance": record,
    }


def format_show(data: dict[str, Any]) -> str:
    """The human-readable ``mltrail show`` text."""
    run, code, dvc, env = data["run"], data["code"], data["data"], data["environment"]
    lines = [
        f"Run         {run['run_id']}" + (f"  ({run['run_name']})" if run["run_name"] else ""),
        f"Experiment  {run['experiment']} ({run['experiment_id']})",
        f"Status      {run['status']}, started {_short_time(run['start_time'])}"
        + (f", {run['duration_seconds']:.1f} s" if run["duration_seconds"] is not None else ""),
        "",
        "Code",
    ]
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
    for ds in dvc["datasets"]:
        source = ds["source"] if isinstance(ds["source"], dict) else {}
        remote = f"  remote {source['remote']}" if source.get("remote") else ""
        status = f"  [{ds['status']}]" if ds.get("status") else ""
        if ds.get("context") == "dvc.snapshot":  # datasnap.SNAPSHOT_CONTEXT: data mltrail stored
            status = "  [used: modified, stored by mltrail]"
        lines.append(f"  {ds['name']}  {ds['digest']}{remote}{status}")
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
    lines += ["", "Params"]
    lines += [f"  {k} = {v}" for k, v in data["params"].items()] or ["  (none)"]
    lines += ["", "Metrics (latest)"]
    lines += [f"  {k} = {number(v)}" for k, v in data["metrics"].items()] or ["  (none)"]
    if data["fingerprint"]:
        lines += ["", f"Fingerprint {data['fingerprint']}"]
    return "\n".join(lines)


def _short_time(text: str | None) -> str:
    return (text or "-").replace("T", " ").rstrip("Z") + (" UTC" if text else "")
