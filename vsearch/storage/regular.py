"""Read a file of the index folder the way images and label files are read: regular files only,
and at most a bounded number of bytes.

A FIFO in place of ``meta.json`` or of a side log (marks, the page's old judgments) would make a
plain ``read_bytes()`` wait forever for a writer, and a device such as ``/dev/zero`` would fill
the memory. :func:`read_regular` refuses both without blocking (``O_NONBLOCK``, then ``fstat``
on what was opened, so a file swapped in after the first look is caught too), and refuses a
file larger than its limit. The storage layer's twin of ``vsearch.imaging.reading``, which
storage may not import.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["MAX_SIDE_BYTES", "NotRegularError", "TooLargeError", "read_regular", "regular_problem",
           "require_regular"]

#: The most bytes a side file (meta.json, a marks or judgments log) is read: far more than any
#: holds (meta.json is a few KB; a million marks are about 200 MB), far less than a machine's memory.
MAX_SIDE_BYTES = 256 * 1024 * 1024

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class NotRegularError(OSError):
    """What stands at the path is a folder, FIFO, socket or device, not a file; its message says which."""


class TooLargeError(OSError):
    """The file holds more bytes than the reader's limit."""


def regular_problem(st: os.stat_result) -> str | None:
    """What keeps ``st`` from being read as a file (``a FIFO``...), or None for a regular file."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")


def _check(st: os.stat_result, limit: int | None) -> int:
    kind = regular_problem(st)
    if kind is not None:
        raise NotRegularError(f"not a regular file ({kind})")
    if limit is not None and st.st_size > limit:
        raise TooLargeError(f"too large ({st.st_size} bytes; a file here holds at most {limit})")
    return st.st_size


def read_regular(path: Path, *, limit: int | None = MAX_SIDE_BYTES) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` (None: no limit).

    Raises :class:`NotRegularError` for a folder, FIFO, socket or device (never opening a
    device, never waiting on a FIFO), :class:`TooLargeError` past the limit, and the OSError of
    a missing or unreadable file (``FileNotFoundError``...), for the caller to word. The two
    are OSErrors, whose ``strerror`` is None and whose ``str()`` is the reason.
    """
    _check(os.stat(path), limit)  # a stat first: a device file is never even opened
    fd = os.open(path, _OPEN_FLAGS)
    with open(fd, "rb", buffering=0) as f:
        size = _check(os.fstat(fd), limit)
        chunks: list[bytes] = []
        total = 0
        while True:
            want = size + 1 - total  # the whole file and one byte more, which finds EOF
            chunk = f.read(want if want > 0 else 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if limit is not None and total > limit:
                raise TooLargeError(f"too large (grew past {limit} bytes while being read)")
    return b"".join(chunks)


def require_regular(path: Path) -> None:
    """Refuse what is not a regular file at ``path`` before a reader that would block on a FIFO
    or open a device (``np.load``, SQLite) is given it: :class:`NotRegularError`, or the OSError
    of a missing or unreadable path."""
    kind = regular_problem(os.stat(path))
    if kind is not None:
        raise NotRegularError(f"not a regular file ({kind})")
