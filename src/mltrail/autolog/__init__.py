"""``mltrail.autolog()``: record every training of the supported frameworks, unmodified.

Each adapter declares its patches in ``autolog_patches(options)``: ``(owner, name, wrapper)``
triples, where ``wrapper(call_original, *args, **kwargs)`` records around one call of the
original. This module installs them under the safe-patch contract:

- the original runs exactly once and its result is returned;
- the user's own exception (raised by the original) propagates unchanged;
- an error in the wrapper itself becomes a warning (raised in strict mode), and the original
  still runs if it had not yet;
- calls nested inside a patched call (a Pipeline fitting its steps, XGBoost's scikit-learn API
  calling ``xgb.train``) pass straight through, so one training is one run;
- MLflow's own autolog for these frameworks is paused during a call mltrail records, so a
  training is not recorded twice;
- ``autolog(disable=True)`` puts back the very same original objects.

Frameworks imported after ``autolog()`` are patched when their import finishes. The
``MLTRAIL_AUTOLOG*`` environment variables turn it on from outside the script (see
:func:`autolog_from_environment`, used by ``mltrail run``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import importlib
import importlib.abc
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from mltrail.config import Options
from mltrail.errors import MltrailError, process_errors, strict_mode

logger = logging.getLogger("mltrail.autolog")

# scikit-learn defines its estimators in submodules imported on demand; each one patches what it
# brought (cheaper than importing them all up front, as sklearn.utils.all_estimators does).
SKLEARN_MODULES = tuple(
    f"sklearn.{name}"
    for name in (  # noqa: SIM905
        "calibration cluster compose covariance cross_decomposition decomposition "
        "discriminant_analysis dummy ensemble experimental.enable_halving_search_cv "
        "feature_extraction feature_selection frozen gaussian_process impute isotonic "
        "kernel_approximation kernel_ridge linear_model manifold mixture model_selection "
        "multiclass multioutput naive_bayes neighbors neural_network pipeline preprocessing "
        "random_projection semi_supervised svm tree"
    ).split()
)


@dataclasses.dataclass(frozen=True)
class Framework:
    """What ``autolog`` knows of a framework without importing it."""

    adapter: str  # module with autolog_patches(options)
    triggers: tuple[str, ...]  # modules whose import applies the patches
    options: frozenset[str]  # adapter options accepted by autolog(**options)
    mlflow_flavors: tuple[str, ...]  # MLflow autolog integrations that record it too


FRAMEWORKS: dict[str, Framework] = {
    "lightning": Framework(
        "mltrail.integrations.lightning",
        ("lightning.pytorch", "pytorch_lightning"),
        frozenset({"log_every_n_steps", "checkpoints", "log_model", "registered_model_name"}),
        ("pytorch",),
    ),
    "keras": Framework(
        "mltrail.integrations.keras",
        ("keras",),
        frozenset(
            {
                "log_every_n_batches",
                "checkpoints",
                "monitor",
                "mode",
                "log_model",
                "registered_model_name",
            }
        ),
        ("keras", "tensorflow"),
    ),
    "xgboost": Framework(
        "mltrail.integrations.xgboost",
        ("xgboost",),
        frozenset({"checkpoint_every", "log_model", "registered_model_name", "importance"}),
        ("xgboost",),
    ),
    "sklearn": Framework(
        "mltrail.integrations.sklearn",
        ("sklearn", *SKLEARN_MODULES),
        frozenset({"log_model", "registered_model_name", "log_plots", "max_child_runs", "nested"}),
        ("sklearn",),
    ),
}

# Keyword arguments of start_run that autolog passes on (run_id would make every fit one run).
RUN_OPTIONS = frozenset({"experiment", "run_name", "tracking_uri", "tags"}) | frozenset(
    f.name for f in dataclasses.fields(Options)
)

_state = threading.local()
_lock = threading.RLock()
# (id(owner), name) -> (owner, name, the original as stored on owner or None if inherited,
# the patched object we stored, framework)
_originals: dict[tuple[int, str], tuple[Any, str, Any, Any, str]] = {}
_enabled: dict[str, dict[str, Any]] = {}  # framework -> options
_applying: set[str] = set()  # frameworks whose patches are being computed (re-entrant imports)
_finder: _PostImportFinder | None = None


def in_patched_call() -> bool:
    """True while a patched training call runs in this thread (inner calls are not recorded)."""
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def recording() -> Iterator[None]:
    """Mark a training that an adapter records on its own (a wrapper or a callback outside
    ``autolog``): patched calls inside it pass straight through, as inside a patched call."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


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
    names = list(frameworks) if frameworks is not None else list(FRAMEWORKS)
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown:
        raise MltrailError(
            f"Unknown framework {unknown[0]!r} for mltrail.autolog; choose from {sorted(FRAMEWORKS)}."
        )
    _check_options(options)
    with _lock:
        for name in names:
            if disable:
                _enabled.pop(name, None)
                revert(name)
                continue
            if _enabled.get(name) == options:
                continue  # already on with these options: nothing changes
            if name in _enabled:
                revert(name)  # the wrappers hold their options: build them again
            _enabled[name] = options
            if any(module in sys.modules for module in FRAMEWORKS[name].triggers):
                _apply(name)
        _update_finder()
    if not silent:
        logger.info("mltrail autolog %s for %s", "disabled" if disable else "enabled", names)


