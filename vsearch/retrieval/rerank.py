"""Re-ranking and filtering: pure functions on vectors, rows and scores.

Nothing here touches files or models; :mod:`vsearch.retrieval.search` feeds these the stored vectors.

QE is on by default (``qe=2``, :data:`vsearch.defaults.DEFAULT_QE`) and DBA off
(``build-index --dba 0``), by the rule and the A/B runs in docs/defaults.md. What they did
before the copy-first step, ``benchmarks/bench_search.py rerank`` on flowers17 (1,360 queries,
efficientnet-lite0, exact search, each query's own row left out; change in AP@10 with a paired
bootstrap 95% CI)::

    dba qe  mAP@10  P@10   mAP@100  MRR
     0   0  0.7780  0.8251 0.4757   0.9409   baseline
     0   3  0.8167  0.8521 0.5317   0.9360   +0.039 [+0.032, +0.046]
     0  10  0.7994  0.8407 0.5412   0.9124   +0.021
     3   0  0.7851  0.8388 0.5724   0.9248   +0.007 [-0.001, +0.015]
     5  10  0.8271  0.8601 0.6578   0.9216   +0.049 [+0.039, +0.059]

Both raise class-level mAP, as the literature reports, but alone they lose what "find this
photo" needs: an edited copy's original blends into its neighbours (DBA 5: recall@1 of edited
copies 0.90 -> 0.71 on flowers17). The copy-first step (:func:`keep_first`; the rows come from
``Searcher.copy_rows``) keeps the query's nearest neighbour by the unaltered vectors at rank 1,
which gives copies back exactly what they had, and scores stay cosines to the query asked.

* :func:`combine_examples`: several positive and negative example vectors -> one query.
* :func:`path_matcher`: ``--path GLOB``.
* :func:`dedupe`: collapse near-duplicates among the results to their best-scoring member.
* :func:`cap_per_key`: at most N results per folder or per capture day (``--max-per-folder``,
  ``--max-per-day``), so that no album floods the top k; the next best from elsewhere fill in.
* :func:`mmr`: maximal marginal relevance (Carbonell & Goldstein 1998), for ``--diverse``.
* :func:`average_query_expansion`: AQE (Chum et al. 2007): re-query with the mean of the query
  and its top-n results.
* :func:`keep_first`: the copy-first step: the query's nearest neighbour by the unaltered
  vectors stays at rank 1 whatever QE or DBA did to the order (docs/defaults.md).
(Database-side augmentation, made once at build time, is :mod:`vsearch.vectors.dba`.)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from vsearch.errors import VsearchError

#: Weight of the negatives' mean against the positives' mean (Rocchio's idea, one knob):
#: 0.5 pushes results away from the negatives without letting a single negative dominate.
DEFAULT_NEGATIVE_WEIGHT = 0.5

T = TypeVar("T")


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-12 else v


def combine_examples(positives: np.ndarray, negatives: np.ndarray | None = None,
                     negative_weight: float = DEFAULT_NEGATIVE_WEIGHT) -> np.ndarray:
    """``normalise(mean(positives) - negative_weight * mean(negatives))``.

    Raises VsearchError when there is no positive, or when the negatives cancel the positives
    out entirely (nothing left to search for).
    """
    positives = np.atleast_2d(np.asarray(positives, dtype=np.float32))
    if positives.size == 0:
        raise VsearchError("give at least one positive example to search for")
    if negative_weight < 0:
        raise VsearchError("not_weight= must be zero or more")
    query = positives.mean(axis=0)
    if negatives is not None and np.asarray(negatives).size:
        query = query - negative_weight * np.atleast_2d(np.asarray(negatives, dtype=np.float32)).mean(axis=0)
    if float(np.linalg.norm(query)) < 1e-6:
        raise VsearchError("the negative examples cancel the positive ones out; lower not_weight=")
    return _unit(query)


def path_matcher(pattern: str, root: Path) -> Callable[[Path], bool]:
    """A test for ``--path GLOB``: shell-style, case-sensitive, ``*`` also crosses folders.

    A relative pattern is matched against the path relative to the index root (``cats/*``,
    ``*.png``); an absolute one against the absolute path.
    """
    if not pattern:
        raise VsearchError("path_glob= needs a pattern, e.g. '*.png' or 'holiday/*'")
    absolute = Path(pattern).expanduser().is_absolute()
    pattern = str(Path(pattern).expanduser()) if absolute else pattern
    root = Path(root)

    def matches(path: Path) -> bool:
        path = Path(path)
        if absolute:
            return fnmatch.fnmatchcase(str(path), pattern)
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            rel = path.as_posix()
        return fnmatch.fnmatchcase(rel, pattern)

    return matches


def dedupe(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy near-duplicate collapse over results already ranked best first.

    ``vectors``: (n, d) unit vectors of the ranked results. A result is dropped when its cosine
    to an earlier kept result is at least ``threshold``; that kept result represents it.
    Returns (indices kept, in order; number of results each kept one represents, itself included).
    """
    if not -1.0 <= threshold <= 1.0:
        raise VsearchError("dedupe= takes a cosine threshold between -1 and 1, e.g. 0.95")
    vectors = np.asarray(vectors, dtype=np.float32)
    kept: list[int] = []
    counts: list[int] = []
    for i in range(len(vectors)):
        if kept:
            sims = vectors[kept] @ vectors[i]
            j = int(np.argmax(sims))
            if sims[j] >= threshold:
                counts[j] += 1
                continue
        kept.append(i)
        counts.append(1)
    return np.asarray(kept, dtype=np.int64), np.asarray(counts, dtype=np.int64)


@dataclass(frozen=True)
class Cap(Generic[T]):
    """A re-ranking rule: at most ``limit`` results share one value of ``key`` (their folder,
    their capture day). ``key`` returning None leaves that result uncapped (no date known)."""

    key: Callable[[T], Hashable | None]
    limit: int
    option: str = "the cap"  # the parameter, for the error message

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise VsearchError(f"{self.option} takes a whole number, 1 or more (got {self.limit!r})")


def cap_per_key(items: Sequence[T], caps: Sequence[Cap[T]], k: int | None = None) -> list[T]:
    """``items`` (ranked best first) with every result that would break a cap left out.

    Greedy in rank order: a result is kept when, for every cap, fewer than ``cap.limit`` kept
    results share its key; a kept result counts against each cap. So the order is kept and
    the next best results from other keys fill in. Stops once ``k`` are kept (None: the whole
    list); fewer than ``k`` come back when ``items`` run out. Keys are asked for only of the
    results looked at, each cap's only while the earlier ones let the result through (a cheap
    folder before a date read from the file).
    """
    if not caps:
        return list(items[:k] if k is not None else items)
    counts: list[dict[Hashable, int]] = [{} for _ in caps]
    kept: list[T] = []
    for item in items:
        if k is not None and len(kept) >= k:
            break
        keys: list[Hashable | None] = []
        for cap, seen in zip(caps, counts):
            key = cap.key(item)
            if key is not None and seen.get(key, 0) >= cap.limit:
                break
            keys.append(key)
        else:
            kept.append(item)
            for key, seen in zip(keys, counts):
                if key is not None:
                    seen[key] = seen.get(key, 0) + 1
    return kept


def mmr(query: np.ndarray, vectors: np.ndarray, k: int, lam: float, keep: int = 0) -> np.ndarray:
    """Maximal marginal relevance: indices of ``k`` of ``vectors``, in the order picked.

    Each step picks ``argmax lam * cos(query, d) - (1 - lam) * max cos(d, picked)``: ``lam=1``
    is plain relevance order, lower values trade relevance for variety. The first ``keep``
    vectors are picked first, in their order (the copy-first result), and count as picked.
    """
    if not 0.0 <= lam <= 1.0:
        raise VsearchError("diverse= takes a lambda between 0 and 1 (1 = plain relevance order)")
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    relevance = vectors @ np.asarray(query, dtype=np.float32)
    redundancy = np.full(n, -np.inf, dtype=np.float32)
    chosen: list[int] = []
    available = np.ones(n, dtype=bool)
    for step in range(k):
        if step < keep:
            chosen.append(step)
            available[step] = False
            redundancy = np.maximum(redundancy, vectors @ vectors[step])
            continue
        gain = lam * relevance - (1 - lam) * np.where(np.isfinite(redundancy), redundancy, 0.0)
        gain[~available] = -np.inf
        pick = int(np.argmax(gain))
        chosen.append(pick)
        available[pick] = False
        redundancy = np.maximum(redundancy, vectors @ vectors[pick])
    return np.asarray(chosen, dtype=np.int64)


def average_query_expansion(query: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """AQE: the normalised mean of the query and its top-n result vectors (n = len(neighbours))."""
    neighbours = np.atleast_2d(np.asarray(neighbours, dtype=np.float32))
    if neighbours.size == 0:
        return _unit(query)
    return _unit((np.asarray(query, dtype=np.float32) + neighbours.sum(axis=0)) / (len(neighbours) + 1))


def keep_first(ranked: Sequence[T], first: Sequence[T]) -> list[T]:
    """``first`` (in their order), then ``ranked`` without them: the rest keep their order.

    The copy-first step: QE and DBA order the list, the unaltered nearest neighbour leads it.
    """
    lead = list(dict.fromkeys(first))
    pinned = set(lead)
    return lead + [r for r in ranked if r not in pinned]
