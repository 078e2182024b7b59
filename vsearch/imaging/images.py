"""Find image files under a folder, and decode one image safely.

This module knows nothing of models or storage. It has two halves:

* :func:`scan_folder` streams the image files under a folder in a fixed order (sorted by
  POSIX relative path), reporting what it cannot read instead of failing.
* :func:`read_image_bytes` reads one file, safely: regular files only (a FIFO or a device
  named ``x.jpg`` is refused without blocking) and at most :func:`max_bytes_limit` bytes.
* :func:`load_image` / :func:`decode_for_model` turn one file (or its bytes) into an RGB image /
  a ``uint8`` array, handling EXIF orientation, every colour mode Pillow may hand back,
  JPEG draft decoding, camera RAW files (through :mod:`vsearch.imaging.raw`) and decompression
  bombs. Any failure is an :class:`ImageDecodeError` with a one-line reason, which the
  indexer records as a named skip.

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

Decoding runs in worker threads. The only mutable module state is the one-time registration
of the HEIF opener (guarded by a lock). Pillow's own decompression-bomb limit is switched off
once at import (see ``_PILLOW_LIMIT_NOTE`` below) because this module enforces its own,
per call, before any pixel is decoded.
"""

from __future__ import annotations

import datetime
import functools
import io
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from vsearch.imaging import raw
from vsearch.errors import ImageDecodeError, VsearchError

if TYPE_CHECKING:  # numpy is only needed by the array helpers' signatures here
    import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif"}
) | raw.RAW_EXTENSIONS
DEFAULT_MAX_PIXELS: int = 200_000_000

#: The environment variable that sets :func:`max_bytes_limit` (bytes, or with a K/M/G suffix).
MAX_BYTES_ENV = "VSEARCH_MAX_BYTES"
#: Default cap on the bytes read from one image file and on one decoded frame's memory.
#: 256 MiB holds every camera file in use (the largest, uncompressed RAW files from 100 MP
#: sensors, are about 200 MB; a 61 MP JPEG is 30-60 MB) and a 64 MP RGB frame, while a
#: few decode threads at the cap still fit in the memory of a small machine.
DEFAULT_MAX_BYTES: int = 256 * 1024 * 1024

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

# _PILLOW_LIMIT_NOTE: Pillow's limit (Image.MAX_IMAGE_PIXELS) is a process-wide setting that
# warns between 1x and 2x and raises past 2x, before we can see the size or try a JPEG draft.
# Toggling it per call would race between worker threads, so it is off for good and
# load_image checks ``max_pixels`` itself before decoding. Other modules that open images
# should go through load_image to keep that protection.
Image.MAX_IMAGE_PIXELS = None

_JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: camera JPEGs with extra pictures appended
_HEIF_SUFFIXES = frozenset({".heic", ".heif", ".hif"})
_heif_lock = threading.Lock()
_heif_registered = False

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


@dataclass(frozen=True)
class FoundFile:
    """One image file found by :func:`scan_folder`."""

    path: Path  # absolute (under the root as given, symlinks not resolved)
    rel: str  # POSIX path relative to the scanned root
    size: int  # bytes
    mtime_ns: int


@dataclass(frozen=True)
class ScanProblem:
    """Something :func:`scan_folder` could not read or chose not to enter."""

    path: Path
    reason: str  # one line


# --------------------------------------------------------------------------- scanning


