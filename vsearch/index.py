"""Nearest neighbours over unit vectors: exact (one BLAS matmul) and approximate (Annoy).

Both return (row, cosine) pairs, best first. Nothing here knows about files or models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Below this many vectors, a brute-force matmul is both exact and fast enough (measured: see
#: benchmarks/bench_search.py); above it, ``auto`` search goes through Annoy.
EXACT_LIMIT = 100_000
DEFAULT_TREES = 50
#: Annoy returns ``CANDIDATE_FACTOR * k`` candidates, which are re-scored exactly.
CANDIDATE_FACTOR = 4


@dataclass(frozen=True)
class Neighbour:
    """One search result before it is tied to a file."""

    row: int
    score: float  # cosine similarity


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows by cosine for each query: (rows (Q, k), scores (Q, k)), best first.

    Works block by block over the (possibly memory-mapped) vectors so memory stays bounded.
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    n = len(vectors)
    k = min(k, n)
    if k <= 0:
        return np.zeros((len(queries), 0), dtype=np.int64), np.zeros((len(queries), 0), dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, n, block):
        scores = queries @ np.asarray(vectors[start:start + block]).T
        kk = min(k, scores.shape[1])
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        rows = np.concatenate([best_rows, part + start], axis=1)
        vals = np.concatenate([best_scores, np.take_along_axis(scores, part, axis=1)], axis=1)
        keep = np.argsort(-vals, axis=1, kind="stable")[:, :k]
        best_rows = np.take_along_axis(rows, keep, axis=1)
        best_scores = np.take_along_axis(vals, keep, axis=1)
    return best_rows, best_scores


def rescore(vectors: np.ndarray, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Exact cosine between one query and the given rows."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.float32)
    order = np.argsort(rows)  # sorted reads are kinder to a memory map
    picked = np.asarray(vectors[rows[order]])
    scores = np.empty(len(rows), dtype=np.float32)
    scores[order] = picked @ np.asarray(query, dtype=np.float32)
    return scores


def build_annoy(vectors: np.ndarray, path: Path, trees: int = DEFAULT_TREES, seed: int = 42,
                n_jobs: int = -1) -> None:
    """Build an angular Annoy index over ``vectors`` and save it atomically at ``path``."""
    from annoy import AnnoyIndex

    dim = vectors.shape[1]
    ann = AnnoyIndex(dim, "angular")
    ann.set_seed(seed)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # on_disk_build keeps the index in a file instead of the heap: memory stays flat at 1M items.
    ann.on_disk_build(str(tmp))
    for i in range(len(vectors)):
        ann.add_item(i, vectors[i])
    ann.build(trees, n_jobs=n_jobs)
    ann.unload()
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class AnnoySearcher:
    """A saved Annoy index, memory-mapped."""

    def __init__(self, path: Path, dim: int) -> None:
        from annoy import AnnoyIndex

        self._ann = AnnoyIndex(dim, "angular")
        self._ann.load(str(path))

    def candidates(self, query: np.ndarray, n: int, search_k: int = -1) -> np.ndarray:
        """Row ids of up to ``n`` approximate neighbours."""
        return np.asarray(self._ann.get_nns_by_vector(np.asarray(query, dtype=np.float32).tolist(), n,
                                                      search_k=search_k), dtype=np.int64)

    def __len__(self) -> int:
        return self._ann.get_n_items()


def approximate_search(searcher: AnnoySearcher, vectors: np.ndarray, query: np.ndarray, k: int,
                       search_k: int = -1, factor: int = CANDIDATE_FACTOR) -> tuple[np.ndarray, np.ndarray]:
    """Annoy shortlist of ``factor * k`` rows, re-scored exactly: every score returned is exact."""
    rows = searcher.candidates(query, max(k * factor, k), search_k=search_k)
    scores = rescore(vectors, query, rows)
    order = np.argsort(-scores, kind="stable")[:k]
    return rows[order], scores[order]
