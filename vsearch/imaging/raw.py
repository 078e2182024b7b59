"""Camera RAW files (CR2, CR3, NEF, ARW, DNG, RAF, ORF, RW2): recognise them, read them with rawpy.

rawpy (LibRaw) is an optional extra, ``pip install 'vsearch[raw]'``; it is imported only when a
RAW file is met. Without it a RAW file is an :class:`ImageDecodeError` that says how to install
it, which the indexer counts as a named skip.

This module knows nothing of Pillow: :func:`read_raw` hands back either the embedded JPEG
preview's bytes (the fast path: cameras embed a full- or near-full-size JPEG, which
``vsearch.imaging.images`` decodes at a reduced scale like any JPEG) or an RGB array from a half-size
demosaic, when the preview is missing or too small for the caller.

RAW files are recognised by content, not by name, because the indexer decodes bytes (read once
for the digest and the decode). Most RAW formats are TIFF files that Pillow would otherwise
open and mis-read (it sees a thumbnail or an undecodable strip), so they are sniffed first.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vsearch.errors import ImageDecodeError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

#: RAW file name extensions that scanning picks up (with ``vsearch.imaging.scan.IMAGE_EXTENSIONS``).
RAW_EXTENSIONS: frozenset[str] = frozenset({".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2"})

#: What a RAW file says when rawpy is missing: the counted skip's reason.
INSTALL_HINT = "camera RAW file: reading it needs rawpy (pip install 'vsearch[raw]')"

# Magic numbers of the RAW formats that are not plain TIFF.
_CR2 = b"CR\x02\x00"  # at offset 8 of a little-endian TIFF
_RAF = b"FUJIFILMCCD-RAW"
_ORF = (b"IIRO", b"IIRS", b"MMOR")
_RW2 = b"IIU\x00"
_CR3_BRAND = b"ftypcrx "  # ISO base media file, brand "crx "
# TIFF tags in IFD0 that mark a RAW file: DNGVersion, and SubIFDs (where NEF, ARW and DNG keep
# the sensor data; ordinary TIFFs from scanners and editors do not use them).
_TAG_DNG_VERSION = 50706
_TAG_SUB_IFDS = 330
_TAG_MAKE = 271

# LibRaw's flip (sizes.flip) -> the rotation that shows the picture upright, as the value of
# PIL.Image.Transpose (kept as ints so that this module needs no Pillow): 3 = ROTATE_180,
# 5 = rotate 90 degrees anticlockwise (Transpose.ROTATE_90 = 2), 6 = clockwise (ROTATE_270 = 4).
_FLIP_TO_TRANSPOSE = {3: 3, 5: 2, 6: 4}


@dataclass(frozen=True)
class RawPicture:
    """What :func:`read_raw` found: a JPEG preview to decode, or demosaiced pixels."""

    jpeg: bytes | None  # the embedded preview (not yet oriented: see ``transpose``)
    rgb: np.ndarray | None  # (H, W, 3) uint8, upright, when there is no usable preview
    transpose: int | None  # PIL.Image.Transpose value that turns the preview upright, or None


def is_raw(data: bytes | bytearray | memoryview) -> bool:
    """True when ``data`` starts like a camera RAW file (by magic numbers and TIFF tags)."""
    head = bytes(data[:16])
    if head[:4] in _ORF or head[:4] == _RW2 or head.startswith(_RAF):
        return True
    if head[4:12] == _CR3_BRAND:
        return True
    if head[:4] not in (b"II*\x00", b"MM\x00*"):
        return False
    if head[8:12] == _CR2:
        return True
    return _tiff_ifd0_marks_raw(data)


def _tiff_ifd0_marks_raw(data: bytes | bytearray | memoryview) -> bool:
    """Whether IFD0 of a TIFF holds DNGVersion, or SubIFDs together with a camera Make."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, offset)
        tags = {struct.unpack_from(order + "H", data, offset + 2 + 12 * i)[0] for i in range(min(count, 512))}
    except struct.error:
        return False  # a truncated header: let Pillow say what is wrong with it
    return _TAG_DNG_VERSION in tags or (_TAG_SUB_IFDS in tags and _TAG_MAKE in tags)


def read_raw(data: bytes, *, min_side: int | None, max_pixels: int, max_bytes: int) -> RawPicture:
    """Read a RAW file's picture: the embedded JPEG preview when it is large enough, else a
    half-size demosaic.

    "Large enough": its short side is at least ``min_side`` (the model's input size), or, with
    no ``min_side``, at least that of the half-size demosaic it replaces. ``max_pixels`` and
    ``max_bytes`` bound the demosaic (checked on the sensor size, before it runs). Raises
    :class:`ImageDecodeError`, with :data:`INSTALL_HINT` when rawpy is not installed.
    """
    try:
        import rawpy
    except ImportError:
        raise ImageDecodeError(INSTALL_HINT) from None

    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            flip = _FLIP_TO_TRANSPOSE.get(sizes.flip)
            want = min_side if min_side is not None else min(sizes.width, sizes.height) // 2
            jpeg = _preview(raw, rawpy, want)
            if jpeg is not None:
                return RawPicture(jpeg, None, flip)
            pixels = sizes.raw_width * sizes.raw_height
            if pixels > max_pixels:
                raise ImageDecodeError(f"RAW image too large ({sizes.raw_width}x{sizes.raw_height} > limit"
                                       f" {max_pixels / 1e6:.0f} MP; raise it with max_pixels=)")
            # LibRaw holds the 16-bit sensor data plus a quarter-size 4x16-bit work image.
            need = pixels * 4
            if need > max_bytes:
                raise ImageDecodeError(
                    f"RAW image too large to decode ({sizes.raw_width}x{sizes.raw_height} needs"
                    f" {need >> 20} MiB > limit {max_bytes >> 20} MiB; raise it with VSEARCH_MAX_BYTES)"
                )
            rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
            return RawPicture(None, rgb, None)
    except ImageDecodeError:
        raise
    except rawpy.LibRawFileUnsupportedError:
        raise ImageDecodeError("unsupported or damaged RAW file") from None
    except (rawpy.LibRawError, rawpy.NotSupportedError, OSError, ValueError) as e:
        raise ImageDecodeError(f"truncated or corrupt RAW file ({type(e).__name__}: {e})".strip()) from None


def _preview(raw, rawpy, want: int) -> bytes | None:  # noqa: ANN001 - rawpy is imported lazily
    """The embedded JPEG preview when its short side is at least ``want``, else None."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format != rawpy.ThumbFormat.JPEG:
        return None  # a bitmap thumbnail: small and rare; the demosaic is better
    side = _jpeg_short_side(thumb.data)
    if side is None or side < want:
        log.debug("RAW preview too small (%s < %s): demosaicing", side, want)
        return None
    return bytes(thumb.data)


def _jpeg_short_side(jpeg: bytes) -> int | None:
    """The short side of a JPEG from its SOF marker, or None when none is found."""
    i = 2
    n = len(jpeg)
    while i + 9 < n:
        if jpeg[i] != 0xFF:
            return None
        marker = jpeg[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        (length,) = struct.unpack_from(">H", jpeg, i + 2)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack_from(">HH", jpeg, i + 5)
            return min(w, h)
        i += 2 + length
    return None
