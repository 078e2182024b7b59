"""Duplicate groups in an index, for de-duplicating photo libraries, in three levels.

    exact:   same content digest (byte-identical files), from the manifest
    near:    (default) every row -> its M nearest other rows with cosine >= a loose shortlist
             -> each pair verified by local features (verify.py) -> star groups around keepers
    similar: the same shortlist at a strict cosine (0.92), no verification: "looks the same"

A cosine threshold cannot tell an edited copy from a second shot of the same scene, so the
near level uses the index only to shortlist pairs and lets :mod:`vsearch.imaging.verify` decide.

Groups are stars, never chains. Rows are taken best first by the keep rule; each row not yet
in a group becomes a keeper, and each of its shortlisted neighbours not yet in a group joins
it when it passes the level's test *against the keeper* (and is not marked "not a duplicate"
of the keeper or of a member already in). So tile A ~ whole ~ tile B cannot put A and B
together unless each is a copy of the group's keeper, and the keeper is always the best copy
by the rule.

Keep rules (``keep``): see :mod:`vsearch.duplicates.keeper`. ``default`` keeps the original
over its derivatives (a RAW, camera EXIF, pixels, no trace of a re-save, JPEG quality, a name
that is no copy's, age, size, path); ``pixels`` is the rule before it.

Paths to one file are not copies of each other: a hard link to the keeper, or a symbolic link
to it, joins its group at level ``same-file`` (reported, never acted on), and a symbolic link
is never kept over a regular file.

Each row links to at most ``MAX_LINKS`` neighbours, so memory is O(rows x M); byte-identical
files are linked whatever their number. Up to :data:`CLUSTERED_FROM` rows the neighbours are
exact (a blocked matmul); above it they come from a clustered search over the vectors themselves
(:mod:`vsearch.vectors.clustered`: exact scores, a pair missed now and then). ``mode="exact"``
always takes the matmul, ``mode="approximate"`` the index's Annoy index.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import stat
import sys
import threading
from collections.abc import Callable, Collection, Iterator, MutableMapping
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from vsearch.duplicates import keeper as keep_rules
from vsearch.duplicates import small
from vsearch.vectors import clustered, nearest
from vsearch.errors import ImageDecodeError, VsearchError
from vsearch.storage.store import Store
from vsearch.vectors.space import SearchSpace

if TYPE_CHECKING:  # verify imports OpenCV and Pillow, provenance Pillow: only grouping pays for them
    from vsearch.imaging.provenance import Provenance
    from vsearch.imaging.verify import Verdict, Verifier

log = logging.getLogger(__name__)

#: Cosine at or above which the similar level groups two images. Measured
#: (benchmarks/bench_search.py dupes: 60 flowers17 photos, efficientnet-lite0 GeM): copies
#: re-encoded at JPEG quality 40 scored >= 0.965 with their originals, half-size copies
#: >= 0.985, +25% brightness >= 0.903, 6%-border crops >= 0.877 (median 0.937). Below 0.90
#: different photos start to join (183 indexed photos have a different photo that close at
#: 0.90, 331 at 0.85, of 1,360). Two tiles of one Hubble field in sample_images score 0.926.
DEFAULT_THRESHOLD = 0.92
#: Shortlist cosine of the near level: loose, because verification decides. A 64x64 photo
#: saved again at 80x80 JPEG q60 scores 0.84-0.91 with its original, 6% crops from 0.877.
SHORTLIST_THRESHOLD = 0.80
#: Share of each image a near copy must share with its keeper (verify.Verifier's
#: ``min_overlap``): 5-10% border crops keep 80-90%, a quarter tile of a picture 25%.
NEAR_MIN_OVERLAP = 0.5
#: Neighbours looked at per image.
MAX_LINKS = 16
#: Above this many rows, ``mode="auto"`` shortlists every row at once through clusters
#: (:mod:`vsearch.vectors.clustered`: exact cosines, 99.7% of the pairs at >= 0.80 found at
#: 100,000 rows in 25 s, where the full matmul took about 8 minutes); up to it, the full matmul
#: (about 20 s at 20,000 x 1280 on 2 cores) misses nothing.
CLUSTERED_FROM = 20_000
#: Threads, or worker processes, that verify pairs at the near level (at most one per core).
MAX_WORKERS = 8
#: From this many candidate rows, the near level groups its parts in worker processes (Linux:
#: forked), below it (and elsewhere) on threads (one per core: a pair of large photos
#: is mostly OpenCV and Pillow work outside the GIL; a pair of small ones mostly Python).
PROCESSES_FROM = 5_000
LEVELS = ("exact", "near", "similar")
KEEP_RULES = keep_rules.KEEP_RULES
#: The level of a member that is its keeper's own file under another path (a hard link, or a
#: symbolic link to it): one file, so nothing to act on.
SAME_FILE = "same-file"
_LEVEL_RANK = {SAME_FILE: -1, **{level: i for i, level in enumerate(LEVELS)}}


@dataclass(frozen=True)
class DuplicateMember:
    """One image of a duplicate group.

    ``score``: cosine to the group's keeper (1.0 for the keeper). ``keeper``: the copy the keep
    rule keeps. ``level``: how the member is tied to the keeper (``same-file``: the keeper's own
    file under another path, a hard or symbolic link; ``exact``: same bytes, ``near``: verified
    copy, ``similar``: cosine only); the keeper carries its group's loosest level. ``pixels``: width x height (None when the header cannot be read), ``bytes``: file
    size, ``format``: Pillow's name (JPEG, PNG, ...), ``mtime``: seconds since the epoch (size
    and mtime as on disk when grouped), ``digest``: content digest (as indexed).
    """

    group: int
    size: int
    path: Path
    score: float
    row: int
    keeper: bool
    level: str
    pixels: int | None
    bytes: int
    format: str | None
    mtime: float
    digest: str | None

    @property
    def is_copy(self) -> bool:
        """Whether this member is a copy to remove: not the keeper, nor the keeper's own file."""
        return not self.keeper and self.level != SAME_FILE


