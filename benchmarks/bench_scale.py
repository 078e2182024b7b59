"""One machine at scale: each way of storing and searching the vectors, measured side by side.

For each choice it reports build time, bytes on disk, peak RSS of the build and of the search
process, query latency (median single query; batched, per query) and recall@10 against exact
float32 search on held-out queries:

  fp32-exact      the float32 vectors, one blocked matmul per query batch (what vsearch does today)
  fp16-exact      a float16 copy, exact
  pca256-exact    PCA to 256 dimensions (fitted on a seeded 100k sample, centred, L2-normalised)
  annoy-pca256    Annoy (50 trees) over the PCA-256 copy, candidates re-scored exactly against it
  annoy-fp32      Annoy over the float32 vectors (skipped above --annoy-fp32-max vectors: the issue
                  measured 1,106 s and a 5.0 GB peak at 1M)
  ivfpq-fp32      IVF-PQ (vsearch.vectors.ivfpq: faiss, 64-byte codes) over float32, re-scored against float32
  ivfpq-fp16      IVF-PQ over the float16 copy, re-scored against it
  ivfpq-pca256    IVF-PQ over the PCA-256 copy, re-scored against it

Collections:

* ``synthetic``: ``--n`` (default 1M; ``--quick``: 100k) clustered unit vectors of the real
  dimension (1280, efficientnet-lite0), generated block by block into a ``.npy`` memory map:
  nested clusters (n/1000 topics of 50 sub-clusters, about 20 members each, see
  :func:`make_synthetic`), so that a vector's neighbours share its sub-cluster as photos of one
  scene do. ``--queries`` (1,000) fresh members of the same sub-clusters.
* ``real``: the stored vectors of a vsearch index (e.g. a copy of /work/cache/tiny-index);
  ``--queries`` rows (at most a quarter of them) are held out as queries, the rest searched.

Each build and each search runs in its own child process (``python bench_scale.py _child``), so
each peak RSS (``VmHWM``) is that step's own. Memory-mapped pages a search touches count in
its RSS: exact search over float32 at 1M touches all 5.1 GB of them.

Usage::

    nice python benchmarks/bench_scale.py synthetic --quick --out /tmp/scale-100k.json
    nice python benchmarks/bench_scale.py synthetic --n 1000000 --out /tmp/scale-1m.json
    nice python benchmarks/bench_scale.py real --index-dir /tmp/tiny-index --out /tmp/scale-tiny.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vsearch.vectors import nearest  # noqa: E402

K = 10
PCA_DIM = 256
PCA_SAMPLE = 100_000
TREES = 50
CHOICES = ("fp32-exact", "fp16-exact", "pca256-exact", "annoy-pca256", "annoy-fp32", "ivfpq-fp32", "ivfpq-fp16",
           "ivfpq-pca256")
#: Single-query latency is the median over this many queries (exact ones read every vector).
SINGLE_EXACT, SINGLE_ANN = 20, 200
#: BLAS and OpenMP threads per child (0: the libraries' default). Measured on the shared 2-core
#: box (load ~9): one exact query over 1,020 x 1280 took a median 20 ms with OpenBLAS's default
#: threads spinning against other jobs, 0.14 ms on one thread. Set by --threads.
THREADS = 1


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), MiB. Not ru_maxrss: Linux keeps that across
    exec, so a child would report its parent's peak when the parent was the larger."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --- the collection ------------------------------------------------------------------------


def make_synthetic(work: Path, n: int, dim: int, queries: int, block: int = 65536) -> None:
    """Nested clusters on the sphere (n/1000 topics x 50 sub-clusters, long-tailed sizes; a member
    at cosine 0.9 to its sub-cluster's centre, which is at 0.8 to its topic), written block by
    block; the queries are fresh members of the *same* sub-clusters (one set of centres for both:
    ``bench_search.clustered`` draws its centres from the count, so its queries, drawn with a
    smaller count, come from other sub-clusters than the vectors they search)."""
    rng = np.random.default_rng(0)

    def around(centres: np.ndarray, cos: float, r: np.random.Generator) -> np.ndarray:
        sigma = np.sqrt((1 / cos**2 - 1) / dim)  # cos(point, centre) = 1 / sqrt(1 + dim sigma^2)
        x = centres + r.standard_normal(centres.shape).astype(np.float32) * sigma
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    topics = around(np.zeros((max(10, n // 1000), dim), np.float32), 1e-3, rng)  # random directions
    centres = around(np.repeat(topics, 50, axis=0), 0.8, rng)
    weights = rng.pareto(1.5, len(centres)) + 1
    weights /= weights.sum()
    out = np.lib.format.open_memmap(work / "base.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    draw = np.random.default_rng(1)
    for start in range(0, n, block):
        m = min(block, n - start)
        out[start:start + m] = around(centres[draw.choice(len(centres), size=m, p=weights)], 0.9, draw)
    out.flush()
    del out
    draw = np.random.default_rng(2)
    np.save(work / "queries.npy", around(centres[draw.choice(len(centres), size=queries, p=weights)], 0.9, draw))


def make_real(work: Path, index_dir: Path, queries: int) -> None:
    meta = json.loads((index_dir / "meta.json").read_text())
    vectors = np.load(index_dir / meta["vectors"], mmap_mode="r")
    q = min(queries, len(vectors) // 4)
    held = np.zeros(len(vectors), bool)
    held[np.random.default_rng(0).choice(len(vectors), q, replace=False)] = True
    np.save(work / "base.npy", np.asarray(vectors[~held], dtype=np.float32))
    np.save(work / "queries.npy", np.asarray(vectors[held], dtype=np.float32))


# --- each choice, in a child ---------------------------------------------------------------


def _pca(work: Path):
    """(mean, components (PCA_DIM, D)) fitted once per collection, on a seeded sample."""
    path = work / "pca.npz"
    if path.exists():
        z = np.load(path)
        return z["mean"], z["components"]
    base = np.load(work / "base.npy", mmap_mode="r")
    rows = np.sort(np.random.default_rng(0).choice(len(base), min(PCA_SAMPLE, len(base)), replace=False))
    sample = np.asarray(base[rows], dtype=np.float64)
    mean = sample.mean(axis=0)
    cov = np.cov(sample - mean, rowvar=False)
    _, vecs = np.linalg.eigh(cov)
    components = vecs[:, ::-1][:, :PCA_DIM].T.astype(np.float32)
    np.savez(path, mean=mean.astype(np.float32), components=components)
    return mean.astype(np.float32), components


def _project(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    y = (np.asarray(x, dtype=np.float32) - mean) @ components.T
    return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)


def _write_blocks(path: Path, source: np.ndarray, fn, dim: int, dtype) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(len(source), dim))
    for start in range(0, len(source), 65536):
        out[start:start + 65536] = fn(source[start:start + 65536])
    out.flush()
    del out


def _space(choice: str) -> str:
    return "pca256" if "pca256" in choice else "fp16" if "fp16" in choice else "fp32"


def _vectors_file(work: Path, space: str) -> Path:
    return work / {"fp32": "base.npy", "fp16": "base.fp16.npy", "pca256": "base.pca256.npy"}[space]


def _index_file(work: Path, choice: str) -> Path | None:
    kind = choice.split("-")[0]
    return work / f"{choice}.{kind}" if kind in ("annoy", "ivfpq") else None


def child_build(choice: str, work: Path) -> dict:
    """Make what ``choice`` searches: the copy of the vectors it needs, and its index."""
    space = _space(choice)
    base = np.load(work / "base.npy", mmap_mode="r")
    vectors_path = _vectors_file(work, space)
    out: dict = {}
    t = time.perf_counter()
    if space == "fp16" and not vectors_path.exists():
        _write_blocks(vectors_path, base, lambda b: np.asarray(b, dtype=np.float16), base.shape[1], np.float16)
    if space == "pca256" and not vectors_path.exists():
        mean, comp = _pca(work)
        _write_blocks(vectors_path, base, lambda b: _project(b, mean, comp), PCA_DIM, np.float32)
    copy_s = time.perf_counter() - t
    vectors = np.load(vectors_path, mmap_mode="r")
    index_path = _index_file(work, choice)
    t = time.perf_counter()
    if choice.startswith("annoy"):
        nearest.build_annoy(vectors, index_path, TREES)
    elif choice.startswith("ivfpq"):
        from vsearch.vectors import ivfpq

        params = ivfpq.choose_params(len(vectors), vectors.shape[1])
        ivfpq.build_file(vectors, index_path, params)
        out["params"] = vars(params)
    out["index_s"] = time.perf_counter() - t
    out["copy_s"] = copy_s
    out["build_s"] = out["index_s"] + (copy_s if not choice.startswith(("annoy", "ivfpq")) else 0.0)
    # What the search reads: the vectors it ranks against (re-scoring included) and its index.
    out["bytes"] = vectors_path.stat().st_size + (index_path.stat().st_size if index_path else 0)
    out["index_bytes"] = index_path.stat().st_size if index_path else 0
    out["vectors_bytes"] = vectors_path.stat().st_size
    return out


def _searcher(choice: str, work: Path, dim: int):
    path = _index_file(work, choice)
    if choice.startswith("annoy"):
        return nearest.AnnoySearcher(path, dim)
    if choice.startswith("ivfpq"):
        from vsearch.vectors import ivfpq

        params = ivfpq.choose_params(len(np.load(work / "base.npy", mmap_mode="r")), dim)
        return ivfpq.IvfpqSearcher(path, dim, nprobe=params.nprobe)
    return None


def child_search(choice: str, work: Path) -> dict:
    """Single and batched latency and recall@10 against exact float32 (``gt.npy``)."""
    space = _space(choice)
    queries = np.load(work / "queries.npy")
    if space == "pca256":
        mean, comp = _pca(work)
        queries = _project(queries, mean, comp)
    vectors = np.load(_vectors_file(work, space), mmap_mode="r")
    t = time.perf_counter()
    searcher = _searcher(choice, work, vectors.shape[1])
    load_s = time.perf_counter() - t

    def single(q):
        if searcher is None:
            return nearest.exact_search(vectors, q[None], K)[0][0]
        return nearest.approximate_search(searcher, vectors, q, K)[0]

    def batch(qs):
        if searcher is None:  # 256 queries a pass, as evaluate does: bounded temporaries at 1M
            return np.concatenate([nearest.exact_search(vectors, qs[i:i + 256], K)[0] for i in range(0, len(qs), 256)])
        return nearest.approximate_search_batch(searcher, vectors, qs, K)[0]

    n_single = SINGLE_EXACT if searcher is None else SINGLE_ANN
    times, cpu = [], []
    for q in queries[:n_single]:
        t, c = time.perf_counter(), time.process_time()
        single(q)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    t, c = time.perf_counter(), time.process_time()
    rows = batch(queries)
    batch_s, batch_cpu = time.perf_counter() - t, time.process_time() - c
    # CPU time beside wall time: on a shared, busy box (and under nice) the wall clock measures
    # the other jobs too; one thread's CPU time is what the query costs on a free core.
    out = {"single_ms": 1000 * statistics.median(times), "single_cpu_ms": 1000 * statistics.median(cpu),
           "batch_ms": 1000 * batch_s / len(queries), "batch_cpu_ms": 1000 * batch_cpu / len(queries),
           "load_s": load_s}
    if choice == "fp32-exact":
        np.save(work / "gt.npy", rows)
    gt = np.load(work / "gt.npy")
    out["recall"] = float(np.mean([len(set(a) & set(e)) / K for a, e in zip(rows, gt)]))
    if choice.startswith("ivfpq"):  # how recall moves with the lists probed (batched)
        sweep = {}
        base_probe = searcher.nprobe
        for probe in sorted({max(1, base_probe // 4), max(1, base_probe // 2), base_probe, base_probe * 2}):
            shortlist = searcher.candidates_batch(queries, K * searcher.candidate_factor, nprobe=probe)
            got = [nearest._best(vectors, q, s, K)[0] for q, s in zip(queries, shortlist)]
            sweep[probe] = float(np.mean([len(set(a) & set(e)) / K for a, e in zip(got, gt)]))
        out["nprobe"] = base_probe
        out["nprobe_recall"] = sweep
    return out


def run_child(step: str, choice: str, work: Path, timeout: float) -> dict:
    """One step of one choice in a fresh process: its result, with its own peak RSS."""
    env = dict(os.environ)
    if THREADS:  # one thread each: on a shared box, BLAS/OpenMP threads spin against other jobs
        env.update(OPENBLAS_NUM_THREADS=str(THREADS), OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    proc = subprocess.run([sys.executable, __file__, "_child", step, choice, str(work)], capture_output=True,
                          text=True, timeout=timeout, check=False, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the run -------------------------------------------------------------------------------


def run(work: Path, choices: list[str], label: str, out_path: Path | None, timeout: float) -> list[dict]:
    base = np.load(work / "base.npy", mmap_mode="r")
    n, dim = base.shape
    nq = len(np.load(work / "queries.npy", mmap_mode="r"))
    print(f"[{label}] {n} x {dim} vectors, {nq} held-out queries, choices: {', '.join(choices)}", flush=True)
    for stale in ("base.fp16.npy", "base.pca256.npy", "pca.npz", "gt.npy", *(f"{c}.*" for c in CHOICES)):
        for path in work.glob(stale):  # each run builds its own copies and indexes, timed
            path.unlink()
    results = []
    for choice in ["fp32-exact"] + [c for c in choices if c != "fp32-exact"]:
        build = run_child("build", choice, work, timeout)
        search = run_child("search", choice, work, timeout) if "error" not in build else {}
        row = {"set": label, "n": n, "dim": dim, "choice": choice, **{f"build_{k}" if k == "error" else k: v
               for k, v in build.items()}, **search}
        results.append(row)
        print(f"[{label}] {choice}: " + (", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
            if k not in ("set", "n", "dim", "choice"))), flush=True)
        if out_path:
            out_path.write_text(json.dumps(results, indent=1))
    return results


def table(results: list[dict]) -> str:
    """The results as a Markdown table (sizes in MB, peak RSS in MB)."""
    lines = ["| set | n | choice | build s | disk MB | build RSS MB | search RSS MB | single ms (cpu) "
             "| batch ms/q (cpu) | recall@10 |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "build_error" in r or "error" in r:
            lines.append(f"| {r['set']} | {r['n']:,} | {r['choice']} | failed: {r.get('build_error') or r.get('error')} "
                         "| | | | | | |")
            continue
        lines.append(f"| {r['set']} | {r['n']:,} | {r['choice']} | {r['build_s']:.1f} | {r['bytes'] / 1e6:,.0f} | "
                     f"{r['build_rss_mb']:,.0f} | {r['rss_mb']:,.0f} | {r['single_ms']:.2f} ({r['single_cpu_ms']:.2f}) | "
                     f"{r['batch_ms']:.2f} ({r['batch_cpu_ms']:.2f}) | "
                     f"{r['recall']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    global THREADS
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        step, choice, work = sys.argv[2], sys.argv[3], Path(sys.argv[4])
        out = child_build(choice, work) if step == "build" else child_search(choice, work)
        out["build_rss_mb" if step == "build" else "rss_mb"] = peak_rss_mb()
        print(json.dumps(out))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("set", choices=["synthetic", "real"])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--quick", action="store_true", help="100k synthetic vectors (a CI-sized check)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--index-dir", type=Path, help="real: the index whose stored vectors to use")
    parser.add_argument("--choices", default=",".join(CHOICES))
    parser.add_argument("--annoy-fp32-max", type=int, default=200_000,
                        help="skip annoy-fp32 above this many vectors (1M: 1,106 s, 5.0 GB peak, from the issue)")
    parser.add_argument("--work", type=Path, help="keep the files here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="write the results here as JSON (after each choice)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per step")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="BLAS/OpenMP threads per child (0: library default; 1 gives stable figures on a busy box)")
    args = parser.parse_args()
    THREADS = args.threads
    n = 100_000 if args.quick else args.n
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        if args.set == "synthetic":
            label = f"synthetic {n // 1000}k" if n < 1_000_000 else f"synthetic {n / 1e6:g}M"
            if not (work / "base.npy").exists():
                make_synthetic(work, n, args.dim, args.queries)
        else:
            if args.index_dir is None:
                parser.error("real needs --index-dir")
            label = args.index_dir.name
            make_real(work, args.index_dir, args.queries)
        print(f"[{label}] vectors ready in {time.perf_counter() - t:.0f} s ({work})", flush=True)
        count = len(np.load(work / "base.npy", mmap_mode="r"))
        choices = [c for c in args.choices.split(",") if c]
        if count > args.annoy_fp32_max and "annoy-fp32" in choices:
            choices.remove("annoy-fp32")
            print(f"[{label}] annoy-fp32 skipped above {args.annoy_fp32_max} vectors", flush=True)
        results = run(work, choices, label, args.out, args.timeout)
        print(table(results))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
