"""Position bias, measured: per-rank examination propensities from swap interventions, and a
click metric weighted by their inverse (IPW).

Model (the examination hypothesis): a result at rank r is clicked with probability
``p_r * c(d)``, where ``p_r`` is how often people look at rank r and ``c(d)`` depends on the
result alone. Raw click-through mixes the two, so a system that puts a few good results on top
can out-click one that shows more good results lower down.

Estimating ``p_r`` (swap intervention harvesting, after Wang et al. 2018 "Position bias
estimation for unbiased learning to rank in personal search" and Agarwal et al. 2019
"Estimating position bias without intrusive interventions"): on randomly chosen queries the
logger swapped ranks k and k + 1 (vsearch.learning.clicks). Call A the result the system ranked k and B
the one it ranked k + 1. On lists where that pair was swapped (S) A is shown at k + 1 and B at
k; on lists where neither rank moved (C) A is at k and B at k + 1. Which lists were swapped is
random, so A's and B's expected ``c`` are the same in both groups, and

    (CTR_S(k + 1) + CTR_C(k + 1)) / (CTR_C(k) + CTR_S(k))
        = p_{k+1} (E c(A) + E c(B)) / (p_k (E c(A) + E c(B))) = p_{k+1} / p_k

where CTR_G(r) is the share of group G's lists clicked at rank r. Chaining these ratios from
``p_1 = 1`` gives every rank's propensity relative to the first (nothing is assumed about their
shape). A rank whose ratio has no data (no swapped or no control list, or no click at all) ends
the chain: deeper ranks get no estimate.

The debiased metric: each click at rank r counts ``1 / p_r`` (``p_r`` clipped below at
:data:`MIN_PROPENSITY`, to bound the variance). Its mean over lists, divided by the depth K, is
an unbiased estimate of the mean ``c`` of the top K results, precision@K in click units,
whatever their order (relative to rank 1's examination); raw CTR@K is the same without weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vsearch.learning.clicks import ArmStats, arm_stats, two_proportion_p

__all__ = ["MIN_PROPENSITY", "ClickReport", "RankStats", "click_arrays", "click_report", "estimate_propensities",
           "ipw_precision", "raw_ctr"]

#: Propensities are clipped below at this in the weights (a click at rank r weighs <= 1/this).
MIN_PROPENSITY = 0.05


def click_arrays(logs: Sequence, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(clicked, swapped, shown)`` of logged lists (vsearch.learning.clicks.LoggedQuery) for ranks 1..depth.

    ``clicked[i, r - 1]``: list i was clicked at rank r; ``swapped[i]``: its swapped k, 0 for
    none; ``shown[i]``: how many results it showed.
    """
    n = len(logs)
    clicked = np.zeros((n, depth), dtype=bool)
    swapped = np.zeros(n, dtype=np.int64)
    shown = np.zeros(n, dtype=np.int64)
    for i, q in enumerate(logs):
        for r in q.clicked:
            if 1 <= r <= depth:
                clicked[i, r - 1] = True
        swapped[i] = q.swapped or 0
        shown[i] = len(q.shown)
    return clicked, swapped, shown


def estimate_propensities(clicked: np.ndarray, swapped: np.ndarray, shown: np.ndarray) -> list[float | None]:
    """Propensity of each rank 1..D relative to rank 1 (``clicked`` is (n, D)), from the swaps.

    See the module docstring for the estimator. None for ranks past the first ratio that has
    no data.
    """
    n, depth = clicked.shape
    out: list[float | None] = [1.0] + [None] * (depth - 1)
    for k in range(1, depth):  # the pair (k, k + 1), 1-based
        long_enough = shown >= k + 1
        swap = long_enough & (swapped == k)
        # Control: neither rank k nor k + 1 moved (a swap at k - 1 moves k; at k + 1 moves k + 1).
        control = long_enough & ~np.isin(swapped, [j for j in (k - 1, k, k + 1) if j > 0])
        if not swap.any() or not control.any():
            break
        s_top, s_low = clicked[swap, k - 1].mean(), clicked[swap, k].mean()
        c_top, c_low = clicked[control, k - 1].mean(), clicked[control, k].mean()
        if c_top + s_top == 0 or out[k - 1] is None:
            break
        out[k] = float(out[k - 1] * (s_low + c_low) / (c_top + s_top))
    return out


def _weights(propensities: Sequence[float | None]) -> np.ndarray:
    known = [p for p in propensities if p is not None]
    return 1.0 / np.maximum(np.asarray(known, dtype=np.float64), MIN_PROPENSITY)


def ipw_precision(clicked: np.ndarray, propensities: Sequence[float | None]) -> float:
    """Mean over lists of sum(click / p_r) over the top K ranks with a propensity, divided by K."""
    w = _weights(propensities)
    if len(clicked) == 0 or len(w) == 0:
        return 0.0
    return float((clicked[:, :len(w)] * w).sum(axis=1).mean() / len(w))


def raw_ctr(clicked: np.ndarray, depth: int) -> float:
    """Mean over lists of the share of their top ``depth`` ranks that were clicked."""
    if len(clicked) == 0:
        return 0.0
    return float(clicked[:, :depth].sum(axis=1).mean() / depth)


@dataclass(frozen=True)
class RankStats:
    """Click-through at one shown rank, and its estimated propensity (None: no estimate)."""

    rank: int
    impressions: int
    clicks: int
    ctr: float
    swaps: int  # lists whose pair (rank, rank + 1) was swapped
    propensity: float | None


@dataclass(frozen=True)
class ClickReport:
    """What ``vsearch evaluate --clicks`` prints: per-rank stats and the two click metrics.

    ``depth``: K, the ranks that have a propensity estimate (metrics are over the top K).
    ``ctr``: raw CTR@K; ``ipw``: the position-debiased estimate (module docstring).
    ``arms``: click-through and dwell per split A/B arm (one group, arm None, for the lists
    logged outside a split); ``split_p``: the two-proportion test of the two split arms'
    click-through rates when the log holds exactly two, else None.
    """

    by_rank: list[RankStats]
    lists: int
    swapped_lists: int
    clicks: int
    depth: int
    ctr: float
    ipw: float
    arms: tuple[ArmStats, ...] = ()
    split_p: float | None = None


def click_report(logs: Sequence, depth: int) -> ClickReport:
    """Per-rank click-through for ranks 1..``depth`` and the raw and debiased metrics."""
    clicked, swapped, shown = click_arrays(logs, depth)
    props = estimate_propensities(clicked, swapped, shown) if len(logs) else [None] * depth
    by_rank = []
    for r in range(1, min(depth, int(shown.max(initial=0))) + 1):
        impressions = int((shown >= r).sum())
        clicks = int(clicked[:, r - 1].sum())
        by_rank.append(RankStats(r, impressions, clicks, clicks / impressions if impressions else 0.0,
                                 int((swapped == r).sum()), props[r - 1]))
    k = sum(p is not None for p in props) if len(logs) else 0
    arms = tuple(arm_stats(logs))
    split = [a for a in arms if a.arm is not None]
    return ClickReport(by_rank, len(logs), int((swapped > 0).sum()), int(sum(len(q.clicked) for q in logs)), k,
                       raw_ctr(clicked, k) if k else 0.0, ipw_precision(clicked, props) if k else 0.0, arms,
                       two_proportion_p(split[0], split[1]) if len(split) == 2 else None)
