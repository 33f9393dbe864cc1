"""A run's lineage as a graph: commit -> snapshot -> data -> run -> checkpoints -> logged model
-> registered versions, with forks and resumes between runs and the runs that used the same data.

:func:`build` reads everything from the store (tags, dataset inputs, ``mltrail/provenance.json``,
``checkpoints/index.json``, logged models and model versions); :mod:`mltrail.query.lineage_svg`
draws it. Every node has a ``kind`` (one of :data:`KINDS`, which is also its column, left to
right), an ``id`` unique in the graph, a ``label`` and the ``details`` shown when it is clicked.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

from mltrail.query import runs as query

logger = logging.getLogger("mltrail.lineage")

#: Node kinds, in the order of the picture's columns.
KINDS = ("commit", "snapshot", "data", "run", "checkpoint", "model", "version")
#: At most this many other runs on the same data are drawn.
SAME_DATA_LIMIT = 8
# The tag of a run recorded instead of one its checkpoint named (RunSession.open_checkpoint_run).
_RESUMED_RUN = re.compile(r"mltrail\.[\w-]+\.resumed_run")


@dataclasses.dataclass
class Node:
    """One thing in the picture."""

    id: str
    kind: str
    label: str
    sub: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    focus: bool = False


@dataclasses.dataclass
class Edge:
    """An arrow: ``kind`` is code, data, produced, checkpoint, model, registered, fork,
    resume or same-data; ``label`` is drawn on it."""

    source: str
    target: str
    kind: str
    label: str = ""


@dataclasses.dataclass
class Lineage:
    """The graph of one run (``run_id``), reached from ``target`` (a run id or models:/ URI)."""

    target: str
    run_id: str
    nodes: list[Node] = dataclasses.field(default_factory=list)
    edges: list[Edge] = dataclasses.field(default_factory=list)

    def node(self, node: Node) -> Node:
        """Add ``node`` unless one with its id is there; return the one in the graph."""
        for existing in self.nodes:
            if existing.id == node.id:
                existing.focus = existing.focus or node.focus
                return existing
        self.nodes.append(node)
        return node

    def edge(self, source: str, target: str, kind: str, label: str = "") -> None:
        if not any(e.source == source and e.target == target for e in self.edges):
            self.edges.append(Edge(source, target, kind, label))

    def as_dict(self) -> dict[str, Any]:
        """The graph as plain data (``mltrail lineage --json``)."""
        return {
            "target": self.target,
            "run_id": self.run_id,
            "nodes": [dataclasses.asdict(n) for n in self.nodes],
            "edges": [dataclasses.asdict(e) for e in self.edges],
        }


def build(client: Any, uri: str, target: str) -> Lineage:
    """The lineage of ``target``: a run id (or unique prefix) or a ``models:/`` URI.

    Raises:
        MltrailError: when ``target`` names no run or model.
    """
    from mltrail.query import registry

    focus_version = None
    if registry.is_models_uri(target):
        ref = registry.resolve_model(client, uri, target)
        run_id, focus_version = ref.run_id, ref
    else:
        run_id = query.resolve_run_id(client, uri, target)
    data = query.show_data(client, uri, run_id)
    run = query.store_call(lambda: client.get_run(run_id), uri, "reading the run")
    graph = Lineage(target=target.strip(), run_id=run_id)
    run_node = _run_node(graph, data, focus=True)
    _code(graph, data, run_node.id)
    _runs(graph, client, uri, data, run, run_node.id)
    _data(graph, client, uri, data, run_node.id)
    model_ids = _models(graph, client, uri, run, run_node.id)
    _versions(graph, client, uri, run_id, run_node.id, model_ids, focus_version)
    return graph


def _run_node(graph: Lineage, data: dict[str, Any], focus: bool = False) -> Node:
    run = data["run"]
    lineage = data.get("lineage") or {}
    facts = [run["status"]]
    if lineage.get("resumes"):
        facts.append(f"resumed x{lineage['resumes']}")
    if lineage.get("rewound_to"):
        facts.append("rewound to " + ", ".join(str(s) for s in lineage["rewound_to"]))
    return graph.node(
        Node(
            id=f"run:{run['run_id']}",
            kind="run",
            label=run["run_name"] or run["run_id"][:8],
            sub=f"{run['run_id'][:8]}  {' '.join(facts)}",
            details={
                "run_id": run["run_id"],
                "experiment": run["experiment"],
                "status": run["status"],
                "started": run["start_time"],
                "fingerprint": data.get("fingerprint"),
                "metrics": {k: v for k, v in (data.get("metrics") or {}).items() if "/" not in k},
            },
            focus=focus,
        )
    )


def _code(graph: Lineage, data: dict[str, Any], run: str) -> None:
    code = data["code"]
    if not code.get("commit"):
        return
    commit = graph.node(
        Node(
            id=f"commit:{code['commit']}",
            kind="commit",
            label=f"commit {code['commit'][:8]}",
            sub=code.get("branch") or "detached HEAD",
            details={k: code.get(k) for k in ("commit", "branch", "repo_url", "dirty")},
        )
    )
    source = commit.id
    if code.get("snapshot"):
        snapshot = graph.node(
            Node(
                id=f"snapshot:{code['snapshot']}",
                kind="snapshot",
                label=f"snapshot {code['snapshot'][:8]}",
                sub="uncommitted changes",
                details={"snapshot": code["snapshot"], "ref": code.get("snapshot_ref")},
            )
        )
        graph.edge(commit.id, snapshot.id, "code", "dirty tree")
        source = snapshot.id
    graph.edge(source, run, "code", "code")


def _data(graph: Lineage, client: Any, uri: str, data: dict[str, Any], run: str) -> None:
    run_id = data["run"]["run_id"]
    for ds in data["data"]["datasets"]:
        source = ds["source"] if isinstance(ds["source"], dict) else {}
        remote = source.get("remote")
        node = graph.node(
            Node(
                id=f"data:{ds['name']}:{ds['digest']}",
                kind="data",
                label=ds["name"],
                sub=(ds["digest"] or "")[:12] + (f"  @{remote}" if remote else ""),
                details={
                    "name": ds["name"],
                    "hash": ds["digest"],
                    "remote": remote,
                    "remote_url": source.get("remote_url"),
                    "source_type": ds.get("source_type"),
                    "status": ds.get("status"),
                },
            )
        )
        graph.edge(node.id, run, "data", ds.get("context") or "data")
        if not ds["digest"]:
            continue
        for other in _same_data(client, uri, data["run"]["experiment_id"], ds["digest"]):
            if other.info.run_id == run_id:
                continue
            other_node = graph.node(
                Node(
                    id=f"run:{other.info.run_id}",
                    kind="run",
                    label=other.info.run_name or other.info.run_id[:8],
                    sub=f"{other.info.run_id[:8]}  same data",
                    details={"run_id": other.info.run_id, "status": other.info.status},
                )
            )
            graph.edge(node.id, other_node.id, "same-data", "same hash")


def _same_data(client: Any, uri: str, experiment_id: str, digest: str) -> list[Any]:
    """Runs of the experiment that used a dataset with ``digest`` (MLflow's search)."""
    mlflow_client = getattr(client, "mlflow", client)  # the local reader has no dataset search
    escaped = digest.replace("'", "")
    try:
        return query.search_runs(
            mlflow_client, uri, [experiment_id], f"datasets.digest = '{escaped}'", SAME_DATA_LIMIT
        )
    except Exception as error:  # a courtesy: the rest of the picture does not need it
        logger.debug("searching runs on the same data failed: %s", error)
        return []


def _runs(
    graph: Lineage, client: Any, uri: str, data: dict[str, Any], run_obj: Any, run: str
) -> None:
    """The fork parent and the forks of the run, and the run a failed resume replaced."""
    lineage = data.get("lineage") or {}
    parent = lineage.get("forked_from")
    if parent:
        node = _other_run(graph, client, uri, parent["run_id"])
        graph.edge(node.id, run, "fork", f"fork @ step {parent['step']}")
    for child in lineage.get("forks") or []:
        node = _other_run(graph, client, uri, child["run_id"])
        graph.edge(run, node.id, "fork", f"fork @ step {child['step']}")
    # A resume that could not continue the run its checkpoint named recorded a new run instead,
    # tagged mltrail.<framework>.resumed_run by the adapter's session.
    tags = run_obj.data.tags
    replaced = next((v for k, v in tags.items() if _RESUMED_RUN.fullmatch(k)), None)
    if replaced:
        node = _other_run(graph, client, uri, replaced)
        graph.edge(node.id, run, "resume", "resumed")


def _other_run(graph: Lineage, client: Any, uri: str, run_id: str) -> Node:
    try:
        other = query.store_call(lambda: client.get_run(run_id), uri, "reading a related run")
        name, status = other.info.run_name, other.info.status
    except Exception:  # deleted since: still drawn, by id
        name, status = None, "deleted"
    return graph.node(
        Node(
            id=f"run:{run_id}",
            kind="run",
            label=name or run_id[:8],
            sub=f"{run_id[:8]}  {status}",
            details={"run_id": run_id, "status": status},
        )
    )


def _models(graph: Lineage, client: Any, uri: str, run_obj: Any, run: str) -> dict[str, str]:
    """Checkpoints and the logged model; returns node ids by LoggedModel id."""
    from mltrail.query import registry

    run_id = run_obj.info.run_id
    by_model: dict[str, str] = {}
    try:
        index = registry.checkpoint_index(client, uri, run_id)
    except Exception as error:
        logger.debug("no checkpoint index for %s: %s", run_id, error)
        index = None
    for checkpoint in registry.checkpoints(index):
        name = checkpoint.path.rpartition("/")[2]
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in list(checkpoint.metrics.items())[:2])
        node = graph.node(
            Node(
                id=f"checkpoint:{checkpoint.path}",
                kind="checkpoint",
                label=name,
                sub=" ".join([f"step {checkpoint.step}"] + [f"[{a}]" for a in checkpoint.aliases])
                + (f"  {metrics}" if metrics else ""),
                details=checkpoint.as_dict(),
            )
        )
        graph.edge(run, node.id, "checkpoint")
        if checkpoint.model_id:
            by_model[checkpoint.model_id] = node.id
    model_id = registry.final_model_id(client, uri, run_obj, index)
    has_folder = False
    if model_id is None:
        try:
            has_folder = registry.has_model_folder(client, uri, run_id)
        except Exception:
            has_folder = False
    if model_id or has_folder:
        node = graph.node(
            Node(
                id=f"model:{model_id or run_id}",
                kind="model",
                label="logged model" if model_id else "model/",
                sub=model_id or "MLflow Model (no LoggedModel)",
                details={"model_id": model_id, "uri": f"models:/{model_id}" if model_id else None},
            )
        )
        graph.edge(run, node.id, "model")
        if model_id:
            by_model[model_id] = node.id
        by_model[""] = node.id  # versions registered from the run's model/ folder
    return by_model


