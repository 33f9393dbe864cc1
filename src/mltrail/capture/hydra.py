"""Runs started inside a Hydra app (``@hydra.main``): its config, overrides and output folder.

Hydra is never imported here: a run is a Hydra run only when ``hydra`` is already loaded and
this thread is inside Hydra's ``run_job`` (the call of the ``@hydra.main`` function; Hydra's
global config outlives the app, so that alone says nothing). For such a run the capture records:

- the composed config, resolved, flattened as params (``model.lr``), and as
  ``mltrail/config.yaml``;
- the job's command-line overrides as the tag ``mltrail.hydra.overrides`` (``shlex``-quoted)
  and the param ``hydra.overrides``; the option picked in each config group as the params
  ``hydra.choices.<group>``;
- Hydra's output folder (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``) under
  ``mltrail/hydra/``, secret-looking values redacted;
- in a multirun (``-m``), the job's number (``mltrail.hydra.job_num``) and the sweep folder
  (``mltrail.hydra.sweep_dir``): the run is a child of one parent run per sweep
  (:func:`sweep_parent`), tagged ``mltrail.hydra.role=sweep``;
- the arguments that rerun this one job (``provenance.json``: ``hydra.rerun_args``): the
  script's config flags and the job's overrides, without ``-m``.

Hydra's output folders (``outputs/``, ``multirun/`` or where ``hydra.run.dir`` and
``hydra.sweep.dir`` point) are not the user's code: they do not make the git tree dirty.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import shlex
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mltrail.recording.sanitize import (
    REDACTED,
    is_secret_name,
    redact_text,
    redact_value,
    remember_secret,
)

logger = logging.getLogger("mltrail.capture.hydra")

CONFIG_ARTIFACT = "mltrail/config.yaml"
OUTPUT_ARTIFACTS = "mltrail/hydra"
#: Hydra's own flags that pick the config: kept when a job is rerun on its own.
_CONFIG_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}
_MULTIRUN_FLAGS = {"-m", "--multirun"}

_parents: dict[tuple[str, str], Any] = {}  # (tracking uri, sweep dir) -> the sweep's Trail
_parents_lock = threading.Lock()
_making_parent = threading.local()


@dataclasses.dataclass
class HydraInfo:
    """What a run inside a Hydra app records (see the module docstring)."""

    job_name: str | None = None
    multirun: bool = False
    role: str = "job"  #: "job", or "sweep" for the parent run of a multirun
    job_num: int | None = None
    overrides: list[str] = dataclasses.field(default_factory=list)
    choices: dict[str, str] = dataclasses.field(default_factory=dict)
    config_name: str | None = None
    output_dir: str | None = None
    sweep_dir: str | None = None
    original_cwd: str | None = None
    output_subdir: str | None = None
    config: dict[str, Any] | None = None  #: the composed config, resolved
    rerun_args: list[str] | None = None
    excluded: list[str] = dataclasses.field(default_factory=list)

    def tags(self) -> dict[str, str]:
        tags = {
            "mltrail.hydra.role": self.role,
            "mltrail.hydra.overrides": shlex.join(self.overrides),
        }
        if self.job_name:
            tags["mltrail.hydra.job_name"] = self.job_name
        if self.multirun and self.sweep_dir:
            tags["mltrail.hydra.sweep_dir"] = self.sweep_dir
        if self.multirun and self.job_num is not None and self.role == "job":
            tags["mltrail.hydra.job_num"] = str(self.job_num)
        return {k: redact_text(v) for k, v in tags.items()}

    def params(self) -> dict[str, Any]:
        """The config flattened (by ``Trail.log_params``), the overrides and the choices."""
        if self.role != "job":
            return {}
        params: dict[str, Any] = dict(self.config or {})
        params["hydra.overrides"] = shlex.join(self.overrides)
        for group, option in self.choices.items():
            params[f"hydra.choices.{group}"] = option
        return params

    def config_yaml(self) -> str | None:
        if self.config is None:
            return None
        return _yaml(_redacted(self.config))

    def output_files(self) -> dict[str, str]:
        """Hydra's record of the job (or of the sweep) as text, by artifact name."""
        found: dict[str, str] = {}
        folders = []
        if self.role == "job" and self.output_dir and self.output_subdir:
            folders.append(
                (Path(self.output_dir) / self.output_subdir, ("config", "hydra", "overrides"))
            )
        if self.role == "sweep" and self.sweep_dir:
            folders.append((Path(self.sweep_dir), ("multirun",)))
        for folder, names in folders:
            for name in names:
                path = folder / f"{name}.yaml"
                try:
                    found[f"{OUTPUT_ARTIFACTS}/{name}.yaml"] = _redacted_file(path)
                except OSError:
                    continue
        return found

    def as_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record.pop("config")
        record["config_artifact"] = CONFIG_ARTIFACT if self.config is not None else None
        return record


