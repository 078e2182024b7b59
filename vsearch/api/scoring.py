"""The API's scoring calls: score an index on labels, put several setups side by side (A/B,
with a paired-bootstrap CI), report the click log, read and export the judgments, make a
labelled set of edited copies.

Evaluation makes and reads images (edited copies, label files): its modules import Pillow, so
they are imported when called, off the query path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vsearch.api.common import PathLike, check_mode, check_qe, check_seed, index_dir_of
from vsearch.defaults import DEFAULT_QE
from vsearch.errors import VsearchError
from vsearch.learning import clicks, judgments
from vsearch.retrieval.search import Refine, Searcher, SearchMode
from vsearch.storage.store import Store

if TYPE_CHECKING:  # these import Pillow: only an evaluation pays for it (imported when called)
    from vsearch.evaluation.compare import Evaluation  # Pillow: only an evaluation pays for it
    from vsearch.evaluation.evaluate import EvalReport  # Pillow: only an evaluation pays for it
    from vsearch.evaluation.labels import LabelledQuery, Labels  # Pillow: only an evaluation pays for it
    from vsearch.learning.propensity import ClickReport  # numpy maths: only the click report pays for it
    from vsearch.learning.interleaving import InterleavingReport  # only the interleaving report pays for it

__all__ = ["Setup", "SideBySide", "click_report", "evaluate_index", "evaluate_side_by_side", "interleaving_reports",
           "judged_pairs",
           "make_pairs", "pairs_csv", "read_judgments"]

ProgressFn = Callable[[int, int], None]


def evaluate_index(store: Store, searcher: Searcher, *, pairs: PathLike | None = None, groups: PathLike | None = None,
                   augment: int | None = None, judged: bool = False, ks: Sequence[int] | None = None,
                   mode: SearchMode = "auto", qe: int = DEFAULT_QE, seed: int = 0, ann_recall: bool = False,
                   progress: ProgressFn | None = None, max_per_folder: int | None = None,
                   max_per_day: int | None = None) -> EvalReport:
    """Score one open index on labels (see :meth:`vsearch.api.index.Index.evaluate`)."""
    import tempfile

    from vsearch.evaluation import evaluate as ev  # Pillow: only an evaluation pays for it
    from vsearch.evaluation import labels as lb  # Pillow: only an evaluation pays for it

    if sum(x is not None for x in (pairs, groups, augment)) + bool(judged) != 1:
        raise VsearchError("give exactly one of pairs=, groups=, augment= or judgments=True")
    check_mode(mode)
    check_qe(qe)
    check_seed(seed)
    if augment is not None and (isinstance(augment, bool) or augment < 1):
        raise VsearchError(f"augment must be 1 or more (got {augment!r})")
    caps = Refine(max_per_folder=max_per_folder, max_per_day=max_per_day)  # checks them before any work
    cuts = tuple(ks) if ks is not None else ((1, 10) if augment is not None else (1, 5, 10))

    def score(queries: list[LabelledQuery]) -> EvalReport:
        return ev.evaluate(searcher, queries, cuts, mode, ann_recall=ann_recall, progress=progress, expand=qe,
                           max_per_folder=caps.max_per_folder, max_per_day=caps.max_per_day)

    if judged:
        return score(lb.judged_labels(store).queries)
    if augment is None:
        return score(_read_labels(pairs, groups).queries)
    with tempfile.TemporaryDirectory(prefix="vsearch-augment-") as tmp:
        return score(lb.augment_labels(searcher, augment, seed, Path(tmp)).queries)


def _read_labels(pairs: PathLike | None, groups: PathLike | None) -> Labels:
    from vsearch.evaluation import labels as lb  # Pillow: only an evaluation pays for it

    return lb.read_pairs(Path(pairs)) if pairs is not None else lb.read_groups(Path(groups))  # type: ignore[arg-type]  # one of the two is given


@dataclass(frozen=True)
class Setup:
    """One column of a side-by-side evaluation: an index, searched one way."""

    index_dir: Path
    mode: SearchMode = "auto"
    qe: int = DEFAULT_QE
    max_per_folder: int | None = None
    max_per_day: int | None = None
    adapter: bool = True
    copy_first: bool = True


@dataclass(frozen=True)
class SideBySide:
    """What :func:`evaluate_side_by_side` measured: every setup's report and the comparisons
    against the first (``evaluation``), the labels used, and a line saying where they came from."""

    evaluation: Evaluation
    labels: Labels
    source: str


def column_labels(setups: Sequence[Setup]) -> list[str]:
    """Short distinct column labels; a cap, or the head when it is not on for all, shows beside
    the mode, so that one index with and without it differ."""
    from vsearch.evaluation import compare  # Pillow: only an evaluation pays for it

    all_adapted = all(s.adapter for s in setups)
    shown = [s.mode + "".join(f", max {n} {c}" for c, n in (("per folder", s.max_per_folder),
                                                              ("per day", s.max_per_day)) if n)
             + ("" if all_adapted else f", adapter {'on' if s.adapter else 'off'}")
             + ("" if all(t.copy_first for t in setups) else f", copy first {'on' if s.copy_first else 'off'}")
             for s in setups]
    return compare.target_labels([s.index_dir for s in setups], shown, [s.qe for s in setups])


def evaluate_side_by_side(setups: Sequence[Setup], *, pairs: PathLike | None = None, groups: PathLike | None = None,
                          augment: int | None = None, judged: bool = False, ks: Sequence[int], scratch: Path,
                          headline: str | None = None, seed: int = 0, device: str = "auto",
                          progress: ProgressFn | None = None) -> SideBySide:
    """Score every setup on the same labels and compare each to the first on ``headline`` (a
    paired bootstrap 95% CI). Labels: exactly one of ``pairs``, ``groups``, ``augment`` (edited
    copies of that many indexed photos of the first setup's index, written under ``scratch``,
    which must outlive any report that shows them) or ``judged`` (the first index's judgments)."""
    from vsearch.evaluation import compare  # Pillow: only an evaluation pays for it
    from vsearch.evaluation import labels as lb  # Pillow: only an evaluation pays for it

    if not setups:
        raise VsearchError("give at least one index to evaluate")
    if sum(x is not None for x in (pairs, groups, augment)) + bool(judged) != 1:
        raise VsearchError("give exactly one of pairs=, groups=, augment= or judged=True")
    for s in setups:
        check_mode(s.mode)
        check_qe(s.qe)
    check_seed(seed)
    names = column_labels(setups)
    with ExitStack() as opened:
        targets = [compare.Target(Searcher(opened.enter_context(Store.open(s.index_dir)), device=device,
                                           adapter=s.adapter), s.mode, name, s.qe, s.max_per_folder, s.max_per_day,
                                   s.copy_first)
                   for s, name in zip(setups, names)]
        if augment is not None:
            started = time.perf_counter()
            found = lb.augment_labels(targets[0].searcher, augment, seed, scratch)
            source = (f"{len(found.queries)} edited copies of {augment - len(found.skipped)} indexed images "
                      f"(seed {seed}), made in {time.perf_counter() - started:.1f}s")
        elif judged:
            found = lb.judged_labels(targets[0].searcher.store)
            source = f"judgments in {setups[0].index_dir}"
        else:
            found = _read_labels(pairs, groups)
            source = f"labels: {pairs or groups}"
        evaluation = compare.evaluate_all(targets, found.queries, ks, headline=headline, seed=seed,
                                          augmented=augment is not None, progress=progress)
    return SideBySide(evaluation, found, source)


def click_report(index_dir: PathLike | None = None) -> ClickReport:
    """What the page's click log says: click-through by rank, the position-bias propensities
    measured from the swapped pairs, and the inverse-propensity-weighted precision."""
    from vsearch.learning import propensity  # numpy maths: only the click report pays for it

    with Store.open(index_dir_of(index_dir)) as store:
        logged = clicks.read_click_log(store.dir)
    return propensity.click_report(logged, clicks.SWAP_DEPTH)


def interleaving_reports(index_dir: PathLike | None = None) -> list[InterleavingReport]:
    """What the interleaving log says: one report per experiment (pair of configurations) the
    page interleaved, with per-query wins, losses and ties, A's share of the decided queries
    with its 95% interval, the sign test p-value and which configuration is better."""
    from vsearch.learning import interleaving  # only the interleaving report pays for it

    with Store.open(index_dir_of(index_dir)) as store:
        return interleaving.reports(interleaving.read_log(store.dir))


def read_judgments(index_dir: PathLike | None = None) -> list[judgments.Judgment]:
    """Every verdict recorded in the index (``vsearch judge`` or the page), oldest first."""
    where = index_dir_of(index_dir)
    with Store.open(where):  # a typo in the folder is an error, not an empty list
        pass
    return judgments.read_judgments(where)


def judged_pairs(index_dir: PathLike | None = None) -> Labels:
    """The recorded judgments as labelled queries (current paths), with notes on what was left out."""
    from vsearch.evaluation import labels as lb  # Pillow: only an evaluation pays for it

    with Store.open(index_dir_of(index_dir)) as store:
        return lb.judged_labels(store)


def pairs_csv(found: Labels) -> str:
    """Labelled queries as a pairs CSV (``query,positive,relevance``) that ``pairs=`` reads."""
    from vsearch.evaluation import labels as lb  # Pillow: only an evaluation pays for it

    return lb.pairs_csv(found)


def make_pairs(folder: PathLike, n: int, seed: int, out: PathLike) -> tuple[Path, int]:
    """Write edited copies of ``n`` images under ``folder`` into ``out`` with a pairs CSV;
    returns the CSV's path and the number of copies."""
    from vsearch.evaluation import labels as lb  # Pillow: only an evaluation pays for it

    check_seed(seed)
    return lb.make_pairs(Path(folder), n, seed, Path(out))
