"""Decode one image safely: :func:`load_image` (an RGB image) and :func:`decode_for_model` (a model input).

This module knows nothing of models or storage. It turns one file (or its bytes) into an RGB
image, handling EXIF orientation, every colour mode Pillow may hand back
(:mod:`vsearch.imaging.colour`), JPEG draft decoding, camera RAW files (through
:mod:`vsearch.imaging.raw`) and decompression bombs; :func:`to_model_array` frames it as a
square ``uint8`` array. Any failure is an :class:`ImageDecodeError` with a one-line reason,
which the indexer records as a named skip.

Its neighbours, each with one job (their names that other packages use are re-exported here):

* :mod:`vsearch.imaging.scan`: :func:`scan_folder` streams the image files under a folder.
* :mod:`vsearch.imaging.reading`: :func:`read_image_bytes` reads one file safely (regular
  files only, at most :func:`~vsearch.imaging.reading.max_bytes_limit` bytes).
* :mod:`vsearch.imaging.opening`: identifies an image with Pillow, leaving Pillow's
  process-wide pixel limit alone; :func:`register_heif`; :func:`read_header`.
* :mod:`vsearch.imaging.exifdate`: :func:`exif_date`, the day a photo was taken.

Memory per image is bounded by two limits, checked from the header before any pixel is
decoded:

* ``max_pixels`` (``--max-pixels``, default 200 MP) caps the pixels an image may claim;
  JPEGs above it are decoded at 1/2, 1/4 or 1/8 scale instead (libjpeg's DCT scaling).
* ``max_bytes`` (``$VSEARCH_MAX_BYTES``, default 256 MiB) caps both the bytes read from one
  file and the memory of one decoded frame (Pillow keeps 4 bytes per pixel for RGB and
  RGBA, 1 for greyscale and palette images). JPEGs are again decoded at a scale that fits;
  other formats (PNG, GIF, WebP, TIFF, HEIF, AVIF) can only be decoded whole, so this is their
  effective cap: 64 MP of RGB(A) or 256 MP of greyscale by default. Colour conversion then
  runs on strips of the frame, so it adds little to that.

A third check refuses decompression bombs whatever the limits: an image that claims more
than :data:`BOMB_MIN_PIXELS` pixels and more than :data:`MAX_PIXELS_PER_BYTE` pixels per
byte of its file (see there for the measured bound).

Decoding runs in worker threads and changes no process-wide state: Pillow's own
decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) and the warnings filters are left
as the process has them (see :mod:`vsearch.imaging.opening` for how the header is read past
that limit and where Pillow still applies it). The one process-wide effect is the HEIF
opener's registration with Pillow, done once, only when a HEIF file is met.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import IO, TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from vsearch.errors import ImageDecodeError, VsearchError
from vsearch.imaging import raw
from vsearch.imaging.colour import frame_bytes_per_pixel, reduce_to_rgb, to_rgb
from vsearch.imaging.exifdate import _exif_date_cached  # noqa: F401 - tests/test_rules.py and a benchmark clear it
from vsearch.imaging.exifdate import exif_date
from vsearch.imaging.opening import HEIF_SUFFIXES, ImageHeader, open_image, read_header, register_heif
from vsearch.imaging.reading import MAX_BYTES_ENV, max_bytes_limit, read_image_bytes, size_text
from vsearch.imaging.scan import IMAGE_EXTENSIONS, FoundFile, ScanProblem, is_image_path, scan_folder

if TYPE_CHECKING:  # numpy is only needed by the array helpers' signatures here
    import numpy as np

__all__ = [
    # decoding (this module)
    "BOMB_MIN_PIXELS", "DEFAULT_MAX_PIXELS", "FRAMINGS", "MAX_PIXELS_PER_BYTE", "PAD_COLOUR", "REDUCING_GAP",
    "RESAMPLE", "ImageDecodeError", "decode_for_model", "load_image", "to_model_array",
    # re-exported for other packages, from the modules that own them
    "IMAGE_EXTENSIONS", "FoundFile", "ScanProblem", "is_image_path", "scan_folder",  # scan
    "read_image_bytes",  # reading
    "exif_date",  # exifdate
    "ImageHeader", "read_header", "register_heif",  # opening
]

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS: int = 200_000_000
#: Decompression-bomb bound: an image claiming more than BOMB_MIN_PIXELS pixels and more
#: than MAX_PIXELS_PER_BYTE pixels per byte of file is refused unread. Measured on the
#: 11,485 photos of sample_images/ and the shared datasets: median 2.2 px/byte, maximum 19;
#: the most compressible photo-like files, flat grey 12 MP JPEGs (q50-q95), are 64-85
#: px/byte. Deflate cannot exceed 1032:1, so a PNG of zeros is ~1030 px/byte in greyscale
#: and a GIF of one colour is 1000+; a header claiming 65000x65000 from 2 kB is a million.
#: 500 leaves real photos a 25x margin and catches greyscale, 1-bit and palette bombs (RGB
#: and RGBA PNG bombs top out at 344 and 258 px/byte: the frame-memory cap bounds those).
#: Below the floor (16 MP), flat graphics and fax-like scans decode as before: their memory
#: is small whatever their ratio.
MAX_PIXELS_PER_BYTE: int = 500
BOMB_MIN_PIXELS: int = 16_000_000

#: The framings :func:`to_model_array` accepts.
FRAMINGS: tuple[str, ...] = ("squash", "center_crop", "pad")

# Grey used to pad to a square: the ImageNet mean, so padding reads as "nothing" to a model.
PAD_COLOUR = (124, 116, 104)

# Resample filter, measured on this project's 2-core machines for a 12 MP photo-like JPEG
# (4000x3000, q90) at size 224: draft decodes it at 500x375 in ~30 ms, then BILINEAR takes
# 1.3 ms and BICUBIC 2.1 ms, with PSNR 30.3 vs 36.6 dB against a full-size LANCZOS
# reference (LANCZOS: 5.0 ms, 45.8 dB). BICUBIC is most of the quality for ~2% of the
# decode time.
RESAMPLE = Image.Resampling.BICUBIC
REDUCING_GAP = 3.0


_JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: camera JPEGs with extra pictures appended

# EXIF orientation -> the transpose that undoes it (as ImageOps.exif_transpose does).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG = 0x0112


def load_image(
    source: Path | bytes,
    *,
    min_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
) -> Image.Image:
    """Decode ``source`` (a file path or the file's bytes) to an RGB image.

    EXIF orientation is applied; animated images give their first frame; transparency is
    composited on white; CMYK, greyscale, 1-bit, 16-bit and float images become 8-bit RGB.
    Camera RAW files (recognised by content) are read with rawpy when it is installed
    (``pip install 'vsearch[raw]'``): see :func:`vsearch.imaging.raw.read_raw`.

    ``min_side``: the caller needs no more than this many pixels on the short side, so the
    image may come back smaller than the file, but never with its short side below
    ``min_side`` (unless the file itself is smaller). JPEGs are then decoded at 1/2, 1/4 or
    1/8 scale by libjpeg (draft mode), the main speed lever for camera photos; other
    formats are box-reduced after decoding.

    ``max_pixels``: images with more pixels than this are refused before decoding, except
    JPEGs that draft mode can decode at a scale that fits. ``max_bytes`` (default:
    :func:`~vsearch.imaging.reading.max_bytes_limit`) caps the bytes read from a path and the memory of the decoded
    frame, in the same way. Likely decompression bombs are refused (see the module notes).

    Raises :class:`ImageDecodeError` with a one-line reason on any failure.
    """
    limit = max_bytes_limit() if max_bytes is None else max_bytes
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = source
    else:
        path = Path(source)
        if path.suffix.lower() in HEIF_SUFFIXES:
            register_heif()
        # Read whole (bounded) rather than streamed: the indexer holds the bytes anyway for the
        # digest, and a regular file of known size cannot block or grow without bound mid-decode.
        data = read_image_bytes(path, max_bytes=limit)
    if len(data) == 0:
        raise ImageDecodeError("empty file")
    return _decode(data, min_side, max_pixels, limit)


def _decode(data: bytes | bytearray | memoryview, min_side: int | None, max_pixels: int,
            max_bytes: int) -> Image.Image:
    try:
        if raw.is_raw(data):
            return _decode_raw(data, min_side, max_pixels, max_bytes)
        return _decode_unguarded(io.BytesIO(data), len(data), min_side, max_pixels, max_bytes)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image or unsupported format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's own limit, which some of its plugins check while they read (TIFF and GIF
        # frames, WebP): it is the process's setting (PIL.Image.MAX_IMAGE_PIXELS), left as it is,
        # so max_pixels cannot raise it. (The warning arrives here only where the process's
        # warnings filters turn it into an error.)
        raise ImageDecodeError(f"image too large for Pillow's limit in this process ({_one_line(e)})") from None
    except MemoryError:
        raise ImageDecodeError("out of memory while decoding") from None
    except Exception as e:  # noqa: BLE001
        # Pillow's plugins and libheif raise a zoo of types (OSError, SyntaxError,
        # ValueError, struct.error, EOFError, ...) for bad data. One bad file must become a
        # named skip, never a crash of the whole run.
        raise ImageDecodeError(f"truncated or corrupt image ({_one_line(e)})") from None


def _one_line(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _decode_unguarded(fp: IO[bytes], nbytes: int, min_side: int | None, max_pixels: int,
                      max_bytes: int) -> Image.Image:
    im: Image.Image = open_image(fp)  # the header only; Pillow's process-wide limit is not consulted (see opening.py)
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageDecodeError(f"invalid image size {w}x{h}")

    per_pixel = frame_bytes_per_pixel(im.mode)
    if im.format in _JPEG_FORMATS:
        scale = _jpeg_scale(w, h, min_side, max_pixels, max_bytes // per_pixel)
        if scale > 1:
            # Asking for (w//scale, h//scale) makes Pillow pick exactly this power of two.
            im.draft("RGB", (w // scale, h // scale))
    if im.width * im.height > max_pixels:
        raise ImageDecodeError(
            f"image too large ({w}x{h} = {_mp(w * h)} MP > limit {_mp(max_pixels)} MP;"
            " raise it with max_pixels=)"
        )
    # After the pixel cap (its message names the parameter that changes it), before any decoding.
    if w * h > BOMB_MIN_PIXELS and w * h > nbytes * MAX_PIXELS_PER_BYTE:
        raise ImageDecodeError(
            f"likely decompression bomb ({w}x{h} = {_mp(w * h)} MP claimed by a file of {size_text(nbytes)},"
            f" over {MAX_PIXELS_PER_BYTE} pixels per byte; real photos stay under 20)"
        )
    frame = im.width * im.height * per_pixel
    if frame > max_bytes:
        raise ImageDecodeError(
            f"image too large to decode ({w}x{h} {im.mode} needs {size_text(frame)} > limit {size_text(max_bytes)};"
            f" raise it with {MAX_BYTES_ENV})"
        )

    im.load()  # the first frame only, for animated formats
    orientation = _orientation(im)
    factor = min(im.size) // max(1, min_side) if min_side is not None else 1
    if factor >= 2:
        # Box-average down to no less than min_side: the model resize that follows then
        # works on a small image (this is what reducing_gap does, done earlier).
        im = reduce_to_rgb(im, factor)
    else:
        im = to_rgb(im)
    if orientation is not None:
        im = im.transpose(orientation)  # after the reduce: fewer pixels to move
    return im


def _jpeg_scale(w: int, h: int, min_side: int | None, max_pixels: int, max_frame_pixels: int) -> int:
    """The JPEG DCT scale (1, 2, 4 or 8) to decode at, or 1 when none helps."""
    scale = 1
    if min_side is not None and min_side > 0:
        fit = min(w, h) // min_side
        scale = next((s for s in (8, 4, 2) if fit >= s), 1)
    limit = min(max_pixels, max_frame_pixels)
    if w * h > limit:
        # The smallest scale that brings it under the limits; if none does, stay at 1 and
        # let the size checks refuse it.
        for s in (2, 4, 8):
            if -(-w // s) * -(-h // s) <= limit:
                scale = max(scale, s)
                break
    return scale


def _decode_raw(data: bytes | bytearray | memoryview, min_side: int | None, max_pixels: int,
                max_bytes: int) -> Image.Image:
    """A camera RAW file: its embedded JPEG preview when large enough, else a half-size demosaic."""
    picture = raw.read_raw(bytes(data), min_side=min_side, max_pixels=max_pixels, max_bytes=max_bytes)
    if picture.jpeg is not None:
        im = _decode(picture.jpeg, min_side, max_pixels, max_bytes)
        # The camera's orientation is in the RAW file; a preview carries its own only sometimes.
        if picture.transpose is not None and not _has_orientation(picture.jpeg):
            im = im.transpose(Image.Transpose(picture.transpose))
        return im
    assert picture.rgb is not None
    im = Image.fromarray(picture.rgb, "RGB")  # LibRaw has applied the orientation already
    factor = min(im.size) // max(1, min_side) if min_side is not None else 1
    return im.reduce(factor) if factor >= 2 else im


def _has_orientation(jpeg: bytes) -> bool:
    try:
        with open_image(io.BytesIO(jpeg)) as im:
            return im.getexif().get(_EXIF_ORIENTATION_TAG, 1) not in (1, None)
    except Exception:  # noqa: BLE001 - no readable EXIF: no orientation of its own
        return False


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.0f}" if pixels >= 10_000_000 else f"{pixels / 1e6:.1f}"


def _orientation(im: Image.Image) -> Image.Transpose | None:
    """The transpose that undoes the EXIF (or XMP) orientation, or None."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception as e:  # noqa: BLE001 - bad EXIF must not cost the pixels
        log.debug("ignoring unreadable EXIF: %s", e)
        return None
    return _ORIENTATION.get(value) if isinstance(value, int) else None


# --------------------------------------------------------------------------- model input


def to_model_array(img: Image.Image, size: int, framing: str) -> np.ndarray:
    """A ``(size, size, 3)`` ``uint8`` array of ``img`` framed for a square model input.

    ``framing``: "squash" resizes the whole frame to size x size (keeps every border,
    distorts the aspect); "center_crop" resizes the short side to ``size`` and keeps the
    centre square (a classifier's framing; drops the borders of non-square images); "pad"
    fits the whole image inside and pads it to a square with :data:`PAD_COLOUR`.
    """
    import numpy as np

    if img.mode != "RGB":
        img = to_rgb(img)
    w, h = img.size
    if framing == "squash":
        out = img.resize((size, size), RESAMPLE, reducing_gap=REDUCING_GAP)
    elif framing == "center_crop":
        # Resample only the centre square of the source (same result as resize-then-crop,
        # without resampling the part that is thrown away).
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        box = (left, top, left + side, top + side)
        out = img.resize((size, size), RESAMPLE, box=box, reducing_gap=REDUCING_GAP)
    elif framing == "pad":
        scale = size / max(w, h)
        nw = min(size, max(1, round(w * scale)))
        nh = min(size, max(1, round(h * scale)))
        inner = img.resize((nw, nh), RESAMPLE, reducing_gap=REDUCING_GAP)
        out = Image.new("RGB", (size, size), PAD_COLOUR)
        out.paste(inner, ((size - nw) // 2, (size - nh) // 2))
    else:
        raise VsearchError(f"unknown framing {framing!r} (choose from {', '.join(FRAMINGS)})")
    # np.array, not asarray: Pillow hands numpy read-only bytes; callers may normalise in place.
    return np.array(out, dtype=np.uint8)


def decode_for_model(
    source: Path | bytes,
    size: int,
    framing: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Decode ``source`` and frame it as a ``(size, size, 3)`` ``uint8`` model input.

    Decodes no more pixels than ``size`` needs (see :func:`load_image`'s ``min_side``).
    Raises :class:`ImageDecodeError`.
    """
    if framing not in FRAMINGS:  # before the decode, not after
        raise VsearchError(f"unknown framing {framing!r} (choose from {', '.join(FRAMINGS)})")
    img = load_image(source, min_side=size, max_pixels=max_pixels, max_bytes=max_bytes)
    return to_model_array(img, size, framing)
