"""An open index: what it is, query it, find its near-duplicates, score it; and the calls that
change files beside it (verdicts, marks, moving copies and undoing it, training), each of which
says so. Those are implemented where their work lives (:mod:`vsearch.api.changes`,
:mod:`vsearch.duplicates.actions`, :mod:`vsearch.api.learning`); :class:`Index` hands them the
open index.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vsearch.api import changes, comparing, learning, scoring
from vsearch.api.common import PathLike, check_mode, check_qe, index_dir_of, listed
from vsearch.api.details import IndexDetails
from vsearch.defaults import DEFAULT_QE
from vsearch.duplicates import actions as act
from vsearch.duplicates import grouping as dup
from vsearch.duplicates import marks
from vsearch.duplicates.actions import Action, UndoLog, UndoResult
from vsearch.duplicates.grouping import DuplicateGroup
from vsearch.errors import VsearchError
from vsearch.learning import judgments as jd
from vsearch.retrieval import freshness as fresh
from vsearch.retrieval.query import QueryVector
from vsearch.retrieval.rerank import DEFAULT_NEGATIVE_WEIGHT, combine_examples
from vsearch.retrieval.search import MAX_K, MAX_VERIFY, Hit, Refine, Searcher, SearchMode, verify_rerank
from vsearch.storage.meta import META_FILE, IndexMeta
from vsearch.storage.store import MARKS_FILE, FileEntry, Store

if TYPE_CHECKING:  # these import Pillow: only a build or an evaluation pays for it (imported when called)
    from vsearch.evaluation.evaluate import EvalReport
    from vsearch.indexing.pipeline import IndexSummary
    from vsearch.learning.train import TrainResult

__all__ = ["Action", "Index", "UndoLog", "UndoResult", "open_index"]


# --- an open index ---------------------------------------------------------------------------


def open_index(index_dir: PathLike | None = None, *, device: str = "auto", adapter: bool = True) -> Index:
    """Open the committed index at ``index_dir`` (default :func:`default_index_dir`) for reading.

    ``device`` is where a query image that is not in the index gets embedded (auto, cpu, cuda,
    mps); the model is loaded only when such a query comes. ``adapter``: search through the
    index's trained projection head when it has one (``vsearch train``); False searches the raw
    vectors. Raises :class:`~vsearch.errors.IndexMissingError` when there is no index there.
    """
    return Index(index_dir, device=device, adapter=adapter)


class Index:
    """An open, committed index: query it, find near-duplicates in it, score it.

    Made by :func:`open_index` or :func:`build_index`. It follows its folder: when a build
    commits (in this process or another), its next query, duplicates or evaluate call reads the
    new generation, and its properties describe that one. Close it (or use it in a ``with``
    block) to release its files. ``len(index)`` is the number of images it holds.
    """

    def __init__(self, index_dir: PathLike | None = None, *, device: str = "auto", adapter: bool = True) -> None:
        """Open the index at ``index_dir`` (default :func:`default_index_dir`); see :func:`open_index`."""
        store = Store.open(index_dir_of(index_dir))
        self._adapter = adapter
        try:
            self._searcher: Searcher | None = Searcher(store, device=device, adapter=adapter)
        except BaseException:
            store.close()
            raise
        self._store: Store | None = store
        self._dir = store.dir
        self._device = device
        self._meta: IndexMeta = store.meta  # type: ignore[assignment]  # a read-only open has one
        self._summary: IndexSummary | None = None

    # --- what it is ------------------------------------------------------------------------

    @property
    def index_dir(self) -> Path:
        """The index folder (absolute)."""
        return self._dir

    @property
    def root(self) -> Path:
        """The image folder the index covers; hits are paths under it."""
        return Path(self._meta.root)

    @property
    def model(self) -> str:
        """The name of the model that made the vectors, e.g. ``efficientnet-lite0``."""
        return self._meta.model.name

    @property
    def count(self) -> int:
        """How many images the index holds (same as ``len(index)``)."""
        return self._meta.count

    @property
    def dim(self) -> int:
        """The length of each embedding."""
        return self._meta.dim

    @property
    def skipped(self) -> int:
        """How many files under the root could not be embedded (unreadable, too large ...)."""
        return self._meta.skipped

    @property
    def generation(self) -> int:
        """The commit number of the vectors this index reads; each build that changes them adds one."""
        return self._meta.generation

    @property
    def annoy_trees(self) -> int | None:
        """Trees in the index's Annoy index, or None when it has none (``trees=None`` builds)."""
        return self._meta.ann.trees if self._meta.ann is not None else None

    @property
    def text_search(self) -> bool:
        """Whether text queries work: the index was built with a CLIP (open_clip) model."""
        return self._meta.model.supports_text

    @property
    def adapted(self) -> bool:
        """Whether searches go through a trained projection head (one exists and ``adapter`` is on)."""
        return self._searcher is not None and self._searcher.adapted

    @property
    def meta(self) -> IndexMeta:
        """Everything ``meta.json`` records: model identity, counts, files, generation, time."""
        return self._meta

    @property
    def summary(self) -> IndexSummary | None:
        """What :func:`build_index` did (embedded, unchanged, moved, reused, removed, skipped
        with reasons, elapsed_s); None for an index opened with :func:`open_index`."""
        return self._summary

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._store is None

    def __len__(self) -> int:
        return self._meta.count

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.count} images"
        return f"<vsearch.Index {str(self._dir)!r}: {self.model}, {state}>"

    # --- life cycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Release the index's files and any loaded model. Closing twice is harmless."""
        self._searcher = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> tuple[Store, Searcher]:
        """The store and searcher of the latest committed generation (reopened after a build)."""
        if self._store is None or self._searcher is None:
            raise VsearchError(f"the index at {self._dir} is closed; open it again with vsearch.open_index")
        if self._store.generation != self._meta.generation:
            # A build committed since: its manifest rows point into the new vectors, which the
            # vectors held here do not have, so read the new generation (model and root are the same).
            self._reopen()
        return self._store, self._searcher

    # --- searching -------------------------------------------------------------------------

    def query(
        self,
        queries: PathLike | Sequence[PathLike] = (),
        k: int = 10,
        *,
        text: str | Sequence[str] | None = None,
        negatives: PathLike | Sequence[PathLike] = (),
        not_weight: float = DEFAULT_NEGATIVE_WEIGHT,
        exclude_self: bool = False,
        min_score: float | None = None,
        path_glob: str | None = None,
        dedupe: float | None = None,
        diverse: float | None = None,
        qe: int = DEFAULT_QE,
        mode: SearchMode = "auto",
        on_missing: Callable[[list[Path]], None] | None = None,
        verify: int = 0,
        max_per_folder: int | None = None,
        max_per_day: int | None = None,
        copy_first: bool = True,
    ) -> list[Hit]:
        """The ``k`` images nearest to the query, best first, as :class:`Hit` s (rank, score, path).

        ``queries``: one query or a list; several are averaged. A ``pathlib.Path`` (or any
        os.PathLike) is an image. A ``str`` is an image when a file of that name exists, else
        a text query (CLIP indexes only; a missing ``*.jpg``-like name is reported as a missing
        image, not searched as text): the rule of ``vsearch query``. ``text``: text queries,
        never looked up as files. An image already in the index reuses its stored vector (no
        model is loaded); any other image is embedded with the index's own model.

        ``negatives``: images to steer away from, weighted by ``not_weight`` against the
        positives' mean. ``exclude_self``: leave the query and negative images out of the
        results. ``min_score``: keep results with at least this cosine. ``path_glob``: keep
        results whose path relative to :attr:`root` matches (``*`` crosses folders).
        ``dedupe``: collapse results whose cosine to a better one is at least this.
        ``diverse``: MMR re-ranking, 1 = relevance only, lower = more varied. ``qe``: average
        query expansion with the top ``qe`` results (default
        :data:`~vsearch.defaults.DEFAULT_QE`, measured in docs/defaults.md; 0 = off).
        ``copy_first``: when expansion (or a DBA copy) changes the order, the query's nearest
        neighbour by its own vector stays first, so an edited copy still finds its original at
        rank 1 (with ``exclude_self`` off, an indexed query photo stays ahead of it). ``mode``: ``auto`` (Annoy for
        large indexes), ``exact`` or ``approximate`` (Annoy; needs one).
        ``verify``: re-rank the top ``verify`` results by local-feature verification against
        the query image (one image query only): copies of the query, cropped, rescaled,
        recompressed or mirrored, come first (``vsearch query --verify N``; 0 = off;
        :data:`vsearch.retrieval.search.DEFAULT_VERIFY` is the measured choice). With
        ``verify``, the candidates are the query's nearest by its own vector (``qe`` is not
        applied): copies are what verification looks for.
        ``max_per_folder``: at most this many results from one folder (no album floods the top
        k); ``max_per_day``: at most this many taken on one day (EXIF DateTimeOriginal, else
        DateTime; results without a date are not capped). The next best results from other
        folders or days fill in; fewer than ``k`` come back only when the index runs out.
        Every score is the exact cosine similarity to the query searched. A result whose file
        is gone from disk since the index was built is dropped (the next one takes its place);
        ``on_missing`` gets the list of those paths.
        """
        _check_query_options(k, mode, not_weight, min_score, dedupe, diverse, qe)
        _, searcher = self._open()
        positives = [_query_vector(searcher, q) for q in listed(queries)]
        positives += [searcher.encoder.text_vector(t) for t in listed(text)]
        if not positives:
            raise VsearchError("nothing to search for: give a query image or text")
        negs = [searcher.image_vector(Path(n)) for n in listed(negatives)]
        vector = _combine(positives, negs, not_weight)
        own = [v.row for v in positives + negs if v.row is not None]
        image = _verify_query(verify, queries, text)
        # Verification looks for copies of the query: they are its nearest neighbours by its own
        # vector, which query expansion (made for finding more of a kind) would push down.
        refine = Refine(min_score=min_score, path_glob=path_glob, dedupe=dedupe, diverse=diverse,
                        expand=0 if image is not None else qe, copy_first=copy_first,
                        max_per_folder=max_per_folder, max_per_day=max_per_day)
        hits = searcher.search(vector, max(k, verify), mode, exclude_rows=own if exclude_self else [], refine=refine,
                               query_rows=own, on_missing=on_missing)
        return verify_rerank(image, hits, verify)[:k] if image is not None else hits

    def duplicates(self, threshold: float | None = None, *, level: str = "near", keep: str = "default",
                   not_duplicates: Collection[frozenset[str]] = (), mode: SearchMode = "auto",
                   progress: Callable[[int, int], None] | None = None,
                   min_overlap: float = dup.NEAR_MIN_OVERLAP, step: Callable[[str, int, int], None] | None = None,
                   found: Callable[[DuplicateGroup], None] | None = None,
                   verdicts: MutableMapping[tuple[object, ...], bool] | None = None) -> list[DuplicateGroup]:
        """Groups of duplicate images, largest first, each a star around the copy to keep.

        ``level``: ``exact`` (byte-identical files), ``near`` (default: copies verified by local
        features: rescaled, recompressed, cropped, re-coloured or mirrored) or ``similar``
        (cosine only). ``threshold``: the shortlist cosine at the near level (default 0.80),
        the grouping cosine at the similar level (default 0.92; higher is stricter).
        ``keep``: which copy each group keeps: ``default`` (the original over its derivatives:
        a regular file over a symbolic link, a camera RAW, camera EXIF, the earliest capture
        time, most pixels, no trace of a re-save in the pixels, the higher JPEG quality, a name
        that is no copy's, the oldest, the larger file, the path; see
        :mod:`vsearch.duplicates.keeper`), ``pixels`` (most pixels, then largest file, then
        oldest, then path), ``largest``, ``smallest``, ``oldest``, ``newest`` or
        ``shortest-path`` (each first, then the default order). A hard link or symbolic link
        to the keeper is listed at level ``same-file``, never as a copy to act on.
        ``not_duplicates``: pairs of content digests never grouped together.
        ``mode``: ``auto`` (every pair compared up to 20,000 images, a clustered search
        above: exact scores, a pair missed now and then), ``exact`` (every pair) or
        ``approximate`` (the Annoy index). ``progress(done, total)`` follows
        the rows compared, then the rows grouped. ``min_overlap`` (near): the share of each
        image a copy must have in common with its keeper (default 0.5; lower finds heavier
        crops). A near copy is also the same picture, not another moment of the scene: its
        aligned pixels agree (a burst frame is grouped at ``similar`` only).

        For a caller that shows the search as it goes (the page): ``step(name, done, total)``
        follows it naming each step (``compare``, then ``group``, after every row), and an
        exception it raises stops the search; ``found(group)`` gets each group as soon as it
        is settled, before they are ordered by size; ``verdicts``, a dict the caller keeps
        between calls, remembers each verified pair (keyed by both files' path, size and
        mtime), so a call with another threshold or keep rule verifies only new pairs.
        """
        check_mode(mode)
        comparing.check_share("min_overlap", min_overlap)
        if level not in dup.LEVELS:
            raise VsearchError(f"level must be one of {', '.join(dup.LEVELS)} (got {level!r})")
        if keep not in dup.KEEP_RULES:
            raise VsearchError(f"keep must be one of {', '.join(dup.KEEP_RULES)} (got {keep!r})")
        store, searcher = self._open()
        vectors = None
        if searcher.adapted:  # the trained head's copy; the Annoy file is in the raw space
            if mode == "approximate":
                raise VsearchError("approximate duplicates need the raw vectors' Annoy index: use adapter=False")
            vectors, mode = searcher.vectors, "exact"
        # Marks recorded with not_duplicate (or the CLI's --not-duplicate) always apply.
        apart = set(not_duplicates) | marks.not_duplicates(store.dir)
        return dup.find_groups(store, threshold, level=level, keep=keep, not_duplicates=apart,
                               mode=mode, progress=progress, vectors=vectors, min_overlap=min_overlap,
                               step=step, found=found, verdicts=verdicts)

    def against(self, folder: PathLike, *, level: str = "near", threshold: float | None = None,
                min_overlap: float = dup.NEAR_MIN_OVERLAP, mode: SearchMode = "auto",
                progress: Callable[[int, int], None] | None = None) -> list[comparing.AgainstResult]:
        """For every image under ``folder`` (recursively; nothing is added to the index), whether
        the index already holds it: an :class:`~vsearch.duplicates.against.AgainstResult` each,
        sorted by path, ``status`` ``present`` (with the ``match``, its ``level`` and cosine),
        ``new`` or ``unreadable``.

        ``level``: ``exact`` (the same bytes only), ``near`` (default: the same bytes, or a
        verified copy, crop or edit, as :meth:`duplicates` finds them) or ``similar`` (the
        nearest indexed photo's cosine reaches ``threshold``). ``threshold``, ``min_overlap``,
        ``mode``: as in :meth:`duplicates`. ``progress(done, total)`` follows the photos checked.
        """
        _, searcher = self._open()
        return comparing.against(searcher, folder, level=level, threshold=threshold, min_overlap=min_overlap,
                                 mode=mode, progress=progress)

    def explain(self, a: PathLike, b: PathLike, *, level: str = "near", threshold: float | None = None,
                min_overlap: float = dup.NEAR_MIN_OVERLAP) -> comparing.PairExplanation:
        """Why images ``a`` and ``b`` are (or are not) duplicates: their cosine, the keypoints
        matched, the fitted transform, the overlap, the aligned-pixel agreement, the strictest
        level the pair reaches and each test it passed or missed (a
        :class:`~vsearch.duplicates.explain.PairExplanation`; ``a`` in the keeper's place).
        Either image may be outside the index. ``threshold`` is ``level``'s cosine, as in
        :meth:`duplicates`; ``min_overlap`` as there."""
        _, searcher = self._open()
        return comparing.explain(searcher, a, b, level=level, threshold=threshold, min_overlap=min_overlap)

    def marks(self) -> list[comparing.MarkedPair]:
        """The standing "not a duplicate" marks, oldest first, each with where its two images are
        (a :class:`~vsearch.api.comparing.MarkedPair`)."""
        store, _ = self._open()
        return comparing.marked_pairs(store)

    def unmark(self, a: PathLike, b: PathLike) -> None:
        """Take back a "not a duplicate" mark of images ``a`` and ``b``: later :meth:`duplicates`
        calls may group them again. Changes a file: ``marks.jsonl`` gets one more line (the log
        is append-only, kept by content like the marks). Raises :class:`VsearchError` when the
        two are not marked."""
        self._open()
        comparing.unmark(self._dir, a, b)

    def not_duplicate(self, a: PathLike, b: PathLike) -> None:
        """Record that images ``a`` and ``b`` are not duplicates: later :meth:`duplicates` calls
        keep them apart. Changes a file: the mark is kept in the index folder (``marks.jsonl``),
        keyed by the files' contents, so it survives renames, moves and rebuilds."""
        changes.not_duplicate(self._dir, a, b)

    def judge(self, query: PathLike, results: Sequence[PathLike], *, relevant: bool, grade: int | None = None,
              source: str = "cli") -> list[jd.Judgment]:
        """Record that each of ``results`` is (or is not) relevant to ``query``, in one go.

        ``query``: an image file (in the index or not), or a ``"text:..."`` string for a text
        query. ``results``: image files in the index. Changes a file: verdicts are kept in the
        index folder (``judgments.sqlite``), keyed by the files' contents, so they survive
        renames. ``grade``: graded relevance, the gain of nDCG (default 1 relevant, 0 not). A
        result that is not in the index or cannot be read raises :class:`VsearchError`, and
        nothing is recorded.
        """
        store, _ = self._open()
        return changes.judge(store, self.root, query, results, relevant=relevant, grade=grade, source=source)

    def plan_actions(self, groups: Sequence[DuplicateGroup], *, move_to: PathLike | None = None,
                     trash: bool = False) -> list[Action]:
        """What acting on ``groups`` would do, changing nothing: move every copy that is not its
        group's keeper under ``move_to`` (keeping its path relative to :attr:`root`; a missing
        folder is made by :meth:`apply_actions`), or send it to the trash (``trash=True``).
        ``same-file`` members (links to the keeper) are never acted on. Raises
        :class:`VsearchError` for an empty ``move_to``, one that is no folder, is unwritable, is
        on a file system that holds no files (/proc, /sys), holds :attr:`root` or lies in the
        index folder, a target that exists already, or a copy whose folder is read-only. Give
        the result to :meth:`apply_actions`."""
        self._open()
        return act.plan(groups, root=self.root, move_to=move_to, trash=trash, index_dir=self._dir)

    def apply_actions(self, actions: Sequence[Action],
                      progress: Callable[[int, int], None] | None = None) -> UndoLog:
        """Do what :meth:`plan_actions` planned. Each action is written to an undo log in the index
        folder (fsynced) before the file is touched; the index follows (a copy moved inside
        :attr:`root` keeps its row under its new path, others leave it; nothing is embedded),
        and records the folders' new mtimes, so :meth:`freshness` still finds it up to date.
        Every copy and keeper must be unchanged since indexing, and each keeper a regular
        file, else nothing is done; a target folder no file can be made in is refused before
        the log is written. Returns the :class:`UndoLog`; :meth:`undo` reverses it."""
        self._open()
        return act.apply(self._dir, list(actions), progress=progress)

    def undo(self, log: PathLike | None = None) -> UndoResult:
        """Put back what an undo log moved or trashed (the newest log not yet undone when None),
        with the files' rows in the index, all or nothing: every entry is checked first, and a
        damaged one is an error naming the log and line. Never overwrites a file; refuses a log
        made for another index; removes what a killed run left at the targets."""
        self._open()
        return act.undo(self._dir, Path(log) if log is not None else None)

    def entry_of_row(self, row: int) -> FileEntry | None:
        """The manifest entry (relative path, size, mtime, content digest) of vector ``row`` in
        the current generation, or None when no file has that row."""
        return self.entries_of_rows([row]).get(row)

    def entries_of_rows(self, rows: Sequence[int]) -> dict[int, FileEntry]:
        """:meth:`entry_of_row` for many rows at once (a page of results): row -> entry, for the
        rows that have a file."""
        store, _ = self._open()
        return store.entries_of_rows(rows)

    def entry_of_digest(self, digest: str) -> FileEntry | None:
        """The manifest entry of an indexed file holding the content ``digest`` (one of them, when
        several files hold it), or None: whether the library holds these very bytes."""
        store, _ = self._open()
        return store.entry_by_digest(digest)

    def entry_of_path(self, rel: str) -> FileEntry | None:
        """The manifest entry of a path relative to :attr:`root` (POSIX), or None."""
        store, _ = self._open()
        return store.entry(rel)

    def details(self) -> IndexDetails:
        """What ``vsearch info`` shows: the model, the folder, counts, the files' sizes on disk,
        the generation, the last update and a quick freshness check."""
        store, _ = self._open()
        return IndexDetails.of(store, fresh.check(store))

    def state(self) -> tuple[Any, ...]:
        """A token that changes whenever the index commits or a not-duplicate mark is recorded
        (inode, size and mtime of ``meta.json`` and ``marks.jsonl``): what a caller that keeps
        duplicate groups compares to know when to find them again."""
        parts: list[Any] = []
        for name in (META_FILE, MARKS_FILE):
            try:
                st = (self._dir / name).stat()
                parts.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                parts.append(None)
        return tuple(parts)

    def freshness(self) -> fresh.Freshness:
        """A quick, time-boxed look at whether :attr:`root` changed since the index was built.

        The result's ``stale`` says whether it did, and ``warning()`` gives one line saying
        what changed (None when nothing did). ``build_index`` brings the index up to date.
        """
        store, _ = self._open()
        return fresh.check(store)

    # --- learning --------------------------------------------------------------------------

    def train(self, *, epochs: int = 10, dim: int | None = None, seed: int = 0, views: int = 2,
              use_judgments: bool = False, progress: Callable[[str, int, int], None] | None = None) -> TrainResult:
        """Fit a projection head on this index and commit it (see :func:`train`); this index's
        next searches go through it (when opened with ``adapter=True``, the default)."""
        self._open()
        result = learning.train(self._dir, epochs=epochs, dim=dim, seed=seed, views=views, use_judgments=use_judgments,
                       device=self._device, progress=progress)
        self._reopen()
        return result

    def _reopen(self) -> None:
        """Read ``meta.json`` again (a head trained or removed keeps the generation)."""
        store = Store.open(self._dir)
        try:
            searcher = Searcher(store, device=self._device, adapter=self._adapter)
        except BaseException:
            store.close()
            raise
        if self._store is not None:
            self._store.close()
        self._store, self._searcher, self._meta = store, searcher, store.meta  # type: ignore[assignment]  # a reader has a meta

    # --- scoring ---------------------------------------------------------------------------

    def evaluate(
        self,
        *,
        pairs: PathLike | None = None,
        groups: PathLike | None = None,
        augment: int | None = None,
        judgments: bool = False,
        ks: Sequence[int] | None = None,
        mode: SearchMode = "auto",
        qe: int = DEFAULT_QE,
        seed: int = 0,
        ann_recall: bool = False,
        progress: Callable[[int, int], None] | None = None,
        max_per_folder: int | None = None,
        max_per_day: int | None = None,
    ) -> EvalReport:
        """Score retrieval on labels; give exactly one of ``pairs``, ``groups``, ``augment`` or
        ``judgments=True`` (the verdicts recorded in the index folder, graded: nDCG uses the grades).

        ``pairs``: a CSV of ``query,positive[,relevance]``. ``groups``: a CSV of ``path,group``
        (each member is a query against the rest of its group). ``augment``: no labels needed:
        pick that many indexed images (by ``seed``), query with edited copies of each (made in
        a temporary folder, removed afterwards) and score whether the original comes back.
        ``ks``: cut-offs (default 1, 5, 10; 1, 10 with ``augment``). ``mode``, ``qe``: as in
        :meth:`query`. ``ann_recall``: also measure Annoy against exact search.
        ``max_per_folder``, ``max_per_day``: score the rankings those caps give (see
        :meth:`query`), to measure what they cost.

        Returns an :class:`EvalReport`: ``metrics`` maps ``recall@K``, ``hit@K``,
        ``precision@K``, ``map@K``, ``ndcg@K``, ``mrr`` and ``num_queries`` to their mean over
        queries, and ``folder_share@K`` (``day_share@K`` where results have EXIF dates) to the
        mean share of the top K from the most common folder (day); ``records`` holds each
        query's expected and returned paths.
        """
        store, searcher = self._open()
        return scoring.evaluate_index(store, searcher, pairs=pairs, groups=groups, augment=augment, judged=judgments,
                                      ks=ks, mode=mode, qe=qe, seed=seed, ann_recall=ann_recall, progress=progress,
                                      max_per_folder=max_per_folder, max_per_day=max_per_day)