def _check_options(options: Mapping[str, Any]) -> None:
    known = RUN_OPTIONS.union(*(fw.options for fw in FRAMEWORKS.values()))
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise MltrailError(
                f"Unknown mltrail.autolog option {name!r}.{hint} "
                f"Valid options: {', '.join(sorted(known))}."
            )


def options_for(
    framework: str, options: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checked autolog options one adapter takes: (``start_run`` arguments, its own).

    Options of the other frameworks' adapters are left out.
    """
    own = FRAMEWORKS[framework].options
    return (
        {k: v for k, v in options.items() if k in RUN_OPTIONS},
        {k: v for k, v in options.items() if k in own},
    )


def enabled_frameworks() -> dict[str, dict[str, Any]]:
    """The frameworks autolog is on for, with their options."""
    with _lock:
        return dict(_enabled)


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
    if env.get("MLTRAIL_AUTOLOG", "").strip().lower() not in {"1", "true", "yes", "on"}:
        return False
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
    autolog([n for n in frameworks if n] or None, silent=True, **options)
    return True


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
    _check_options(options)
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
    try:
        adapter = importlib.import_module(FRAMEWORKS[framework].adapter)
        patches = adapter.autolog_patches(_enabled[framework])
    except Exception as error:
        if strict_mode():
            raise
        process_errors.report(f"autolog for {framework}", error)
        return
    finally:
        _applying.discard(framework)
    for owner, name, wrapper in patches:
        safe_patch(framework, owner, name, wrapper)


def safe_patch(framework: str, owner: Any, name: str, wrapper: Callable[..., Any]) -> None:
    """Replace ``owner.name`` by ``wrapper`` under the safe-patch contract (idempotent)."""
    key = (id(owner), name)
    with _lock:
        if key in _originals:
            return
        had_own = name in vars(owner) if isinstance(owner, type) else True
        original = getattr(owner, name)
        raw = vars(owner)[name] if isinstance(owner, type) and had_own else original
        patched = _make_safe(original, wrapper, framework)
        if isinstance(raw, staticmethod | classmethod):
            patched = type(raw)(patched)
        setattr(owner, name, patched)
        _originals[key] = (owner, name, raw if had_own else None, patched, framework)


def revert(framework: str | None = None) -> None:
    """Put back the original objects patched for ``framework`` (all when None).

    A patch that someone else patched over since (``mlflow.autolog()`` called after ours) stays
    in place, inert, so that their patch keeps working.
    """
    with _lock:
        for key, (owner, name, raw, patched, fw) in list(_originals.items()):
            if framework is not None and fw != framework:
                continue
            current = vars(owner).get(name) if isinstance(owner, type) else getattr(owner, name)
            if current is not patched:
                logger.debug("%s.%s was patched again after mltrail; left inert", owner, name)
            elif raw is None:
                delattr(owner, name)  # the attribute was inherited: remove our override
            else:
                setattr(owner, name, raw)
            del _originals[key]


def patched_count(framework: str | None = None) -> int:
    """How many functions are patched now (for ``framework``, or all)."""
    with _lock:
        return sum(1 for *_, fw in _originals.values() if framework in (None, fw))


def _make_safe(original: Callable[..., Any], wrapper: Callable[..., Any], framework: str) -> Any:
    @functools.wraps(original)
    def patched(*args: Any, **kwargs: Any) -> Any:
        if in_patched_call() or framework not in _enabled:
            return original(*args, **kwargs)
        outcome: dict[str, Any] = {}

        def call_original(*a: Any, **k: Any) -> Any:
            if "called" in outcome:  # the original runs exactly once
                raise RuntimeError("mltrail autolog wrapper called the original twice")
            outcome["called"] = True
            try:
                outcome["result"] = original(*a, **k)
            except BaseException as error:
                outcome["error"] = error
                raise
            return outcome["result"]

        _state.depth = getattr(_state, "depth", 0) + 1
        try:
            with _mlflow_autolog_paused():
                return wrapper(call_original, *args, **kwargs)
        except BaseException as error:
            if outcome.get("error") is error:
                raise  # the user's own exception, unchanged
            if strict_mode() or not isinstance(error, Exception):
                raise
            process_errors.report(f"autolog patch for {framework}", error)
        finally:
            _state.depth -= 1
        if "called" not in outcome:
            return original(*args, **kwargs)
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("result")

    patched.__mltrail_original__ = original  # type: ignore[attr-defined]
    patched.__mltrail_framework__ = framework  # type: ignore[attr-defined]
    return patched


def live_patch(function: Any) -> bool:
    """Whether ``function`` is an autolog patch of a framework that autolog is on for."""
    return getattr(function, "__mltrail_framework__", None) in _enabled


@contextlib.contextmanager
def _mlflow_autolog_paused() -> Iterator[None]:
    """Pause MLflow's own autolog for these frameworks during a training mltrail records.

    With ``mlflow.autolog()`` on too, the training is then recorded once, by mltrail. When
    MLflow's patch sits outside ours (``mlflow.autolog()`` called after ``mltrail.autolog()``)
    its run is already open and active: the adapters join it, so it is still one run.
    """
    utils = sys.modules.get("mlflow.utils.autologging_utils")  # never import MLflow for this
    paused: list[dict[str, Any]] = []
    if utils is not None:
        integrations = getattr(utils, "AUTOLOGGING_INTEGRATIONS", {})
        for fw in FRAMEWORKS.values():
            for flavor in fw.mlflow_flavors:
                config = integrations.get(flavor)
                if isinstance(config, dict) and not config.get("disable", False):
                    config["disable"] = True
                    paused.append(config)
    try:
        yield
    finally:
        for config in paused:
            config["disable"] = False


# --- frameworks imported after autolog() ---------------------------------------------------------


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs the patches of a framework right after its module finished importing."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        frameworks = [
            name for name, fw in FRAMEWORKS.items() if fullname in fw.triggers and name in _enabled
        ]
        if not frameworks or getattr(_state, "finding", False):
            return None
        _state.finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            _state.finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            for framework in frameworks:
                with _lock:
                    if framework in _enabled:
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
    if _enabled and _finder is None:
        _finder = _PostImportFinder()
        sys.meta_path.insert(0, _finder)
    elif not _enabled and _finder is not None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(_finder)
        _finder = None