@dataclass(frozen=True)
class DuplicateGroup:
    """One group: the keeper first, then its copies (exact before near, then by falling
    cosine). Iterating a group yields its :class:`DuplicateMember` s."""

    members: tuple[DuplicateMember, ...]

    @property
    def number(self) -> int:
        """The group's number: 1 is the largest group."""
        return self.members[0].group

    @property
    def keeper(self) -> DuplicateMember:
        """The copy to keep, by the keep rule."""
        return self.members[0]

    @property
    def copies(self) -> tuple[DuplicateMember, ...]:
        """Every member but the keeper (``same-file`` members too: see :attr:`DuplicateMember.is_copy`)."""
        return self.members[1:]

    @property
    def level(self) -> str:
        """The group's loosest level: ``exact``, ``near`` or ``similar``."""
        return self.members[0].level

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[DuplicateMember]:
        return iter(self.members)


class _Verifies(Protocol):
    """What grouping asks of a verifier: :class:`vsearch.imaging.verify.Verifier`, or it remembering."""

    def verify(self, a: Path, b: Path) -> Verdict | _Verdict: ...


@dataclass(frozen=True)
class _File:
    row: int
    path: Path
    rel: str
    bytes: int
    mtime: float
    digest: str | None
    pixels: int | None = None
    format: str | None = None
    link: bool = False  # a symbolic link
    inode: tuple[int, int] | None = None  # (device, inode) of the file it leads to
    evidence: Provenance | None = None  # what its header says of its origin (keeper.py)


