"""The search space of one open index: what queries are compared against, and how a query gets there.

    raw model vectors -> [compressed search copy: fp16, or PCA (``compress``)] -> [DBA copy]
                      -> [trained head (``adapter``): a projected copy]

A :class:`SearchSpace` reads, checks and caches the files of the generation its view holds:
the search copy and its transform (checked against the SHA-256 ``meta.json`` records, so a
query never lands in another space than the stored vectors), the DBA copy and the head. The
view (``store.IndexView``) makes a new one whenever its generation's files may have changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vsearch.vectors import head as adapter
from vsearch.vectors import compress
from vsearch.errors import IndexCorruptError, IndexMissingError
from vsearch.storage.meta import IndexMeta, rebuild_hint

if TYPE_CHECKING:
    from vsearch.storage.store import IndexView

__all__ = ["SearchSpace"]


class SearchSpace:
    """The search space of the generation an index view holds (see the module docstring)."""

    def __init__(self, view: IndexView) -> None:
        self._view = view
        self._search_vectors: np.ndarray | None = None
        self._space_vectors: np.ndarray | None = None
        self._pca: compress.Pca | None = None
        self._head: adapter.Head | None = None
        self._projected: np.ndarray | None = None

    @property
    def _meta(self) -> IndexMeta | None:
        return self._view.meta

    @property
    def format(self) -> compress.VectorFormat:
        """The format of the committed search copy (fp32: none, search reads the raw vectors)."""
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
        """The raw vectors' (the model's) dimension."""
        return self._meta.dim if self._meta is not None else (self._view.model_id.dim if self._view.model_id else 0)

    def to_space(self, x: np.ndarray) -> np.ndarray:
        """Raw model vectors (n, D) or one (D,) mapped into the search space (float32): the one
        place a query (embedded by torch or ONNX) gets the transform the search copy was made with."""
        return compress.to_space(x, self.format, self.transform())

    def vectors(self) -> np.ndarray:
        """Every committed vector in the search space, memory-mapped: the search copy when there
        is one (float16 or PCA), else the raw vectors. What a stored query row, MMR, dedupe and
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
            self._search_vectors = self._view._load(self._meta.dba.file, space.shape, "rebuild with `vsearch build-index`",
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
            raise IndexMissingError(f"index at {self._view.dir} has no trained head; run `vsearch train`")
        assert self._meta is not None
        if self._projected is None:
            self._projected = adapter.load_projected(self._view.dir, head, self.vectors(), self._meta.space_file)
        return self._projected
