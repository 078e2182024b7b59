"""Labels in, queries run, metrics out.

Two label files, both CSV; paths are absolute or relative to the folder that holds the CSV:

* pairs:  ``query,positive[,relevance]``: each row adds one relevant image (gain = relevance,
  default 1) to that query. A query may be outside the index (embedded on the fly).
  An optional ``augmentation`` column names the edit that made the query (``make-pairs`` writes
  it), and the metrics are then also broken down by it.
* groups: ``path,group`` (extra columns ignored): every image is a query whose relevant images
  are the other members of its group. Single-member groups are not queries (nothing to find).
* augmented copies (no file): :func:`augment_labels` edits N indexed images (see augment.py);
  each copy is a query whose one relevant image is its original, or an indexed pixel duplicate
  of it (collections hold duplicates: flowers17 has 66 pairs, and without this, half of the
  misses of recall@1 there were the original's own twin ranked first).

Each query's own entry is left out of its results.

Side by side: :func:`evaluate_all` scores several :class:`Target` s (indexes, or one index
searched two ways) on the same labels; each index embeds out-of-index queries with its own
model. The difference in the headline metric gets a paired bootstrap confidence interval over
the per-query values (metrics.paired_bootstrap_ci), so a difference can be told from noise.

What approximate search costs: ``ann_recall@K`` = |Annoy top K ∩ exact top K| / K for the same
query vectors (the query's own entry left out of both), averaged over queries; it is None
where an index has no Annoy index.
"""

from __future__ import annotations

import csv
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import metrics
from .errors import VsearchError
from .search import Searcher, SearchMode

#: Depth of the ranking that ``mrr`` looks into: a first relevant item below it scores 0.
MRR_DEPTH = 100
#: How many results of each query are kept by path (per-query CSV, the report's thumbnails).
KEEP_RETURNED = 10
#: Paired bootstrap resamples for the confidence interval of a difference.
BOOTSTRAP_RESAMPLES = 10_000
#: ann_recall@K is measured on at most this many queries (a seeded sample beyond it).
ANN_RECALL_SAMPLE = 1000

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class LabelledQuery:
    """One query image and the gain of each relevant image (absolute paths).

    ``kind``: the edit that made the query from its original, for augmented copies.
    ``same_as``: indexed images that stand for a relevant one (pixel duplicates of it): in a
    ranking they count as that image, once, at the first place either appears.
    """

    query: Path
    gains: dict[Path, float]
    kind: str | None = None
    same_as: dict[Path, Path] = field(default_factory=dict)


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
    per_query: list[metrics.QueryResult] = field(default_factory=list)
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


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    path = Path(path).expanduser()
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise VsearchError(
                    f"{path}: expected a CSV header with {','.join(required)}; found "
                    f"{','.join(header) or 'no header'}"
                )
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except OSError as exc:
        raise VsearchError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise VsearchError(f"{path} is not a readable CSV file ({exc})") from None
    if not rows:
        raise VsearchError(f"{path} has a header but no rows")
    return rows


def _resolve(base: Path, value: str, csv_path: Path, line: int) -> Path:
    if not value:
        raise VsearchError(f"{csv_path}:{line}: empty path")
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def read_pairs(path: Path) -> list[LabelledQuery]:
    """Queries from a pairs CSV (``query,positive[,relevance]``), in first-seen order."""
    path = Path(path).expanduser()
    rows = _read_csv(path, ["query", "positive"])
    base = path.resolve().parent
    queries: OrderedDict[Path, dict[Path, float]] = OrderedDict()
    kinds: dict[Path, str] = {}
    for line, row in enumerate(rows, start=2):
        q = _resolve(base, row["query"], path, line)
        pos = _resolve(base, row["positive"], path, line)
        rel = row.get("relevance") or "1"
        try:
            gain = float(rel)
        except ValueError:
            raise VsearchError(f"{path}:{line}: relevance {rel!r} is not a number") from None
        if gain < 0 or not np.isfinite(gain):
            raise VsearchError(f"{path}:{line}: relevance must be a non-negative number, not {rel!r}")
        queries.setdefault(q, {})[pos] = gain
        if row.get("augmentation"):
            kinds[q] = row["augmentation"]
    return [LabelledQuery(q, g, kinds.get(q)) for q, g in queries.items()]


