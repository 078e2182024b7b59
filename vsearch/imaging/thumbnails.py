"""Thumbnails every vsearch page shows (the gallery, the review and evaluation reports, the
served page): decoded with the same safe decoder as indexing (EXIF orientation, pixel cap),
encoded as one JPEG quality.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from vsearch.errors import ImageDecodeError

#: The longest side of a thumbnail, in pixels, unless a caller asks for another.
THUMB_SIDE = 256
#: The JPEG quality of every thumbnail.
JPEG_QUALITY = 85

__all__ = ["JPEG_QUALITY", "THUMB_SIDE", "data_uri", "jpeg_bytes", "load_thumbnail", "thumbnail"]


def load_thumbnail(path: Path | bytes, side: int = THUMB_SIDE) -> Any:
    """A Pillow RGB thumbnail no larger than ``side`` x ``side``, decoded with the same safe
    decoder as indexing from a file or its bytes; raises :class:`ImageDecodeError` when it
    cannot be read."""
    from vsearch.imaging.images import RESAMPLE, load_image  # Pillow: only a caller that shows pictures pays for it

    img = load_image(path if isinstance(path, bytes) else Path(path), min_side=side)
    img.thumbnail((side, side), RESAMPLE)
    return img


def thumbnail(path: Path, side: int = THUMB_SIDE) -> Any:
    """:func:`load_thumbnail`, or None if the file is unreadable (the page shows a blank)."""
    try:
        return load_thumbnail(path, side)
    except ImageDecodeError:
        return None


def jpeg_bytes(img: Any) -> bytes:
    """A Pillow image as the JPEG (:data:`JPEG_QUALITY`) every vsearch page shows."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def data_uri(img: Any) -> str:
    """A Pillow image as an inline ``data:image/jpeg;base64,...`` URI."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes(img)).decode("ascii")
