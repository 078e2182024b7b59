"""Relevance judgments, impressions and clicks recorded by the web page (``vsearch serve``).

    judgments.jsonl  one line per judgment: {"time", "query", "result", "label", "result_path"}
    events.jsonl     one line per impression or click: {"time", "kind", "query", "result", "rank"}

Both live in the index folder and key images by content digest (the manifest's BLAKE2b), so
they survive renames, moves and rebuilds, like the not-duplicate marks. A query is a digest
too: an indexed image's, or an uploaded image's bytes; a text query is ``text:`` + the text.
Each line is appended and fsynced before the call returns (``atomic.append_line``); a torn
last line from a crash is skipped when read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import sidelog
from .errors import VsearchError
from .store import KEPT_LOGS

__all__ = ["EVENTS_FILE", "JUDGMENTS_FILE", "LABELS", "Event", "Judgment", "read_events", "read_judgments",
           "record_event", "record_judgment"]

JUDGMENTS_FILE, EVENTS_FILE = KEPT_LOGS  # named in store, whose --rebuild keeps them
#: The labels a judgment may carry.
LABELS: tuple[str, ...] = ("relevant", "not-relevant")
EVENT_KINDS: tuple[str, ...] = ("impression", "click")


@dataclass(frozen=True)
class Judgment:
    """A person's label for one result of one query."""

    time: str
    query: str
    result: str
    label: str
    result_path: str | None = None


@dataclass(frozen=True)
class Event:
    """A result shown (``impression``) or opened (``click``) at a rank for a query."""

    time: str
    kind: str
    query: str
    result: str
    rank: int


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _check_key(name: str, value: str) -> None:
    if not isinstance(value, str) or not value or len(value) > 1000 or "\n" in value:
        raise VsearchError(f"{name} must be a content digest or text key (one line, at most 1000 characters)")


def record_judgment(index_dir: Path, query: str, result: str, label: str, *,
                    result_path: str | None = None) -> Judgment:
    """Append a judgment (``label`` one of :data:`LABELS`) of ``result`` for ``query``; return it."""
    _check_key("query", query)
    _check_key("result", result)
    if label not in LABELS:
        raise VsearchError(f"label must be one of {', '.join(LABELS)} (got {label!r})")
    judgment = Judgment(_now(), query, result, label, result_path)
    sidelog.append(Path(index_dir) / JUDGMENTS_FILE, judgment.__dict__)
    return judgment


def record_event(index_dir: Path, kind: str, query: str, result: str, rank: int) -> Event:
    """Append an impression or a click of ``result`` at ``rank`` (1 = first) for ``query``."""
    _check_key("query", query)
    _check_key("result", result)
    if kind not in EVENT_KINDS:
        raise VsearchError(f"kind must be one of {', '.join(EVENT_KINDS)} (got {kind!r})")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise VsearchError(f"rank must be a whole number, 1 or more (got {rank!r})")
    event = Event(_now(), kind, query, result, rank)
    sidelog.append(Path(index_dir) / EVENTS_FILE, event.__dict__)
    return event


def read_judgments(index_dir: Path) -> list[Judgment]:
    """Every recorded judgment, oldest first (damaged lines are skipped with a warning)."""
    return sidelog.read(Path(index_dir) / JUDGMENTS_FILE, lambda record: _parse(Judgment, record))


def read_events(index_dir: Path) -> list[Event]:
    """Every recorded impression and click, oldest first."""
    return sidelog.read(Path(index_dir) / EVENTS_FILE, lambda record: _parse(Event, record))


def _parse(kind: type, record: object) -> Any:
    """One line's record as ``kind``; ValueError for keys ``kind`` does not have."""
    if not isinstance(record, dict) or not set(record) <= set(kind.__dataclass_fields__):
        raise ValueError(record)
    return kind(**record)


