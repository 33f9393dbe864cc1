"""Passing a run id back from copies of an adapter (mltrail.adapters.RunIdHandoff)."""

from __future__ import annotations

import gc
import os
import pickle

from mltrail.adapters import RunIdHandoff


def test_a_copy_passes_its_run_id_back_to_the_original() -> None:
    original = RunIdHandoff()
    original.write("never-pickled")  # no copy can exist yet: nothing to pass
    assert original.read() is None
    copy = pickle.loads(pickle.dumps(original))  # what a spawned process gets
    assert copy.read() is None
    copy.write("run-of-rank-0")
    assert original.read() == "run-of-rank-0"
    again = pickle.loads(pickle.dumps(original))  # a later copy: the same file, no new folder
    again.write("a-later-run")
    assert original.read() == "a-later-run"
    folder = os.path.dirname(original.__getstate__()["_path"])
    del original
    gc.collect()
    assert not os.path.exists(folder)  # removed with the original
    copy.write("too-late")  # the original is gone: the copy writes nothing
    assert copy.read() is None
