"""Exact against approximate (Annoy) search: recall@10, build time, index size, memory, queries/s.

Two collections, each measured beside exact search in the same run:

* ``synthetic``: N clustered unit vectors (default 1M x 512): cluster centres on the sphere,
  members scattered around them so a member's cosine to its centre is about 0.7, with cluster
  sizes drawn from a long-tailed distribution; queries are fresh draws from the same clusters.
* ``real``: the stored vectors of a vsearch index (e.g. flowers17 with efficientnet-lite0);
  queries are the stored vectors themselves (their own row left out of both rankings).

Usage::

    python benchmarks/bench_search.py synthetic [--n 1000000] [--dim 512] [--trees 50]
        [--search-k-per-candidate 100,250,500,1000] [--queries 200]
    python benchmarks/bench_search.py real --index-dir /tmp/vs-flowers-lite0
    python benchmarks/bench_search.py rerank --index-dir /tmp/vs-flowers-lite0 \
        --groups /work/shared/datasets/flowers17/labels.csv [--qe 0,1,2,3,5,10] [--dba 0,1,2,3,5,10]

``dupes`` picks the duplicates threshold: it makes four edited copies of ``--queries`` images of
an index (JPEG quality 40, half size, 6% border crop, +25% brightness), embeds them with the
index's model, and prints the cosine of each copy to its original beside the cosine of each
indexed image to its nearest *other* image (which, in a collection without duplicates, is the
closest that two distinct photos come)::

    python benchmarks/bench_search.py dupes --index-dir /tmp/vs-flowers-lite0 --queries 100

``rerank`` measures average query expansion (QE) and database-side augmentation (DBA) with
``vsearch.evaluation.evaluate`` on a labelled collection: each DBA setting is built on a private copy of the
index (``build-index --dba N`` does the same), each QE setting re-queries through
``Searcher.expand``, leaving the query's own row out of its top-n as evaluate leaves it out of
the ranking. It prints mAP@10, P@10, mAP@100 and MRR, and a paired bootstrap 95% CI of the
per-query AP@10 change against no QE/no DBA.

Each Annoy build runs in a forked child, so its peak RSS (``ru_maxrss``) is its own. Search
memory is the growth of this process's RSS across the queries (pages of the memory-mapped
index or vectors that the queries touched). Times are medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vsearch.vectors import nearest

K = 10


def rss_mb() -> float:
    """Resident set size of this process, MiB (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def clustered(n: int, dim: int, seed: int, path: Path | None = None, structure: str = "nested") -> np.ndarray:
    """``n`` unit vectors in long-tailed clusters; written block by block into ``path`` if given.

    ``flat``: n/500 clusters, members at cosine 0.7 to their centre. Members of one cluster are
    then all about equally far apart (cosine ~0.49), so a point's 10 nearest neighbours are
    decided by noise alone: a worst case for any tree-based ANN.
    ``nested``: n/1000 topics, each with 50 sub-clusters (cosine 0.8 to the topic), members at
    cosine 0.9 to their sub-cluster (about 20 per sub-cluster, long-tailed): neighbours share a
    sub-cluster, as photos of one scene, object or burst do in a real collection.
    Centres and sizes come from a fixed seed, so database and queries share them.
    """
    rng = np.random.default_rng(0)

    def around(centres: np.ndarray, cos: float, r: np.random.Generator) -> np.ndarray:
        # |noise| = sqrt(dim) * sigma; cos(point, centre) = 1 / sqrt(1 + dim * sigma^2)
        sigma = np.sqrt((1 / cos**2 - 1) / dim)
        x = centres + r.standard_normal(centres.shape).astype(np.float32) * sigma
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    if structure == "flat":
        count = max(10, n // 500)
        centres = around(np.zeros((count, dim), np.float32), 1e-3, rng)  # random unit vectors
        cos = 0.7
    else:
        topics = around(np.zeros((max(10, n // 1000), dim), np.float32), 1e-3, rng)
        centres = around(np.repeat(topics, 50, axis=0), 0.8, rng)
        count = len(centres)
        cos = 0.9
    weights = rng.pareto(1.5, count) + 1
    weights /= weights.sum()
    out = (np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
           if path else np.empty((n, dim), dtype=np.float32))
    draw = np.random.default_rng(seed)
    for start in range(0, n, 65536):
        m = min(65536, n - start)
        out[start:start + m] = around(centres[draw.choice(count, size=m, p=weights)], cos, draw)
    if path:
        out.flush()
    return out


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each exact top-k found in the approximate top-k."""
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)]))


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def build_in_child(vectors_path: Path, ann_path: Path, trees: int) -> tuple[float, float]:
    """Build an Annoy index in a forked child: (seconds, peak RSS MiB of the child)."""
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            vectors = np.load(vectors_path, mmap_mode="r")
            nearest.build_annoy(vectors, ann_path, trees, n_jobs=-1)
        except BaseException as exc:  # noqa: BLE001 - report and leave the child
            print(f"build failed: {exc!r}", file=sys.stderr)
            code = 1
        os._exit(code)
    t = time.perf_counter()
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - t
    if status != 0:
        raise SystemExit("annoy build failed")
    return elapsed, usage.ru_maxrss / 1024


def measure(vectors: np.ndarray, vectors_path: Path, queries: np.ndarray, workdir: Path,
            trees_list: list[int], per_candidate: list[int], repeat: int, own_rows: np.ndarray | None,
            label: str) -> list[dict]:
    """Exact baseline, then Annoy at each trees x search_k; prints one line per setting."""
    n, dim = vectors.shape
    k = K + (1 if own_rows is not None else 0)

    def strip(rows: np.ndarray) -> np.ndarray:
        if own_rows is None:
            return rows[:, :K]
        return np.array([[r for r in row if r != o][:K] for row, o in zip(rows, own_rows)])

    rss0 = rss_mb()
    single_exact, (exact_rows, _) = timed(
        lambda: tuple(np.concatenate(x) for x in zip(*(nearest.exact_search(vectors, q[None], k) for q in queries))),
        repeat)
    exact_mem = rss_mb() - rss0
    batch_exact, (batch_rows, _) = timed(lambda: nearest.exact_search(vectors, queries, k), repeat)
    truth = strip(exact_rows)
    assert recall(strip(batch_rows), truth) > 0.999
    qn = len(queries)
    print(f"[{label}] n={n} dim={dim} queries={qn}  exact: single {qn / single_exact:,.1f} q/s, "
          f"batch of {qn} {qn / batch_exact:,.1f} q/s, vectors {vectors.nbytes / 2**20:,.0f} MiB, "
          f"RSS growth {exact_mem:,.0f} MiB", flush=True)
    rows_out = [{"setting": "exact", "single_qps": qn / single_exact, "batch_qps": qn / batch_exact, "recall": 1.0}]
    for trees in trees_list:
        ann_path = workdir / f"t{trees}.ann"
        build_s, build_rss = build_in_child(vectors_path, ann_path, trees)
        size_mb = ann_path.stat().st_size / 2**20
        print(f"[{label}] annoy trees={trees}: build {build_s:,.1f}s, peak RSS {build_rss:,.0f} MiB, "
              f"index {size_mb:,.0f} MiB", flush=True)
        rss1 = rss_mb()
        searcher = nearest.AnnoySearcher(ann_path, dim)
        for pc in per_candidate:
            sk = pc * k * nearest.CANDIDATE_FACTOR
            s_time, (a_rows, _) = timed(
                lambda s=searcher, sk=sk: tuple(np.stack(x) for x in zip(*(
                    nearest.approximate_search(s, vectors, q, k, search_k=sk) for q in queries))), repeat)
            b_time, (b_rows, _) = timed(
                lambda s=searcher, sk=sk: nearest.approximate_search_batch(s, vectors, queries, k, search_k=sk), repeat)
            r = recall(strip(a_rows), truth)
            rb = recall(strip(b_rows), truth)
            mark = " (default)" if trees == nearest.DEFAULT_TREES and pc == nearest.SEARCH_K_PER_CANDIDATE else ""
            print(f"[{label}]   search_k={sk} ({pc}/candidate){mark}: recall@10 {r:.4f} (batch {rb:.4f}), "
                  f"single {qn / s_time:,.1f} q/s ({single_exact / s_time:,.1f}x exact), "
                  f"batch {qn / b_time:,.1f} q/s ({batch_exact / b_time:,.2f}x exact batch), "
                  f"RSS growth {rss_mb() - rss1:,.0f} MiB", flush=True)
            rows_out.append({"setting": f"trees={trees} search_k={sk}", "recall": r, "single_qps": qn / s_time,
                             "batch_qps": qn / b_time, "build_s": build_s, "index_mb": size_mb})
        del searcher
        ann_path.unlink()
    return rows_out


def dupes(index_dir: Path, count: int, work: Path) -> None:
    """Cosine of edited copies to their originals against nearest distinct images."""
    from PIL import Image, ImageEnhance

    from vsearch.retrieval.search import Searcher
    from vsearch.storage.store import Store

    searcher = Searcher(Store.open(index_dir))
    vectors = np.asarray(searcher.vectors)
    _, nearest_cos = nearest.neighbour_graph(vectors, 1)
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(vectors), size=min(count, len(vectors)), replace=False))
    edits = {
        "jpeg q40": lambda im: im,
        "half size": lambda im: im.resize((im.width // 2, im.height // 2)),
        "crop 6%": lambda im: im.crop((im.width * 6 // 100, im.height * 6 // 100,
                                       im.width * 94 // 100, im.height * 94 // 100)),
        "bright +25%": lambda im: ImageEnhance.Brightness(im).enhance(1.25),
    }
    scores: dict[str, list[float]] = {name: [] for name in edits}
    for row in rows:
        original = Image.open(searcher.path(int(row))).convert("RGB")
        for name, edit in edits.items():
            out = work / f"{row}-{name.replace(' ', '_').replace('%', '')}.jpg"
            edit(original).save(out, quality=40 if name == "jpeg q40" else 90)
            v = searcher.image_vector(out).vector
            scores[name].append(float(v @ vectors[row]))

    def pct(xs) -> str:
        q = np.percentile(xs, [0, 1, 5, 50])
        return f"min {q[0]:.4f}  p1 {q[1]:.4f}  p5 {q[2]:.4f}  median {q[3]:.4f}"

    print(f"edited copy vs its original ({len(rows)} images of {searcher.meta.model.name}):")
    for name, xs in scores.items():
        print(f"  {name:12s} {pct(xs)}")
    top = np.sort(nearest_cos[:, 0])[::-1]
    q = np.percentile(top, [50, 95, 99, 99.9])
    print(f"nearest other indexed image ({len(top)} images): median {q[0]:.4f}  p95 {q[1]:.4f}  "
          f"p99 {q[2]:.4f}  p99.9 {q[3]:.4f}  max {top[0]:.4f}; top pairs: {', '.join(f'{x:.4f}' for x in top[:8])}")
    for t in (0.85, 0.88, 0.9, 0.92, 0.94, 0.96):
        caught = np.mean([x >= t for xs in scores.values() for x in xs])
        print(f"  threshold {t:.2f}: catches {caught:.1%} of edited copies; "
              f"{int(np.sum(top >= t))} indexed images have another image at or above it")


def rerank_grid(index_dir: Path, groups: Path, qe_values: list[int], dba_values: list[int], work: Path) -> None:
    """QE x DBA on a labelled collection, every setting scored by ``vsearch.evaluation.evaluate``."""
    import shutil

    from vsearch.evaluation import evaluate as ev
    from vsearch.evaluation import labels as label_files
    from vsearch.evaluation import metrics
    from vsearch.indexing.derived import build_dba
    from vsearch.retrieval.search import Searcher
    from vsearch.storage.store import Store

    class Expanding(Searcher):
        """Exact search that expands each query first (AQE). evaluate() ranks exact searches in
        blocks itself, but asks ``use_approximate`` first and goes query by query through
        ``neighbours`` when told yes: so this says yes to ``auto`` and searches exactly."""

        qe = 0

        def use_annoy(self, mode):
            return mode == "auto"

        def neighbours(self, vector, k, mode="auto", search_k=None):
            mode = "exact"
            if self.qe:
                # evaluate's queries are stored rows; the own row (cosine 1 to the raw query) is
                # left out of the expansion, as evaluate leaves it out of the ranking.
                own = [int(np.argmax(self.vectors @ vector))] if float(np.max(self.vectors @ vector)) > 0.9999 else []
                n, self.qe = self.qe, 0  # expand() itself searches through neighbours()
                try:
                    vector = self.expand(vector, n, mode, own)
                finally:
                    self.qe = n
            return super().neighbours(vector, k, mode, search_k)

    labels = label_files.read_groups(groups).queries
    ks = (1, 10, 100)
    base_ap = None
    print(f"{'dba':>4} {'qe':>3} {'mAP@10':>8} {'P@10':>7} {'mAP@100':>8} {'MRR':>7}  AP@10 change vs baseline [95% CI]")
    for dba in dba_values:
        copy = work / f"dba{dba}"
        shutil.copytree(index_dir, copy, ignore=shutil.ignore_patterns("index.*.ann", "lock"))
        with Store.open(copy, write=True) as store:
            store.set_ann(None)
            t = time.perf_counter()
            build_dba(store, dba)
            dba_s = time.perf_counter() - t
        for qe in qe_values:
            searcher = Expanding(Store.open(copy))
            searcher.qe = qe
            report = ev.evaluate(searcher, labels, ks, "auto")
            m = report.metrics
            ap = [metrics.score_query(r, [10])["map@10"] for r in report.per_query]
            if base_ap is None:
                base_ap, change = ap, "baseline"
            else:
                ci = metrics.paired_bootstrap_ci(base_ap, ap)
                change = f"{ci.mean_diff:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]"
            extra = f"  (DBA build {dba_s:.2f}s)" if dba and qe == qe_values[0] else ""
            print(f"{dba:>4} {qe:>3} {m['map@10']:8.4f} {m['precision@10']:7.4f} {m['map@100']:8.4f} "
                  f"{m['mrr']:7.4f}  {change}{extra}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["synthetic", "real", "rerank", "dupes"])
    parser.add_argument("--structure", choices=["nested", "flat"], default="nested",
                        help="synthetic: cluster structure (see clustered())")
    parser.add_argument("--groups", type=Path, help="rerank: labels CSV (path,group)")
    parser.add_argument("--qe", default="0,1,2,3,5,10", help="rerank: QE top-n values")
    parser.add_argument("--dba", default="0,1,2,3,5,10", help="rerank: DBA neighbour counts")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--trees", default=str(nearest.DEFAULT_TREES), help="comma-separated")
    parser.add_argument("--search-k-per-candidate", default=str(nearest.SEARCH_K_PER_CANDIDATE),
                        help="comma-separated; search_k = this x CANDIDATE_FACTOR x k")
    parser.add_argument("--index-dir", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    trees = [int(x) for x in args.trees.split(",")]
    per_candidate = [int(x) for x in args.search_k_per_candidate.split(",")]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        if args.what == "dupes":
            dupes(args.index_dir, args.queries, work)
        elif args.what == "rerank":
            rerank_grid(args.index_dir, args.groups, [int(x) for x in args.qe.split(",")],
                        [int(x) for x in args.dba.split(",")], work)
        elif args.what == "synthetic":
            t = time.perf_counter()
            vpath = work / "vectors.npy"
            clustered(args.n, args.dim, seed=1, path=vpath, structure=args.structure)
            vectors = np.load(vpath, mmap_mode="r")
            queries = clustered(args.queries, args.dim, seed=2, structure=args.structure)
            print(f"generated {args.n} x {args.dim} {args.structure} clustered vectors in {time.perf_counter() - t:.1f}s", flush=True)
            measure(vectors, vpath, queries, work, trees, per_candidate, args.repeat, None,
                    f"synthetic {args.structure}")
        else:
            if args.index_dir is None:
                raise SystemExit("real: give --index-dir of a built vsearch index")
            from vsearch.storage.store import Store

            store = Store.open(args.index_dir)
            vpath = store.dir / store.meta.vectors
            vectors = np.load(vpath, mmap_mode="r")
            rng = np.random.default_rng(0)
            own = np.sort(rng.choice(len(vectors), size=min(args.queries, len(vectors)), replace=False))
            queries = np.asarray(vectors[own])
            measure(vectors, vpath, queries, work, trees, per_candidate, args.repeat, own,
                    f"real {store.meta.model.name} {args.index_dir}")


if __name__ == "__main__":
    main()
