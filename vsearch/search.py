"""Online stage: a query vector (stored, or embedded on the fly), nearest neighbours, results.

    query image -> stored vector (same file already indexed: no model)  |  embed with the index's model
                -> exact or Annoy search (Annoy candidates re-scored exactly) -> hits

The stored-vector path imports neither torch nor the model, so querying with a photo that is
already in the collection is instant.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from . import index as nn
from .errors import VsearchError
from .models import Embedder, l2_normalise
from .store import Store

log = logging.getLogger(__name__)

SearchMode = Literal["auto", "exact", "approximate"]


@dataclass(frozen=True)
class Hit:
    """One result: its rank (1 = best), absolute path, exact cosine similarity, vector row."""

    rank: int
    path: Path
    score: float
    row: int


@dataclass(frozen=True)
class QueryVector:
    """A query's vector, where it came from, and the index row it is (if it is indexed)."""

    vector: np.ndarray
    source: str  # "stored" | "embedded" | "text"
    row: int | None = None


class Searcher:
    """Search one committed index. The model is loaded only if a query needs embedding."""

    def __init__(self, store: Store, *, device: str = "auto", threads: int | None = None) -> None:
        if store.meta is None:
            raise VsearchError(f"index at {store.dir} has no vectors yet")
        self.store = store
        self.meta = store.meta
        self.vectors = store.vectors()
        self._device = device
        self._threads = threads
        self._embedder: Embedder | None = None
        self._annoy: nn.AnnoySearcher | None = None
        self._paths: list[str] | None = None

    # --- query vectors ---------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The index's own model, loaded on first use."""
        if self._embedder is None:
            from .indexer import model_for_index

            self._embedder = model_for_index(self.store, self._device, self._threads)
        return self._embedder

    def stored_row(self, image: Path) -> int | None:
        """Row of an image already in the index: same path, size and mtime, or same content."""
        image = Path(image).expanduser().absolute()
        try:
            st = image.stat()
        except OSError:
            return None
        root = Path(self.meta.root)
        try:
            rel = image.resolve().relative_to(root).as_posix()
        except ValueError:
            rel = None
        if rel is not None:
            entry = self.store.entry(rel)
            if entry is not None and entry.row is not None and entry.size == st.st_size and entry.mtime_ns == st.st_mtime_ns:
                return entry.row
        try:
            digest = hashlib.blake2b(image.read_bytes(), digest_size=16).hexdigest()
        except OSError:
            return None
        entry = self.store.entry_by_digest(digest)
        return entry.row if entry is not None else None

    def image_vector(self, image: Path, *, max_pixels: int | None = None) -> QueryVector:
        """The vector for a query image: the stored one when indexed, else embedded now."""
        from . import images

        image = Path(image).expanduser()
        if not image.exists():
            raise VsearchError(f"query image not found: {image}")
        if image.is_dir():
            raise VsearchError(f"query is a folder, not an image: {image}")
        row = self.stored_row(image)
        if row is not None:
            return QueryVector(np.array(self.vectors[row], dtype=np.float32), "stored", row)
        pre = self.meta.model.preprocess
        try:
            pixels = images.decode_for_model(
                image, pre.size, pre.framing, max_pixels=max_pixels or images.DEFAULT_MAX_PIXELS
            )
        except VsearchError as exc:
            raise VsearchError(f"cannot read query image {image}: {exc}") from None
        vector = self.embedder.embed_images(pixels[None])[0]
        return QueryVector(vector, "embedded", None)

    def text_vector(self, text: str) -> QueryVector:
        """A text query's vector (CLIP indexes only)."""
        if self.meta.model.family != "open_clip":
            raise VsearchError(
                f"text search needs a CLIP index; this index uses {self.meta.model.name}, an image-only "
                f"model (and no file {text!r} exists). Build one with --model ViT-B-32:laion2b_s34b_b79k"
            )
        return QueryVector(self.embedder.embed_text([text])[0], "text", None)

    # --- search ---------------------------------------------------------------------------

    def use_annoy(self, mode: SearchMode) -> bool:
        """Whether a search in ``mode`` goes through Annoy."""
        if mode == "exact":
            return False
        has_ann = self.store.ann_path() is not None
        if mode == "approximate":
            if not has_ann:
                raise VsearchError(
                    f"--approximate: index at {self.store.dir} has no Annoy index; run `vsearch build-index`"
                )
            return True
        return has_ann and self.meta.count > nn.EXACT_LIMIT

    def neighbours(self, vector: np.ndarray, k: int, mode: SearchMode = "auto",
                   search_k: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (rows, exact cosine scores) for one vector."""
        if self.use_annoy(mode):
            if self._annoy is None:
                self._annoy = nn.AnnoySearcher(self.store.ann_path(), self.meta.dim)
            return nn.approximate_search(self._annoy, self.vectors, vector, k, search_k=search_k)
        rows, scores = nn.exact_search(self.vectors, vector[None], k)
        return rows[0], scores[0]

    def path(self, row: int) -> Path:
        """Absolute path of a vector row."""
        if self._paths is None and self.meta.count <= 200_000:
            self._paths = self.store.paths_by_row()
        rel = self._paths[row] if self._paths is not None else self.store.path_of_row(row)
        return Path(self.meta.root) / rel

    def hits(self, rows: Sequence[int], scores: Sequence[float]) -> list[Hit]:
        """Rows and scores as ranked, path-resolved hits."""
        return [Hit(i + 1, self.path(int(r)), float(s), int(r)) for i, (r, s) in enumerate(zip(rows, scores))]

    def search(self, vector: np.ndarray, k: int = 10, mode: SearchMode = "auto",
               exclude_rows: Sequence[int] = ()) -> list[Hit]:
        """The k nearest images to ``vector``, best first, every score exact."""
        if k < 1:
            raise VsearchError("--k must be at least 1")
        rows, scores = self.neighbours(l2_normalise(vector), k + len(exclude_rows), mode)
        drop = set(exclude_rows)
        keep = [(r, s) for r, s in zip(rows, scores) if int(r) not in drop][:k]
        return self.hits([r for r, _ in keep], [s for _, s in keep])
