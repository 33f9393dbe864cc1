"""One blocking ``fit`` recorded as a run, for every adapter of a library whose training is a
call that logs nothing while it runs (scikit-learn's ``fit``, statsmodels, a third party's
estimator).

:class:`FitRecording` is the wiring of such a fit; an adapter subclasses it and says only what
is its library's: the params that describe the fit (:meth:`FitRecording.params`), what the
fitted model gives (:meth:`FitRecording.finish`: metrics, the model, plots) and the run's tags.
The rest is here:

- the run opened with those params and the data's dataset inputs, read before the fit (so a
  digest is of the data the fit saw); what could not be read is reported into the run;
- the fit run either with its run opened first on the fit's thread, or recorded beside it on
  mltrail's recording thread (:func:`~mltrail.recording.deferred.record_beside`), measuring a
  copy of the fitted model when the user keeps the original (the next fold may refit it), with
  system metrics only while the fit still runs when the run opens; in a process that has not
  imported MLflow the run beside it is opened at once in mltrail's recorder process
  (:mod:`~mltrail.recording.recorder`), and what the fitted model gives is sent there;
- the thread marked as running a recorded fit (:func:`current_fit`; patched fits of any adapter
  pass through, :func:`~mltrail.autolog.patching.recording`), so fits inside it are no runs of
  their own;
- the run ended FINISHED after :meth:`FitRecording.finish`, or FAILED on the fit's exception,
  which leaves the fit unchanged; in strict mode mltrail's own errors are raised after the run
  has ended.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mltrail.autolog.patching import recording
from mltrail.errors import strict_mode
from mltrail.recording.datasets import dataset_input
from mltrail.recording.deferred import Pending, can_record_later, record_beside
from mltrail.recording.models import copy_to_save
from mltrail.recording.session import RunSession
from mltrail.recording.trail import Trail

__all__ = ["FitRecording", "current_fit"]

# The session recording the fit that runs in this thread, for inner fits (nesting, pass-through).
_current: contextvars.ContextVar[RunSession | None] = contextvars.ContextVar(
    "mltrail_fit_run", default=None
)

# What describing the fit read: params, dataset inputs, and (kind, error) it could not read.
_Described = tuple[dict[str, Any], list[Any], list[tuple[str, Exception]]]


def current_fit() -> RunSession | None:
    """The session recording the fit that runs in this thread (a fit called inside it is no
    run of its own), else None."""
    return _current.get()


class FitRecording:
    """One fit recorded as a run: :meth:`run` around the fit, or :meth:`begin` before it and
    :meth:`complete` (or :meth:`end`, on an error) after it, for a framework's own events.

    Subclasses override :meth:`params` and :meth:`finish`.

    Args:
        session: the session of this fit's run (one per fit: fits run in several threads at
            once, each its own run).
        model: the model being fitted, measured by :meth:`finish` once fitted.
        data: ``(role, X, y)`` of each data set the fit is described by (``"train"``,
            ``"eval"``), as ``data.<role>.*`` params and dataset inputs.
        tags: the run's tags (also set on a given Trail's run).
        private: the fitted model is the adapter's alone (a wrapper's clone), so a recording
            beside the fit measures it, not a copy.
        beside: False when the fit must not be recorded beside it (the adapter logs into the
            run while the fit runs: nested fits, a search still running around it).
        what: what is recorded, for messages (default: "<framework> <model class> fit").

    Attributes:
        session: the session of the fit's run.
        model: the model being fitted.
        fitted: whether the fit has ended and its model is being (or was) recorded.
        pending: the recording beside the fit, while or after it runs; None on the fit's
            thread.
    """

    def __init__(
        self,
        session: RunSession,
        model: Any,
        data: Sequence[tuple[str, Any, Any]] = (),
        *,
        tags: Mapping[str, Any] | None = None,
        private: bool = False,
        beside: bool = True,
        what: str | None = None,
    ) -> None:
        self.session = session
        self.model = model
        self.data = list(data)
        self.tags = dict(tags or {})
        self.private = private
        self.beside = beside
        self.what = what or f"{session.framework} {type(model).__name__} fit"
        self.fitted = False
        self.pending: Pending | None = None
        self._scope = contextlib.ExitStack()
        self._holder: int | None = None  # the thread marked as running this fit

    # --- what the adapter says -------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        """The params that describe the fit, read before it runs (the data's are added)."""
        return {}

    def finish(self, trail: Trail, model: Any) -> None:
        """Record what the fitted ``model`` gives into ``trail`` (metrics, the model, plots);
        the run ends after it, whatever happens."""

    # --- the fit ---------------------------------------------------------------------------------

    def run(self, fit: Callable[[], Any]) -> Any:
        """Run ``fit`` recorded and return its result; its own exception propagates unchanged
        (the run ends FAILED)."""
        if self._can_record_beside():
            return self._run_beside(fit)
        self.begin()
        try:
            result = fit()
        except BaseException as error:
            self.end(error)
            raise
        self.complete(self.model)
        return result

    def begin(self) -> None:
        """Open the fit's run now, on the fit's thread, before the fit."""
        self._open(self._described())
        self._hold_thread()
        self.session.training_started()

    def complete(self, model: Any) -> None:
        """:meth:`finish` with the fitted ``model``, then :meth:`end`, whatever happens."""
        self.fitted = True
        try:
            trail = self.session.trail
            assert trail is not None, "complete() before begin()"
            self.finish(trail, model)
        finally:
            self.end()

    def end(self, error: BaseException | None = None, **how: Any) -> None:
        """End the run (see :meth:`RunSession.end`), and this fit's hold on the thread."""
        if self._holder == threading.get_ident():
            # Only the marked thread can let go; a run that the recording thread ends while
            # the fit still runs leaves the mark to the fit's own end.
            self._scope.close()
        self.session.end(error, **how)

    # --- the wiring ------------------------------------------------------------------------------

    def _can_record_beside(self) -> bool:
        """A fit logs nothing while it runs, so it can be recorded beside it, unless it records
        into a given Trail, the adapter said no, or its run must exist before it
        (:func:`~mltrail.recording.deferred.can_record_later`)."""
        session = self.session
        return session.given is None and self.beside and can_record_later(session.start_run_kwargs)

    def _run_beside(self, fit: Callable[[], Any]) -> Any:
        """Run ``fit`` as it would run unrecorded, recorded beside it on mltrail's thread: the
        run, the store and MLflow's import are not waited for."""
        described = self._described()  # the digest is of the data the fit saw
        outcome: dict[str, Any] = {}  # the fitted model, or the fit's exception
        elsewhere = self._in_recorder()
        if elsewhere:  # opened at once, in the recorder process: the fit waits for nothing
            # It may open it after the fit has ended: no samples then, they would tell nothing.
            late = self.session.open_beside(self.what, tags=self.tags, sample_system=False)
            self._log_described(late, described)

        def opened() -> None:
            running = self.pending is not None and not self.pending.training_over
            if elsewhere:  # a long fit: sampled from now on, as a run opened now would be
                if running and late.options.system_metrics:
                    late.start_system_metrics()
                return
            self._open(described, sample_system=running)  # samples after the fit tell nothing
            if running:
                self.session.training_started()  # a long fit: an exit before its end fails it

        def fitted() -> None:
            if "error" in outcome:
                self.end(outcome["error"])
            else:
                self.complete(outcome["model"])

        self.pending = record_beside(opened, fitted, self.what)
        self._hold_thread()
        try:
            result = fit()
            outcome["model"] = self.model if self.private else copy_to_save(self.model)[0]
        except BaseException as error:
            outcome["error"] = error
            raise
        finally:
            self._scope.close()
            self.pending.ended()
        return result

    def _in_recorder(self) -> bool:
        """Whether this fit's run is recorded in mltrail's recorder process
        (:mod:`~mltrail.recording.recorder`): then this process never imports MLflow for it,
        and the fits that follow never share the interpreter with the recording."""
        return self.session.can_open_in_recorder()

    def _described(self) -> _Described:
        """The fit's params and data inputs, read before it runs, and what could not be read
        (reported into the run once it is open)."""
        params: dict[str, Any] = {}
        datasets: list[Any] = []
        problems: list[tuple[str, Exception]] = []
        try:
            params.update(self.params())
            for role, X, y in self.data:
                found, dataset = dataset_input(X, y, role)
                params.update(found)
                datasets.append(dataset)
        except Exception as error:
            if strict_mode():
                raise
            problems.append(("describing the fit", error))
        return params, datasets, problems

    def _open(self, described: _Described, sample_system: bool = True) -> None:
        """Open the fit's run with what :meth:`_described` read (one call per kind of record:
        each one is a request, a transaction, to the store)."""
        trail = self.session.open(tags=self.tags, sample_system=sample_system)
        if self.session.given is not None and self.tags:
            trail.set_tags(self.tags)  # open() tags only the runs it starts
        self._log_described(trail, described)

    def _log_described(self, trail: Any, described: _Described) -> None:
        params, datasets, problems = described
        for kind, problem in problems:
            self.session.report(kind, problem)
        try:
            trail.log_params(params)
            trail.log_inputs(datasets)
        except BaseException as error:  # strict mode raises our own errors: end the run first
            self.end(error)
            raise

    def _hold_thread(self) -> None:
        """Mark this thread as running a recorded fit until :meth:`end` (or the fit's end)."""
        self._holder = threading.get_ident()
        self._scope.callback(_current.reset, _current.set(self.session))
        self._scope.enter_context(recording())  # other adapters' patched fits pass through
