"""Near-duplicate groups in an index, for de-duplicating photo libraries.

    every row -> its M nearest other rows (exact block matmul, or Annoy re-scored exactly)
              -> keep links with cosine >= threshold -> union-find -> groups

Each row links to at most ``MAX_LINKS`` neighbours, so memory is O(rows x M) whatever the
threshold; a group still collects any number of members through chains of links. Up to
``index.EXACT_LIMIT`` rows the neighbours are exact (a blocked matmul, memory bounded by the
block); above it they come from the index's Annoy index when it has one.

A cosine threshold finds "looks the same": resized, recompressed, lightly cropped or
re-coloured copies score close to 1. It cannot tell an edited copy from a near-identical
second shot of the same scene (DESIGN.md); the threshold trades one against the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import index as nn
from .errors import VsearchError
from .store import Store

#: Measured (benchmarks/bench_search.py dupes: 60 flowers17 photos, efficientnet-lite0 GeM):
#: copies re-encoded at JPEG quality 40 scored >= 0.965 with their originals, half-size copies
#: >= 0.985, +25% brightness >= 0.903, 6%-border crops >= 0.877 (median 0.937). 0.92 catches 92%
#: of those copies; below 0.90 the count of indexed photos that have a *different* photo that
#: close rises quickly (183 at 0.90, 235 at 0.88, 331 at 0.85, of 1,360; flowers17 itself holds
#: some exact duplicates at 1.0). Two tiles of one Hubble field in sample_images score 0.926.
DEFAULT_THRESHOLD = 0.92
#: Neighbours looked at per image: a group larger than this still forms through chains.
MAX_LINKS = 16


@dataclass(frozen=True)
class DuplicateMember:
    """One image of a near-duplicate group. ``score``: cosine to the group's representative."""

    group: int
    size: int
    path: Path
    score: float
    row: int
    representative: bool


def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        parent[i], i = root, parent[i]
    return root


def find_groups(store: Store, threshold: float = DEFAULT_THRESHOLD, *, links: int = MAX_LINKS,
                mode: str = "auto", progress: Callable[[int, int], None] | None = None) -> list[list[DuplicateMember]]:
    """Groups of two or more images whose embeddings are within ``threshold`` cosine.

    Groups come largest first; in each, the representative (the member with the most links,
    then the lowest row) comes first, and the others by falling similarity to it.
    ``mode``: ``auto`` (exact up to EXACT_LIMIT rows, else Annoy when built), ``exact`` or
    ``approximate``.
    """
    if not -1.0 <= threshold <= 1.0:
        raise VsearchError("--threshold takes a cosine between -1 and 1, e.g. 0.92")
    meta = store.meta
    if meta is None:
        raise VsearchError(f"index at {store.dir} has no vectors yet")
    vectors = store.vectors()  # raw embeddings: duplicates are about the images, not DBA
    count = len(vectors)
    annoy = None
    use_annoy = mode == "approximate" or (mode == "auto" and count > nn.EXACT_LIMIT)
    if use_annoy:
        if store.ann_path() is None or meta.dba is not None:
            if mode == "approximate":
                raise VsearchError(
                    f"--approximate: index at {store.dir} has no Annoy index over its raw vectors; "
                    "run `vsearch build-index` (without --dba)"
                )
        else:
            annoy = store.annoy()
    parent = np.arange(count, dtype=np.int64)
    degree = np.zeros(count, dtype=np.int64)
    step = 8192
    for start in range(0, count, step):
        part = vectors[start:start + step]
        rows, scores = _neighbours_of(vectors, np.arange(start, start + len(part)), links, annoy)
        src, col = np.nonzero(scores >= threshold)
        for i, j in zip(src + start, rows[src, col]):
            if j < 0:
                continue
            degree[i] += 1
            degree[j] += 1
            a, b = _find(parent, int(i)), _find(parent, int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
        if progress:
            progress(min(start + step, count), count)
    roots = np.array([_find(parent, i) for i in range(count)], dtype=np.int64)
    members: dict[int, list[int]] = {}
    for i in np.nonzero(degree)[0]:
        members.setdefault(int(roots[i]), []).append(int(i))
    paths = store.paths_of_rows([r for m in members.values() for r in m])
    root = Path(meta.root)
    groups = []
    for rows_ in sorted(members.values(), key=lambda m: (-len(m), m[0])):
        if len(rows_) < 2:
            continue
        rows_arr = np.asarray(rows_, dtype=np.int64)
        rep = int(rows_arr[np.lexsort((rows_arr, -degree[rows_arr]))[0]])
        sims = np.asarray(vectors[rows_arr]) @ np.asarray(vectors[rep])
        order = sorted(range(len(rows_arr)), key=lambda i: (rows_arr[i] != rep, -sims[i], rows_arr[i]))
        gid = len(groups) + 1
        groups.append([
            DuplicateMember(gid, len(rows_arr), root / paths[int(rows_arr[i])], float(sims[i]), int(rows_arr[i]),
                            int(rows_arr[i]) == rep)
            for i in order
        ])
    return groups


def _neighbours_of(vectors: np.ndarray, rows: np.ndarray, links: int,
                   annoy: nn.AnnoySearcher | None) -> tuple[np.ndarray, np.ndarray]:
    q = np.asarray(vectors[rows[0]:rows[-1] + 1], dtype=np.float32)
    k = min(links + 1, len(vectors))
    if annoy is None:
        found, scores = nn.exact_search(vectors, q, k, block=max(1, (1 << 25) // max(len(q), 1)))
    else:
        found, scores = nn.approximate_search_batch(annoy, vectors, q, k)
    own = found == rows[:, None]
    scores = np.where(own, -np.inf, scores)
    return found, scores
