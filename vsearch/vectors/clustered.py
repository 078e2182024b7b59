"""Every row's nearest other rows above a cosine floor, for a whole collection at once.

    spherical k-means on a sample -> each row's PROBES nearest centroids (its first: its list)
    -> per list: the rows that probe it x the rows in it, one matmul -> top-k per row above the floor

Grouping duplicates asks, for every row, for its few nearest rows above a high cosine. The
exact answer is an N x N matmul: at 100,000 x 1280 that is 2.6e13 multiply-adds, about 8
minutes on 2 cores. Copies sit close together, so they fall in the same cluster or a
neighbouring one: each row is compared only with the rows of the lists it probes (an IVF over
the vectors themselves, no extra index), about 1/40 of the work at 100,000 rows. Every score
returned is an exact cosine; the only error possible is a missed pair.

Measured (benchmarks/bench_duplicates_100k.py's 100,000 tiny-imagenet photos and copies,
efficientnet-lite0, 2,000 rows against exact search; a pair counts when either row finds
the other, as grouping links both ways): 500 lists and 12 probes found 99.8% of the pairs at
cosine >= 0.80 and 97.2% at >= 0.65, in 12 s against about 8 minutes exact; 316 lists and 8
probes 99.4% / 95.9% in 10 s. Lists at ``1.6 x sqrt(N)``, 12 probes.

numpy only. Deterministic: the sample and the starting centroids come from a seeded generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from vsearch.vectors import nearest

#: Lists probed per row (module notes).
PROBES = 12
#: Lists probed in all by a row that found nothing at ``widen_below`` (``close_neighbours``).
WIDER_PROBES = 48
#: Lists: this times the square root of the rows.
LISTS_PER_ROOT = 1.6
#: k-means runs on this many rows per list (a sample), for this many rounds.
SAMPLE_PER_LIST = 40
ROUNDS = 10
#: Rows scored against the centroids at once (bounded memory).
_BLOCK = 16384


def close_neighbours(vectors: np.ndarray, k: int, floor: float, *, lists: int | None = None,
                     probes: int = PROBES, seed: int = 0, widen_below: float | None = None,
                     wider_probes: int = WIDER_PROBES,
                     progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's up to ``k`` nearest other rows whose cosine is at least ``floor``, through the
    lists it probes (module notes): (rows (N, k) int64, scores (N, k) float32), best first,
    ``-1`` and ``-inf`` where a row has fewer. A row's own entry is left out.

    ``widen_below``: a row whose best found scores below this probes ``wider_probes`` lists in
    all (a second pass for those rows only: a small copy's embedding drifts far from its
    original's, into lists further away). ``vectors``: unit rows (checked:
    :class:`~vsearch.vectors.nearest.DamagedVectorError` names the first that is not).
    ``progress(done, total)`` follows the lists searched.
    """
    count = len(vectors)
    out_rows = np.full((count, max(k, 0)), -1, dtype=np.int64)
    out_scores = np.full((count, max(k, 0)), -np.inf, dtype=np.float32)
    if count < 2 or k <= 0:
        return out_rows, out_scores
    for start in range(0, count, _BLOCK):  # one checked pass: a damaged row is named, never grouped by NaN
        nearest.stored_rows(vectors, start, min(start + _BLOCK, count))
    data = np.asarray(vectors, dtype=np.float32)  # float32 vectors (or their memory map) as they are: no copy
    if lists is None:
        lists = max(1, round(LISTS_PER_ROOT * math.sqrt(count)))
    lists = min(lists, count)
    probes = max(1, min(probes, lists))
    centroids = _kmeans(data, lists, np.random.default_rng(seed))
    probed = _probes(data, centroids, probes)  # (N, probes), nearest centroid first
    own = probed[:, 0]
    members_order = np.argsort(own, kind="stable")
    member_bounds = np.searchsorted(own[members_order], np.arange(lists + 1))
    place = np.empty(count, dtype=np.int64)  # each row's position in its own list
    place[members_order] = np.arange(count) - member_bounds[own[members_order]]
    lists_of = (members_order, member_bounds, own, place)
    wider = max(probes, min(wider_probes, lists))
    passes = 2 if widen_below is not None and wider > probes else 1
    found = _search(data, lists_of, np.arange(count), probed, k, floor,
                    (lambda done, total: progress(done, passes * total)) if progress else None)
    _fill(out_rows, out_scores, *found, k)
    if passes == 2:
        assert widen_below is not None
        unsure = np.flatnonzero(~(out_scores[:, 0] >= widen_below))
        further = _probes(data[unsure], centroids, wider)[:, probes:] if len(unsure) else np.zeros((0, 0), np.int64)
        more = _search(data, lists_of, unsure, further, k, floor,
                       (lambda done, total: progress(total + done, 2 * total)) if progress else None)
        q, r, s = (np.concatenate(pair) for pair in zip(found, more))
        _fill(out_rows, out_scores, q, r, s, k)
    return out_rows, out_scores


