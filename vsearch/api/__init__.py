"""The Python API: build an index, open one, query it, find near-duplicates, score it. The one
door the command line and the page use.

    build_index(folder)  -> Index   embed what is new or changed, then build the Annoy index
    open_index(dir)      -> Index   a committed index
    Index.query(...)     -> [Hit]   image(s), text (CLIP indexes), negatives, filters, re-ranking
    Index.duplicates()   -> [DuplicateGroup]
    Index.against(dir)   -> [AgainstResult]  which photos of a folder the library holds already
    Index.explain(a, b)  -> PairExplanation   why two photos are (not) duplicates
    Index.marks()        -> [MarkedPair]      the "not a duplicate" marks (Index.unmark takes one back)
    Index.judge(q, [r])  -> [Judgment]  a person's verdicts, kept in judgments.sqlite
    photo_details(path)  -> PhotoDetails   bytes, pixels, format, EXIF date taken (the page's large view)
    check(dir)           -> CheckReport  every file against the checksums its commit recorded
    Index.evaluate(...)  -> EvalReport  on label files, edited copies, or the recorded judgments
    evaluate_side_by_side([Setup, ...])  -> SideBySide   A/B with a paired-bootstrap CI
    log_impressions(dir, query, results) -> Shown   the click log, with position-bias swaps
    log_click(dir, query_id, result)     -> rank

Where each part lives: :mod:`~vsearch.api.index` (an open index), :mod:`~vsearch.api.building`,
:mod:`~vsearch.api.changes` (verdicts, marks, the keeper), :mod:`~vsearch.api.learning`,
:mod:`~vsearch.api.scoring`, :mod:`~vsearch.api.feedback` (what the page logs),
:mod:`~vsearch.api.details` (``vsearch info``), :mod:`~vsearch.api.checking` (``vsearch check``).

Errors a user can cause raise :class:`~vsearch.errors.VsearchError` (or a subclass), worded in
this API's terms; nothing here prints or exits. ``import vsearch`` does not import this package
(see ``vsearch/__init__.py``): it imports numpy through the library, which a caller pays for
only once it uses the API.
"""

from __future__ import annotations

from vsearch.api.building import BuildOptions, build, build_index
from vsearch.api.changes import choose_keeper, index_of_undo_log, is_keeper
from vsearch.api.checking import CheckReport, FileCheck, check
from vsearch.api.common import MODES, PathLike, read_header, register_heif
from vsearch.api.comparing import AgainstResult, MarkedPair, PairCheck, PairExplanation
from vsearch.api.details import IndexDetails
from vsearch.api.feedback import (
    DEFAULT_SWAP_FRACTION,
    MAX_DWELL_MS,
    Interleaved,
    bytes_digest,
    latest_shown,
    log_click,
    log_dwell,
    log_impressions,
    log_interleaved,
    log_interleaved_click,
    log_interleaved_dwell,
    record_verdict,
    team_draft,
)
from vsearch.api.index import Action, Index, UndoLog, UndoResult, open_index
from vsearch.api.learning import remove_head, train
from vsearch.api.photos import PhotoDetails, photo_details
from vsearch.api.scoring import (
    Setup,
    SideBySide,
    click_report,
    evaluate_side_by_side,
    interleaving_reports,
    judged_pairs,
    make_pairs,
    pairs_csv,
    read_judgments,
)
from vsearch.duplicates.grouping import KEEP_RULES, DuplicateGroup, DuplicateMember
from vsearch.duplicates.grouping import LEVELS as DUPLICATE_LEVELS
from vsearch.locations import default_index_dir
from vsearch.retrieval.search import Hit

__all__ = [
    "DEFAULT_SWAP_FRACTION",
    "DUPLICATE_LEVELS",
    "KEEP_RULES",
    "MAX_DWELL_MS",
    "MODES",
    "Action",
    "AgainstResult",
    "BuildOptions",
    "PairCheck",
    "CheckReport",
    "DuplicateGroup",
    "DuplicateMember",
    "FileCheck",
    "Hit",
    "Index",
    "IndexDetails",
    "MarkedPair",
    "PairExplanation",
    "Interleaved",
    "PathLike",
    "PhotoDetails",
    "Setup",
    "SideBySide",
    "UndoLog",
    "UndoResult",
    "build",
    "build_index",
    "bytes_digest",
    "check",
    "choose_keeper",
    "click_report",
    "default_index_dir",
    "evaluate_side_by_side",
    "index_of_undo_log",
    "interleaving_reports",
    "is_keeper",
    "judged_pairs",
    "latest_shown",
    "log_click",
    "log_dwell",
    "log_impressions",
    "log_interleaved",
    "log_interleaved_click",
    "log_interleaved_dwell",
    "make_pairs",
    "open_index",
    "pairs_csv",
    "photo_details",
    "read_header",
    "read_judgments",
    "record_verdict",
    "register_heif",
    "remove_head",
    "team_draft",
    "train",
]
