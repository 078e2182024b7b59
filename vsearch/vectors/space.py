"""The search space of one open index: what queries are compared against, and how a query gets there.

    the model's source vectors -> [compressed search copy: fp16, or PCA (``compress``)] -> [DBA copy]
                      -> [trained head (``adapter``): a projected copy]

A :class:`SearchSpace` reads, checks and caches the files of the generation its view holds:
the search copy and its transform (checked against the SHA-256 ``meta.json`` records, so a
query never lands in another space than the stored vectors), the DBA copy, the head, and the
approximate index (Annoy or IVF-PQ). :meth:`SearchSpace.of` keeps one per open view and
forgets what it read when the view commits another ``meta.json``.

:class:`SearchFiles` is what a writer is opened with (``Store.open(..., derived=SearchFiles())``):
the storage layer's commit calls it to make the search copy and the head's projected copy,
so storage itself knows no codec and no head.
"""

from __future__ import annotations

import contextlib
import weakref

import numpy as np

from vsearch.errors import IndexCorruptError, IndexMissingError, VsearchError
from vsearch.storage import vectorfiles
from vsearch.storage.meta import FormatInfo, IndexMeta, rebuild_hint
from vsearch.storage.store import Store
from vsearch.storage.snapshot import Snapshot
from vsearch.vectors import compress, nearest
from vsearch.vectors import head as adapter
from vsearch.vectors.ivfpq import IvfpqSearcher

__all__ = ["SearchFiles", "SearchSpace"]

#: One search space per open view (its caches are memory maps and a loaded transform), dropped
#: with the view. Written only by :meth:`SearchSpace.of`.
_SPACES: weakref.WeakKeyDictionary[Snapshot, SearchSpace] = weakref.WeakKeyDictionary()


