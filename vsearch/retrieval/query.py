"""Query vectors: what a query image or text maps to in one index's vector space.

Three sources, cheapest first:

* **stored**: the query file is already indexed (same path, size and mtime, or same content);
  its stored vector is reused, and neither torch nor the model is loaded;
* **embedded**: a new image, decoded and framed as the index's model expects, then embedded
  with that model (the exported ONNX file where possible, else torch);
* **text**: a text query, embedded with a CLIP index's text tower.

:class:`QueryEncoder` knows nothing of search; :class:`vsearch.retrieval.search.Searcher` owns one.

Every query vector is in the index's *search space*: the stored row is read from the search copy
(float16 or PCA, when the index was built with ``--vectors``), and an embedded vector, from torch
or ONNX alike, goes through :meth:`SearchSpace.to_space <vsearch.vectors.space.SearchSpace.to_space>`, the same transform the copy was made with.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vsearch.models import onnxmodel
from vsearch.errors import VsearchError
from vsearch.models.loading import Embedder, check_device, no_text_search
from vsearch.storage.store import Store, file_digest
from vsearch.storage import vectorfiles
from vsearch.vectors.nearest import NOT_FINITE, NOT_UNIT
from vsearch.vectors.space import SearchSpace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueryVector:
    """A query's vector, where it came from, and the index row it is (if it is indexed)."""

    vector: np.ndarray
    source: str  # "stored" | "embedded" | "text"
    row: int | None = None


