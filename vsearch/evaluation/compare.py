"""Side by side: several systems scored on the same labels, and whether they differ.

:func:`evaluate_all` scores several :class:`Target` s (indexes, or one index searched two ways)
on the same labels; each index embeds out-of-index queries with its own model. The difference
in the headline metric gets a paired bootstrap confidence interval over the per-query values
(metrics.paired_bootstrap_ci), so a difference can be told from noise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vsearch.evaluation import metrics
from vsearch.errors import VsearchError
from vsearch.evaluation.evaluate import EvalReport, ProgressFn, check_ks, evaluate
from vsearch.evaluation.labels import LabelledQuery
from vsearch.retrieval.search import Searcher, SearchMode

#: Paired bootstrap resamples for the confidence interval of a difference.
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Target:
    """One system to score: an index, searched in one mode, under a column label."""

    searcher: Searcher
    mode: SearchMode = "auto"
    label: str = ""
    expand: int = 0  # average query expansion top-n (0 = off)
    max_per_folder: int | None = None  # re-ranking caps (None = off), as query --max-per-folder
    max_per_day: int | None = None
    copy_first: bool = True  # the unaltered nearest neighbour kept first (Refine.copy_first)


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
    ``qe N`` beside the mode when the targets' expansions differ."""
    if expands and len(set(expands)) > 1:
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
    check_ks(ks)
    ks = tuple(ks)
    headline = headline or default_headline(ks, augmented)
    if headline not in headline_keys(ks):
        raise VsearchError(f"headline={headline!r} is not a metric of this run; choose from "
                           f"{', '.join(headline_keys(ks))}")
    if not targets:
        raise VsearchError("nothing to evaluate: give at least one Setup")
    # Indexes of one model embed each out-of-index query once (e.g. exact vs approximate, or two
    # Annoy settings); indexes of different models each embed with their own.
    caches: dict[str, dict[Path, np.ndarray]] = {}
    reports = []
    for t in targets:
        cache = caches.setdefault(json.dumps(t.searcher.meta.model.to_dict(), sort_keys=True), {})
        reports.append(evaluate(t.searcher, labels, ks, t.mode, ann_recall=ann_recall, label=t.label,
                                progress=progress, cache=cache, expand=t.expand,
                                max_per_folder=t.max_per_folder, max_per_day=t.max_per_day,
                                copy_first=t.copy_first))
    comparisons = []
    base = reports[0]
    a = [r.scores[headline] for r in base.records]
    for other in reports[1:]:
        b = [r.scores[headline] for r in other.records]
        ci = metrics.paired_bootstrap_ci(a, b, n_resamples=BOOTSTRAP_RESAMPLES, seed=seed)
        comparisons.append(Comparison(base.label, other.label, headline, ci, len(a)))
    return Evaluation(reports, ks, headline, comparisons, time.perf_counter() - started, augmented)
