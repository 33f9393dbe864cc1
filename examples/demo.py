"""mltrail end to end (``make demo``): git for code, DVC for data, MLflow for runs, glued.

In a fresh git + DVC workspace under ``demo-output/`` the demo

1. commits a training script and a dataset tracked with ``dvc add``;
2. trains (XGBoost with mltrail's ``TrailCallback``): one MLflow run with the commit, the dirty
   flag and the dataset's DVC hash;
3. changes the data (``dvc add`` again, commit) and trains again;
4. finds each run from its commit (``mltrail runs --commit``), shows one run in full
   (``mltrail show``) and compares the two (``mltrail diff``): the data versions differ.

Everything stays in ``demo-output/`` (the MLflow store, its artifacts, the workspace) and the
last lines print the commands that restore the first run's code and data and open the MLflow UI
on the store, each runnable as printed in a fresh shell. Run it again to start over.

    python examples/demo.py [--output DIR] [--rounds N] [--ui-port PORT]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MARKER = ".mltrail-demo"  # only a folder the demo made is ever deleted by it
EXPERIMENT = "demo"

TRAIN = '''\
"""Train a classifier on data/dataset.csv; mltrail records the run."""

import sys

import pandas as pd
import xgboost as xgb

from mltrail.integrations.xgboost import TrailCallback

data = pd.read_csv("data/dataset.csv")
X, y = data.drop(columns="label"), data["label"]
split = int(len(data) * 0.8)
train = xgb.DMatrix(X[:split], label=y[:split])
val = xgb.DMatrix(X[split:], label=y[split:])

params = {"objective": "binary:logistic", "eval_metric": ["logloss", "error"], "max_depth": 3}
callback = TrailCallback(experiment="demo")
booster = xgb.train(
    params,
    train,
    num_boost_round=int(sys.argv[1]) if len(sys.argv) > 1 else 40,
    evals=[(train, "train"), (val, "val")],
    callbacks=[callback],
    verbose_eval=False,
)
accuracy = ((booster.predict(val) > 0.5) == y[split:]).mean()
print(f"validation accuracy {accuracy:.3f}")
print(f"run {callback.run_id}")
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "demo-output")
    parser.add_argument("--rounds", type=int, default=40, help="boosting rounds per training")
    parser.add_argument("--ui-port", type=int, default=5000, help="port of the printed mlflow ui")
    args = parser.parse_args()
    output = args.output.resolve()
    workspace = output / "workspace"
    store = output / "mlflow.db"
    uri = f"sqlite:///{store}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "GIT_AUTHOR_NAME": "mltrail demo",
        "GIT_AUTHOR_EMAIL": "demo@example.com",
        "GIT_COMMITTER_NAME": "mltrail demo",
        "GIT_COMMITTER_EMAIL": "demo@example.com",
    }
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    fresh_output(output)
    create_experiment(uri, output / "artifacts")

    def run(*command: str, show: bool = True, check: bool = True) -> str:
        if show:
            print(f"  $ {shell(command)}")
        done = subprocess.run(list(command), cwd=workspace, env=env, capture_output=True, text=True)
        if check and done.returncode != 0:
            sys.exit(
                f"demo: `{shell(command)}` failed ({done.returncode}):\n"
                + (done.stderr or done.stdout)[-3000:]
            )
        if show and done.stdout.strip():
            print(textwrap.indent(done.stdout.rstrip(), "    "))
        return done.stdout

    def mltrail(*args: str) -> str:
        print(f"  $ mltrail {shell(args)}")
        out = run(sys.executable, "-m", "mltrail.cli", *args, show=False)
        print(textwrap.indent(out.rstrip(), "    "))
        return out

    def train() -> str:
        out = run("python", "train.py", str(args.rounds))
        return re.search(r"^run (\w+)$", out, re.MULTILINE).group(1)  # type: ignore[union-attr]

    # `python`, `dvc` and `mlflow` in the commands below are this environment's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])

    heading("1. A workspace: git for the code, DVC for the data")
    workspace.mkdir()
    run("git", "init", "-q", "-b", "main")
    run("dvc", "init", "-q")
    (workspace / "train.py").write_text(TRAIN)
    write_dataset(workspace / "data" / "dataset.csv", rows=400, seed=0)
    run("dvc", "add", "-q", "data/dataset.csv")
    run("git", "add", ".")
    run("git", "commit", "-q", "-m", "Training script and data v1 (400 rows)")

    heading("2. Train on data v1")
    first = train()

    heading("3. New data: regenerate it, `dvc add` again, commit")
    write_dataset(workspace / "data" / "dataset.csv", rows=800, seed=1)
    run("dvc", "add", "-q", "data/dataset.csv")
    run("git", "add", "data/dataset.csv.dvc")
    run("git", "commit", "-q", "-m", "Data v2 (800 rows)")

    heading("4. Train on data v2")
    second = train()

    heading("5. From a commit to its runs")
    mltrail("runs", "--commit", "HEAD~1")
    mltrail("runs", "--commit", "HEAD")

    heading("6. Everything one run recorded")
    mltrail("show", second)

    heading("7. The two runs side by side: same code path, two data versions")
    mltrail("diff", first, second)

    heading("Done")
    into = output / "v1"
    checkout = (*tool("mltrail"), "checkout", first, "--into", str(into), "--tracking-uri", uri)
    ui = (*tool("mlflow"), "ui", "--backend-store-uri", uri, "--port", str(args.ui_port))
    print(
        textwrap.dedent(f"""\
        Runs {first} (data v1) and {second} (data v2) are in the MLflow store
          {store}
        with their artifacts in {output / "artifacts"}, and the workspace in
          {workspace}
        Get data v1 back as it was for the first run, in a new worktree (paste into a shell):
          cd {shell((str(workspace),))}
          {shell(checkout)}
        Browse the runs in the MLflow UI:
          {shell((*ui, "--workers", "1"))}
        then open http://127.0.0.1:{args.ui_port} (experiment "{EXPERIMENT}").
        To run the commands above marked $ yourself:
          cd {shell((str(workspace),))}
          {activate_line()}
          export MLFLOW_TRACKING_URI={shell((uri,))}
        """)
    )
    return 0


def activate_line() -> str:
    """The line that puts this environment's commands (python, dvc, mltrail) first on PATH."""
    folder = Path(sys.executable).parent
    if (folder / "activate").is_file():
        return shell((".", str(folder / "activate")))
    return f'export PATH={shlex.quote(str(folder))}:"$PATH"'


