"""What ``meta.json`` commits: the records of one generation and its files, and reading them.

``meta.json`` is written last by every commit (``store``); readers trust it and see exactly
the generation it names. Each optional part (DBA copy, IVF-PQ index, compressed search copy,
trained head) has its own key, absent when not built, so an index without it reads unchanged.
So has ``checksums`` (:mod:`vsearch.storage.checksums`): the size and SHA-256 of every file the
generation names, absent in an index committed before they were recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from vsearch.version import __version__
from vsearch.storage import formats, vectorfiles
from vsearch.storage.checksums import FileSum
from vsearch.storage.regular import read_regular, regular_problem
from vsearch.errors import IndexCorruptError, VsearchError
from vsearch.identity import ModelId

FORMAT_VERSION = 1
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.sqlite"

__all__ = ["FORMAT_VERSION", "MANIFEST_FILE", "META_FILE", "AdapterInfo", "AnnInfo", "DbaInfo", "FormatInfo",
           "IndexMeta", "IvfpqInfo", "known_root", "read_meta", "rebuild_hint"]


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
    checksums: tuple[FileSum, ...] = ()  # optional key: absent in an index from before checksums

    @property
    def space_dim(self) -> int:
        """Dimensions of the search space: the search copy's, else the model's."""
        return self.dim if self.vectors_format is None else self.vectors_format.dim

    @property
    def space_file(self) -> str:
        """The file of the search-space vectors: the search copy, else the source vectors."""
        return self.vectors if self.vectors_format is None else self.vectors_format.file

    def named_files(self) -> list[tuple[str, str]]:
        """(role, file name) of every file this generation names besides ``meta.json`` and the
        manifest, in the order a reader meets them: the vectors, the search copy and its
        transform, the DBA copy, the approximate index, the head and its projected copy."""
        out = [("vectors", self.vectors)]
        if self.vectors_format is not None:
            out.append(("search copy", self.vectors_format.file))
            if self.vectors_format.transform is not None:
                out.append(("transform", self.vectors_format.transform))
        if self.dba is not None:
            out.append(("DBA copy", self.dba.file))
        if self.ann is not None:
            out.append(("Annoy index", self.ann.file))
        if self.ivfpq is not None:
            out.append(("IVF-PQ index", self.ivfpq.file))
        if self.adapter is not None:
            out.append(("head", self.adapter.file))
            out.append(("projected copy", vectorfiles.projected_name(self.space_file, self.adapter.sha256)))
        return out

    def checksum(self, name: str) -> FileSum | None:
        """What the commit recorded of file ``name`` (None: no checksum recorded for it)."""
        return next((s for s in self.checksums if s.name == name), None)

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
            **({"checksums": {s.name: {"size": s.size, "sha256": s.sha256} for s in self.checksums}}
               if self.checksums else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexMeta:
        """Inverse of :meth:`to_dict`; a value of the wrong type raises TypeError."""
        ann, dba, fmt, head = data.get("ann"), data.get("dba"), data.get("vectors_format"), data.get("adapter")
        meta = cls(
            generation=int(data["generation"]), model=ModelId.from_dict(data["model"]), root=data["root"],
            count=int(data["count"]), dim=int(data["dim"]), skipped=int(data.get("skipped", 0)),
            vectors=data["vectors"], ann=_record(AnnInfo, ann) if ann else None, updated=data.get("updated", ""),
            dba=_record(DbaInfo, dba) if dba else None, vectors_format=_record(FormatInfo, fmt) if fmt else None,
            adapter=_record(AdapterInfo, head) if head else None,
            ivfpq=_record(IvfpqInfo, data["ivfpq"]) if data.get("ivfpq") else None,
            checksums=_checksums(data.get("checksums")),
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


def _checksums(data: Any) -> tuple[FileSum, ...]:
    """The ``checksums`` key read back (absent: none); ValueError or TypeError when damaged."""
    if not data:
        return ()
    if not isinstance(data, dict):
        raise TypeError("checksums must be an object")
    out = []
    for name, record in data.items():
        size, sha = record["size"], record["sha256"]
        if (not name or "/" in name or isinstance(size, bool) or not isinstance(size, int) or size < 0
                or not isinstance(sha, str) or len(sha) != 64):
            raise ValueError(f"checksum of {name!r} is damaged")
        out.append(FileSum(name, size, sha))
    return tuple(sorted(out, key=lambda s: s.name))


_Record = TypeVar("_Record")
#: The value types a part of ``meta.json`` may hold, by annotation.
_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "str": (str,), "int | None": (int, type(None)),
                                       "str | None": (str, type(None))}


def _record(cls: type[_Record], data: Any) -> _Record:
    """One part of ``meta.json`` (``ann``, ``ivfpq``...) as its record, every field of the type
    it is declared with: a hand-edited ``"nprobe": "x"`` is damage found here, in one line, not
    a ValueError deep in a search. TypeError when it is not."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} must be an object")
    record = cls(**data)
    for f in dataclasses.fields(record):  # type: ignore[arg-type]  # cls is one of this module's dataclasses
        value, kinds = getattr(record, f.name), _TYPES.get(str(f.type))
        if kinds is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            raise TypeError(f"{cls.__name__}.{f.name} is {value!r}, not {f.type}")
    return record


def read_meta(index_dir: Path) -> IndexMeta:
    """Read and check ``meta.json``."""
    path = index_dir / META_FILE
    try:
        data = json.loads(read_regular(path))  # a FIFO or device in its place: refused, never waited on
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"cannot read {path}: {exc}; {rebuild_hint(known_root(index_dir))}") from None
    if not isinstance(data, dict) or data.get("format") != "vsearch-index":
        raise IndexCorruptError(f"{path} is not a vsearch index; {rebuild_hint(known_root(index_dir))}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexCorruptError(
            f"index at {index_dir} has format version {version}; this vsearch ({__version__}) reads "
            f"version {FORMAT_VERSION}. Rebuild it with `build_index({known_root(index_dir)}, rebuild=True)`")
    try:
        return IndexMeta.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:  # Overflow: "generation": 1e999
        raise IndexCorruptError(f"{path} is incomplete or damaged ({exc!r}); {rebuild_hint(known_root(index_dir))}") from None


def _root_in(data: dict[str, Any]) -> str:
    """The image folder a (damaged) ``meta.json`` still names, or ``FOLDER`` when it names none."""
    root = data.get("root")
    return root if isinstance(root, str) and root else "FOLDER"


def known_root(index_dir: Path) -> str:
    """The image folder of the index at ``index_dir`` as far as it can still be read, for a
    remedy when one of its files is damaged: ``meta.json``'s root, else the manifest's, else
    ``FOLDER``. Never raises, never waits on a FIFO."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(read_regular(index_dir / META_FILE))
        if isinstance(data, dict) and _root_in(data) != "FOLDER":
            return _root_in(data)
    path = index_dir / MANIFEST_FILE
    with contextlib.suppress(OSError, sqlite3.Error):
        if regular_problem(path.stat()) is None:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                row = db.execute("SELECT value FROM kv WHERE key = 'root'").fetchone()
                if row is not None and isinstance(row[0], str) and row[0]:
                    return str(row[0])
    return "FOLDER"
