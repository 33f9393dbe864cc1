"""Which process of a distributed job may write (only global rank 0), and how a run id gets
back from processes an adapter was copied into."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

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


class RunIdHandoff:
    """A run id passed back from copies of an adapter pickled into spawned processes
    (Lightning's ``ddp_spawn``): the copy that records writes its run's id to a small file that
    the original reads when it is asked for the run.

    The file's folder is made when the object is first pickled (the copies find it on this
    machine) and removed with the original; before that, :meth:`write` and :meth:`read` do
    nothing.
    """

    def __init__(self) -> None:
        self._path: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        if self._path is None:
            folder = tempfile.mkdtemp(prefix="mltrail-handoff-")
            weakref.finalize(self, shutil.rmtree, folder, True)
            self._path = os.path.join(folder, "run")
        return self.__dict__.copy()

    @property
    def in_use(self) -> bool:
        """Whether copies may pass a run id back (the object was pickled)."""
        return self._path is not None

    def write(self, run_id: str | None) -> None:
        """Pass ``run_id`` back (from a copy; in the original it keeps the file current)."""
        if self._path and run_id and os.path.isdir(os.path.dirname(self._path)):
            Path(self._path).write_text(run_id)

    def read(self) -> str | None:
        """The run id a copy passed back last, None before one did."""
        if self._path and os.path.isfile(self._path):
            with contextlib.suppress(OSError):
                return Path(self._path).read_text() or None
        return None