def find_groups(store: Store, threshold: float | None = None, *, level: str = "near", keep: str = "default",
                not_duplicates: Collection[frozenset[str]] = (), links: int = MAX_LINKS, mode: str = "auto",
                progress: Callable[[int, int], None] | None = None,
                verifier: Verifier | None = None, vectors: np.ndarray | None = None,
                min_overlap: float = NEAR_MIN_OVERLAP, step: Callable[[str, int, int], None] | None = None,
                found: Callable[[DuplicateGroup], None] | None = None,
                verdicts: MutableMapping[tuple[object, ...], bool] | None = None) -> list[DuplicateGroup]:
    """Duplicate groups at ``level`` (exact, near or similar), largest first; see the module notes.

    ``threshold``: the shortlist cosine (near, default 0.80) or the grouping cosine (similar,
    default 0.92); unused at the exact level. ``keep``: the keep rule. ``not_duplicates``:
    pairs of content digests that never share a group. ``mode``: ``auto`` (exact neighbours
    up to :data:`CLUSTERED_FROM` rows, else a clustered search), ``exact`` (the full matmul) or
    ``approximate`` (the index's Annoy index).
    ``progress(done, total)`` follows the rows compared, then the rows grouped. ``verifier``:
    a :class:`vsearch.imaging.verify.Verifier` to use (default: :func:`near_verifier` with
    ``min_overlap``, the share of each image a near copy shares with its keeper).
    ``step(name, done, total)``: as ``progress``, naming the step (``compare``: rows compared
    with their neighbours; ``group``: candidate rows grouped, each after its pairs are verified),
    and called after each connected part of the candidates is grouped; an exception it raises
    stops the search (at the near level, parts are verified on up to one thread per core,
    :data:`MAX_WORKERS`, unless a ``verifier`` is given). ``found(group)``:
    each group as soon as it is settled (a later one never takes its members), before the groups
    are ordered by size; its number is its place in the order found. ``verdicts``: a mapping the
    caller keeps between calls, in which each pair's verification is remembered (keyed by both
    files' path, size and mtime), so a later call with another threshold or keep rule verifies
    only the pairs it has not seen.
    """
    if level not in LEVELS:
        raise VsearchError(f"level= takes one of {', '.join(LEVELS)} (got {level!r})")
    keep_rules.check_rule(keep)
    # Small copies are looked for below the default shortlist only: a threshold given is obeyed.
    small_copies = level == "near" and threshold is None
    if threshold is None:
        threshold = SHORTLIST_THRESHOLD if level == "near" else DEFAULT_THRESHOLD
    if not -1.0 <= threshold <= 1.0:  # also refuses nan
        raise VsearchError(f"threshold= takes a cosine between -1 and 1, e.g. {DEFAULT_THRESHOLD}")
    meta = store.meta
    if meta is None:
        raise VsearchError(f"index at {store.dir} has no vectors yet")
    # the images' own vectors (not DBA), in the search space; or a trained head's projected copy
    vectors = SearchSpace.of(store).vectors() if vectors is None else vectors
    files = _files(store)
    marks = {frozenset(p) for p in not_duplicates}
    adjacency: dict[int, set[int]] = {}
    maybe: dict[int, set[int]] = {}  # pairs that may be a photo and its small copy, not yet looked at
    for same in _by_digest(files).values():
        for i in same:
            adjacency.setdefault(i, set()).update(j for j in same if j != i)
    if level != "exact":
        below: list[tuple[int, int]] | None = [] if small_copies else None
        def compared(done: int, total: int) -> None:
            if progress:
                progress(done, total)
            if step:
                step("compare", done, total)

        try:
            for i, j in _shortlist(store, vectors, threshold, links, mode, compared, below):
                adjacency.setdefault(i, set()).add(j)
                adjacency.setdefault(j, set()).add(i)
        except nearest.DamagedVectorError as exc:  # a damaged vectors file: name it, never group by NaN
            raise SearchSpace.of(store).damaged(exc.source if exc.source is not None else vectors, exc.row,
                                                exc.what) from None
        # A small copy's embedding drifts further (see small.py): each such pair is looked at
        # (two headers read) with its part of the links, below, so the first groups need not wait.
        for i, j in below or ():
            if j not in adjacency.get(i, ()):
                maybe.setdefault(i, set()).add(j)
                maybe.setdefault(j, set()).add(i)
    candidates: dict[int, _File] = {}
    stars: list[list[tuple[int, str, float]]] = []
    parts = sorted(_linked_parts(adjacency, maybe), key=len)  # small parts first: the first groups soonest
    done, total = 0, sum(map(len, parts))
    # A star takes only rows linked to its keeper, so rows of different connected parts of the
    # links never meet: each part is read, ordered and grouped on its own (which gives the
    # groups of one global order: the keep rule's order is a total sort by each file's own
    # facts, ending with its path), so the first groups are settled in a fraction of the time
    # all of them take, and parts are grouped several at once. The groups come back in part order.
    apart = (level == "near" and verifier is None and verdicts is None and total >= PROCESSES_FROM
             and (os.cpu_count() or 1) > 1 and sys.platform == "linux")
    if apart:
        # Verifying small images is mostly Python (the GIL): threads went slower than one
        # (10,000 tiny-imagenet rows: 18.3 s on one thread, 24.6 s on two). Worker processes
        # each group whole parts, sent with what they need. Forked, not spawned: a spawned
        # worker imports the caller's main module again, which breaks a script that calls this
        # at its top level; nothing here has started a thread of its own yet.
        marks_of = _marks_by_digest(marks)
        jobs = (_PartJob(_part_of(part, files, adjacency, maybe, vectors), level, threshold, keep,
                         _marks_among(marks_of, {files[i].digest for i in part}), min_overlap) for part in parts)
        pool: Executor = ProcessPoolExecutor(max_workers=min(os.cpu_count() or 1, MAX_WORKERS),
                                             mp_context=multiprocessing.get_context("fork"))
        results: Iterator[tuple[list[_Star], dict[int, _File]]] = pool.map(_group_part_apart, jobs, chunksize=32)
    else:
        checkers = _Checkers(level, verifier, min_overlap, verdicts)

        def group_part(part: list[int]) -> tuple[list[_Star], dict[int, _File]]:
            whole = _Part(part, {i: files[i] for i in part}, adjacency, maybe, vectors)
            return _group_one_part(whole, level, threshold, keep, marks, checkers.for_this_thread())

        pool = ThreadPoolExecutor(max_workers=checkers.workers)
        results = pool.map(group_part, parts)
    with pool:
        try:
            for part, (part_stars, facts) in zip(parts, results):
                candidates.update(facts)
                for star in part_stars:
                    stars.append(star)
                    if found:
                        found(_group_of(star, len(stars), candidates))
                done += len(part)
                _report(progress, step, done, total)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # a step that stops the search: no more parts
            raise
    stars.sort(key=lambda s: (-len(s), candidates[s[0][0]].rel))
    return [_group_of(star, gid, candidates) for gid, star in enumerate(stars, 1)]


