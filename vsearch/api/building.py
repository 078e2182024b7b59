"""The API's offline stage: bring an index up to date with a folder, as ``vsearch build-index``.

    folder -> (indexing.pipeline) embed what is new -> commit -> (indexing.derived) DBA copy,
    approximate index -> an open :class:`~vsearch.api.index.Index`
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vsearch.api.common import PathLike, index_dir_of
from vsearch.api.index import Index
from vsearch.defaults import DEFAULT_BATCH_SIZE, DEFAULT_TREES, MAX_BATCH_SIZE, MAX_DBA, MAX_TREES
from vsearch.errors import VsearchError

if TYPE_CHECKING:  # Pillow comes with the pipeline: only a build pays for it (imported when called)
    from vsearch.indexing.pipeline import Progress  # Pillow and the pipeline: only a build pays for them

__all__ = ["BuildOptions", "build", "build_index"]


@dataclass(frozen=True)
class BuildOptions:
    """Everything a build is told, checked as a whole before any work (see :func:`build_index`
    for each field's meaning)."""

    model: str | None = None
    trees: int | None = DEFAULT_TREES
    exclude: tuple[str, ...] = field(default=())
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int | None = None
    device: str = "auto"
    max_pixels: int | None = None
    dba: int = 0
    rebuild: bool = False
    engine: str = "local"
    address: str | None = None
    approximate: str = "auto"
    vectors: str | None = None
    refit: bool = False

    def __post_init__(self) -> None:
        # One glob, not its letters: a bare string is one pattern.
        exclude = (self.exclude,) if isinstance(self.exclude, str) else tuple(self.exclude)
        object.__setattr__(self, "exclude", exclude)
        if self.trees is not None and (isinstance(self.trees, bool) or self.trees < 1):
            raise VsearchError(f"trees must be 1 or more, or None to skip the Annoy index (got {self.trees!r})")
        if self.trees is not None and self.trees > MAX_TREES:
            raise VsearchError(f"trees= takes at most {MAX_TREES} (got {self.trees})")
        if isinstance(self.dba, bool) or not 0 <= self.dba <= MAX_DBA:
            raise VsearchError(f"dba= takes 0 to {MAX_DBA} neighbours (got {self.dba!r})")
        if self.dba and self.trees is None:
            raise VsearchError("dba needs the Annoy step: give trees as well (or dba=0)")
        if isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise VsearchError(f"batch_size must be 1 or more (got {self.batch_size!r})")
        if self.batch_size > MAX_BATCH_SIZE:
            raise VsearchError(f"batch_size= takes at most {MAX_BATCH_SIZE} images (got {self.batch_size})")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise VsearchError(f"max_pixels must be 1 or more (got {self.max_pixels})")


def build_index(
    folder: PathLike,
    index_dir: PathLike | None = None,
    *,
    model: str | None = None,
    trees: int | None = DEFAULT_TREES,
    exclude: Sequence[str] = (),
    progress: Callable[[Progress], None] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str = "auto",
    max_pixels: int | None = None,
    dba: int = 0,
    rebuild: bool = False,
    on_note: Callable[[str], None] | None = None,
    engine: str = "local",
    address: str | None = None,
    approximate: str = "auto",
    vectors: str | None = None,
    refit: bool = False,
) -> Index:
    """Bring the index at ``index_dir`` up to date with ``folder``; return it, open.

    Embeds only what is new or changed (a re-run on an unchanged folder loads no model),
    commits it, then builds the Annoy index with ``trees`` trees, as ``vsearch build-index``.
    ``trees=None`` stops after embedding, as ``vsearch embed``: no Annoy index is built and no
    database-side augmentation is done.

    ``index_dir``: default :func:`default_index_dir`. ``model``: a model name (default: the
    index's own model, or efficientnet-lite0 for a new index); an index is bound to one model
    and another is refused. ``exclude``: shell-style globs (one, or a list) of paths relative
    to ``folder`` to leave out. ``progress``: called after each batch with a record whose
    ``done`` and ``total`` count the files that needed work. ``workers``: decode threads
    (default one per core). ``device``: auto, cpu, cuda or mps. ``max_pixels``: larger images
    are skipped (default 200 million). ``dba``: database-side augmentation with that many
    neighbours (0 = off; needs the Annoy step, so not with ``trees=None``). ``rebuild``: start
    a damaged index afresh, keeping the vectors of unchanged files where they can be trusted.
    ``on_note``: gets a line saying what a long step (DBA) is doing.
    ``engine``: ``local`` (this process) or ``ray`` (Ray Data model actors, the ``vsearch[ray]``
    extra) on the Ray cluster at ``address`` (None: a local one); same index either way.
    ``vectors``: the format search reads (fp32, fp16, pcaD, pcaDw; see :mod:`vsearch.vectors.compress`;
    default the index's own, fp32 for a new one); a change remakes only the search copy.
    ``refit``: fit its PCA again. ``approximate``: the approximate index built after embedding:
    ``annoy``, ``ivfpq`` (faiss: ``vsearch[scale]``) or ``auto`` (Annoy up to
    :data:`vsearch.vectors.nearest.IVFPQ_FROM` vectors, IVF-PQ above when faiss is installed); it
    replaces the other kind's.

    What the update did is on the returned index's :attr:`Index.summary`.
    """
    options = BuildOptions(model=model, trees=trees, exclude=tuple(exclude) if not isinstance(exclude, str) else (exclude,),
                           batch_size=batch_size, workers=workers, device=device, max_pixels=max_pixels, dba=dba,
                           rebuild=rebuild, engine=engine, address=address, approximate=approximate, vectors=vectors,
                           refit=refit)
    return build(folder, index_dir, options, progress=progress, on_note=on_note)


def build(folder: PathLike, index_dir: PathLike | None, options: BuildOptions, *,
          progress: Callable[[Progress], None] | None = None,
          on_note: Callable[[str], None] | None = None) -> Index:
    """:func:`build_index` with its options as one record."""
    from vsearch.imaging import images  # Pillow: only a build pays for it
    from vsearch.indexing import derived  # Pillow and the pipeline: only a build pays for them
    from vsearch.indexing import pipeline as indexer  # Pillow and the pipeline: only a build pays for them

    derived.check_index_kind(options.approximate)
    if options.approximate == "ivfpq":
        from vsearch.vectors.ivfpq import load_faiss  # faiss: only an IVF-PQ build asks for it

        load_faiss()  # missing faiss: one line before any work, not after the embedding
    where = index_dir_of(index_dir)
    indexing = indexer.IndexOptions(
        model=options.model, batch_size=options.batch_size, workers=options.workers, device=options.device,
        max_pixels=options.max_pixels or images.DEFAULT_MAX_PIXELS, exclude=options.exclude,
        engine=options.engine, address=options.address, vectors=options.vectors, refit=options.refit,
    )
    indexer.check_folder(Path(folder))  # before the index folder is created: a typo leaves nothing behind
    # One writer session for all steps: no other writer can slip in between embedding and Annoy.
    with indexer.open_for_update(where, rebuild=options.rebuild) as store:
        summary = indexer.update(store, Path(folder), indexing, progress=progress)
        if options.trees is not None:
            derived.build_dba(store, options.dba, progress=on_note)
            derived.build_approximate(store, options.approximate, options.trees)
    index = Index(where, device=options.device)
    index._summary = summary
    return index
