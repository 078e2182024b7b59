"""Atomic file writes: a temporary name in the same folder, fsync, rename, fsync the folder.

Every file vsearch writes (index files, exported models, galleries, reports) goes through
:func:`replacing` (or :func:`open_replacing` / :func:`write_bytes`), so a crash or kill mid-write
leaves the old file or none, never half of one. Leftover temporaries are named
``.NAME.PID.tmp``; the index's writer deletes them on open.

Every byte written through :func:`open_replacing` passes through :func:`write_some`, and every
fsync through :func:`sync`: the two calls a fault-injection test replaces to make each write
fail in turn (ENOSPC, EIO). An OSError that a full or failing disk or a missing permission
causes becomes one :class:`~vsearch.errors.IndexWriteError` naming the file, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vsearch.errors import IndexWriteError

#: OSErrors that say "this disk cannot take the write", as opposed to a bug.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def temp_name(path: Path) -> Path:
    """The temporary sibling of ``path`` that this process writes before the rename."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_error(exc: OSError, path: Path | str) -> IndexWriteError | None:
    """The user-facing error for an OSError met while writing ``path``, or None if it is no
    disk or permission problem (then it is a bug, and the caller re-raises it)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return IndexWriteError(f"no space left on device writing {path}; free some space and run the command again")
    if exc.errno == errno.EIO:
        return IndexWriteError(f"input/output error writing {path} (a failing disk or a lost network mount?)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return IndexWriteError(f"permission denied writing {path}")
    if exc.errno == errno.EFBIG:
        return IndexWriteError(f"file too large writing {path} for this file system")
    return None


@contextlib.contextmanager
def disk_errors(path: Path | str) -> Iterator[None]:
    """Turn a disk-full, I/O or permission OSError raised in the block into an IndexWriteError."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        raise write_error(exc, path) from None  # type: ignore[misc]  # never None for a disk errno


def write_some(fh: BinaryIO, data: bytes | memoryview) -> None:
    """Write ``data`` to an open file: the single call every buffered write goes through."""
    fh.write(data)


def sync(fd: int) -> None:
    """fsync one file descriptor (a seam for fault injection, like :func:`write_some`)."""
    os.fsync(fd)


class _Out:
    """A write-only file object whose every write goes through :func:`write_some`."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh

    def write(self, data: bytes | memoryview) -> int:
        write_some(self._fh, data)
        return len(data)

    def flush(self) -> None:
        self._fh.flush()


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block has written it, make it ``path``.

    If the block raises, the temporary file is removed and ``path`` is left as it was; a full
    disk, I/O or permission error becomes :class:`~vsearch.errors.IndexWriteError`.
    """
    tmp = temp_name(path)
    try:
        with disk_errors(path):
            yield tmp
            with open(tmp, "rb+") as fh:
                sync(fh.fileno())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def open_replacing(path: Path) -> Iterator[_Out]:
    """:func:`replacing`, with the temporary file opened for buffered binary writes."""
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        yield _Out(fh)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with open_replacing(path) as out:
        out.write(data)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries: the rename itself must reach the disk for a power cut not to undo it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def append_line(path: Path, line: bytes) -> None:
    """Append one record to an append-only log (undo logs, marks) and fsync it before returning.

    A log cannot be replaced whole without losing what a crash left in it, so its unit of
    atomicity is the line: a reader ignores a torn last line, and this writer starts a new line
    after one. The first line also fsyncs the folder, so the new file's name survives a power cut.
    """
    created = not path.exists()
    with disk_errors(path), open(path, "ab+") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() and (fh.seek(-1, os.SEEK_END), fh.read(1))[1] != b"\n":
            write_some(fh, b"\n")  # after a torn line, whose reader skips it
        write_some(fh, line.rstrip(b"\n") + b"\n")
        fh.flush()
        sync(fh.fileno())
    if created:
        fsync_dir(path.parent)

