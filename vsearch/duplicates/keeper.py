"""Which copy of a duplicate group is kept: the keep rules.

``default`` keeps the original over its derivatives, from evidence in the files. Each step
decides only between files that every step before it ties (measured on planted derivatives of
real photos: ``benchmarks/bench_keeper.py``, docs/benchmarks.md):

1. a regular file before a symbolic link (a link kept while its target goes would dangle);
2. a camera RAW file before any other file (a RAW is never proposed for removal because a
   JPEG rendition of it exists);
3. a file that names its camera (EXIF Make or Model) before one that does not (editors'
   "export for web", messengers and most scripts strip it);
4. the earliest EXIF ``DateTimeOriginal``;
5. more pixels (a resized or cropped copy has fewer);
6. a file no other file of the group was made from, by its pixels, before one that was
   (:func:`vsearch.imaging.provenance.made_from`): a copy whose pixels are exactly what saving
   the other file again gives, as it is or mirrored, at the copy's own JPEG tables (re-saved
   or mirrored by a tool on the same JPEG library: Pillow, ImageMagick, GIMP; another
   encoder's copy is not reproduced, and this says nothing of it), or a copy brighter by one
   steady gain whose highlights are burnt out where the other still holds detail (a darkened
   copy could not hold it). Only evidence one way counts;
7. no trace of an earlier JPEG compression in its pixels before one with such a trace (a
   re-save, an edit saved again, a mirrored copy:
   :func:`vsearch.imaging.provenance.prior_compression`). Decoding costs, so steps 6 and 7 are
   measured only for files that tie, on every step above, with another file they may be
   grouped with, and of at least 128 x 128 pixels;
8. the higher JPEG quality (from the quantisation tables): a re-save at a lower quality is
   coarser. A lossless file counts above any JPEG, unless its pixels sit on a JPEG's grid (a
   JPEG saved as PNG): then it counts as that JPEG's quality (read from the grid, less 3 for
   the error of the estimate), and after a JPEG of the same quality (the file it was saved from);
9. a name that does not look like a copy's (``x (1).jpg``, ``x copy.jpg``, ``x - Copy.jpg``,
   ``Copy of x.jpg``, ``x-copy.jpg``);
10. the earliest modification time (a derivative is made after its original, when the files
   kept their times);
11. the larger file;
12. the path, alphabetically.

The other rules put one thing first and then follow the default order: ``pixels`` (the rule
before this one: most pixels, then the largest file, then the oldest, then the path),
``largest`` / ``smallest`` (file size), ``oldest`` / ``newest`` (modification time),
``shortest-path``. Under every rule a symbolic link comes after a regular file.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from vsearch.errors import VsearchError

if TYPE_CHECKING:  # provenance imports Pillow and numpy: a query, which imports this module, must not pay for them
    from vsearch.imaging.provenance import PriorCompression, Provenance

log = logging.getLogger(__name__)

__all__ = ["KEEP_RULES", "FileFacts", "KeepFacts", "check_rule", "copy_like_name", "facts_of", "order"]

KEEP_RULES = ("default", "pixels", "largest", "smallest", "oldest", "newest", "shortest-path")

#: Names that say "a copy of": `x (1)`, `x copy`, `x copy 2`, `x - Copy`, `x - Copy (2)`,
#: `x-copy`, `x_copy`, `Copy of x`, `x (copy)` (the forms file managers and browsers give).
_COPY_NAME = re.compile(r"(\s\(\d+\)|[\s_-]+copy(\s*\(?\d+\)?)?|\s\(copy( \d+)?\))$|^copy of\s", re.IGNORECASE)
#: Quality a lossless file counts as, above any JPEG's 1-100.
_LOSSLESS_QUALITY = 101
#: How far the quality read from a lossless file's pixels may be off (measured: within 2 of the
#: JPEG it was saved from, on sample_images and flowers17); taken off, so that the JPEG wins a tie.
_EMBEDDED_ERROR = 3


class KeepFacts(Protocol):
    """What a keep rule sorts by: one file of a group (``vsearch.duplicates.grouping``'s record)."""

    @property
    def path(self) -> Path: ...
    @property
    def rel(self) -> str: ...
    @property
    def bytes(self) -> int: ...
    @property
    def mtime(self) -> float: ...
    @property
    def pixels(self) -> int | None: ...
    @property
    def digest(self) -> str | None: ...
    @property
    def link(self) -> bool: ...
    @property
    def evidence(self) -> Provenance | None: ...


@dataclass(frozen=True)
class FileFacts:
    """A :class:`KeepFacts` read from a file on disk (:func:`facts_of`), for ordering files that
    are not in an index (a benchmark's planted copies, a test's)."""

    path: Path
    rel: str
    bytes: int
    mtime: float
    pixels: int | None
    digest: str | None
    link: bool
    evidence: Provenance | None


def facts_of(path: Path, root: Path) -> FileFacts:
    """What the keep rules sort ``path`` by, read from the file as grouping reads it; ``rel`` is
    its path relative to ``root``."""
    from vsearch.imaging.provenance import read_provenance  # Pillow: only a caller that reads files pays
    from vsearch.storage.snapshot import path_digest

    st = path.stat()
    evidence = read_provenance(path)
    return FileFacts(path, path.relative_to(root).as_posix(), st.st_size, st.st_mtime, evidence.pixels,
                     path_digest(path), path.is_symlink(), evidence)


def check_rule(rule: str) -> None:
    """Raise :class:`VsearchError` for a rule that is not one of :data:`KEEP_RULES`."""
    if rule not in KEEP_RULES:
        raise VsearchError(f"keep= takes one of {', '.join(KEEP_RULES)} (got {rule!r})")


def copy_like_name(path: Path | str) -> bool:
    """Whether a file's name looks like a copy's (``x (1).jpg``, ``Copy of x.jpg``, ...)."""
    return bool(_COPY_NAME.search(Path(path).stem))


def order(files: Mapping[int, KeepFacts], rule: str, neighbours: Mapping[int, Collection[int]],
          prior: Callable[[Path], PriorCompression] | None = None,
          made_from: Callable[[Path, Path], bool] | None = None) -> list[int]:
    """The keys of ``files``, the one to keep first under ``rule``.

    ``neighbours[i]``: the files ``i`` may share a group with; the evidence that needs the
    pixels decoded (step 6) is measured only for a file that ties, on every step before it,
    with a neighbour of other content. ``prior(path)``: the traces of an earlier JPEG
    compression in the pixels (default :func:`vsearch.imaging.provenance.prior_compression`);
    ``made_from(source, copy)``: whether ``copy``'s pixels show it was made from ``source``
    (default :func:`vsearch.imaging.provenance.made_from`).
    """
    check_rule(rule)
    if prior is None:
        from vsearch.imaging.provenance import prior_compression  # numpy DCTs: only a tie pays for it

        prior = prior_compression
    if made_from is None:
        from vsearch.imaging import provenance

        made_from = provenance.made_from

    heads = {i: _head(f, rule) for i, f in files.items()}
    measured: dict[int, PriorCompression] = {}
    made_from_another: set[int] = set()
    compared: set[frozenset[int]] = set()
    if rule != "pixels":
        for i, f in files.items():
            for j in neighbours.get(i, ()):
                other = files.get(j)
                if other is not None and heads[j] == heads[i] and other.digest != f.digest:
                    for k in (i, j):
                        if k not in measured:
                            measured[k] = prior(files[k].path)
                    if frozenset((i, j)) not in compared:  # each pair once, both ways: only one way is evidence
                        compared.add(frozenset((i, j)))
                        j_from_i, i_from_j = made_from(f.path, other.path), made_from(other.path, f.path)
                        if j_from_i != i_from_j:
                            made_from_another.add(j if j_from_i else i)
    return sorted(files, key=lambda i: (heads[i], i in made_from_another,
                                        *_tail(files[i], rule, measured.get(i))))


def _head(f: KeepFacts, rule: str) -> tuple[Any, ...]:
    """The steps before the pixel evidence (1-5 of the default order, after the rule's own)."""
    e = f.evidence
    taken = e.taken if e is not None else None
    default = (not (e is not None and e.raw), not (e is not None and e.camera), taken is None, taken or 0,
               -(f.pixels or 0))
    if rule == "pixels":  # the rule before the default: most pixels, then largest file, oldest, path
        return (f.link, -(f.pixels or 0), -f.bytes, f.mtime, f.rel)
    first: tuple[Any, ...] = {
        "largest": (-f.bytes,), "smallest": (f.bytes,), "oldest": (f.mtime,), "newest": (-f.mtime,),
        "shortest-path": (len(f.rel),),
    }.get(rule, ())
    return (f.link, *first, *default)


def _tail(f: KeepFacts, rule: str, measured: PriorCompression | None) -> tuple[Any, ...]:
    """The traces of an earlier compression and the steps after it (7-12 of the default order)."""
    if rule == "pixels":
        return ()
    e = f.evidence
    lossless = e is not None and e.lossless
    found = measured is not None and measured.found
    converted = lossless and measured is not None and measured.embedded is not None
    if converted:
        assert measured is not None and measured.embedded is not None
        quality = measured.embedded - _EMBEDDED_ERROR
    else:
        quality = _LOSSLESS_QUALITY if lossless else ((e.quality if e is not None else None) or 0)
    return (found, -quality, converted, copy_like_name(f.rel), f.mtime, -f.bytes, f.rel)
