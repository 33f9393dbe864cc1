"""The adapter API: everything an adapter needs that is not about its framework.

mltrail's own adapters (``mltrail.integrations.*``) are written on this module only, the way a
third party writes one. An adapter maps its framework's events to these pieces and reads its
framework's configuration; that is all:

- :class:`RunSession`: the ``trail=`` or own-run handshake, start/resume/join/end, the exit
  hook for trainings cut short, error counting into the run's ``mltrail.errors``, a temporary
  folder per run; a resume from a checkpoint passes ``open(run_id=..., restart_step=k + 1)``
  (the checkpoint holds step ``k``) and the kernel continues, forks or rewinds the run
  (:mod:`mltrail.recording.restart`); :meth:`RunSession.open_checkpoint_run`: the run whose
  id the framework's checkpoint holds, else a new one (:meth:`RunSession.open_kept_run`: a
  run id kept elsewhere, a study's); :meth:`RunSession.log_after`: the
  metrics of an ``evaluate``/``predict``/``test`` after the training into its run; and
  ``open(restart_step=..., steps_name=...)`` refuses a training that would log a given
  Trail's steps again; :meth:`RunSession.open_beside` (when
  :meth:`RunSession.can_open_beside`): a run that opens beside its training, in mltrail's
  recorder process where MLflow is not imported, the training logging meanwhile into a
  :class:`~mltrail.recording.late_trail.LateTrail` (:meth:`RunSession.can_open_in_recorder`:
  in the recorder only, for a training that may need the run's id while it runs;
  :meth:`RunSession.start_recorder`: started when the adapter is made);
  :meth:`RunSession.end_when_released`: the run ends when an object only the training
  holds goes (an exception no hook saw);
  :class:`CopiedBySettings`: an adapter's copies (``clone``, pickling) built from its settings;
  :class:`RunIdHandoff`: the run id back from copies in spawned processes (``ddp_spawn``);
- :func:`exception_safe`: every framework hook wrapped once (errors counted, never raised
  into the training; raised with ``MLTRAIL_STRICT=1``); :func:`after_call`: a hook after a
  framework's method, with the exception leaving its caller (the end of a unit of work that
  has no hook); :class:`TrainingWrapper`: a framework's training method (Keras' ``fit``)
  wrapped once per process for callbacks that see neither its arguments nor an exception
  that stops it: each callback's :class:`TrainingCall` gets the call's arguments and other
  callbacks, and its run ends after the call, FAILED when it raises (with the autolog
  patches of that method and of the calls after it, ``evaluate``);
- :class:`EpochLog`: the step convention (``step = epoch``, ``step/`` at the global step,
  runs that go on continue their steps); :class:`GlobalSteps`: a framework's global steps on
  the run's (a second training into a run goes on past its steps, a resumed one skips those
  the run has values of);
- :class:`BestTracker`, :class:`FileWatch`, :func:`stable_copy`, :data:`CHECKPOINT_POLICIES`:
  checkpoints (which is best, which files changed, a copy that uploads safely);
  :func:`template_files`: the files a checkpoint path template (``ckpt-{epoch:02d}.keras``)
  names; :class:`CheckpointModel`: how a checkpoint loads as a model (checkpoints as MLflow 3
  LoggedModels; :class:`SavedFile`: the stand-in for a file that is the flavor's own
  serialisation); :class:`CheckpointUploads` (with :class:`CheckpointFile`,
  :func:`aliases_for`): the policy, the framework's changed checkpoint files, their stable
  copies and aliases, to the run (:meth:`CheckpointUploads.upload_saved`: one the framework
  saved when it chose, best by a :class:`BestTracker` or the framework's own choice);
  :class:`SaveBudget`, :class:`DeferredSave`: an adapter's own saves kept under a share of
  the training time (the best model kept in memory till then);
- :class:`CheckpointEvery`: checkpoints an adapter saves itself every N steps, ``latest``,
  and ``best`` by a metric it names; :class:`EpochCheckpoints`: those it saves at the end of
  each epoch by its ``checkpoints=`` policy (each epoch, the best under the save budget, the
  last);
- :class:`BoostingCallback`: the base of a gradient-boosting adapter's callback (LightGBM,
  XGBoost): settings and copies, a run per training at the model's rounds, the params at the
  start, checkpoints, early stopping and the final model at the end; :class:`BoostingCall`:
  what it read of the training call; :func:`eval_metrics` (with :func:`eval_round`,
  :func:`eval_rounds`): a round's evaluation as ``{data}-{metric}`` (cv: ``-mean``,
  ``-std``); :func:`written_params`, :func:`cv_params`: params as written, a cv's folds;
  :func:`continued_from`: the param naming the model a training continues (by content);
  :func:`stop_outcome`: what a patience-based early stopping did, from its best and last rounds
  (:func:`first_stopped`: by the first of several metrics that stopped it);
  :func:`find_training_call`: the ``train``/``cv`` call the callback runs inside (and the
  scikit-learn API's ``fit`` around it); :class:`RoundLoop`: one stand-in for the training's
  after-round callbacks that sees its end (``BoostingCallback._loop_rounds``; a framework's
  own container of callbacks: ``_watch_hooks``); the final model and feature importance at
  the end (``_log_model_and_importance``); :func:`callbacks_patch`: the autolog patch that
  adds the callback to a call's ``callbacks`` argument; :func:`fit_classes`: the estimators
  whose ``fit`` it patches;
- :class:`EarlyStop`, :func:`early_stopping_params`, :func:`early_stopping_metrics`: early
  stopping under one set of names (:meth:`EpochLog.log_early_stopping`: on the run's steps);
- :func:`head_rows`, :func:`pinned_requirements`, :func:`pytorch_flavor_kwargs`: what
  :meth:`mltrail.Trail.log_model` needs besides the model; :func:`copy_to_save` (a copy
  saved in the background), :func:`parameter_counts` (the model's size as params);
  :func:`example_io` (input example and output), :func:`input_rows` (example rows of a
  training call's input: arrays, an ``(x, y)`` tuple, a loader's first batch),
  :func:`packages_of` (the packages a model is made of), :func:`to_numpy` (tensors, frames
  and their dicts and lists as numpy); :func:`send_models_as_files` (with :class:`ModelFile`):
  a flavor's models sent to mltrail's recorder process as the file the flavor writes, so that
  it never imports the framework; :func:`log_weights`: a model that cannot be an MLflow
  Model logged as its weights and class;
- :func:`optimizer_params`, :func:`scheduler_params` (with :func:`torch_setting`): torch
  optimizers' and LR schedulers' settings as params; :func:`learning_rates`: each optimizer's
  current rate as metrics; :func:`loader_batch_size`, :func:`tensor_dataset_digest`: a
  ``DataLoader``'s batch size and the digest of a ``TensorDataset``; :func:`batch_inputs`,
  :func:`forward_example`: the model's input example from a training batch, and its output;
  :func:`log_torch_model`: the final ``nn.Module`` as an MLflow PyTorch model, a copy with the
  best checkpoint's weights when there is one (torch imported only when they are called);
- :func:`by_name`: functions among settings (a custom objective) by name, not address;
  :func:`param_text`: any value as the text of its param, the same in every process (no
  object addresses; SciPy distributions as written);
  :func:`frames_above`: a bounded look at the training call a callback runs inside;
  :func:`calling_object`: the framework's container of callbacks that calls a hook;
- :func:`describe`, :func:`dataset_input`, :func:`fingerprint`: the training data;
  :func:`arrays_digest`: the digest of training data given as arrays of any framework;
  :func:`digest_once`: a digest of an immutable input (a ``DMatrix``) computed once;
  :func:`built_data_digest`: a built data object's rows once, its labels and weights each time;
  :func:`in_memory`: rows held in memory, not a file's path a framework loads itself;
  :func:`fit_arguments`: the data among a patched training call's arguments;
- :func:`importance_plot`, :func:`history_plot`: plots logged as images (PNGs drawn with
  Pillow in milliseconds; :func:`preload_matplotlib`, a historical name, prepares them);
  :func:`log_history`: an optimisation history as an image;
  :func:`preload_modules`: slow imports of what the end of a training needs, started on a
  daemon thread when it starts;
  :func:`confusion_matrix_plot`, :func:`residual_plot`: a classifier's and a regressor's errors;
  :func:`classification_metrics`, :func:`regression_metrics` (:func:`confusion_counts`): their
  standard metrics on given rows, scikit-learn's definitions computed with numpy alone;
  :func:`log_importance`: importance scores as JSON and their plot;
- :class:`Candidate`, :func:`log_candidates`, :func:`results_csv`: a hyperparameter search's
  candidates as child runs, the best first, and its results table; :func:`log_search`: a
  finished search at once (its kind, ``best.<param>``, the table, the candidates);
  :class:`ChildRuns`: one child run per unit of work (a trial), logged at its end or started
  for a training inside it; :class:`SearchRun`: the run of a search whose units report as
  they end (one search at a time, the run kept with the search resumed, each unit logged
  once, the best so far, the units never reported found at the end, the end's status;
  :meth:`SearchRun.enter`, :meth:`SearchRun.run_call`, :meth:`SearchRun.end_after_call`,
  :meth:`SearchRun.end_call`: its lifecycle as the adapter drives it); :func:`value_names`,
  :func:`direction_params`: a search of one or several objectives;
- :func:`provide_runs`: the run that trainings inside a unit of work of the adapter's
  framework (a search's trial) join instead of starting runs of their own;
  :func:`trainings_recorded`: such trainings are recorded under ``autolog`` too;
- :func:`record_beside` (with :func:`can_record_later`, :class:`Pending`): a training that
  logs nothing while it runs recorded beside it, on mltrail's thread (its run opened once it
  ends or has run a while; model and plots not waited for; exit waits for them);
- :class:`FitRecording`: one blocking ``fit`` that logs nothing while it runs recorded as a
  run (params and dataset inputs read before it, the run opened first or the fit recorded
  beside it, the fitted model measured after it, FAILED on its exception); the adapter gives
  the params and what the fitted model logs; :func:`current_fit`: the session of the recorded
  fit this thread runs (fits inside it are no runs of their own);
- :class:`Framework`, :func:`options_for`, :func:`safe_patch` and friends: autolog
  registration (entry-point group ``mltrail.integrations``) and the safe-patch contract;
  :func:`call_with_callback`: a patched training gets the adapter's callback unless it has one;
  :class:`AutologCallbacks`: that callback also for the ``evaluate``/``predict``/``test``
  after the training on the same trainer or model, in the framework's own list of callbacks
  (:meth:`AutologCallbacks.training_patch`, :meth:`AutologCallbacks.later_patch`: the
  patches of a trainer's methods).

A minimal adapter for a framework whose trainer calls ``on_epoch_end(epoch, logs)``::

    from mltrail.adapters import EpochLog, RunSession, exception_safe

    @exception_safe()
    class TrailCallback(framework.Callback):
        def __init__(self, trail=None, **start_run_kwargs):
            self._session = RunSession("myframework", trail, start_run_kwargs)
            self._epochs = EpochLog(self._session)  # follows the session's current run

        def on_train_begin(self, trainer):
            self._session.open().log_params(trainer.config)
            self._session.training_started()
            self._epochs.start()

        def on_epoch_end(self, epoch, logs):
            self._epochs.log(epoch, logs)

        def on_train_end(self, trainer, error=None):
            self._session.end(error)
"""

