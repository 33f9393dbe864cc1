"""Trainings inside another adapter's unit of work record into the run that unit provides.

A hyperparameter search runs the user's code once per trial; the trainings that code makes
(recorded by any adapter, explicit callbacks and ``autolog`` alike) belong to the trial's run,
not to runs of their own at the top level. An adapter whose framework runs such units of work
registers a provider with :func:`provide_runs`: a callable asked, in the thread of a run about
to start without a run id, for the id of the run to join instead (or None). The run that
starts then joins it as it would join the user's active MLflow run (its status stays with the
provider), without a second provenance capture or system-metrics sampler: the provider's own
run has those.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from mltrail.errors import process_errors, strict_mode

#: A provider: given the tracking URI of the run about to start, the run id it should join.
RunProvider = Callable[[str], "str | None"]

_providers: list[RunProvider] = []
_lock = threading.Lock()
_asking = threading.local()


def provide_runs(provider: RunProvider) -> None:
    """Register ``provider`` (a second registration of the same one changes nothing).

    It is called in the thread of every run that starts without a run id, so it must be
    quick when it has nothing to provide; runs it starts itself are never offered to it (nor to
    any other provider).
    """
    with _lock:
        if provider not in _providers:
            _providers.append(provider)


def has_providers() -> bool:
    """Whether any provider is registered (none: no run is ever provided)."""
    return bool(_providers)


def provided_run(tracking_uri: str) -> str | None:
    """The run id the first provider offers for a run starting now in this thread, or None.

    A provider's error is counted (raised in strict mode) and the next one is asked.
    """
    if getattr(_asking, "busy", False) or not _providers:
        return None
    with _lock:
        providers = list(_providers)
    _asking.busy = True
    try:
        for provider in providers:
            try:
                run_id = provider(tracking_uri)
            except Exception as error:
                if strict_mode():
                    raise
                process_errors.report("providing the run of a training", error)
                continue
            if run_id:
                return run_id
        return None
    finally:
        _asking.busy = False
