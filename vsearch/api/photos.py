"""What the page's large view says of one photo: :func:`photo_details` (its size in bytes and
pixels, its format and when it was taken), read from the file's header without decoding it."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from vsearch.api.common import PathLike
from vsearch.errors import ImageDecodeError, VsearchError

__all__ = ["PhotoDetails", "photo_details"]


@dataclass(frozen=True)
class PhotoDetails:
    """One photo as its file and header say: ``bytes`` on disk, ``width`` x ``height`` pixels
    and ``format`` (Pillow's name) as the header claims (None when it cannot be read), and
    ``taken``, EXIF DateTimeOriginal (None when the file does not say)."""

    bytes: int
    width: int | None
    height: int | None
    format: str | None
    taken: datetime.datetime | None


def photo_details(path: PathLike) -> PhotoDetails:
    """The :class:`PhotoDetails` of the image file ``path``; no pixel is decoded. Raises
    :class:`~vsearch.errors.VsearchError` when the file cannot be read at all (gone, a folder)."""
    from vsearch.imaging import images  # Pillow: only a caller that reads headers pays for it
    from vsearch.imaging.provenance import read_provenance

    path = Path(path)
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise VsearchError(f"cannot read {path}: {exc.strerror or exc}") from None
    width: int | None = None
    height: int | None = None
    fmt: str | None = None
    try:
        header = images.read_header(path)
        width, height, fmt = int(header.width), int(header.height), header.format
    except ImageDecodeError:  # a header Pillow cannot read still has a size and maybe a date
        pass
    return PhotoDetails(bytes=size, width=width, height=height, format=fmt, taken=read_provenance(path).taken)
