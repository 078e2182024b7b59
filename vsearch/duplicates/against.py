"""Check a folder against the library: for each photo in it, does the index already hold it?

    each image file under FOLDER (recursively, as an index scans)
    -> its content digest in the manifest?                        present, level exact
    -> embedded with the index's model (nothing is added to the index)
    -> its MAX_LINKS nearest indexed photos with cosine >= the shortlist (or its nearest, down to
       small.SMALL_SHORTLIST, when either is a small image: a small copy's embedding drifts further)
    -> each verified in turn, most alike first (the near level's verifier:
       a copy, crop or edit of the same picture)                  present, level near
    -> none                                                       new

At ``level="similar"`` a photo is present when its nearest indexed photo's cosine reaches the
similar level's threshold (no verification), at ``level="exact"`` only by its bytes. That is
what ``vsearch duplicates --against FOLDER`` prints: copy the new ones into the library, leave
the ones it holds. The folder is only read; the index is not changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vsearch.duplicates import grouping, small
from vsearch.errors import ImageDecodeError, VsearchError
from vsearch.imaging.reading import read_image_bytes
from vsearch.imaging.scan import ScanProblem, scan_folder
from vsearch.retrieval.search import Searcher
from vsearch.storage.store import file_digest
from vsearch.vectors import nearest
from vsearch.vectors.space import SearchSpace

if TYPE_CHECKING:  # verify imports OpenCV and Pillow: only the near level pays for them
    from vsearch.imaging.verify import Verifier

log = logging.getLogger(__name__)

#: What a photo of the folder is: held by the library already, not held, or not readable.
PRESENT, NEW, UNREADABLE = "present", "new", "unreadable"
#: Photos embedded per forward pass.
BATCH = 32


@dataclass(frozen=True)
class AgainstResult:
    """One photo of the folder checked against the library.

    ``path``: the photo. ``status``: ``present`` (the library holds it: the same bytes, or at
    ``near`` a verified copy, crop or edit of it, or at ``similar`` a photo that looks alike),
    ``new`` or ``unreadable``. ``level``: how the library holds it (``exact``, ``near``,
    ``similar``; None unless present). ``match``: the library's photo that holds it, with its
    index ``row``; ``score``: their cosine (1.0 for the same bytes). ``reason``: why it
    could not be read (unreadable only).
    """

    path: Path
    status: str
    level: str | None = None
    match: Path | None = None
    score: float | None = None
    row: int | None = None
    reason: str | None = None


def check_folder(searcher: Searcher, folder: Path, *, level: str = "near", threshold: float | None = None,
                 min_overlap: float = grouping.NEAR_MIN_OVERLAP, links: int = grouping.MAX_LINKS,
                 mode: str = "auto", progress: Callable[[int, int], None] | None = None) -> list[AgainstResult]:
    """Each image under ``folder`` (sorted by path) checked against the index ``searcher``
    reads, as the module notes say. ``threshold``: the level's cosine, as in
    :func:`~vsearch.duplicates.grouping.find_groups` (near: the shortlist, 0.80; similar: 0.92).
    ``min_overlap``: the share of each image a near copy shares with the library's photo.
    ``progress(done, total)`` follows the photos checked. Raises :class:`VsearchError` for a
    folder that is missing or no folder, or a bad option."""
    if level not in grouping.LEVELS:
        raise VsearchError(f"level= takes one of {', '.join(grouping.LEVELS)} (got {level!r})")
    small_copies = level == "near" and threshold is None  # below the default shortlist only
    if threshold is None:
        threshold = grouping.SHORTLIST_THRESHOLD if level == "near" else grouping.DEFAULT_THRESHOLD
    if not -1.0 <= threshold <= 1.0:  # also refuses nan
        raise VsearchError(f"threshold= takes a cosine between -1 and 1, e.g. {grouping.DEFAULT_THRESHOLD}")
    verifier = grouping.near_verifier(min_overlap) if level == "near" else None  # checks min_overlap first
    store = searcher.store
    problems: list[ScanProblem] = []
    found = [f.path for f in scan_folder(Path(folder).expanduser(), on_problem=problems.append)]
    results: dict[Path, AgainstResult] = {p.path: AgainstResult(p.path, UNREADABLE, reason=p.reason) for p in problems}
    root = Path(store.meta.root) if store.meta is not None else Path()
    pending: list[Path] = []
    for path in found:
        try:
            digest = file_digest(read_image_bytes(path))
        except (VsearchError, OSError) as exc:
            results[path] = AgainstResult(path, UNREADABLE, reason=str(exc))
            continue
        entry = store.entry_by_digest(digest)
        if entry is not None and entry.row is not None:
            results[path] = AgainstResult(path, PRESENT, "exact", root / entry.path, 1.0, entry.row)
        elif level == "exact":
            results[path] = AgainstResult(path, NEW)
        else:
            pending.append(path)
    done = len(results)
    if progress:
        progress(done, len(found) + len(problems))
    for start in range(0, len(pending), BATCH):
        batch = pending[start:start + BATCH]
        for result in _check_batch(searcher, batch, level, threshold, verifier, links, mode, small_copies):
            results[result.path] = result
        done += len(batch)
        if progress:
            progress(done, len(found) + len(problems))
    return [results[p] for p in sorted(results)]


def _check_batch(searcher: Searcher, paths: Sequence[Path], level: str, threshold: float,
                 verifier: Verifier | None, links: int, mode: str, small_copies: bool) -> list[AgainstResult]:
    """Embed ``paths`` in one forward pass and look each up among its nearest indexed photos."""
    from vsearch.imaging import images  # Pillow: only photos that are not byte copies pay for it

    encoder = searcher.encoder
    pre = searcher.meta.model.preprocess
    out: list[AgainstResult] = []

    def pixels(path: Path) -> np.ndarray | VsearchError:
        try:
            return images.decode_for_model(path, pre.size, pre.framing)
        except VsearchError as exc:
            return exc

    # Pillow releases the GIL while it decodes: two threads keep the model fed.
    with ThreadPoolExecutor(max_workers=2) as pool:
        decoded = list(pool.map(pixels, paths))
    readable = [(p, x) for p, x in zip(paths, decoded) if isinstance(x, np.ndarray)]
    out += [AgainstResult(p, UNREADABLE, reason=str(x)) for p, x in zip(paths, decoded) if not isinstance(x, np.ndarray)]
    if not readable:
        return out
    queries = encoder.to_query_space(encoder.embedder.embed_images(np.stack([x for _, x in readable])))
    rows, scores = _neighbours(searcher, queries, links, mode)
    for (path, _), row_list, score_list in zip(readable, rows, scores):
        candidates = [(int(r), float(s)) for r, s in zip(row_list, score_list) if r >= 0 and s >= threshold]
        if (not candidates and small_copies and len(row_list) and row_list[0] >= 0
                and small.SMALL_SHORTLIST <= score_list[0] < threshold
                and small.small_copy_pair(searcher.path(int(row_list[0])), path, resized=False)):
            candidates = [(int(row_list[0]), float(score_list[0]))]  # a small copy drifts further: see small.py
        out.append(_judge(searcher, path, candidates, level, verifier))
    return out


def _judge(searcher: Searcher, path: Path, candidates: list[tuple[int, float]], level: str,
           verifier: Verifier | None) -> AgainstResult:
    """``path`` against its shortlisted indexed photos (most alike first)."""
    if not candidates:
        return AgainstResult(path, NEW)
    if level == "similar" or verifier is None:
        row, score = candidates[0]
        return AgainstResult(path, PRESENT, "similar", searcher.path(row), score, row)
    for row, score in candidates:
        match = searcher.path(row)
        try:
            verdict = verifier.verify(match, path)
        except (ImageDecodeError, OSError) as exc:
            # The library's file gone or changed since indexing: no copy to count on.
            log.info("not verified %s ~ %s: %s", match, path, exc)
            continue
        if verdict.same:
            return AgainstResult(path, PRESENT, "near", match, score, row)
    return AgainstResult(path, NEW)


def _neighbours(searcher: Searcher, queries: np.ndarray, links: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``links`` nearest indexed rows of each query, in the space the duplicates compare
    (the images' own vectors, or a trained head's copy), exact up to EXACT_LIMIT rows, else
    through the index's Annoy index as the duplicates' shortlist does."""
    vectors = searcher.vectors
    k = min(links, len(vectors))
    store = searcher.store
    space = SearchSpace.of(store)
    wanted = mode == "approximate" or (mode == "auto" and len(vectors) > nearest.EXACT_LIMIT)
    # The approximate index is over the raw search vectors: not a head's copy, nor with DBA.
    usable = not searcher.adapted and store.meta is not None and store.meta.dba is None
    approximate = space.approximate() if wanted and usable else None
    try:
        if approximate is not None:
            return nearest.approximate_search_batch(approximate, vectors, queries, k)
        return nearest.exact_search(vectors, queries, k)
    except nearest.DamagedVectorError as exc:  # a damaged vectors file: name it, never match by NaN
        raise space.damaged(exc.source if exc.source is not None else vectors, exc.row, exc.what) from None
