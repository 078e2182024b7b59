"""Identify an image with Pillow (read its header, decode nothing), leaving Pillow's process-wide settings alone.

Two process-wide settings of Pillow stand in the way of a decoder with its own limits, and
this module changes neither:

* ``PIL.Image.MAX_IMAGE_PIXELS``, Pillow's decompression-bomb limit. ``Image.open`` checks
  it as soon as it has read a header: it warns between 1x and 2x the limit and raises past
  2x, before a caller can see the size or ask for a JPEG draft. It belongs to the whole
  process (every library in it, every thread), so vsearch neither switches it off nor
  changes it around a decode (that would race between decode threads). Instead
  :func:`open_image` identifies the file through the same plugin registry ``Image.open``
  uses, without ``Image.open``'s size check at the end, and the decoder
  (:mod:`vsearch.imaging.images`) checks the size against vsearch's own caps before any
  pixel is decoded. A few plugins check Pillow's limit again themselves while they read
  (TIFF and GIF frames, WebP canvases); those checks keep the process's setting, and the
  decoder turns their refusal into a one-line :class:`~vsearch.errors.ImageDecodeError`.
* Pillow's plugin registry. HEIF/HEIC support comes from pillow_heif, whose opener is
  registered in that registry, for the whole process (it is the only way pillow_heif offers).
  :func:`register_heif` does it at most once, and only when a HEIF file is met: importing
  vsearch registers nothing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
import threading
from dataclasses import dataclass
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from PIL import Image, ImageFile, UnidentifiedImageError

from vsearch.errors import ImageDecodeError
from vsearch.imaging.reading import check_regular, max_bytes_limit, os_reason

log = logging.getLogger(__name__)

#: The file name suffixes of HEIF files: meeting one registers the HEIF opener before reading.
HEIF_SUFFIXES = frozenset({".heic", ".heif", ".hif"})

_heif_lock = threading.Lock()
_heif_registered = False

# What a plugin raises for "not my format" (as Image.open treats them).
_NOT_THIS_FORMAT = (SyntaxError, IndexError, TypeError, struct.error)


def register_heif() -> bool:
    """Register pillow_heif's HEIF/HEIC opener with Pillow, once; True when this call registered it.

    The registration is process-wide (Pillow's plugin registry is one per process), so it is
    done lazily: when the decoder first meets a ``.heic``/``.heif`` name or bytes no other
    opener knows. Importing pillow_heif also costs ~40 ms, and most folders hold no HEIF.
    A caller that opens files with ``PIL.Image.open`` itself and wants HEIF read calls this
    first. Without pillow_heif installed, it registers nothing and returns False.
    """
    global _heif_registered
    with _heif_lock:
        if _heif_registered:
            return False
        try:
            import pillow_heif
        except ImportError:
            log.debug("pillow_heif not installed: HEIC/HEIF files cannot be read")
            _heif_registered = True  # nothing more to try
            return False
        pillow_heif.register_heif_opener()
        _heif_registered = True
        return True


def open_image(fp: IO[bytes]) -> ImageFile.ImageFile:
    """Identify the image in ``fp`` (a seekable binary file) as ``Image.open`` would, lazily.

    Unlike ``Image.open``, Pillow's process-wide pixel limit is not checked here: the
    caller checks ``size`` against its own caps before it loads a pixel (see the module
    notes). The HEIF opener is registered on the first file no other opener knows.
    Raises ``PIL.UnidentifiedImageError`` for anything that is not an image Pillow reads.
    """
    im = _identify(fp)
    if im is None and register_heif():
        im = _identify(fp)
    if im is None:
        raise UnidentifiedImageError("cannot identify image file")
    return im


def _identify(fp: IO[bytes]) -> ImageFile.ImageFile | None:
    """The first registered opener that accepts ``fp``: the common plugins first, then all."""
    fp.seek(0)
    prefix = fp.read(16)
    tried: set[str] = set()
    for load_plugins in (Image.preinit, Image.init):
        load_plugins()
        for fmt in list(Image.ID):
            if fmt in tried:
                continue
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            if accept is not None:
                accepted = accept(prefix)
                if not accepted or isinstance(accepted, str):  # a str: "mine, but unsupported"
                    continue
            fp.seek(0)
            try:
                return factory(fp, "")
            except _NOT_THIS_FORMAT:
                continue
    return None


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read by :func:`read_header` without decoding a pixel."""

    width: int
    height: int
    format: str | None  # Pillow's format name: "JPEG", "PNG", "HEIF", ...

    @property
    def pixels(self) -> int:
        return self.width * self.height


@contextlib.contextmanager
def open_header_file(path: Path) -> Iterator[IO[bytes]]:
    """``path`` opened for reading its header as the decoder would: a regular file within
    :func:`~vsearch.imaging.reading.max_bytes_limit` (checked before and after opening, so a
    FIFO is refused without blocking), with HEIF registered when the suffix asks for it.
    Raises ``OSError`` or :class:`ImageDecodeError`."""
    if path.suffix.lower() in HEIF_SUFFIXES:
        register_heif()
    check_regular(os.stat(path), max_bytes_limit())
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as f:
        check_regular(os.fstat(fd), max_bytes_limit())
        yield f


def read_header(source: Path | bytes) -> ImageHeader:
    """The size and format an image's header claims (a path or the file's bytes), decoding nothing.

    For a caller that needs only the header (a pixel count to sort by, a size to show):
    the header is read as the decoder reads it, with Pillow's process-wide pixel limit
    neither checked nor changed, and HEIF registered when needed. A path must be a regular
    file within :func:`~vsearch.imaging.reading.max_bytes_limit` (a FIFO is refused without
    blocking). Raises :class:`ImageDecodeError` with a one-line reason.
    """
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return _header_of(io.BytesIO(source))
        with open_header_file(Path(source)) as f:
            return _header_of(f)
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError("file not found") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image or unsupported format") from None
    except OSError as e:
        raise ImageDecodeError(f"unreadable ({os_reason(e)})") from None
    except Exception as e:  # noqa: BLE001 - a plugin's zoo of errors for a bad header
        text = " ".join(str(e).split()) or type(e).__name__
        raise ImageDecodeError(f"truncated or corrupt image ({text[:160]})") from None


def _header_of(fp: IO[bytes]) -> ImageHeader:
    with open_image(fp) as im:
        return ImageHeader(im.width, im.height, im.format)
