""""Not a duplicate" marks: pairs of images a person said are different photos.

    marks.jsonl   one line per mark: {"a": DIGEST, "b": DIGEST, "paths": [A, B], "time": ...}

A mark keys the two images by content digest (the manifest's BLAKE2b), not by path, so it
survives renames, moves and rebuilds (``build-index --rebuild`` and the stale-file cleanup keep
the file; see ``store``). The file is append-only and each line is fsynced before
:func:`add_not_duplicate` returns (``atomic.append_line``); a torn last line from a crash is
skipped when read. The paths are kept only to make the file readable by a person.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vsearch.storage import sidelog
from vsearch.errors import VsearchError
from vsearch.storage.store import MARKS_FILE

__all__ = ["add_not_duplicate", "marks_path", "not_duplicates"]


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


def not_duplicates(index_dir: Path) -> set[frozenset[str]]:
    """Every recorded not-duplicate pair, as a set of ``frozenset({digest_a, digest_b})``."""
    pairs = sidelog.read(marks_path(index_dir), lambda record: frozenset((str(record["a"]), str(record["b"]))))
    return {pair for pair in pairs if len(pair) == 2}
