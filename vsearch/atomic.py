"""Atomic file writes: a temporary name in the same folder, fsync, rename, fsync the folder.

Every file vsearch writes (index files, exported models, galleries, reports) goes through
:func:`replacing` (or :func:`open_replacing` / :func:`write_bytes`), so a crash or kill mid-write
leaves the old file or none, never half of one. An output file the user names (a gallery, a
report, an export) goes through :func:`write_output`, which does the same for a file but writes
a FIFO or a device such as ``/dev/null`` in place: renaming over one would replace it. Leftover temporaries are named
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
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vsearch.errors import IndexWriteError, VsearchError

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


#: How long :func:`write_output` waits for a FIFO's reader to open it before it gives up.
FIFO_WAIT_S = 10.0


def write_output(path: Path, data: bytes) -> Path:
    """Write an output file the user named (a gallery, a report, an export); returns the path.

    A regular file (or a new name) is replaced atomically, as by :func:`write_bytes`; through a
    symbolic link, the file it leads to is replaced and the link stays. A FIFO or a character
    device (``/dev/null``, a terminal, ``/dev/stdout``) cannot be replaced without breaking what
    reads it, so it is written in place; a FIFO must find its reader within :data:`FIFO_WAIT_S`.
    A folder, a block device or a socket is refused. Every failure is one
    :class:`~vsearch.errors.VsearchError` naming the file.
    """
    path = Path(path).expanduser()
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise VsearchError(f"cannot write {path}: {exc.strerror or exc}") from None
    if st is not None and (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)):
        _write_in_place(path, data)
        return path
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a block device" if stat.S_ISBLK(st.st_mode) \
            else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file"
        raise VsearchError(f"cannot write {path}: it is {kind}; give a file name")
    target = path.resolve() if path.is_symlink() else path  # the link stays; its file is replaced
    if not target.parent.is_dir():
        raise VsearchError(f"cannot write {path}: folder {target.parent} does not exist")
    try:
        write_bytes(target, data)
    except OSError as exc:  # a name too long, a read-only folder that is no disk error, ...
        raise VsearchError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _write_in_place(path: Path, data: bytes) -> None:
    """Write ``data`` into the FIFO or character device at ``path`` (no temporary, no rename)."""
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    deadline = time.monotonic() + FIFO_WAIT_S
    try:
        while True:
            try:
                # Non-blocking, so a FIFO nobody reads fails (ENXIO) instead of hanging the open.
                fd = os.open(path, flags)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO or not stat.S_ISFIFO(os.stat(path).st_mode):
                    raise
                if time.monotonic() > deadline:
                    raise VsearchError(f"cannot write {path}: it is a FIFO and nothing opened it for reading "
                                       f"within {FIFO_WAIT_S:.0f} s") from None
                time.sleep(0.05)
        with open(fd, "wb") as fh:
            mode = os.fstat(fd).st_mode
            if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):  # swapped since the stat: never write into it
                raise VsearchError(f"cannot write {path}: it changed while being opened; try again")
            os.set_blocking(fd, True)  # a full pipe waits for its reader
            with disk_errors(path):
                write_some(fh, data)
                fh.flush()
    except BrokenPipeError:
        raise VsearchError(f"cannot write {path}: its reader closed it") from None
    except OSError as exc:
        raise VsearchError(f"cannot write {path}: {exc.strerror or exc}") from None


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

