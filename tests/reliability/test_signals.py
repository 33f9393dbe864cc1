"""SIGINT and SIGTERM in the middle of an epoch of a real training process with an adapter.

The parent waits until the child has trained into its second epoch, sends the signal, and then
checks what a user finds in MLflow: the run KILLED, with every step-level point logged before
the signal and the finished epoch's metrics (nothing queued was lost), within the flush budget.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import python_env

SIGNAL_AT_STEP = 30  # 20 batches per epoch: the middle of the second epoch

LIGHTNING = """
import time
import torch
import lightning.pytorch as L
from torch.utils.data import DataLoader, TensorDataset
from mltrail.integrations.lightning import TrailCallback

class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

class Announce(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        print(f"step {trainer.global_step}", flush=True)
        time.sleep(0.03)

x = torch.randn(80, 3, generator=torch.Generator().manual_seed(0))
data = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=4)
callback = TrailCallback(experiment="signals", log_every_n_steps=1, checkpoints="none",
                         log_model=False, system_metrics=False, capture=False)
trainer = L.Trainer(max_epochs=100, callbacks=[callback, Announce()], logger=False,
                    enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, accelerator="cpu")
trainer.fit(Tiny(), data)
"""

KERAS = """
import time
import keras
import numpy as np
from mltrail.integrations.keras import TrailCallback

class Announce(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        print(f"step {int(self.model.optimizer.iterations)}", flush=True)
        time.sleep(0.03)

x = np.random.default_rng(0).normal(size=(80, 3)).astype("float32")
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")
callback = TrailCallback(experiment="signals", log_every_n_batches=1, checkpoints="none",
                         log_model=False, system_metrics=False, capture=False)
model.fit(x, x.sum(axis=1, keepdims=True), batch_size=4, epochs=100, verbose=0,
          callbacks=[callback, Announce()])
"""

# Each signal once, each through a different adapter (the other two pairs behave the same and
# cost 20 s each): Lightning's own SIGTERM handler is chained after mltrail's, Keras's fit sees
# the KeyboardInterrupt.
CASES = {
    "lightning-SIGTERM": (LIGHTNING, signal.SIGTERM),
    "keras-SIGINT": (KERAS, signal.SIGINT),
}


@pytest.mark.parametrize("case", list(CASES))
def test_signal_mid_epoch_ends_the_run_killed_and_flushed(
    case: str, client, tmp_path: Path
) -> None:
    code, signum = CASES[case]
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(code))
    env = python_env(MLTRAIL_STRICT="0", MLTRAIL_FLUSH_TIMEOUT="10", KERAS_BACKEND="torch")
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    last = -1
    for line in process.stdout:
        last = int(line.split()[1])
        if last >= SIGNAL_AT_STEP:
            process.send_signal(signum)
            signalled = time.monotonic()
            break
    stderr = process.communicate(timeout=120)[1]
    exit_seconds = time.monotonic() - signalled
    assert last >= SIGNAL_AT_STEP, stderr
    assert exit_seconds < 10 + 5, exit_seconds  # the flush budget, plus interpreter exit

    experiment = client.get_experiment_by_name("signals")
    [run] = client.search_runs([experiment.experiment_id], f"tags.`mltrail.pid` = '{process.pid}'")
    assert run.info.status == "KILLED", stderr
    expected_type = "KeyboardInterrupt" if signum == signal.SIGINT else "SIGTERM"
    assert run.data.tags["mltrail.exception.type"] == expected_type
    # flushed: every step-level point logged before the signal reached the store
    [step_key] = [k for k in run.data.metrics if k.startswith("step/")]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, step_key)]
    assert set(range(1, last + 1)) <= set(steps), (last, steps)
    assert len(steps) == len(set(steps))
    # and the first, finished epoch is there at step 0
    epoch_keys = [k for k in run.data.metrics if "loss" in k and not k.startswith("step/")]
    assert epoch_keys, run.data.metrics
    for key in epoch_keys:
        assert 0 in [m.step for m in client.get_metric_history(run.info.run_id, key)], key
