"""Scoring: labelled queries run against one index, ranking metrics out.

Labels come from labels.py (label files, augmented copies); several systems side by side, with
a paired bootstrap of their difference, from compare.py. Each query's own entry is left out of
its results.

What approximate search costs: ``ann_recall@K`` = |Annoy top K ∩ exact top K| / K for the same
query vectors (the query's own entry left out of both), averaged over queries; it is None
where an index has no Annoy index.

How concentrated the results are: ``folder_share@K`` is the share of a query's top K that
comes from its most common folder, averaged over queries (1/K at best, 1.0 when one album
fills the top K); ``day_share@K`` the same for the most common capture day (EXIF), reported
when any result has a date. ``max_per_folder`` / ``max_per_day`` score the rankings those
re-ranking caps give (``query --max-per-folder``), so what they cost in recall can be measured.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vsearch.vectors import nearest
from vsearch.evaluation import metrics
from vsearch.evaluation.metrics import QueryResult
from vsearch.retrieval import rerank
from vsearch.errors import VsearchError
from vsearch.evaluation.labels import LabelledQuery
from vsearch.models.loading import l2_normalise
from vsearch.retrieval.search import MAX_K, POOL_FACTOR, Refine, Searcher, SearchMode

#: Depth of the ranking that ``mrr`` looks into: a first relevant item below it scores 0.
MRR_DEPTH = 100
#: How many results of each query are kept by path (per-query CSV, the report's thumbnails).
KEEP_RETURNED = 10
#: ann_recall@K is measured on at most this many queries (a seeded sample beyond it).
ANN_RECALL_SAMPLE = 1000

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class QueryRecord:
    """One query as scored on one index, by path: what was expected and what came back."""

    query: Path
    kind: str | None
    expected: tuple[Path, ...]  # relevant images, highest gain first
    returned: tuple[Path, ...]  # the first KEEP_RETURNED results, best first
    relevant_ranks: tuple[int, ...]  # 1-based ranks of the relevant images found within the depth
    depth: int  # how deep the ranking was looked at
    scores: dict[str, float]  # metrics.score_query of this query


@dataclass
class EvalReport:
    """Aggregate metrics, per-query results, and how long it took.

    ``ann_recall`` maps K to mean ``ann_recall@K``; None when the index has no Annoy index
    (or it was not asked for). ``by_kind`` holds recall@K and mrr per augmentation kind.
    """

    metrics: dict[str, float]
    per_query: list[QueryResult] = field(default_factory=list)
    elapsed_s: float = 0.0
    embedded_queries: int = 0
    records: list[QueryRecord] = field(default_factory=list)
    ann_recall: dict[int, float] | None = None
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    label: str = ""
    index_dir: Path | None = None
    model: str = ""
    mode: str = "auto"
    count: int = 0
    annoy_trees: int | None = None


def query_vectors(searcher: Searcher, queries: Sequence[Path], known: dict[Path, int],
                  batch_size: int = 16, on_embed: Callable[[int], None] | None = None,
                  cache: dict[Path, np.ndarray] | None = None,
                  texts: dict[int, str] | None = None) -> tuple[np.ndarray, int]:
    """Vectors for all queries: stored rows where indexed, the rest embedded in batches.

    ``texts``: queries (by position) that are text, embedded by the model's text tower.

    ``cache``: vectors already embedded by the same model (read, and filled with new ones), so
    indexes that share a model embed an out-of-index query once (it holds the model's own
    vectors; each index maps them into its search space). Returns the vectors and how many
    queries were embedded now.
    """
    out = np.zeros((len(queries), searcher.vectors.shape[1]), dtype=np.float32)  # search space, or the head's
    todo = []
    for i, q in enumerate(queries):
        if texts and i in texts:
            out[i] = searcher.encoder.text_vector(texts[i]).vector
        elif q in known:
            out[i] = searcher.vectors[known[q]]
        elif cache is not None and q in cache:
            out[i] = searcher.encoder.to_query_space(cache[q])
        else:
            todo.append(i)
    for start in range(0, len(todo), batch_size):
        idx = todo[start:start + batch_size]
        raw = searcher.encoder.embed_images([queries[i] for i in idx], raw=True)
        out[idx] = searcher.encoder.to_query_space(raw)
        if cache is not None:
            cache.update((queries[i], v) for i, v in zip(idx, raw))
        if on_embed:
            on_embed(len(idx))
    return out, len(todo)


def check_ks(ks: Sequence[int]) -> None:
    """Refuse cut-offs that are not positive integers."""
    if not ks or any(isinstance(k, bool) or k < 1 for k in ks):
        raise VsearchError("ks= takes positive integers, e.g. ks=(1, 5, 10)")
    if max(ks) > MAX_K:
        raise VsearchError(f"ks= takes at most {MAX_K} (got {max(ks)})")


def evaluate(searcher: Searcher, labels: Sequence[LabelledQuery], ks: Sequence[int] = (1, 5, 10),
             mode: SearchMode = "auto", *, ann_recall: bool = False, label: str = "",
             progress: ProgressFn | None = None, cache: dict[Path, np.ndarray] | None = None,
             expand: int = 0, max_per_folder: int | None = None, max_per_day: int | None = None,
             copy_first: bool = True) -> EvalReport:
    """Run every labelled query against the index and score the rankings.

    ``expand``: average query expansion with the top ``expand`` results (0 = off), as
    ``vsearch query --qe`` does; a query's own entry never counts among them.

    ``ann_recall``: also measure Annoy against exact search on the same query vectors (when the
    index has an Annoy index). ``progress(done, total)`` follows the queries being embedded.
    ``cache``: see :func:`query_vectors`; only share one between indexes of the same model.
    ``max_per_folder``, ``max_per_day``: rank as ``vsearch query`` does with those caps.
    ``copy_first``: keep each query's nearest neighbour by the unaltered vectors first when
    query expansion or DBA change the ranking, as a search does (:class:`Refine`).
    """
    started = time.perf_counter()
    check_ks(ks)
    caps = searcher.caps(Refine(max_per_folder=max_per_folder, max_per_day=max_per_day))
    if not labels:
        raise VsearchError("no labelled queries to evaluate")
    rows = _labelled_rows(searcher, labels)
    queries = [q.query for q in labels]
    texts = {i: q.text for i, q in enumerate(labels) if q.text is not None}
    to_embed = sum(1 for i, q in enumerate(queries)
                   if i not in texts and q not in rows and (cache is None or q not in cache))
    done = [0]

    def on_embed(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], to_embed)

    vectors, embedded = query_vectors(searcher, queries, rows, on_embed=on_embed, cache=cache, texts=texts)
    own_rows = [rows.get(q.query) for q in labels]
    first = (copy_pins(searcher, vectors, own_rows, mode)
             if copy_first and searcher.alters_ranking(expand) else None)
    if expand:
        vectors = expanded(searcher, vectors, own_rows, expand, mode)
    depth = max(max(ks), MRR_DEPTH)
    rankings: Iterable[Sequence[int] | np.ndarray] = (
        _capped_rankings(searcher, vectors, own_rows, depth, mode, caps, first) if caps
        else _rankings(searcher, vectors, depth + 1, mode, first))
    results, records, shares = _score_rankings(searcher, labels, rows, rankings, own_rows, ks, depth)
    summary = metrics.summarize(results, ks)
    summary.update(_mean_shares(shares))
    ann = None
    if ann_recall and searcher.approximate_kind is not None and not searcher.adapted:  # Annoy or IVF-PQ: search space
        ann = ann_recall_at(searcher, vectors, [rows.get(q) for q in queries], ks)
    meta = searcher.meta
    return EvalReport(
        summary, results, time.perf_counter() - started, embedded, records=records, ann_recall=ann,
        by_kind=_by_kind(records, ks), label=label or searcher.store.dir.name, index_dir=searcher.store.dir,
        model=meta.model.name, mode=mode, count=meta.count, annoy_trees=meta.ann.trees if meta.ann else None,
    )


def _labelled_rows(searcher: Searcher, labels: Sequence[LabelledQuery]) -> dict[Path, int]:
    """The index row of every image the labels name (queries, expected images, their aliases);
    every expected image must be in the index."""
    wanted = {p for q in labels for p in q.gains}
    aliases = {p for q in labels for p in q.same_as}
    rows = searcher.rows_of(sorted(wanted | aliases | {q.query for q in labels}))
    missing = sorted(p for p in wanted if p not in rows)
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        root = searcher.store.root
        if root is not None and all(p.is_relative_to(root) for p in missing):  # a build of the folder adds them
            remedy = f"index their folder first (`build_index({root})`)"
        else:  # an index covers one folder: theirs needs an index of its own
            folder = os.path.commonpath([p.parent for p in missing])
            remedy = (f"they are outside {root}, the folder this index covers; index their folder first "
                      f"(`build_index({folder}, index_dir=NEW_DIR)`)")
        raise VsearchError(
            f"{len(missing)} labelled image(s) are not in the index at {searcher.store.dir}: {shown}{more}; {remedy}")
    return rows


def _score_rankings(searcher: Searcher, labels: Sequence[LabelledQuery], rows: dict[Path, int],
                    rankings: Iterable[Sequence[int] | np.ndarray], own_rows: Sequence[int | None],
                    ks: Sequence[int], depth: int) -> tuple[list[QueryResult], list[QueryRecord], list[dict[str, float]]]:
    """Each query's ranking scored against its labels (its own row left out), with what the
    report shows of it and how concentrated its top K are."""
    results: list[QueryResult] = []
    records: list[QueryRecord] = []
    shares: list[dict[str, float]] = []
    for q, found, own in zip(labels, rankings, own_rows):
        ranked = tuple(int(r) for r in found if own is None or int(r) != own)[:depth]
        shares.append(concentration(searcher, ranked, ks))
        if q.same_as:
            alias = {rows[a]: rows[p] for a, p in q.same_as.items() if a in rows and p in rows}
            ranked = tuple(alias.get(r, r) for r in ranked)
        gains: dict[Hashable, float] = {rows[p]: g for p, g in q.gains.items() if g > 0}
        result = metrics.QueryResult(query=str(q.query), ranked=ranked, gains=gains)
        results.append(result)
        expected = tuple(p for p, g in sorted(q.gains.items(), key=lambda pg: -pg[1]) if g > 0)
        records.append(QueryRecord(
            query=q.query, kind=q.kind, expected=expected,
            returned=tuple(searcher.path(r) for r in ranked[:KEEP_RETURNED]),
            relevant_ranks=_first_ranks(ranked, gains),
            depth=depth, scores={**metrics.score_query(result, ks), **shares[-1]},
        ))
    return results, records, shares


def top_share(keys: Sequence[Hashable | None], k: int) -> float:
    """The share of the first ``k`` results that hold the most common key: 1.0 when they all
    share one, 1/k when all differ. A None key (no date known) counts in the denominator but
    never as a key; no results, or no key at all, scores 0.0."""
    top = keys[:k]
    counts = Counter(key for key in top if key is not None)
    return max(counts.values()) / len(top) if counts else 0.0


def concentration(searcher: Searcher, ranked: Sequence[int], ks: Sequence[int]) -> dict[str, float]:
    """``folder_share@K`` for each K, and ``day_share@K`` when any of the top results has a
    capture date (read from the file headers, once per file per process)."""
    top = ranked[:max(ks)]
    folders = [searcher.folder(r) for r in top]
    days = [searcher.capture_day(r) for r in top]
    out = {f"folder_share@{k}": top_share(folders, k) for k in ks}
    if any(d is not None for d in days):
        out.update({f"day_share@{k}": top_share(days, k) for k in ks})
    return out


def _mean_shares(shares: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each share over queries; ``day_share@K`` only when some query's results have
    dates (a query whose results have none counts as 0 for it)."""
    keys = list(dict.fromkeys(key for s in shares for key in s))
    keys.sort(key=lambda key: not key.startswith("folder_"))  # folders first, each in K order
    return {key: float(np.mean([s.get(key, 0.0) for s in shares])) for key in keys}


