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
- ``autolog(disable=True)`` puts back the very same original objects.

Frameworks imported after ``autolog()`` are patched when their import finishes.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.abc
import importlib.util
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

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

# framework -> (adapter module, modules whose import triggers the patch)
FRAMEWORKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "lightning": ("mltrail.integrations.lightning", ("lightning.pytorch", "pytorch_lightning")),
    "keras": ("mltrail.integrations.keras", ("keras",)),
    "xgboost": ("mltrail.integrations.xgboost", ("xgboost",)),
    "sklearn": ("mltrail.integrations.sklearn", ("sklearn", *SKLEARN_MODULES)),
}

_state = threading.local()
_lock = threading.RLock()
_originals: dict[tuple[int, str], tuple[Any, str, Any, str]] = {}  # (id(owner), name) -> ...
_enabled: dict[str, dict[str, Any]] = {}  # framework -> options
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
    scikit-learn ``fit`` and top-level scikit-learn ``fit`` that follows.

    Args:
        frameworks: names among "lightning", "keras", "xgboost", "sklearn"; default all.
        disable: put the original functions back.
        silent: no info log lines about what was patched.
        **options: passed on to each run's ``start_run`` (``experiment``, ``tracking_uri``,
            ``flush_timeout``, ...) and to the adapters.
    """
    names = list(frameworks) if frameworks is not None else list(FRAMEWORKS)
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown:
        raise MltrailError(
            f"Unknown framework {unknown[0]!r} for mltrail.autolog; choose from {sorted(FRAMEWORKS)}."
        )
    with _lock:
        for name in names:
            if disable:
                _enabled.pop(name, None)
                revert(name)
                continue
            if name in _enabled:
                _enabled[name] = options  # calling again changes nothing but the options
                continue
            _enabled[name] = options
            if any(module in sys.modules for module in FRAMEWORKS[name][1]):
                _apply(name)
        if not disable:
            _ensure_finder()
    if not silent:
        logger.info("mltrail autolog %s for %s", "disabled" if disable else "enabled", names)


def enabled_frameworks() -> dict[str, dict[str, Any]]:
    with _lock:
        return dict(_enabled)


def _apply(framework: str) -> None:
    module_name = FRAMEWORKS[framework][0]
    try:
        adapter = importlib.import_module(module_name)
        patches = adapter.autolog_patches(_enabled[framework])
    except Exception as error:
        if strict_mode():
            raise
        process_errors.report(f"autolog for {framework}", error)
        return
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
        _originals[key] = (owner, name, raw if had_own else None, framework)


def revert(framework: str | None = None) -> None:
    """Put back the original objects patched for ``framework`` (all when None)."""
    with _lock:
        for key, (owner, name, raw, fw) in list(_originals.items()):
            if framework is not None and fw != framework:
                continue
            if raw is None:
                delattr(owner, name)  # the attribute was inherited: remove our override
            else:
                setattr(owner, name, raw)
            del _originals[key]


def patched_count(framework: str | None = None) -> int:
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
    return patched


# --- frameworks imported after autolog() ---------------------------------------------------------


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs the patches of a framework right after its module finished importing."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        frameworks = [
            fw for fw, (_, modules) in FRAMEWORKS.items() if fullname in modules and fw in _enabled
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


def _ensure_finder() -> None:
    global _finder
    if _finder is None:
        _finder = _PostImportFinder()
        sys.meta_path.insert(0, _finder)
