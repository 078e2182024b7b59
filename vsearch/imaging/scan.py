"""Find the image files under a folder: :func:`scan_folder` streams them in a fixed order.

The order is sorted by POSIX relative path, so that two runs over the same folder see the
same files in the same order. What cannot be read (folders, broken symlinks, files that
vanish) is reported instead of failing the walk. A file is an image by its name alone
(:data:`IMAGE_EXTENSIONS`): nothing here opens a file or imports Pillow.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vsearch.errors import VsearchError
from vsearch.imaging import raw
from vsearch.imaging.reading import os_reason as _os_reason

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif"}
) | raw.RAW_EXTENSIONS


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