from __future__ import annotations

from mltrail.autolog.patching import (
    AutologCallbacks,
    call_with_callback,
    in_patched_call,
    live_patch,
    recording,
    safe_patch,
    trainings_recorded,
)
from mltrail.autolog.registry import RUN_OPTIONS, Framework, options_for
from mltrail.errors import MltrailError, strict_mode
from mltrail.recording.boosting import (
    BoostingCall,
    BoostingCallback,
    RoundLoop,
    callbacks_patch,
    continued_from,
    cv_params,
    eval_metrics,
    eval_round,
    eval_rounds,
    find_training_call,
    first_stopped,
    fit_classes,
    stop_outcome,
    written_params,
)
from mltrail.recording.callsite import (
    LIBRARY_PACKAGES,
    called_by_library,
    caller_module,
    calling_object,
    frames_above,
)
from mltrail.recording.checkpoint_files import (
    CheckpointFile,
    CheckpointUploads,
    DeferredSave,
    EpochCheckpoints,
    SaveBudget,
)
from mltrail.recording.checkpoints import (
    CHECKPOINT_POLICIES,
    BestTracker,
    CheckpointEvery,
    CheckpointModel,
    FileWatch,
    SavedFile,
    aliases_for,
    check_policy,
    mode_for,
    stable_copy,
    template_files,
)
from mltrail.recording.datasets import (
    arrays_digest,
    built_data_digest,
    data_digest,
    dataset_input,
    describe,
    digest_once,
    fingerprint,
    fit_arguments,
    in_memory,
    shape_of,
)
from mltrail.recording.deferred import Pending, can_record_later, record_beside
from mltrail.recording.distributed import RunIdHandoff
from mltrail.recording.early_stopping import (
    EarlyStop,
    early_stopping_metrics,
    early_stopping_names,
    early_stopping_params,
)
from mltrail.recording.fit_recording import FitRecording, current_fit
from mltrail.recording.hooks import after_call, exception_safe
from mltrail.recording.model_file import ModelFile, send_models_as_files
from mltrail.recording.models import (
    EXAMPLE_ROWS,
    copy_to_save,
    example_io,
    head_rows,
    input_rows,
    log_weights,
    packages_of,
    parameter_counts,
    pinned_requirements,
    pytorch_flavor_kwargs,
    to_numpy,
)
from mltrail.recording.plots import (
    confusion_matrix_plot,
    history_plot,
    importance_plot,
    log_history,
    log_importance,
    preload_matplotlib,
    residual_plot,
)
from mltrail.recording.preload import preload_modules
from mltrail.recording.sanitize import by_name, param_text
from mltrail.recording.scopes import provide_runs
from mltrail.recording.search import (
    Candidate,
    ChildRuns,
    SearchRun,
    check_max_child_runs,
    direction_params,
    log_candidates,
    log_search,
    results_csv,
    value_names,
)
from mltrail.recording.session import (
    START_RUN_ARGS,
    CopiedBySettings,
    RunSession,
    check_start_run_kwargs,
)
from mltrail.recording.steps import (
    STEP_PREFIX,
    EpochLog,
    GlobalSteps,
    check_every,
    every_n,
    next_free_step,
)
from mltrail.recording.task_metrics import (
    classification_metrics,
    confusion_counts,
    regression_metrics,
)
from mltrail.recording.tensor_training import (
    batch_inputs,
    forward_example,
    learning_rates,
    loader_batch_size,
    log_torch_model,
    optimizer_params,
    scheduler_params,
    tensor_dataset_digest,
    torch_setting,
)
from mltrail.recording.training_call import TrainingCall, TrainingWrapper

