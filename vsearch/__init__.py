"""vsearch: visual search over local image folders.

image -> preprocess -> model -> embedding -> nearest-neighbour search -> re-rank & filter -> results

The Python API (defined in :mod:`vsearch.api`)::

    import vsearch
    idx = vsearch.build_index("photos", index_dir="idx")   # embeds what is new, builds the Annoy index
    hits = idx.query("photos/cat.jpg", k=5)               # [Hit(rank, path, score, row), ...]
    idx = vsearch.open_index("idx")                        # index_dir=None: the CLI's default

Why names are looked up lazily: ``import vsearch`` (which ``python -m vsearch`` and every
submodule import runs first) stays cheap, without numpy, which the API's modules import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ImageDecodeError,
    IndexBusyError,
    IndexCorruptError,
    IndexMissingError,
    ModelMismatchError,
    ModelUnavailableError,
    VsearchError,
)

__version__ = "0.1.0"

__all__ = [
    # from vsearch.api
    "DuplicateGroup",
    "DuplicateMember",
    "EvalReport",
    "Hit",
    "Index",
    "build_index",
    "default_index_dir",
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

#: The public names not defined above: they live in vsearch.api, imported on first use.
_API_NAMES = frozenset(name for name in __all__ if name not in globals())

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ provides them
    from .api import (
        DuplicateGroup,
        DuplicateMember,
        EvalReport,
        Hit,
        Index,
        build_index,
        default_index_dir,
        open_index,
    )


def __getattr__(name: str) -> Any:
    """Import :mod:`vsearch.api` when one of its names is first used (PEP 562)."""
    if name in _API_NAMES:
        from . import api

        value = getattr(api, name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'vsearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API_NAMES)
