"""The environment a run executes in: Python, packages, platform, hardware, command line.

Everything is read from the running process and the OS (package metadata, ``/proc``, psutil);
the only subprocess is ``nvidia-smi`` when it exists and NVML is not importable. Environment
variables are recorded only from :data:`ENV_ALLOWLIST`, and their values are redacted when
they look secret.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from importlib import metadata
from typing import Any

from mltrail.recording.sanitize import is_secret_name, redact_text, redact_value

logger = logging.getLogger("mltrail.capture.env")

#: Environment variables recorded in ``provenance.json`` (values redacted when secret-looking).
#: They change results or say where a run executed; nothing else from the environment is kept.
ENV_ALLOWLIST = (
    "CUDA_VISIBLE_DEVICES",
    "CUBLAS_WORKSPACE_CONFIG",
    "PYTORCH_CUDA_ALLOC_CONF",
    "NVIDIA_VISIBLE_DEVICES",
    "NCCL_DEBUG",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "PYTHONHASHSEED",
    "KERAS_BACKEND",
    "TF_DETERMINISTIC_OPS",
    "TF_CPP_MIN_LOG_LEVEL",
    "XLA_FLAGS",
    "JAX_PLATFORMS",
    "TOKENIZERS_PARALLELISM",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_JOB_ID",
    "SLURM_JOB_NAME",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_NNODES",
    "SLURM_PROCID",
    "CI",
    "GITHUB_RUN_ID",
    "GITHUB_SHA",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "VIRTUAL_ENV",
    "CONDA_DEFAULT_ENV",
)

# What does not change within a process, read once (see requirements and _machine_gpus).
_cache: dict[str, Any] = {}
# Runs starting together (the trainings of a loop) read once, not each on its own.
_cache_lock = threading.Lock()

_SECRET_FLAG_WORDS = ("password", "token", "secret", "api-key", "api_key", "apikey", "credential")


def capture(gpu_timeout: float = 5.0) -> dict[str, Any]:
    """Everything about the environment except the package list (see :func:`requirements`)."""
    uname = platform.uname()
    env: dict[str, Any] = {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "prefix": sys.prefix,
        },
        "platform": {
            "system": uname.system,
            "release": uname.release,
            "version": uname.version,
            "machine": uname.machine,
            "platform": platform.platform(),
            "hostname": uname.node,
        },
        "cpu": {"model": cpu_model(), "count": os.cpu_count()},
        "memory_bytes": total_memory(),
        "gpus": _machine_gpus(gpu_timeout),
        "command": {
            "argv": command_line(),
            "entry_script": _entry_script(),
            "cwd": os.getcwd(),
        },
        "variables": variables(),
        "versions": versions(),
    }
    return env


def versions() -> dict[str, str | None]:
    """Versions of mltrail, MLflow and DVC (from package metadata: nothing is imported), read
    again only when the package folders change, as :func:`requirements` is (each lookup scans
    the installed distributions: milliseconds per run of a loop)."""
    found = read_per_package_state(
        "versions", lambda: {name: package_version(name) for name in ("mltrail", "mlflow", "dvc")}
    )
    return dict(found)


def mlflow_user() -> str:
    """The user MLflow records as ``mlflow.user`` for its own runs: ``MLFLOW_TRACKING_USERNAME``,
    else the login name (``getpass``: ``$USER``/``$LOGNAME``, else the account's name)."""
    from mlflow.tracking.context.default_context import DefaultRunContext
    from mlflow.utils.mlflow_tags import MLFLOW_USER

    try:
        return str(DefaultRunContext().tags()[MLFLOW_USER])
    except Exception:  # no account name at all (a container's anonymous uid)
        return "unknown"


def package_version(name: str) -> str | None:
    """The installed version of the distribution ``name``, or None: from its ``.dist-info``
    folder's name where it has one (parsing scikit-learn's METADATA takes 4 ms)."""
    try:
        return _name_version(metadata.distribution(name))[1]
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def total_memory() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:
        return None


def gpus(timeout: float = 5.0) -> list[dict[str, Any]]:
    """GPUs with name, memory, driver and CUDA version (NVML, else ``nvidia-smi``)."""
    found = _nvml_gpus()
    if found is None:
        found = _smi_gpus(timeout)
    cuda = _torch_cuda()
    for gpu in found:
        gpu.setdefault("cuda", cuda)
    return found


def _nvml_gpus() -> list[dict[str, Any]] | None:
    try:
        import pynvml
    except Exception:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        try:
            version = pynvml.nvmlSystemGetCudaDriverVersion()
            cuda = f"{version // 1000}.{version % 1000 // 10}"
        except Exception:
            cuda = None
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            found.append(
                {
                    "index": index,
                    "name": _text(pynvml.nvmlDeviceGetName(handle)),
                    "memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                    "driver": driver,
                    "cuda": cuda,
                }
            )
        return found
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _smi_gpus(timeout: float) -> list[dict[str, Any]]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        query = "--query-gpu=index,name,memory.total,driver_version"
        out = subprocess.run(
            [smi, query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        header = subprocess.run(
            [smi], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    cuda = None
    if "CUDA Version:" in header:
        cuda = header.split("CUDA Version:", 1)[1].split()[0].strip("|")
    found = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        index, name, memory, driver = parts
        found.append(
            {
                "index": int(index) if index.isdigit() else index,
                "name": name,
                "memory_bytes": int(float(memory) * 1024 * 1024) if _number(memory) else None,
                "driver": driver,
                "cuda": cuda,
            }
        )
    return found


def _torch_cuda() -> str | None:
    torch = sys.modules.get(
        "torch"
    )  # only when the user imported it: the core imports no framework
    return getattr(getattr(torch, "version", None), "cuda", None) if torch else None


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def command_line(argv: list[str] | None = None) -> list[str]:
    """``argv`` (default: the interpreter and ``sys.argv``) with secrets redacted
    (``--password x``, ``--token=x``, URL credentials)."""
    argv = [sys.executable, *sys.argv] if argv is None else list(argv)
    clean: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            clean.append("***")
            hide_next = False
            continue
        name = arg.lstrip("-").split("=", 1)[0]
        if arg.startswith("-") and is_secret_name(name.replace("-", "_")):
            if "=" in arg:
                clean.append(arg.split("=", 1)[0] + "=***")
            else:
                clean.append(arg)
                hide_next = True
            continue
        clean.append(redact_text(arg))
    return clean


def _entry_script() -> str | None:
    from mltrail.capture.git import argv0

    arg = argv0()
    if not arg or arg in {"-c", "-m", "-"}:
        return arg or None
    return os.path.abspath(arg)


def variables() -> dict[str, str]:
    return {
        name: redact_value(name, os.environ[name]) for name in ENV_ALLOWLIST if name in os.environ
    }


def _machine_gpus(timeout: float) -> list[dict[str, Any]]:
    """The GPUs, asked once per process (the hardware does not change under a process)."""
    with _cache_lock:
        if "gpus" not in _cache:
            _cache["gpus"] = gpus(timeout)
        return copy.deepcopy(_cache["gpus"])


def requirements() -> str:
    """Installed distributions in ``pip freeze`` format, from package metadata (no subprocess).

    Read once per process while the package folders are unchanged: a script of many trainings
    reads them once, and a ``pip install`` in a notebook session is seen (it changes the
    folder's modification time)."""
    return read_per_package_state("requirements", _read_requirements)


def read_per_package_state(key: str, read: Callable[[], Any]) -> Any:
    """``read()``, once per state of the package folders (cached under ``key``): what depends
    only on the installed packages is read again after a ``pip install``, not for each run."""
    with _cache_lock:
        state = _package_folders()
        cached = _cache.get(key)
        if cached is None or cached[0] != state:
            cached = (state, read())
            _cache[key] = cached
        return cached[1]


def _package_folders() -> tuple[tuple[str, int], ...]:
    found = []
    for entry in sys.path:
        try:
            found.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            continue
    return tuple(found)


def _read_requirements() -> str:
    lines: dict[str, str] = {}
    installed: set[str] = set()
    for dist in metadata.distributions():
        try:
            name, version = _name_version(dist)
            # A stale build folder on sys.path (name.egg-info) must not hide the installed one.
            by_installer = dist.read_text("INSTALLER") is not None
        except Exception:
            continue
        if not name:
            continue
        key = name.lower().replace("_", "-")
        if key in installed or (key in lines and not by_installer):
            continue
        lines[key] = _freeze_line(dist, name, version)
        if by_installer:
            installed.add(key)
    return "".join(lines[key] + "\n" for key in sorted(lines))


def _name_version(dist: metadata.Distribution) -> tuple[str, str]:
    # The dist-info folder names both; parsing every METADATA file costs far more.
    folder = getattr(dist, "_path", None)
    match = re.match(r"^(.+?)-([^-]+)\.dist-info$", getattr(folder, "name", "") or "")
    if match:
        return match.group(1).replace("_", "-"), match.group(2)
    return dist.metadata["Name"], dist.version


def _freeze_line(dist: metadata.Distribution, name: str, version: str) -> str:
    try:
        direct = dist.read_text("direct_url.json")
        info = json.loads(direct) if direct else None
    except Exception:
        info = None
    if not info or not isinstance(info, dict) or "url" not in info:
        return f"{name}=={version}"
    url = redact_text(info["url"])
    vcs = info.get("vcs_info")
    if isinstance(vcs, dict):
        return f"{name} @ {vcs.get('vcs', 'git')}+{url}@{vcs.get('commit_id', '')}"
    if (info.get("dir_info") or {}).get("editable"):
        path = url.removeprefix("file://")
        return f"# Editable install ({name}=={version})\n-e {path}"
    return f"{name} @ {url}"
