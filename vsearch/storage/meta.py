"""What ``meta.json`` commits: the records of one generation and its files, and reading them.

``meta.json`` is written last by every commit (``store``); readers trust it and see exactly
the generation it names. Each optional part (DBA copy, IVF-PQ index, compressed search copy,
trained head) has its own key, absent when not built, so an index without it reads unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vsearch.version import __version__
from vsearch.storage import formats
from vsearch.errors import IndexCorruptError, VsearchError
from vsearch.identity import ModelId

FORMAT_VERSION = 1
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.sqlite"

__all__ = ["FORMAT_VERSION", "MANIFEST_FILE", "META_FILE", "AdapterInfo", "AnnInfo", "DbaInfo", "FormatInfo",
           "IndexMeta", "IvfpqInfo", "read_meta", "rebuild_hint"]


def rebuild_hint(folder: object = "FOLDER") -> str:
    """The one remedy for an index whose files cannot be trusted."""
    return f"`build_index({folder}, rebuild=True)` repairs it"


@dataclass(frozen=True)
class AnnInfo:
    """The Annoy index that belongs to one generation of vectors."""

    file: str
    trees: int
    metric: str = "angular"
    size: int | None = None  # bytes, recorded when built; absent in indexes from before


@dataclass(frozen=True)
class IvfpqInfo:
    """The IVF-PQ index (faiss) that belongs to one generation of vectors, in place of Annoy.

    Its own ``meta.json`` key ("ivfpq"), so an index without one, and any older vsearch
    reading one with it, sees exactly the Annoy record it always did. ``dim``: of the vectors
    it indexes (those search ranks against); ``size`` and ``sha256`` are checked before faiss
    parses the file.
    """

    file: str
    nlist: int
    m: int
    nbits: int
    nprobe: int
    train: int
    dim: int
    size: int
    sha256: str
    seed: int = 0


@dataclass(frozen=True)
class DbaInfo:
    """A database-side augmented copy of one generation's vectors (see ``rerank``)."""

    file: str
    neighbours: int


@dataclass(frozen=True)
class FormatInfo:
    """The search copy of one generation's vectors in a compressed format (made by :mod:`vsearch.vectors.compress`).

    ``name``: the format (``fp16``, ``pca256w`` ...); ``file``: the copy, (count, ``dim``) of
    ``dtype``; ``transform``: the PCA file it was made with and ``sha256``, that PCA's
    :attr:`~vsearch.vectors.compress.Pca.digest` (both None for fp16).
    """

    name: str
    file: str
    dim: int
    dtype: str
    transform: str | None = None
    sha256: str | None = None

    def check(self, model_dim: int) -> None:
        """ValueError when the record contradicts itself or the model (name, dim, dtype, transform)."""
        fmt = formats.parse_format(self.name)
        want_dim = fmt.dim if fmt.dim is not None else model_dim
        names = [self.file] + ([self.transform] if self.transform is not None else [])
        if (not fmt.compressed or self.dim != want_dim or self.dtype != fmt.dtype
                or (fmt.kind == "pca") != (self.transform is not None and self.sha256 is not None)
                or not all(isinstance(n, str) and n and "/" not in n for n in names)):
            raise ValueError(f"vectors_format {self.name}: dim {self.dim}, dtype {self.dtype}, "
                             f"transform {self.transform} do not fit a {model_dim}-d model")


@dataclass(frozen=True)
class AdapterInfo:
    """A trained projection head (``vsearch train``; see ``adapter``): its file and identity.

    ``trained_on``: how many positive pairs it was fitted on.
    """

    file: str
    sha256: str
    dim_in: int
    dim_out: int
    trained_on: int
    epochs: int
    seed: int
    judgments: int = 0  # judged pairs among them (--use-judgments)


