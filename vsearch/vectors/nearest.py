"""Nearest neighbours over unit vectors: exact (one BLAS matmul) and approximate (Annoy, or
IVF-PQ through faiss: :mod:`vsearch.vectors.ivfpq`).

Both return (rows, cosine scores), best first. Nothing here knows about files or models.

Approximate search never prints an approximate score: Annoy (or IVF-PQ) only proposes
``factor * k`` candidate rows, and those are re-scored by an exact dot product with the
stored vectors, so the only error it can make is to miss a true neighbour (measured as
recall@10 against exact search in ``benchmarks/bench_search.py`` and ``bench_scale.py``).
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from vsearch import atomic
from vsearch.defaults import DEFAULT_TREES
from vsearch.errors import IndexCorruptError, IndexWriteError, VsearchError
from vsearch.storage import vectorfiles

if TYPE_CHECKING:  # faiss itself is imported only when an IVF-PQ index is built or opened
    from vsearch.vectors.ivfpq import IvfpqSearcher

#: Up to this many vectors, ``auto`` search is an exact matmul; above it, Annoy (when built).
#: Measured (benchmarks/bench_search.py, 2 shared cores): one exact query is a pass over all
#: vectors: 10.6 ms at 100k x 512 on a quiet box, 227 ms at 1M x 512 on a loaded one; the whole
#: `vsearch query` process on a 100k x 1280 (efficientnet-lite0) index took 0.55 s, exact. Past
#: that the cost grows linearly, while Annoy answered 1M x 512 at 223 q/s with recall@10 0.98.
EXACT_LIMIT = 100_000
#: From this many vectors, ``build-index --index auto`` builds IVF-PQ (faiss) instead of Annoy.
#: Chosen by memory (benchmarks/bench_scale.py, docs/scaling.md): at 100k x 1280 Annoy's index
#: was 583 MB (5.8 KB a vector, beside the 5.1 KB of float32 it re-scores against) and IVF-PQ's
#: 15 MB, with builds of 68 s and 86 s. From 250k, Annoy plus its vectors pass 2.7 GB and
#: grow to 11 GB at 1M, over the 4 GB target; IVF-PQ stays at 72 bytes a vector plus its lists.
IVFPQ_FROM = 250_000
#: Annoy returns ``CANDIDATE_FACTOR * k`` candidates, which are re-scored exactly.
CANDIDATE_FACTOR = 4
#: Nodes Annoy inspects per query, per candidate asked for: search_k = 250 x 4 x 10 = 10,000 for
#: k=10 (Annoy's own default, trees x n = 2,000, is too few at 1M items). Measured with
#: benchmarks/bench_search.py (recall@10 against exact search, 50 trees):
#:   1M x 512 nested clusters: 25/cand 0.638, 50 0.794, 100 0.911, 250 0.982, 500 0.996
#:   (at 250: 223 q/s single, 303 q/s batched, against 0.8 / 8.1 q/s exact on a loaded box);
#:   real efficientnet-lite0 vectors (flowers17, 1,360): 25/cand 0.997, 100 0.999, 500 1.000;
#:   100k x 512 flat clusters: 100/cand 0.976, 250 0.991, 500 0.993.
#: Flat clusters at 1M (every member equally near, neighbours decided by noise) stay below 0.75
#: even at 1,000/cand: a worst case that exact search (``--exact``) is there for.
SEARCH_K_PER_CANDIDATE = 250


#: What a damaged stored vector holds (see :class:`DamagedVectorError`).
NOT_FINITE = "holds values that are not finite (NaN or infinity)"
NOT_UNIT = "is not a unit vector (zeroed or changed)"


class DamagedVectorError(IndexCorruptError):
    """Row ``row`` of the stored vectors ``source`` is damaged (``what``: :data:`NOT_FINITE` or
    :data:`NOT_UNIT`), which a matmul would otherwise turn into ``nan`` scores or a silently
    wrong ranking. Raised where it is seen, with no file name: a caller that knows the files
    names it (:meth:`vsearch.vectors.space.SearchSpace.damaged`, given ``source``)."""

    def __init__(self, row: int, what: str = NOT_FINITE, source: np.ndarray | None = None) -> None:
        super().__init__(f"stored vector {row} {what}: the index is damaged; `check()` says which file, and what "
                         "repairs it")
        self.row, self.what, self.source = row, what, source


#: The most a cosine between unit vectors may exceed 1 by (rounding, a float16 copy) before the
#: vectors are taken for damaged (a zeroed row scores 0, a rescaled one beyond 1).
SCORE_SLACK = 1e-2


def check_scores(rows: np.ndarray, scores: np.ndarray, source: np.ndarray) -> None:
    """Raise :class:`DamagedVectorError` for the first of ``scores`` (of ``rows`` of ``source``)
    that is not finite (cheap: k values, beside the matmul that made them)."""
    finite = np.isfinite(scores)
    if not finite.all():
        raise DamagedVectorError(int(np.asarray(rows).reshape(-1)[int(np.argmin(finite.reshape(-1)))]), NOT_FINITE,
                                 source)


@dataclass(frozen=True)
class Neighbour:
    """One search result before it is tied to a file."""

    row: int
    score: float  # cosine similarity


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows by cosine for each query: (rows (Q, k), scores (Q, k)), best first.

    Works block by block over the (possibly memory-mapped) vectors so memory stays bounded.
    A batch of queries shares each block read, which is what makes batches far cheaper per
    query than single queries.
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if not np.isfinite(queries).all():  # else every score is NaN, and the blame below would fall on row 0
        raise VsearchError("the query vector holds values that are not finite (NaN or infinity)")
    if vectors.dtype != np.float32:  # a float16 search copy: each block is converted for the matmul
        block = min(block, 16384)
    n = len(vectors)
    k = min(k, n)
    if k <= 0:
        return np.zeros((len(queries), 0), dtype=np.int64), np.zeros((len(queries), 0), dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, n, block):
        # float32 for BLAS: a float16 search copy would otherwise take numpy's slow mixed-type loop
        scores = queries @ np.asarray(vectors[start:start + block], dtype=np.float32).T
        if not np.isfinite(scores).all():  # a NaN row would sort anywhere: refuse it, not rank it
            bad = np.flatnonzero(~np.isfinite(scores).all(axis=0))
            raise DamagedVectorError(start + int(bad[0]), NOT_FINITE, vectors)
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
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros(0, dtype=np.float32)
    order = np.argsort(rows)  # sorted reads are kinder to a memory map
    picked = np.asarray(vectors[rows[order]], dtype=np.float32)
    scores = np.empty(len(rows), dtype=np.float32)
    scores[order] = picked @ np.asarray(query, dtype=np.float32)
    check_scores(rows, scores, vectors)
    return scores


def build_annoy(vectors: np.ndarray, path: Path, trees: int = DEFAULT_TREES, seed: int = 42,
                n_jobs: int = -1) -> None:
    """Build an angular Annoy index over ``vectors`` and save it atomically at ``path``."""
    from annoy import AnnoyIndex

    dim = vectors.shape[1]
    _check_room_for_annoy(path, len(vectors), dim, trees)
    ann = AnnoyIndex(dim, "angular")
    ann.set_seed(seed)
    with atomic.replacing(path) as tmp:
        # on_disk_build keeps the index in a file instead of the heap: memory stays flat at 1M items.
        ann.on_disk_build(str(tmp))
        for start in range(0, len(vectors), 65536):
            block = np.asarray(vectors[start:start + 65536], dtype=np.float32)
            for i, v in enumerate(block, start):
                ann.add_item(i, v)
        ann.build(trees, n_jobs=n_jobs)
        ann.unload()


def _check_room_for_annoy(path: Path, count: int, dim: int, trees: int) -> None:
    """Refuse to start an Annoy build the disk cannot hold: Annoy writes its file through a
    memory map, and a full disk under a map is a SIGBUS, not an error we could report.

    Estimate: the items, plus per tree about 4 nodes per K items (K = dim + 2 items fit a
    leaf; half-full leaves and as many inner nodes), and Annoy's 1.3x growth while it builds.
    At 1M x 512 and 50 trees that is 2.9 GB of file, as measured (benchmarks/bench_search.py).
    """
    node = annoy_node_size(dim)
    need = int(1.3 * node * (count + trees * (4 * count / (dim + 2) + 2)))
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return
    if free < need:
        raise IndexWriteError(f"no space left on device writing {path}: the Annoy index needs about "
                              f"{need / 1e6:.0f} MB, {free / 1e6:.0f} MB are free; free some space, or "
                              "search without it (mode='exact')")


def annoy_repair(root: object = "FOLDER") -> str:
    """The remedy for an Annoy file that cannot be read: build it again from ``root``."""
    return f"`build_index({root})` rebuilds it, and mode='exact' searches without it"


def default_search_k(n_candidates: int) -> int:
    """Annoy ``search_k`` for a query that asks for ``n_candidates`` rows."""
    return SEARCH_K_PER_CANDIDATE * n_candidates


def annoy_node_size(dim: int) -> int:
    """Bytes per node of an angular Annoy index: n_descendants and two children (int32), then
    ``dim`` float32 (annoylib.h, ``Angular::Node``)."""
    return 12 + 4 * dim


def check_annoy_file(path: Path, dim: int, *, count: int | None = None, trees: int | None = None,
                     size: int | None = None, root: object = "FOLDER") -> None:
    """Refuse an Annoy file that Annoy would map and then crash on (e.g. truncated at a node
    boundary), before Annoy sees it.

    Annoy stores the items as nodes 0..n-1 (each with n_descendants 1), then the trees, then a
    copy of each tree's root (n_descendants n) at the end, where its loader looks for them. So:
    the size must be ``size`` when recorded, else a whole number of nodes; the last node must
    be a root over ``count`` items (when known, else over some n with node n not an item); and
    ``trees`` copies of it must end the file. ``root``: the indexed folder, for the remedy.
    """
    repair = annoy_repair(root)
    try:
        actual = path.stat().st_size
    except OSError as exc:
        raise IndexCorruptError(f"cannot read the Annoy index {path} ({exc.strerror}); {repair}") from None
    node = annoy_node_size(dim)
    nodes = actual // node
    problem = None
    if size is not None and actual != size:
        problem = f"{actual} bytes, {size} recorded when built"
    elif actual % node or nodes == 0:
        problem = f"{actual} bytes is not a whole number of {node}-byte nodes"
    else:
        with open(path, "rb") as fh:
            tail_nodes = min(nodes, max(trees or 1, 1))
            fh.seek((nodes - tail_nodes) * node)
            tail = np.frombuffer(fh.read(tail_nodes * node), dtype="<i4").reshape(tail_nodes, -1)[:, 0]
            n = int(tail[-1])
            first_tree = None
            if 2 <= n < nodes:
                fh.seek(n * node)
                first_tree = int(np.frombuffer(fh.read(4), dtype="<i4")[0])
        if count is not None and n != count:
            problem = f"its roots cover {n} items, not {count}"
        elif not 1 <= n < nodes or (first_tree is not None and first_tree == 1):
            problem = "truncated"
        elif trees is not None and count is not None and count > 1 and not (tail == n).all():
            problem = f"fewer than its {trees} tree roots"
    if problem:
        raise IndexCorruptError(f"cannot read the Annoy index {path} (damaged: {problem}); {repair}")


class AnnoySearcher:
    """A saved Annoy index, memory-mapped (checked first with :func:`check_annoy_file`)."""

    #: Candidates per result for :func:`approximate_search`.
    candidate_factor = CANDIDATE_FACTOR

    def __init__(self, path: Path, dim: int, *, count: int | None = None, trees: int | None = None,
                 size: int | None = None, root: object = "FOLDER") -> None:
        from annoy import AnnoyIndex

        check_annoy_file(path, dim, count=count, trees=trees, size=size, root=root)
        self.root = root  # the indexed folder, for a remedy
        self._ann = AnnoyIndex(dim, "angular")
        try:
            self._ann.load(str(path))
        except OSError as exc:  # missing or damaged (e.g. truncated): one line, not a traceback
            raise IndexCorruptError(
                f"cannot read the Annoy index {path} ({str(exc).split(':')[0]}); {annoy_repair(root)}"
            ) from None

    def candidates(self, query: np.ndarray, n: int, search_k: int = -1) -> np.ndarray:
        """Row ids of up to ``n`` approximate neighbours (``search_k=-1``: Annoy's own default)."""
        n = min(n, len(self))  # Annoy takes a C int, and has no more to give
        return np.asarray(self._ann.get_nns_by_vector(np.asarray(query, dtype=np.float32).tolist(), n,
                                                      search_k=search_k), dtype=np.int64)

    def __len__(self) -> int:
        return self._ann.get_n_items()


#: Either approximate index: both propose candidate rows, re-scored here exactly.
ApproximateSearcher = Union[AnnoySearcher, "IvfpqSearcher"]


def _candidates(searcher: ApproximateSearcher, query: np.ndarray, n: int, search_k: int | None) -> np.ndarray:
    if isinstance(searcher, AnnoySearcher):
        return searcher.candidates(query, n, search_k=default_search_k(n) if search_k is None else search_k)
    return searcher.candidates(query, n)  # IVF-PQ: nprobe as recorded in meta.json


def approximate_search(searcher: ApproximateSearcher, vectors: np.ndarray, query: np.ndarray, k: int,
                       search_k: int | None = None, factor: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A shortlist of ``factor * k`` rows (default: the searcher's ``candidate_factor``),
    re-scored exactly: every score returned is exact.

    ``search_k`` is Annoy's (``None``: :func:`default_search_k`; ``-1``: Annoy's own default);
    IVF-PQ ignores it and probes the lists its index records.
    """
    n = max(k * (factor or searcher.candidate_factor), k)
    rows = _candidates(searcher, query, n, search_k)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(vectors)):
        raise IndexCorruptError(f"the approximate index proposed a row outside the {len(vectors)} vectors: it is damaged; "
                                f"`build_index({searcher.root}, rebuild=True)` repairs it, and mode='exact' searches "
                                "without it")
    return _best(vectors, query, rows, k)


def _best(vectors: np.ndarray, query: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = rescore(vectors, query, rows)
    order = np.argsort(-scores, kind="stable")[:k]
    return rows[order], scores[order]


def approximate_search_batch(searcher: ApproximateSearcher, vectors: np.ndarray, queries: np.ndarray, k: int,
                             search_k: int | None = None, factor: int | None = None,
                             threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`approximate_search` for each row of ``queries``, in threads: (rows, scores) (Q, <=k).

    Annoy releases the GIL while it searches, so threads use every core; IVF-PQ proposes every
    query's candidates in one faiss call (its own threads). Rows a query could not fill (an
    index smaller than k) are -1 with score -inf.
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    out_rows = np.full((len(queries), k), -1, dtype=np.int64)
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    n = max(k * (factor or searcher.candidate_factor), k)
    shortlist = None if isinstance(searcher, AnnoySearcher) else searcher.candidates_batch(queries, n)

    def one(i: int) -> None:
        if shortlist is None:
            rows, scores = approximate_search(searcher, vectors, queries[i], k, search_k, factor)
        else:
            rows, scores = _best(vectors, queries[i], shortlist[i], k)
        out_rows[i, :len(rows)] = rows
        out_scores[i, :len(rows)] = scores

    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 2) as pool:
        list(pool.map(one, range(len(queries))))
    return out_rows, out_scores


def neighbour_graph(vectors: np.ndarray, n: int, *, annoy: ApproximateSearcher | None = None,
                    block_elements: int = 1 << 25, search_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``n`` nearest other rows: (rows (N, n), exact scores (N, n)), best first.

    Exact (block-by-block matmul, memory bounded by ``block_elements`` floats) when ``annoy`` is
    None, else Annoy candidates re-scored exactly. A row's own entry is left out.
    """
    count = len(vectors)
    n = min(n, max(count - 1, 0))
    rows_out = np.zeros((count, n), dtype=np.int64)
    scores_out = np.zeros((count, n), dtype=np.float32)
    if n == 0:
        return rows_out, scores_out
    if annoy is None:
        block = max(1, min(count, block_elements // max(count, 1)))
        for start in range(0, count, block):
            q = stored_rows(vectors, start, start + block)
            rows, scores = exact_search(vectors, q, n + 1)
            rows, scores = _drop_self(rows, scores, np.arange(start, start + len(q)), n)
            rows_out[start:start + len(q)], scores_out[start:start + len(q)] = rows, scores
        return rows_out, scores_out
    for start in range(0, count, 4096):
        q = stored_rows(vectors, start, start + 4096)
        rows, scores = approximate_search_batch(annoy, vectors, q, n + 1, search_k)
        rows, scores = _drop_self(rows, scores, np.arange(start, start + len(q)), n)
        rows_out[start:start + len(q)], scores_out[start:start + len(q)] = rows, scores
    return rows_out, scores_out


def stored_rows(vectors: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``vectors`` as float32 queries, checked (a pass over rows the matmul
    reads anyway): :class:`DamagedVectorError` names the first that is not a finite unit vector."""
    q = np.asarray(vectors[start:stop], dtype=np.float32)
    finite = np.isfinite(q).all(axis=1)
    if not finite.all():
        raise DamagedVectorError(start + int(np.argmin(finite)), NOT_FINITE, vectors)
    off = np.abs(np.linalg.norm(q, axis=1) - 1.0) > vectorfiles.UNIT_TOLERANCE
    if off.any():
        raise DamagedVectorError(start + int(np.argmax(off)), NOT_UNIT, vectors)
    return q


def _drop_self(rows: np.ndarray, scores: np.ndarray, own: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    # A row is usually its own first hit, but exact ties (duplicate files) may put it later, or
    # (Annoy) not at all: drop it wherever it is, then keep n.
    keep = rows != own[:, None]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :n]
    return np.take_along_axis(rows, order, axis=1), np.take_along_axis(scores, order, axis=1)