def _capped_rankings(searcher: Searcher, vectors: np.ndarray, own_rows: Sequence[int | None], depth: int,
                     mode: SearchMode, caps: Sequence[rerank.Cap[tuple[int, float]]],
                     first: Sequence[int | None] | None = None) -> list[tuple[int, ...]]:
    """Each query's top ``depth`` rows under the caps (its own row left out first, so it never
    counts against its folder), from a candidate pool that grows as ``vsearch query``'s does:
    the queries still short of ``depth`` are searched again, together, with a larger pool."""
    count = searcher.meta.count
    out: list[tuple[int, ...]] = [() for _ in own_rows]
    todo = list(range(len(own_rows)))
    size = min(count, (depth + 1) * POOL_FACTOR)
    while todo:
        short = []
        lead = [first[i] for i in todo] if first is not None else None
        for i, found in zip(todo, _rankings(searcher, vectors[todo], size, mode, lead)):
            own = own_rows[i]
            kept = rerank.cap_per_key([(int(r), 0.0) for r in found if int(r) != own], caps, depth)
            out[i] = tuple(r for r, _ in kept)
            if len(kept) < depth and size < count:
                short.append(i)
        todo, size = short, min(count, size * POOL_FACTOR)
    return out


def _first_ranks(ranked: Sequence[int], relevant: Mapping[Hashable, float]) -> tuple[int, ...]:
    """1-based ranks of relevant ids, each at its first place only (as the metrics count them)."""
    seen: set[int] = set()
    out = []
    for i, r in enumerate(ranked, start=1):
        if r in relevant and r not in seen:
            seen.add(r)
            out.append(i)
    return tuple(out)