@dataclass(frozen=True)
class IndexMeta:
    """What ``meta.json`` commits."""

    generation: int
    model: ModelId
    root: str
    count: int
    dim: int
    skipped: int
    vectors: str
    ann: AnnInfo | None
    updated: str
    dba: DbaInfo | None = None  # optional key: absent from meta.json when not built
    ivfpq: IvfpqInfo | None = None  # optional key, likewise
    vectors_format: FormatInfo | None = None  # optional key: absent for fp32 (no search copy)
    adapter: AdapterInfo | None = None  # optional key: absent until `vsearch train`

    @property
    def space_dim(self) -> int:
        """Dimensions of the search space: the search copy's, else the model's."""
        return self.dim if self.vectors_format is None else self.vectors_format.dim

    @property
    def space_file(self) -> str:
        """The file of the search-space vectors: the search copy, else the source vectors."""
        return self.vectors if self.vectors_format is None else self.vectors_format.file

    def to_dict(self) -> dict[str, Any]:
        ann = None if self.ann is None else {k: v for k, v in vars(self.ann).items() if v is not None}
        return {
            "format": "vsearch-index", "format_version": FORMAT_VERSION, "vsearch_version": __version__,
            "generation": self.generation, "model": self.model.to_dict(), "root": self.root,
            "count": self.count, "dim": self.dim, "skipped": self.skipped, "vectors": self.vectors,
            "manifest": MANIFEST_FILE, "ann": ann, "updated": self.updated,
            **({"dba": vars(self.dba).copy()} if self.dba is not None else {}),
            **({"ivfpq": vars(self.ivfpq).copy()} if self.ivfpq is not None else {}),
            **({"vectors_format": vars(self.vectors_format).copy()} if self.vectors_format is not None else {}),
            **({"adapter": vars(self.adapter).copy()} if self.adapter is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexMeta:
        """Inverse of :meth:`to_dict`; a value of the wrong type raises TypeError."""
        ann, dba, fmt, head = data.get("ann"), data.get("dba"), data.get("vectors_format"), data.get("adapter")
        meta = cls(
            generation=int(data["generation"]), model=ModelId.from_dict(data["model"]), root=data["root"],
            count=int(data["count"]), dim=int(data["dim"]), skipped=int(data.get("skipped", 0)),
            vectors=data["vectors"], ann=AnnInfo(**ann) if ann else None, updated=data.get("updated", ""),
            dba=DbaInfo(**dba) if dba else None, vectors_format=FormatInfo(**fmt) if fmt else None,
            adapter=AdapterInfo(**head) if head else None,
            ivfpq=IvfpqInfo(**data["ivfpq"]) if data.get("ivfpq") else None,
        )
        names = [meta.vectors] + [x.file for x in (meta.ann, meta.dba, meta.ivfpq, meta.adapter) if x is not None]
        if not isinstance(meta.root, str) or not all(isinstance(n, str) and "/" not in n for n in names):
            raise TypeError("root and file names must be strings")
        if meta.count < 0 or meta.dim != meta.model.dim:
            raise ValueError(f"count {meta.count}, dim {meta.dim} for a {meta.model.dim}-d model")
        if meta.vectors_format is not None:
            try:
                meta.vectors_format.check(meta.dim)
            except VsearchError as exc:  # a format name this vsearch does not know
                raise ValueError(str(exc)) from None
        if meta.adapter is not None and meta.adapter.dim_in != meta.space_dim:
            raise ValueError(f"adapter takes {meta.adapter.dim_in}-d vectors, the search space has {meta.space_dim}")
        return meta


def read_meta(index_dir: Path) -> IndexMeta:
    """Read and check ``meta.json``."""
    path = index_dir / META_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"cannot read {path}: {exc}; {rebuild_hint()}") from None
    if not isinstance(data, dict) or data.get("format") != "vsearch-index":
        raise IndexCorruptError(f"{path} is not a vsearch index; {rebuild_hint()}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexCorruptError(
            f"index at {index_dir} has format version {version}; this vsearch ({__version__}) reads "
            f"version {FORMAT_VERSION}. Rebuild it with `build_index(FOLDER, rebuild=True)`")
    try:
        return IndexMeta.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IndexCorruptError(f"{path} is incomplete or damaged ({exc!r}); {rebuild_hint()}") from None