def _report(progress: Callable[[int, int], None] | None, step: Callable[[str, int, int], None] | None,
            done: int, total: int) -> None:
    """Rows grouped so far (called after each part): to ``progress`` and ``step``."""
    if progress:
        progress(done, total)
    if step:
        step("group", done, total)


_Star = list[tuple[int, str, float]]


class _Rows:
    """Some rows of the vectors, indexed by their row numbers (what a part sends another process)."""

    def __init__(self, rows: list[int], vectors: np.ndarray) -> None:
        self.place = {r: n for n, r in enumerate(rows)}
        self.data = np.asarray(vectors[rows], dtype=np.float32)

    def __getitem__(self, rows: int | list[int]) -> np.ndarray:
        if isinstance(rows, list):
            return self.data[[self.place[r] for r in rows]]
        return self.data[self.place[rows]]


@dataclass
class _Part:
    """One connected part of the candidates and what grouping it reads: its rows' files, the
    links (``adjacency``, ``maybe``: row -> rows; a part adds the small-copy links it finds), and
    the vectors."""

    rows: list[int]
    files: dict[int, _File]
    adjacency: dict[int, set[int]]
    maybe: dict[int, set[int]]
    vectors: np.ndarray | _Rows


@dataclass
class _PartJob:
    """A part to group in a worker process, with the level's settings and the marks among its files."""

    part: _Part
    level: str
    threshold: float
    keep: str
    marks: set[frozenset[str]]
    min_overlap: float


