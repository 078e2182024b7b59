"""What each build derives from the committed vectors: the approximate index (Annoy or
IVF-PQ, ``build-index --index``) and the database-side augmented copy (``--dba``).

Both are made over the search space of the committed generation (the compressed copy when
there is one) and recorded in ``meta.json`` by the writer that holds the index.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from vsearch import atomic
from vsearch.errors import VsearchError
from vsearch.storage.meta import AnnInfo, DbaInfo, IvfpqInfo
from vsearch.storage.store import Store, ann_name, dba_name
from vsearch.vectors import ivfpq, nearest
from vsearch.vectors.dba import database_side_augmentation
from vsearch.vectors.space import SearchSpace

log = logging.getLogger(__name__)


def build_ann(store: Store, trees: int) -> AnnInfo:
    """Build the Annoy index for the committed vectors (skipped when it already exists)."""
    meta = store.meta
    if meta is None:
        raise VsearchError(f"index at {store.dir} holds no vectors yet")
    if (meta.ann is not None and meta.ann.trees == trees
            and _ann_intact(store)):
        return meta.ann
    info = AnnInfo(file=ann_name(meta.generation), trees=trees)
    # Over the search space (the compressed copy when there is one): its candidates are
    # re-scored against those vectors, and a 256-d PCA builds far faster than 1,280-d.
    nearest.build_annoy(SearchSpace.of(store).vectors(), store.dir / info.file, trees)
    store.set_ann(info)
    return info


def _ann_intact(store: Store) -> bool:
    """True when the committed Annoy file loads, checked against meta.json, and holds every
    row (a damaged one is built again)."""
    try:
        annoy = SearchSpace.of(store).annoy()
        return annoy is not None and store.meta is not None and len(annoy) == store.meta.count
    except VsearchError:
        return False


#: What ``build-index --index`` may build: ``auto`` picks by size (:func:`approximate_kind`).
INDEX_KINDS = ("auto", "annoy", "ivfpq")


def check_index_kind(kind: str) -> str:
    """``kind`` when it is one of :data:`INDEX_KINDS`, else one error line."""
    if kind not in INDEX_KINDS:
        raise VsearchError(f"approximate= takes {', '.join(INDEX_KINDS[:-1])} or {INDEX_KINDS[-1]}, not {kind!r}")
    return kind


def approximate_kind(kind: str, count: int) -> str:
    """The approximate index ``--index KIND`` builds for ``count`` vectors: ``auto`` is Annoy up
    to ``nearest.IVFPQ_FROM`` vectors and IVF-PQ above (Annoy when faiss is not installed)."""
    if check_index_kind(kind) != "auto":
        return kind
    if count < nearest.IVFPQ_FROM:
        return "annoy"
    try:
        ivfpq.load_faiss()
    except ivfpq.FaissMissingError:
        log.warning("warning: %d vectors: an IVF-PQ index would build faster and smaller than Annoy; "
                    "pip install 'vsearch[scale]' to have it", count)
        return "annoy"
    return "ivfpq"


def build_approximate(store: Store, kind: str, trees: int) -> AnnInfo | IvfpqInfo:
    """Build the approximate index ``kind`` (see :func:`approximate_kind`) for the committed
    vectors; it replaces the other kind's, if any."""
    if store.meta is None:
        raise VsearchError(f"index at {store.dir} holds no vectors yet")
    if approximate_kind(kind, store.meta.count) == "ivfpq":
        return build_ivfpq(store)
    return build_ann(store, trees)


def build_ivfpq(store: Store, *, seed: int = 0) -> IvfpqInfo:
    """Build the IVF-PQ index over the vectors search ranks against (skipped when an intact one
    with the same parameters exists); faiss is needed (one error line without it)."""
    meta = store.meta
    if meta is None:
        raise VsearchError(f"index at {store.dir} holds no vectors yet")
    vectors = SearchSpace.of(store).search_vectors()
    params = ivfpq.choose_params(meta.count, vectors.shape[1], seed=seed)
    old = meta.ivfpq
    if old is not None and (old.nlist, old.m, old.nbits, old.train, old.dim, old.seed) == (
            params.nlist, params.m, params.nbits, params.train, vectors.shape[1], seed):
        try:
            ivfpq.read_checked(store.dir / old.file, size=old.size, sha256=old.sha256)
            return old
        except VsearchError:
            pass  # damaged: built again below
    ivfpq.load_faiss()  # before any work: one line when it is missing
    file = ivfpq.ivfpq_name(meta.generation)
    size, sha256 = ivfpq.build_file(vectors, store.dir / file, params)
    info = IvfpqInfo(file=file, nlist=params.nlist, m=params.m, nbits=params.nbits, nprobe=params.nprobe,
                     train=params.train, dim=int(vectors.shape[1]), size=size, sha256=sha256, seed=seed)
    store.set_ivfpq(info)
    return info





