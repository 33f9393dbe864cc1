"""``mltrail checkout``, ``push`` and ``which``: a run's code and data back, shared, and found.

``mltrail checkout RUN_ID [--into DIR]`` restores the code a run started from (the snapshot
commit ``refs/mltrail/runs/<run_id>`` when the tree was dirty, its uncommitted changes and
untracked files coming back as uncommitted changes on top of the run's commit; else the commit)
and every DVC output at the hash the run used (:mod:`mltrail.capture.datasnap`). Without ``--into`` it
works in the current repository and refuses when that would lose uncommitted work; with
``--into`` it creates a git worktree at DIR (or, outside any clone, a clone of the run's remote)
whose DVC cache is the current repository's. Snapshot refs and commits missing here are fetched
from the git remote; data missing from the cache is fetched from the DVC remote. Exit code 0
when everything was restored exactly, 1 when something could not be (each item is listed).

``mltrail push [--remote NAME] [--dvc-remote NAME]`` pushes ``refs/mltrail/*`` to the git remote
and the data recorded in those snapshot commits to the DVC remote.

``mltrail which PATH`` finds the run that logged a checkpoint or model file: uploads record
the tag ``mltrail.sha256.<first 16 hex digits of the file's sha256>`` = artifact path, which
``tags.`mltrail.sha256.<prefix>` LIKE '%'`` finds in MLflow's search syntax.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from mltrail.capture import datasnap
from mltrail.capture import dvc as dvc_capture
from mltrail.capture import git as git_capture
from mltrail.capture.snapshot import REF_PREFIX, ref_name
from mltrail.digest import file_sha256
from mltrail.errors import MltrailError
from mltrail.progress import Progress
from mltrail.query import runs as query
from mltrail.recording.sanitize import redact_text

#: Seconds a network git call (fetch, push, clone) may take.
NETWORK_TIMEOUT = 600.0
LOCAL_TIMEOUT = 120.0


# --- the record of a run ----------------------------------------------------------------------------


@dataclasses.dataclass
class RunRecord:
    """What a run recorded about its code, data and environment."""

    run: Any
    experiment: str | None
    provenance: dict[str, Any] | None
    uri: str
    outputs: list[datasnap.RunOutput]

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def tags(self) -> dict[str, str]:
        return self.run.data.tags

    def _git(self) -> dict[str, Any]:
        return (self.provenance or {}).get("git") or {}

    @property
    def commit(self) -> str | None:
        return self.tags.get("mlflow.source.git.commit") or self._git().get("commit")

    @property
    def snapshot(self) -> str | None:
        """The snapshot commit (dirty code and/or stored data), when there is one."""
        data = ((self.provenance or {}).get("dvc") or {}).get("data_snapshot") or {}
        snap = self._git().get("snapshot") or {}
        return self.tags.get("mltrail.git.snapshot") or data.get("commit") or snap.get("commit")

    @property
    def code_rev(self) -> str | None:
        return self.snapshot or self.commit

    @property
    def repo_url(self) -> str | None:
        return self.tags.get("mlflow.source.git.repoURL") or self._git().get("repo_url")

    @property
    def dvc_prefix(self) -> str:
        """The DVC root relative to the git root ("" when they are the same folder)."""
        git_root = self._git().get("root")
        dvc_root = ((self.provenance or {}).get("dvc") or {}).get("root")
        if not git_root or not dvc_root:
            return ""
        rel = os.path.relpath(dvc_root, git_root)
        return "" if rel == "." or rel.startswith("..") else Path(rel).as_posix()

    @property
    def skipped(self) -> list[str]:
        """Files left out of the snapshot (too large, or the MLflow store's own)."""
        return list((self._git().get("snapshot") or {}).get("skipped") or [])

    @property
    def replaced(self) -> dict[str, dict[str, str | None]]:
        """``.dvc``/``dvc.lock`` files the data snapshot rewrote: git path -> blob ids."""
        data = ((self.provenance or {}).get("dvc") or {}).get("data_snapshot") or {}
        return dict(data.get("files") or {})

    @property
    def environment(self) -> dict[str, Any]:
        return (self.provenance or {}).get("environment") or {}

    def requirements(self, client: Any) -> str | None:
        """The run's ``mltrail/requirements.txt``, or None when it has none."""
        from mltrail.capture.provenance import REQUIREMENTS_ARTIFACT

        def download() -> str | None:
            folder = REQUIREMENTS_ARTIFACT.rpartition("/")[0]
            listed = {f.path for f in client.list_artifacts(self.run_id, folder)}
            if REQUIREMENTS_ARTIFACT not in listed:
                return None
            with tempfile.TemporaryDirectory(prefix="mltrail-") as tmp:
                path = client.download_artifacts(self.run_id, REQUIREMENTS_ARTIFACT, tmp)
                return Path(path).read_text(encoding="utf-8")

        return query.store_call(download, self.uri, "reading requirements.txt")


def load_run(client: Any, uri: str, run_id: str) -> RunRecord:
    """Read ``run_id``'s tags, dataset inputs and ``provenance.json`` from the store."""
    run, experiment, record = query.read_run(client, uri, run_id)
    datasets = list(run.inputs.dataset_inputs) if run.inputs else []
    outputs = datasnap.run_outputs(record, datasets)
    return RunRecord(run, experiment, record, uri, outputs)


def open_run(tracking_uri: str | None, run_id: str) -> tuple[Any, RunRecord]:
    client, uri = query.open_store(tracking_uri)
    return client, load_run(client, uri, run_id)


# --- git ----------------------------------------------------------------------------------------------


def git(root: str | os.PathLike[str], *args: str, timeout: float = LOCAL_TIMEOUT) -> str:
    """Run git in ``root``; a failure becomes an :class:`MltrailError` with git's message."""
    try:
        result = git_capture.run_git(list(args), root, timeout=timeout, check=False)
    except (git_capture.GitUnavailable, git_capture.NotARepository) as error:
        raise MltrailError(f"git {args[0]} failed: {error}") from None
    if result.returncode != 0:
        lines = [
            line.strip()
            for line in result.stderr.decode("utf-8", "replace").splitlines()
            if line.strip() and not line.startswith(("hint:", "Preparing", "HEAD is now"))
        ]
        detail = redact_text(" ".join(lines[:3]) or f"exit code {result.returncode}")
        raise MltrailError(f"git {args[0]} failed in {root}: {detail}")
    return result.stdout.decode("utf-8", "surrogateescape").rstrip()


def find_root(path: str | os.PathLike[str] = ".") -> Path | None:
    """The root of the git working tree containing ``path``, or None."""
    try:
        result = git_capture.run_git(["rev-parse", "--show-toplevel"], path, check=False)
    except (git_capture.GitUnavailable, git_capture.NotARepository):
        return None
    if result.returncode != 0:
        return None
    return Path(result.stdout.decode("utf-8", "surrogateescape").strip())


def has_commit(root: Path, rev: str) -> bool:
    result = git_capture.run_git(
        ["cat-file", "-e", f"{rev}^{{commit}}"], root, check=False, timeout=LOCAL_TIMEOUT
    )
    return result.returncode == 0


def has_file(root: Path, rev: str, path: str) -> bool:
    result = git_capture.run_git(["cat-file", "-e", f"{rev}:{path}"], root, check=False)
    return result.returncode == 0


def remotes(root: Path) -> dict[str, str]:
    """Remote name -> URL (credentials stripped)."""
    found: dict[str, str] = {}
    out = git_capture.run_git(
        ["config", "-z", "--get-regexp", r"^remote\..*\.url$"], root, check=False
    ).stdout.decode("utf-8", "surrogateescape")
    for entry in out.split("\0"):
        key, _, value = entry.partition("\n")
        if key.startswith("remote.") and key.endswith(".url"):
            found[key[len("remote.") : -len(".url")]] = git_capture.strip_credentials(value)
    return found


def choose_remote(root: Path, repo_url: str | None = None, name: str | None = None) -> str | None:
    """``name`` when given, else the remote whose URL the run recorded, else origin."""
    urls = remotes(root)
    if name:
        if name not in urls:
            known = ", ".join(sorted(urls)) or "none"
            raise MltrailError(f"There is no git remote {name!r} in {root} (remotes: {known}).")
        return name
    for remote, url in sorted(urls.items()):
        if repo_url and url == repo_url:
            return remote
    if "origin" in urls:
        return "origin"
    return sorted(urls)[0] if urls else None


def ensure_code(root: Path, record: RunRecord, remote: str | None = None) -> None:
    """Make the run's commit and snapshot available in ``root``, fetching them when missing."""
    wanted = [c for c in (record.snapshot, record.commit) if c]
    if not wanted:
        raise MltrailError(
            f"Run {record.run_id} recorded no git commit: its code cannot be restored (was it "
            "started outside a git repository?)."
        )
    if remote:
        choose_remote(root, None, remote)  # a wrong name is an error even when nothing is fetched
    missing = [c for c in wanted if not has_commit(root, c)]
    if not missing:
        return
    name = choose_remote(root, record.repo_url, remote)
    if name is None:
        raise MltrailError(
            f"The run's code ({missing[0][:12]}) is not in {root}, which has no git remote to "
            "fetch it from."
        )
    if record.snapshot in missing:
        ref = ref_name(record.run_id)
        _fetch(root, name, f"{ref}:{ref}")
    if record.commit in missing and not has_commit(root, record.commit):
        _fetch(root, name)
        if not has_commit(root, record.commit):
            _fetch(root, name, record.commit)
    still = [c for c in wanted if not has_commit(root, c)]
    if still:
        what = "snapshot commit" if still[0] == record.snapshot else "commit"
        hint = (
            " Run `mltrail push` in the repository where the run was made."
            if what == "snapshot commit"
            else " Push that commit from the repository where the run was made."
        )
        raise MltrailError(
            f"The run's {what} {still[0][:12]} is neither in {root} nor on remote {name!r}.{hint}"
        )


def _fetch(root: Path, remote: str, *refspecs: str) -> None:
    git_capture.run_git(
        ["fetch", "--quiet", "--no-tags", remote, *refspecs],
        root,
        check=False,
        timeout=NETWORK_TIMEOUT,
    )


def _lines(text: str) -> list[str]:
    return [line for line in text.split("\0") if line]


# --- checkout ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Checkout:
    """What ``checkout`` restored, for the report."""

    record: RunRecord
    target: Path
    code: list[str]
    data: list[datasnap.Restored]
    notes: list[str]
    problems: list[str]

    @property
    def exact(self) -> bool:
        return not self.problems and all(r.exact for r in self.data)

    def as_dict(self) -> dict[str, Any]:
        """What was restored, as ``mltrail checkout --json`` prints it."""
        return {
            "run_id": self.record.run_id,
            "target": str(self.target),
            "exact": self.exact,
            "commit": self.record.commit,
            "snapshot": self.record.snapshot,
            "code": list(self.code),
            "data": [dataclasses.asdict(item) for item in self.data],
            "notes": list(self.notes),
            "problems": list(self.problems),
        }

    def report(self) -> str:
        run = self.record.run
        name = f" ({run.info.run_name})" if run.info.run_name else ""
        lines = [f"Restored run {self.record.run_id}{name} into {self.target}"]
        lines += [f"  code  {line}" for line in self.code]
        width = max([len(r.path) for r in self.data] + [4])
        for item in self.data:
            value = (item.hash or "-")[:16]
            if item.state in {"restored", "unverified"}:
                text = f"restored from {item.origin}"
                if item.state == "unverified":
                    text += f" (NOT VERIFIED: {item.note})"
            elif item.state == "not_exact":
                text = f"NOT EXACT: {item.note}"
            elif item.state == "skipped":
                text = f"skipped: {item.note}"
            else:
                text = f"NOT RESTORED: {item.note or 'not found'}"
            lines.append(f"  data  {item.path.ljust(width)}  {value.ljust(16)}  {text}")
        if not self.data and not self.record.outputs:
            lines.append("  data  (the run recorded no DVC outputs)")
        lines += [f"  note  {line}" for line in self.notes]
        lines += [f"  NOT RESTORED: {line}" for line in self.problems]
        missing = len(self.problems) + sum(not r.exact for r in self.data)
        if missing:
            lines.append(f"{missing} item(s) could not be restored exactly (listed above).")
        else:
            lines.append("Code and data were restored exactly.")
        return "\n".join(lines)


def checkout(
    record: RunRecord,
    into: str | os.PathLike[str] | None = None,
    remote: str | None = None,
    dvc_remote: str | None = None,
    cwd: str | os.PathLike[str] = ".",
    progress: Progress | None = None,
) -> Checkout:
    """Restore ``record``'s code and data into ``into`` (a new worktree) or the current repo;
    ``progress`` counts the data files and bytes fetched from the DVC remote."""
    if not record.code_rev:
        raise MltrailError(
            f"Run {record.run_id} recorded no git commit: its code cannot be restored (was it "
            "started outside a git repository?)."
        )
    source = find_root(cwd)
    if into is not None:
        target = _new_worktree(record, Path(into).expanduser().absolute(), source, remote)
    else:
        if source is None:
            raise MltrailError(
                f"{Path(cwd).resolve()} is not inside a git repository. Run this in a clone of "
                "the project, or pass --into DIR."
            )
        _checkout_here(record, source, remote)
        target = source
    if record.snapshot and record.commit:
        git(target, "restore", f"--source={record.snapshot}", "--worktree", "--", ".")
    _original_dvc_records(record, target)
    result = Checkout(record, target, _describe_code(record, target), [], [], [])
    if record.skipped:
        result.problems.append(
            f"{len(record.skipped)} file(s) were too large for the snapshot: "
            + ", ".join(record.skipped[:5])
        )
    if into is None:
        branch = git(target, "rev-parse", "--abbrev-ref", "@{-1}") if _has_previous(target) else ""
        back = f"`git switch {branch}`" if branch and branch != "HEAD" else "`git switch -`"
        result.notes.append(
            f"HEAD is detached at the run's commit; {back} returns to your branch once the "
            "restored changes are committed or discarded."
        )
    else:
        result.notes.append(f"remove the worktree with `git worktree remove --force {target}`")
    _restore_data(
        record, target, source if into is not None else None, dvc_remote, result, progress
    )
    result.notes.append(_environment_note(record))
    return result


def _original_dvc_records(record: RunRecord, target: Path) -> None:
    """The ``.dvc``/``dvc.lock`` files as the user had them at run time: the snapshot commit's
    copies record the stored data's hashes, the workspace is restored as it was."""
    for path, blobs in record.replaced.items():
        if blobs.get("original"):
            content = git_capture.run_git(
                ["cat-file", "blob", blobs["original"]], target, timeout=LOCAL_TIMEOUT
            ).stdout
            (target / path).write_bytes(content)


def _has_previous(root: Path) -> bool:
    found = git_capture.run_git(["rev-parse", "--verify", "-q", "@{-1}"], root, check=False)
    return found.returncode == 0


def _new_worktree(record: RunRecord, target: Path, source: Path | None, remote: str | None) -> Path:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise MltrailError(f"{target} already exists and is not empty; give --into a new folder.")
    base = record.commit or record.code_rev
    assert base is not None
    if source is not None:
        ensure_code(source, record, remote)
        git(source, "worktree", "add", "--detach", str(target), base)
        return target
    url = record.repo_url
    if not url:
        raise MltrailError(
            "Not inside a clone of the project, and the run recorded no git remote to clone. "
            "Run this inside a clone."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    git(
        target.parent,
        "clone",
        "--quiet",
        "--no-checkout",
        url,
        str(target),
        timeout=NETWORK_TIMEOUT,
    )
    ensure_code(target, record, remote)
    git(target, "checkout", "--quiet", "--detach", base)
    return target


def _checkout_here(record: RunRecord, root: Path, remote: str | None) -> None:
    changed = _lines(git(root, "status", "--porcelain=v1", "-z", "--untracked-files=no"))
    if changed:
        listed = ", ".join(line[3:] for line in changed[:5])
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        raise MltrailError(
            f"{root} has uncommitted changes ({listed}{more}) that checkout would overwrite. "
            "Commit or stash them first, or restore into a separate folder with --into DIR."
        )
    ensure_code(root, record, remote)
    if record.snapshot:
        _refuse_overwriting_untracked(root, record.snapshot)
    _refuse_losing_data(root, root / record.dvc_prefix if record.dvc_prefix else root)
    git(root, "checkout", "--quiet", "--detach", record.commit or record.code_rev or "")


def _refuse_overwriting_untracked(root: Path, snapshot: str) -> None:
    untracked = set(_lines(git(root, "ls-files", "-z", "--others", "--exclude-standard")))
    if not untracked:
        return
    in_snapshot = set(_lines(git(root, "ls-tree", "-r", "-z", "--name-only", snapshot)))
    clash = []
    for path in sorted(untracked & in_snapshot):
        blob = git(root, "rev-parse", f"{snapshot}:{path}")
        if git(root, "hash-object", "--", path) != blob:
            clash.append(path)
    if clash:
        raise MltrailError(
            f"Untracked files in {root} would be overwritten by the run's version: "
            f"{', '.join(clash[:5])}. Move them away first, or use --into DIR."
        )


def _refuse_losing_data(root: Path, dvc_root: Path) -> None:
    info = dvc_capture.inspect(dvc_root, str(root))
    if not info.outputs:
        return
    status = dvc_capture.data_status(info)
    names = {out.path: out.hash_name or "md5" for out in info.outputs}
    changed = {
        path: (status.workspace_hashes.get(path) or "", names[path])
        for path, state in status.outputs.items()
        if state == "modified"
    }
    lost = sorted(set(changed) - datasnap.in_cache(dvc_root, changed)) if changed else []
    if lost:
        raise MltrailError(
            f"DVC-tracked data in {dvc_root} differs from its .dvc record ({', '.join(lost[:5])}) "
            "and is not in the DVC cache: checkout would lose it. Save it with `dvc add` or "
            "`dvc commit` first, or use --into DIR."
        )


def _describe_code(record: RunRecord, target: Path) -> list[str]:
    commit = (record.commit or "")[:12] or "(no commit)"
    if not record.snapshot:
        return [f"commit {commit}"]
    git_record = (record.provenance or {}).get("git") or {}
    changed, untracked = git_record.get("changed") or [], git_record.get("untracked") or []
    parts = []
    if changed:
        parts.append(f"{len(changed)} changed")
    if untracked:
        parts.append(f"{len(untracked)} untracked")
    what = f" ({', '.join(parts)} file(s) restored as uncommitted changes)" if parts else ""
    lines = [f"commit {commit} + snapshot {record.snapshot[:12]}{what}"]
    if record.replaced:
        lines.append(
            f"{', '.join(sorted(record.replaced))}: as at run time, older than the data; the "
            f"snapshot commit {record.snapshot[:12]} holds copies recording the data's hashes"
        )
    return lines


def _restore_data(
    record: RunRecord,
    target: Path,
    source: Path | None,
    dvc_remote: str | None,
    result: Checkout,
    progress: Progress | None = None,
) -> None:
    if not record.outputs:
        return
    dvc_root = target / record.dvc_prefix if record.dvc_prefix else target
    if not (dvc_root / ".dvc").is_dir():
        result.problems.append(f"the data: there is no DVC repository at {dvc_root}")
        return
    if source is not None:
        source_dvc = source / record.dvc_prefix if record.dvc_prefix else source
        if (source_dvc / ".dvc").is_dir():
            datasnap.share_cache(dvc_root, source_dvc)
    callback = progress.dvc_callback() if progress is not None else None
    if progress is not None:
        progress.describe(f"checkout {len(record.outputs)} DVC output(s)")
    result.data = datasnap.restore_outputs(dvc_root, record.outputs, dvc_remote, callback)


def _environment_note(record: RunRecord) -> str:
    python = (record.environment.get("python") or {}).get("version")
    here = platform.python_version()
    if not python:
        return f"environment: the run recorded no environment; this is Python {here}"
    same = "the same" if python == here else f"this interpreter is {here}"
    return (
        f"environment: the run used Python {python} ({same}); "
        f"`mltrail verify {record.run_id}` lists package differences"
    )


# --- push ---------------------------------------------------------------------------------------------


def push_snapshots(path: Path, remote: str | None = None) -> tuple[Path, str, list[str]]:
    """Push the run snapshots (``refs/mltrail/*``) of the repository at ``path`` to a git remote.

    Args:
        path: a folder inside the repository.
        remote: the git remote's name (default: the repository's usual one, ``origin``).

    Returns:
        The repository's root, the remote's name and the snapshot commits pushed (none: there
        was nothing to push).

    Raises:
        MltrailError: outside a git repository, or when it has no such remote.
    """
    root = find_root(path)
    if root is None:
        raise MltrailError(f"{path} is not inside a git repository.")
    name = choose_remote(root, None, remote)
    if name is None:
        raise MltrailError(f"{root} has no git remote; add one with `git remote add origin URL`.")
    # One line per ref; runs made on the same tree share a snapshot commit.
    listing = git(root, "for-each-ref", "--format=%(objectname)", REF_PREFIX)
    commits = list(dict.fromkeys(listing.split()))
    if commits:
        git(root, "push", "--quiet", "--no-verify", name, "refs/mltrail/*:refs/mltrail/*",
            timeout=NETWORK_TIMEOUT)  # fmt: skip
    return root, name, commits


def dvc_root(root: Path) -> Path | None:
    """The DVC project of the git repository at ``root`` (the one here, else its top one)."""
    return dvc_capture.find_root(Path.cwd(), root) or dvc_capture.find_root(root, root)


# --- which --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FileRuns:
    """The runs that logged a file, found by its content."""

    sha256: str
    tag: str  #: the tag ``mltrail.sha256.<prefix>`` whose value is the file's artifact path
    runs: list[Any]  #: newest first


def runs_with_file(client: Any, uri: str, path: Path) -> FileRuns:
    """The runs that logged a checkpoint or model file with the content of the file ``path``."""
    from mltrail.recording.trail import SHA256_TAG_PREFIX

    digest = file_sha256(path)
    key = SHA256_TAG_PREFIX + digest[:16]
    return FileRuns(digest, key, query.runs_with_tag(client, uri, key))
