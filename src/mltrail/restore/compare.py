"""``mltrail verify`` and ``mltrail diff``: a workspace against a run, and two runs side by side.

``mltrail verify RUN_ID [--path DIR] [--json]`` compares the workspace at DIR (default: here)
with what the run recorded:

- code: the working tree (tracked files with their changes, untracked non-ignored files) must
  be byte for byte the run's code state (its snapshot commit's tree when it was dirty, else its
  commit's tree); the checked-out commit is shown too;
- data: every DVC output must have the hash the run used;
- environment: the Python version and the packages whose versions differ (reported only).

Exit code 0 when code and data match, 1 with a table of the differences otherwise.

``mltrail diff RUN_A RUN_B [--stat] [--json]`` prints the params that differ, the final metrics
side by side, the code diff between the two code states (``git diff`` of their commits or
snapshots, in the current repository), the data outputs whose hash differs and the package
versions that differ.

``--json`` output (``schema_version`` 1) is stable: fields keep their meaning, new ones may be
added. ``verify``: ``{"schema_version", "run_id", "path", "code_matches", "data_matches",
"differences": [{"kind", "item", "run", "workspace"}], "notes"}``. ``diff``:
``{"schema_version", "runs": [A, B], "params": [{"key", "a", "b"}], "metrics": [{"key", "a",
"b"}], "code": {"a", "b", "same", "stat", "patch", "note"}, "data": [{"path", "a", "b"}],
"environment": {"python": {"a", "b"}, "packages": [{"name", "a", "b"}]}}``.
"""

from __future__ import annotations

import dataclasses
import platform
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mltrail.capture import dvc as dvc_capture
from mltrail.capture import git as git_capture
from mltrail.errors import MltrailError
from mltrail.query.display import number, table
from mltrail.restore import checkout as restore

SCHEMA_VERSION = 1
#: Seconds ``verify`` may spend hashing data (DVC's state cache makes unchanged files free).
DATA_BUDGET = 3600.0
_STATUS = {"A": "added", "D": "deleted", "M": "modified", "T": "type changed"}


# --- environment ---------------------------------------------------------------------------------


def parse_requirements(text: str | None) -> dict[str, str]:
    """``requirements.txt`` as written by mltrail (pip freeze format) -> {name: version}."""
    found: dict[str, str] = {}
    for line in (text or "").splitlines():
        line = line.strip()
        editable = re.match(r"^# Editable install \((.+?)==(.+)\)$", line)
        if editable:
            found[_key(editable.group(1))] = editable.group(2) + " (editable)"
        elif not line or line.startswith(("#", "-")):
            continue
        elif "==" in line:
            name, _, version = line.partition("==")
            found[_key(name)] = version.strip()
        elif " @ " in line:
            name, _, url = line.partition(" @ ")
            found[_key(name)] = url.strip()
    return found


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def package_differences(a: dict[str, str], b: dict[str, str]) -> list[tuple[str, str, str]]:
    """(name, version in a, version in b) for every package whose version differs."""
    return [
        (name, a.get(name, "-"), b.get(name, "-"))
        for name in sorted(set(a) | set(b))
        if a.get(name) != b.get(name)
    ]