def _part_of(rows: list[int], files: list[_File], adjacency: dict[int, set[int]], maybe: dict[int, set[int]],
             vectors: np.ndarray) -> _Part:
    """The part of ``rows`` with only its own links and vectors (to send to another process)."""
    return _Part(rows, {i: files[i] for i in rows}, {i: set(adjacency[i]) for i in rows if i in adjacency},
                 {i: maybe[i] for i in rows if i in maybe}, _Rows(rows, vectors))


def _marks_by_digest(marks: set[frozenset[str]]) -> dict[str, list[frozenset[str]]]:
    by: dict[str, list[frozenset[str]]] = {}
    for mark in marks:
        for digest in mark:
            by.setdefault(digest, []).append(mark)
    return by


def _marks_among(by: dict[str, list[frozenset[str]]], digests: set[str | None]) -> set[frozenset[str]]:
    """The marks both of whose files are among ``digests``."""
    return {m for d in digests if d is not None for m in by.get(d, ()) if m <= digests}


#: The verifier of a worker process (:func:`_group_part_apart`), made at its first part.
_WORKER_VERIFIERS: dict[float, Verifier] = {}


def _group_part_apart(job: _PartJob) -> tuple[list[_Star], dict[int, _File]]:
    """:func:`_group_one_part` in a worker process (it owns its verifier)."""
    verifier = _WORKER_VERIFIERS.get(job.min_overlap)
    if verifier is None:
        verifier = _WORKER_VERIFIERS[job.min_overlap] = near_verifier(job.min_overlap)
    return _group_one_part(job.part, job.level, job.threshold, job.keep, job.marks, verifier)


def _group_one_part(part: _Part, level: str, threshold: float, keep: str, marks: set[frozenset[str]],
                    checker: _Verifies | None) -> tuple[list[_Star], dict[int, _File]]:
    """The stars of one part, and the files read for them (size, mtime and header as on disk now)."""
    adjacency, files = part.adjacency, part.files
    for i in part.rows:
        for j in sorted(part.maybe.get(i, ())):
            if i < j and small.small_copy_pair(files[i].path, files[j].path):
                adjacency.setdefault(i, set()).add(j)
                adjacency.setdefault(j, set()).add(i)
    linked = [i for i in part.rows if i in adjacency]
    facts = {i: _with_header(files[i]) for i in linked}
    vectors = part.vectors
    taken: set[int] = set()
    out = []
    for k in keep_rules.order(facts, keep, adjacency):
        if k not in taken:
            taken.add(k)
            star = _star(k, adjacency[k] - taken, facts, vectors, level, threshold, marks, checker)
            if level == "near" and len(star) > 1:
                star = _widened(star, adjacency, taken, facts, vectors, threshold, marks, checker)
            if len(star) > 1:
                taken.update(i for i, _, _ in star)
                out.append(star)
    return out, facts


def _linked_parts(*links: dict[int, set[int]]) -> Iterator[list[int]]:
    """The connected parts of the rows the mappings ``links`` tie together (row -> rows)."""
    seen: set[int] = set()
    for start in (i for tied in links for i in tied):
        if start in seen:
            continue
        seen.add(start)
        part, todo = [], [start]
        while todo:
            i = todo.pop()
            part.append(i)
            for j in (j for tied in links for j in tied.get(i, ())):
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        yield sorted(part)


