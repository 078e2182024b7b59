"""Team-draft interleaving: which of two rankers do people prefer, from their clicks.

A split A/B test shows each person one ranker and compares click-through between the groups;
the groups differ in people and queries as much as in rankers, so it needs many queries.
Interleaving (team-draft, Radlinski, Kurup & Joachims 2008) shows every query one list made
from both rankings and credits each click to the ranker that put that result there: the
comparison is within one query, one person, one moment, and a click high in the list counts
for whichever ranker placed it there, so position bias cancels out on average.

* :func:`team_draft`: the merged list. Round by round, the team with fewer picks so far (a
  coin flip when even) adds its best result not already shown; a result both rankers have
  is shown once, for the team that picked it first. Each ranker's picks are its own top
  results in its own order, and the counts differ by at most one at every depth (until one
  ranker runs out).
* :func:`credit`: one query's outcome: clicks on each team's results; the team with more
  wins the query, equal counts (one click each, say) tie, no click says nothing.
* :func:`summarize`: over queries: wins, losses, ties, the share of the decided queries that
  A won with a 95% Wilson interval, and the two-sided sign test p-value (ties left out):
  how likely a split at least this uneven is when neither ranker is preferred.

The log: the page, while it interleaves two configurations, calls :func:`log_interleaved` for
each list it shows, :func:`log_click` for each click and :func:`log_dwell` for each time spent
on a result; they write the index's ``judgments.sqlite`` in tables of their own
(``interleaved``, ``interleaved_results``, ``interleaved_clicks``, ``interleaved_dwell``), made
on first use, apart from the click log of vsearch.learning.clicks: an interleaved list is no ranker's
order, so it must not count as one in the position-bias estimate. Like that log, it keeps the
newest :data:`MAX_LOGGED_LISTS` lists. :func:`read_log` reads it back and :func:`reports`
summarises each experiment (pair of configuration names) in it.
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from vsearch.errors import VsearchError
from vsearch.learning.clicks import DwellStats, check_dwell, check_rank, dwell_stats
from vsearch.learning.judgments import check_key, database, db_path
from vsearch.storage import sidelog

__all__ = ["MAX_LOGGED_LISTS", "TEAMS", "Interleaved", "InterleavedList", "InterleavingReport", "Outcome", "credit",
           "log_click", "log_dwell", "log_interleaved", "read_log", "reports", "sign_test", "summarize", "team_draft",
           "wilson_interval"]

T = TypeVar("T", bound=Hashable)

#: The two teams: the first configuration named (A) and the second (B).
TEAMS = ("A", "B")
#: The log keeps the newest this many interleaved lists (with their clicks).
MAX_LOGGED_LISTS = 10_000
#: At most this many results of one list are logged.
MAX_SHOWN = 1000
#: z for a two-sided 95% interval.
Z95 = 1.959963984540054

_SCHEMA = """
CREATE TABLE IF NOT EXISTS interleaved (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    query TEXT NOT NULL,
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    shown INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS interleaved_results (
    list_id INTEGER NOT NULL REFERENCES interleaved(id),
    rank INTEGER NOT NULL,
    result TEXT NOT NULL,
    team TEXT NOT NULL CHECK (team IN ('A', 'B')),
    PRIMARY KEY (list_id, rank)
);
CREATE TABLE IF NOT EXISTS interleaved_clicks (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    list_id INTEGER NOT NULL REFERENCES interleaved(id),
    result TEXT NOT NULL,
    rank INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS interleaved_dwell (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    list_id INTEGER NOT NULL REFERENCES interleaved(id),
    result TEXT NOT NULL,
    rank INTEGER NOT NULL,
    ms INTEGER NOT NULL CHECK (ms >= 0)
)
"""


# --- the merged list ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Interleaved(Generic[T]):
    """A team-draft list: ``results[i]`` was contributed by team ``teams[i]`` ("A" or "B")."""

    results: tuple[T, ...]
    teams: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.results)


def team_draft(a: Sequence[T], b: Sequence[T], k: int | None = None,
               rng: random.Random | None = None) -> Interleaved[T]:
    """Merge rankings ``a`` and ``b`` (best first) into one list of at most ``k`` results
    (default: every distinct result of both), each marked with the team that contributed it.

    Each round the team with fewer picks so far picks next (a coin flip from ``rng`` when the
    counts are even): it adds its highest-ranked result not yet in the list. A team that has
    nothing new left stops picking and the other goes on alone. A result ranked by both is
    shown once, credited to the team that picked it.
    """
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
        raise VsearchError(f"k= takes a whole number, 0 or more (got {k!r})")
    rng = rng or random.Random()
    limit = len(set(a) | set(b)) if k is None else k
    rankings = (list(a), list(b))
    nexts = [0, 0]  # the next position to look at in each ranking
    counts = [0, 0]
    shown: list[T] = []
    teams: list[str] = []
    seen: set[T] = set()

    def next_new(team: int) -> T | None:
        ranking = rankings[team]
        while nexts[team] < len(ranking) and ranking[nexts[team]] in seen:
            nexts[team] += 1
        return ranking[nexts[team]] if nexts[team] < len(ranking) else None

    while len(shown) < limit:
        candidates = [next_new(0), next_new(1)]
        if candidates[0] is None and candidates[1] is None:
            break
        if candidates[0] is None or candidates[1] is None:
            team = 0 if candidates[1] is None else 1
        elif counts[0] != counts[1]:
            team = 0 if counts[0] < counts[1] else 1
        else:
            team = 0 if rng.random() < 0.5 else 1
        pick = candidates[team]
        assert pick is not None  # chosen among the teams that have one
        shown.append(pick)
        teams.append(TEAMS[team])
        seen.add(pick)
        counts[team] += 1
    return Interleaved(tuple(shown), tuple(teams))


# --- one query's outcome, and the statistics over queries ----------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One query's clicks, by the team whose result was clicked; ``winner`` is "A", "B", "tie"
    (as many clicks on each) or None (no click: the query says nothing)."""

    clicks_a: int
    clicks_b: int

    @property
    def winner(self) -> str | None:
        if self.clicks_a == self.clicks_b:
            return "tie" if self.clicks_a else None
        return "A" if self.clicks_a > self.clicks_b else "B"


def credit(teams: Sequence[str], clicked: Collection[int]) -> Outcome:
    """Credit each clicked rank (1-based, each once) to the team that contributed the result there."""
    a = b = 0
    for rank in set(clicked):
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= len(teams):
            raise VsearchError(f"a click at rank {rank!r} is outside the list (1 to {len(teams)})")
        if teams[rank - 1] == "A":
            a += 1
        elif teams[rank - 1] == "B":
            b += 1
        else:
            raise VsearchError(f"team {teams[rank - 1]!r} is neither A nor B")
    return Outcome(a, b)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (Wilson 1927): unlike the normal
    approximation it stays inside [0, 1] and keeps its coverage at small ``n``. (nan, nan)
    when ``n`` is 0."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: the chance, if either side were equally likely to win each
    decided query, of a split at least as uneven as ``wins`` : ``losses``. 1.0 with nothing decided."""
    n = wins + losses
    if n == 0:
        return 1.0
    low = min(wins, losses)
    # Sum of Binomial(n, 1/2) probabilities of 0..low, in logs (n can be in the tens of thousands).
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(low + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(x - top) for x in logs)
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class InterleavingReport:
    """An interleaving experiment of configuration ``a`` against ``b``, over its queries.

    ``wins``: queries whose clicks went more to A's results; ``losses``: more to B's; ``ties``:
    clicked equally; ``unclicked``: lists with no click (they say nothing). ``share``: A's share
    of the decided queries, wins / (wins + losses), with its 95% Wilson interval ``ci``;
    ``p_value``: the two-sided sign test of that split against 1/2. ``clicks_a``, ``clicks_b``:
    the clicks each team's results got, in all. ``dwell_a``, ``dwell_b``: the times people
    spent on each team's results (the page's lightbox), beside the clicks.
    """

    a: str
    b: str
    lists: int
    wins: int
    losses: int
    ties: int
    unclicked: int
    clicks_a: int
    clicks_b: int
    share: float
    ci: tuple[float, float]
    p_value: float
    alpha: float = 0.05
    dwell_a: DwellStats = DwellStats(0, None, None)
    dwell_b: DwellStats = DwellStats(0, None, None)

    @property
    def better(self) -> str | None:
        """The configuration people preferred (sign test below ``alpha``), or None."""
        if self.p_value >= self.alpha or self.wins == self.losses:
            return None
        return self.a if self.wins > self.losses else self.b

    @property
    def verdict(self) -> str:
        """One line: which is better, or that the clicks do not tell them apart yet."""
        if self.better is not None:
            return f"{self.better} is better (sign test p = {self.p_value:.3g})"
        return f"no clear difference yet (sign test p = {self.p_value:.3g}, {self.wins + self.losses} decided queries)"


def summarize(outcomes: Sequence[Outcome], a: str = "A", b: str = "B", alpha: float = 0.05,
              dwell: Sequence[tuple[str, int]] = ()) -> InterleavingReport:
    """The experiment's statistics over per-query ``outcomes`` (see :class:`InterleavingReport`);
    ``dwell``: (team, milliseconds) of each time recorded on a result."""
    winners = [o.winner for o in outcomes]
    wins, losses = winners.count("A"), winners.count("B")
    decided = wins + losses
    return InterleavingReport(
        a=a, b=b, lists=len(outcomes), wins=wins, losses=losses, ties=winners.count("tie"),
        unclicked=winners.count(None), clicks_a=sum(o.clicks_a for o in outcomes),
        clicks_b=sum(o.clicks_b for o in outcomes), share=wins / decided if decided else math.nan,
        ci=wilson_interval(wins, decided), p_value=sign_test(wins, losses), alpha=alpha,
        dwell_a=dwell_stats([ms for team, ms in dwell if team == "A"]),
        dwell_b=dwell_stats([ms for team, ms in dwell if team == "B"]))


# --- the log --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InterleavedList:
    """One logged interleaved list, as read back: the configurations compared, the results shown
    (best first) with their teams, the ranks clicked (1-based, each once), and each time spent
    on a result as (rank, milliseconds), oldest first."""

    list_id: int
    query: str
    a: str
    b: str
    results: tuple[str, ...]
    teams: tuple[str, ...]
    clicked: frozenset[int]
    dwell: tuple[tuple[int, int], ...] = ()

    @property
    def outcome(self) -> Outcome:
        return credit(self.teams, self.clicked)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or "\n" in name:
        raise VsearchError("a configuration name is one line of 1 to 200 characters, e.g. 'qe=2'")
    return name


def _ensure_schema(db: sqlite3.Connection) -> None:
    # Made on first use, inside the caller's write transaction: the judgments schema (and its
    # version) stays as it is, and a database that never interleaved has no such tables.
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def log_interleaved(index_dir: Path, query: str, shown: Interleaved[str], a: str, b: str, *,
                    keep_lists: int = MAX_LOGGED_LISTS) -> int:
    """Log that the interleaved list ``shown`` (result keys: content digests) of configurations
    ``a`` (team A) and ``b`` (team B) was shown for ``query``; returns its list id, for
    :func:`log_click`. Lists older than the newest ``keep_lists`` go, with their clicks. One
    transaction."""
    check_key("query", query)
    a, b = _check_name(a), _check_name(b)
    if a == b:
        raise VsearchError(f"an interleaving compares two configurations; both are named {a!r}")
    results = [check_key("result", r) for r in shown.results]
    if not results:
        raise VsearchError("no results to log: an interleaved list needs at least one result")
    if len(results) > MAX_SHOWN:
        raise VsearchError(f"at most {MAX_SHOWN} results can be logged for one list (got {len(results)})")
    if len(shown.teams) != len(results) or any(t not in TEAMS for t in shown.teams):
        raise VsearchError("each result needs its team, A or B")
    if isinstance(keep_lists, bool) or not isinstance(keep_lists, int) or keep_lists < 1:
        raise VsearchError(f"keep_lists must be a whole number, 1 or more (got {keep_lists!r})")
    with database(index_dir, write=True) as db:
        _ensure_schema(db)
        cur = db.execute("INSERT INTO interleaved(time, query, a, b, shown) VALUES (?, ?, ?, ?, ?)",
                         (sidelog.timestamp(), query, a, b, len(results)))
        list_id = int(cur.lastrowid)  # type: ignore[arg-type]  # set by the INSERT
        db.executemany("INSERT INTO interleaved_results(list_id, rank, result, team) VALUES (?, ?, ?, ?)",
                       [(list_id, rank, r, t) for rank, (r, t) in enumerate(zip(results, shown.teams), start=1)])
        row = db.execute("SELECT id FROM interleaved WHERE id <= ? ORDER BY id DESC LIMIT 1 OFFSET ?",
                         (list_id, keep_lists)).fetchone()
        if row is not None:
            for table, column in (("interleaved_dwell", "list_id"), ("interleaved_clicks", "list_id"),
                                  ("interleaved_results", "list_id"), ("interleaved", "id")):
                db.execute(f"DELETE FROM {table} WHERE {column} <= ?", (int(row[0]),))  # noqa: S608 - names from this tuple
    return list_id


def log_click(index_dir: Path, list_id: int, result: str) -> int:
    """Log a click on ``result`` in the interleaved list ``list_id``; returns its rank. A result
    the list did not show is refused; a second click on it is logged but counts once."""
    if isinstance(list_id, bool) or not isinstance(list_id, int):
        raise VsearchError(f"list_id must be a whole number (got {list_id!r})")
    check_key("result", result)
    with database(index_dir, write=True) as db:
        _ensure_schema(db)
        row = db.execute("SELECT min(rank) FROM interleaved_results WHERE list_id = ? AND result = ? "
                         "HAVING count(*)", (list_id, result)).fetchone()
        if row is None:
            raise VsearchError(f"interleaved list {list_id} did not show {result}: no result to click")
        db.execute("INSERT INTO interleaved_clicks(time, list_id, result, rank) VALUES (?, ?, ?, ?)",
                   (sidelog.timestamp(), list_id, result, int(row[0])))
    return int(row[0])


def log_dwell(index_dir: Path, list_id: int, query: str, result: str, rank: int, ms: int) -> None:
    """Log that ``result``, shown at ``rank`` in interleaved list ``list_id`` of ``query``, was
    looked at for ``ms`` milliseconds. Refused unless the list was logged for ``query`` and
    showed ``result`` at ``rank``. One transaction."""
    if isinstance(list_id, bool) or not isinstance(list_id, int):
        raise VsearchError(f"list_id must be a whole number (got {list_id!r})")
    check_key("query", query)
    check_key("result", result)
    check_rank(rank)
    check_dwell(ms)
    with database(index_dir, write=True) as db:
        _ensure_schema(db)
        row = db.execute("SELECT l.query FROM interleaved l JOIN interleaved_results r ON r.list_id = l.id "
                         "WHERE l.id = ? AND r.rank = ? AND r.result = ?", (list_id, rank, result)).fetchone()
        if row is None:
            raise VsearchError(f"interleaved list {list_id} did not show {result} at rank {rank}: no result to time")
        if row[0] != query:
            raise VsearchError(f"interleaved list {list_id} was logged for another query than the one given")
        db.execute("INSERT INTO interleaved_dwell(time, list_id, result, rank, ms) VALUES (?, ?, ?, ?, ?)",
                   (sidelog.timestamp(), list_id, result, rank, ms))


def read_log(index_dir: Path) -> list[InterleavedList]:
    """Every logged interleaved list, oldest first, with its clicks ([] when none was logged)."""
    if not db_path(index_dir).exists():
        return []
    with database(index_dir) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "interleaved" not in tables:
            return []
        lists = db.execute("SELECT id, query, a, b FROM interleaved ORDER BY id").fetchall()
        shown: dict[int, list[tuple[str, str]]] = {}
        for list_id, result, team in db.execute(
                "SELECT list_id, result, team FROM interleaved_results ORDER BY list_id, rank"):
            shown.setdefault(int(list_id), []).append((result, team))
        clicked: dict[int, set[int]] = {}
        for list_id, rank in db.execute("SELECT list_id, rank FROM interleaved_clicks"):
            clicked.setdefault(int(list_id), set()).add(int(rank))
        dwell: dict[int, list[tuple[int, int]]] = {}
        if "interleaved_dwell" in tables:  # a log written before dwell was recorded has none
            for list_id, rank, ms in db.execute("SELECT list_id, rank, ms FROM interleaved_dwell ORDER BY id"):
                dwell.setdefault(int(list_id), []).append((int(rank), int(ms)))
    return [InterleavedList(int(i), q, a, b, tuple(r for r, _ in shown.get(int(i), [])),
                            tuple(t for _, t in shown.get(int(i), [])), frozenset(clicked.get(int(i), ())),
                            tuple(dwell.get(int(i), ())))
            for i, q, a, b in lists]


def reports(lists: Sequence[InterleavedList], alpha: float = 0.05) -> list[InterleavingReport]:
    """One report per experiment (pair of configuration names) in the log, in the order each
    first appears."""
    experiments: dict[tuple[str, str], list[Outcome]] = {}
    dwell: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for item in lists:
        experiments.setdefault((item.a, item.b), []).append(item.outcome)
        dwell.setdefault((item.a, item.b), []).extend(
            (item.teams[rank - 1], ms) for rank, ms in item.dwell if 1 <= rank <= len(item.teams))
    return [summarize(outcomes, a, b, alpha, dwell[(a, b)]) for (a, b), outcomes in experiments.items()]
