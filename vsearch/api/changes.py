"""The API calls that change files: a person's verdicts and marks (side records in the index
folder), and the duplicates' keeper choice. Moving and trashing copies, and undoing it, are
:mod:`vsearch.duplicates.actions`; :class:`~vsearch.api.index.Index` hands them on."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from vsearch.api.common import PathLike, check_utf8_name, content_digest, listed
from vsearch.duplicates import actions, marks
from vsearch.duplicates.grouping import DuplicateGroup
from vsearch.errors import VsearchError
from vsearch.learning import judgments
from vsearch.storage.store import Store

__all__ = ["choose_keeper", "index_of_undo_log", "is_keeper", "judge", "not_duplicate"]

is_keeper = actions.is_keeper


def index_of_undo_log(log: PathLike) -> Path | None:
    """The index folder that an undo log belongs to (a log inside ``INDEX/undo/``), else None."""
    return actions.index_of_log(Path(log))


def choose_keeper(group: DuplicateGroup, keeper: PathLike) -> DuplicateGroup:
    """``group`` with the member at path ``keeper`` as the copy to keep, instead of the one the
    keep rule suggested: what a person picks on the duplicates page, before
    :meth:`Index.plan_actions`. The new keeper comes first (score 1.0, the group's level); the
    old one takes the new keeper's level and cosine (the tie between the two is symmetric); the
    other members keep theirs, which were measured against the old keeper. Raises
    :class:`VsearchError` when no member has that path."""
    chosen = Path(keeper)
    pick = next((m for m in group.members if m.path == chosen), None)
    if pick is None:
        raise VsearchError(f"{chosen} is not in duplicate group {group.number}")
    if pick.keeper:
        return group
    old = group.keeper
    first = dataclasses.replace(pick, keeper=True, level=group.level, score=1.0)
    second = dataclasses.replace(old, keeper=False, level=pick.level, score=pick.score)
    return DuplicateGroup((first, second, *(m for m in group.copies if m is not pick)))


def not_duplicate(index_dir: Path, a: PathLike, b: PathLike) -> None:
    """Record that images ``a`` and ``b`` are not duplicates (``marks.jsonl``, by content)."""
    for p in (a, b):
        check_utf8_name(p)
    digests = [content_digest(Path(p).expanduser()) for p in (a, b)]
    marks.add_not_duplicate(index_dir, *digests, paths=(str(a), str(b)))


def judge(store: Store, root: Path, query: PathLike, results: Sequence[PathLike], *, relevant: bool,
          grade: int | None = None, source: str = "cli") -> list[judgments.Judgment]:
    """Record that each of ``results`` is (or is not) relevant to ``query``, all or nothing
    (see :meth:`vsearch.api.index.Index.judge`)."""
    found = listed(results)
    if not found:
        raise VsearchError("give at least one result image to judge")
    # os.path.exists: a text longer than a file name can be is no file (Path.exists raises)
    if isinstance(query, str) and query.startswith("text:") and not os.path.exists(query):
        query_key, query_path = query, None
    else:
        check_utf8_name(query)
        q = Path(query).expanduser()
        query_key, query_path = content_digest(q), str(q.resolve())
    root = root.resolve()
    verdicts = []
    for r in found:
        check_utf8_name(r)
        path = Path(r).expanduser()
        digest = content_digest(path)
        entry = store.entry_by_digest(digest)
        if entry is None:
            raise VsearchError(f"{path} is not in the index at {store.dir} (judged results must be indexed images; "
                               "call `build_index` first); nothing was recorded")
        resolved = path.resolve()
        rel = resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else entry.path
        verdicts.append(judgments.Verdict(query_key, digest, relevant, grade, None, rel, query_path))
    return judgments.record_judgments(store.dir, verdicts, source=source)
