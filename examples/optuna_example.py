"""Optuna: add ``TrailCallback`` to ``study.optimize``; the study becomes an MLflow run and each
trial a child run of it, with the LightGBM training inside each trial recorded into it.

    python examples/optuna_example.py            # 30 trials of a LightGBM model, pruned early
    python examples/optuna_example.py --quick    # seconds: 4 trials of a few iterations

What you get: the study's run (sampler, pruner, best value and params as trials finish, the
optimisation history and parameter importances as plots) and one child run per trial with its
params, value, state (COMPLETE, PRUNED, FAIL), intermediate values and the LightGBM metrics of
its training. Run it again with the same ``--storage`` and the study goes on in the same run.
"""

from __future__ import annotations

import argparse

import lightgbm as lgb
import optuna
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from mltrail.integrations.lightgbm import TrailCallback as LightGBMCallback
from mltrail.integrations.optuna import TrailCallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="examples-optuna")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--storage", default=None, help="e.g. sqlite:///optuna.db to resume")
    parser.add_argument("--quick", action="store_true", help="4 trials of a few iterations")
    args = parser.parse_args()
    trials, iterations = (min(args.trials, 4), 5) if args.quick else (args.trials, 100)

    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0)

    def objective(trial: optuna.Trial) -> float:
        params = {
            "objective": "binary",
            "verbose": -1,
            "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, 50),
        }
        train = lgb.Dataset(X_train, label=y_train)
        val = lgb.Dataset(X_val, label=y_val, reference=train)
        scores: dict = {}

        def report(env: lgb.callback.CallbackEnv) -> None:  # intermediate values, pruning
            trial.report(env.evaluation_result_list[0][2], env.iteration)  # val binary_logloss
            if trial.should_prune():
                raise optuna.TrialPruned()

        lgb.train(
            params,
            train,
            iterations,
            valid_sets=[val],
            valid_names=["val"],
            callbacks=[
                LightGBMCallback(experiment=args.experiment, log_model=False, importance=False),
                lgb.record_evaluation(scores),
                report,
            ],
        )
        return scores["val"]["binary_logloss"][-1]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="breast-cancer-lightgbm",
        storage=args.storage,
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_warmup_steps=10),
    )
    callback = TrailCallback(experiment=args.experiment, log_plots=not args.quick)
    study.optimize(objective, n_trials=trials, callbacks=[callback])
    print(f"best value {study.best_value:.4f} with {study.best_params}, run {callback.run_id}")
    print(f"See the run: mltrail show {callback.run_id}")


if __name__ == "__main__":
    main()
