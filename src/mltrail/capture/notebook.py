"""Runs started from a Jupyter notebook (classic Notebook, JupyterLab, VS Code's kernel).

In a notebook ``sys.argv[0]`` is ``ipykernel_launcher.py``, which says nothing about the code.
A run started in an IPython kernel records instead:

- the notebook's path (the tag ``mltrail.notebook.path``, and MLflow's ``mlflow.source.name``),
  found, in this order, from VS Code's ``__vsc_ipynb_file__`` in the user's namespace, the
  ``JPY_SESSION_NAME`` variable that Jupyter Server sets for the kernels it starts, or the
  running Jupyter servers' ``/api/sessions`` (the session whose kernel has this kernel's id,
  from its connection file); else ``unknown``, with the reason in ``provenance.json``;
- the notebook file as it is on disk at run start (``mltrail/notebook.ipynb``): the git capture
  treats it as any other file of the repository (dirty check, diff, snapshot commit);
- the code of the cells executed in this kernel so far, in execution order
  (``mltrail/notebook_history.py``, from IPython's input history): what ran, even when cells
  were edited or run out of order since the file was saved.

IPython and ipykernel are never imported here: a kernel is recognised only when ipykernel is
already loaded.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

from mltrail.recording.sanitize import redact_text

logger = logging.getLogger("mltrail.capture.notebook")

NOTEBOOK_ARTIFACT = "mltrail/notebook.ipynb"
HISTORY_ARTIFACT = "mltrail/notebook_history.py"
#: A notebook file larger than this (outputs with images) is not copied; its hash is recorded.
MAX_NOTEBOOK_BYTES = 50 * 1024 * 1024
#: Seconds each running Jupyter server may take to list its sessions.
SERVER_TIMEOUT = 1.0

_server_paths: dict[str, tuple[str | None, str]] = {}  # kernel id -> (path, reason)
_lock = threading.Lock()


@dataclasses.dataclass
class NotebookInfo:
    """The notebook a run starts from (see the module docstring)."""

    path: str | None = None  #: absolute, when found
    found_by: str | None = None  #: "vscode", "JPY_SESSION_NAME" or "jupyter server"
    reason: str | None = None  #: why the path is unknown
    kernel_id: str | None = None
    cells: list[str] = dataclasses.field(default_factory=list)  #: code, in execution order
    sha256: str | None = None  #: of the file at run start
    bytes: int | None = None
    copied: bool = False  #: the file is in ``mltrail/notebook.ipynb``
    text: str | None = dataclasses.field(default=None, repr=False)

    def history(self, run_id: str | None = None) -> str:
        """The executed cells as a Python file with ``# In[n]:`` markers (as nbconvert writes)."""
        head = [
            "# The cells executed in this IPython kernel"
            + (f" before run {run_id}" if run_id else "")
            + ", in execution order (IPython's In).",
            f"# Notebook: {self.path or 'unknown'}",
        ]
        body = [f"\n# In[{n}]:\n{code.rstrip()}\n" for n, code in enumerate(self.cells, 1)]
        return redact_text("\n".join(head) + "\n" + "".join(body))

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "found_by": self.found_by,
            "reason": self.reason,
            "kernel_id": self.kernel_id,
            "cells": len(self.cells),
            "sha256": self.sha256,
            "bytes": self.bytes,
            "artifact": NOTEBOOK_ARTIFACT if self.copied else None,
            "history_artifact": HISTORY_ARTIFACT,
        }


def shell() -> Any | None:
    """The running IPython kernel's shell, or None outside a Jupyter kernel."""
    if "ipykernel" not in sys.modules:
        return None
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    try:
        found = get() if get is not None else None
    except Exception:
        return None
    if found is None or getattr(found, "kernel", None) is None:  # a terminal IPython
        return None
    return found


def source_name() -> str | None:
    """The notebook's path for ``mlflow.source.name`` ("<notebook>" when not found), or None
    outside a notebook."""
    current = shell()
    if current is None:
        return None
    path, _, _ = locate(current)
    return path or "<notebook>"


def inspect(read_file: bool = True) -> NotebookInfo | None:
    """The notebook this kernel runs, its executed cells and (``read_file``) its file's text;
    None outside a Jupyter kernel."""
    current = shell()
    if current is None:
        return None
    info = NotebookInfo()
    info.path, info.found_by, info.reason = locate(current)
    info.kernel_id = kernel_id()
    info.cells = executed_cells(current)
    if read_file and info.path:
        try:
            data = Path(info.path).read_bytes()
        except OSError as error:
            info.reason = f"the notebook file could not be read: {error}"
        else:
            info.sha256 = hashlib.sha256(data).hexdigest()
            info.bytes = len(data)
            if len(data) <= MAX_NOTEBOOK_BYTES:
                info.text = data.decode("utf-8", "replace")
            else:
                info.reason = f"the notebook file is larger than {MAX_NOTEBOOK_BYTES} bytes"
    return info