def expanded(searcher: Searcher, vectors: np.ndarray, own_rows: Sequence[int | None], n: int,
             mode: SearchMode, block: int = 256) -> np.ndarray:
    """Each query vector expanded as :meth:`Searcher.expand` does (its own row never among the
    top ``n``); exact searches run a block of queries at once (tiny-imagenet's 10,100 queries:
    one pass over the vectors per block instead of one per query)."""
    if searcher.use_approximate(mode):
        return np.stack([searcher.expand(v, n, mode, exclude_rows=[own] if own is not None else [])
                         for v, own in zip(vectors, own_rows)])
    out = np.empty_like(vectors)
    for start in range(0, len(vectors), block):
        part = l2_normalise(vectors[start:start + block])
        found, _ = nearest.exact_search(searcher.search_vectors, part, min(n + 1, searcher.meta.count))
        for i, (rows, own) in enumerate(zip(found, own_rows[start:start + block])):
            top = [int(r) for r in rows if int(r) != own][:n]
            out[start + i] = rerank.average_query_expansion(part[i], np.asarray(searcher.search_vectors[np.sort(top)]))
    return out


def copy_pins(searcher: Searcher, vectors: np.ndarray, own_rows: Sequence[int | None], mode: SearchMode,
              block: int = 256) -> list[int | None]:
    """Each query's nearest neighbour by the unaltered vectors, its own row left out: what a
    search keeps first (:meth:`Searcher.copy_rows`); exact searches run a block of queries at once."""
    if searcher.use_approximate(mode):
        return [next(iter(searcher.copy_rows(v, mode, [own] if own is not None else [])), None)
                for v, own in zip(vectors, own_rows)]
    out: list[int | None] = []
    for start in range(0, len(vectors), block):
        found, _ = nearest.exact_search(searcher.vectors, vectors[start:start + block], min(2, searcher.meta.count))
        for rows, own in zip(found, own_rows[start:start + block]):
            out.append(next((int(r) for r in rows if int(r) != own), None))
    return out


