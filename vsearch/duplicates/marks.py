""""Not a duplicate" marks: pairs of images a person said are different photos.

    marks.jsonl   one line per mark: {"a": DIGEST, "b": DIGEST, "paths": [A, B], "time": ...}
                  and per mark taken back: the same with "unmark": true


A mark keys the two images by content digest (the manifest's BLAKE2b), not by path, so it
survives renames, moves and rebuilds (``build-index --rebuild`` and the stale-file cleanup keep
the file; see ``store``). The file is append-only and each line is fsynced before
:func:`add_not_duplicate` returns (``atomic.append_line``); a torn last line from a crash is
skipped when read. The paths are kept only to make the file readable by a person, and to
name a pair whose files are no longer indexed. The log is read in order: a mark taken back
(:func:`remove_not_duplicate`) stands until the pair is marked again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vsearch.storage import sidelog
from vsearch.errors import VsearchError
from vsearch.storage.store import MARKS_FILE

__all__ = ["Mark", "add_not_duplicate", "marks", "marks_path", "marks_problem", "not_duplicates",
           "remove_not_duplicate"]


@dataclass(frozen=True)
class Mark:
    """One standing not-duplicate mark: the two content digests (sorted), the paths recorded
    with it (None when none were), and when it was recorded (ISO 8601)."""

    a: str
    b: str
    paths: tuple[str, str] | None
    time: str | None


def marks_path(index_dir: Path) -> Path:
    """Where an index keeps its not-duplicate marks."""
    return Path(index_dir) / MARKS_FILE


def add_not_duplicate(index_dir: Path, digest_a: str, digest_b: str, *, paths: tuple[str, str] | None = None) -> None:
    """Record that the images with these content digests are not duplicates of each other.

    ``paths`` (optional) are written beside the digests for a person reading the file.
    Recording a pair twice is harmless. Two equal digests (the same bytes) are refused.
    """
    if not digest_a or not digest_b:
        raise VsearchError("a not-duplicate mark needs two content digests")
    if digest_a == digest_b:
        raise VsearchError("the two images are the same bytes: they are duplicates, and cannot be marked apart")
    a, b = sorted((digest_a, digest_b))
    if frozenset((a, b)) in not_duplicates(index_dir):
        return
    record: dict[str, Any] = {"a": a, "b": b, "time": sidelog.timestamp()}
    if paths is not None:
        record["paths"] = [str(p) for p in paths]
    sidelog.append(marks_path(index_dir), record)


def remove_not_duplicate(index_dir: Path, digest_a: str, digest_b: str, *,
                         paths: tuple[str, str] | None = None) -> None:
    """Take back the mark that the images with these content digests are not duplicates: one
    more line, ``"unmark": true`` (the log stays append-only). Raises :class:`VsearchError`
    when no such mark stands."""
    a, b = sorted((digest_a, digest_b))
    if frozenset((a, b)) not in not_duplicates(index_dir):
        raise VsearchError("these two images are not marked as not duplicates; there is no mark to take back")
    record: dict[str, Any] = {"a": a, "b": b, "unmark": True, "time": sidelog.timestamp()}
    if paths is not None:
        record["paths"] = [str(p) for p in paths]
    sidelog.append(marks_path(index_dir), record)


def not_duplicates(index_dir: Path) -> set[frozenset[str]]:
    """Every standing not-duplicate pair, as a set of ``frozenset({digest_a, digest_b})``."""
    return {frozenset((m.a, m.b)) for m in marks(index_dir)}


def marks(index_dir: Path) -> list[Mark]:
    """Every standing not-duplicate mark, in the order they were recorded (the log replayed:
    a mark taken back is gone, until it is recorded again)."""
    standing: dict[frozenset[str], Mark] = {}
    for mark, taken_back in sidelog.read(marks_path(index_dir), _record):
        pair = frozenset((mark.a, mark.b))
        if len(pair) != 2:
            continue
        if taken_back:
            standing.pop(pair, None)
        elif pair not in standing:
            standing[pair] = mark
    return list(standing.values())


def _record(record: Any) -> tuple[Mark, bool]:
    """One line: the mark it records, and whether it takes the mark back."""
    a, b = sorted((str(record["a"]), str(record["b"])))
    paths = record.get("paths")
    named = (str(paths[0]), str(paths[1])) if isinstance(paths, list) and len(paths) == 2 else None
    return Mark(a, b, named, str(record["time"]) if record.get("time") else None), record.get("unmark") is True


def _pair(record: Any) -> frozenset[str]:
    return frozenset((str(record["a"]), str(record["b"])))


def marks_problem(index_dir: Path) -> str | None:
    """What is wrong with the marks file (for ``check()``), or None: it cannot be read, it is
    empty (its marks are lost), or some lines are damaged (each is skipped, with a warning,
    when the marks are read; the others still apply)."""
    path = marks_path(index_dir)
    try:
        pairs, damaged = sidelog.scan(path, _pair)  # first: a FIFO or device is refused, and says so
        if not pairs and not damaged and path.stat().st_size == 0:
            return "empty: the marks it held are lost"
    except VsearchError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if damaged:
        more = f" and {len(damaged) - 1} more" if len(damaged) > 1 else ""
        return f"line {damaged[0]}{more} damaged (skipped when read: the other marks still apply)"
    return None