def executed_cells(current: Any) -> list[str]:
    """The code of the cells run in this kernel so far, the current one last."""
    manager = getattr(current, "history_manager", None)
    cells = getattr(manager, "input_hist_raw", None)
    if cells is None:
        cells = current.user_ns.get("In", [])
    return [str(code) for code in list(cells)[1:]]  # In[0] is empty


def locate(current: Any) -> tuple[str | None, str | None, str | None]:
    """(path, found_by, reason): the notebook's absolute path and how it was found, or the
    reason it was not."""
    vscode = current.user_ns.get("__vsc_ipynb_file__")
    if vscode:
        return os.path.abspath(str(vscode)), "vscode", None
    session = os.environ.get("JPY_SESSION_NAME")
    if session:
        path = _session_path(session)
        if path:
            return path, "JPY_SESSION_NAME", None
    kernel = kernel_id()
    if kernel is None:
        return (
            None,
            None,
            (
                "no JPY_SESSION_NAME and the kernel was not started by a Jupyter server (its "
                "connection file names no kernel id): nbconvert, papermill or a console?"
            ),
        )
    with _lock:
        if kernel not in _server_paths:
            _server_paths[kernel] = _ask_servers(kernel)
        path, reason = _server_paths[kernel]
    if path:
        return path, "jupyter server", None
    if session:
        reason = f"JPY_SESSION_NAME={session!r} names no file; {reason}"
    return None, None, reason


def _session_path(session: str) -> str | None:
    """``JPY_SESSION_NAME``: absolute in recent Jupyter Server, else relative to the server's
    root (the kernel starts in the notebook's folder)."""
    if os.path.isabs(session):
        return session if os.path.isfile(session) else None
    for root in [*(_server_roots()), os.getcwd()]:
        candidate = os.path.join(root, session)
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    candidate = os.path.join(os.getcwd(), os.path.basename(session))
    return os.path.abspath(candidate) if os.path.isfile(candidate) else None


def kernel_id() -> str | None:
    """This kernel's id, from its connection file's name (``kernel-<id>.json``)."""
    try:
        from ipykernel.connect import get_connection_file  # ipykernel is loaded already

        name = os.path.basename(get_connection_file())
    except Exception:
        return None
    stem = name.removesuffix(".json")
    return stem.split("-", 1)[1] if stem.startswith("kernel-") else None


def _server_files() -> list[str]:
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        runtime = jupyter_runtime_dir()
    except Exception:
        return []
    return sorted(
        glob.glob(os.path.join(runtime, "jpserver-*.json"))
        + glob.glob(os.path.join(runtime, "nbserver-*.json"))
    )


def _servers() -> list[dict[str, Any]]:
    found = []
    for file in _server_files():
        try:
            with open(file, encoding="utf-8") as handle:
                found.append(json.load(handle))
        except (OSError, ValueError):
            continue
    return found


def _server_roots() -> list[str]:
    return [str(_root(s)) for s in _servers() if _root(s)]


def _root(server: dict[str, Any]) -> str | None:
    return server.get("root_dir") or server.get("notebook_dir")


def _ask_servers(kernel: str) -> tuple[str | None, str]:
    """Ask each running Jupyter server which session runs ``kernel``."""
    servers = _servers()
    if not servers:
        return None, "no running Jupyter server was found (nbconvert, papermill or a console?)"
    for server in servers:
        url = str(server.get("url", "")).rstrip("/") + "/api/sessions"
        request = urllib.request.Request(url)
        if server.get("token"):
            request.add_header("Authorization", f"token {server['token']}")
        try:
            with urllib.request.urlopen(request, timeout=SERVER_TIMEOUT) as response:
                sessions = json.load(response)
        except Exception:
            logger.debug("listing the sessions of %s failed", url, exc_info=True)
            continue
        for session in sessions if isinstance(sessions, list) else []:
            if (session.get("kernel") or {}).get("id") != kernel:
                continue
            rel = session.get("path") or (session.get("notebook") or {}).get("path")
            root = _root(server)
            if rel and root:
                return os.path.abspath(os.path.join(root, rel)), ""
    return None, f"no running Jupyter server has a session with this kernel ({kernel})"
