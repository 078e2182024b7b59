"""Evidence, in an image file itself, of whether it is an original or a derivative of one.

What the keeper rule of :mod:`vsearch.duplicates.keeper` weighs:

* :func:`read_provenance` reads the header only (no pixel): whether the file is a camera RAW,
  the camera's EXIF (``Make``, ``Model``, ``DateTimeOriginal``), and for a JPEG the quality
  its quantisation tables were scaled to (:func:`jpeg_quality`, the IJG scale every common
  encoder follows; a camera's own tables give the nearest equivalent). A file without the
  evidence gives ``None`` fields, never an error.
* :func:`prior_compression` decodes the pixels and looks for the trace of an earlier JPEG
  compression that the file's own encoding did not make: the mark a re-save leaves. Two
  traces are measured, on the luma plane as the file stores it (no EXIF rotation):

  - **double quantisation** (a JPEG saved again on the same 8x8 grid: re-saved at another
    quality, brightened, recoloured): the earlier quantiser's step leaves holes and peaks at
    regular intervals in the histogram of each low-frequency DCT coefficient, counted in steps
    of the file's own quantiser, where a single compression leaves a smooth, falling histogram
    (Popescu and Farid's double-quantisation effect). Measured as the median, over 14
    low-frequency coefficients, of the largest squared deviation of one histogram bin from
    what its two neighbours predict, in units of its Poisson noise.
  - **a shifted grid** (a JPEG mirrored or turned upside down, when its width or height is
    not a multiple of 8, so the earlier blocks no longer sit on the file's grid; or a JPEG
    saved as PNG, whose pixels still sit on the grid): the DCT coefficients of the 8x8 blocks
    at that offset fall on multiples of one step. Measured as the strongest periodicity
    ``|mean(exp(2 pi i c / s))|`` over integer steps ``s`` at that offset, less the same at an
    offset no compression used.

  Both thresholds (:data:`DQ_THRESHOLD`, :data:`GRID_THRESHOLD`) were set on 300 flowers17
  photos (JPEG q75) and sample_images (q90) and derivatives of them; the keeper benchmark
  (``benchmarks/bench_keeper.py``) measures on other flowers17 photos. A mirrored copy saved at
  the original's own quality on the original's grid carries no trace: nothing in the pixels
  tells it from the original; a brightened copy at the original's quality, only about half
  the time.

Decoding is bounded like every decode (:func:`~vsearch.imaging.reading.max_bytes_limit`), and
only a central window of at most :data:`WINDOW` pixels a side (on the file's 8x8 grid) is
measured, so a large photo costs about as much as a small one once decoded.
"""

from __future__ import annotations

import datetime
import functools
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vsearch.imaging import raw
from vsearch.imaging.opening import HEIF_SUFFIXES, open_header_file, open_image, register_heif
from vsearch.imaging.reading import read_head, read_image_bytes

log = logging.getLogger(__name__)

__all__ = ["DQ_THRESHOLD", "GRID_THRESHOLD", "Provenance", "jpeg_quality", "prior_compression", "read_provenance"]

#: Side of the central window (pixels, a multiple of 8) whose blocks :func:`prior_compression` measures.
WINDOW = 1024
#: Double-quantisation score above which a JPEG was compressed before on its own grid. Measured
#: on 300 flowers17 photos (seed 1) and sample_images: 99% of the photos score under 34 (the two
#: above 40, coins.jpg and retina.jpg, were JPEGs before sample_images re-encoded them), re-saves
#: at a higher quality 322 of 323 above 40, same-quality brightened copies 134 of 323.
DQ_THRESHOLD = 40.0
#: Shifted-grid periodicity (above the control offset) above which the pixels carry an earlier
#: JPEG's blocks at another offset. Measured as above: photos at most 0.10; mirrored copies whose
#: width is no multiple of 8, 247 of 280 above 0.12 at quality 85, 280 of 280 at quality 95.
GRID_THRESHOLD = 0.12
#: Fewer 8x8 blocks than this (128 x 128 pixels) say nothing: each coefficient's histogram has
#: too few values (2 of 3,000 64 x 64 tiny-imagenet photos and copies came out "found", none of
#: them a re-save), and measuring them was most of grouping 100,000 such photos.
MIN_BLOCKS = 256
#: Formats that keep every pixel as it was given.
LOSSLESS_FORMATS = frozenset({"PNG", "TIFF", "BMP", "PPM", "TGA"})

