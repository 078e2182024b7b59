"""Atomic file writes: a temporary name in the same folder, fsync, rename, fsync the folder.

Every file vsearch writes (index files, exported models, galleries, reports) goes through
:func:`replacing`, so a crash or kill mid-write leaves the old file or none, never half of one.
Leftover temporaries are named ``.NAME.PID.tmp``; the index's writer deletes them on open.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def temp_name(path: Path) -> Path:
    """The temporary sibling of ``path`` that this process writes before the rename."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block has written it, make it ``path``.

    If the block raises, the temporary file is removed and ``path`` is left as it was.
    """
    tmp = temp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries: the rename itself must reach the disk for a power cut not to undo it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