def _job_frame() -> Any:
    """The frame of Hydra's ``run_job`` that this thread is inside, or None."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "run_job" and frame.f_globals.get("__name__") == (
            "hydra.core.utils"
        ):
            return frame
        frame = frame.f_back
    return None


def inspect() -> HydraInfo | None:
    """The Hydra job this thread runs in, or None outside a Hydra app."""
    if "hydra" not in sys.modules:
        return None
    frame = _job_frame()
    if frame is None:
        return None
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    cfg = HydraConfig.get()
    info = HydraInfo()
    info.job_name = _get(cfg, "job.name")
    info.multirun = str(_get(cfg, "mode")) in {"RunMode.MULTIRUN", "MULTIRUN"}
    num = _get(cfg, "job.num")
    info.job_num = int(num) if info.multirun and num is not None else None
    info.overrides = [_redact_override(str(o)) for o in (_get(cfg, "overrides.task") or [])]
    choices = _get(cfg, "runtime.choices") or {}
    info.choices = {
        str(k): str(v)
        for k, v in OmegaConf.to_container(choices).items()  # type: ignore[union-attr]
        if not str(k).startswith("hydra/") and v is not None
    }
    info.config_name = _get(cfg, "job.config_name")
    info.output_dir = _get(cfg, "runtime.output_dir")
    info.original_cwd = _get(cfg, "runtime.cwd")
    info.output_subdir = _get(cfg, "output_subdir")
    if info.multirun:
        sweep = _get(cfg, "sweep.dir")
        info.sweep_dir = os.path.abspath(os.path.join(info.original_cwd or "", sweep or ""))
    # The config the app's function received; else the copy Hydra saved in its output folder.
    task_cfg = frame.f_locals.get("task_cfg")
    saved = Path(info.output_dir or "", info.output_subdir or "", "config.yaml")
    if task_cfg is None and info.output_dir and info.output_subdir and saved.is_file():
        task_cfg = OmegaConf.load(saved)
    if task_cfg is not None:
        try:
            info.config = OmegaConf.to_container(task_cfg, resolve=True)  # type: ignore[assignment]
        except Exception:  # an interpolation that cannot resolve: keep it as written
            info.config = OmegaConf.to_container(task_cfg, resolve=False)  # type: ignore[assignment]
    info.rerun_args = rerun_args(sys.argv[1:], info.overrides)
    info.excluded = _output_roots(info)
    if getattr(_making_parent, "busy", False):
        info.role = "sweep"
        info.job_num = None
        info.config = None
        info.rerun_args = None
        info.overrides = [_redact_override(o) for o in _sweep_overrides(sys.argv[1:])]
    return info


def _get(cfg: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(cfg, key, default=None)
    except Exception:
        return None


def rerun_args(argv: list[str], overrides: list[str]) -> list[str]:
    """The arguments that run one job again on its own: Hydra's config flags from ``argv``
    (``--config-name x``), then the job's overrides; no ``-m``, no sweep."""
    kept: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in _CONFIG_FLAGS:
            if "=" in arg:
                kept.append(arg)
            elif i + 1 < len(argv):
                kept += [arg, argv[i + 1]]
                i += 1
        i += 1
    return kept + list(overrides)


def _sweep_overrides(argv: list[str]) -> list[str]:
    """The overrides of a multirun's command line (what the sweep sweeps over)."""
    found, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in _CONFIG_FLAGS:
            skip = True
        elif not arg.startswith(("-", "hydra/", "hydra.", "+hydra", "~hydra")):
            found.append(arg)  # Hydra's own settings (hydra.sweep.dir=...) are not the task's
    return found


def _redact_override(override: str) -> str:
    """``db.password=x`` becomes ``db.password=***``; URL credentials are stripped."""
    key, sep, value = override.partition("=")
    if sep and value and is_secret_name(key.lstrip("+~").split("@", 1)[0]):
        remember_secret(value)
        return f"{key}={REDACTED}"
    return redact_text(override)


