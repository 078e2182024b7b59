"""Online stage: a query vector (stored, or embedded on the fly), nearest neighbours, re-ranking.

    query image(s) -> stored vector (file already indexed: no model)  |  embed with the index's model
                      (query.py: QueryEncoder)
                   -> combine positives and negatives -> [average query expansion]
                   -> exact, Annoy or IVF-PQ search (approximate candidates re-scored exactly)
                   -> filters (exclude, min score, path glob) -> [dedupe]
                   -> [caps: max per folder, max per capture day] -> [MMR]
                   -> drop results whose file is gone since indexing (refilled) -> hits
                   -> [verify: the top N re-ranked by local-feature verification (verify.py)]

The stored-vector path imports neither torch nor the model, so querying with a photo that is
already in the collection is instant.

Which vectors: ``Searcher.vectors`` are the stored embeddings in the search space (the raw
vectors, or their compressed copy when the index was built with ``--vectors fp16|pcaD[w]``: what
a query image maps to, and what dedupe and MMR compare); ``Searcher.search_vectors`` are what
results are ranked and scored against: the database-side augmented copy when the index was
built with ``--dba N``, else those same vectors. Scores are exact cosines, in the search space,
between the query actually searched (after negatives and query expansion) and those vectors.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vsearch.vectors import nearest
from vsearch.retrieval import rerank
from vsearch.errors import ImageDecodeError, VsearchError
from vsearch.models.loading import l2_normalise
from vsearch.retrieval.query import QueryEncoder, QueryVector
from vsearch.storage.store import Store
from vsearch.vectors.space import SearchSpace

log = logging.getLogger(__name__)

SearchMode = Literal["auto", "exact", "approximate"]

#: How many candidates a filtered or re-ranked search starts from, per result asked for; the
#: pool grows 4x at a time while filters leave fewer than k.
POOL_FACTOR = 4
#: Rows looked up one by one before the whole path list is read instead.
PATH_LOOKUPS = 256
#: MMR picks from at least this many candidates (a pool of k alone could not diversify).
MMR_POOL = 50
#: The N to give ``query --verify N`` (off unless asked: it costs more than a search).
#: Measured (benchmarks/bench_verify.py, 100 crops of 10-40% of flowers17 photos, rescaled,
#: JPEG q50-90; efficientnet-lite0; a shared, busy 2-core machine): recall@1 0.49 without,
#: 0.61 / 0.69 / 0.72 / 0.74 with N = 5 / 10 / 20 / 40, at a median 209 / 269 / 542 / 1064 ms
#: of verification per query (about 25 ms per pair). N = 10 takes most of the gain for half
#: the time of 20.
DEFAULT_VERIFY = 10
#: Searches run again to refill results whose file is gone; past this, fewer than k come back
#: (a whole folder moved away: each round would only find more missing files).
REFILL_ROUNDS = 4

MissingFn = Callable[[list[Path]], None]


@dataclass(frozen=True)
class Hit:
    """One result: its rank (1 = best), absolute path, exact cosine similarity, vector row."""

    rank: int
    path: Path
    score: float
    row: int


@dataclass(frozen=True)
class Refine:
    """Filters and re-ranking applied after nearest-neighbour search (all off by default).

    ``min_score``: drop results below this cosine. ``path_glob``: keep only matching paths
    (see :func:`rerank.path_matcher`). ``dedupe``: collapse results whose cosine to a better one
    is at least this. ``diverse``: MMR lambda (1 = relevance only). ``expand``: average query
    expansion over the top-n results (0 = off). ``max_per_folder``: at most this many results
    from one folder (a result's parent folder); ``max_per_day``: at most this many taken on one
    day (EXIF DateTimeOriginal, else DateTime; results with no date are not capped). The next
    best candidates fill in for those left out (:func:`rerank.cap_per_key`).
    """

    min_score: float | None = None
    path_glob: str | None = None
    dedupe: float | None = None
    diverse: float | None = None
    expand: int = 0
    max_per_folder: int | None = None
    max_per_day: int | None = None

    def __post_init__(self) -> None:
        # NaN compares false with everything: a nan min_score would silently keep nothing
        # (and a nan dedupe nothing collapsed), so refuse it here, where every caller passes.
        for option, value in (("min_score=", self.min_score), ("dedupe=", self.dedupe),
                              ("diverse=", self.diverse)):
            if value is not None and not math.isfinite(value):
                raise VsearchError(f"{option} takes a number, not {value}")
        if self.diverse is not None and not 0.0 <= self.diverse <= 1.0:
            raise VsearchError(f"diverse= takes a number from 0 to 1, not {self.diverse}")
        if self.expand < 0:
            raise VsearchError(f"qe= takes 0 or more results, not {self.expand}")
        for option, cap in (("max_per_folder=", self.max_per_folder), ("max_per_day=", self.max_per_day)):
            if cap is not None and (isinstance(cap, bool) or not hasattr(cap, "__index__") or cap < 1):
                raise VsearchError(f"{option} takes a whole number, 1 or more (got {cap!r})")


class Searcher:
    """Search one committed index. The model is loaded only if a query needs embedding."""

    def __init__(self, store: Store, *, device: str = "auto", threads: int | None = None,
                 adapter: bool = True) -> None:
        if store.meta is None:
            raise VsearchError(f"index at {store.dir} has no vectors yet")
        self.store = store
        self.meta = store.meta
        #: Builds query vectors (stored row, new image, text) in this index's space; with a
        #: trained head (``adapter``, on by default when there is one), in the head's space.
        self.encoder = QueryEncoder(store, device=device, threads=threads, adapter=adapter)
        self.vectors = self.encoder.vectors
        # The head's space has its own copy of the vectors, searched exactly (the Annoy file and
        # a DBA copy are in the raw space).
        self.adapted = self.encoder.head is not None
        self.search_vectors = self.vectors if self.adapted else SearchSpace.of(store).search_vectors()
        self._approximate: nearest.ApproximateSearcher | None = None
        self._paths: dict[int, str] = {}
        self._all_paths: list[str] | None = None
        self._folders: dict[int, str] = {}
        self._days: dict[int, datetime.date | None] = {}

    # --- query vectors (built by the encoder; these two are the usual way in) ----------------

    def image_vector(self, image: Path, *, max_pixels: int | None = None) -> QueryVector:
        """The vector for a query image (see :meth:`QueryEncoder.image_vector`)."""
        return self.encoder.image_vector(image, max_pixels=max_pixels)

    def query_vector(self, query: str) -> QueryVector:
        """An image file's or a text's vector (see :meth:`QueryEncoder.query_vector`)."""
        return self.encoder.query_vector(query)

    # --- search ---------------------------------------------------------------------------

    @property
    def approximate_kind(self) -> str | None:
        """The index's approximate index: "annoy", "ivfpq" or None."""
        return SearchSpace.of(self.store).approximate_kind()

    def use_approximate(self, mode: SearchMode) -> bool:
        """Whether a search in ``mode`` goes through the approximate index (Annoy or IVF-PQ)."""
        if mode == "exact":
            return False
        if self.adapted:
            if mode == "approximate":
                raise VsearchError("mode='approximate': the approximate index is over the raw vectors, not the trained "
                                   "head's; search exactly, or use adapter=False")
            return False
        has_ann = self.approximate_kind is not None
        if mode == "approximate":
            if not has_ann:
                raise VsearchError(
                    f"mode='approximate': index at {self.store.dir} has no Annoy index (nor IVF-PQ); "
                    "call `build_index`"
                )
            return True
        return has_ann and self.meta.count > nearest.EXACT_LIMIT

    def neighbours(self, vector: np.ndarray, k: int, mode: SearchMode = "auto",
                   search_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (rows, exact cosine scores) for one vector. ``search_k``: Annoy's (IVF-PQ
        probes the lists its ``meta.json`` records)."""
        if self.use_approximate(mode):
            if self._approximate is None:
                self._approximate = SearchSpace.of(self.store).approximate()
            return nearest.approximate_search(self._approximate, self.search_vectors, vector, k,  # type: ignore[arg-type]  # set just above
                                         search_k=search_k)
        rows, scores = nearest.exact_search(self.search_vectors, vector[None], k)
        return rows[0], scores[0]

    def expand(self, vector: np.ndarray, n: int, mode: SearchMode = "auto",
               exclude_rows: Collection[int] = ()) -> np.ndarray:
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

    def rows_of(self, paths: Sequence[Path]) -> dict[Path, int]:
        """Index row of each absolute path that is in the index (by path under the index's root)."""
        root = Path(self.meta.root)
        out: dict[Path, int] = {}
        for p in paths:
            try:
                rel = Path(p).relative_to(root).as_posix()
            except ValueError:
                continue
            entry = self.store.entry(rel)
            if entry is not None and entry.row is not None:
                out[p] = entry.row
        return out

    def hits(self, rows: Sequence[int], scores: Sequence[float]) -> list[Hit]:
        """Rows and scores as ranked, path-resolved hits."""
        return [Hit(i + 1, self.path(int(r)), float(s), int(r)) for i, (r, s) in enumerate(zip(rows, scores))]

    def search(self, vector: np.ndarray, k: int = 10, mode: SearchMode = "auto",
               exclude_rows: Sequence[int] = (), refine: Refine | None = None,
               query_rows: Sequence[int] = (), *, on_missing: MissingFn | None = None) -> list[Hit]:
        """The k nearest images to ``vector``, best first, every score exact; see :class:`Refine`.

        ``exclude_rows`` never appear in the results; ``query_rows`` (the query examples' own
        rows) may, but never count among the top-n that query expansion averages in.

        A result whose file is no longer on disk (moved or deleted since indexing) is dropped
        and the next candidate takes its place, so k results still come back when the index
        holds k files that are there. Only the results about to be returned are checked (one
        ``stat`` each). ``on_missing`` is called once with the dropped paths, when there are any.
        """
        if k < 1:
            raise VsearchError("k= must be at least 1")
        refine = refine or Refine()
        drop = {int(r) for r in exclude_rows}
        query = self.expand(vector, refine.expand, mode, drop | {int(r) for r in query_rows})
        keep = self._filter(refine)
        caps = self.caps(refine)
        gone: list[int] = []
        there: set[int] = set()
        for _ in range(REFILL_ROUNDS + 1):
            picked = self._pick(query, k, mode, drop | set(gone), refine, keep, caps)
            missing = [r for r, _ in picked if r not in there and not self._on_disk(r)]
            there.update(r for r, _ in picked if r not in missing)
            if not missing:
                break
            gone += missing
        else:
            # Out of rounds: return what is there rather than search on.
            picked = [(r, s) for r, s in picked if r in there]
        if gone and on_missing is not None:
            on_missing([self.path(r) for r in gone])
        return self.hits([r for r, _ in picked], [s for _, s in picked])

    def _pick(self, query: np.ndarray, k: int, mode: SearchMode, drop: set[int], refine: Refine,
              keep: Callable[[int, float], bool] | None,
              caps: Sequence[rerank.Cap[tuple[int, float]]] = ()) -> list[tuple[int, float]]:
        """The top k (row, score) after filters, dedupe, caps and MMR, growing the pool as needed."""
        count = self.meta.count
        want = max(k, MMR_POOL) if refine.diverse is not None else k
        plain = keep is None and refine.dedupe is None and refine.diverse is None and not caps
        pool = k + len(drop) if plain else max(want * POOL_FACTOR, want + len(drop))
        while True:
            rows, scores = self.neighbours(query, min(pool, count), mode)
            picked = [(int(r), float(s)) for r, s in zip(rows, scores)
                      if int(r) not in drop and (keep is None or keep(int(r), float(s)))]
            if refine.dedupe is not None and picked:
                kept, _ = rerank.dedupe(self._raw([r for r, _ in picked]), refine.dedupe)
                picked = [picked[i] for i in kept]
            if caps:
                # Before MMR, the whole pool is capped (any subset MMR picks then keeps the caps);
                # else only as far as the k wanted, so a date is read for few candidates.
                picked = rerank.cap_per_key(picked, caps, None if refine.diverse is not None else want)
            exhausted = (pool >= count or len(rows) < min(pool, count)
                         or (refine.min_score is not None and len(scores) and scores[-1] < refine.min_score))
            if len(picked) >= want or exhausted:
                break
            pool *= POOL_FACTOR
        if refine.diverse is not None and picked:
            order = rerank.mmr(query, self._raw([r for r, _ in picked]), k, refine.diverse)
            picked = [picked[i] for i in order]
        return picked[:k]

    def caps(self, refine: Refine) -> list[rerank.Cap[tuple[int, float]]]:
        """The re-ranking caps ``refine`` asks for, on (row, score) candidates: the folder
        first (a path look-up), then the capture day (read from the file's header)."""
        caps: list[rerank.Cap[tuple[int, float]]] = []
        if refine.max_per_folder is not None:
            caps.append(rerank.Cap(lambda rs: self.folder(rs[0]), int(refine.max_per_folder), "max_per_folder="))
        if refine.max_per_day is not None:
            caps.append(rerank.Cap(lambda rs: self.capture_day(rs[0]), int(refine.max_per_day), "max_per_day="))
        return caps

    def folder(self, row: int) -> str:
        """A row's folder, as a string: the parent of its absolute path (the index root for
        files directly in it). A string, not a Path: it is a dictionary key in hot loops."""
        found = self._folders.get(row)
        if found is None:
            # Remembered: a capped evaluation asks again for every candidate of every query.
            found = self._folders[row] = os.path.dirname(self.path(row))
        return found

    def capture_day(self, row: int) -> datetime.date | None:
        """The day a row's photo was taken (EXIF), or None; see :func:`vsearch.imaging.images.exif_date`.
        Remembered per row for this searcher's life (one committed generation)."""
        if row not in self._days:
            from vsearch.imaging.images import exif_date  # Pillow: only max_per_day pays for it

            self._days[row] = exif_date(self.path(row))
        return self._days[row]

    def _on_disk(self, row: int) -> bool:
        """Whether a row's file is still there. Only "no such file" counts as gone: a file that
        exists but cannot be read now is still a result (the user can fix its permissions)."""
        try:
            os.stat(self.path(row))
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError:
            return True
        return True

    def _raw(self, rows: Sequence[int]) -> np.ndarray:
        rows_arr = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows_arr)
        out = np.empty((len(rows_arr), self.vectors.shape[1]), dtype=np.float32)
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



def verify_rerank(query: Path, hits: Sequence[Hit], n: int, *, verifier: Any = None) -> list[Hit]:
    """``hits`` with their top ``n`` re-ranked by verification against the ``query`` image.

    Results verified as the same photo (any crop, rescale, recompression, mirror: see
    :mod:`vsearch.imaging.verify`) come first, most inliers first; the others keep their order after
    them. Ranks are renumbered; scores stay the cosines. A result whose file cannot be decoded
    counts as not verified. Raises :class:`~vsearch.imaging.images.ImageDecodeError` when the query
    itself cannot be decoded.
    """
    from vsearch.imaging.verify import Verifier  # OpenCV: only a verified query pays for it

    if n < 0:
        raise VsearchError(f"verify= takes 0 or more results (got {n})")
    if n == 0 or not hits:
        return list(hits)
    verifier = verifier or Verifier()
    verifier.features(Path(query))  # a query that cannot be decoded fails here, once
    top, rest = list(hits[:n]), list(hits[n:])
    inliers: dict[int, int] = {}
    for i, hit in enumerate(top):
        try:
            verdict = verifier.verify(Path(query), hit.path)
        except (ImageDecodeError, OSError) as e:
            log.info("not verified %s: %s", hit.path, e)
            continue
        if verdict.same:
            inliers[i] = verdict.inliers
    order = sorted(inliers, key=lambda i: (-inliers[i], i)) + [i for i in range(len(top)) if i not in inliers]
    ranked = [top[i] for i in order] + rest
    return [Hit(r, h.path, h.score, h.row) for r, h in enumerate(ranked, 1)]
