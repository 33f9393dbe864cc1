"""Nobody pays twice: warn when the same code, data and params already ran in the experiment.

A run's ``mltrail.fingerprint`` digests its code (commit, diff, untracked files), its data (each
DVC output's hash) and its params. Once the provenance capture has the code and data parts and
params were logged, mltrail looks in the run's experiment for a FINISHED or FAILED run with the
same fingerprint. The ``already_run`` option (``MLTRAIL_ALREADY_RUN``) says what happens then:

- ``"warn"`` (default): one warning naming that run, its status and key metrics, and the tag
  ``mltrail.already_run=<that run id>`` on this run. The check runs in the background once the
  params were quiet for a moment (the adapters log them right before training), and again at
  the end of the run when the params changed since, so training is never held up.
- ``"error"``: every ``log_params`` call checks on the calling thread and raises
  :class:`~mltrail.errors.MltrailError` before training starts; the stopped run is tagged
  ``mltrail.already_run.stopped=true`` and is never itself counted as an earlier run.
- ``"ignore"``: no check.

Resumed runs and runs journaled offline are not checked. ``mltrail runs --fingerprint`` lists
the fingerprints shared by several runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from mltrail.errors import MltrailError
from mltrail.recording import deferred, lifecycle

logger = logging.getLogger("mltrail.already_run")

TAG = "mltrail.already_run"
STOPPED_TAG = "mltrail.already_run.stopped"
#: Seconds without new params before the background check looks for earlier runs.
QUIET_SECONDS = 1.0
#: Seconds the store may take to answer the search.
SEARCH_TIMEOUT = 10.0
#: Seconds the check at the end of a run may add to ``end()``.
FINISH_SEARCH_TIMEOUT = 3.0
#: Seconds the check waits for the provenance capture (code and data parts of the fingerprint).
CAPTURE_TIMEOUT = 120.0
_COUNTED = ("FINISHED", "FAILED")
#: What to do about the warning, said with the first one of a process only.
ADVICE = (
    " Set already_run='ignore' (MLTRAIL_ALREADY_RUN=ignore) to silence this warning, or "
    "'error' to stop such runs before they train."
)
_ADVISED = threading.Event()


def find_earlier(
    client: Any, experiment_id: str, fingerprint: str, exclude: str | None = None
) -> list[Any]:
    """FINISHED or FAILED runs of ``experiment_id`` with ``fingerprint``, newest first."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`mltrail.fingerprint` = '{fingerprint}'",
        max_results=50,
        order_by=["attributes.start_time DESC"],
    )
    return [
        run
        for run in runs
        if run.info.status in _COUNTED
        and run.info.run_id != exclude
        and run.data.tags.get(STOPPED_TAG) != "true"
    ]


def describe(run: Any, limit: int = 4) -> str:
    """``run <id> ('<name>', FINISHED, acc=0.9, loss=0.1)``: id, status and key metrics."""
    metrics = sorted((k, v) for k, v in run.data.metrics.items() if not k.startswith("system/"))
    shown = ", ".join(f"{k}={v:.6g}" for k, v in metrics[:limit])
    if len(metrics) > limit:
        shown += f", +{len(metrics) - limit} more"
    name = f"'{run.info.run_name}', " if run.info.run_name else ""
    return f"run {run.info.run_id} ({name}{run.info.status}{', ' + shown if shown else ''})"


def what_matched(params: Mapping[str, str]) -> str:
    """What two runs with one fingerprint are known to share: the training data counts only
    when an adapter identified it by content (a ``data.<role>.digest`` param)."""
    identified = any(
        key.startswith("data.") and key.endswith(".digest") and value not in ("", "unknown")
        for key, value in params.items()
    )
    if identified:
        return "the same code, data and params"
    return "the same code and params (the training data was not identified, so it may differ)"


