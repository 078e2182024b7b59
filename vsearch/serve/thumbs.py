"""A bounded on-disk thumbnail cache in the index folder (``thumbs/``).

A thumbnail is keyed by its image's content digest and size, so a renamed photo keeps its
thumbnail and an edited one gets a new one. A thumbnail is made only from bytes that have that
digest (read once, hashed, then decoded): a file edited after the caller checked it can never
put its picture under another content's name. The cache is capped in bytes: after a write that
takes it over the cap, the least recently used files (by modification time, which a hit
refreshes) go until it is under 80 % of the cap.

The page asks for many thumbnails at once, from several threads, and two indexed files with the
same bytes share one thumbnail: one thread makes a given thumbnail while the others wait for it
(the atomic write's temporary name is per process, so two writers of one file would collide).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from vsearch import atomic
from vsearch.api import bytes_digest
from vsearch.imaging.reading import read_image_bytes
from vsearch.imaging.thumbnails import THUMB_SIDE, jpeg_bytes, load_thumbnail

THUMBS_DIR = "thumbs"
#: Default cap on the cache's size on disk.
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024


class ThumbCache:
    """Thumbnails of indexed images, made on demand from the file on disk."""

    def __init__(self, index_dir: Path, *, cap_bytes: int = DEFAULT_CACHE_BYTES, side: int = THUMB_SIDE) -> None:
        self.folder = Path(index_dir) / THUMBS_DIR
        self.cap_bytes = cap_bytes
        self.side = side
        self._guard = threading.Lock()  # over _making, and over trimming
        self._making: dict[str, threading.Lock] = {}  # thumbnail name -> its maker's lock

    def get(self, image: Path, digest: str) -> bytes:
        """The JPEG thumbnail of ``image`` (whose content digest is ``digest``), made if missing.

        Raises :class:`~vsearch.errors.VsearchError` when the image cannot be read or decoded,
        and LookupError when its bytes do not have the content digest ``digest`` (any more).
        """
        path = self.folder / f"{digest}-{self.side}.jpg"
        data = _read(path)
        if data:
            return data
        with self._guard:
            making = self._making.setdefault(path.name, threading.Lock())
        try:
            with making:
                data = _read(path)  # made by the thread this one waited for
                if not data:
                    data = self._make(image, digest)
                    self.folder.mkdir(exist_ok=True)
                    atomic.write_bytes(path, data)
        finally:  # made or not (a file that cannot be read, or holds other content now)
            with self._guard:
                self._making.pop(path.name, None)  # a later miss finds the file (or makes it again)
        with self._guard:
            self._trim()
        return data

    def _make(self, image: Path, digest: str) -> bytes:
        data = read_image_bytes(image)
        if bytes_digest(data) != digest:
            raise LookupError(f"{image} no longer holds {digest}")
        return jpeg_bytes(load_thumbnail(data, self.side))

    def size(self) -> int:
        """Bytes the cache holds now."""
        return sum(e.stat().st_size for e in _entries(self.folder))

    def _trim(self) -> None:
        entries = []
        for e in _entries(self.folder):
            with contextlib.suppress(OSError):  # gone meanwhile (another process trimming)
                st = e.stat()
                entries.append((st.st_mtime_ns, st.st_size, Path(e.path)))
        total = sum(size for _, size, _ in entries)
        if total <= self.cap_bytes:
            return
        for _, size, path in sorted(entries):
            if total <= self.cap_bytes * 0.8:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return [e for e in it if e.is_file() and e.name.endswith(".jpg")]
    except OSError:
        return []


def _read(path: Path) -> bytes | None:
    """A cached thumbnail's bytes (its use noted), or None when there is none."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data:
        with contextlib.suppress(OSError):
            os.utime(path)  # a hit counts as a use
    return data or None
