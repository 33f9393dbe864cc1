"""Which process of a distributed job may write: only global rank 0."""

from __future__ import annotations

import os

# Global rank variables set by torchrun/torch.distributed, SLURM, MPI launchers; never LOCAL_RANK,
# which is 0 on every node of a multi-node job.
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "JSM_NAMESPACE_RANK")


def global_rank() -> int:
    """This process's global rank: torch.distributed when initialised, else the launcher's."""
    try:
        import sys

        dist = sys.modules.get("torch.distributed")
        if dist is not None and dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:
        pass
    for name in _RANK_VARIABLES:
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                continue
    return 0


def is_rank_zero() -> bool:
    return global_rank() == 0