class AlreadyRunCheck:
    """The check of one run (see the module docstring)."""

    def __init__(
        self,
        trail: Any,
        fingerprint: Callable[[], str | None],
        ready: Callable[[float], bool],
    ) -> None:
        self.trail = trail
        self.mode: str = trail.options.already_run
        self.found: Any = None  # the earlier run, once found
        self._fingerprint = fingerprint
        self._ready = ready
        self._checked: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ended = threading.Event()
        self._params_at: float | None = None
        # A run recorded beside its training waits for the process's earlier runs, not itself.
        self._recording = deferred.current()

    @classmethod
    def start(
        cls, trail: Any, fingerprint: Callable[[], str | None], ready: Callable[[float], bool]
    ) -> AlreadyRunCheck | None:
        """The check for ``trail``'s run, or None when it is not checked."""
        options = trail.options
        if options.already_run == "ignore" or trail.offline or trail.resumed:
            return None
        if not trail.experiment_id or trail.client is None:
            return None
        check = cls(trail, fingerprint, ready)
        if check.mode == "warn":
            threading.Thread(target=check._watch, name="mltrail-already-run", daemon=True).start()
        return check

    # --- events from the run ---------------------------------------------------------------------

    def params_logged(self) -> None:
        """New params were logged. In "error" mode, check now and raise on a match."""
        self._params_at = time.monotonic()
        self._wake.set()
        if self.mode != "error" or self.found is not None:
            return
        self._ready(CAPTURE_TIMEOUT)
        # This process's earlier runs, still being closed or recorded.
        lifecycle.wait(SEARCH_TIMEOUT, before=self._recording)
        earlier = self._check(self._fingerprint())
        if earlier is not None:
            self.trail.set_tags({TAG: earlier.info.run_id, STOPPED_TAG: "true"})
            raise MltrailError(
                f"This experiment was already run: {describe(earlier)} had "
                f"{what_matched(self.trail.params)}. Set already_run='warn' or 'ignore' "
                "(MLTRAIL_ALREADY_RUN) to run it again."
            )

    def finish(self, fingerprint: str | None) -> None:
        """The run ends: in "warn" mode, check the final fingerprint if it was not checked."""
        self._ended.set()
        self._wake.set()
        if self.mode == "warn" and self.found is None and fingerprint:
            if fingerprint not in self._checked:
                # A run that ended within a second of its params (a short training) was not
                # checked yet: this process's earlier runs, still closing, count too.
                lifecycle.wait_for_earlier_closes(FINISH_SEARCH_TIMEOUT)
            self._check_and_warn(fingerprint, FINISH_SEARCH_TIMEOUT)

    # --- the background check ----------------------------------------------------------------------

    def _watch(self) -> None:
        self._ready(CAPTURE_TIMEOUT)
        self._wake.wait()
        while not self._ended.is_set():
            quiet = QUIET_SECONDS - (time.monotonic() - (self._params_at or 0.0))
            if quiet <= 0:
                break
            self._ended.wait(quiet)
        if not self._ended.is_set():
            # This process's earlier runs, still being closed or recorded.
            lifecycle.wait(SEARCH_TIMEOUT, before=self._recording)
            self._check_and_warn(self._fingerprint())

    def _check_and_warn(self, fingerprint: str | None, timeout: float = SEARCH_TIMEOUT) -> None:
        earlier = self._check(fingerprint, timeout)
        if earlier is None:
            return
        self.trail.set_tags({TAG: earlier.info.run_id})
        # The advice once per process: a script's folds, rerun unchanged, each match their run.
        advice = "" if _ADVISED.is_set() else ADVICE
        _ADVISED.set()
        logger.warning(
            "mltrail: this experiment was already run: %s had %s (fingerprint %s).%s",
            describe(earlier),
            what_matched(self.trail.params),
            (fingerprint or "")[:12],
            advice,
        )

    def _check(self, fingerprint: str | None, timeout: float = SEARCH_TIMEOUT) -> Any:
        """The earlier run with ``fingerprint`` (checked once per fingerprint), else None."""
        from mltrail.store import call_with_timeout

        with self._lock:
            if not fingerprint or fingerprint in self._checked or self.found is not None:
                return None
            self._checked.add(fingerprint)
        trail = self.trail
        if trail.store_unreachable:
            return None  # the store is down: the search would only wait for its timeout
        try:
            runs = call_with_timeout(
                lambda: find_earlier(trail.client, trail.experiment_id, fingerprint, trail.run_id),
                timeout,
                "looking for earlier runs",
            )
        except Exception as error:
            # The store is slow or down: the writer deals with that; this check just gives up.
            logger.debug("the already-run check failed: %s", error)
            return None
        with self._lock:
            if not runs or self.found is not None:
                return None
            self.found = runs[0]
            return self.found