__all__ = [
    "CHECKPOINT_POLICIES",
    "EXAMPLE_ROWS",
    "LIBRARY_PACKAGES",
    "RUN_OPTIONS",
    "START_RUN_ARGS",
    "STEP_PREFIX",
    "AutologCallbacks",
    "BestTracker",
    "BoostingCall",
    "BoostingCallback",
    "Candidate",
    "CheckpointEvery",
    "CheckpointFile",
    "CheckpointModel",
    "CheckpointUploads",
    "ChildRuns",
    "CopiedBySettings",
    "DeferredSave",
    "EarlyStop",
    "EpochCheckpoints",
    "EpochLog",
    "FileWatch",
    "FitRecording",
    "Framework",
    "GlobalSteps",
    "MltrailError",
    "ModelFile",
    "Pending",
    "RoundLoop",
    "RunIdHandoff",
    "RunSession",
    "SaveBudget",
    "SavedFile",
    "SearchRun",
    "TrainingCall",
    "TrainingWrapper",
    "after_call",
    "aliases_for",
    "arrays_digest",
    "batch_inputs",
    "built_data_digest",
    "by_name",
    "call_with_callback",
    "callbacks_patch",
    "called_by_library",
    "caller_module",
    "calling_object",
    "can_record_later",
    "check_every",
    "check_max_child_runs",
    "check_policy",
    "check_start_run_kwargs",
    "classification_metrics",
    "confusion_counts",
    "confusion_matrix_plot",
    "continued_from",
    "copy_to_save",
    "current_fit",
    "cv_params",
    "data_digest",
    "dataset_input",
    "describe",
    "digest_once",
    "direction_params",
    "early_stopping_metrics",
    "early_stopping_names",
    "early_stopping_params",
    "eval_metrics",
    "eval_round",
    "eval_rounds",
    "every_n",
    "example_io",
    "exception_safe",
    "find_training_call",
    "fingerprint",
    "first_stopped",
    "fit_arguments",
    "fit_classes",
    "forward_example",
    "frames_above",
    "head_rows",
    "history_plot",
    "importance_plot",
    "in_memory",
    "in_patched_call",
    "input_rows",
    "learning_rates",
    "live_patch",
    "loader_batch_size",
    "log_candidates",
    "log_history",
    "log_importance",
    "log_search",
    "log_torch_model",
    "log_weights",
    "mode_for",
    "next_free_step",
    "optimizer_params",
    "options_for",
    "packages_of",
    "param_text",
    "parameter_counts",
    "pinned_requirements",
    "preload_matplotlib",
    "preload_modules",
    "provide_runs",
    "pytorch_flavor_kwargs",
    "record_beside",
    "recording",
    "regression_metrics",
    "residual_plot",
    "results_csv",
    "safe_patch",
    "scheduler_params",
    "send_models_as_files",
    "shape_of",
    "stable_copy",
    "stop_outcome",
    "strict_mode",
    "template_files",
    "tensor_dataset_digest",
    "to_numpy",
    "torch_setting",
    "trainings_recorded",
    "value_names",
    "written_params",
]
