"""The day a photo was taken, from its EXIF header: :func:`exif_date` (cached per process).

Only the file's first bytes are read where that is enough, through the same regular-file
checks and byte cap as :mod:`vsearch.imaging.reading`; no pixel is ever decoded.
"""

from __future__ import annotations

import datetime
import functools
import io
import logging
import os
from pathlib import Path

from PIL import Image

from vsearch.imaging.opening import open_image
from vsearch.imaging.reading import read_head, read_image_bytes

log = logging.getLogger(__name__)

#: Bytes read from the start of a file to find its EXIF capture date. A JPEG's EXIF segment
#: (APP1, at most 64 KiB) comes before the pixels, after at most a few small segments; PNG
#: and WebP keep theirs in a chunk that usually comes early too.
EXIF_HEAD_BYTES = 256 * 1024
#: Capture dates remembered per process (by path, size and mtime: an edited file is read again).
EXIF_CACHE_SIZE = 65_536
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003  # in the Exif IFD: when the picture was taken
_DATETIME = 0x0132  # in IFD0: when the file was last changed; the fallback
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")  # TIFF and most camera RAW files


def exif_date(path: Path) -> datetime.date | None:
    """The day a photo was taken: EXIF DateTimeOriginal, else DateTime; None when it has none.

    Reads the file's header only (:data:`EXIF_HEAD_BYTES`, through the same regular-file
    checks as :func:`~vsearch.imaging.reading.read_image_bytes`) and never decodes a pixel. TIFF-based files, whose
    EXIF may sit anywhere, and containers that Pillow cannot open from their first bytes
    (a large WebP or HEIF) are read whole (within :func:`~vsearch.imaging.reading.max_bytes_limit`). A file that cannot
    be read, has no EXIF, or holds a date that is not one (``0000:00:00``) gives None. A PNG's
    EXIF chunk after its pixel data is not seen. Results are cached per process, by path,
    size and mtime.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _exif_date_cached(os.fspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=EXIF_CACHE_SIZE)
def _exif_date_cached(path: str, size: int, mtime_ns: int) -> datetime.date | None:
    del size, mtime_ns  # part of the cache key only
    try:
        head = read_head(Path(path), EXIF_HEAD_BYTES)
        if len(head) < EXIF_HEAD_BYTES:  # the whole file
            return _date_in(head)
        if head[:4] in _TIFF_MAGIC:
            return _date_in(read_image_bytes(Path(path)))
        try:
            return _date_in(head)
        except Exception:  # noqa: BLE001 - a container Pillow cannot open cut short (WebP, HEIF)
            return _date_in(read_image_bytes(Path(path)))
    except Exception as e:  # noqa: BLE001 - a bad header means "no date", never a failed query
        log.debug("no capture date for %s: %s", path, " ".join(str(e).split()) or type(e).__name__)
        return None


def _date_in(data: bytes) -> datetime.date | None:
    """The capture day in an image file's (possibly truncated) bytes; Pillow reads headers only."""
    with open_image(io.BytesIO(data)) as im:
        raw_exif = im.info.get("exif")
        if raw_exif:
            exif = Image.Exif()
            exif.load(raw_exif)
        elif im.format == "TIFF":
            exif = im.getexif()  # tags from the file's IFDs; no pixel is read
        else:
            return None  # (PNG's getexif would decode the whole image to look for a late chunk)
        value = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    return _parse_exif_date(value)


def _parse_exif_date(value: object) -> datetime.date | None:
    """``2024:05:01 10:20:30`` (EXIF's form; ``-`` separators accepted too) -> that day."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    text = value.strip().strip("\x00")[:10].replace("-", ":")
    try:
        year, month, day = (int(x) for x in text.split(":"))
        return datetime.date(year, month, day)
    except ValueError:  # blank, "0000:00:00", or not a date at all
        return None
