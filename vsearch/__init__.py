"""vsearch: visual search over local image folders.

image -> preprocess -> model -> embedding -> nearest-neighbour search -> re-rank & filter -> results

The Python API (defined in :mod:`vsearch.api`)::

    import vsearch
    idx = vsearch.build_index("photos", index_dir="idx")   # embeds what is new, builds the Annoy index
    hits = idx.query("photos/cat.jpg", k=5)               # [Hit(rank, path, score, row), ...]
    idx = vsearch.open_index("idx")                        # index_dir=None: the CLI's default

Why names are looked up lazily: ``import vsearch`` (which ``python -m vsearch`` and every
submodule import runs first) stays cheap, without numpy, which the API's modules import.
``importlib`` is loaded at start-up (by site), so importing it here costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vsearch.errors import (
    ImageDecodeError,
    IndexBusyError,
    IndexCorruptError,
    IndexMissingError,
    ModelMismatchError,
    ModelUnavailableError,
    VsearchError,
)

from vsearch.version import __version__ as __version__

__all__ = [
    # from vsearch.api (EvalReport: vsearch.evaluation.evaluate)
    "Action",
    "AgainstResult",
    "CheckReport",
    "DuplicateGroup",
    "DuplicateMember",
    "EvalReport",
    "FileCheck",
    "Hit",
    "Index",
    "MarkedPair",
    "PairCheck",
    "PairExplanation",
    "UndoLog",
    "UndoResult",
    "build_index",
    "check",
    "choose_keeper",
    "default_index_dir",
    "log_click",
    "log_impressions",
    "open_index",
    # from vsearch.errors
    "ImageDecodeError",
    "IndexBusyError",
    "IndexCorruptError",
    "IndexMissingError",
    "ModelMismatchError",
    "ModelUnavailableError",
    "VsearchError",
]

#: Where each public name not defined above lives; its module is imported on first use.
_LAZY = {name: "api" for name in __all__ if name not in globals()} | {"EvalReport": "evaluation.evaluate"}

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ provides them
    from vsearch.api import (
        Action,
        AgainstResult,
        CheckReport,
        DuplicateGroup,
        DuplicateMember,
        FileCheck,
        Hit,
        Index,
        MarkedPair,
        PairCheck,
        PairExplanation,
        UndoLog,
        UndoResult,
        build_index,
        check,
        choose_keeper,
        default_index_dir,
        log_click,
        log_impressions,
        open_index,
    )
    from vsearch.evaluation.evaluate import EvalReport


def __getattr__(name: str) -> Any:
    """Import the module of a public name when the name is first used (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'vsearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