# --- verify -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Verification:
    run_id: str
    path: Path
    code_matches: bool = True
    data_matches: bool = True
    differences: list[dict[str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add(self, kind: str, item: str, run: str | None, workspace: str | None) -> None:
        self.differences.append(
            {"kind": kind, "item": item, "run": run or "-", "workspace": workspace or "-"}
        )
        if kind == "code":
            self.code_matches = False
        elif kind == "data":
            self.data_matches = False

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["path"] = str(self.path)
        return {"schema_version": SCHEMA_VERSION, **data}

    def report(self) -> str:
        verdict = {True: "match", False: "DIFFER"}
        lines = [
            f"Run {self.run_id} against {self.path}: code {verdict[self.code_matches]}, "
            f"data {verdict[self.data_matches]}"
        ]
        if self.differences:
            rows = [["KIND", "ITEM", "RUN", "WORKSPACE"]] + [
                [d["kind"], d["item"], d["run"], d["workspace"]] for d in self.differences
            ]
            lines += ["", table(rows)]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def verify(record: restore.RunRecord, client: Any, path: Path) -> Verification:
    """Compare the workspace at ``path`` with ``record`` (code, data, environment)."""
    root = restore.find_root(path)
    if root is None:
        raise MltrailError(f"{path.resolve()} is not inside a git repository.")
    result = Verification(record.run_id, root)
    _verify_code(record, root, result)
    _verify_data(record, root, result)
    _verify_environment(record, client, result)
    return result


def _verify_code(record: restore.RunRecord, root: Path, result: Verification) -> None:
    from mltrail.capture.provenance import store_paths
    from mltrail.capture.snapshot import write_tree

    restore.ensure_code(root, record)
    expected = record.code_rev
    head = git_capture.run_git(["rev-parse", "--verify", "-q", "HEAD"], root, check=False)
    head_commit = head.stdout.decode().strip() or None
    if head_commit != record.commit:
        result.notes.append(
            f"HEAD is {(head_commit or 'unborn')[:12]}, the run's commit is "
            f"{(record.commit or '-')[:12]} (the files are compared, not the commits)"
        )
    store = SimpleNamespace(tracking_uri=record.uri, options=None)
    info = git_capture.inspect(store_paths(store), dirs=[("path", root)], timeout=60)
    if not info.usable:
        raise MltrailError(f"git cannot read {root}: {info.unavailable}")
    actual = write_tree(info, record.skipped)
    wanted = restore.git(root, "rev-parse", f"{expected}^{{tree}}")
    if actual == wanted:
        return
    listing = restore.git(
        root, "diff-tree", "-r", "-z", "--no-renames", "--name-status", wanted, actual
    ).split("\0")
    replaced = record.replaced
    for status, file in zip(listing[::2], listing[1::2], strict=False):
        if not file:
            continue
        if file in replaced:
            blob = restore.git(root, "rev-parse", f"{actual}:{file}") if status != "D" else ""
            if blob in set(replaced[file].values()):
                continue  # the .dvc record as the user had it, or as the data snapshot wrote it
        state = _STATUS.get(status[:1], status)
        run_side = "absent" if state == "added" else "as in the run"
        result.add("code", file, run_side, state)
    if record.skipped:
        result.notes.append(
            "not compared (too large for the run's snapshot): " + ", ".join(record.skipped[:5])
        )


def _verify_data(record: restore.RunRecord, root: Path, result: Verification) -> None:
    if not record.outputs:
        return
    dvc_root = root / record.dvc_prefix if record.dvc_prefix else root
    expected = []
    for out in record.outputs:
        if out.external or not out.cache:
            result.notes.append(
                f"{out.path}: not compared ({'external' if out.external else 'cache: false'})"
            )
            continue
        if out.hash is None:
            present = (dvc_root / out.path).exists()
            if out.status == "deleted":
                if present:
                    result.add("data", out.path, "absent", "present")
            else:
                result.add("data", out.path, "unknown (not checked at run time)", "-")
            continue
        if out.status == "unknown":
            result.add("data", out.path, "unknown (not checked at run time)", out.hash)
            continue
        expected.append(
            dvc_capture.DvcOutput(
                path=out.path,
                hash=out.hash,
                hash_name=out.hash_name,
                dvc_format="2" if out.hash_name == "md5-dos2unix" else "3",
                isdir=out.isdir,
                size=None,
                nfiles=None,
                remote=out.remote,
                remote_url=None,
                source=out.source or "",
                stage=None,
                cache=True,
            )
        )
    if not expected:
        return
    info = dvc_capture.DvcInfo(root=str(dvc_root), outputs=expected)
    status = dvc_capture.data_status(info, budget=DATA_BUDGET)
    if status.dirty == "unknown":
        result.add("data", "(all outputs)", "-", status.reason or "not checked")
        return
    for out in expected:
        state = status.outputs.get(out.path)
        if state == "unchanged":
            continue
        actual = status.workspace_hashes.get(out.path)
        result.add("data", out.path, out.hash, actual if state == "modified" else "missing")


def _verify_environment(record: restore.RunRecord, client: Any, result: Verification) -> None:
    from mltrail.capture import env

    python = (record.environment.get("python") or {}).get("version")
    here = platform.python_version()
    if python and python != here:
        result.add("env", "python", python, here)
    run_packages = parse_requirements(record.requirements(client))
    if not run_packages:
        result.notes.append("the run recorded no package list")
        return
    now = parse_requirements(env.requirements())
    for name, before, after in package_differences(run_packages, now):
        result.add("env", name, before, after)


# --- diff -----------------------------------------------------------------------------------------


def diff(
    a: restore.RunRecord, b: restore.RunRecord, client: Any, stat_only: bool = False
) -> dict[str, Any]:
    """Everything ``mltrail diff --json`` prints."""
    pa, pb = a.run.data.params, b.run.data.params
    params = [
        {"key": k, "a": pa.get(k), "b": pb.get(k)}
        for k in sorted(set(pa) | set(pb))
        if pa.get(k) != pb.get(k)
    ]
    ma = {k: v for k, v in a.run.data.metrics.items() if not k.startswith("system/")}
    mb = {k: v for k, v in b.run.data.metrics.items() if not k.startswith("system/")}
    metrics = [{"key": k, "a": ma.get(k), "b": mb.get(k)} for k in sorted(set(ma) | set(mb))]
    da = {o.path: o.hash for o in a.outputs}
    db = {o.path: o.hash for o in b.outputs}
    data = [
        {"path": p, "a": da.get(p), "b": db.get(p)}
        for p in sorted(set(da) | set(db))
        if da.get(p) != db.get(p)
    ]
    packages = package_differences(
        parse_requirements(a.requirements(client)), parse_requirements(b.requirements(client))
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "runs": [_run_summary(a), _run_summary(b)],
        "params": params,
        "metrics": metrics,
        "code": _code_diff(a, b, stat_only),
        "data": data,
        "environment": {
            "python": {
                "a": (a.environment.get("python") or {}).get("version"),
                "b": (b.environment.get("python") or {}).get("version"),
            },
            "packages": [{"name": n, "a": x, "b": y} for n, x, y in packages],
        },
    }


def _run_summary(record: restore.RunRecord) -> dict[str, Any]:
    info = record.run.info
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment": record.experiment,
        "status": info.status,
        "commit": record.commit,
        "snapshot": record.snapshot,
    }


def _code_diff(a: restore.RunRecord, b: restore.RunRecord, stat_only: bool) -> dict[str, Any]:
    code: dict[str, Any] = {
        "a": a.code_rev,
        "b": b.code_rev,
        "same": None,
        "stat": None,
        "patch": None,
        "note": None,
    }
    if not a.code_rev or not b.code_rev:
        code["note"] = "a run recorded no git commit"
        return code
    root = restore.find_root(".")
    if root is None:
        code["same"] = a.code_rev == b.code_rev or None
        code["note"] = "not inside the project's git repository: the code diff needs it"
        return code
    try:
        restore.ensure_code(root, a)
        restore.ensure_code(root, b)
    except MltrailError as error:
        code["note"] = str(error)
        return code
    options = ["--no-color", "--no-ext-diff", "--no-textconv"]
    code["stat"] = restore.git(root, "diff", "--stat", *options, a.code_rev, b.code_rev, "--")
    code["same"] = not code["stat"]
    if not stat_only and code["stat"]:
        code["patch"] = restore.git(root, "diff", *options, a.code_rev, b.code_rev, "--")
    return code


def format_diff(data: dict[str, Any]) -> str:
    """The human-readable ``mltrail diff`` text."""
    a, b = data["runs"]
    lines = []
    for label, run in (("A", a), ("B", b)):
        name = f" ({run['run_name']})" if run["run_name"] else ""
        lines.append(f"{label}  {run['run_id']}{name}  {run['status']}  {run['experiment']}")
    lines += ["", "Params"]
    if data["params"]:
        rows = [["KEY", "A", "B"]] + [
            [p["key"], p["a"] or "-", p["b"] or "-"] for p in data["params"]
        ]
        lines.append(table(rows))
    else:
        lines.append("  (the same)")
    lines += ["", "Metrics (final)"]
    if data["metrics"]:
        rows = [["KEY", "A", "B", ""]] + [
            [m["key"], number(m["a"]), number(m["b"]), "" if m["a"] == m["b"] else "*"]
            for m in data["metrics"]
        ]
        lines.append(table(rows))
    else:
        lines.append("  (none)")
    code = data["code"]
    lines += ["", "Code"]
    if code["note"]:
        lines.append(f"  {code['note']}")
    elif code["same"]:
        lines.append(f"  the same ({(code['a'] or '')[:12]})")
    else:
        lines.append(f"  {(code['a'] or '')[:12]} -> {(code['b'] or '')[:12]}")
        lines.append(code["stat"])
        if code["patch"]:
            lines += ["", code["patch"]]
    lines += ["", "Data"]
    if data["data"]:
        rows = [["PATH", "A", "B"]] + [
            [d["path"], d["a"] or "-", d["b"] or "-"] for d in data["data"]
        ]
        lines.append(table(rows))
    else:
        lines.append("  (the same)")
    env = data["environment"]
    lines += ["", "Environment"]
    python = env["python"]
    if python["a"] != python["b"]:
        lines.append(f"  python  {python['a'] or '-'} -> {python['b'] or '-'}")
    if env["packages"]:
        rows = [["PACKAGE", "A", "B"]] + [[p["name"], p["a"], p["b"]] for p in env["packages"]]
        lines.append(table(rows))
    elif python["a"] == python["b"]:
        lines.append("  (the same)")
    return "\n".join(lines)
