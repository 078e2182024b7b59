"""Read one image file's bytes, safely: regular files only, and at most a capped number of bytes.

* :func:`read_image_bytes` reads a whole file: a FIFO, socket or device named ``x.jpg`` is
  refused without blocking, and a file larger than :func:`max_bytes_limit` is refused.
* :func:`read_head` reads the first bytes of a file through the same checks.
* :func:`read_regular` is the same read for any file a person names (a label file, an undo log).

The cap (``$VSEARCH_MAX_BYTES``, default :data:`DEFAULT_MAX_BYTES`) is read at each call; this
module only reads the environment, never writes it. Failures are :class:`ImageDecodeError`
with a one-line reason.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vsearch.errors import ImageDecodeError, VsearchError

#: The environment variable that sets :func:`max_bytes_limit` (bytes, or with a K/M/G suffix).
MAX_BYTES_ENV = "VSEARCH_MAX_BYTES"
#: Default cap on the bytes read from one image file and on one decoded frame's memory.
#: 256 MiB holds every camera file in use (the largest, uncompressed RAW files from 100 MP
#: sensors, are about 200 MB; a 61 MP JPEG is 30-60 MB) and a 64 MP RGB frame, while a
#: few decode threads at the cap still fit in the memory of a small machine.
DEFAULT_MAX_BYTES: int = 256 * 1024 * 1024

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def max_bytes_limit() -> int:
    """The per-image byte cap: ``$VSEARCH_MAX_BYTES`` when set, else :data:`DEFAULT_MAX_BYTES`.

    The variable takes a number of bytes, optionally with a binary K, M or G suffix
    (``512M``). Read at each call, so a test or a long-lived caller may change it.
    """
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    number, unit = (text[:-1], text[-1].upper()) if text[-1].isalpha() else (text, "")
    shift = {"": 0, "K": 10, "M": 20, "G": 30}.get(unit)
    try:
        value = int(number) << shift if shift is not None else 0
    except ValueError:
        value = 0
    if value <= 0:
        raise VsearchError(f"{MAX_BYTES_ENV} must be a positive number of bytes (e.g. 536870912 or 512M), got {text!r}")
    return value


def read_image_bytes(path: Path, *, max_bytes: int | None = None) -> bytes:
    """The bytes of the image file at ``path``, read safely.

    Only a regular file is read: a FIFO, socket or device (``/dev/zero``) is refused without
    blocking, including one swapped in after a scan saw a regular file there (the file is
    opened non-blocking and checked again with ``fstat``). At most ``max_bytes`` (default:
    :func:`max_bytes_limit`) are read: a larger file, or one that grows past the cap while
    being read, is refused. Raises :class:`ImageDecodeError` with a one-line reason.
    """
    try:
        data = read_regular(path, max_bytes=max_bytes)
    except FileNotFoundError:
        raise ImageDecodeError("file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError("is a folder, not a file") from None
    except OSError as e:
        raise ImageDecodeError(f"unreadable ({os_reason(e)})") from None
    if not data:
        raise ImageDecodeError("empty file")
    return data


def read_regular(path: Path, *, max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file at ``path``, at most ``max_bytes`` (default:
    :func:`max_bytes_limit`): how every image, and every file a person names for vsearch to
    read (label files, undo logs), is read. A FIFO, socket or device is refused without
    blocking, as is a file larger than the cap (:class:`ImageDecodeError`); a missing or
    unreadable file raises its OSError, for the caller to word.
    """
    limit = max_bytes_limit() if max_bytes is None else max_bytes
    # A stat first, so that a device file is never even opened (opening some has effects).
    check_regular(os.stat(path), limit)
    fd = os.open(path, _OPEN_FLAGS)
    with open(fd, "rb", buffering=0) as f:  # unbuffered: read() returns what it reads, no copy
        size = check_regular(os.fstat(fd), limit)
        chunks: list[bytes] = []
        total = 0
        while True:
            # One read of the whole file and one byte more, which finds EOF; a file that
            # grew since the fstat is read on in 1 MiB steps, up to the cap.
            want = size + 1 - total
            chunk = f.read(want if want > 0 else 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise ImageDecodeError(f"file too large (grew past {size_text(limit)} while being read;"
                                       f" raise the limit with {MAX_BYTES_ENV})")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # b"" for an empty file


def read_head(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of a regular file (a FIFO or device is refused without blocking).

    Raises OSError or :class:`ImageDecodeError`.
    """
    check_regular(os.stat(path), max_bytes_limit())
    fd = os.open(path, _OPEN_FLAGS)
    with open(fd, "rb") as f:
        check_regular(os.fstat(fd), max_bytes_limit())
        return f.read(n)


def check_regular(st: os.stat_result, limit: int) -> int:
    """``st``'s size when it is a regular file within ``limit``; else ImageDecodeError."""
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise ImageDecodeError("is a folder, not a file")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special")
        raise ImageDecodeError(f"not a regular file ({kind})")
    if st.st_size > limit:
        raise ImageDecodeError(f"file too large ({size_text(st.st_size)} > limit {size_text(limit)};"
                               f" raise it with {MAX_BYTES_ENV})")
    return st.st_size


def size_text(n: int) -> str:
    """A byte count for a message: ``16.8 MiB``, ``8 MiB``, ``333 bytes``."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


def os_reason(e: OSError) -> str:
    """The short reason in an OSError (``Permission denied``), for a one-line message."""
    return e.strerror or type(e).__name__
