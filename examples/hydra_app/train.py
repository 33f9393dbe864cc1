"""A Hydra app recorded by mltrail: its config, overrides and Hydra's output folder.

    python train.py                                  # one run
    python train.py model=large optimizer.lr=0.05    # overrides: params and mltrail.hydra.overrides
    python train.py -m model=small,large             # a sweep: one parent run, a child per job
    mltrail reproduce RUN_ID                          # reruns a job with its own overrides

The training is a stand-in (a loss that falls with the model's width and the learning rate), so
that the example needs no framework; a real one starts its run the same way, or passes
``trail=`` to an adapter's callback.
"""

import hydra
from omegaconf import DictConfig

import mltrail


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    # The composed config is recorded as params and mltrail/config.yaml: nothing to log by hand.
    with mltrail.start_run(experiment=cfg.experiment) as trail:
        loss = 1.0
        for epoch in range(cfg.epochs):
            loss *= 1.0 - cfg.optimizer.lr * cfg.model.width / (cfg.model.width + 8)
            trail.log_metrics({"loss": loss}, step=epoch)
    return loss


if __name__ == "__main__":
    main()
