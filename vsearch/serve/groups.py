"""The duplicate groups the page works on: how they were asked for, how a request names a group
(the ``(row, digest)`` of each member it showed), and the groups found, kept per commit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vsearch.api import DuplicateGroup

__all__ = ["FoundGroups", "GroupQuery", "Member", "StaleGroup", "the_group"]


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
        self.found = {q: v for q, v in self.found.items() if v[0] == stamp and q != query}
        while len(self.found) >= self.KEPT:
            del self.found[next(iter(self.found))]
        self.found[query] = (stamp, groups)
        return groups


def the_group(groups: list[DuplicateGroup], shown: list[Member]) -> DuplicateGroup:
    """The group whose members are exactly ``shown``; :class:`StaleGroup` (409) when none is any more."""
    wanted = {(m.row, m.digest) for m in shown}
    for group in groups:
        if {(m.row, m.digest) for m in group} == wanted:
            return group
    raise StaleGroup("stale group")
