"""``mltrail.autolog()``: record every training of the supported frameworks, unmodified.

Each adapter declares its patches in ``autolog_patches(options)``: ``(owner, name, wrapper)``
triples, where ``wrapper(call_original, *args, **kwargs)`` records around one call of the
original. This module turns them on and off per framework and installs them under the
safe-patch contract of :mod:`mltrail.autolog.patching` (the original runs exactly once, the
user's exceptions propagate unchanged, mltrail's own errors become warnings, nested calls pass
through, MLflow's own autolog pauses meanwhile, disabling puts back the very same objects).
The frameworks come from :mod:`mltrail.autolog.registry` (entry points).

Frameworks imported after ``autolog()`` are patched when their import finishes. The
``MLTRAIL_AUTOLOG*`` environment variables turn it on from outside the script (see
:func:`autolog_from_environment`, used by ``mltrail run``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mltrail.autolog import registry
from mltrail.autolog.patching import (
    enabled,
    enabled_frameworks,
    in_patched_call,
    live_patch,
    lock,
    patched_count,
    recording,
    revert,
    safe_patch,
    thread_state,
)
from mltrail.autolog.registry import (
    RUN_OPTIONS,
    Framework,
    check_options,
    frameworks,
    options_for,
)
from mltrail.errors import MltrailError, process_errors, strict_mode
from mltrail.recording import handover, recorder

logger = logging.getLogger("mltrail.autolog")

__all__ = [
    "ENVIRONMENT",
    "RUN_OPTIONS",
    "Framework",
    "autolog",
    "autolog_from_environment",
    "enabled_frameworks",
    "frameworks",
    "in_patched_call",
    "live_patch",
    "options_for",
    "parse_options",
    "patched_count",
    "recording",
    "revert",
    "safe_patch",
]

_applying: set[str] = set()  # frameworks whose patches are being computed (re-entrant imports)
_finder: _PostImportFinder | None = None


def autolog(
    frameworks: Iterable[str] | None = None,
    disable: bool = False,
    silent: bool = False,
    **options: Any,
) -> None:
    """Record every Lightning ``Trainer.fit``, Keras ``Model.fit``, ``xgboost.train`` / XGBoost
    scikit-learn ``fit`` and top-level scikit-learn ``fit`` that follows, one run per training.

    Frameworks imported later are patched when they are imported. Calling it again with the
    same arguments changes nothing; with other options, later trainings use the new ones.

    Args:
        frameworks: names among "lightning", "keras", "xgboost", "sklearn"; default all.
        disable: put the original functions back (the very same objects).
        silent: no info log line about what was enabled.
        **options: ``start_run`` arguments (``experiment``, ``run_name``, ``tracking_uri``,
            ``tags``, any :class:`mltrail.config.Options` field) and adapter options
            (``log_model``, ``checkpoints``, ...); each adapter takes the ones it knows.

    Raises:
        MltrailError: for an unknown framework or option.
    """
    known = registry.frameworks()
    names = list(frameworks) if frameworks is not None else list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise MltrailError(
            f"Unknown framework {unknown[0]!r} for mltrail.autolog; choose from {sorted(known)}."
        )
    check_options(options)
    with lock:
        for name in names:
            if disable:
                enabled.pop(name, None)
                revert(name)
                continue
            if enabled.get(name) == options:
                continue  # already on with these options: nothing changes
            if name in enabled:
                revert(name)  # the wrappers hold their options: build them again
            enabled[name] = options
            if any(module in sys.modules for module in known[name].triggers):
                _apply(name)
        _update_finder()
    if not silent:
        logger.info("mltrail autolog %s for %s", "disabled" if disable else "enabled", names)


# --- environment variables -------------------------------------------------------------------

#: The variables :func:`autolog_from_environment` reads (``mltrail run`` sets them).
ENVIRONMENT = {
    "MLTRAIL_AUTOLOG": "1 turns autolog on in every Python process started with the hook",
    "MLTRAIL_AUTOLOG_FRAMEWORKS": "comma-separated frameworks (default: all)",
    "MLTRAIL_EXPERIMENT": "experiment of the recorded runs",
    "MLTRAIL_RUN_NAME": "name of the recorded runs",
    "MLTRAIL_AUTOLOG_OPTIONS": "more autolog options, e.g. log_model=false,checkpoints=none",
    "MLTRAIL_COMMAND": "the command line, recorded as the tag mltrail.command",
}


def autolog_from_environment(environ: Mapping[str, str] | None = None) -> bool:
    """Turn autolog on when ``MLTRAIL_AUTOLOG`` asks for it; returns whether it did.

    ``MLTRAIL_AUTOLOG_FRAMEWORKS``, ``MLTRAIL_EXPERIMENT``, ``MLTRAIL_RUN_NAME``,
    ``MLTRAIL_AUTOLOG_OPTIONS`` and ``MLTRAIL_COMMAND`` (recorded as the tag
    ``mltrail.command``) shape the runs; every ``MLTRAIL_<OPTION>`` of
    :class:`mltrail.config.Options` and ``MLFLOW_TRACKING_URI`` apply as they do to
    ``start_run``.
    """
    env = os.environ if environ is None else environ
    settings = _settings_from_environment(env)
    if settings is None:
        return False
    frameworks, options = settings
    autolog(frameworks, silent=True, **options)
    if env.get(SCRIPT_PID_VARIABLE) == str(os.getpid()):
        _start_recorder_with_the_script()
    return True


def _settings_from_environment(
    env: Mapping[str, str],
) -> tuple[list[str] | None, dict[str, Any]] | None:
    """The frameworks (None: all) and options that ``MLTRAIL_AUTOLOG*`` ask autolog for; None
    when autolog is not asked for."""
    if env.get("MLTRAIL_AUTOLOG", "").strip().lower() not in {"1", "true", "yes", "on"}:
        return None
    frameworks = [n.strip() for n in env.get("MLTRAIL_AUTOLOG_FRAMEWORKS", "").split(",")]
    options = parse_options(env.get("MLTRAIL_AUTOLOG_OPTIONS", ""))
    for variable, option in (
        ("MLTRAIL_EXPERIMENT", "experiment"),
        ("MLTRAIL_RUN_NAME", "run_name"),
    ):
        if env.get(variable):
            options[option] = env[variable]
    if env.get("MLTRAIL_COMMAND"):
        options["tags"] = {"mltrail.command": env["MLTRAIL_COMMAND"]}
    return [n for n in frameworks if n] or None, options


#: Set by ``mltrail run`` to the id of the process the script runs in (its workers have others).
SCRIPT_PID_VARIABLE = "MLTRAIL_SCRIPT_PID"


def _start_recorder_with_the_script() -> None:
    """Start the recorder at interpreter start for the frameworks whose runs it records that
    the script's own file imports: MLflow's import and the store's opening then overlap the
    script's own imports instead of following them. A framework imported elsewhere (a module
    of the script's) starts it when its import begins, as without this. The recorder that
    ``mltrail run`` started for the same frameworks (:mod:`~mltrail.recording.handover`) is
    taken on here, or let go if none of them is recorded after all."""
    path = sys.argv[0] if sys.argv else ""
    for name in frameworks_imported_by(path, enabled):
        recorder.start_early(name, enabled[name])
    handover.let_go()


def frameworks_imported_by(path: str, options: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The frameworks among ``options`` (autolog's, by framework) whose runs the recorder
    records that the script at ``path`` imports in its own file; none for a script that
    imports MLflow at its top (it records in its own process) or is no ``.py`` file. MLflow
    imported in a branch or a function may never be: the recorder is started anyway, and
    let go at the exit if the runs were recorded in the script's process after all."""
    if not path.endswith(".py"):
        return []
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            source = file.read(1_000_000)
    except OSError:
        return []
    if "mlflow" in _TOP_LEVEL_IMPORT.findall(source):
        return []
    imported = set(_IMPORTED.findall(source))
    found = []
    for name, spec in registry.frameworks().items():
        packages = {trigger.split(".")[0] for trigger in spec.triggers}
        if name in options and spec.records_beside and imported & packages:
            found.append(name)
    return found


