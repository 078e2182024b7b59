"""Ranking metrics over lists of ids.

Pure functions: a *ranking* is a sequence of hashable ids, best first; *relevant* is a
collection of ids; *gains* maps relevant ids to a non-negative graded relevance. Nothing
here knows about models, files or indexes.

Conventions shared by every metric:

* Positions are 1-based in the definitions below (``ranked[1]`` is the best hit).
* An id that appears more than once in a ranking counts only at its first position; later
  copies occupy their slot but count as irrelevant. This keeps every metric in [0, 1] even
  when a caller forgets to de-duplicate.
* ``k`` must be a positive integer. ``k`` larger than the ranking is allowed: the missing
  positions count as irrelevant.
* A query with no relevant ids scores 0.0 on every metric (there is nothing to find, so
  nothing was found); filter such queries out beforehand if they should not count.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BootstrapCI",
    "QueryResult",
    "average_precision_at_k",
    "hit_at_k",
    "ndcg_at_k",
    "paired_bootstrap_ci",
    "precision_at_k",
    "recall_at_k",
    "reciprocal_rank",
    "score_query",
    "summarize",
]

# The bootstrap draws its resampled index matrix in batches of about this many int64
# indices (~32 MiB): still vectorised, but 10k resamples of a large query set do not need
# gigabytes at once.
_BOOTSTRAP_BATCH_ELEMENTS = 4_000_000


def _check_k(k: int) -> None:
    # bool is an int subclass; True as a cutoff is almost certainly a bug upstream.
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _first_hits(
    ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int
) -> Iterator[tuple[int, Hashable]]:
    """Yield (1-based position, id) for each relevant id at its first occurrence in ranked[:k]."""
    seen: set[Hashable] = set()
    for position, item in enumerate(ranked[:k], start=1):
        if item in relevant and item not in seen:
            seen.add(item)
            yield position, item


def _as_set(relevant: Collection[Hashable]) -> Collection[Hashable]:
    # Membership tests against a list would make every metric quadratic.
    return relevant if isinstance(relevant, (set, frozenset)) else frozenset(relevant)


def _hits_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> int:
    return sum(1 for _ in _first_hits(ranked, relevant, k))


def recall_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """Recall@k = |relevant ∩ ranked[:k]| / |relevant|; 0.0 if ``relevant`` is empty."""
    _check_k(k)
    relevant = _as_set(relevant)
    if not relevant:
        return 0.0
    return _hits_at_k(ranked, relevant, k) / len(relevant)


def hit_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """Hit@k = 1.0 if any relevant id is in ranked[:k], else 0.0."""
    _check_k(k)
    relevant = _as_set(relevant)
    return 1.0 if any(item in relevant for item in ranked[:k]) else 0.0


def precision_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """Precision@k = |relevant ∩ ranked[:k]| / k.

    The denominator is ``k`` even when the ranking is shorter than ``k``: a system that
    returns fewer results than asked for is not rewarded for it.
    """
    _check_k(k)
    relevant = _as_set(relevant)
    return _hits_at_k(ranked, relevant, k) / k


def average_precision_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """AP@k = (1 / min(|relevant|, k)) * sum over i <= k with ranked[i] relevant of precision@i.

    0.0 if ``relevant`` is empty. Dividing by min(|relevant|, k) rather than |relevant|
    means a perfect top-k scores 1.0 even when there are more than k relevant ids.

    When k >= len(ranked) and every relevant id appears in ``ranked``, the divisor is
    |relevant| and this equals ``sklearn.metrics.average_precision_score`` computed with
    binary labels over ``ranked`` and strictly decreasing scores by position.
    """
    _check_k(k)
    relevant = _as_set(relevant)
    if not relevant:
        return 0.0
    total = 0.0
    for hits, (position, _) in enumerate(_first_hits(ranked, relevant, k), start=1):
        total += hits / position
    return total / min(len(relevant), k)


def ndcg_at_k(ranked: Sequence[Hashable], gains: Mapping[Hashable, float], k: int) -> float:
    """NDCG@k = DCG@k / IDCG@k; 0.0 if IDCG@k is 0.

    DCG@k = sum_{i=1..k} gain(ranked[i]) / log2(i + 1), with gain 0 for ids not in ``gains``
    (linear gain, as ``sklearn.metrics.ndcg_score``). IDCG@k is the DCG@k of the ideal
    ordering of *all* ids in ``gains`` (sorted by gain, descending), so relevant ids that were
    never retrieved still lower the score. Binary relevance is gains of 1.0. Gains must be
    finite and non-negative (negative gains would let the ratio leave [0, 1]).
    """
    _check_k(k)
    for item, gain in gains.items():
        if not (math.isfinite(gain) and gain >= 0):
            raise ValueError(f"gain for {item!r} must be finite and non-negative, got {gain!r}")
    positive = {item for item, gain in gains.items() if gain > 0}
    ideal = sorted((gains[item] for item in positive), reverse=True)[:k]
    idcg = sum(gain / math.log2(i + 1) for i, gain in enumerate(ideal, start=1))
    if idcg == 0:
        return 0.0
    dcg = sum(gains[item] / math.log2(i + 1) for i, item in _first_hits(ranked, positive, k))
    # DCG <= IDCG exactly in real arithmetic; clamp so summation-order rounding can't give 1+ε.
    return min(1.0, dcg / idcg)


def reciprocal_rank(ranked: Sequence[Hashable], relevant: Collection[Hashable]) -> float:
    """RR = 1 / (1-based rank of the first relevant id in the whole ranking); 0.0 if none."""
    relevant = _as_set(relevant)
    for position, item in enumerate(ranked, start=1):
        if item in relevant:
            return 1.0 / position
    return 0.0


@dataclass(frozen=True)
class QueryResult:
    """One evaluated query.

    ``query``: id of the query. ``ranked``: retrieved ids, best first, with the query's own
    entry already removed. ``gains``: relevant id -> gain (> 0); ids with gain 0 are treated
    as not relevant.
    """

    query: str
    ranked: tuple[Hashable, ...]
    gains: Mapping[Hashable, float]

    def __post_init__(self) -> None:
        # Accept any sequence from callers but store a tuple, so the record really is immutable.
        if not isinstance(self.ranked, tuple):
            object.__setattr__(self, "ranked", tuple(self.ranked))


def _check_ks(ks: Sequence[int]) -> None:
    if len(ks) == 0:
        raise ValueError("ks must contain at least one cutoff")
    for k in ks:
        _check_k(k)


def score_query(result: QueryResult, ks: Sequence[int]) -> dict[str, float]:
    """Every metric for one query.

    Keys, in order: for each k in ``ks``: ``recall@k``, ``hit@k``, ``precision@k``,
    ``map@k`` (AP@k of this query), ``ndcg@k``; then ``mrr`` (reciprocal rank of this query).
    Relevant ids are those with gain > 0; nDCG uses the graded gains, the rest binary relevance.
    """
    _check_ks(ks)
    relevant = frozenset(item for item, gain in result.gains.items() if gain > 0)
    ranked = result.ranked
    scores: dict[str, float] = {}
    for k in ks:
        scores[f"recall@{k}"] = recall_at_k(ranked, relevant, k)
        scores[f"hit@{k}"] = hit_at_k(ranked, relevant, k)
        scores[f"precision@{k}"] = precision_at_k(ranked, relevant, k)
        scores[f"map@{k}"] = average_precision_at_k(ranked, relevant, k)
        scores[f"ndcg@{k}"] = ndcg_at_k(ranked, result.gains, k)
    scores["mrr"] = reciprocal_rank(ranked, relevant)
    return scores


def summarize(results: Sequence[QueryResult], ks: Sequence[int]) -> dict[str, float]:
    """Mean of each :func:`score_query` key over ``results``, plus ``num_queries``.

    Key order: for each k in ``ks``: recall, hit, precision, map, ndcg; then ``mrr``, then
    ``num_queries`` (an ``int``). Raises ValueError if ``results`` is empty, since a mean
    over no queries is undefined.
    """
    if len(results) == 0:
        raise ValueError("cannot summarize zero queries")
    per_query = [score_query(result, ks) for result in results]
    n = len(per_query)
    # per_query[0] fixes the key order; every query has the same keys.
    summary: dict[str, float] = {key: sum(s[key] for s in per_query) / n for key in per_query[0]}
    summary["num_queries"] = n
    return summary


@dataclass(frozen=True)
class BootstrapCI:
    """A paired bootstrap confidence interval for mean(b - a)."""

    mean_diff: float
    low: float
    high: float
    n_resamples: int
    confidence: float


def paired_bootstrap_ci(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile bootstrap CI for the mean per-query difference ``b - a``.

    ``a`` and ``b`` are per-query scores of systems A and B on the same queries, in the same
    order. ``mean_diff`` is mean(b - a) over all queries. Each resample draws len(a) query
    indices uniformly with replacement and takes mean(b - a) over them (pairing is kept:
    both systems are resampled on the same queries). ``low`` and ``high`` are the
    (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of the resampled means
    (numpy's default linear interpolation). Deterministic for a given ``seed``.

    Raises ValueError on empty input, length mismatch, non-finite scores,
    ``n_resamples < 1`` or ``confidence`` outside (0, 1).
    """
    if len(a) != len(b):
        raise ValueError(f"a and b must score the same queries: got {len(a)} and {len(b)} scores")
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if diff.ndim != 1:
        raise ValueError("a and b must be flat sequences of per-query scores")
    if diff.size == 0:
        raise ValueError("cannot bootstrap zero queries")
    if not np.all(np.isfinite(diff)):
        raise ValueError("scores must be finite")
    if isinstance(n_resamples, bool) or n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")

    n = diff.size
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=np.float64)
    rows_per_batch = max(1, _BOOTSTRAP_BATCH_ELEMENTS // n)
    for start in range(0, n_resamples, rows_per_batch):
        stop = min(start + rows_per_batch, n_resamples)
        indices = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[indices].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapCI(
        mean_diff=float(diff.mean()),
        low=float(low),
        high=float(high),
        n_resamples=int(n_resamples),
        confidence=float(confidence),
    )
