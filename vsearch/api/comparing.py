"""Photos compared with the library: a folder checked against it (:func:`against`), one pair
explained (:func:`explain`), and the "not a duplicate" marks listed (:func:`marked_pairs`) and
taken back (:func:`unmark`, which changes a file). :class:`~vsearch.api.index.Index` hands
them its open index; the work is :mod:`vsearch.duplicates.against`,
:mod:`vsearch.duplicates.explain` and :mod:`vsearch.duplicates.marks`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vsearch.api.common import PathLike, check_mode, content_digest
from vsearch.duplicates import against as against_mod
from vsearch.duplicates import grouping, marks
from vsearch.duplicates.against import AgainstResult
from vsearch.duplicates.explain import PairCheck, PairExplanation, explain_pair
from vsearch.errors import VsearchError
from vsearch.retrieval.search import Searcher
from vsearch.storage.store import Store

__all__ = ["AgainstResult", "PairCheck", "MarkedPair", "PairExplanation", "against", "check_share", "explain",
           "marked_pairs", "unmark"]


@dataclass(frozen=True)
class MarkedPair:
    """One standing "not a duplicate" mark.

    ``a`` and ``b``: where the index holds the two images now, else the paths recorded with the
    mark (None when neither is known); ``indexed``: whether the index holds both now.
    ``digest_a``, ``digest_b``: the content digests the mark is kept by. ``time``: when it was
    recorded (ISO 8601).
    """

    a: Path | None
    b: Path | None
    indexed: bool
    digest_a: str
    digest_b: str
    time: str | None


def check_share(name: str, value: float) -> None:
    """Refuse a share (``min_overlap``) that is not between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:  # also refuses nan
        raise VsearchError(f"{name}= takes a share between 0 and 1 (got {value!r})")


def against(searcher: Searcher, folder: PathLike, *, level: str, threshold: float | None, min_overlap: float,
            mode: str, progress: Callable[[int, int], None] | None) -> list[AgainstResult]:
    """See :meth:`vsearch.api.index.Index.against`."""
    check_mode(mode)
    check_share("min_overlap", min_overlap)
    return against_mod.check_folder(searcher, Path(folder), level=level, threshold=threshold, min_overlap=min_overlap,
                                    mode=mode, progress=progress)


def explain(searcher: Searcher, a: PathLike, b: PathLike, *, level: str, threshold: float | None,
            min_overlap: float) -> PairExplanation:
    """See :meth:`vsearch.api.index.Index.explain`."""
    if level not in grouping.LEVELS:
        raise VsearchError(f"level= takes one of {', '.join(grouping.LEVELS)} (got {level!r})")
    check_share("min_overlap", min_overlap)
    for p in (a, b):
        path = Path(p).expanduser()
        if not path.exists():
            raise VsearchError(f"no such file: {path}")
        if not path.is_file():
            raise VsearchError(f"{path} is not a regular file; give an image file")
    return explain_pair(searcher, Path(a), Path(b), near_threshold=threshold if level == "near" else None,
                        similar_threshold=threshold if level == "similar" else None, min_overlap=min_overlap)


def marked_pairs(store: Store) -> list[MarkedPair]:
    """Every standing not-duplicate mark of the index, oldest first, with where its images are."""
    root = Path(store.meta.root) if store.meta is not None else None
    out = []
    for mark in marks.marks(store.dir):
        where: list[tuple[Path | None, bool]] = []
        for digest, n in ((mark.a, 0), (mark.b, 1)):
            entry = store.entry_by_digest(digest)
            if entry is not None and root is not None:
                where.append((root / entry.path, True))
            else:
                where.append((Path(mark.paths[n]) if mark.paths is not None else None, False))
        # Shown in path order (the digests are kept sorted, which says nothing to a person).
        (pa, da), (pb, db) = sorted(zip(where, (mark.a, mark.b)), key=lambda t: str(t[0][0] or ""))
        out.append(MarkedPair(pa[0], pb[0], pa[1] and pb[1], da, db, mark.time))
    return out


def unmark(index_dir: Path, a: PathLike, b: PathLike) -> None:
    """Take back the mark that images ``a`` and ``b`` are not duplicates (one more line in
    ``marks.jsonl``); raises :class:`VsearchError` when no such mark stands."""
    digests = [content_digest(Path(p).expanduser()) for p in (a, b)]
    if frozenset(digests) not in marks.not_duplicates(index_dir):
        raise VsearchError(f"{a} and {b} are not marked as not duplicates (`Index.marks()` lists the marks); "
                           "nothing was taken back")
    marks.remove_not_duplicate(index_dir, *digests, paths=(str(a), str(b)))
