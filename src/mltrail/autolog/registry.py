"""Which adapters ``mltrail.autolog()`` knows: every :class:`Framework` registered under the
entry-point group ``mltrail.integrations``, the four built-in ones included.

A third-party package adds a framework without mltrail knowing its name::

    # pyproject.toml of the package
    [project.entry-points."mltrail.integrations"]
    myframework = "my_package.mltrail_spec:FRAMEWORK"

    # my_package/mltrail_spec.py: light, imports neither the framework nor the adapter
    from mltrail.adapters import Framework
    FRAMEWORK = Framework(
        adapter="my_package.mltrail_adapter",  # defines autolog_patches(options)
        triggers=("myframework",),              # importing these applies the patches
        options=frozenset({"log_model"}),       # the adapter's own autolog options
    )

The entry point's name is the framework's name in ``autolog(frameworks=[...])`` and
``mltrail run --frameworks``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import logging
import threading
from collections.abc import Mapping
from typing import Any

from mltrail.config import Options
from mltrail.errors import process_errors, reject_unknown, strict_mode

logger = logging.getLogger("mltrail.autolog")

#: The entry-point group adapters register under.
ENTRY_POINT_GROUP = "mltrail.integrations"
_BUILTIN = ("lightning", "keras", "xgboost", "sklearn")


@dataclasses.dataclass(frozen=True)
class Framework:
    """What ``autolog`` knows of a framework without importing it.

    Attributes:
        adapter: the module defining ``autolog_patches(options)``.
        triggers: modules whose import applies the patches.
        options: the adapter's own options accepted by ``autolog(**options)``.
        mlflow_flavors: MLflow autolog integrations that would record the same trainings
            (paused while mltrail records one).
        records_beside: its trainings' runs open beside them (see
            :meth:`~mltrail.recording.session.RunSession.open_beside`): mltrail's recorder
            process is started as soon as the framework is imported, ready by the first run.
        models_as_files: its adapter sends its final models to mltrail's recorder process as
            the files its MLflow flavor writes (see :mod:`mltrail.recording.model_file`): the
            recorder's warm-up does not import the framework.
    """

    adapter: str
    triggers: tuple[str, ...]
    options: frozenset[str] = frozenset()
    mlflow_flavors: tuple[str, ...] = ()
    records_beside: bool = False
    models_as_files: bool = False

    @classmethod
    def named(
        cls, adapter: str, triggers: str, options: str = "", flavors: str = "", **more: Any
    ) -> Framework:
        """The framework of ``adapter``, its lists written space-separated: the modules whose
        import applies its patches, its own ``autolog`` options and the MLflow autolog
        integrations paused while it records (``more``: the other fields)."""
        return cls(
            adapter,
            tuple(triggers.split()),
            frozenset(options.split()),
            tuple(flavors.split()),
            **more,
        )


#: Keyword arguments of start_run that autolog passes on (run_id would make every fit one run).
RUN_OPTIONS = frozenset({"experiment", "run_name", "tracking_uri", "tags"}) | frozenset(
    f.name for f in dataclasses.fields(Options)
)

_loaded: dict[str, Framework] | None = None
_lock = threading.Lock()


def frameworks() -> dict[str, Framework]:
    """Every registered framework by name, built-in ones first (read once per process)."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load()
        return dict(_loaded)


def _load() -> dict[str, Framework]:
    found: dict[str, Framework] = {}
    try:
        entries = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception as error:  # broken metadata of some installed package
        logger.debug("reading %s entry points failed: %s", ENTRY_POINT_GROUP, error)
        entries = []
    for entry in entries:
        try:
            spec = entry.load()
            if not isinstance(spec, Framework):
                raise TypeError(f"{entry.value} is a {type(spec).__name__}, not a Framework")
        except Exception as error:
            if strict_mode():
                raise
            process_errors.report(f"loading the mltrail adapter {entry.name!r}", error)
            continue
        found.setdefault(entry.name, spec)
    missing = [name for name in _BUILTIN if name not in found]
    if missing:  # running from a source tree whose metadata predates the entry points
        builtin = importlib.import_module("mltrail.integrations")
        for name in missing:
            found[name] = getattr(builtin, name.upper())
    return {**{name: found[name] for name in _BUILTIN}, **found}


def check_options(options: Mapping[str, Any]) -> None:
    """Raise for an option that neither ``start_run`` nor any adapter takes.

    Raises:
        MltrailError: naming the option, a close match and the valid ones.
    """
    known = RUN_OPTIONS.union(*(fw.options for fw in frameworks().values()))
    reject_unknown(
        options, known, "Unknown mltrail.autolog option {name}.{hint} Valid options: {known}."
    )


def options_for(
    framework: str, options: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The autolog options one adapter takes: (``start_run`` arguments, its own).

    Options of the other frameworks' adapters are left out.
    """
    own = frameworks()[framework].options
    return (
        {k: v for k, v in options.items() if k in RUN_OPTIONS},
        {k: v for k, v in options.items() if k in own},
    )
