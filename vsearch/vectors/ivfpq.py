"""IVF-PQ through faiss: the approximate index for the largest collections.

An inverted file (``nlist`` k-means lists over the vectors) holds each vector as ``m`` one-byte
product-quantiser codes of its residual, so 1M vectors take ``m`` MB (64 MB at the default) in
place of the 5.1 GB of float32 that exact search reads. A query probes ``nprobe`` lists and
proposes ``CANDIDATES_PER_RESULT * k`` rows; those are re-scored exactly against the stored
vectors (the search copy when compressed) by :func:`vsearch.vectors.nearest.approximate_search`, as Annoy's
are, so every score is exact and the only error is a missed neighbour.

faiss is an optional extra (``pip install 'vsearch[scale]'``) imported only here and only when
an IVF-PQ index is built or opened: an Annoy or exact index never pays for it.

The file is ``faiss.serialize_index`` bytes, written through :mod:`vsearch.atomic`; its size and
SHA-256 are recorded in ``meta.json`` and checked before faiss parses it, so a truncated or
foreign file is one error line naming the rebuild, never a crash inside faiss.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vsearch import atomic
from vsearch.errors import IndexCorruptError, VsearchError
from vsearch.storage.regular import read_regular

#: Bytes of PQ code per vector (sub-quantisers of 8 bits): 64 B holds 1M vectors in 64 MB.
CODE_BYTES = 64
#: Lists per square root of the collection size (the usual 4 * sqrt(n) rule).
LISTS_PER_SQRT = 4
#: At least this many points per list to train the coarse quantiser on (faiss warns below 39).
TRAIN_PER_LIST = 39
#: The training sample: at least this many rows (the PQ's 256 centroids need ~10k), at most
#: TRAIN_MAX (k-means cost grows with sample x lists x dim; past it, centroids barely move).
TRAIN_MIN, TRAIN_MAX = 10_000, 100_000
#: k-means iterations for both quantisers (faiss's default is 25): training time is linear in
#: them. Not compared with 25 here; the recall measured at 10 is in docs/scaling.md.
KMEANS_ITER = 10
#: Candidates proposed per result asked for (all re-scored exactly), and lists probed per query
#: as a fraction of nlist (at least MIN_NPROBE). PQ distances are coarse, so far more candidates
#: than Annoy's 4; re-scoring 1,000 rows costs about 1 ms. Measured recall@10 against exact
#: float32 (benchmarks/bench_scale.py, 1,000 held-out queries), by lists probed / candidates:
#:   tiny-imagenet, 9,100 efficientnet-lite0 vectors, nlist 233: 15: 100 0.914, 200 0.922 |
#:   30: 100 0.949, 200 0.968, 400 0.970 | 60: 200 0.985, 400 0.991 | 120: 400 0.997.
#:   100k x 1280 synthetic nested clusters, nlist 1265: 39 or 158 alike: 200 0.878, 500 0.937,
#:   1,000 0.977 (there the codes, not the lists, limit recall). See docs/scaling.md.
CANDIDATES_PER_RESULT = 100
NPROBE_FRACTION = 1 / 8
MIN_NPROBE = 16
#: Rows added per call: faiss holds a block's residuals and its distances to every list while it
#: adds it (65,536 rows x 1,265 lists peaked at 2.85 GB at 100k x 1280; this bounds it).
ADD_BLOCK = 16_384
#: Below this many vectors a build runs on one OpenMP thread: its parallel regions (one per
#: k-means iteration of each sub-quantiser) are too short to pay for their barriers, and on a
#: busy machine each barrier waits for a descheduled thread. Measured on the shared 2-core box
#: (load ~9): 3,000 x 96 built in 38 s on two threads, 7.9 s on one.
ONE_THREAD_BELOW = 50_000

__all__ = ["FaissMissingError", "IvfpqParams", "IvfpqSearcher", "build_file", "choose_params", "ivfpq_name",
           "load_faiss"]


class FaissMissingError(VsearchError):
    """An IVF-PQ index was asked for (built or opened) but faiss is not installed."""


@dataclass(frozen=True)
class IvfpqParams:
    """How an IVF-PQ index is built: lists, sub-quantisers, bits per code, training sample,
    the default lists probed per query, and the seed of the training sample."""

    nlist: int
    m: int
    nbits: int
    train: int
    nprobe: int
    seed: int = 0


def ivfpq_name(generation: int) -> str:
    """File name of the IVF-PQ index for one generation (``index.G.*`` files are swept as stale
    with their generation, like Annoy's)."""
    return f"index.{generation:06d}.ivfpq"


def load_faiss() -> Any:
    """``import faiss``, or one error line saying how to install it."""
    # faiss's OpenMP threads spin while they wait (libgomp's default), and on a shared 2-core
    # box they then fight each other and numpy's BLAS: training 3,000 x 128 took 31 s spinning
    # against 4.3 s passive. The program chooses (OMP_WAIT_POLICY=PASSIVE, set by the CLI's
    # entry point before faiss loads); the library leaves its environment alone.
    try:
        import faiss
    except ImportError:
        raise FaissMissingError("the IVF-PQ index needs faiss, which is not installed: "
                                "pip install 'vsearch[scale]' (or build with approximate='annoy')") from None
    return faiss


def choose_params(count: int, dim: int, *, seed: int = 0) -> IvfpqParams:
    """Parameters for ``count`` vectors of ``dim``: nlist ~ 4 sqrt(n) (at most n / 39, so each
    list trains on enough points), ``m`` the divisor of ``dim`` nearest CODE_BYTES from below,
    8-bit codes (fewer bits when there are fewer than 256 vectors to train them on)."""
    if count < 1:
        raise VsearchError("an IVF-PQ index needs at least one vector")
    nlist = max(1, min(round(LISTS_PER_SQRT * math.sqrt(count)), count // TRAIN_PER_LIST))
    m = max(d for d in range(1, min(CODE_BYTES, dim) + 1) if dim % d == 0)
    nbits = max(1, min(8, int(math.log2(count))))
    train = min(count, max(TRAIN_MIN, TRAIN_PER_LIST * nlist), TRAIN_MAX)
    nprobe = min(nlist, max(MIN_NPROBE, round(nlist * NPROBE_FRACTION)))
    return IvfpqParams(nlist=nlist, m=m, nbits=nbits, train=train, nprobe=nprobe, seed=seed)


def _sample(vectors: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` rows drawn without replacement with a fixed seed, read in row order (kind to a map)."""
    if n >= len(vectors):
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), n, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


@contextlib.contextmanager
def _threads(faiss: Any, n: int | None) -> Iterator[None]:
    """faiss's OpenMP threads set to ``n`` for a block (None: left as they are)."""
    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def build(vectors: np.ndarray, params: IvfpqParams) -> Any:
    """Train an IVF-PQ index (inner product, on unit vectors = cosine) on a seeded sample of
    ``vectors`` and add every row, block by block; returns the faiss index."""
    faiss = load_faiss()
    with _threads(faiss, 1 if len(vectors) < ONE_THREAD_BELOW else None):
        return _build(faiss, vectors, params)


def _build(faiss: Any, vectors: np.ndarray, params: IvfpqParams) -> Any:
    dim = vectors.shape[1]
    quantiser = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantiser, dim, params.nlist, params.m, params.nbits, faiss.METRIC_INNER_PRODUCT)
    for cp in (index.cp, index.pq.cp):
        cp.niter = KMEANS_ITER
        cp.seed = params.seed
        cp.min_points_per_centroid = 1  # small collections: faiss would print a warning on stderr
        cp.max_points_per_centroid = 1 << 30  # we sample ourselves (seeded, row order)
    index.train(_sample(vectors, params.train, params.seed))
    for start in range(0, len(vectors), ADD_BLOCK):
        index.add(np.ascontiguousarray(vectors[start:start + ADD_BLOCK], dtype=np.float32))
    index.nprobe = params.nprobe
    return index


def build_file(vectors: np.ndarray, path: Path, params: IvfpqParams) -> tuple[int, str]:
    """Build (see :func:`build`) and save atomically at ``path``: (size in bytes, sha256 hex)."""
    faiss = load_faiss()
    data = faiss.serialize_index(build(vectors, params)).tobytes()
    atomic.write_bytes(path, data)
    return len(data), hashlib.sha256(data).hexdigest()


def _damaged(path: Path, why: str, root: object = "FOLDER") -> IndexCorruptError:
    return IndexCorruptError(f"cannot read the IVF-PQ index {path} ({why}); `build_index({root})` "
                             "rebuilds it, and mode='exact' searches without it")


def read_checked(path: Path, *, size: int | None, sha256: str | None, root: object = "FOLDER") -> bytes:
    """The file's bytes, refused (one line, with the rebuild hint naming ``root``, the indexed
    folder) when missing, or when its size or SHA-256 is not what ``meta.json`` recorded."""
    try:
        data = read_regular(path, limit=None)  # a FIFO or device in its place: refused, never waited on
    except OSError as exc:
        raise _damaged(path, exc.strerror or str(exc) or type(exc).__name__, root) from None
    if size is not None and len(data) != size:
        raise _damaged(path, f"damaged: {len(data)} bytes, {size} recorded when built", root)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise _damaged(path, "damaged: its SHA-256 is not the one recorded when built", root)
    return data


class IvfpqSearcher:
    """A saved IVF-PQ index, checked against ``meta.json`` and loaded into memory."""

    #: Candidates per result for :func:`vsearch.vectors.nearest.approximate_search`.
    candidate_factor = CANDIDATES_PER_RESULT

    def __init__(self, path: Path, dim: int, *, count: int | None = None, size: int | None = None,
                 sha256: str | None = None, nprobe: int | None = None, root: object = "FOLDER") -> None:
        data = read_checked(path, size=size, sha256=sha256, root=root)
        faiss = load_faiss()
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
            ivf = faiss.extract_index_ivf(index)
        except RuntimeError:
            raise _damaged(path, "not an IVF-PQ index faiss can read", root) from None
        if index.d != dim or (count is not None and index.ntotal != count):
            raise _damaged(path, f"holds {index.ntotal} vectors of {index.d} dimensions, "
                                 f"not {count} of {dim}", root)
        if nprobe is not None:
            ivf.nprobe = max(1, min(int(nprobe), ivf.nlist))
        self._index = index
        self.path = path
        self.root = root  # the indexed folder, for a remedy

    @property
    def nprobe(self) -> int:
        """Lists probed per query."""
        return int(self._index.nprobe)

    def candidates(self, query: np.ndarray, n: int, *, nprobe: int | None = None) -> np.ndarray:
        """Row ids of up to ``n`` approximate neighbours of one query (on one thread: a single
        query's probes are too little work to split, see ONE_THREAD_BELOW)."""
        with _threads(load_faiss(), 1):
            return self.candidates_batch(np.asarray(query, dtype=np.float32)[None], n, nprobe=nprobe)[0]

    def candidates_batch(self, queries: np.ndarray, n: int, *, nprobe: int | None = None) -> list[np.ndarray]:
        """:meth:`candidates` for each row of ``queries``, in one faiss call (its own threads)."""
        faiss = load_faiss()
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        n = max(0, min(n, self._index.ntotal))
        if n == 0:
            return [np.zeros(0, dtype=np.int64) for _ in queries]
        params = None if nprobe is None else faiss.SearchParametersIVF(nprobe=int(nprobe))
        _, rows = self._index.search(queries, n, params=params)
        return [r[r >= 0].astype(np.int64) for r in rows]  # -1 pads lists that held too few

    def __len__(self) -> int:
        return int(self._index.ntotal)