_IMPORTED = re.compile(r"^[ \t]*(?:import|from)[ \t]+([A-Za-z_]\w*)", re.MULTILINE)
_TOP_LEVEL_IMPORT = re.compile(r"^(?:import|from)[ \t]+([A-Za-z_]\w*)", re.MULTILINE)


def parse_options(text: str) -> dict[str, Any]:
    """``"log_model=false,checkpoints=none"`` as autolog options (booleans and numbers typed).

    Raises:
        MltrailError: for an item without ``=`` or an unknown option.
    """
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise MltrailError(f"Autolog option {item!r} is not NAME=VALUE.")
        options[name.strip()] = _typed(raw.strip())
    check_options(options)
    return options


def _typed(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    if lowered in {"none", "null"}:
        return None
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


# --- patching ----------------------------------------------------------------------------------


def _apply(framework: str) -> None:
    if framework in _applying:
        return  # the adapter's own imports got here: the outer call patches what they brought
    _applying.add(framework)
    spec = registry.frameworks()[framework]
    try:
        adapter = importlib.import_module(spec.adapter)
        patches = adapter.autolog_patches(enabled[framework])
    except Exception as error:
        if strict_mode():
            raise
        process_errors.report(f"autolog for {framework}", error)
        return
    finally:
        _applying.discard(framework)
    for owner, name, wrapper in patches:
        safe_patch(framework, owner, name, wrapper)
    if spec.records_beside:  # imported before autolog was on: its runs will want the recorder
        recorder.start_early(framework, enabled[framework])


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs the patches of a framework right after its module finished importing."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        frameworks = [
            name
            for name, fw in registry.frameworks().items()
            if fullname in fw.triggers and name in enabled
        ]
        if not frameworks or getattr(thread_state, "finding", False):
            return None
        for framework in frameworks:
            if registry.frameworks()[framework].records_beside:
                # Its runs will want the recorder: started now, it imports MLflow while the
                # framework imports, not after.
                recorder.start_early(framework, enabled[framework])
        thread_state.finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            thread_state.finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            for framework in frameworks:
                with lock:
                    if framework in enabled:
                        _apply(framework)

        spec.loader = _LoaderProxy(loader, exec_module)
        return spec


class _LoaderProxy(importlib.abc.Loader):
    def __init__(self, loader: Any, exec_module: Callable[[Any], None]) -> None:
        self._loader = loader
        self._exec_module = exec_module

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._exec_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


def _update_finder() -> None:
    """Keep the import hook in ``sys.meta_path`` exactly while some framework is enabled."""
    global _finder
    if enabled and _finder is None:
        _finder = _PostImportFinder()
        sys.meta_path.insert(0, _finder)
    elif not enabled and _finder is not None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(_finder)
        _finder = None