def _group_of(star: list[tuple[int, str, float]], gid: int, files: dict[int, _File]) -> DuplicateGroup:
    """Group ``gid`` of keeper ``star[0]`` and its members; the keeper carries the loosest level."""
    loosest = max((lv for _, lv, _ in star[1:]), key=_LEVEL_RANK.__getitem__)
    return DuplicateGroup(tuple(
        _member(files[i], gid, len(star), score, n == 0, loosest if n == 0 else lv)
        for n, (i, lv, score) in enumerate(star)
    ))


class _Checkers:
    """The verifier of each grouping thread: a verifier keeps OpenCV state and a keypoint cache
    that one thread at a time may use, so each thread makes its own (:func:`near_verifier`). A
    verifier the caller gave is used as it is, on one thread."""

    def __init__(self, level: str, given: Verifier | None, min_overlap: float,
                 verdicts: MutableMapping[tuple[object, ...], bool] | None) -> None:
        self.level, self.given, self.min_overlap, self.verdicts = level, given, min_overlap, verdicts
        self.local = threading.local()
        near = level == "near"
        self.workers = min(os.cpu_count() or 1, MAX_WORKERS) if near and given is None else 1

    def for_this_thread(self) -> _Verifies | None:
        checker: _Verifies | None = getattr(self.local, "checker", None)
        if checker is None and self.level == "near":
            verifier = self.given if self.given is not None else near_verifier(self.min_overlap)
            checker = verifier if self.verdicts is None else _Remembering(verifier, self.verdicts, self.min_overlap)
            self.local.checker = checker
        return checker


class _Remembering:
    """A verifier that remembers each pair's verdict in the caller's ``verdicts``: verifying a pair
    (about 30 ms) is what a near search spends its time on, and another threshold or keep rule
    asks again about most of the same pairs. The key holds both files' path, size and mtime, so
    a file changed since is verified again."""

    def __init__(self, verifier: Verifier, verdicts: MutableMapping[tuple[object, ...], bool],
                 min_overlap: float) -> None:
        self.verifier, self.verdicts, self.min_overlap = verifier, verdicts, min_overlap

    def verify(self, a: Path, b: Path) -> _Verdict | Verdict:
        try:
            sa, sb = os.stat(a), os.stat(b)
        except OSError:
            return self.verifier.verify(a, b)  # gone: the verifier says why
        key = (self.min_overlap, str(a), sa.st_size, sa.st_mtime_ns, str(b), sb.st_size, sb.st_mtime_ns)
        same = self.verdicts.get(key)
        if same is None:
            same = self.verdicts[key] = self.verifier.verify(a, b).same
        return _Verdict(same)


@dataclass(frozen=True)
class _Verdict:
    same: bool


def near_verifier(min_overlap: float = NEAR_MIN_OVERLAP) -> Verifier:
    """The verifier of the near level: a copy shares at least ``min_overlap`` of each image with
    its keeper, and its aligned pixels agree (:data:`vsearch.imaging.verify.MIN_AGREEMENT`: the same
    picture, not another moment of the scene). Raises :class:`VsearchError` for a ``min_overlap``
    outside 0-1."""
    from vsearch.imaging.verify import MIN_AGREEMENT, Verifier  # OpenCV and Pillow: only the near level pays for them

    return Verifier(min_overlap=min_overlap, min_agreement=MIN_AGREEMENT, pixels_first=True)