def is_image_path(path: Path) -> bool:
    """True when the file name has one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return _has_image_ext(os.fspath(path))


def _has_image_ext(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def scan_folder(
    root: Path,
    *,
    exclude: Iterable[Path] = (),
    include_hidden: bool = False,
    on_problem: Callable[[ScanProblem], None] | None = None,
) -> Iterator[FoundFile]:
    """Stream the image files under ``root``, recursively, sorted by relative path.

    Hidden files and folders (name starts with ".") are skipped unless ``include_hidden``.
    Folders that are the same as one in ``exclude`` (compared by device and inode, so any
    spelling or symlink of it matches) are not entered. Symlinked folders are followed; a
    folder already being walked (a loop) or already walked via another path is not entered
    again. What cannot be read (folders, broken symlinks, files that vanish) is passed to
    ``on_problem`` (logged as a warning when it is None) and the walk goes on.

    The root is checked now, so a missing root or one that is not a folder raises
    :class:`VsearchError` at the call; the walk itself is lazy and holds at most the
    entries of the folders on the current path in memory.
    """
    root = Path(root)
    try:
        st = root.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise VsearchError(f"folder not found: {root}") from None
    except OSError as e:
        raise VsearchError(f"cannot read folder: {root} ({_os_reason(e)})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise VsearchError(f"not a folder: {root}")
    excluded: set[tuple[int, int]] = set()
    for path in exclude:
        try:
            est = Path(path).stat()
        except OSError:
            continue  # an exclude that does not exist (yet) excludes nothing
        excluded.add((est.st_dev, est.st_ino))
    report = on_problem if on_problem is not None else _log_problem
    return _walk(root.absolute(), (st.st_dev, st.st_ino), excluded, include_hidden, report)


def _log_problem(problem: ScanProblem) -> None:
    log.warning("skipped %s: %s", problem.path, problem.reason)


def _os_reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


# Entry kinds in one listed folder.
_FILE, _DIR, _BROKEN, _SPECIAL = range(4)


@dataclass
class _Frame:
    """A folder on the current walk path: its pending entries, sorted."""

    key: tuple[int, int]
    rel: str  # "" for the root, else "a/b/" (with the trailing slash)
    entries: Iterator[tuple[str, int, os.DirEntry[str]]]


def _walk(
    root: Path,
    root_key: tuple[int, int],
    excluded: set[tuple[int, int]],
    include_hidden: bool,
    report: Callable[[ScanProblem], None],
) -> Iterator[FoundFile]:
    if root_key in excluded:
        return
    try:
        entries = _list_dir(str(root), include_hidden)
    except OSError as e:
        # The whole job would silently find nothing: say so instead.
        raise VsearchError(f"cannot read folder: {root} ({_os_reason(e)})") from None
    stack = [_Frame(root_key, "", iter(entries))]
    on_path = {root_key}  # folders on the current path: meeting one again is a loop
    visited = {root_key}  # every folder entered: bounds the walk to each real folder once

    while stack:
        frame = stack[-1]
        item = next(frame.entries, None)
        if item is None:
            stack.pop()
            on_path.discard(frame.key)
            continue
        _, kind, entry = item
        path = Path(entry.path)

        if kind == _BROKEN:
            report(ScanProblem(path, "broken symlink"))
        elif kind == _SPECIAL:
            report(ScanProblem(path, "not a regular file"))
        elif kind == _FILE:
            try:
                st = entry.stat()  # follows symlinks: size and mtime are the content's
            except FileNotFoundError:
                report(ScanProblem(path, "vanished during scan"))
                continue
            except OSError as e:
                report(ScanProblem(path, f"unreadable ({_os_reason(e)})"))
                continue
            if not stat.S_ISREG(st.st_mode):
                report(ScanProblem(path, "not a regular file"))
                continue
            yield FoundFile(path, frame.rel + entry.name, st.st_size, st.st_mtime_ns)
        else:  # _DIR
            try:
                st = entry.stat()
            except FileNotFoundError:
                report(ScanProblem(path, "vanished during scan"))
                continue
            except OSError as e:
                report(ScanProblem(path, f"unreadable directory ({_os_reason(e)})"))
                continue
            key = (st.st_dev, st.st_ino)
            if key in excluded:
                log.debug("excluded %s", path)
                continue
            if key in on_path:
                report(ScanProblem(path, "symlink loop" if entry.is_symlink() else "directory loop"))
                continue
            if key in visited:
                # Reached a second time through a symlink: entering it again would index
                # the same files twice (and, in pathological trees, exponentially often).
                report(ScanProblem(path, "already scanned via another path (symlink)"))
                continue
            visited.add(key)
            try:
                sub = _list_dir(entry.path, include_hidden)
            except OSError as e:
                report(ScanProblem(path, f"unreadable directory ({_os_reason(e)})"))
                continue
            on_path.add(key)
            stack.append(_Frame(key, f"{frame.rel}{entry.name}/", iter(sub)))


def _list_dir(path: str, include_hidden: bool) -> list[tuple[str, int, os.DirEntry[str]]]:
    """One folder's relevant entries, sorted so that a depth-first walk yields sorted rels.

    A folder sorts under its name plus "/", which makes the walk order equal to the order of
    the full relative paths ("a.jpg" < "a/x.jpg" < "a0.jpg"), so no global sort is needed.
    """
    out: list[tuple[str, int, os.DirEntry[str]]] = []
    with os.scandir(path) as it:
        for entry in it:
            name = entry.name
            if not include_hidden and name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                out.append((name + "/", _DIR, entry))
                continue
            try:
                is_file = entry.is_file()
                is_link = entry.is_symlink()
            except OSError:
                is_file, is_link = False, False
            if is_link and not is_file:
                # Neither a file nor a folder behind it: the target is gone (it may have been
                # a folder, e.g. an unmounted drive, so report it whatever its name).
                try:
                    os.stat(entry.path)
                except OSError:
                    out.append((name, _BROKEN, entry))
                    continue
            if not _has_image_ext(name):
                continue
            out.append((name, _FILE if is_file else _SPECIAL, entry))
    out.sort(key=lambda item: item[0])
    return out


# --------------------------------------------------------------------------- reading


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
    limit = max_bytes_limit() if max_bytes is None else max_bytes
    try:
        # A stat first, so that a device file is never even opened (opening some has effects).
        _check_regular(os.stat(path), limit)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageDecodeError("file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError("is a folder, not a file") from None
    except OSError as e:
        raise ImageDecodeError(f"unreadable ({_os_reason(e)})") from None
    with open(fd, "rb", buffering=0) as f:  # unbuffered: read() returns what it reads, no copy
        try:
            size = _check_regular(os.fstat(fd), limit)
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
                    raise ImageDecodeError(f"file too large (grew past {_size(limit)} while being read;"
                                           f" raise the limit with {MAX_BYTES_ENV})")
        except OSError as e:
            raise ImageDecodeError(f"unreadable ({_os_reason(e)})") from None
    if total == 0:
        raise ImageDecodeError("empty file")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _check_regular(st: os.stat_result, limit: int) -> int:
    """``st``'s size when it is a regular file within ``limit``; else ImageDecodeError."""
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise ImageDecodeError("is a folder, not a file")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special")
        raise ImageDecodeError(f"not a regular file ({kind})")
    if st.st_size > limit:
        raise ImageDecodeError(f"file too large ({_size(st.st_size)} > limit {_size(limit)};"
                               f" raise it with {MAX_BYTES_ENV})")
    return st.st_size


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


