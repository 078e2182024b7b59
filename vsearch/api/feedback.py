"""What people tell the index through the page: impressions and clicks (the click log, with
its position-bias swaps) and relevance verdicts. All are side records in the index folder
(``judgments.sqlite``), keyed by content digest, that survive renames and rebuilds."""

from __future__ import annotations

from vsearch.api.common import PathLike, index_dir_of
from vsearch.learning import clicks, judgments
from vsearch.learning.clicks import DEFAULT_SWAP_FRACTION, MAX_DWELL_MS, log_click, log_impressions
from vsearch.learning.interleaving import Interleaved, team_draft
from vsearch.learning.interleaving import log_click as _log_interleaved_click
from vsearch.learning.interleaving import log_dwell as _log_interleaved_dwell
from vsearch.learning.interleaving import log_interleaved as _log_interleaved
from vsearch.storage.store import file_digest

__all__ = ["DEFAULT_SWAP_FRACTION", "MAX_DWELL_MS", "Interleaved", "bytes_digest", "latest_shown", "log_click",
           "log_dwell", "log_impressions", "log_interleaved", "log_interleaved_click", "log_interleaved_dwell",
           "record_verdict", "team_draft"]


def bytes_digest(data: bytes) -> str:
    """The content digest of an image's bytes, as the index keys files (an upload's, say)."""
    return file_digest(data)


def latest_shown(index_dir: PathLike | None, query: str, result: str) -> tuple[int, int] | None:
    """The newest logged list of ``query`` that showed ``result`` (a digest): (query_id, rank), or None."""
    return clicks.latest_shown(index_dir_of(index_dir), query, result)


def record_verdict(index_dir: PathLike | None, query: str, result: str, relevant: bool, *, source: str,
                   rank: int | None = None, result_path: str | None = None) -> judgments.Judgment:
    """Record one verdict on ``result`` (a digest) for ``query`` (a digest or ``text:...``),
    with the rank it was shown at, when known."""
    return judgments.record_judgment(index_dir_of(index_dir), query, result, relevant, source=source, rank=rank,
                                     result_path=result_path)


def log_interleaved(index_dir: PathLike | None, query: str, shown: Interleaved[str], a: str, b: str) -> int:
    """Log an interleaved list (:func:`team_draft` of configurations ``a`` and ``b``, result
    keys as digests) shown for ``query``; returns the list id that clicks name. Kept apart from
    the click log: an interleaved list is neither ranker's order."""
    return _log_interleaved(index_dir_of(index_dir), query, shown, a, b)


def log_interleaved_click(index_dir: PathLike | None, list_id: int, result: str) -> int:
    """Log a click on ``result`` (a digest) in interleaved list ``list_id``; returns its rank."""
    return _log_interleaved_click(index_dir_of(index_dir), list_id, result)


def log_dwell(index_dir: PathLike | None, query_id: int, query: str, result: str, rank: int, ms: int) -> None:
    """Log the time (``ms``, milliseconds, 0 to :data:`MAX_DWELL_MS`) a person spent on
    ``result`` (a digest), shown at ``rank`` in the list logged as ``query_id`` for ``query``."""
    clicks.log_dwell(index_dir_of(index_dir), query_id, query, result, rank, ms)


def log_interleaved_dwell(index_dir: PathLike | None, list_id: int, query: str, result: str, rank: int,
                          ms: int) -> None:
    """Log the time (``ms``) a person spent on ``result`` (a digest), shown at ``rank`` in
    interleaved list ``list_id`` of ``query``; it counts for the team that contributed it."""
    _log_interleaved_dwell(index_dir_of(index_dir), list_id, query, result, rank, ms)