def tool(name: str) -> tuple[str, ...]:
    """This environment's ``name`` command by its full path: no activated venv needed."""
    script = Path(sys.executable).parent / name
    if script.is_file():
        return (str(script),)
    module = {"mltrail": "mltrail.cli"}.get(name, name)
    return (sys.executable, "-m", module)


def shell(command: tuple[str, ...]) -> str:
    """The command as one would type it (``HEAD~1`` needs no quotes)."""
    return " ".join(a if re.fullmatch(r"[\w@%+=:,./~^-]+", a) else shlex.quote(a) for a in command)


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


def fresh_output(output: Path) -> None:
    if output.exists():
        if not (output / MARKER).exists():
            sys.exit(f"demo: {output} exists and was not made by the demo; choose --output.")
        shutil.rmtree(output)
    output.mkdir(parents=True)
    (output / MARKER).write_text("made by examples/demo.py; deleted when the demo runs again\n")


def create_experiment(uri: str, artifacts: Path) -> None:
    """The experiment keeps its artifacts in demo-output/, out of the git workspace; it is a
    model-training experiment, as those mltrail creates are."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no store-creation chatter
    from mlflow.tracking import MlflowClient

    from mltrail.store import EXPERIMENT_TAGS

    MlflowClient(uri).create_experiment(
        EXPERIMENT, artifact_location=artifacts.as_uri(), tags=EXPERIMENT_TAGS
    )


def write_dataset(path: Path, rows: int, seed: int) -> None:
    """A synthetic binary classification table: 5 features and a label."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 5))
    weights = np.array([1.5, -2.0, 0.7, 0.0, 1.0])
    label = (features @ weights + rng.normal(scale=0.8, size=rows) > 0).astype(int)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "f0,f1,f2,f3,f4,label"
    table = np.column_stack([features.round(5), label])
    np.savetxt(path, table, delimiter=",", header=header, comments="", fmt=["%.5f"] * 5 + ["%d"])


if __name__ == "__main__":
    sys.exit(main())
