"""Online stage: a query vector (stored, or embedded on the fly), nearest neighbours, re-ranking.

    query image(s) -> stored vector (file already indexed: no model)  |  embed with the index's model
                   -> combine positives and negatives -> [average query expansion]
                   -> exact or Annoy search (Annoy candidates re-scored exactly)
                   -> filters (exclude, min score, path glob) -> [dedupe] -> [MMR] -> hits

The stored-vector path imports neither torch nor the model, so querying with a photo that is
already in the collection is instant.

Which vectors: ``Searcher.vectors`` are the raw stored embeddings (what a query image maps to,
and what dedupe and MMR compare); ``Searcher.search_vectors`` are what results are ranked and
scored against: the database-side augmented copy when the index was built with ``--dba N``,
else the raw vectors. Scores are exact cosines between the query actually searched (after
negatives and query expansion) and those vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from . import index as nn
from . import rerank
from .errors import VsearchError
from .models import Embedder, l2_normalise
from .store import Store, file_digest

log = logging.getLogger(__name__)

SearchMode = Literal["auto", "exact", "approximate"]

#: How many candidates a filtered or re-ranked search starts from, per result asked for; the
#: pool grows 4x at a time while filters leave fewer than k.
POOL_FACTOR = 4
#: Rows looked up one by one before the whole path list is read instead.
PATH_LOOKUPS = 256
#: MMR picks from at least this many candidates (a pool of k alone could not diversify).
MMR_POOL = 50


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


@dataclass(frozen=True)
class Refine:
    """Filters and re-ranking applied after nearest-neighbour search (all off by default).

    ``min_score``: drop results below this cosine. ``path_glob``: keep only matching paths
    (see :func:`rerank.path_matcher`). ``dedupe``: collapse results whose cosine to a better one
    is at least this. ``diverse``: MMR lambda (1 = relevance only). ``expand``: average query
    expansion over the top-n results (0 = off).
    """

    min_score: float | None = None
    path_glob: str | None = None
    dedupe: float | None = None
    diverse: float | None = None
    expand: int = 0


class Searcher:
    """Search one committed index. The model is loaded only if a query needs embedding."""

    def __init__(self, store: Store, *, device: str = "auto", threads: int | None = None) -> None:
        if store.meta is None:
            raise VsearchError(f"index at {store.dir} has no vectors yet")
        self.store = store
        self.meta = store.meta
        self.vectors = store.vectors()
        self.search_vectors = store.search_vectors()
        self._device = device
        self._threads = threads
        self._embedder: Embedder | None = None
        self._annoy: nn.AnnoySearcher | None = None
        self._paths: dict[int, str] = {}
        self._all_paths: list[str] | None = None

    # --- query vectors ---------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The index's own model, loaded on first use."""
        if self._embedder is None:
            from . import onnxmodel

            # The exported ONNX file (CPU) skips importing torch; VSEARCH_TORCH=1 or another
            # device asks for the torch model itself.
            if onnxmodel.preferred(self._device):
                self._embedder = onnxmodel.load_for_index(self.store.dir, self.meta.model, self._threads)
        if self._embedder is None:
            from .embedders import model_for_index

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
            digest = file_digest(image.read_bytes())
        except OSError:
            return None
        entry = self.store.entry_by_digest(digest)
        return entry.row if entry is not None else None

    def image_vector(self, image: Path, *, max_pixels: int | None = None) -> QueryVector:
        """The vector for a query image: the stored one when indexed, else embedded now."""
        image = Path(image).expanduser()
        if not image.exists():
            raise VsearchError(f"query image not found: {image}")
        if image.is_dir():
            raise VsearchError(f"query is a folder, not an image: {image}")
        row = self.stored_row(image)
        if row is not None:
            return QueryVector(np.array(self.vectors[row], dtype=np.float32), "stored", row)
        vector = self.embedder.embed_images(self.query_pixels(image, max_pixels=max_pixels)[None])[0]
        return QueryVector(vector, "embedded", None)

    def query_pixels(self, image: Path, *, max_pixels: int | None = None) -> np.ndarray:
        """A query image decoded and framed as the index's model expects (uint8 HxWx3)."""
        from . import images  # Pillow: only a query that needs decoding pays for it

        if not image.exists():
            raise VsearchError(f"query image not found: {image}")
        pre = self.meta.model.preprocess
        try:
            return images.decode_for_model(
                image, pre.size, pre.framing, max_pixels=max_pixels or images.DEFAULT_MAX_PIXELS
            )
        except VsearchError as exc:
            raise VsearchError(f"cannot read query image {image}: {exc}") from None

    def text_vector(self, text: str) -> QueryVector:
        """A text query's vector (CLIP indexes only)."""
        if self.meta.model.family != "open_clip":
            raise VsearchError(
                f"text search needs a CLIP index; this index uses {self.meta.model.name}, an image-only "
                f"model (and no file {text!r} exists). Build one with --model ViT-B-32:laion2b_s34b_b79k"
            )
        return QueryVector(self.embedder.embed_text([text])[0], "text", None)

    def query_vector(self, query: str) -> QueryVector:
        """An existing file is an image query; anything else is text (CLIP indexes only)."""
        path = Path(query).expanduser()
        if path.exists():
            return self.image_vector(path)
        if _looks_like_image_path(query):
            raise VsearchError(f"query image not found: {path}")
        return self.text_vector(query)

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
                   search_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (rows, exact cosine scores) for one vector."""
        if self.use_annoy(mode):
            if self._annoy is None:
                self._annoy = nn.AnnoySearcher(self.store.ann_path(), self.meta.dim)
            return nn.approximate_search(self._annoy, self.search_vectors, vector, k, search_k=search_k)
        rows, scores = nn.exact_search(self.search_vectors, vector[None], k)
        return rows[0], scores[0]

    def expand(self, vector: np.ndarray, n: int, mode: SearchMode = "auto",
               exclude_rows: Sequence[int] = ()) -> np.ndarray:
        """Average query expansion: the normalised mean of ``vector`` and its top-``n`` results.

        ``exclude_rows`` (e.g. the query's own row) do not count among the top n. ``n=0``
        returns the normalised vector unchanged.
        """
        vector = l2_normalise(vector)
        if n <= 0:
            return vector
        drop = {int(r) for r in exclude_rows}
        rows, _ = self.neighbours(vector, n + len(drop), mode)
        top = [int(r) for r in rows if int(r) not in drop][:n]
        return rerank.average_query_expansion(vector, np.asarray(self.search_vectors[np.sort(top)]))

    def path(self, row: int) -> Path:
        """Absolute path of a vector row."""
        if self._all_paths is not None:
            return Path(self.meta.root) / self._all_paths[row]
        rel = self._paths.get(row)
        if rel is None:
            if len(self._paths) >= PATH_LOOKUPS and self.meta.count <= 200_000:
                # Many lookups (evaluate, big --k): one pass over the manifest is cheaper.
                self._all_paths = self.store.paths_by_row()
                return Path(self.meta.root) / self._all_paths[row]
            # One indexed lookup per row: a 10-hit query on a 1M index reads 10 manifest rows,
            # not a million.
            rel = self._paths[row] = self.store.path_of_row(row)
        return Path(self.meta.root) / rel

    def hits(self, rows: Sequence[int], scores: Sequence[float]) -> list[Hit]:
        """Rows and scores as ranked, path-resolved hits."""
        return [Hit(i + 1, self.path(int(r)), float(s), int(r)) for i, (r, s) in enumerate(zip(rows, scores))]

    def search(self, vector: np.ndarray, k: int = 10, mode: SearchMode = "auto",
               exclude_rows: Sequence[int] = (), refine: Refine | None = None,
               query_rows: Sequence[int] = ()) -> list[Hit]:
        """The k nearest images to ``vector``, best first, every score exact; see :class:`Refine`.

        ``exclude_rows`` never appear in the results; ``query_rows`` (the query examples' own
        rows) may, but never count among the top-n that query expansion averages in.
        """
        if k < 1:
            raise VsearchError("--k must be at least 1")
        refine = refine or Refine()
        drop = {int(r) for r in exclude_rows}
        query = self.expand(vector, refine.expand, mode, drop | {int(r) for r in query_rows})
        keep = self._filter(refine)
        count = self.meta.count
        want = max(k, MMR_POOL) if refine.diverse is not None else k
        plain = keep is None and refine.dedupe is None and refine.diverse is None
        pool = k + len(drop) if plain else max(want * POOL_FACTOR, want + len(drop))
        while True:
            rows, scores = self.neighbours(query, min(pool, count), mode)
            picked = [(int(r), float(s)) for r, s in zip(rows, scores)
                      if int(r) not in drop and (keep is None or keep(int(r), float(s)))]
            if refine.dedupe is not None and picked:
                kept, _ = rerank.dedupe(self._raw([r for r, _ in picked]), refine.dedupe)
                picked = [picked[i] for i in kept]
            exhausted = (pool >= count or len(rows) < min(pool, count)
                         or (refine.min_score is not None and len(scores) and scores[-1] < refine.min_score))
            if len(picked) >= want or exhausted:
                break
            pool *= POOL_FACTOR
        if refine.diverse is not None and picked:
            order = rerank.mmr(query, self._raw([r for r, _ in picked]), k, refine.diverse)
            picked = [picked[i] for i in order]
        picked = picked[:k]
        return self.hits([r for r, _ in picked], [s for _, s in picked])

    def _raw(self, rows: Sequence[int]) -> np.ndarray:
        rows_arr = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows_arr)
        out = np.empty((len(rows_arr), self.meta.dim), dtype=np.float32)
        out[order] = np.asarray(self.vectors[rows_arr[order]])
        return out

    def _filter(self, refine: Refine) -> Callable[[int, float], bool] | None:
        tests: list[Callable[[int, float], bool]] = []
        if refine.min_score is not None:
            threshold = refine.min_score
            tests.append(lambda row, score: score >= threshold)
        if refine.path_glob is not None:
            matches = rerank.path_matcher(refine.path_glob, Path(self.meta.root))
            tests.append(lambda row, score: matches(self.path(row)))
        if not tests:
            return None
        return lambda row, score: all(t(row, score) for t in tests)


def _looks_like_image_path(query: str) -> bool:
    # "holiday/beach.jpg" that does not exist is a typo, not a text query about a jpg.
    from .images import is_image_path

    return "\n" not in query and is_image_path(Path(query))