def _star(k: int, neighbours: set[int], files: dict[int, _File], vectors: np.ndarray | _Rows, level: str,
          threshold: float, marks: set[frozenset[str]], verifier: _Verifies | None) -> list[tuple[int, str, float]]:
    """Keeper ``k`` and the neighbours that pass the level's test against it: (row, level, cosine)."""
    keeper = files[k]
    if not neighbours:
        return [(k, level, 1.0)]
    rows = sorted(neighbours)
    sims = np.asarray(vectors[rows], dtype=np.float32) @ np.asarray(vectors[k], dtype=np.float32)
    ranked = sorted(zip(rows, sims.tolist()), key=lambda t: (-t[1], t[0]))  # likeliest copies first
    star: list[tuple[int, str, float]] = [(k, level, 1.0)]
    for j, sim in ranked:
        other = files[j]
        if any(_marked(marks, files[m].digest, other.digest) for m, _, _ in star):
            continue
        if other.inode is not None and other.inode == keeper.inode:
            star.append((j, SAME_FILE, sim))  # one file under two paths: nothing to free
        elif other.digest is not None and other.digest == keeper.digest:
            star.append((j, "exact", sim))
        elif level == "similar" and sim >= threshold:
            star.append((j, "similar", sim))
        elif level == "near" and verifier is not None and _verified(verifier, keeper.path, other.path):
            star.append((j, "near", sim))
    star[1:] = sorted(star[1:], key=lambda t: (_LEVEL_RANK[t[1]], -t[2], t[0]))
    return star


def _widened(star: list[tuple[int, str, float]], adjacency: dict[int, set[int]], taken: set[int],
             files: dict[int, _File], vectors: np.ndarray | _Rows, threshold: float, marks: set[frozenset[str]],
             verifier: _Verifies | None) -> list[tuple[int, str, float]]:
    """``star`` with its members' own neighbours that pass the near test against its keeper too:
    a copy of a copy the shortlist did not tie to the keeper (a small copy's embedding drifts
    further from a large original than from another small copy). Still a star: each one is
    verified against the keeper, never against the member that brought it."""
    k = star[0][0]
    inside = {i for i, _, _ in star}
    further = set().union(*(adjacency[i] for i in inside if i != k)) - taken - inside
    if not further:
        return star
    more = [(j, lv, sim) for j, lv, sim in _star(k, further, files, vectors, "near", threshold, marks, verifier)[1:]
            if not any(_marked(marks, files[m].digest, files[j].digest) for m in inside)]
    return [star[0], *sorted(star[1:] + more, key=lambda t: (_LEVEL_RANK[t[1]], -t[2], t[0]))]


def _marked(marks: set[frozenset[str]], a: str | None, b: str | None) -> bool:
    return bool(marks) and a is not None and b is not None and frozenset((a, b)) in marks


def _verified(verifier: _Verifies, a: Path, b: Path) -> bool:
    try:
        return verifier.verify(a, b).same
    except (ImageDecodeError, OSError) as e:
        # A file gone or changed since indexing is no copy anyone should act on.
        log.info("not verified %s ~ %s: %s", a, b, e)
        return False


