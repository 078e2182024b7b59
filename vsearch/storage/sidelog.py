"""Append-only JSON-lines side records in the index folder (not-duplicate marks; the page's
earlier judgments, read once to import them into judgments.sqlite): one fsynced line per
record, read back skipping what is damaged; and the time stamp every side record carries.

A crash can tear the last line, and a person may edit the file by hand: such a line is skipped
with a warning naming it, and every other record still counts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from vsearch import atomic
from vsearch.errors import VsearchError
from vsearch.storage.regular import read_regular

log = logging.getLogger(__name__)

T = TypeVar("T")


def timestamp() -> str:
    """The time every side record carries (marks, judgments, clicks, undo logs): local time
    with its UTC offset, to the second, e.g. ``2026-12-01T21:25:38+0000``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def append(path: Path, record: dict[str, Any]) -> None:
    """Add one record as a line, fsynced before this returns (``atomic.append_line``)."""
    atomic.append_line(path, json.dumps(record, ensure_ascii=False).encode("utf-8"))


def read(path: Path, parse: Callable[[Any], T]) -> list[T]:
    """Every line of ``path`` through ``parse`` (given the decoded JSON value), in order; none
    when the file does not exist. A line that is not JSON, or that ``parse`` rejects with
    ValueError, KeyError or TypeError, is skipped with a warning."""
    out, damaged = scan(path, parse)
    for number in damaged:
        log.warning("warning: %s line %d is damaged and was ignored", path, number)
    return out


def scan(path: Path, parse: Callable[[Any], T]) -> tuple[list[T], list[int]]:
    """:func:`read` without the warnings: (the records, the numbers of the damaged lines).

    Only a regular file is read (``storage.regular``): a FIFO, device or folder in its place, or
    a file past ``MAX_SIDE_BYTES``, is a :class:`VsearchError` naming it and the repair."""
    try:
        data = read_regular(path)  # a FIFO, device or folder in its place: refused, never waited on
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        raise VsearchError(f"cannot read {path}: {exc.strerror or exc}; move it out of the index folder to go on "
                           "without what it records") from None
    out: list[T] = []
    damaged: list[int] = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(parse(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            damaged.append(number)
    return out, damaged