def read_groups(path: Path) -> list[LabelledQuery]:
    """Queries from a groups CSV (``path,group``): each member against the rest of its group."""
    path = Path(path).expanduser()
    rows = _read_csv(path, ["path", "group"])
    base = path.resolve().parent
    groups: OrderedDict[str, list[Path]] = OrderedDict()
    for line, row in enumerate(rows, start=2):
        groups.setdefault(row["group"], []).append(_resolve(base, row["path"], path, line))
    queries = []
    for members in groups.values():
        for m in members:
            others = {o: 1.0 for o in members if o != m}
            if others:
                queries.append(LabelledQuery(m, others))
    if not queries:
        raise VsearchError(f"{path}: no group has two or more members, so there is nothing to retrieve")
    return queries


def rows_for(searcher: Searcher, paths: Sequence[Path]) -> dict[Path, int]:
    """Index row of each path that is in the index (by path under the index's root)."""
    root = Path(searcher.meta.root)
    out: dict[Path, int] = {}
    for p in paths:
        try:
            rel = p.relative_to(root).as_posix()
        except ValueError:
            continue
        entry = searcher.store.entry(rel)
        if entry is not None and entry.row is not None:
            out[p] = entry.row
    return out


def query_vectors(searcher: Searcher, queries: Sequence[Path], known: dict[Path, int],
                  batch_size: int = 16, on_embed: Callable[[int], None] | None = None,
                  cache: dict[Path, np.ndarray] | None = None) -> tuple[np.ndarray, int]:
    """Vectors for all queries: stored rows where indexed, the rest embedded in batches.

    ``cache``: vectors already embedded by the same model (read, and filled with new ones), so
    indexes that share a model embed an out-of-index query once. Returns the vectors and how
    many queries were embedded now.
    """
    out = np.zeros((len(queries), searcher.meta.dim), dtype=np.float32)
    todo = []
    for i, q in enumerate(queries):
        if q in known:
            out[i] = searcher.vectors[known[q]]
        elif cache is not None and q in cache:
            out[i] = cache[q]
        else:
            todo.append(i)
    for start in range(0, len(todo), batch_size):
        idx = todo[start:start + batch_size]
        out[idx] = searcher.encoder.embed_images([queries[i] for i in idx])
        if cache is not None:
            cache.update((queries[i], out[i].copy()) for i in idx)
        if on_embed:
            on_embed(len(idx))
    return out, len(todo)


def _check_ks(ks: Sequence[int]) -> None:
    if not ks or any(isinstance(k, bool) or k < 1 for k in ks):
        raise VsearchError("--k takes positive integers, e.g. --k 1,5,10")


def evaluate(searcher: Searcher, labels: Sequence[LabelledQuery], ks: Sequence[int] = (1, 5, 10),
             mode: SearchMode = "auto", *, ann_recall: bool = False, label: str = "",
             progress: ProgressFn | None = None, cache: dict[Path, np.ndarray] | None = None,
             expand: int = 0) -> EvalReport:
    """Run every labelled query against the index and score the rankings.

    ``expand``: average query expansion with the top ``expand`` results (0 = off), as
    ``vsearch query --qe`` does; a query's own entry never counts among them.

    ``ann_recall``: also measure Annoy against exact search on the same query vectors (when the
    index has an Annoy index). ``progress(done, total)`` follows the queries being embedded.
    ``cache``: see :func:`query_vectors`; only share one between indexes of the same model.
    """
    started = time.perf_counter()
    _check_ks(ks)
    if not labels:
        raise VsearchError("no labelled queries to evaluate")
    wanted = {p for q in labels for p in q.gains}
    aliases = {p for q in labels for p in q.same_as}
    rows = rows_for(searcher, sorted(wanted | aliases | {q.query for q in labels}))
    missing = sorted(p for p in wanted if p not in rows)
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise VsearchError(
            f"{len(missing)} labelled image(s) are not in the index at {searcher.store.dir}: {shown}{more}; "
            "index their folder first (vsearch build-index FOLDER)"
        )
    queries = [q.query for q in labels]
    to_embed = sum(1 for q in queries if q not in rows and (cache is None or q not in cache))
    done = [0]

    def on_embed(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], to_embed)

    vectors, embedded = query_vectors(searcher, queries, rows, on_embed=on_embed, cache=cache)
    if expand:
        vectors = np.stack([
            searcher.expand(v, expand, mode, exclude_rows=[rows[q]] if q in rows else [])
            for v, q in zip(vectors, queries)
        ])
    depth = max(max(ks), MRR_DEPTH)
    results, records = [], []
    for q, found in zip(labels, _rankings(searcher, vectors, depth + 1, mode)):
        own = rows.get(q.query)
        ranked = tuple(int(r) for r in found if own is None or int(r) != own)[:depth]
        if q.same_as:
            alias = {rows[a]: rows[p] for a, p in q.same_as.items() if a in rows and p in rows}
            ranked = tuple(alias.get(r, r) for r in ranked)
        gains = {rows[p]: g for p, g in q.gains.items() if g > 0}
        result = metrics.QueryResult(query=str(q.query), ranked=ranked, gains=gains)
        results.append(result)
        expected = tuple(p for p, g in sorted(q.gains.items(), key=lambda pg: -pg[1]) if g > 0)
        records.append(QueryRecord(
            query=q.query, kind=q.kind, expected=expected,
            returned=tuple(searcher.path(r) for r in ranked[:KEEP_RETURNED]),
            relevant_ranks=_first_ranks(ranked, gains),
            depth=depth, scores=metrics.score_query(result, ks),
        ))
    summary = metrics.summarize(results, ks)
    ann = None
    if ann_recall and searcher.store.ann_path() is not None:
        ann = ann_recall_at(searcher, vectors, [rows.get(q) for q in queries], ks)
    meta = searcher.meta
    return EvalReport(
        summary, results, time.perf_counter() - started, embedded, records=records, ann_recall=ann,
        by_kind=_by_kind(records, ks), label=label or searcher.store.dir.name, index_dir=searcher.store.dir,
        model=meta.model.name, mode=mode, count=meta.count, annoy_trees=meta.ann.trees if meta.ann else None,
    )


