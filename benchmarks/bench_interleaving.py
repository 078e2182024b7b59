"""How many queries does interleaving need to find the better ranker, against a split A/B test?

Simulated people search flowers17 (1,360 labelled photos, 17 classes of 80) and click; the
rankers are vsearch's own, so their true quality is known from the labels:

* ``qe0``: ``Index.query(photo, qe=0, exclude_self=True)``, the top 10;
* ``qe2``: the same with query expansion over the top 2 (docs/defaults.md);
* ``worse``: ``qe0`` with its first 5 results dropped (its results 6 to 15): a deliberately
  worse ranker.

The click model is benchmarks/bench_clicks.py's: a person looks at rank r with probability
``1 / r ** 0.8`` and clicks a result they look at with probability 0.9 when it is of the query's
class, 0.05 when not (noise). Each simulated query is a photo drawn at random. With
``--spread S`` people also differ in how much they click: each query's click probabilities are
multiplied by a draw from a gamma distribution of mean 1 and standard deviation S (capped at
probability 1): some people click a lot, some hardly at all, as on a real page. S = 0 is
bench_clicks.py's model exactly.

Three ways to tell two rankers apart from n queries, each run ``--runs`` times per n:

* **interleaving**: every query is shown ``vsearch.learning.interleaving.team_draft`` of both
  top-10s (the library's code, fresh coin flips per query); clicks are credited to the team
  that contributed the result; the better ranker is picked when the two-sided sign test over
  the queries won and lost has p < 0.05 (``interleaving.summarize``);
* **split A/B, CTR**: each query goes to A or B at random (about n/2 each) and is shown that
  ranker's list; the clicks per list are compared with Welch's t-test, p < 0.05;
* **split A/B, IPW**: the same split, each click weighted 1 / propensity of its rank (the
  true propensities: the debiased metric's best case, see docs/clicks.md), Welch's t-test.

A method "picks the better one" in a run when its test is significant and points the right
way. Reported: the share of runs that do, for each n, and the smallest n where at least 95% of
runs do. An A/A pair (``qe0`` against itself) checks the other side: how often each method
names a winner when there is none (it should be at most 5% of runs).

Run: ``nice python benchmarks/bench_interleaving.py`` (``--index`` a flowers17 index, built
there when missing; ``--runs``, ``--seed``). Measured output is in docs/defaults.md.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import vsearch  # noqa: E402
from vsearch.learning import interleaving  # noqa: E402

DEPTH = 10
ETA = 0.8
CLICK_RELEVANT, CLICK_OTHER = 0.9, 0.05
#: Interleavings drawn per query and pair, sampled from at each simulated query.
DRAFTS = 32
SIZES = (25, 50, 100, 200, 400, 800, 1600, 3200, 6400)


def rankings(index_dir: Path, images: Path, labels: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each ranker's top 10 (as label-relevance 0/1) for every labelled photo."""
    group: dict[Path, str] = {}
    with open(labels, newline="") as fh:
        for row in csv.DictReader(fh):
            group[(labels.parent / row["path"]).resolve()] = row["group"]
    if not (index_dir / "meta.json").exists():
        print(f"building {index_dir} from {images} ...", file=sys.stderr)
        vsearch.build_index(images, index_dir).close()
    photos = sorted(group)
    ids: dict[str, list[list[str]]] = {"qe0": [], "qe2": [], "worse": []}
    rel: dict[str, list[list[int]]] = {"qe0": [], "qe2": [], "worse": []}
    with vsearch.open_index(index_dir) as index:
        for p in photos:
            for name, qe, k in (("qe0", 0, 15), ("qe2", 2, DEPTH)):
                hits = index.query(p, k=k, qe=qe, exclude_self=True)
                found = [h.path.resolve() for h in hits]
                if name == "qe0":
                    ids["worse"].append([str(f) for f in found[5:15]])
                    rel["worse"].append([int(group.get(f) == group[p]) for f in found[5:15]])
                    found = found[:DEPTH]
                ids[name].append([str(f) for f in found])
                rel[name].append([int(group.get(f) == group[p]) for f in found])
    # relevance by result id, per query, for the interleaved lists
    truth = {name: np.asarray(r, dtype=np.int8) for name, r in rel.items()}
    return truth, np.asarray([[ids[n][q] for n in ("qe0", "qe2", "worse")] for q in range(len(photos))], dtype=object)