def _versions(
    graph: Lineage,
    client: Any,
    uri: str,
    run_id: str,
    run: str,
    by_model: dict[str, str],
    focus: Any,
) -> None:
    """The registered versions made from the run's models."""
    try:
        versions = query.store_call(
            lambda: client.search_model_versions(f"run_id = '{run_id}'"), uri, "reading registry"
        )
    except Exception as error:
        logger.debug("no model versions for %s: %s", run_id, error)
        return
    aliases_of: dict[str, dict[str, list[str]]] = {}  # searches leave a version's aliases out
    for name in {v.name for v in versions}:
        try:
            model = query.store_call(
                lambda n=name: client.get_registered_model(n), uri, "reading registry"
            )
            found = getattr(model, "aliases", None) or {}
        except Exception as error:
            logger.debug("no aliases of %s: %s", name, error)
            found = {}
        for alias, number in found.items():
            aliases_of.setdefault(name, {}).setdefault(str(number), []).append(alias)
    for version in sorted(versions, key=lambda v: (v.name, int(v.version))):
        aliases = sorted(
            set(getattr(version, "aliases", None) or [])
            | set(aliases_of.get(version.name, {}).get(str(version.version), []))
        )
        is_focus = focus is not None and (focus.name, focus.version) == (
            version.name,
            str(version.version),
        )
        node = graph.node(
            Node(
                id=f"version:{version.name}/{version.version}",
                kind="version",
                label=f"{version.name} v{version.version}",
                sub=" ".join(f"@{a}" for a in aliases),
                details={
                    "name": version.name,
                    "version": str(version.version),
                    "aliases": aliases,
                    "uri": f"models:/{version.name}/{version.version}",
                    "tags": dict(version.tags or {}),
                },
                focus=is_focus,
            )
        )
        model_id = getattr(version, "model_id", None) or ""
        source = by_model.get(model_id) or by_model.get("") or run
        graph.edge(source, node.id, "registered", "registered")