def _first_ranks(ranked: Sequence[int], relevant: dict[int, float]) -> tuple[int, ...]:
    """1-based ranks of relevant ids, each at its first place only (as the metrics count them)."""
    seen: set[int] = set()
    out = []
    for i, r in enumerate(ranked, start=1):
        if r in relevant and r not in seen:
            seen.add(r)
            out.append(i)
    return tuple(out)


def _rankings(searcher: Searcher, vectors: np.ndarray, k: int, mode: SearchMode,
              block: int = 256) -> Iterable[np.ndarray]:
    """Top-k rows for each query vector, as ``searcher.neighbours`` ranks them in ``mode``.

    Exact search runs on blocks of queries at once: one pass over the vectors serves a whole
    block. Measured on flowers17 (1,360 queries over 1,360 Lite0 vectors, 2 busy cores, median
    of 3): 4.0 s one query at a time through ``Searcher.neighbours``, 0.23 s in blocks (~18x).
    """
    from . import index as nn

    if searcher.use_annoy(mode):
        for vec in vectors:
            yield searcher.neighbours(vec, k, mode)[0]
        return
    for start in range(0, len(vectors), block):
        # search_vectors: what neighbours() ranks against (the DBA copy when the index has one)
        yield from nn.exact_search(searcher.search_vectors, vectors[start:start + block], k)[0]


def ann_recall_at(searcher: Searcher, vectors: np.ndarray, own_rows: Sequence[int | None],
                  ks: Sequence[int], *, sample: int = ANN_RECALL_SAMPLE, seed: int = 0) -> dict[int, float]:
    """Mean over queries of |Annoy top K ∩ exact top K| / K, for each K in ``ks``.

    Each query's own row (when it is indexed) is left out of both lists, as in the evaluation.
    An Annoy result whose exact score ties the K-th exact score counts as found: duplicate
    images are interchangeable, and which twin an exact sort puts first is arbitrary. More
    than ``sample`` queries are estimated on a seeded sample of that many (exact search over a
    large index costs a full pass per query).
    """
    from . import index as nn

    _check_ks(ks)
    picked = np.arange(len(vectors))
    if len(picked) > sample:
        picked = np.sort(np.random.default_rng(seed).choice(len(picked), size=sample, replace=False))
    if len(picked) == 0:
        return dict.fromkeys(ks, 0.0)
    # One blocked matmul for every picked query: far cheaper than an exact search per query.
    all_rows, all_scores = nn.exact_search(searcher.search_vectors, vectors[picked], max(ks) + 1)
    totals = dict.fromkeys(ks, 0.0)
    for vec, own, rows, scores in zip(vectors[picked], (own_rows[i] for i in picked), all_rows, all_scores):
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