def drafts(ids: np.ndarray, a: int, b: int, group_rel: dict[str, np.ndarray], names: tuple[str, str],
           rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """For each query, DRAFTS team-draft lists of rankers ``a`` and ``b``: relevance (q, d, 10)
    and team A (q, d, 10)."""
    n = len(ids)
    rel = np.zeros((n, DRAFTS, DEPTH), dtype=np.int8)
    team_a = np.zeros((n, DRAFTS, DEPTH), dtype=bool)
    for q in range(n):
        relevant = {}
        for col, name in ((a, names[0]), (b, names[1])):
            relevant.update(zip(ids[q][col], group_rel[name][q]))
        for d in range(DRAFTS):
            shown = interleaving.team_draft(ids[q][a], ids[q][b], k=DEPTH, rng=rng)
            rel[q, d, :len(shown)] = [relevant[r] for r in shown.results]
            team_a[q, d, :len(shown)] = [t == "A" for t in shown.teams]
    return rel, team_a


def clicks(rel: np.ndarray, rng: np.random.Generator, spread: float = 0.0) -> np.ndarray:
    """Simulated clicks on lists with relevance ``rel`` (n, 10) under the examination model;
    ``spread``: how much people differ in how much they click (the sd of a mean-1 gamma factor)."""
    examine = 1.0 / np.arange(1, DEPTH + 1) ** ETA
    p = examine * np.where(rel == 1, CLICK_RELEVANT, CLICK_OTHER)
    if spread > 0:
        shape = 1.0 / spread ** 2
        p = np.minimum(1.0, p * rng.gamma(shape, 1.0 / shape, size=(len(rel), 1)))
    return rng.random(rel.shape) < p


def welch_p(x: np.ndarray, y: np.ndarray) -> float:
    from scipy import stats  # only the split tests use it

    if x.std() == 0 and y.std() == 0:
        return 1.0 if x.mean() == y.mean() else 0.0
    return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


def experiment(n: int, rel_a: np.ndarray, rel_b: np.ndarray, inter: tuple[np.ndarray, np.ndarray],
               rng: np.random.Generator, spread: float = 0.0) -> dict[str, int]:
    """One run with n queries: each method's call, +1 (A better), -1 (B better) or 0 (no call)."""
    out: dict[str, int] = {}
    queries = rng.integers(0, len(rel_a), n)
    # interleaving
    inter_rel, team_a = inter
    pick = rng.integers(0, DRAFTS, n)
    c = clicks(inter_rel[queries, pick], rng, spread)
    ca = (c & team_a[queries, pick]).sum(1)
    cb = (c & ~team_a[queries, pick]).sum(1)
    rep = interleaving.summarize([interleaving.Outcome(int(x), int(y)) for x, y in zip(ca, cb)])
    out["interleaving"] = 0 if rep.better is None else (1 if rep.better == "A" else -1)
    # split A/B: each query sees one ranker
    to_a = rng.random(n) < 0.5
    c_a = clicks(rel_a[queries[to_a]], rng, spread)
    c_b = clicks(rel_b[queries[~to_a]], rng, spread)
    weights = np.arange(1, DEPTH + 1) ** ETA  # 1 / true propensity
    for name, xa, xb in (("split CTR", c_a.sum(1) / DEPTH, c_b.sum(1) / DEPTH),
                         ("split IPW", (c_a * weights).sum(1) / DEPTH, (c_b * weights).sum(1) / DEPTH)):
        if len(xa) < 2 or len(xb) < 2:
            out[name] = 0
            continue
        p = welch_p(xa, xb)
        out[name] = 0 if p >= 0.05 else (1 if xa.mean() > xb.mean() else -1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, default=Path("/work/cache/flowers17-index"),
                    help="a flowers17 index (efficientnet-lite0); built there when missing")
    ap.add_argument("--images", type=Path, default=Path("/work/shared/datasets/flowers17"))
    ap.add_argument("--labels", type=Path, default=Path("/work/shared/datasets/flowers17/labels.csv"))
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spread", type=float, nargs="+", default=[0.0, 1.0],
                    help="how much people differ in how much they click (0: not at all); one table set each")
    ap.add_argument("--cache", type=Path, default=None, help="keep the rankings here between runs (a .npz)")
    args = ap.parse_args()
    started = time.perf_counter()
    if args.cache is not None and args.cache.exists():
        with np.load(args.cache, allow_pickle=True) as data:
            truth, ids = {k: data[k] for k in ("qe0", "qe2", "worse")}, data["ids"]
    else:
        truth, ids = rankings(args.index, args.images, args.labels)
        if args.cache is not None:
            np.savez(args.cache, ids=ids, **truth)
    print(f"rankings ready ({time.perf_counter() - started:.0f}s)")
    col = {"qe0": 0, "qe2": 1, "worse": 2}
    print(f"{len(ids)} queries; true precision@10: " + ", ".join(f"{k} {v.mean():.3f}" for k, v in truth.items())
          + "; expected clicks per list: " + ", ".join(
              f"{k} {(clicks(np.repeat(v, 20, 0), np.random.default_rng(1)).sum(1)).mean():.3f}" for k, v in truth.items()))
    rng = random.Random(args.seed)
    nprng = np.random.default_rng(args.seed)
    pairs = (("qe2", "qe0"), ("qe0", "worse"), ("qe0", "qe0"))
    methods = ("interleaving", "split CTR", "split IPW")
    inters = {(a, b): drafts(ids, col[a], col[b], truth, (a, b), rng) for a, b in pairs}
    for spread, (a, b) in ((s, pair) for s in args.spread for pair in pairs):
        inter = inters[(a, b)]
        same = a == b
        print(f"\nspread {spread:g}: {a} (A) against {b} (B): share of {args.runs} runs that "
              + ("name a winner (either way; want <= 5%)" if same else "pick A, the better one, at p < 0.05"))
        print(f"{'queries':>8} " + " ".join(f"{m:>13}" for m in methods) + ("" if same else "   (picked B, the worse)"))
        needed: dict[str, int | None] = dict.fromkeys(methods)
        for n in SIZES:
            calls = [experiment(n, truth[a], truth[b], inter, nprng, spread) for _ in range(args.runs)]
            share = {m: np.mean([c[m] != 0 if same else c[m] == 1 for c in calls]) for m in methods}
            wrong = {m: np.mean([c[m] == -1 for c in calls]) for m in methods}
            for m in methods:
                if not same and needed[m] is None and share[m] >= 0.95:
                    needed[m] = n
            print(f"{n:>8} " + " ".join(f"{share[m]:>13.3f}" for m in methods)
                  + ("" if same else "   " + " ".join(f"{wrong[m]:.3f}" for m in methods)), flush=True)
        if not same:
            print("queries needed for 95% of runs to pick the better one: "
                  + ", ".join(f"{m} {needed[m] if needed[m] else f'> {SIZES[-1]}'}" for m in methods))
    print(f"\n({time.perf_counter() - started:.0f}s)")


if __name__ == "__main__":
    main()
