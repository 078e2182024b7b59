"""What every part of the API shares: how a path is given, the default index folder, and the
checks of the options several calls take."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, get_args

from vsearch.errors import VsearchError
from vsearch.locations import default_index_dir
from vsearch.retrieval.search import MAX_K, SearchMode
from vsearch.storage.store import file_digest

#: A path given as a str or any os.PathLike (pathlib.Path included).
PathLike = str | os.PathLike[str]
#: The search modes every call that searches takes.
MODES: tuple[str, ...] = get_args(SearchMode)

__all__ = ["MODES", "PathLike", "check_mode", "check_qe", "check_seed", "check_utf8_name", "content_digest", "index_dir_of", "listed", "read_header", "register_heif"]


def index_dir_of(index_dir: PathLike | None) -> Path:
    """The index folder a call means: ``index_dir``, or :func:`default_index_dir` when None."""
    return default_index_dir() if index_dir is None else Path(index_dir).expanduser()


def listed(value: Any) -> list[Any]:
    """One query (str or path) or a sequence of them, as a list."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    return list(value)


def check_mode(mode: str) -> None:
    """Refuse a search mode that is not one of :data:`MODES` (the one check every call uses)."""
    if mode not in MODES:
        raise VsearchError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")


def check_qe(qe: int) -> None:
    """Refuse a query-expansion depth that is not a whole number of 0 or more."""
    if isinstance(qe, bool) or not hasattr(qe, "__index__") or qe < 0:
        raise VsearchError(f"qe must be 0 or more (got {qe!r})")
    if qe > MAX_K:
        raise VsearchError(f"qe= takes at most {MAX_K} results, not {qe}")


def check_seed(seed: int) -> None:
    """Refuse a seed that numpy's generators do not take: a whole number of 0 or more."""
    if isinstance(seed, bool) or not hasattr(seed, "__index__") or seed < 0:
        raise VsearchError(f"seed= takes 0 or more (got {seed!r})")


def check_utf8_name(path: PathLike) -> None:
    """Refuse a file name that is not valid UTF-8 (it cannot be recorded: judgments, marks and
    the index keep UTF-8 names only) in one line."""
    name = os.fspath(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise VsearchError(f"file name is not valid UTF-8: {shown}; rename it (vsearch reads only UTF-8 names)") from None


def content_digest(path: Path) -> str:
    """The manifest's content digest of a file (what marks and judgments are keyed by)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise VsearchError(f"no such file: {path}") from None
    except OSError as exc:  # a name too long for the file system, a folder that cannot be searched
        raise VsearchError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):  # a folder, or a FIFO that would block the read
        raise VsearchError(f"{path} is not a regular file; give an image file")
    from vsearch.imaging import images  # Pillow: only marking or judging a pair pays for it

    try:  # the one bounded reader every image read goes through (regular files, byte cap)
        return file_digest(images.read_image_bytes(path))
    except VsearchError as exc:
        raise VsearchError(f"cannot read {path}: {exc}") from None


def register_heif() -> bool:
    """Let Pillow open HEIF/HEIC files (pillow-heif's opener; process-wide, as Pillow's openers
    are): for a caller that opens images with Pillow itself, e.g. to read an upload's header.
    Whether HEIF can be read."""
    from vsearch.imaging import images  # Pillow: only a caller that opens images pays for it

    return images.register_heif()


def read_header(source: Path | bytes) -> Any:
    """The size and format an image's header claims (a path or the file's bytes), decoding
    nothing and leaving Pillow's process-wide pixel limit alone: an ``ImageHeader`` with
    ``width``, ``height``, ``format`` and ``pixels``. Raises :class:`~vsearch.errors.ImageDecodeError`."""
    from vsearch.imaging import images  # Pillow: only a caller that reads headers pays for it

    return images.read_header(source)