def _rankings(searcher: Searcher, vectors: np.ndarray, k: int, mode: SearchMode,
              first: Sequence[int | None] | None = None, block: int = 256) -> Iterable[Sequence[int] | np.ndarray]:
    """Top-k rows for each query vector, as ``searcher.neighbours`` ranks them in ``mode``;
    with ``first``, each query's row there leads its ranking (:func:`copy_pins`).

    Exact search runs on blocks of queries at once: one pass over the vectors serves a whole
    block. Measured on flowers17 (1,360 queries over 1,360 Lite0 vectors, 2 busy cores, median
    of 3): 4.0 s one query at a time through ``Searcher.neighbours``, 0.23 s in blocks (~18x).
    """
    if first is None:
        yield from _found(searcher, vectors, k, mode, block)
        return
    for found, lead in zip(_found(searcher, vectors, k, mode, block), first):
        yield found if lead is None else rerank.keep_first([int(r) for r in found], [lead])


def _found(searcher: Searcher, vectors: np.ndarray, k: int, mode: SearchMode, block: int) -> Iterable[np.ndarray]:
    if searcher.use_approximate(mode):
        for vec in vectors:
            yield searcher.neighbours(vec, k, mode)[0]
        return
    for start in range(0, len(vectors), block):
        # search_vectors: what neighbours() ranks against (the DBA copy when the index has one)
        yield from nearest.exact_search(searcher.search_vectors, vectors[start:start + block], k)[0]