def _shortlist(store: Store, vectors: np.ndarray, threshold: float, links: int, mode: str,
               progress: Callable[[int, int], None] | None,
               nearest_below: list[tuple[int, int]] | None = None) -> Iterator[tuple[int, int]]:
    """(i, j) for each row i and each of its ``links`` nearest rows j with cosine >= threshold.
    ``nearest_below`` gets (i, j) for each row i whose nearest row j scores below the threshold
    but at least ``small.SMALL_SHORTLIST`` (a small copy's reach)."""
    meta = store.meta
    assert meta is not None
    count = len(vectors)
    annoy = None
    if mode == "approximate":
        if SearchSpace.of(store).approximate_kind() is None or meta.dba is not None:  # Annoy or IVF-PQ
            raise VsearchError(
                f"mode='approximate': index at {store.dir} has no Annoy index over its raw vectors; "
                "call `build_index` (without dba=)"
            )
        annoy = SearchSpace.of(store).approximate()
    table = None
    if mode == "auto" and count > CLUSTERED_FROM:
        # every row at once, through clusters (clustered.py): minutes less than a full matmul at 100k
        floor = threshold if nearest_below is None else min(threshold, small.SMALL_SHORTLIST)
        lists_done = (lambda done, total: progress(count * done // total, count)) if progress else None
        # a row with nothing at the shortlist looks further when small copies are looked for
        table = clustered.close_neighbours(vectors, links, floor, progress=lists_done,
                                           widen_below=None if nearest_below is None else threshold)
    step = 8192
    for start in range(0, count, step):
        stop = min(start + step, count)
        if table is None:
            rows, scores = _neighbours_of(vectors, np.arange(start, stop), links, annoy)
        else:
            rows, scores = table[0][start:stop], table[1][start:stop]
        src, col = np.nonzero(scores >= threshold)
        for i, j in zip(src + start, rows[src, col]):
            if j >= 0:
                yield int(i), int(j)
        if nearest_below is not None and scores.shape[1]:
            first = np.argmax(scores, axis=1)
            best = scores[np.arange(len(scores)), first]
            for r in np.flatnonzero((best < threshold) & (best >= small.SMALL_SHORTLIST)):
                if rows[r, first[r]] >= 0:
                    nearest_below.append((int(r) + start, int(rows[r, first[r]])))
        if progress and table is None:
            progress(stop, count)


def _neighbours_of(vectors: np.ndarray, rows: np.ndarray, links: int,
                   annoy: nearest.ApproximateSearcher | None) -> tuple[np.ndarray, np.ndarray]:
    q = nearest.stored_rows(vectors, int(rows[0]), int(rows[-1]) + 1)
    k = min(links + 1, len(vectors))
    if annoy is None:
        found, scores = nearest.exact_search(vectors, q, k, block=max(1, (1 << 25) // max(len(q), 1)))
    else:
        found, scores = nearest.approximate_search_batch(annoy, vectors, q, k)
    own = found == rows[:, None]
    scores = np.where(own, -np.inf, scores)
    return found, scores


# --- files: what the manifest says, and the image header -------------------------------------


def _files(store: Store) -> list[_File]:
    """Each committed row's file, in row order."""
    meta = store.meta
    assert meta is not None
    root = Path(meta.root)
    out = []
    paths = store.paths_by_row()
    entries = store.entries_of_rows(range(len(paths)))  # in batches: one lookup a row took minutes at 100k
    for row, rel in enumerate(paths):
        entry = entries.get(row)
        size, mtime_ns, digest = (entry.size, entry.mtime_ns, entry.digest) if entry else (0, 0, None)
        out.append(_File(row, root / rel, rel, size, mtime_ns / 1e9, digest))
    return out


def _by_digest(files: list[_File]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for f in files:
        if f.digest is not None:
            found.setdefault(f.digest, []).append(f.row)
    return {d: rows for d, rows in found.items() if len(rows) > 1}


def _with_header(f: _File) -> _File:
    """``f`` with its size and mtime as on disk now (a keep rule decides on what is there, and
    touching a file does not re-index it), whether it is a symbolic link and which file it
    leads to, and what its header says: pixel count, format, and its origin's evidence."""
    from vsearch.imaging.provenance import read_provenance  # Pillow: only rows that have a duplicate candidate pay for it

    try:
        link = os.lstat(f.path)
        st = os.stat(f.path)
        f = replace(f, bytes=st.st_size, mtime=st.st_mtime, link=stat.S_ISLNK(link.st_mode),
                    inode=(st.st_dev, st.st_ino))
        if not stat.S_ISREG(st.st_mode):  # never open a FIFO (it would block)
            return f
        evidence = read_provenance(f.path)
        return replace(f, pixels=evidence.pixels, format=evidence.format, evidence=evidence)
    except Exception as e:  # noqa: BLE001 - gone, unreadable: sorted as 0 pixels, still grouped
        log.info("no header for %s: %s", f.path, e)
        return f


def _member(f: _File, group: int, size: int, score: float, keeper: bool, level: str) -> DuplicateMember:
    return DuplicateMember(group, size, f.path, float(score), f.row, keeper, level, f.pixels, f.bytes,
                           f.format, f.mtime, f.digest)
