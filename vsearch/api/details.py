"""What an index is, as ``vsearch info`` shows it: one record, read from ``meta.json`` and the
files in the index folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vsearch.retrieval.freshness import Freshness
from vsearch.storage.snapshot import Snapshot

__all__ = ["IndexDetails"]


@dataclass(frozen=True)
class IndexDetails:
    """The model, the folder, counts, the files' sizes in bytes, the generation, the last update
    and what a quick freshness check saw (fields in the order ``vsearch info`` shows them)."""

    index: str
    model: str
    dim: int
    framing: str
    pooling: str
    folder: str
    images: int
    skipped: int
    generation: int
    updated: str
    freshness: str
    annoy_trees: int | None
    vectors_format: str
    search_copy_bytes: int
    vectors_bytes: int
    ann_bytes: int
    manifest_bytes: int
    total_bytes: int

    @classmethod
    def of(cls, view: Snapshot, freshness: Freshness) -> IndexDetails:
        """The details of an open index, with what :func:`vsearch.retrieval.freshness.check` saw."""
        meta = view.meta
        assert meta is not None  # a reader has a committed index
        model = meta.model
        folder = Path(view.dir).resolve()
        files = [p for p in folder.rglob("*") if p.is_file()]

        def size(*names: str | None) -> int:
            return sum((folder / n).stat().st_size for n in names if n and (folder / n).is_file())

        warning = freshness.warning()
        fmt = meta.vectors_format
        return cls(
            index=str(folder),
            model=model.name,
            dim=meta.dim,
            framing=f"{model.preprocess.framing} {model.preprocess.size}px",
            pooling=model.pooling,
            folder=meta.root,
            images=meta.count,
            skipped=len(view.skipped()),
            generation=meta.generation,
            updated=meta.updated,
            freshness=warning.removeprefix("warning: ") if warning else
            ("up to date" if freshness.complete else "no change seen (checked part of the folder)"),
            annoy_trees=meta.ann.trees if meta.ann else None,
            vectors_format=fmt.name if fmt else "fp32",
            search_copy_bytes=size(*((fmt.file, fmt.transform) if fmt else ())),
            vectors_bytes=size(meta.vectors, meta.dba.file if meta.dba else None),
            ann_bytes=size(meta.ann.file if meta.ann else meta.ivfpq.file if meta.ivfpq else None),
            manifest_bytes=sum(p.stat().st_size for p in files if p.name.startswith("manifest")),
            total_bytes=sum(p.stat().st_size for p in files),
        )
