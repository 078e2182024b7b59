"""The first step of an update: walk the folder and compare it with the manifest.

Unchanged files (same size and mtime) cost one stat and one indexed lookup; what needs work
(new, changed, or skipped before) becomes a :class:`Candidate` for the pipeline.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vsearch.imaging import images
from vsearch.storage.store import Store

__all__ = ["Candidate", "Scan", "excluded", "scan", "walk"]


@dataclass(frozen=True)
class Candidate:
    """A file that needs work: new, changed since the manifest saw it, or skipped before."""

    rel: str
    size: int
    mtime_ns: int
    known: bool  # the manifest has an entry for this path
    skipped: str | None = None  # the reason it was skipped before, when unchanged since



def walk(store: Store, root: Path, exclude: tuple[str, ...],
          on_problem: Callable[[images.ScanProblem], None]) -> Iterator[images.FoundFile]:
    """The image files under ``root``, less the index itself and what ``exclude`` names."""
    for found in images.scan_folder(root, exclude=[store.dir], on_problem=on_problem):
        if not (exclude and excluded(found.rel, exclude)):
            yield found


def excluded(rel: str, patterns: Iterable[str]) -> bool:
    """Whether ``rel`` (a POSIX path relative to the folder) matches one of the ``--exclude`` globs.

    A pattern matches the path itself, one of its folders (``2019/raw`` leaves out everything
    below it), or, when it has no ``/``, any single name in the path (``thumbs``, ``*.png``).
    """
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.strip("/")
        names = prefixes if "/" in pattern else prefixes + parts
        if any(fnmatch.fnmatchcase(name, pattern) for name in names):
            return True
    return False


@dataclass
class Scan:
    """What a walk of the folder found: the files that need work (files skipped before among
    them), every path seen, the mtime of every folder on the way to an image (for the
    query-time staleness check, :mod:`vsearch.retrieval.freshness`), how many files are
    unchanged, and (path, reason) for what could not be looked at."""

    candidates: list[Candidate] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    dirs: dict[str, int] = field(default_factory=dict)
    unchanged: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)


def scan(store: Store, root: Path, exclude: tuple[str, ...]) -> Scan:
    """Walk ``root``; unchanged files (same size and mtime) cost one stat and one indexed lookup."""
    result = Scan()
    candidates, seen, dirs = result.candidates, result.seen, result.dirs

    def problem(p: images.ScanProblem) -> None:
        result.problems.append((str(p.path), p.reason))

    for found in walk(store, root, exclude, problem):
        if not _storable(found.rel):
            # SQLite stores text as UTF-8; a name that is not (undecodable bytes on Linux) cannot
            # be a manifest key. Say so instead of failing the whole run.
            shown = os.fsencode(found.path).decode("utf-8", "replace")
            result.problems.append((shown, "file name is not valid UTF-8; rename it"))
            continue
        seen.add(found.rel)
        _note_dirs(root, found.rel, dirs)
        entry = store.entry(found.rel)
        if entry is not None and entry.size == found.size and entry.mtime_ns == found.mtime_ns:
            if entry.skip_reason is None:
                result.unchanged += 1
                continue
            # Skipped before: try again. Making a file readable (chmod) or installing a codec
            # changes no size or mtime, so an unchanged stat says nothing about these.
            candidates.append(Candidate(found.rel, found.size, found.mtime_ns, True, entry.skip_reason))
            continue
        candidates.append(Candidate(found.rel, found.size, found.mtime_ns, entry is not None))
    return result


def _storable(rel: str) -> bool:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _note_dirs(root: Path, rel: str, dirs: dict[str, int]) -> None:
    """Record the mtime of ``rel``'s folder and of every folder above it, once each.

    Ancestors too, because a new subfolder changes only its parent's mtime.
    """
    parent = rel.rpartition("/")[0]
    while parent not in dirs:
        dirs[parent] = _mtime_ns(root / parent)
        if not parent:
            break
        parent = parent.rpartition("/")[0]


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0