def _output_roots(info: HydraInfo) -> list[str]:
    """Hydra's output folders inside the original working directory: the first folder of
    the run (or sweep) directory under it (``outputs``, ``multirun``), where earlier runs'
    outputs lie too."""
    roots = []
    cwd = info.original_cwd
    for folder in (info.output_dir, info.sweep_dir):
        if not folder or not cwd:
            continue
        try:
            rel = Path(folder).resolve().relative_to(Path(cwd).resolve())
        except (ValueError, OSError):
            continue
        if rel.parts:
            roots.append(str(Path(cwd) / rel.parts[0]))
    return sorted(set(roots))


def _redacted(value: Any, name: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, name) for v in value]
    return redact_value(name, value)


def _redacted_file(path: Path) -> str:
    from omegaconf import OmegaConf

    loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return _yaml(_redacted(loaded))


def _yaml(data: Any) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(data))


# --- the parent run of a multirun ----------------------------------------------------------------


def sweep_parent(tracking_uri: str, experiment: str | None, capture: bool = True) -> str | None:
    """In a job of a Hydra multirun: the id of its sweep's parent run; None elsewhere.

    The first job to start a run creates the parent (tags ``mltrail.hydra.role=sweep`` and
    ``mltrail.hydra.sweep_dir``); later jobs find it: in this process from memory (Hydra's
    basic launcher runs the jobs one after another in one process), in other processes on the
    same machine (the joblib launcher) by the sweep folder's tag, under a file lock so that
    two jobs starting together create one parent. The parent ends with the process that
    created it.
    """
    if getattr(_making_parent, "busy", False) or "hydra" not in sys.modules:
        return None
    info = inspect()
    if info is None or not info.multirun or not info.sweep_dir:
        return None
    key = (tracking_uri, info.sweep_dir)
    with _parents_lock, _file_lock(key):
        trail = _parents.get(key)
        if trail is not None and trail.run_id:
            return str(trail.run_id)
        found = _find_parent(tracking_uri, experiment, info.sweep_dir)
        if found:
            return found
        from mltrail.recording.trail import start_run

        name = f"{info.job_name or 'sweep'}-sweep"
        _making_parent.busy = True
        try:
            trail = start_run(
                experiment=experiment,
                run_name=name,
                tracking_uri=tracking_uri,
                # Tagged at creation, with or without capture: other processes look for them.
                tags={"mltrail.hydra.role": "sweep", "mltrail.hydra.sweep_dir": info.sweep_dir},
                capture=capture,
                system_metrics=False,  # the jobs sample their own
                already_run="ignore",  # a sweep's run has no params: its jobs are checked
            )
        finally:
            _making_parent.busy = False
        trail.flush()  # in the store before another process looks for it
        _parents[key] = trail
        return str(trail.run_id) if trail.run_id else None


def end_sweep_runs() -> None:
    """End the parent runs of the Hydra sweeps this process created (FINISHED).

    They end at interpreter exit anyway; a process that goes on after ``hydra.main`` returns (a
    notebook or a test calling the app) can end them here.
    """
    with _parents_lock:
        trails = list(_parents.values())
        _parents.clear()
    for trail in trails:
        trail.end()


def _find_parent(tracking_uri: str, experiment: str | None, sweep_dir: str) -> str | None:
    from mltrail.store import experiment_id, make_client

    try:
        client = make_client(tracking_uri)
        exp = experiment_id(client, experiment, tracking_uri)
        quoted = sweep_dir.replace("'", "\\'")
        runs = client.search_runs(
            [exp],
            f"tags.`mltrail.hydra.sweep_dir` = '{quoted}' AND tags.`mltrail.hydra.role` = "
            "'sweep' AND attributes.status = 'RUNNING'",
            max_results=1,
        )
    except Exception:
        logger.debug("looking for the sweep's parent run failed", exc_info=True)
        return None
    return runs[0].info.run_id if runs else None


@contextlib.contextmanager
def _file_lock(key: tuple[str, str]) -> Iterator[None]:
    digest = hashlib.sha256("\0".join(key).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"mltrail-hydra-sweep-{digest}.lock"
    try:
        import fcntl
    except ImportError:  # Windows: the in-process lock only
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