# --- cheap labels: augmented copies --------------------------------------------------------


def augment_labels(searcher: Searcher, n: int, seed: int, folder: Path,
                   progress: ProgressFn | None = None) -> list[LabelledQuery]:
    """Edited copies of ``n`` indexed images, written into ``folder``: each copy finds its original.

    ``folder`` should be a temporary folder outside the index's root, so the copies never enter
    the index. The images picked depend on ``seed`` and the indexed paths only. An indexed
    pixel duplicate of an original (:func:`indexed_duplicates`) counts as the original: a
    collection that holds one photo twice must not score a miss when the twin comes first.
    """
    from . import augment

    root = Path(searcher.meta.root)
    originals = augment.pick([root / p for p in searcher.store.paths_by_row()], n, seed)
    copies = augment.make_copies(originals, folder, seed=seed, progress=progress)
    twins = indexed_duplicates(searcher, originals)
    return [LabelledQuery(c.copy, {c.original: 1.0}, c.kind, {t: c.original for t in twins[c.original]})
            for c in copies]


#: Duplicates of an augmented original are looked for among its nearest indexed neighbours with
#: at least this cosine (a shortlist: the test itself is on pixels, so every model is scored
#: against the same labels). On flowers17 with Lite0 the 66 duplicate pairs have cosine >= 0.89.
DUPLICATE_SHORTLIST = 10
DUPLICATE_MIN_COSINE = 0.85


def indexed_duplicates(searcher: Searcher, originals: Sequence[Path]) -> dict[Path, tuple[Path, ...]]:
    """For each indexed original, the other indexed images that are the same picture (augment.same_picture)."""
    from . import augment
    from . import index as nn

    rows = rows_for(searcher, list(originals))
    out: dict[Path, tuple[Path, ...]] = {p: () for p in originals}
    known = [p for p in originals if p in rows]
    if not known:
        return out
    vecs = np.asarray(searcher.vectors[[rows[p] for p in known]])
    found, scores = nn.exact_search(searcher.vectors, vecs, DUPLICATE_SHORTLIST + 1)
    for p, cand, score in zip(known, found, scores):
        twins = [searcher.path(int(r)) for r, s in zip(cand, score)
                 if int(r) != rows[p] and s >= DUPLICATE_MIN_COSINE]
        out[p] = tuple(t for t in twins if augment.same_picture(p, t))
    return out


def make_pairs(folder: Path, n: int, seed: int, out_dir: Path,
               progress: ProgressFn | None = None) -> tuple[Path, int]:
    """Write edited copies of ``n`` images under ``folder`` into ``out_dir``, and ``out_dir/pairs.csv``.

    The CSV (``query,positive,relevance,augmentation``) names each copy relative to ``out_dir``
    and its original by absolute path, so ``evaluate --pairs out_dir/pairs.csv`` reads it back.
    Unlike ``evaluate --augment``, no index is at hand here to find duplicates of an original,
    so a twin of it ranked first counts as a miss.
    ``out_dir`` must be new or empty and not inside ``folder`` (the copies would be indexed
    with it). Returns the CSV's path and the number of copies.
    """
    from . import augment, images
    from .atomic import write_bytes as atomic_write_bytes

    folder = Path(folder).expanduser()
    out_dir = Path(out_dir).expanduser()
    walk = images.scan_folder(folder, exclude=[out_dir])  # checks the folder now; the walk is lazy
    if out_dir.resolve().is_relative_to(folder.resolve()):
        raise VsearchError(f"--out {out_dir} is inside {folder}: the copies would be indexed with the originals; "
                           "choose a folder outside it")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise VsearchError(f"--out {out_dir} exists and is not an empty folder; choose a new one")
    found = [f.path.resolve() for f in walk]
    if not found:
        raise VsearchError(f"no images under {folder}")
    originals = augment.pick(found, n, seed)
    copies = augment.make_copies(originals, out_dir, seed=seed, progress=progress)
    lines = ["query,positive,relevance,augmentation"]
    for c in copies:
        lines.append(_csv_line([c.copy.name, str(c.original), "1", c.kind]))
    pairs = out_dir / "pairs.csv"
    atomic_write_bytes(pairs, ("\n".join(lines) + "\n").encode("utf-8"))
    return pairs, len(copies)


def _csv_line(values: Iterable[str]) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(list(values))
    return buf.getvalue()


