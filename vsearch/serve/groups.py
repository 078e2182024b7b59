"""The duplicate groups the page works on: how they were asked for, how a request names a group
(the ``(row, digest)`` of each member it showed), the groups found, kept per commit, and the
search for them running in the background (:class:`GroupSearch`), which the page follows."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from vsearch.api import DuplicateGroup
from vsearch.errors import VsearchError

__all__ = ["FoundGroups", "GroupQuery", "GroupSearch", "Member", "SearchSlot", "StaleGroup", "the_group"]

log = logging.getLogger(__name__)


class StaleGroup(Exception):
    """What the page showed is not what the index holds now (answered 409, nothing done)."""


@dataclass(frozen=True)
class GroupQuery:
    """How the groups were found: ``Index.duplicates``'s level, keep rule and threshold."""

    level: str = "near"
    keep: str = "default"
    threshold: float | None = None

    def find(self, index: Any) -> list[DuplicateGroup]:
        """The groups, from the library (which checks level and keep)."""
        return index.duplicates(self.threshold, level=self.level, keep=self.keep)


@dataclass(frozen=True)
class Member:
    """A member as the page names it: the row and content digest it was shown with."""

    row: int
    digest: str


class FoundGroups:
    """The groups last found for each :class:`GroupQuery`, kept while the index folder's commit
    record (``meta.json``) and not-duplicate marks (``marks.jsonl``) stay the same file.

    Finding near duplicates verifies every shortlisted pair (about 45 s for 1,360 photos here),
    so switching the level back, or acting on a group, must not find them all again. A commit
    (an action here, a build or ``vsearch duplicates --yes`` elsewhere) or a new mark replaces
    those files, and the next request finds the groups again. A file changed on disk without a
    commit is caught by :meth:`Index.apply_actions`, which checks every copy before touching any.
    """

    #: Queries remembered (level x keep rule fits; thresholds vary).
    KEPT = 12

    def __init__(self) -> None:
        self.found: dict[GroupQuery, tuple[tuple[Any, ...], list[DuplicateGroup]]] = {}

    def get(self, query: GroupQuery, index: Any, *, fresh: bool = False) -> list[DuplicateGroup]:
        """The groups for ``query``: remembered, unless the stamp changed or ``fresh``."""
        stamp = index.state()  # before finding: a commit meanwhile makes the next call find again
        kept = self.found.get(query)
        if kept is not None and kept[0] == stamp and not fresh:
            return kept[1]
        groups = query.find(index)
        self.put(query, stamp, groups)
        return groups

    def put(self, query: GroupQuery, stamp: tuple[Any, ...], groups: list[DuplicateGroup]) -> None:
        """Remember ``groups`` for ``query``, found at index state ``stamp`` (a search in the background)."""
        self.found = {q: v for q, v in self.found.items() if v[0] == stamp and q != query}
        while len(self.found) >= self.KEPT:
            del self.found[next(iter(self.found))]
        self.found[query] = (stamp, groups)

    def known(self, query: GroupQuery, stamp: tuple[Any, ...]) -> list[DuplicateGroup] | None:
        """The groups remembered for ``query`` at index state ``stamp``, or None."""
        kept = self.found.get(query)
        return kept[1] if kept is not None and kept[0] == stamp else None


def the_group(groups: list[DuplicateGroup], shown: list[Member]) -> DuplicateGroup:
    """The group whose members are exactly ``shown``; :class:`StaleGroup` (409) when none is any more."""
    wanted = {(m.row, m.digest) for m in shown}
    for group in groups:
        if {(m.row, m.digest) for m in group} == wanted:
            return group
    raise StaleGroup("stale group")


class Stopped(Exception):
    """A search the page replaced by another (raised in its own thread, from the library's ``step``)."""


#: Pair verdicts remembered across searches at most: ~200 bytes each, so about 40 MB.
MAX_VERDICTS = 200_000


