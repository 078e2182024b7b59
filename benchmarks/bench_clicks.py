"""Position bias on a simulated click log: raw click-through ranks two systems wrongly, the
position-debiased (IPW) estimate, with propensities estimated from swap interventions, rightly.

The simulation (seeded, numpy only, a few seconds):

* people look at rank r with a known probability, ``1 / r ** --eta`` (0.8), and click a result
  they look at with probability 0.9 when it is relevant, 0.05 when it is not (clicks are noisy);
* system A puts its few relevant results on top: each of its results at rank 1-2 is relevant
  with probability 0.85, at ranks 3-10 with 0.10 (precision@10 0.25);
* system B finds more, but ranks them lower: 0.15 at ranks 1-2, 0.55 at ranks 3-10
  (precision@10 0.47), so B is the better system by the truth;
* each system serves ``--queries`` lists of 10 through the same logger as the page
  (vsearch.learning.clicks' design: on ``--swap-fraction`` of lists one adjacent pair (k, k + 1),
  k uniform in 1..9, is swapped before showing).

The propensities are estimated from the swaps of both logs together (the bias belongs to the
people and the page, not to the system) with vsearch.learning.propensity.estimate_propensities, and
each system is scored with raw CTR@10 and the IPW estimate of precision@10 in click units
(vsearch.learning.propensity.ipw_precision). The truth in those units is the mean click probability of
an examined result: 0.05 + 0.85 * precision.

Run: ``nice python benchmarks/bench_clicks.py`` (``--queries``, ``--swap-fraction``, ``--eta``,
``--seed``). Measured output is in docs/clicks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vsearch.learning.propensity import estimate_propensities, ipw_precision, raw_ctr  # noqa: E402

DEPTH = 10
CLICK_RELEVANT, CLICK_OTHER = 0.9, 0.05
SYSTEMS = {
    "A (few relevant, on top)": np.array([0.85, 0.85] + [0.10] * 8),
    "B (more relevant, lower)": np.array([0.15, 0.15] + [0.55] * 8),
}


def simulate(rel_prob: np.ndarray, examine: np.ndarray, n: int, swap_fraction: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` logged lists of one system: (clicked, swapped, shown, relevant), shown order.

    ``rel_prob[r]``: chance the system's result at rank r + 1 is relevant; ``examine[r]``: the
    true propensity of shown rank r + 1. Swaps as vsearch.learning.clicks.log_impressions draws them.
    """
    depth = len(rel_prob)
    relevant = rng.random((n, depth)) < rel_prob
    swapped = np.where(rng.random(n) < swap_fraction, rng.integers(1, depth, n), 0)
    shown_rel = relevant.copy()
    rows = np.nonzero(swapped)[0]
    k = swapped[rows]
    shown_rel[rows, k - 1], shown_rel[rows, k] = relevant[rows, k], relevant[rows, k - 1]
    attract = np.where(shown_rel, CLICK_RELEVANT, CLICK_OTHER)
    clicked = rng.random((n, depth)) < examine * attract
    return clicked, swapped, np.full(n, depth), relevant


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=100_000, help="lists logged per system")
    parser.add_argument("--swap-fraction", type=float, default=0.1, help="share of lists with a swapped pair")
    parser.add_argument("--eta", type=float, default=0.8, help="true bias: propensity of rank r is 1/r**eta")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    true = 1.0 / np.arange(1, DEPTH + 1) ** args.eta
    logs = {name: simulate(p, true, args.queries, args.swap_fraction, rng) for name, p in SYSTEMS.items()}
    clicked = np.concatenate([c for c, _, _, _ in logs.values()])
    swapped = np.concatenate([s for _, s, _, _ in logs.values()])
    shown = np.concatenate([n for _, _, n, _ in logs.values()])
    estimated = estimate_propensities(clicked, swapped, shown)
    print(f"{args.queries:,} lists per system, {args.swap_fraction:.0%} with a swapped pair "
          f"({int((swapped > 0).sum()):,} swaps in all), true propensity 1/r^{args.eta:g}, seed {args.seed}")
    print("rank  true   estimated  error")
    for r, (t, e) in enumerate(zip(true, estimated), start=1):
        shown_e = f"{e:9.3f}  {(e - t) / t:+6.1%}" if e is not None else "      n/a"
        print(f"{r:4d}  {t:.3f}  {shown_e}")
    print()
    print(f"{'system':26s} {'precision@10':>12s} {'truth':>7s} {'raw CTR@10':>10s} {'IPW@10':>7s} {'IPW, true p':>11s}")
    scores = {}
    for name, (c, _, _, relevant) in logs.items():
        precision = float(relevant.mean())
        truth = CLICK_OTHER + (CLICK_RELEVANT - CLICK_OTHER) * precision
        raw, ipw, ipw_true = raw_ctr(c, DEPTH), ipw_precision(c, estimated), ipw_precision(c, list(true))
        scores[name] = (precision, raw, ipw)
        print(f"{name:26s} {precision:12.3f} {truth:7.3f} {raw:10.4f} {ipw:7.3f} {ipw_true:11.3f}")
    (a, b) = scores.values()
    better = lambda i: "B" if b[i] > a[i] else "A"  # noqa: E731
    print()
    print(f"better by the truth: {better(0)}; by raw CTR: {better(1)}; by IPW with estimated propensities: "
          f"{better(2)}  ({time.perf_counter() - started:.1f}s)")
    return 0 if better(0) == better(2) != better(1) else 1


if __name__ == "__main__":
    sys.exit(main())