_EXIF_IFD = 0x8769
_MAKE, _MODEL, _SOFTWARE = 0x010F, 0x0110, 0x0131
_DATETIME_ORIGINAL = 0x9003
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")

# The IJG (libjpeg) luminance quantisation table at quality 50, in natural (row-major) order:
# every common encoder scales it to the quality asked for.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)

# Low-frequency DCT positions (row, column), in zigzag order after DC: where a photo has the
# coefficients a histogram can be drawn from.
_LOW = ((0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3), (1, 2), (2, 1), (3, 0), (4, 0), (3, 1), (2, 2), (1, 3), (0, 4))


@dataclass(frozen=True)
class Provenance:
    """What a file's header says of where it came from (None: the file does not say).

    ``raw``: a camera RAW file. ``make``, ``model``: the camera, from EXIF. ``taken``: EXIF
    ``DateTimeOriginal``, when the picture was taken. ``software``: EXIF ``Software``.
    ``quality``: for a JPEG, the IJG quality (1-100) its luminance table corresponds to.
    ``format``: Pillow's format name. ``pixels``: width x height as the header says (None for a
    RAW file, whose header Pillow reads as its thumbnail's).
    """

    raw: bool = False
    make: str | None = None
    model: str | None = None
    taken: datetime.datetime | None = None
    software: str | None = None
    quality: int | None = None
    format: str | None = None
    pixels: int | None = None

    @property
    def camera(self) -> bool:
        """Whether the file names the camera that took it (EXIF Make or Model)."""
        return bool(self.make or self.model)

    @property
    def lossless(self) -> bool:
        """Whether the format keeps every pixel as given (PNG, TIFF, BMP, ...)."""
        return self.format in LOSSLESS_FORMATS


def read_provenance(path: Path) -> Provenance:
    """The header evidence of ``path`` (see the module notes), read as the decoder reads a
    header (a regular file within the byte cap; Pillow reads only what it needs, a TIFF-based
    file's EXIF wherever it lies); a :class:`Provenance` of Nones for a file that cannot be read
    or says nothing."""
    path = Path(path)
    try:
        with open_header_file(path) as f:
            is_raw = raw.is_raw(f.read(64 * 1024))
            with open_image(f) as im:
                fmt, pixels = im.format, im.width * im.height
                pixels_known: int | None = None if is_raw else pixels  # a RAW's header is its thumbnail's
                quality = jpeg_quality(getattr(im, "quantization", None) or {}) if fmt == "JPEG" else None
                exif = _exif_of(im)
    except Exception as e:  # noqa: BLE001 - a header Pillow cannot read (a CR3, a truncated file) says nothing
        log.debug("no provenance header for %s: %s", path, " ".join(str(e).split()) or type(e).__name__)
        try:
            return Provenance(raw=raw.is_raw(read_head(path, 64 * 1024)))
        except Exception:  # noqa: BLE001 - gone or unreadable
            return Provenance()
    if exif is None:
        return Provenance(raw=is_raw, quality=quality, format=fmt, pixels=pixels_known)
    return Provenance(raw=is_raw, make=_text(exif.get(_MAKE)), model=_text(exif.get(_MODEL)),
                      taken=_datetime(exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL)),
                      software=_text(exif.get(_SOFTWARE)), quality=quality, format=fmt, pixels=pixels_known)


def _exif_of(im: Image.Image) -> Image.Exif | None:
    raw_exif = im.info.get("exif")
    if raw_exif:
        exif = Image.Exif()
        exif.load(raw_exif)
        return exif
    if im.format == "TIFF":
        return im.getexif()  # the file's own IFDs; no pixel is read
    return None  # (a PNG's getexif would decode the whole image to look for a late chunk)


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip().strip("\x00").strip()
    return value or None