@dataclass
class GroupSearch:
    """One search for duplicate groups, running in a thread of its own so that no request waits
    for it: the page starts it, then asks how far it got (:meth:`progress`) and for the groups,
    the first ones while it still runs (each group the library settled, in the order found).

    ``stamp``: :meth:`Index.state` when it started; its groups hold while the index stays so.
    """

    query: GroupQuery
    stamp: tuple[Any, ...]
    id: str = field(default_factory=lambda: secrets.token_urlsafe(9))
    step: str = "starting"
    done: int = 0
    total: int = 0
    verified: int = 0
    error: str | None = None
    groups: list[DuplicateGroup] | None = None  # when finished
    early: list[DuplicateGroup] = field(default_factory=list)  # settled so far, in the order found
    started: float = field(default_factory=time.monotonic)
    seconds: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether it has neither finished nor failed."""
        return self.groups is None and self.error is None

    def shown(self) -> list[DuplicateGroup]:
        """The groups to show now: all of them, largest first, once finished; before that, those settled so far."""
        return self.groups if self.groups is not None else list(self.early)

    def progress(self) -> dict[str, Any]:
        """How far it got, as the page shows it."""
        return {"id": self.id, "step": self.step, "done": self.done, "total": self.total, "verified": self.verified,
                "running": self.running, "error": self.error,
                "seconds": round(self.seconds if self.seconds is not None else time.monotonic() - self.started, 2)}


class SearchSlot:
    """The page's one search in the background: starting another stops the one running, and a
    finished one's groups are kept in :class:`FoundGroups` (reused until the index changes).

    ``opener()`` opens the index again for the search's thread (a context manager): a search
    reads files for up to a minute, and the page's own index stays free for thumbnails and
    searches meanwhile (an Index is not thread-safe, so the two never share one).
    """

    def __init__(self, found: FoundGroups) -> None:
        self.found = found
        self.current: GroupSearch | None = None
        self.verdicts: dict[tuple[object, ...], bool] = {}  # pair verifications, across searches
        self.lock = threading.Lock()

    def start(self, query: GroupQuery, stamp: tuple[Any, ...], opener: Callable[[], AbstractContextManager[Any]],
              *, fresh: bool = False) -> GroupSearch:
        """The search for ``query`` at index state ``stamp``: the current one when it is that
        search (running, or finished and still true), one made of the groups remembered, or a new
        one started in a thread (stopping the one running)."""
        with self.lock:
            now = self.current
            if (now is not None and now.query == query and now.stamp == stamp and now.error is None
                    and not (fresh and not now.running)):
                return now
            kept = None if fresh else self.found.known(query, stamp)
            if now is not None and now.running:
                now.stop.set()
            search = GroupSearch(query, stamp)
            self.current = search
            if kept is not None:
                search.groups, search.step, search.seconds = kept, "done", 0.0
                return search
            if len(self.verdicts) > MAX_VERDICTS:
                self.verdicts.clear()
            search.thread = threading.Thread(target=self._run, args=(search, opener), name=f"duplicates-{search.id}",
                                             daemon=True)
            search.thread.start()
            return search

    def close(self, wait: float = 10.0) -> None:
        """Stop the search running, waiting up to ``wait`` seconds for its thread to end (the
        server is stopping: a thread killed mid-verification at exit would abort the process)."""
        with self.lock:
            search = self.current
        if search is not None and search.thread is not None:
            search.stop.set()
            search.thread.join(wait)

    def _run(self, search: GroupSearch, opener: Callable[[], AbstractContextManager[Any]]) -> None:
        before = len(self.verdicts)

        def step(name: str, done: int, total: int) -> None:
            if search.stop.is_set():
                raise Stopped
            search.step, search.done, search.total = name, done, total
            search.verified = max(0, len(self.verdicts) - before)

        try:
            q = search.query
            with opener() as index:
                groups = index.duplicates(q.threshold, level=q.level, keep=q.keep, step=step,
                                          found=search.early.append, verdicts=self.verdicts)
        except Stopped:
            search.error = "stopped: another search replaced it"
        except VsearchError as exc:
            search.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a thread of its own: the page must hear of it, not a log only
            log.exception("finding duplicates failed")
            search.error = f"finding the duplicates failed: {type(exc).__name__}: {exc}"
        else:
            self.found.put(search.query, search.stamp, groups)
            search.verified = max(0, len(self.verdicts) - before)
            search.step, search.groups = "done", groups
        search.seconds = time.monotonic() - search.started