def _search(data: np.ndarray, lists_of: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], askers: np.ndarray,
            probed: np.ndarray, k: int, floor: float,
            progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, neighbour, cosine) of each of ``askers``' up to ``k`` best rows at or above
    ``floor`` in each list it probes (``probed``: a row of list numbers per asker)."""
    members_order, member_bounds, own, place = lists_of
    lists = len(member_bounds) - 1
    asker = np.repeat(askers, probed.shape[1])
    asked = probed.ravel()
    askers_order = np.argsort(asked, kind="stable")
    asker_bounds = np.searchsorted(asked[askers_order], np.arange(lists + 1))
    found_q: list[np.ndarray] = [np.zeros(0, np.int64)]
    found_r: list[np.ndarray] = [np.zeros(0, np.int64)]
    found_s: list[np.ndarray] = [np.zeros(0, np.float32)]
    for c in range(lists):
        members = members_order[member_bounds[c]:member_bounds[c + 1]]
        rows = asker[askers_order[asker_bounds[c]:asker_bounds[c + 1]]]
        if len(members) and len(rows):
            scores = data[rows] @ data[members].T
            home = np.flatnonzero(own[rows] == c)  # rows in this list: never their own neighbour
            scores[home, place[rows[home]]] = -np.inf
            kk = min(k, len(members))
            if kk < len(members):
                top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
                top_scores = np.take_along_axis(scores, top, axis=1)
            else:
                top, top_scores = np.broadcast_to(np.arange(len(members)), scores.shape), scores
            qi, ci = np.nonzero(top_scores >= floor)
            found_q.append(rows[qi])
            found_r.append(members[top[qi, ci]])
            found_s.append(top_scores[qi, ci])
        if progress:
            progress(c + 1, lists)
    return np.concatenate(found_q), np.concatenate(found_r), np.concatenate(found_s)


def _fill(out_rows: np.ndarray, out_scores: np.ndarray, q: np.ndarray, r: np.ndarray, s: np.ndarray, k: int) -> None:
    """Each row's best ``k`` of the (row, neighbour, cosine) found, into the tables (a pair
    found twice counts once)."""
    order = np.lexsort((r, -s, q))  # by row, best first (ties by row number: the same every run)
    q, r, s = q[order], r[order], s[order]
    again = np.zeros(len(q), dtype=bool)
    again[1:] = (q[1:] == q[:-1]) & (r[1:] == r[:-1])
    q, r, s = q[~again], r[~again], s[~again]
    first = np.searchsorted(q, q)  # where each row's candidates start
    rank = np.arange(len(q)) - first
    keep = rank < k
    out_rows[q[keep], rank[keep]] = r[keep]
    out_scores[q[keep], rank[keep]] = s[keep]


def _kmeans(data: np.ndarray, lists: int, rng: np.random.Generator) -> np.ndarray:
    """``lists`` unit centroids: spherical k-means on a sample of the rows."""
    sample_size = min(len(data), SAMPLE_PER_LIST * lists)
    sample = data[np.sort(rng.choice(len(data), sample_size, replace=False))]
    centroids = sample[rng.choice(sample_size, lists, replace=False)].copy()
    for _ in range(ROUNDS):
        nearest_centroid = np.argmax(sample @ centroids.T, axis=1)
        by_list = np.argsort(nearest_centroid, kind="stable")
        filled, starts = np.unique(nearest_centroid[by_list], return_index=True)  # an empty list keeps its centroid
        sums = np.add.reduceat(sample[by_list], starts, axis=0)
        norms = np.maximum(np.linalg.norm(sums, axis=1), 1e-12)
        centroids[filled] = sums / norms[:, None]
    return centroids


def _probes(data: np.ndarray, centroids: np.ndarray, probes: int) -> np.ndarray:
    """Each row's ``probes`` nearest centroids, nearest first."""
    out = np.empty((len(data), probes), dtype=np.int64)
    for start in range(0, len(data), _BLOCK):
        scores = data[start:start + _BLOCK] @ centroids.T
        if probes < scores.shape[1]:
            top = np.argpartition(-scores, probes - 1, axis=1)[:, :probes]
        else:
            top = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
        by_score = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        out[start:start + _BLOCK] = np.take_along_axis(top, by_score, axis=1)
    return out