class _RowWriter:
    """Stands in for the output array of ``database_side_augmentation``: each block of rows it
    assigns, in order, is written to ``out`` as bytes of the copy's dtype."""

    def __init__(self, out: Any, dim: int, dtype: Any = np.float32) -> None:
        self._out, self._dim, self._rows, self._dtype = out, dim, 0, dtype

    def __setitem__(self, rows: slice, block: np.ndarray) -> None:
        if rows.start != self._rows:  # the file is written front to back
            raise ValueError(f"rows {rows.start}: written out of order (next is {self._rows})")
        self._out.write(np.ascontiguousarray(block, dtype=self._dtype).reshape(-1, self._dim).tobytes())
        self._rows = rows.stop


def build_dba(store: Store, neighbours: int, *, progress: Callable[[str], None] | None = None) -> DbaInfo | None:
    """Database-side augmentation, computed at build time (``build-index --dba N``).

    Writes ``normalise(v_i + sum of v_i's N nearest other vectors)`` for every row beside the search-space
    vectors and records it in ``meta.json``; search then ranks against it (and Annoy, rebuilt
    afterwards, indexes it). ``neighbours=0`` drops an existing copy. The source vectors are left as
    they are: a query image still maps to the vector it would get if embedded now.

    With a compressed format it is computed in the search space, over the search copy, and
    stored in the copy's dtype: queries are mapped into that space, so that is where their
    neighbours are; and RAM at query time stays the compressed size.
    """
    meta = store.meta
    if meta is None:
        raise VsearchError(f"index at {store.dir} holds no vectors yet")
    if neighbours < 0:
        raise VsearchError("dba= takes a number of neighbours, 0 (off) or more")
    if neighbours == 0:
        if meta.dba is not None:
            store.set_dba(None)
        return None
    info = DbaInfo(file=dba_name(meta.generation, neighbours), neighbours=neighbours)
    if meta.dba == info and (store.dir / info.file).exists():
        return info
    space_rows = SearchSpace.of(store).vectors()
    annoy = None
    tmp_ann = store.dir / f".dba-neighbours.{os.getpid()}.ann.tmp"
    if meta.count > nearest.EXACT_LIMIT:
        if progress:
            progress(f"dba: building a temporary Annoy index over {meta.count} vectors")
        nearest.build_annoy(space_rows, tmp_ann)
        annoy = nearest.AnnoySearcher(tmp_ann, space_rows.shape[1])
    try:
        if progress:
            progress(f"dba: finding {neighbours} neighbours of each of {meta.count} vectors")
        rows, _ = nearest.neighbour_graph(space_rows, neighbours, annoy=annoy)
    finally:
        annoy = None
        if tmp_ann.exists():
            tmp_ann.unlink()
    # Same discipline as every index file: a temporary name, fsync, rename, then meta.json.
    # Buffered writes, block by block, never a writable memory map: on a full disk a write
    # through a map is a SIGBUS, where a write fails with ENOSPC and becomes one error line.
    with atomic.open_replacing(store.dir / info.file) as out:
        np.lib.format.write_array_header_1_0(out, {
            "descr": np.lib.format.dtype_to_descr(space_rows.dtype),
            "fortran_order": False, "shape": space_rows.shape})
        database_side_augmentation(space_rows, rows, _RowWriter(out, space_rows.shape[1], space_rows.dtype))  # type: ignore[arg-type]  # writes rows as an array would take them
    store.set_dba(info)
    return info

__all__ = ["INDEX_KINDS", "approximate_kind", "build_ann", "build_approximate", "build_dba", "build_ivfpq",
           "check_index_kind"]
