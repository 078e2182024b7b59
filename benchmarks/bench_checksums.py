"""What checksums cost: the commit that records them, ``check()`` that verifies them, and the
query-time guard that replaced hashing on the query path (docs/damage.md).

On N synthetic 1280-d unit vectors (seeded, as efficientnet-lite0's), committed through the
writer as ``build-index`` commits them, with the fp32 format and with ``--vectors pca256``:

* ``commit``: one ``consolidate`` (merge the chunks into the generation's vectors, make the
  search copy, commit ``meta.json``), timed with the checksums recorded and without
  (``checksums.record`` replaced by a no-op), median of ``--repeat``;
* ``hash``: SHA-256 of the vectors file alone (what the commit adds), and of a file the size
  of the Annoy index at N (5.8 KB a vector, docs/scaling.md), the most a ``build-index`` adds;
* ``check``: ``vsearch.check()`` of the committed index (reads and hashes every file);
* ``query guard``: one exact search (``nearest.exact_search``, k=10) over the N vectors, with
  the finiteness check of its scores and without, median of 50.

Usage::

    python benchmarks/bench_checksums.py [--n 100000] [--repeat 3] [--work /tmp/bench-checksums]

It prints one JSON object of seconds. (On a shared 2-core VM, figures vary by half; compare
the with/without pairs, measured one after the other.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vsearch import api  # noqa: E402 (after the sys.path line: runs from a checkout)
from vsearch.models.loading import ModelId, Preprocess  # noqa: E402
from vsearch.storage import checksums, store as storemod  # noqa: E402
from vsearch.storage.store import Store  # noqa: E402
from vsearch.vectors import nearest  # noqa: E402
from vsearch.vectors.space import SearchFiles  # noqa: E402

DIM = 1280
CHUNK = 10_000


class _AllTrue:
    """What ``np.isfinite(x)`` gives the guard when it is switched off: all true, at no cost."""

    def all(self, axis: int | None = None) -> bool:
        return True


def unit_rows(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def model_id() -> ModelId:
    return ModelId(name="synthetic", family="fake", arch="none", pretrained="none", weights_sha256="0" * 64,
                   dim=DIM, preprocess=Preprocess(224, "squash", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), pooling="avg")


def commit_once(index_dir: Path, n: int, fmt: str | None, record: bool) -> float:
    """A fresh index of ``n`` vectors in chunks; the seconds of its one commit."""
    shutil.rmtree(index_dir, ignore_errors=True)
    root = index_dir.parent / "root"
    root.mkdir(parents=True, exist_ok=True)
    real = checksums.record
    if not record:
        storemod.checksums.record = lambda *args, **kwargs: ()  # type: ignore[assignment]
    try:
        with Store.open(index_dir, write=True, derived=SearchFiles()) as store:
            store.bind(root, "synthetic")
            store.bind_model(model_id())
            if fmt is not None:
                from vsearch.storage import formats

                store.choose_format(formats.parse_format(fmt))
            for start in range(0, n, CHUNK):
                rows = unit_rows(min(CHUNK, n - start), seed=start)
                records = [(f"f{start + i:07d}.jpg", 1000, 1, f"{start + i:032x}") for i in range(len(rows))]
                store.add_chunk(records, rows)
            os.sync()
            started = time.perf_counter()
            store.consolidate()
            return time.perf_counter() - started
    finally:
        storemod.checksums.record = real  # type: ignore[assignment]


def hash_seconds(path: Path) -> float:
    started = time.perf_counter()
    checksums.file_sum(path)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-checksums"))
    args = parser.parse_args()
    out: dict[str, object] = {"n": args.n, "dim": DIM, "cpus": os.cpu_count()}
    index_dir = args.work / "index"
    for fmt in (None, "pca256"):
        name = fmt or "fp32"
        timings = {True: [], False: []}
        for _ in range(args.repeat):
            for record in (False, True):
                timings[record].append(commit_once(index_dir, args.n, fmt, record))
        out[f"commit {name}: without checksums"] = round(statistics.median(timings[False]), 3)
        out[f"commit {name}: with checksums"] = round(statistics.median(timings[True]), 3)
        started = time.perf_counter()
        report = api.check(index_dir)
        out[f"check {name}"] = round(time.perf_counter() - started, 3)
        assert report.ok, report
    vectors = next(index_dir.glob("vectors.*[0-9].npy"))
    out["vectors bytes"] = vectors.stat().st_size
    out["hash vectors"] = round(hash_seconds(vectors), 3)
    annoy_like = args.work / "annoy-sized.bin"
    with open(annoy_like, "wb") as fh:
        for _ in range(args.n * 5800 // (1 << 20) + 1):
            fh.write(os.urandom(1 << 20))
    out["annoy-sized bytes"] = annoy_like.stat().st_size
    out["hash annoy-sized"] = round(hash_seconds(annoy_like), 3)
    annoy_like.unlink()

    vectors_in_memory = unit_rows(args.n, seed=1)
    query = unit_rows(1, seed=2)
    real_isfinite = nearest.np.isfinite

    def median_search(check: bool) -> float:
        if not check:  # the guard's isfinite over each block's scores, skipped: the query path before
            nearest.np.isfinite = lambda x: _AllTrue()  # type: ignore[assignment]
        try:
            times = []
            for _ in range(50):
                started = time.perf_counter()
                nearest.exact_search(vectors_in_memory, query, 10)
                times.append(time.perf_counter() - started)
            return statistics.median(times)
        finally:
            nearest.np.isfinite = real_isfinite  # type: ignore[assignment]

    out["exact search, no guard"] = round(median_search(False), 5)
    out["exact search, guard"] = round(median_search(True), 5)
    print(json.dumps(out, indent=2))
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
