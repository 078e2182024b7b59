"""Online stage: a query vector (stored, or embedded on the fly), nearest neighbours, re-ranking.

    query image(s) -> stored vector (file already indexed: no model)  |  embed with the index's model
                      (query.py: QueryEncoder)
                   -> combine positives and negatives -> [average query expansion]
                   -> exact, Annoy or IVF-PQ search (approximate candidates re-scored exactly)
                   -> [copy first: the unaltered nearest neighbour kept at rank 1 (rerank.keep_first)]
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
between the query asked (after negatives, before query expansion) and a result's own vectors
(not its DBA copy): what QE and DBA change is the order, not what a score means. The order is
by the expanded query against ``search_vectors``, with the copy-first step on top.
"""

from __future__ import annotations

import datetime
import functools
import logging
import math
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

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
#: The most results a search returns, expands with or scores (k, qe, an evaluation's K): more
#: than any index holds, and within what Annoy and faiss take (a C int). A search asks them
#: for no more than the index holds anyway; this refuses a typo such as ``k=10**22``.
MAX_K = 1_000_000_000
#: The most results ``verify=`` re-ranks: at about 25 ms a pair (see DEFAULT_VERIFY), four
#: minutes of verification.
MAX_VERIFY = 10_000
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
    best candidates fill in for those left out (:func:`rerank.cap_per_key`). ``copy_first``: when query
    expansion or a DBA copy change the ranking, the query's nearest neighbour by the unaltered vectors
    stays first (:meth:`Searcher.copy_rows`), so an edited copy of a photo still finds it at rank 1.
    """

    min_score: float | None = None
    path_glob: str | None = None
    dedupe: float | None = None
    diverse: float | None = None
    expand: int = 0
    max_per_folder: int | None = None
    max_per_day: int | None = None
    copy_first: bool = True

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
        if self.expand > MAX_K:
            raise VsearchError(f"qe= takes at most {MAX_K} results, not {self.expand}")
        for option, cap in (("max_per_folder=", self.max_per_folder), ("max_per_day=", self.max_per_day)):
            if cap is not None and (isinstance(cap, bool) or not hasattr(cap, "__index__") or cap < 1):
                raise VsearchError(f"{option} takes a whole number, 1 or more (got {cap!r})")


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _names_damage(method: _Method) -> _Method:
    """A damaged stored vector met anywhere in a search (nearest's :class:`~vsearch.vectors.nearest.DamagedVectorError`)
    as the one error that names its file and the repair, never ``nan`` scores."""

    @functools.wraps(method)
    def run(self: Searcher, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except nearest.DamagedVectorError as exc:
            source = exc.source if exc.source is not None else self.search_vectors
            raise SearchSpace.of(self.store).damaged(source, exc.row, exc.what) from None

    return run  # type: ignore[return-value]  # the same signature: wraps() keeps it


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

    @_names_damage
    def neighbours(self, vector: np.ndarray, k: int, mode: SearchMode = "auto",
                   search_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (rows, exact cosine scores) for one vector. ``search_k``: Annoy's (IVF-PQ
        probes the lists its ``meta.json`` records)."""
        k = min(k, self.meta.count)  # never more than the index holds (Annoy, faiss take a C int)
        if self.use_approximate(mode):
            if self._approximate is None:
                self._approximate = SearchSpace.of(self.store).approximate()
            rows, scores = nearest.approximate_search(self._approximate, self.search_vectors, vector, k,  # type: ignore[arg-type]  # set just above
                                                      search_k=search_k)
        else:
            found, cosines = nearest.exact_search(self.search_vectors, vector[None], k)
            rows, scores = found[0], cosines[0]
        if len(scores) and float(np.abs(scores).max()) > 1.0 + nearest.SCORE_SLACK:
            # Unit vectors score within [-1, 1]: a rescaled (damaged) row does not.
            raise SearchSpace.of(self.store).damaged(self.search_vectors, int(rows[int(np.abs(scores).argmax())]),
                                                     nearest.NOT_UNIT)
        return rows, scores

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

    def alters_ranking(self, expand: int) -> bool:
        """Whether a search with query expansion ``expand`` ranks by anything but the unaltered
        vectors: the expansion, or the DBA copy (when searching without a head)."""
        return expand > 0 or self.search_vectors is not self.vectors

    def copy_rows(self, vector: np.ndarray, mode: SearchMode = "auto", exclude_rows: Collection[int] = (),
                  query_rows: Collection[int] = ()) -> list[int]:
        """The rows that :class:`Refine` ``copy_first`` keeps at the top: the query's nearest
        neighbours by the unaltered vectors (not expanded, not the DBA copy), best first, up to and
        including the first that is not one of ``query_rows`` (an indexed query photo stays ahead
        of its nearest other photo). ``exclude_rows`` never count.

        Why: query expansion and DBA blend each photo with its neighbours, which raises class-level
        ranking but lets a crop lose its own original (docs/defaults.md measures it); the raw
        nearest neighbour of an edited copy is nearly always the original, and pinning only that
        one result moved class-level mAP@10 by -0.0014 to +0.004 on the sets measured.
        """
        vector = l2_normalise(vector)
        drop = {int(r) for r in exclude_rows}
        own = {int(r) for r in query_rows}
        want = len(drop) + len(own) + 1
        if self.search_vectors is self.vectors:
            rows, _ = self.neighbours(vector, want, mode)
        elif self.use_approximate(mode):
            # The approximate index is over the DBA copy: its candidates, re-scored by the unaltered vectors.
            rows, _ = self.neighbours(vector, max(want, MMR_POOL), mode)
            rows = rows[np.argsort(-(self._raw([int(r) for r in rows]) @ vector), kind="stable")]
        else:
            try:
                found, _ = nearest.exact_search(self.vectors, vector[None], min(want, self.meta.count))
            except nearest.DamagedVectorError as exc:  # a damaged file: name it, never rank by NaN
                raise SearchSpace.of(self.store).damaged(self.vectors, exc.row, exc.what) from None
            rows = found[0]
        out: list[int] = []
        for r in (int(r) for r in rows):
            if r in drop:
                continue
            out.append(r)
            if r not in own:
                break
        return out

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

    @_names_damage
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
        if k > MAX_K:
            raise VsearchError(f"k= takes at most {MAX_K} results (got {k})")
        refine = refine or Refine()
        drop = {int(r) for r in exclude_rows}
        query = self.expand(vector, refine.expand, mode, drop | {int(r) for r in query_rows})
        altered = self.alters_ranking(refine.expand)
        first = self.copy_rows(vector, mode, drop, query_rows) if refine.copy_first and altered else []
        # QE or DBA order the results; a result's score stays its cosine to the query asked.
        asked = l2_normalise(vector) if altered else None
        keep = self._filter(refine)
        caps = self.caps(refine)
        gone: list[int] = []
        there: set[int] = set()
        for _ in range(REFILL_ROUNDS + 1):
            picked = self._pick(query, k, mode, drop | set(gone), refine, keep, caps, first, asked)
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
              caps: Sequence[rerank.Cap[tuple[int, float]]] = (),
              first: Sequence[int] = (), asked: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The top k (row, score) after filters, dedupe, caps and MMR, growing the pool as needed.

        ``first`` (:meth:`copy_rows`) lead the candidates (and stay ahead of MMR's picks).
        ``asked``: the query before expansion; when given, every score (what ``min_score``
        filters and a hit reports) is the cosine to it by the unaltered vectors, not to the
        expanded query or the DBA copy that ordered the candidates."""
        count = self.meta.count
        want = max(k, MMR_POOL) if refine.diverse is not None else k
        plain = keep is None and refine.dedupe is None and refine.diverse is None and not caps
        pool = k + len(drop) if plain else max(want * POOL_FACTOR, want + len(drop))
        while True:
            rows, scores = self.neighbours(query, min(pool, count), mode)
            if first:
                rows = np.asarray(rerank.keep_first([int(r) for r in rows], [r for r in first if r not in drop]),
                                  dtype=np.int64)
            if asked is not None:
                scores = self._own_scores(rows, asked)
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
                         or (refine.min_score is not None and asked is None and len(scores)
                             and scores[-1] < refine.min_score))
            if len(picked) >= want or exhausted:
                break
            pool *= POOL_FACTOR
        if refine.diverse is not None and picked:
            # The copy-first result keeps rank 1; MMR orders the rest (a second pinned row, the
            # query photo's near-copy, is what --diverse asks to push down).
            lead = 1 if picked[0][0] in first else 0
            order = rerank.mmr(query, self._raw([r for r, _ in picked]), k, refine.diverse, keep=lead)
            picked = [picked[i] for i in order]
        return picked[:k]

    def _own_scores(self, rows: np.ndarray, asked: np.ndarray) -> np.ndarray:
        """Cosines of ``asked`` (a unit vector) to ``rows``' own vectors; a row that is no unit
        vector (NaN, rescaled: a damaged file) is named, never shown as a score."""
        scores = self._raw([int(r) for r in rows]) @ asked
        bad = ~np.isfinite(scores) | (np.abs(scores) > 1.0 + nearest.SCORE_SLACK)
        if bad.any():
            raise SearchSpace.of(self.store).damaged(self.vectors, int(rows[int(np.argmax(bad))]), nearest.NOT_UNIT)
        return scores

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
    :mod:`vsearch.imaging.verify`) come first, those whose aligned pixels agree best with the
    query first (the original of a crop before another frame of the same sitting, which shares
    its background's keypoints but not its pixels), then those whose aligned pixels correlate
    most closely (where nothing moved in what the crop shows, another frame agrees everywhere
    too, but it was resampled by the camera's move and has its own noise), then most inliers
    (a sibling framed a little tighter has more); the others keep their order after them.
    Measured (benchmarks/bench_verify.py --sittings 100: crops of flowers17 photos indexed with
    two burst frames of each): recall@1 0.49 by inliers, 0.67 by agreement, 0.74 by agreement
    then correlation. Ranks are renumbered; scores stay the cosines. A result whose file cannot be decoded
    counts as not verified. Raises :class:`~vsearch.imaging.images.ImageDecodeError` when the query
    itself cannot be decoded.
    """
    from vsearch.imaging.verify import MIN_AGREEMENT, MIN_CELLS, Verifier  # OpenCV: only a verified query pays for it

    if n < 0:
        raise VsearchError(f"verify= takes 0 or more results (got {n})")
    if n > MAX_VERIFY:
        raise VsearchError(f"verify= takes at most {MAX_VERIFY} results (got {n})")
    if n == 0 or not hits:
        return list(hits)
    verifier = verifier or Verifier()
    verifier.features(Path(query))  # a query that cannot be decoded fails here, once
    top, rest = list(hits[:n]), list(hits[n:])
    verified: dict[int, tuple[float, float, int]] = {}  # (agreement, correlation, inliers)
    for i, hit in enumerate(top):
        try:
            verdict = verifier.verify(Path(query), hit.path)
        except (ImageDecodeError, OSError) as e:
            log.info("not verified %s: %s", hit.path, e)
            continue
        if verdict.same:
            # Too few cells to tell (a tiny crop): as good as the agreement the duplicates ask.
            agreement = verdict.agreement if verdict.agreement is not None and verdict.cells >= MIN_CELLS else MIN_AGREEMENT
            verified[i] = (agreement, verdict.correlation if verdict.correlation is not None else -1.0, verdict.inliers)
    order = sorted(verified, key=lambda i: (-verified[i][0], -verified[i][1], -verified[i][2], i))
    order += [i for i in range(len(top)) if i not in verified]
    ranked = [top[i] for i in order] + rest
    return [Hit(r, h.path, h.score, h.row) for r, h in enumerate(ranked, 1)]