class QueryEncoder:
    """Builds query vectors for one committed index. The model is loaded on first need only.

    ``adapter``: with a trained head in the index (``vsearch train``), every query vector and
    :attr:`vectors` are in the head's projected space (on by default; False: the raw space).
    """

    def __init__(self, store: Store, *, device: str = "auto", threads: int | None = None,
                 adapter: bool = True) -> None:
        if store.meta is None:
            raise VsearchError(f"index at {store.dir} has no vectors yet")
        check_device(device)  # now, not when a query first needs the model
        self.store = store
        self.meta = store.meta
        #: The trained head applied to every query vector, or None (none trained, or turned off).
        self.head = SearchSpace.of(store).head() if adapter else None
        #: The stored vectors in query space: the search space (the compressed copy when there is
        #: one), or the trained head's projected copy of it when a head applies.
        self.vectors = SearchSpace.of(store).projected() if self.head is not None else SearchSpace.of(store).vectors()
        self._device = device
        self._threads = threads
        self._embedder: Embedder | None = None

    @property
    def embedder(self) -> Embedder:
        """The index's own model, loaded on first use."""
        if self._embedder is None:
            # The exported ONNX file (CPU) skips importing torch; VSEARCH_TORCH=1 or another
            # device asks for the torch model itself.
            if onnxmodel.preferred(self._device):
                self._embedder = onnxmodel.load_for_index(self.store.dir, self.meta.model, self._threads)
        if self._embedder is None:
            from vsearch.models.sources import model_for_index  # torch: only a new photo without ONNX pays for it

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
        from vsearch.imaging import images  # Pillow: only a query that is not a known path pays for it

        try:
            digest = file_digest(images.read_image_bytes(image))
        except VsearchError:  # not readable (a FIFO, too large, ...): query_pixels says why
            return None
        entry = self.store.entry_by_digest(digest)
        return entry.row if entry is not None else None

    def image_vector(self, image: Path, *, max_pixels: int | None = None) -> QueryVector:
        """The vector for a query image: the stored one when indexed, else embedded now."""
        image = Path(image).expanduser()
        if not os.path.exists(image):  # not Path.exists: a name too long to be a file is not found, no OSError
            raise VsearchError(f"query image not found: {image}")
        if image.is_dir():
            raise VsearchError(f"query is a folder, not an image: {image}")
        row = self.stored_row(image)
        if row is not None:
            return QueryVector(self.stored_vector(row), "stored", row)
        vector = self.embedder.embed_images(self.query_pixels(image, max_pixels=max_pixels)[None])
        return QueryVector(self.to_query_space(vector)[0], "embedded", None)

    def stored_vector(self, row: int) -> np.ndarray:
        """The stored vector of ``row`` in query space, checked: a row that is not a finite unit
        vector (a damaged file: NaN, zeroed, rescaled) is one error naming the file and the
        repair, never a query that silently finds other photos (one row: nothing measurable)."""
        vector = np.array(self.vectors[row], dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(vector).all():
            raise SearchSpace.of(self.store).damaged(self.vectors, row, NOT_FINITE)
        if abs(norm - 1.0) > vectorfiles.UNIT_TOLERANCE:
            raise SearchSpace.of(self.store).damaged(self.vectors, row, NOT_UNIT)
        return vector

    def to_query_space(self, vectors: np.ndarray) -> np.ndarray:
        """The model's own vectors (one or a batch, from torch, ONNX or the text tower) into the
        space the stored vectors are searched in: the index's search-space transform
        (:meth:`SearchSpace.to_space <vsearch.vectors.space.SearchSpace.to_space>`), then the trained head when one applies. The one place both
        happen to a query."""
        space = SearchSpace.of(self.store).to_space(vectors)
        return space if self.head is None else self.head.apply(space)

    def embed_images(self, images: Sequence[Path], *, max_pixels: int | None = None, raw: bool = False) -> np.ndarray:
        """Embed several query images in one forward pass (no stored-row look-up), mapped into
        the search space: float32 (N, :attr:`SearchSpace.dim <vsearch.vectors.space.SearchSpace.dim>`); ``raw``: the model's own vectors
        (N, model dim), e.g. to share between indexes of one model (map each with
        :meth:`SearchSpace.to_space <vsearch.vectors.space.SearchSpace.to_space>`)."""
        if not images:
            return np.zeros((0, self.meta.dim if raw else self.vectors.shape[1]), dtype=np.float32)
        pixels = np.stack([self.query_pixels(Path(p), max_pixels=max_pixels) for p in images])
        vectors = self.embedder.embed_images(pixels)
        return vectors if raw else self.to_query_space(vectors)

    def query_pixels(self, image: Path, *, max_pixels: int | None = None) -> np.ndarray:
        """A query image decoded and framed as the index's model expects (uint8 HxWx3)."""
        from vsearch.imaging import images  # Pillow: only a query that needs decoding pays for it

        if not os.path.exists(image):
            raise VsearchError(f"query image not found: {image}")
        pre = self.meta.model.preprocess
        try:
            return images.decode_for_model(
                image, pre.size, pre.framing, max_pixels=max_pixels or images.DEFAULT_MAX_PIXELS
            )
        except VsearchError as exc:
            raise VsearchError(f"cannot read query image {image}: {exc}") from None

    def text_vector(self, text: str) -> QueryVector:
        """A text query's vector (CLIP indexes only; else :func:`models.no_text_search`)."""
        # Checked on the recorded identity, so an image-only index refuses text without loading
        # its model.
        if not self.meta.model.supports_text:
            raise no_text_search(self.meta.model)
        return QueryVector(self.to_query_space(self.embedder.embed_text([text]))[0], "text", None)

    def query_vector(self, query: str) -> QueryVector:
        """An existing file is an image query; anything else is text (CLIP indexes only)."""
        path = Path(query).expanduser()
        if os.path.exists(path):  # not Path.exists, which raises for a text longer than a file name
            return self.image_vector(path)
        if _looks_like_image_path(query):
            raise VsearchError(f"query image not found: {path}")
        if not self.meta.model.supports_text:
            raise no_text_search(self.meta.model, query)
        return self.text_vector(query)


def _looks_like_image_path(query: str) -> bool:
    # "holiday/beach.jpg" that does not exist is a typo, not a text query about a jpg.
    from vsearch.imaging.images import is_image_path  # Pillow: kept off the stored-vector fast path

    return "\n" not in query and is_image_path(Path(query))
