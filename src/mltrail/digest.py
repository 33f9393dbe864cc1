"""Content digests of local files: the one sha256 that ``checkpoints/index.json``, the
``mltrail.sha256.<prefix>`` tags of model and checkpoint files and ``mltrail which`` agree on."""

from __future__ import annotations

import hashlib
import os

#: Bytes read at a time: large checkpoints are hashed in bounded memory.
BLOCK_SIZE = 1 << 20
#: Run tag ``<prefix><first 16 hex digits of a file's sha256>`` = its artifact path, set for every
#: uploaded checkpoint and model file, so ``mltrail which FILE`` finds the run by content.
SHA256_TAG_PREFIX = "mltrail.sha256."


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's content, as 64 hex digits.

    Raises:
        OSError: when the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(folder: str | os.PathLike[str]) -> str:
    """The sha256 of a folder: of each file's relative path and sha256, in path order.

    Raises:
        OSError: when a file cannot be read.
    """
    digest = hashlib.sha256()
    root = os.fspath(folder)
    for base, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(base, name)
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            digest.update(f"{relative}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()
