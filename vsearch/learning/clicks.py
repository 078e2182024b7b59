"""The click log: which results a query showed, at which rank, and which were clicked.

Kept in the index's ``judgments.sqlite`` (see vsearch.learning.judgments) in three tables: ``queries``
(one row per shown result list, with which adjacent pair was swapped, if any), ``impressions``
(each result shown: its rank and the rank the system gave it) and ``clicks``. Results are keyed
by content digest, queries by query key (a digest, or ``text:`` + the text), as judgments are.

Clicks say more about where a result was shown than about whether it was any good: people
look at the top of a list first (position bias). To measure that bias instead of assuming it,
:func:`log_impressions` randomises: on a fraction of queries (``swap_fraction``) it swaps one
adjacent pair, ranks k and k + 1 for a random k (a RandPair design, Wang et al. 2018), before
the list is shown, and logs which pair. vsearch.learning.propensity turns those swaps into per-rank
examination propensities, and those into a position-debiased click metric.

The log is a window, not a history: each list takes about 2.3 KB at 20 results (measured), and
a page searches often, so :func:`log_impressions` keeps the newest :data:`MAX_LOGGED_LISTS`
lists (with their impressions and clicks) and forgets older ones in the same transaction. The
newest lists are a fair sample of the recent ones, swapped or not, clicked or not, which is
what the propensities and the click metrics need. SQLite reuses the pages freed, so the file
stops growing at the size of the window. Verdicts (``judgments``) are not part of the window.
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vsearch.storage import sidelog
from vsearch.errors import VsearchError
from vsearch.learning.judgments import check_key, database, db_path

__all__ = ["DEFAULT_SWAP_FRACTION", "MAX_DWELL_MS", "MAX_LOGGED_LISTS", "SWAP_DEPTH", "ArmStats", "DwellStats",
           "LoggedQuery", "Shown", "arm_stats", "check_dwell", "check_rank", "dwell_stats", "log_click", "log_dwell",
           "log_impressions", "read_click_log", "two_proportion_p"]

#: Share of queries whose shown list has one adjacent pair swapped (the page's default too).
DEFAULT_SWAP_FRACTION = 0.1
#: Swaps are drawn among ranks 1 .. SWAP_DEPTH: propensities are estimated that deep.
SWAP_DEPTH = 10
#: At most this many results of one list are logged.
MAX_SHOWN = 1000
#: The click log keeps the newest this many result lists (about 23 MB at 20 results a list).
MAX_LOGGED_LISTS = 10_000
#: The longest time on one result a dwell record may claim (1 hour): a page left open on a photo
#: overnight is not a person looking at it, and would swamp every mean.
MAX_DWELL_MS = 3_600_000
#: z for a two-sided 95% interval.
_Z95 = 1.959963984540054


@dataclass(frozen=True)
class Shown:
    """What :func:`log_impressions` logged: the list in the order to show it.

    ``query_id``: pass it to :func:`log_click`. ``results``: the result keys, best shown first
    (the input order, or with one pair swapped). ``swapped``: k when ranks k and k + 1 were
    swapped (1-based), else None. ``order[i]``: the input position of ``results[i]``.
    ``arm``: the split A/B arm (configuration name) that ranked it, or None outside a split.
    """

    query_id: int
    results: tuple[str, ...]
    swapped: int | None = None
    order: tuple[int, ...] = ()
    arm: str | None = None

    def __iter__(self):  # noqa: ANN204 - for ``list(shown)``: the shown order
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)


@dataclass(frozen=True)
class LoggedQuery:
    """One logged result list, as read back: shown order, the system's order, what was clicked.

    ``shown[i]`` is the result at rank i + 1; ``original_rank[i]`` is the rank the system gave
    it; ``clicked`` holds the shown ranks that were clicked (each once). ``arm``: the split A/B
    arm that ranked the list (None outside a split); ``dwell``: each time recorded on one of its
    results, in milliseconds, oldest first.
    """

    query_id: int
    query: str
    shown: tuple[str, ...]
    original_rank: tuple[int, ...]
    swapped: int | None
    clicked: frozenset[int]
    arm: str | None = None
    dwell: tuple[int, ...] = ()


def log_impressions(index_dir: Path, query: str, results: Sequence[str], *,
                    swap_fraction: float = DEFAULT_SWAP_FRACTION,
                    rng: random.Random | None = None, keep_lists: int = MAX_LOGGED_LISTS,
                    arm: str | None = None) -> Shown:
    """Log that ``results`` (result keys, the system's order) are shown for ``query``.

    On a ``swap_fraction`` of calls, one adjacent pair (k, k + 1), k uniform over the first
    :data:`SWAP_DEPTH` ranks the list has, is swapped first: show the returned
    :attr:`Shown.results`, in that order. ``rng``: a ``random.Random`` for reproducible
    draws (default: a fresh unseeded one). ``keep_lists``: the log keeps the newest this many
    lists, this one included; older ones go with their impressions and clicks. ``arm``: the
    name of the configuration that ranked ``results`` in a split A/B test (one line, at most
    200 characters), kept with the list so its click-through counts for that arm. One
    transaction; returns what was logged.
    """
    check_key("query", query)
    if arm is not None and (not isinstance(arm, str) or not arm.strip() or len(arm) > 200 or "\n" in arm):
        raise VsearchError("an arm is named by one line of 1 to 200 characters, e.g. 'qe=2'")
    results = [check_key("result", r) for r in results]
    if not results:
        raise VsearchError("no results to log: an impression needs at least one result")
    if len(results) > MAX_SHOWN:
        raise VsearchError(f"at most {MAX_SHOWN} results can be logged for one query (got {len(results)})")
    if not (isinstance(swap_fraction, (int, float)) and 0.0 <= swap_fraction <= 1.0):
        raise VsearchError(f"swap_fraction must be between 0 and 1 (got {swap_fraction!r})")
    if isinstance(keep_lists, bool) or not isinstance(keep_lists, int) or keep_lists < 1:
        raise VsearchError(f"keep_lists must be a whole number, 1 or more (got {keep_lists!r})")
    rng = rng or random.Random()
    order = list(range(len(results)))
    swapped = None
    depth = min(len(results), SWAP_DEPTH)
    # Draw both numbers every time, so a seeded rng gives the same swaps whatever the fraction hits.
    hit, k = rng.random() < swap_fraction, rng.randrange(1, depth) if depth >= 2 else None
    if hit and k is not None:
        swapped = k
        order[k - 1], order[k] = order[k], order[k - 1]
    shown = tuple(results[i] for i in order)
    with database(index_dir, write=True) as db:
        cur = db.execute("INSERT INTO queries(time, query, shown, swapped, arm) VALUES (?, ?, ?, ?, ?)",
                         (sidelog.timestamp(), query, len(shown), swapped, arm))
        query_id = int(cur.lastrowid)  # type: ignore[arg-type]  # set by the INSERT
        db.executemany("INSERT INTO impressions(query_id, rank, original_rank, result) VALUES (?, ?, ?, ?)",
                       [(query_id, rank, original + 1, results[original])
                        for rank, original in enumerate(order, start=1)])
        _forget_before(db, query_id, keep_lists)
    return Shown(query_id, shown, swapped, tuple(order), arm)


def _forget_before(db: sqlite3.Connection, newest: int, keep: int) -> None:
    """Delete every list older than the newest ``keep`` (up to ``newest``), with its impressions
    and clicks. The newest id never goes, so ids only grow: a page's old id names no new list."""
    row = db.execute("SELECT id FROM queries WHERE id <= ? ORDER BY id DESC LIMIT 1 OFFSET ?",
                     (newest, keep)).fetchone()
    if row is None:
        return
    for table, column in (("dwell", "query_id"), ("clicks", "query_id"), ("impressions", "query_id"),
                          ("queries", "id")):
        db.execute(f"DELETE FROM {table} WHERE {column} <= ?", (int(row[0]),))  # noqa: S608 - names from this tuple


def log_click(index_dir: Path, query_id: int, result: str) -> int:
    """Log a click on ``result`` in the list logged as ``query_id``; returns its shown rank.

    A result that list did not show is refused. A second click on the same result of the same
    list is logged too, but counts once (see :func:`read_click_log`). A list that showed the
    same key twice (two copies of one photo) gets the click at the first of its ranks.
    """
    if isinstance(query_id, bool) or not isinstance(query_id, int):
        raise VsearchError(f"query_id must be a whole number (got {query_id!r})")
    check_key("result", result)
    with database(index_dir, write=True) as db:
        row = db.execute("SELECT min(rank) FROM impressions WHERE query_id = ? AND result = ? HAVING count(*)",
                         (query_id, result)).fetchone()
        if row is None:
            raise VsearchError(f"query {query_id} did not show {result}: no impression to click")
        db.execute("INSERT INTO clicks(time, query_id, result, rank) VALUES (?, ?, ?, ?)",
                   (sidelog.timestamp(), query_id, result, int(row[0])))
    return int(row[0])


def check_dwell(ms: object) -> int:
    """A dwell time: a whole number of milliseconds, 0 to :data:`MAX_DWELL_MS`."""
    if isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms <= MAX_DWELL_MS:
        raise VsearchError(f"ms must be a whole number of milliseconds, 0 to {MAX_DWELL_MS:,} (one hour) "
                           f"(got {str(ms)[:40]!r})")
    return ms


def check_rank(rank: object) -> int:
    """A shown rank: a whole number, 1 or more."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise VsearchError(f"rank must be a whole number, 1 or more (got {str(rank)[:40]!r})")
    return rank


def log_dwell(index_dir: Path, query_id: int, query: str, result: str, rank: int, ms: int) -> None:
    """Log that ``result``, shown at ``rank`` in the list logged as ``query_id`` for ``query``,
    was looked at for ``ms`` milliseconds (visible time only: the page's own measure).

    Refused unless that list was logged for ``query`` and showed ``result`` at ``rank``: a
    record the log cannot place would count for no list, or the wrong one. One transaction.
    """
    if isinstance(query_id, bool) or not isinstance(query_id, int):
        raise VsearchError(f"query_id must be a whole number (got {query_id!r})")
    check_key("query", query)
    check_key("result", result)
    check_rank(rank)
    check_dwell(ms)
    with database(index_dir, write=True) as db:
        row = db.execute("SELECT q.query FROM queries q JOIN impressions i ON i.query_id = q.id "
                         "WHERE q.id = ? AND i.rank = ? AND i.result = ?", (query_id, rank, result)).fetchone()
        if row is None:
            raise VsearchError(f"query {query_id} did not show {result} at rank {rank}: no impression to time")
        if row[0] != query:
            raise VsearchError(f"query {query_id} was logged for another query than the one given")
        db.execute("INSERT INTO dwell(time, query_id, result, rank, ms) VALUES (?, ?, ?, ?, ?)",
                   (sidelog.timestamp(), query_id, result, rank, ms))


def latest_shown(index_dir: Path, query: str, result: str) -> tuple[int, int] | None:
    """``(query_id, rank)`` of the newest list logged for ``query`` that showed ``result``, or None.

    For a caller that knows the query key but not the id (the page before it sends ids).
    """
    if not db_path(index_dir).exists():
        return None
    with database(index_dir) as db:
        row = db.execute("SELECT i.query_id, i.rank FROM impressions i JOIN queries q ON q.id = i.query_id "
                         "WHERE q.query = ? AND i.result = ? ORDER BY i.query_id DESC, i.rank LIMIT 1",
                         (query, result)).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def read_click_log(index_dir: Path) -> list[LoggedQuery]:
    """Every logged result list, oldest first, with its clicks."""
    if not db_path(index_dir).exists():
        return []
    with database(index_dir) as db:
        queries = db.execute("SELECT id, query, swapped, arm FROM queries ORDER BY id").fetchall()
        shown: dict[int, list[tuple[int, int, str]]] = {}
        for qid, rank, original, result in db.execute(
                "SELECT query_id, rank, original_rank, result FROM impressions ORDER BY query_id, rank"):
            shown.setdefault(qid, []).append((rank, original, result))
        clicked: dict[int, set[int]] = {}
        for qid, rank in db.execute("SELECT query_id, rank FROM clicks"):
            clicked.setdefault(qid, set()).add(int(rank))
        dwell: dict[int, list[int]] = {}
        for qid, ms in db.execute("SELECT query_id, ms FROM dwell ORDER BY id"):
            dwell.setdefault(qid, []).append(int(ms))
    out = []
    for qid, query, swapped, arm in queries:
        items = shown.get(qid, [])
        out.append(LoggedQuery(int(qid), query, tuple(r for _, _, r in items), tuple(o for _, o, _ in items),
                               swapped, frozenset(clicked.get(qid, ())), arm, tuple(dwell.get(qid, ()))))
    return out


# --- what the log says per arm, and of time spent ----------------------------------------------


@dataclass(frozen=True)
class DwellStats:
    """Times spent on results (milliseconds): how many were recorded, their median and mean
    (None when none was). The median is the one to read: a few long looks pull the mean."""

    count: int
    median_ms: float | None
    mean_ms: float | None


def dwell_stats(times: Sequence[int]) -> DwellStats:
    """The :class:`DwellStats` of ``times`` (milliseconds)."""
    if not times:
        return DwellStats(0, None, None)
    ordered = sorted(times)
    n, mid = len(ordered), len(ordered) // 2
    median = float(ordered[mid]) if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return DwellStats(n, median, sum(ordered) / n)


@dataclass(frozen=True)
class ArmStats:
    """One arm of a split A/B test (or, with ``arm`` None, every list logged outside a split).

    ``lists``: result lists it served; ``clicked_lists``: those with at least one click;
    ``ctr``: clicked_lists / lists, the click-through rate, with its 95% Wilson interval ``ci``;
    ``clicks``: clicks in all (each result of a list once); ``dwell``: the times spent on its results.
    """

    arm: str | None
    lists: int
    clicked_lists: int
    clicks: int
    ctr: float
    ci: tuple[float, float]
    dwell: DwellStats


def _wilson(successes: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion ((nan, nan) when ``n`` is 0)."""
    if n == 0:
        return (math.nan, math.nan)
    p, z = successes / n, _Z95
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def arm_stats(logs: Sequence[LoggedQuery]) -> list[ArmStats]:
    """Click-through and dwell per arm, in the order each arm first appears (lists logged outside
    a split form one group, ``arm`` None)."""
    groups: dict[str | None, list[LoggedQuery]] = {}
    for q in logs:
        groups.setdefault(q.arm, []).append(q)
    out = []
    for arm, items in groups.items():
        clicked = sum(1 for q in items if q.clicked)
        out.append(ArmStats(arm, len(items), clicked, sum(len(q.clicked) for q in items),
                            clicked / len(items), _wilson(clicked, len(items)),
                            dwell_stats([ms for q in items for ms in q.dwell])))
    return out


def two_proportion_p(a: ArmStats, b: ArmStats) -> float:
    """Two-sided p-value of the difference between two arms' click-through rates (the pooled
    two-proportion z-test): how likely a gap at least this wide is when both arms are equal.
    1.0 when either arm has no list or neither differs from all or nothing."""
    if not a.lists or not b.lists:
        return 1.0
    pooled = (a.clicked_lists + b.clicked_lists) / (a.lists + b.lists)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / a.lists + 1 / b.lists))
    if spread == 0:
        return 1.0
    z = abs(a.ctr - b.ctr) / spread
    return math.erfc(z / math.sqrt(2))