def ann_recall_at(searcher: Searcher, vectors: np.ndarray, own_rows: Sequence[int | None],
                  ks: Sequence[int], *, sample: int = ANN_RECALL_SAMPLE, seed: int = 0) -> dict[int, float]:
    """Mean over queries of |Annoy top K ∩ exact top K| / K, for each K in ``ks``.

    Each query's own row (when it is indexed) is left out of both lists, as in the evaluation.
    An Annoy result whose exact score ties the K-th exact score counts as found: duplicate
    images are interchangeable, and which twin an exact sort puts first is arbitrary. More
    than ``sample`` queries are estimated on a seeded sample of that many (exact search over a
    large index costs a full pass per query).
    """
    check_ks(ks)
    picked = np.arange(len(vectors))
    if len(picked) > sample:
        picked = np.sort(np.random.default_rng(seed).choice(len(picked), size=sample, replace=False))
    if len(picked) == 0:
        return dict.fromkeys(ks, 0.0)
    # One blocked matmul for every picked query: far cheaper than an exact search per query.
    all_rows, all_scores = nearest.exact_search(searcher.search_vectors, vectors[picked], max(ks) + 1)
    totals = dict.fromkeys(ks, 0.0)
    for vec, own, rows, scores in zip(vectors[picked], (own_rows[int(i)] for i in picked), all_rows, all_scores):
        extra = int(own is not None)
        keep = [i for i, r in enumerate(rows) if int(r) != own]
        exact_rows = [int(rows[i]) for i in keep]
        exact_scores = [float(scores[i]) for i in keep]
        for k in ks:
            want = exact_rows[:k]
            if not want:
                totals[k] += 1.0
                continue
            floor = exact_scores[len(want) - 1] - 1e-6
            a_rows, a_scores = searcher.neighbours(vec, k + extra, "approximate")
            got = [(int(r), float(s)) for r, s in zip(a_rows, a_scores) if int(r) != own][:k]
            wanted = set(want)
            found = sum(1 for r, s in got if r in wanted or s >= floor)
            totals[k] += min(found, len(want)) / len(want)
    return {k: v / len(picked) for k, v in totals.items()}


def _by_kind(records: Sequence[QueryRecord], ks: Sequence[int]) -> dict[str, dict[str, float]]:
    groups: OrderedDict[str, list[QueryRecord]] = OrderedDict()
    for r in records:
        if r.kind is not None:
            groups.setdefault(r.kind, []).append(r)
    keys = [f"recall@{k}" for k in ks] + ["mrr"]
    return {kind: {**{key: float(np.mean([r.scores[key] for r in rs])) for key in keys}, "num_queries": len(rs)}
            for kind, rs in groups.items()}