# --- checks ----------------------------------------------------------------------------------


def _check_query_options(k: int, mode: str, not_weight: float, min_score: float | None,
                         dedupe: float | None, diverse: float | None, qe: int) -> None:
    if isinstance(k, bool) or not hasattr(k, "__index__") or k < 1:  # numpy integers are fine
        raise VsearchError(f"k must be a whole number, 1 or more (got {k!r})")
    if k > MAX_K:
        raise VsearchError(f"k= takes at most {MAX_K} results (got {k})")
    check_mode(mode)
    if not math.isfinite(not_weight) or not_weight < 0:
        raise VsearchError(f"not_weight must be 0 or more (got {not_weight!r})")
    for name, value in (("min_score", min_score), ("dedupe", dedupe)):
        if value is not None and not math.isfinite(value):
            raise VsearchError(f"{name} must be a number (got {value!r})")
    if diverse is not None and not 0.0 <= diverse <= 1.0:  # also refuses nan
        raise VsearchError(f"diverse must be between 0 and 1 (got {diverse!r})")
    check_qe(qe)


# --- helpers ----------------------------------------------------------------------------------


def _verify_query(verify: int, queries: Any, text: Any) -> Path | None:
    """The one query image that ``verify`` re-ranks against (None when verify is 0)."""
    if isinstance(verify, bool) or not hasattr(verify, "__index__") or verify < 0:
        raise VsearchError(f"verify must be a whole number, 0 or more (got {verify!r})")
    if verify > MAX_VERIFY:
        raise VsearchError(f"verify= takes at most {MAX_VERIFY} results (got {verify})")
    if verify == 0:
        return None
    images = listed(queries)
    if len(images) != 1 or listed(text) or not os.path.isfile(Path(images[0]).expanduser()):  # never raises
        raise VsearchError("verify= needs exactly one query image (not text, not several images)")
    return Path(images[0]).expanduser()


def _query_vector(searcher: Searcher, query: PathLike) -> QueryVector:
    """A str is an image when such a file exists, else text (the CLI's rule); a path is an image."""
    if isinstance(query, str):
        return searcher.query_vector(query)
    return searcher.image_vector(Path(query))


def _combine(positives: list[QueryVector], negatives: list[QueryVector], not_weight: float) -> np.ndarray:
    return combine_examples(np.stack([v.vector for v in positives]),
                            np.stack([v.vector for v in negatives]) if negatives else None, not_weight)


def _find_groups(store: Store, threshold: float | None, level: str, keep: str,
                 not_duplicates: Collection[frozenset[str]], mode: str,
                 progress: Callable[[int, int], None] | None,
                 vectors: np.ndarray | None = None) -> list[DuplicateGroup]:
    # Marks recorded with --not-duplicate / Index.not_duplicate always apply.
    apart = set(not_duplicates) | marks.not_duplicates(store.dir)
    return dup.find_groups(store, threshold, level=level, keep=keep, not_duplicates=apart,
                           mode=mode, progress=progress, vectors=vectors)