def _datetime(value: object) -> datetime.datetime | None:
    """``2024:05:01 10:20:30`` (EXIF's form) -> that moment; None for a blank or bad value."""
    text = _text(value)
    if text is None:
        return None
    try:
        return datetime.datetime.strptime(text[:19].replace("-", ":"), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def jpeg_quality(tables: dict[int, list[int]] | dict[int, object]) -> int | None:
    """The IJG quality (1-100) a JPEG's luminance quantisation table (table 0, natural order,
    as Pillow gives it) corresponds to; None without one. A table that is no scaled IJG table
    (a camera's own) gives the quality whose table has the same total."""
    table = tables.get(0) if tables else None
    if table is None:
        return None
    values = np.asarray(list(table), dtype=np.float64)  # type: ignore[call-overload]
    if values.shape != (64,) or values.min() < 1:
        return None
    if values.max() == 1:
        return 100  # every step 1: nothing quantised away
    scale = values.sum() / _IJG_LUMA.sum() * 100.0
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(min(100, max(1, round(quality))))


# --- traces of an earlier compression (pixels decoded) -------------------------------------------


@dataclass(frozen=True)
class PriorCompression:
    """What :func:`prior_compression` measured: ``double`` (the double-quantisation score, None
    for a file that is no JPEG), ``grid`` (the shifted-grid periodicity above control, None
    when no offset was tried), ``embedded`` (for a file in a lossless format whose pixels sit on
    a JPEG's grid: the quality of that JPEG, which it was saved from; else None), and the verdict
    ``found``."""

    double: float | None
    grid: float | None
    embedded: int | None = None

    @property
    def found(self) -> bool:
        """Whether the pixels carry an earlier JPEG compression than the file's own (a lossless
        copy of a JPEG adds no compression of its own: ``embedded`` says what it holds)."""
        return (self.double is not None and self.double > DQ_THRESHOLD) or (
            self.grid is not None and self.grid > GRID_THRESHOLD)


def prior_compression(path: Path) -> PriorCompression:
    """Look for the trace of an earlier JPEG compression in the pixels of ``path`` (see the
    module notes). A file that cannot be decoded gives ``PriorCompression(None, None)``
    (nothing found). Results are cached per process, by path, size and mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return PriorCompression(None, None)
    return _prior_cached(os.fspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _prior_cached(path: str, size: int, mtime_ns: int) -> PriorCompression:
    del size, mtime_ns  # part of the cache key only
    try:
        read = _luma(Path(path))
    except Exception as e:  # noqa: BLE001 - an undecodable file carries no evidence either way
        log.debug("no pixels for %s: %s", path, " ".join(str(e).split()) or type(e).__name__)
        return PriorCompression(None, None)
    if read is None:
        return PriorCompression(None, None)  # too few blocks for a histogram
    luma, table, fmt = read
    h, w = luma.shape
    double = _double_quantisation(_blocks(luma, 0, 0), table) if table is not None else None
    offsets = {(0, w % 8), (h % 8, 0), (h % 8, w % 8)} - {(0, 0)}  # where a mirror or a flip puts the old grid
    control = next(o for o in ((3, 5), (5, 3), (2, 6), (6, 2), (1, 7)) if o not in offsets)
    base = _periodicity(_blocks(luma, *control, most=4096))
    grid = max(_periodicity(_blocks(luma, *o, most=4096)) for o in offsets) - base if offsets else None
    embedded = None
    if fmt != "JPEG":  # a JPEG saved in a lossless format keeps its grid where it was
        aligned = _blocks(luma, 0, 0, most=4096)
        if _periodicity(aligned) - base > GRID_THRESHOLD:
            embedded = _embedded_quality(aligned)
    return PriorCompression(double, grid, embedded)


def _luma(path: Path) -> tuple[np.ndarray, np.ndarray | None, str | None] | None:
    """The luma plane of the central window (as the file stores it, no rotation; float64,
    level-shifted by 128), the luminance quantisation table (8x8) of a JPEG, and the format;
    None, read from the header alone, for an image of fewer than :data:`MIN_BLOCKS` blocks."""
    data = read_image_bytes(path)
    if path.suffix.lower() in HEIF_SUFFIXES:
        register_heif()
    with open_image(io.BytesIO(data)) as im:
        fmt = im.format
        if (im.width // 8) * (im.height // 8) < MIN_BLOCKS:
            return None
        if im.width * im.height > 100_000_000:
            raise ValueError(f"{im.width}x{im.height} is too large to measure")
        table = None
        if fmt == "JPEG":
            tables = getattr(im, "quantization", None) or {}
            if 0 in tables:
                table = np.asarray(list(tables[0]), dtype=np.float64).reshape(8, 8)
            if im.mode in ("RGB", "YCbCr"):
                im.draft("YCbCr", im.size)  # libjpeg's own Y plane: no colour conversion in the way
        im.load()
        plane = im.getchannel(0) if im.mode == "YCbCr" else im.convert("L")
        y = np.asarray(plane, dtype=np.float64)
    h, w = y.shape
    top = max(0, (h - WINDOW) // 2) // 8 * 8  # on the 8x8 grid, so offsets stay the file's
    left = max(0, (w - WINDOW) // 2) // 8 * 8
    window = y[top:top + WINDOW + 8, left:left + WINDOW + 8]  # 8 more: room for the shifted blocks
    return window - 128.0, table, fmt


@functools.cache
def _dct_matrix() -> np.ndarray:
    k, i = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    m = np.sqrt(2 / 8) * np.cos(np.pi * (2 * i + 1) * k / 16)
    m[0] /= np.sqrt(2)
    return m  # orthonormal: the scale of JPEG's own DCT


def _blocks(y: np.ndarray, dy: int, dx: int, most: int | None = None) -> np.ndarray:
    """The 2-D DCT of the whole 8x8 blocks starting at (dy, dx) (every one, or ``most`` of
    them evenly spread): shape (n, 8, 8)."""
    part = y[dy:, dx:]
    h, w = (part.shape[0] // 8) * 8, (part.shape[1] // 8) * 8
    tiles = part[:h, :w].reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)
    if most is not None and len(tiles) > most:
        tiles = tiles[:: len(tiles) // most + 1]
    d = _dct_matrix()
    return d @ tiles @ d.T


def _double_quantisation(coefficients: np.ndarray, table: np.ndarray) -> float | None:
    """The double-quantisation score (module notes); None when too few coefficients say anything."""
    peaks = []
    for u, v in _LOW:
        step = table[u, v]  # a step of 1 (quality 98 and up) counts the values themselves
        k = np.abs(np.rint(coefficients[:, u, v] / step)).astype(np.int64)
        k = k[(k >= 1) & (k <= 40)]
        hist = np.bincount(k, minlength=42).astype(np.float64)
        worst = None
        for j in range(2, 40):
            a, b = hist[j - 1], hist[j + 1]
            expected = np.sqrt(a * b) if a > 0 and b > 0 else (a + b) / 2  # log-linear, or a gap's neighbours
            if expected < 10 and hist[j] < 10:
                continue
            z2 = (hist[j] - expected) ** 2 / (hist[j] + expected + 1)
            worst = z2 if worst is None else max(worst, z2)
        if worst is not None:
            peaks.append(worst)
    return float(np.median(peaks)) if len(peaks) >= 3 else None


def _strengths(c: np.ndarray) -> np.ndarray:
    """``|mean(exp(2 pi i c / s))|`` for each integer step s = 2..40, over the values ``c`` at
    least s/2 from zero (0 where fewer than 100 are)."""
    steps = _STEPS
    c = c.astype(np.float32)
    angle = (2 * np.pi) * c[:, None] / steps[None, :]
    mask = np.abs(c)[:, None] >= steps[None, :] / 2
    counts = mask.sum(axis=0)
    re = np.where(mask, np.cos(angle), 0).sum(axis=0)
    im = np.where(mask, np.sin(angle), 0).sum(axis=0)
    return np.where(counts >= 100, np.hypot(re, im) / np.maximum(counts, 1), 0.0)


_STEPS = np.arange(2, 41, dtype=np.float32)


def _periodicity(coefficients: np.ndarray) -> float:
    """The median, over 5 low-frequency coefficients, of the strongest periodicity (any step)."""
    return float(np.median([_strengths(coefficients[:, u, v]).max() for u, v in _LOW[:5]]))


def _embedded_quality(coefficients: np.ndarray) -> int | None:
    """The IJG quality of the JPEG whose grid the (aligned) blocks sit on: at each of 5
    low-frequency coefficients, the coarsest step that fits nearly as well as the best (a
    lattice of step s also fits s/2), against the IJG table's entry there."""
    scales = []
    for u, v in _LOW[:5]:
        strength = _strengths(coefficients[:, u, v])
        if strength.max() < 0.5:
            continue
        step = float(_STEPS[np.nonzero(strength >= 0.8 * strength.max())[0][-1]])
        scales.append(step / _IJG_LUMA[u * 8 + v] * 100.0)
    if not scales:
        return None
    scale = float(np.median(scales))
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(min(100, max(1, round(quality))))


#: Side of the window (pixels, on the 16 px grid of a JPEG's colour blocks) that
#: :func:`reproduces` saves again and compares, less :data:`_MARGIN` on every side (where the
#: decoder's colour upsampling reads past the window).
REPRODUCE_WINDOW = 512
_MARGIN = 16


def reproduces(source: Path, copy: Path) -> bool:
    """Whether ``copy`` holds exactly the pixels that saving ``source`` again gives, as it is or
    mirrored left to right, with ``copy``'s own JPEG tables and colour subsampling: the mark of a
    copy made from that file (re-saved at another quality, or mirrored) by a tool on the same
    JPEG library as this one (libjpeg's default DCT: Pillow, ImageMagick and GIMP save so). A
    copy made by another encoder (a camera's, Photoshop's) is not reproduced: no evidence
    either way, never a false one, since an exact match of every pixel does not happen by
    chance. Both must be the same size, ``copy`` a JPEG, each of at least :data:`MIN_BLOCKS`
    blocks; a central window of :data:`REPRODUCE_WINDOW` pixels a side is compared. A file that
    cannot be decoded gives False. Cached per process, by both files' path, size and mtime."""
    return _on_pair(_reproduces_cached, source, copy)


def _on_pair(measure: Callable[..., bool], source: Path, copy: Path) -> bool:
    """``measure`` of both files, keyed by each one's path, size and mtime (a file gone: False)."""
    try:
        sa, sb = os.stat(source), os.stat(copy)
    except OSError:
        return False
    return measure(os.fspath(source), sa.st_size, sa.st_mtime_ns, os.fspath(copy), sb.st_size, sb.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _reproduces_cached(source: str, source_size: int, source_mtime: int, copy: str, copy_size: int,
                       copy_mtime: int) -> bool:
    made = _windows(copy, copy_size, copy_mtime)
    if made is None or made.format != "JPEG" or not made.tables:
        return False
    given = _windows(source, source_size, source_mtime)
    if given is None or given.shape[:2] != made.shape[:2]:
        return False
    inner = made.inner
    want = made.straight[inner]
    options: dict[str, object] = {"qtables": made.tables}
    if made.sampling >= 0:
        options["subsampling"] = made.sampling
    for turned in given.turns(made.mode):
        buf = io.BytesIO()
        Image.fromarray(turned).save(buf, "JPEG", **options)
        again = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(made.mode))
        if again[inner].shape == want.shape and np.array_equal(again[inner], want):
            return True
    return False


@dataclass(frozen=True)
class _Windows:
    """What :func:`reproduces` and :func:`brightened_from` read of one file, decoded once: the
    central window (on the 16 px grid) of its pixels as they are and mirrored, the part of it
    compared, and its JPEG tables."""

    format: str | None
    mode: str
    shape: tuple[int, ...]
    straight: np.ndarray
    mirrored: np.ndarray
    inner: tuple[slice, slice]
    tables: dict[int, object]
    sampling: int

    def turns(self, mode: str) -> tuple[np.ndarray, np.ndarray]:
        """The window as it is and mirrored, in ``mode`` (a grey photo saved again in colour is
        its grey in every channel, as Pillow converts it)."""
        if mode == self.mode:
            return self.straight, self.mirrored
        return (np.asarray(Image.fromarray(self.straight).convert(mode)),
                np.asarray(Image.fromarray(self.mirrored).convert(mode)))


@functools.lru_cache(maxsize=64)
def _windows(path: str, size: int, mtime_ns: int) -> _Windows | None:
    """The windows of ``path`` (None: undecodable, or under MIN_BLOCKS blocks, read from the header)."""
    del size, mtime_ns  # part of the cache key only
    from PIL import JpegImagePlugin

    try:
        with open_image(io.BytesIO(read_image_bytes(Path(path)))) as im:
            if (im.width // 8) * (im.height // 8) < MIN_BLOCKS or im.width * im.height > 100_000_000:
                return None  # (read from the header: nothing decoded)
            fmt = im.format
            tables = dict(getattr(im, "quantization", None) or {}) if fmt == "JPEG" else {}
            sampling = JpegImagePlugin.get_sampling(im) if fmt == "JPEG" else -1
            mode = "L" if im.mode in ("L", "1") else "RGB"
            pixels = np.asarray(im.convert(mode))
    except Exception as e:  # noqa: BLE001 - an undecodable file carries no evidence either way
        log.debug("no pixels for %s: %s", path, " ".join(str(e).split()) or type(e).__name__)
        return None
    h, w = pixels.shape[:2]
    side = REPRODUCE_WINDOW
    top, left = max(0, (h - side) // 2) // 16 * 16, max(0, (w - side) // 2) // 16 * 16
    rows, cols = slice(top, top + side), slice(left, left + side)
    straight = np.ascontiguousarray(pixels[rows, cols])
    mirrored = np.ascontiguousarray(pixels[:, ::-1][rows, cols])
    inner = (slice(_MARGIN if top else 0, -_MARGIN), slice(_MARGIN if left else 0, -_MARGIN))
    return _Windows(fmt, mode, pixels.shape, straight, mirrored, inner, tables, sampling)


#: :func:`brightened_from`: the least brightening it looks for, and how it decides that the
#: source holds detail the copy burnt out (grey levels; measured on flowers17 copies brightened
#: x1.1-1.3 and darkened x0.75-0.9, at JPEG q75-95: see tests/test_keeper.py).
MIN_GAIN = 1.03
_BURNT = 253
_FIT_ERROR = 6.0
_DETAIL = 6.0
_ABOVE = 10.0


def brightened_from(source: Path, copy: Path) -> bool:
    """Whether ``copy`` is ``source`` brightened (as it is or mirrored): its pixels are ``source``'s
    times one steady gain above 1, with highlights burnt out to white where ``source`` still
    holds detail. A darkened copy could not have that detail (every pixel that was white
    would be one flat grey), so the brighter file was made from the other, not the other way
    round. Compared over the central window :func:`reproduces` reads; no highlight there, or
    another size, says nothing (False). Cached per process, by both files' path, size and mtime."""
    return _on_pair(_brightened_cached, source, copy)


@functools.lru_cache(maxsize=4096)
def _brightened_cached(source: str, source_size: int, source_mtime: int, copy: str, copy_size: int,
                       copy_mtime: int) -> bool:
    made = _windows(copy, copy_size, copy_mtime)
    given = _windows(source, source_size, source_mtime)
    if made is None or given is None or given.shape[:2] != made.shape[:2]:
        return False
    b = made.straight[made.inner].astype(np.float32)
    burnt = b >= _BURNT
    if burnt.sum() < max(200, 0.002 * b.size):
        return False
    for turned in given.turns(made.mode):
        a = turned[made.inner].astype(np.float32)
        mid = (a > 24) & (a < 200) & (b > 5) & (b < 250)
        if mid.sum() < 1000:
            continue
        gain = float(np.median(b[mid] / a[mid]))
        if gain < MIN_GAIN or float(np.mean(np.abs(b[mid] - gain * a[mid]))) > _FIT_ERROR:
            continue  # not brighter, or not these pixels brightened
        detail = a[burnt]
        if float(detail.std()) >= _DETAIL and float(detail.mean()) > 255.0 / gain + _ABOVE:
            return True
    return False


def made_from(source: Path, copy: Path) -> bool:
    """Whether the pixels show ``copy`` was made from ``source``: saved again from it
    (:func:`reproduces`) or brightened from it (:func:`brightened_from`). Neither is ever true
    the wrong way round on the copies measured; both say nothing (False) when unsure."""
    return reproduces(source, copy) or brightened_from(source, copy)