# --------------------------------------------------------------------------- capture date

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
    checks as :func:`read_image_bytes`) and never decodes a pixel. TIFF-based files, whose
    EXIF may sit anywhere, and containers that Pillow cannot open from their first bytes
    (a large WebP or HEIF) are read whole (within :func:`max_bytes_limit`). A file that cannot
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
        head = _read_head(Path(path), EXIF_HEAD_BYTES)
        if len(head) < EXIF_HEAD_BYTES:  # the whole file
            return _date_in(head)
        if head[:4] in _TIFF_MAGIC:
            return _date_in(read_image_bytes(Path(path)))
        try:
            return _date_in(head)
        except Exception:  # noqa: BLE001 - a container Pillow cannot open cut short (WebP, HEIF)
            return _date_in(read_image_bytes(Path(path)))
    except Exception as e:  # noqa: BLE001 - a bad header means "no date", never a failed query
        log.debug("no capture date for %s: %s", path, _one_line(e))
        return None


def _read_head(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of a regular file (a FIFO or device is refused without blocking)."""
    _check_regular(os.stat(path), max_bytes_limit())
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as f:
        _check_regular(os.fstat(fd), max_bytes_limit())
        return f.read(n)


def _date_in(data: bytes) -> datetime.date | None:
    """The capture day in an image file's (possibly truncated) bytes; Pillow reads headers only."""
    with _open(io.BytesIO(data)) as im:
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


# --------------------------------------------------------------------------- decoding


def _register_heif() -> bool:
    """Register pillow_heif's opener once; True when this call registered it.

    Lazily, because importing pillow_heif costs ~40 ms and most folders hold no HEIF.
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


def _open(fp: io.IOBase) -> Image.Image:
    """Identify the image in ``fp``, registering the HEIF opener on the first miss."""
    try:
        return Image.open(fp)
    except UnidentifiedImageError:
        if not _register_heif():
            raise
    fp.seek(0)
    return Image.open(fp)


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
    :func:`max_bytes_limit`) caps the bytes read from a path and the memory of the decoded
    frame, in the same way. Likely decompression bombs are refused (see the module notes).

    Raises :class:`ImageDecodeError` with a one-line reason on any failure.
    """
    limit = max_bytes_limit() if max_bytes is None else max_bytes
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = source
    else:
        path = Path(source)
        if path.suffix.lower() in _HEIF_SUFFIXES:
            _register_heif()
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
    except Image.DecompressionBombError as e:  # only if someone re-enabled Pillow's limit
        raise ImageDecodeError(f"image too large ({_one_line(e)}; raise it with --max-pixels)") from None
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


def _decode_unguarded(fp: io.IOBase, nbytes: int, min_side: int | None, max_pixels: int,
                      max_bytes: int) -> Image.Image:
    im = _open(fp)
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageDecodeError(f"invalid image size {w}x{h}")

    per_pixel = _frame_bytes_per_pixel(im.mode)
    if im.format in _JPEG_FORMATS:
        scale = _jpeg_scale(w, h, min_side, max_pixels, max_bytes // per_pixel)
        if scale > 1:
            # Asking for (w//scale, h//scale) makes Pillow pick exactly this power of two.
            im.draft("RGB", (w // scale, h // scale))
    if im.width * im.height > max_pixels:
        raise ImageDecodeError(
            f"image too large ({w}x{h} = {_mp(w * h)} MP > limit {_mp(max_pixels)} MP;"
            " raise it with --max-pixels)"
        )
    # After the pixel cap (its message names the flag that changes it), before any decoding.
    if w * h > BOMB_MIN_PIXELS and w * h > nbytes * MAX_PIXELS_PER_BYTE:
        raise ImageDecodeError(
            f"likely decompression bomb ({w}x{h} = {_mp(w * h)} MP claimed by a file of {_size(nbytes)},"
            f" over {MAX_PIXELS_PER_BYTE} pixels per byte; real photos stay under 20)"
        )
    frame = im.width * im.height * per_pixel
    if frame > max_bytes:
        raise ImageDecodeError(
            f"image too large to decode ({w}x{h} {im.mode} needs {_size(frame)} > limit {_size(max_bytes)};"
            f" raise it with {MAX_BYTES_ENV})"
        )

    im.load()  # the first frame only, for animated formats
    orientation = _orientation(im)
    factor = min(im.size) // max(1, min_side) if min_side is not None else 1
    if factor >= 2:
        # Box-average down to no less than min_side: the model resize that follows then
        # works on a small image (this is what reducing_gap does, done earlier).
        im = _reduce_to_rgb(im, factor)
    else:
        im = _to_rgb(im)
    if orientation is not None:
        im = im.transpose(orientation)  # after the reduce: fewer pixels to move
    return im


def _frame_bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow keeps per pixel of a decoded ``mode`` image (RGB is stored as 4)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


# Rows converted at a time by _reduce_to_rgb: about 4 MB of RGBA for a 4000-pixel-wide image.
_STRIP_PIXELS = 1 << 20


def _reduce_to_rgb(im: Image.Image, factor: int) -> Image.Image:
    """``_to_rgb(im).reduce(factor)``, converting a strip of rows at a time.

    Converting a whole large frame first (a 50 MP palette or RGBA image becomes a 200 MB
    RGBA copy plus a 200 MB RGB result) would double or triple the decode's memory; strips
    keep the extra to a few MB. Strips are whole multiples of ``factor`` rows, so the box
    averages are the ones a whole-image reduce takes. Modes "I" and "F" are scaled by the
    range of the whole image, so they are converted whole.
    """
    if im.mode in ("I", "F"):
        return _to_rgb(im).reduce(factor)
    w, h = im.size
    rows = max(factor, _STRIP_PIXELS // max(1, w) // factor * factor)
    out = Image.new("RGB", (-(-w // factor), -(-h // factor)))
    for top in range(0, h, rows):
        strip = _to_rgb(im.crop((0, top, w, min(h, top + rows))))
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


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
        with Image.open(io.BytesIO(jpeg)) as im:
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


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB, compositing transparency on white."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_rgb(im)
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in im.info
    )
    if mode == "P" and im.palette is not None and im.palette.mode == "RGBA":
        has_alpha = True
    if has_alpha:
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, (0, 0), rgba)  # the alpha band is the mask: a true "over" blend
        return out
    try:
        return im.convert("RGB")  # CMYK, L, 1, P, YCbCr, LAB, HSV, RGBX
    except ValueError:
        raise ImageDecodeError(f"unsupported colour mode {mode}") from None


def _high_depth_to_rgb(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale to 8-bit RGB.

    Pillow's own conversion clips these at 255 (a 16-bit photo comes out white), so scale
    instead: I;16 by the range of the type (x / 257, so 65535 -> 255). Modes "I" and "F"
    carry no range of their own; "I" almost always holds 16-bit data (older Pillow read
    16-bit PNGs so) and is scaled like I;16 when it fits; "F" is taken as 0..1 when it
    fits, else 0..255, else 0..65535; anything else is stretched from its min to its max.
    """
    import numpy as np

    a = np.asarray(im)
    if im.mode.startswith("I;16"):
        grey = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    else:
        f = a.astype(np.float64)
        finite = np.isfinite(f)
        lo = float(f[finite].min()) if finite.any() else 0.0
        hi = float(f[finite].max()) if finite.any() else 0.0
        if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
            top = 1.0
        elif im.mode == "F" and lo >= 0.0 and hi <= 255.0:
            top = 255.0
        elif lo >= 0.0 and hi <= 65535.0:
            top = 65535.0
        else:
            f = f - lo
            top = max(hi - lo, 1e-12)
        f = np.where(finite, f, 0.0)
        grey = np.clip(np.rint(f * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


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
        img = _to_rgb(img)
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