class SearchSpace:
    """The search space of the generation an index view holds (see the module docstring)."""

    def __init__(self, view: Snapshot) -> None:
        self._view = view
        self._forget(view.meta)

    @classmethod
    def of(cls, view: Snapshot) -> SearchSpace:
        """The search space of an open index view (one per view, kept while the view lives)."""
        space = _SPACES.get(view)
        if space is None:
            space = _SPACES[view] = cls(view)
        return space

    def _forget(self, meta: IndexMeta | None) -> None:
        self._read_for = meta
        self._search_vectors: np.ndarray | None = None
        self._space_vectors: np.ndarray | None = None
        self._pca: compress.Pca | None = None
        self._head: adapter.Head | None = None
        self._projected: np.ndarray | None = None

    @property
    def _meta(self) -> IndexMeta | None:
        meta = self._view.meta
        if meta is not self._read_for:  # the writer committed another meta.json: its files may differ
            self._forget(meta)
        return meta

    @property
    def format(self) -> compress.VectorFormat:
        """The format of the committed search copy (fp32: none, search reads the source vectors)."""
        info = self._meta.vectors_format if self._meta is not None else None
        return compress.FP32 if info is None else compress.parse_format(info.name)

    @property
    def dim(self) -> int:
        """Dimensions of the search space: the search copy's, else the model's."""
        if self._meta is None:
            return self._view.model_id.dim if self._view.model_id else 0
        info = self._meta.vectors_format
        return self._meta.dim if info is None else info.dim

    def transform(self) -> compress.Pca | None:
        """The PCA of the committed search copy (None for fp32/fp16), checked against the SHA-256
        that ``meta.json`` recorded: a transform that is not the one the copy was made with
        would put queries in another space than the stored vectors."""
        info = self._meta.vectors_format if self._meta is not None else None
        if info is None or info.transform is None:
            return None
        if self._pca is None:
            remedy = rebuild_hint(self._meta.root if self._meta else "FOLDER")
            pca = compress.Pca.load(self._view.dir / info.transform, remedy=remedy)
            if pca.digest != info.sha256 or pca.dim != info.dim or pca.in_dim != self.in_dim:
                raise IndexCorruptError(f"the vector transform {self._view.dir / info.transform} is not the one "
                                        f"meta.json records for the {info.name} vectors; {remedy}")
            self._pca = pca
        return self._pca

    @property
    def in_dim(self) -> int:
        """The source vectors' (the model's) dimension."""
        return self._meta.dim if self._meta is not None else (self._view.model_id.dim if self._view.model_id else 0)

    def to_space(self, x: np.ndarray) -> np.ndarray:
        """Raw model vectors (n, D) or one (D,) mapped into the search space (float32): the one
        place a query (embedded by torch or ONNX) gets the transform the search copy was made with."""
        return compress.to_space(x, self.format, self.transform())

    def vectors(self) -> np.ndarray:
        """Every committed vector in the search space, memory-mapped: the search copy when there
        is one (float16 or PCA), else the source vectors. What a stored query row, MMR, dedupe and
        duplicate shortlisting read."""
        info = self._meta.vectors_format if self._meta is not None else None
        if info is None:
            return self._view.vectors()
        if self._space_vectors is None:
            assert self._meta is not None
            self.transform()  # a PCA copy is only good with its own transform
            self._space_vectors = self._view._load(info.file, (self._meta.count, info.dim),
                                             rebuild_hint(self._meta.root), dtype=info.dtype)
        return self._space_vectors

    def search_vectors(self) -> np.ndarray:
        """The vectors that search ranks against: the DBA copy when built, else :meth:`space_vectors`."""
        space = self.vectors()
        if self._meta is None or self._meta.dba is None:
            return space
        if self._search_vectors is None:
            self._search_vectors = self._view._load(self._meta.dba.file, space.shape, "rebuild with `build_index`",
                                              dtype=space.dtype)
        return self._search_vectors

    def head(self) -> adapter.Head | None:
        """The trained projection head ``meta.json`` names (checked by hash), or None."""
        info = self._meta.adapter if self._meta is not None else None
        if info is None:
            return None
        if self._head is None or self._head.sha256 != info.sha256:
            self._head = adapter.Head.load(self._view.dir / info.file, sha256=info.sha256, dim_in=info.dim_in,
                                           dim_out=info.dim_out)
        return self._head

    def projected(self) -> np.ndarray:
        """The committed vectors through the trained head (the cached copy), shape (count, dim_out)."""
        head = self.head()
        if head is None:
            raise IndexMissingError(f"index at {self._view.dir} has no trained head; call `train()`")
        assert self._meta is not None
        if self._projected is None:
            self._projected = adapter.load_projected(self._view.dir, head, self.vectors(), self._meta.space_file)
        return self._projected

    # --- damage found while searching ----------------------------------------------------------

    def file_of(self, array: np.ndarray) -> str | None:
        """The name of the file ``array`` was read from, when it is one of this space's vector
        arrays (the source vectors, the search copy, the DBA copy, the projected copy)."""
        meta = self._meta
        if meta is None:
            return None
        if meta.dba is not None and array is self._search_vectors:
            return meta.dba.file
        if meta.adapter is not None and array is self._projected:
            return vectorfiles.projected_name(meta.space_file, meta.adapter.sha256)
        if meta.vectors_format is not None and array is self._space_vectors:
            return meta.vectors_format.file
        if array is self._view._vectors:
            return meta.vectors
        return None

    def damaged(self, array: np.ndarray, row: int, what: str = nearest.NOT_FINITE) -> IndexCorruptError:
        """The one error for a stored vector found damaged while searching (``what`` it holds):
        it names the file (see :meth:`file_of`), the row's image and what repairs it. Only what
        a search touched is looked at (a query never hashes a file); ``check()`` looks at all."""
        meta = self._meta
        name = self.file_of(array)
        where = f"{self._view.dir / name}" if name else f"a vectors file of the index at {self._view.dir}"
        image = ""
        with contextlib.suppress(VsearchError):
            image = f" ({self._view.path_of_row(row)})"
        projected = meta is not None and meta.adapter is not None and array is self._projected
        remedy = adapter.RETRAIN if projected else rebuild_hint(meta.root if meta is not None else "FOLDER")
        return IndexCorruptError(f"{where} is damaged: stored vector {row}{image} {what}; {remedy}, and `check()` "
                                 "lists every damaged file")

    # --- the approximate index of the generation ----------------------------------------------

    def annoy(self) -> nearest.AnnoySearcher | None:
        """The committed generation's Annoy index, or None when not built; its size and roots
        are checked against ``meta.json`` before Annoy maps it (a damaged file can crash Annoy)."""
        meta = self._meta
        if meta is None or meta.ann is None:
            return None
        path = self._view.dir / meta.ann.file
        with self._view._own_generation(path):
            return nearest.AnnoySearcher(path, self.dim, count=meta.count, trees=meta.ann.trees,
                                            size=meta.ann.size, root=meta.root)

    def ivfpq(self) -> IvfpqSearcher | None:
        """The committed generation's IVF-PQ index, or None when not built; its size and
        SHA-256 are checked against ``meta.json`` before faiss reads it. Without faiss
        installed: one error naming the ``vsearch[scale]`` extra."""
        meta = self._meta
        if meta is None or meta.ivfpq is None:
            return None
        info = meta.ivfpq
        path = self._view.dir / info.file
        with self._view._own_generation(path):
            return IvfpqSearcher(path, self.dim, count=meta.count, size=info.size, sha256=info.sha256,
                                 nprobe=info.nprobe, root=meta.root)

    def approximate_kind(self) -> str | None:
        """Which approximate index the committed generation has: "ivfpq", "annoy" or None."""
        meta = self._meta
        if meta is None:
            return None
        return "ivfpq" if meta.ivfpq is not None else "annoy" if meta.ann is not None else None

    def approximate(self) -> nearest.ApproximateSearcher | None:
        """The committed generation's approximate index (IVF-PQ or Annoy), or None."""
        return self.ivfpq() if self.approximate_kind() == "ivfpq" else self.annoy()


class SearchFiles:
    """The files a commit derives from the source vectors (see :class:`vsearch.storage.store.Derivations`):
    the compressed search copy (:func:`compress.make_search_copy`) and the trained head's
    projected copy (:func:`adapter.with_projected`)."""

    def search_copy(self, store: Store, source: np.ndarray, generation: int) -> FormatInfo | None:
        """The search copy of one generation's source vectors, in the store's wanted format."""
        return compress.make_search_copy(store, source, generation)

    def check_search_copy(self, store: Store) -> None:
        """Read the committed search copy and its transform (IndexCorruptError when damaged)."""
        SearchSpace.of(store).vectors()

    def before_meta(self, store: Store, meta: IndexMeta) -> IndexMeta:
        """Write the head's projected copy of the generation that ``meta`` names, when it names a head."""
        projected = (vectorfiles.projected_name(meta.space_file, meta.adapter.sha256)
                     if meta.adapter is not None else None)
        existed = projected is not None and (store.dir / projected).exists()
        meta = adapter.with_projected(store.dir, meta)
        if projected is not None and not existed and meta.adapter is not None:
            store.wrote(projected)
        return meta
