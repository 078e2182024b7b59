"""Labels in, queries run, metrics out.

Two label files, both CSV; paths are absolute or relative to the folder that holds the CSV:

* pairs:  ``query,positive[,relevance]``: each row adds one relevant image (gain = relevance,
  default 1) to that query. A query may be outside the index (embedded on the fly).
* groups: ``path,group`` (extra columns ignored): every image is a query whose relevant images
  are the other members of its group. Single-member groups are not queries (nothing to find).

Each query's own entry is left out of its results.
"""

from __future__ import annotations

import csv
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import metrics
from .errors import VsearchError
from .search import Searcher, SearchMode

#: Depth of the ranking that ``mrr`` looks into: a first relevant item below it scores 0.
MRR_DEPTH = 100


@dataclass(frozen=True)
class LabelledQuery:
    """One query image and the gain of each relevant image (absolute paths)."""

    query: Path
    gains: dict[Path, float]


@dataclass
class EvalReport:
    """Aggregate metrics, per-query results, and how long it took."""

    metrics: dict[str, float]
    per_query: list[metrics.QueryResult] = field(default_factory=list)
    elapsed_s: float = 0.0
    embedded_queries: int = 0


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
    queries: "OrderedDict[Path, dict[Path, float]]" = OrderedDict()
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
    return [LabelledQuery(q, g) for q, g in queries.items()]


def read_groups(path: Path) -> list[LabelledQuery]:
    """Queries from a groups CSV (``path,group``): each member against the rest of its group."""
    path = Path(path).expanduser()
    rows = _read_csv(path, ["path", "group"])
    base = path.resolve().parent
    groups: "OrderedDict[str, list[Path]]" = OrderedDict()
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
                  batch_size: int = 16, on_embed: Callable[[int], None] | None = None) -> tuple[np.ndarray, int]:
    """Vectors for all queries: stored rows where indexed, the rest embedded in batches."""
    from . import images

    out = np.zeros((len(queries), searcher.meta.dim), dtype=np.float32)
    todo = []
    for i, q in enumerate(queries):
        if q in known:
            out[i] = searcher.vectors[known[q]]
        else:
            todo.append(i)
    pre = searcher.meta.model.preprocess
    for start in range(0, len(todo), batch_size):
        idx = todo[start:start + batch_size]
        pixels = []
        for i in idx:
            if not queries[i].exists():
                raise VsearchError(f"query image not found: {queries[i]}")
            try:
                pixels.append(images.decode_for_model(queries[i], pre.size, pre.framing))
            except VsearchError as exc:
                raise VsearchError(f"cannot read query image {queries[i]}: {exc}") from None
        out[idx] = searcher.embedder.embed_images(np.stack(pixels))
        if on_embed:
            on_embed(len(idx))
    return out, len(todo)


def evaluate(searcher: Searcher, labels: Sequence[LabelledQuery], ks: Sequence[int] = (1, 5, 10),
             mode: SearchMode = "auto") -> EvalReport:
    """Run every labelled query against the index and score the rankings."""
    started = time.perf_counter()
    if not ks or any(k < 1 for k in ks):
        raise VsearchError("--k takes positive integers, e.g. --k 1,5,10")
    wanted = {p for q in labels for p in q.gains}
    rows = rows_for(searcher, sorted(wanted | {q.query for q in labels}))
    missing = sorted(p for p in wanted if p not in rows)
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise VsearchError(
            f"{len(missing)} labelled image(s) are not in the index at {searcher.store.dir}: {shown}{more}; "
            "index their folder first (vsearch build-index FOLDER)"
        )
    vectors, embedded = query_vectors(searcher, [q.query for q in labels], rows)
    depth = max(max(ks), MRR_DEPTH)
    results = []
    for q, vec in zip(labels, vectors):
        own = rows.get(q.query)
        found, _ = searcher.neighbours(vec, depth + (own is not None), mode)
        ranked = tuple(int(r) for r in found if own is None or int(r) != own)[:depth]
        gains = {rows[p]: g for p, g in q.gains.items() if g > 0}
        results.append(metrics.QueryResult(query=str(q.query), ranked=ranked, gains=gains))
    summary = metrics.summarize(results, ks)
    return EvalReport(summary, results, time.perf_counter() - started, embedded)