# --- side by side --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One system to score: an index, searched in one mode, under a column label."""

    searcher: Searcher
    mode: SearchMode = "auto"
    label: str = ""
    expand: int = 0  # average query expansion top-n (0 = off)


@dataclass(frozen=True)
class Comparison:
    """Headline metric of ``other`` minus ``baseline``, per query, with its bootstrap CI."""

    baseline: str
    other: str
    metric: str
    ci: metrics.BootstrapCI
    num_queries: int

    @property
    def verdict(self) -> str:
        """Which system is better, or that the interval holds 0 (no clear difference)."""
        if self.ci.low > 0:
            return f"{self.other} is better"
        if self.ci.high < 0:
            return f"{self.baseline} is better"
        return "no clear difference (the interval holds 0)"


@dataclass
class Evaluation:
    """Every target's report on the same labels, and the comparisons against the first."""

    reports: list[EvalReport]
    ks: tuple[int, ...]
    headline: str
    comparisons: list[Comparison]
    elapsed_s: float
    augmented: bool = False


def headline_keys(ks: Sequence[int]) -> list[str]:
    """Per-query metric names one can compare on: ``recall@K`` ... ``ndcg@K`` for each K, ``mrr``."""
    return [f"{m}@{k}" for k in ks for m in ("recall", "hit", "precision", "map", "ndcg")] + ["mrr"]


def default_headline(ks: Sequence[int], augmented: bool = False) -> str:
    """``recall@1`` for augmented copies (did the original come first?); else map@10, or the largest K's map."""
    if augmented and 1 in ks:
        return "recall@1"
    return "map@10" if 10 in ks else f"map@{max(ks)}"


def target_labels(index_dirs: Sequence[Path], modes: Sequence[str], expands: Sequence[int] = ()) -> list[str]:
    """Short distinct column labels: the first of folder name, folder name (mode), full path,
    full path (mode) that tells every target apart; else numbered. A query expansion shows as
    ``qe N`` beside the mode."""
    if expands:
        modes = [f"{m}, qe {e}" if e else m for m, e in zip(modes, expands)]
    short = [Path(d).name or str(d) for d in index_dirs]
    full = [str(Path(d).expanduser().absolute()) for d in index_dirs]
    for names in (short, [f"{n} ({m})" for n, m in zip(short, modes)], full,
                  [f"{n} ({m})" for n, m in zip(full, modes)]):
        if len(set(names)) == len(names):
            return names
    return [f"{n} #{i}" for i, n in enumerate(short, start=1)]


def evaluate_all(targets: Sequence[Target], labels: Sequence[LabelledQuery], ks: Sequence[int], *,
                 headline: str | None = None, seed: int = 0, ann_recall: bool = True,
                 augmented: bool = False, progress: ProgressFn | None = None) -> Evaluation:
    """Score every target on the same labels; compare each to the first on the headline metric.

    The comparison is a paired bootstrap (metrics.paired_bootstrap_ci, ``seed``) over per-query
    values of ``headline`` (default: :func:`default_headline`).
    """
    started = time.perf_counter()
    _check_ks(ks)
    ks = tuple(ks)
    headline = headline or default_headline(ks, augmented)
    if headline not in headline_keys(ks):
        raise VsearchError(f"--headline {headline!r} is not a metric of this run; choose from "
                           f"{', '.join(headline_keys(ks))}")
    if not targets:
        raise VsearchError("nothing to evaluate: give at least one --index-dir")
    # Indexes of one model embed each out-of-index query once (e.g. exact vs approximate, or two
    # Annoy settings); indexes of different models each embed with their own.
    caches: dict[str, dict[Path, np.ndarray]] = {}
    reports = []
    for t in targets:
        cache = caches.setdefault(json.dumps(t.searcher.meta.model.to_dict(), sort_keys=True), {})
        reports.append(evaluate(t.searcher, labels, ks, t.mode, ann_recall=ann_recall, label=t.label,
                                progress=progress, cache=cache, expand=t.expand))
    comparisons = []
    base = reports[0]
    a = [r.scores[headline] for r in base.records]
    for other in reports[1:]:
        b = [r.scores[headline] for r in other.records]
        ci = metrics.paired_bootstrap_ci(a, b, n_resamples=BOOTSTRAP_RESAMPLES, seed=seed)
        comparisons.append(Comparison(base.label, other.label, headline, ci, len(a)))
    return Evaluation(reports, ks, headline, comparisons, time.perf_counter() - started, augmented)
