"""The index directory: manifest, vectors, metadata, atomic writes, the writer's lock.

Layout (format version 1)::

    INDEX_DIR/
      meta.json             commit record of the last consolidation; written last (see below)
      manifest.sqlite       one row per file: path, size, mtime_ns, digest, row, pending chunk, skip
      chunks/NNNNNN.npy     vectors embedded since the last consolidation (crash-safe progress)
      vectors.GGGGGG.npy    float32 (count, dim), L2-normalised; row i = the file whose row is i
      index.GGGGGG.ann      Annoy (angular) over that generation's vectors, when built
      vectors.GGGGGG.dbaN.npy  optional: database-side augmented copy of the vectors (build-index
                            --dba N); searched instead of the raw vectors, which stay the
                            stored-vector fast path's source. Annoy is then built over it.
      lock                  flock'd by the one writer

Why a generation number in the file names: a consolidation writes the new vectors beside the
old ones, renumbers the manifest and bumps its generation in one SQLite transaction, then
replaces ``meta.json``. A reader trusts ``meta.json``; if SQLite's generation disagrees with it
(a crash between the two) the reader stops with a clear message and the next writer finishes
the commit. Nothing half-written is ever loaded: every file goes to a temporary name in the same
folder, is flushed and fsynced, then ``os.replace``d.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, atomic
from .errors import IndexBusyError, IndexCorruptError, IndexMissingError, ModelMismatchError, VsearchError
from .models import ModelId

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SCHEMA_VERSION = 1
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.sqlite"
CHUNK_DIR = "chunks"
LOCK_FILE = "lock"
#: A pending vector whose source is the current generation's vectors file, not a chunk.
FROM_VECTORS = -1


@dataclass(frozen=True)
class FileEntry:
    """A manifest row: one file under the image root."""

    id: int
    path: str  # POSIX, relative to the image root
    size: int
    mtime_ns: int
    digest: str | None
    row: int | None  # row in the committed vectors, or None
    skip_reason: str | None


@dataclass(frozen=True)
class AnnInfo:
    """The Annoy index that belongs to one generation of vectors."""

    file: str
    trees: int
    metric: str = "angular"


@dataclass(frozen=True)
class DbaInfo:
    """A database-side augmented copy of one generation's vectors (see ``rerank``)."""

    file: str
    neighbours: int


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "vsearch-index",
            "format_version": FORMAT_VERSION,
            "vsearch_version": __version__,
            "generation": self.generation,
            "model": self.model.to_dict(),
            "root": self.root,
            "count": self.count,
            "dim": self.dim,
            "skipped": self.skipped,
            "vectors": self.vectors,
            "manifest": MANIFEST_FILE,
            "ann": None if self.ann is None else vars(self.ann).copy(),
            "updated": self.updated,
            **({"dba": vars(self.dba).copy()} if self.dba is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexMeta:
        ann = data.get("ann")
        dba = data.get("dba")
        return cls(
            generation=int(data["generation"]),
            model=ModelId.from_dict(data["model"]),
            root=data["root"],
            count=int(data["count"]),
            dim=int(data["dim"]),
            skipped=int(data.get("skipped", 0)),
            vectors=data["vectors"],
            ann=AnnInfo(**ann) if ann else None,
            updated=data.get("updated", ""),
            dba=DbaInfo(**dba) if dba else None,
        )


def file_digest(data: bytes) -> str:
    """The manifest's content digest (BLAKE2b-128, hex): how renamed, moved and copied files,
    and query photos already in the index, are recognised."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` a float32 array to ``path`` atomically."""
    with atomic.replacing(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array, dtype=np.float32))


def _vectors_name(generation: int) -> str:
    return f"vectors.{generation:06d}.npy"


def dba_name(generation: int, neighbours: int) -> str:
    """File name of the database-side augmented vectors for one generation."""
    return f"vectors.{generation:06d}.dba{neighbours}.npy"


def ann_name(generation: int) -> str:
    """File name of the Annoy index for one generation."""
    return f"index.{generation:06d}.ann"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    digest TEXT,
    row INTEGER,
    chunk INTEGER,
    chunk_row INTEGER,
    skip_reason TEXT,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS files_digest ON files(digest);
CREATE UNIQUE INDEX IF NOT EXISTS files_row ON files(row);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dirs (path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL);
"""


class Store:
    """An index directory. Readers open it plainly; one writer at a time holds its lock."""

    def __init__(self, index_dir: Path, db: sqlite3.Connection, meta: IndexMeta | None, lock_fd: int | None):
        self.dir = index_dir
        self.db = db
        self.meta = meta
        self._lock_fd = lock_fd
        self._vectors: np.ndarray | None = None
        self._search_vectors: np.ndarray | None = None

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, index_dir: Path, *, write: bool = False) -> Store:
        """Open an index. ``write=True`` creates it if needed, takes the lock and repairs.

        A reader needs a committed index (``meta.json``) that agrees with the manifest.
        """
        index_dir = Path(index_dir).expanduser().absolute()
        if not write:
            if not (index_dir / META_FILE).exists():
                if (index_dir / MANIFEST_FILE).exists():
                    raise IndexMissingError(
                        f"index at {index_dir} was never completed; run `vsearch build-index FOLDER` to finish it"
                    )
                raise IndexMissingError(
                    f"no index at {index_dir}; build one with `vsearch build-index FOLDER`"
                    " (or point --index-dir / VSEARCH_INDEX_DIR at an existing one)"
                )
            db = _connect(index_dir / MANIFEST_FILE, readonly=True)
            store = cls(index_dir, db, _read_meta(index_dir), None)
            store._check_consistent()
            return store

        if index_dir.exists() and not index_dir.is_dir():
            raise VsearchError(f"--index-dir {index_dir} exists and is not a folder")
        if index_dir.exists() and any(index_dir.iterdir()) and not (
            (index_dir / MANIFEST_FILE).exists() or (index_dir / META_FILE).exists()
        ):
            raise VsearchError(
                f"--index-dir {index_dir} is a non-empty folder that holds no vsearch index; "
                "choose an empty or new folder"
            )
        (index_dir / CHUNK_DIR).mkdir(parents=True, exist_ok=True)
        lock_fd = _take_lock(index_dir / LOCK_FILE)
        try:
            db = _connect(index_dir / MANIFEST_FILE, readonly=False)
            meta = _read_meta(index_dir) if (index_dir / META_FILE).exists() else None
            store = cls(index_dir, db, meta, lock_fd)
            store._recover()
        except BaseException:
            os.close(lock_fd)
            raise
        return store

    def close(self) -> None:
        """Release the lock and the database."""
        self._vectors = None
        self._search_vectors = None
        self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- key/value state in the manifest ---------------------------------------------------

    def _get(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def _set(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (key, value))

    @property
    def generation(self) -> int:
        return int(self._get("generation", "0"))

    @property
    def root(self) -> Path | None:
        """The image root this index covers (recorded at the first write)."""
        value = self._get("root")
        return Path(value) if value else None

    @property
    def model_id(self) -> ModelId | None:
        """The model bound to this index (recorded before its first vector)."""
        value = self._get("model")
        return ModelId.from_dict(json.loads(value)) if value else None

    def bind(self, root: Path, model_name: str | None) -> None:
        """Check (or, for a new index, record) the image root and model name.

        Only the name is compared here, so that an unchanged re-run needs no model; the full
        identity (weights hash, preprocessing) is checked by :meth:`bind_model` once loaded.
        """
        root = Path(root).resolve()
        known_root = self.root
        if known_root is not None and known_root != root:
            raise VsearchError(
                f"index at {self.dir} covers {known_root}, not {root}; use another --index-dir "
                "for this folder"
            )
        known = self.model_id
        if known is not None and model_name and model_name != known.name:
            raise ModelMismatchError(
                f"index at {self.dir} was built with model {known.name}; it cannot mix in vectors "
                f"from {model_name}. Leave out --model to use {known.name}, or use another --index-dir"
            )
        with self.db:
            self._set("root", str(root))

    def bind_model(self, model_id: ModelId) -> None:
        """Record the model for a new index, or refuse one that would make other vectors."""
        known = self.model_id
        if known is None:
            with self.db:
                self._set("model", json.dumps(model_id.to_dict()))
            return
        if not known.same_vectors_as(model_id):
            raise ModelMismatchError(
                f"index at {self.dir} was built with {known.name}, but the model loaded now differs "
                f"({known.differences(model_id)}); its vectors would not be comparable. "
                "Rebuild the index in a new --index-dir"
            )

    # --- manifest reads ---------------------------------------------------------------------

    def entry(self, path: str) -> FileEntry | None:
        """The manifest entry for one relative path."""
        row = self.db.execute(
            "SELECT id, path, size, mtime_ns, digest, row, skip_reason FROM files "
            "WHERE path = ? AND deleted = 0",
            (path,),
        ).fetchone()
        return FileEntry(*row) if row else None

    def entry_by_digest(self, digest: str) -> FileEntry | None:
        """A committed entry with this content digest, if any."""
        row = self.db.execute(
            "SELECT id, path, size, mtime_ns, digest, row, skip_reason FROM files "
            "WHERE digest = ? AND row IS NOT NULL LIMIT 1",
            (digest,),
        ).fetchone()
        return FileEntry(*row) if row else None

    def entries(self) -> Iterator[FileEntry]:
        """Every live entry, skipped ones included, in path order."""
        cur = self.db.execute(
            "SELECT id, path, size, mtime_ns, digest, row, skip_reason FROM files "
            "WHERE deleted = 0 ORDER BY path"
        )
        for row in cur:
            yield FileEntry(*row)

    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) for every file recorded as skipped."""
        return list(
            self.db.execute(
                "SELECT path, skip_reason FROM files WHERE skip_reason IS NOT NULL AND deleted = 0 ORDER BY path"
            )
        )

    def paths_by_row(self) -> list[str]:
        """Relative path of each committed row, in row order (invariant: row i <-> vectors[i])."""
        paths: list[str | None] = [None] * (self.meta.count if self.meta else 0)
        for row, path in self.db.execute("SELECT row, path FROM files WHERE row IS NOT NULL"):
            if row >= len(paths):
                raise IndexCorruptError(f"manifest row {row} beyond the {len(paths)} vectors in {self.dir}")
            paths[row] = path
        if any(p is None for p in paths):
            raise IndexCorruptError(f"manifest and vectors disagree in {self.dir}; rebuild the index")
        return paths  # type: ignore[return-value]

    def path_of_row(self, row: int) -> str:
        """Relative path of one committed row."""
        found = self.db.execute("SELECT path FROM files WHERE row = ?", (row,)).fetchone()
        if found is None:
            raise IndexCorruptError(f"no manifest entry for vector row {row} in {self.dir}")
        return found[0]

    def abs_path(self, rel: str) -> Path:
        """Absolute path of a manifest path."""
        root = Path(self.meta.root) if self.meta else self.root
        assert root is not None
        return root / rel

    def vectors(self) -> np.ndarray:
        """The committed vectors, memory-mapped read-only, shape (count, dim)."""
        if self._vectors is None:
            if self.meta is None:
                raise IndexMissingError(f"index at {self.dir} has no committed vectors yet")
            path = self.dir / self.meta.vectors
            repair = f"`vsearch build-index {self.meta.root}` repairs the index"
            try:
                vectors = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise IndexCorruptError(f"cannot read {path}: {exc}; {repair}") from None
            if vectors.shape != (self.meta.count, self.meta.dim) or vectors.dtype != np.float32:
                raise IndexCorruptError(
                    f"{path} holds {vectors.shape} {vectors.dtype}, but meta.json says "
                    f"({self.meta.count}, {self.meta.dim}) float32; {repair}"
                )
            self._vectors = vectors  # only once checked: a failed check never leaves it cached
        return self._vectors

    def search_vectors(self) -> np.ndarray:
        """The vectors that search ranks against: the DBA copy when built, else :meth:`vectors`."""
        raw = self.vectors()
        if self.meta is None or self.meta.dba is None:
            return raw
        if self._search_vectors is None:
            path = self.dir / self.meta.dba.file
            try:
                self._search_vectors = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise IndexCorruptError(f"cannot read {path}: {exc}; rebuild with `vsearch build-index`") from None
            if self._search_vectors.shape != raw.shape or self._search_vectors.dtype != np.float32:
                raise IndexCorruptError(f"{path} does not match {self.meta.vectors}; rebuild with `vsearch build-index`")
        return self._search_vectors

    def set_dba(self, dba: DbaInfo | None) -> None:
        """Record (or drop) the DBA copy of the committed vectors; the Annoy index, built over
        the vectors search ranks against, is dropped with it and must be rebuilt."""
        self._require_writer()
        assert self.meta is not None
        self._write_meta(IndexMeta(**{**vars(self.meta), "dba": dba, "ann": None}))
        self._remove_stale()

    def ann_path(self) -> Path | None:
        """Path of the Annoy index of the committed generation, if built."""
        if self.meta is None or self.meta.ann is None:
            return None
        return self.dir / self.meta.ann.file

    def _check_consistent(self) -> None:
        meta = self.meta
        assert meta is not None
        gen = self.generation
        if gen != meta.generation:
            raise IndexCorruptError(
                f"index at {self.dir} was interrupted while committing (manifest generation {gen}, "
                f"meta.json generation {meta.generation}); re-run `vsearch embed` or `build-index` to finish it"
            )
        (n,) = self.db.execute("SELECT COUNT(*) FROM files WHERE row IS NOT NULL").fetchone()
        if n != meta.count:
            raise IndexCorruptError(
                f"index at {self.dir}: manifest has {n} rows but meta.json says {meta.count}; rebuild the index"
            )

    # --- writes (writer only) ---------------------------------------------------------------

    def _require_writer(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("store opened read-only")

    def add_chunk(
        self,
        records: Sequence[tuple[str, int, int, str]],
        vectors: np.ndarray,
    ) -> None:
        """Commit freshly embedded vectors: ``records[i] = (path, size, mtime_ns, digest)``.

        The chunk file is written first; the manifest transaction that points at it second, so a
        crash between the two leaves an orphan chunk that the next writer deletes.
        """
        self._require_writer()
        if len(records) != len(vectors):
            raise ValueError("records and vectors differ in length")
        if not records:
            return
        number = int(self._get("next_chunk", "0"))
        atomic_save_npy(self.dir / CHUNK_DIR / f"{number:06d}.npy", vectors)
        with self.db:
            self._set("next_chunk", str(number + 1))
            for i, (path, size, mtime_ns, digest) in enumerate(records):
                self._upsert(path, size, mtime_ns, digest, chunk=number, chunk_row=i, skip_reason=None)

    def add_reference(self, path: str, size: int, mtime_ns: int, digest: str, source: FileEntry) -> None:
        """A new path whose content equals ``source``'s: it shares that vector, no embedding."""
        self._require_writer()
        chunk, chunk_row = self.db.execute(
            "SELECT chunk, chunk_row FROM files WHERE id = ?", (source.id,)
        ).fetchone()
        if chunk is None:
            chunk, chunk_row = FROM_VECTORS, source.row
        with self.db:
            self._upsert(path, size, mtime_ns, digest, chunk=chunk, chunk_row=chunk_row, skip_reason=None)

    def move(self, entry: FileEntry, new_path: str, size: int, mtime_ns: int) -> None:
        """A file renamed or moved: same content, so the same vector row, under a new path."""
        self._require_writer()
        with self.db:
            self.db.execute("DELETE FROM files WHERE path = ? AND id != ?", (new_path, entry.id))
            self.db.execute(
                "UPDATE files SET path = ?, size = ?, mtime_ns = ?, deleted = 0 WHERE id = ?",
                (new_path, size, mtime_ns, entry.id),
            )

    def touch(self, entry: FileEntry, size: int, mtime_ns: int) -> None:
        """Same path, same content, new mtime: remember the new stat so the next run skips it."""
        self._require_writer()
        with self.db:
            self.db.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE id = ?", (size, mtime_ns, entry.id))

    def record_skip(self, path: str, size: int, mtime_ns: int, reason: str) -> None:
        """A file that could not be embedded; kept so an unchanged re-run does not retry it."""
        self._require_writer()
        with self.db:
            self._upsert(path, size, mtime_ns, None, chunk=None, chunk_row=None, skip_reason=reason)
            # A file that turned bad loses its old vector at the next consolidation.
            self.db.execute("UPDATE files SET row = NULL WHERE path = ? AND skip_reason IS NOT NULL", (path,))

    def mark_deleted(self, paths: Iterable[str]) -> int:
        """Files gone from disk; they leave the vectors at the next consolidation."""
        self._require_writer()
        with self.db:
            cur = self.db.executemany("UPDATE files SET deleted = 1 WHERE path = ?", ((p,) for p in paths))
        return cur.rowcount

    def _upsert(self, path: str, size: int, mtime_ns: int, digest: str | None, *, chunk: int | None,
                chunk_row: int | None, skip_reason: str | None) -> None:
        self.db.execute(
            "INSERT INTO files(path, size, mtime_ns, digest, chunk, chunk_row, skip_reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET size = excluded.size, "
            "mtime_ns = excluded.mtime_ns, digest = excluded.digest, chunk = excluded.chunk, "
            "chunk_row = excluded.chunk_row, skip_reason = excluded.skip_reason, deleted = 0",
            (path, size, mtime_ns, digest, chunk, chunk_row, skip_reason),
        )

    def pending_changes(self) -> bool:
        """True when the manifest holds work that the committed vectors do not reflect yet."""
        (n,) = self.db.execute(
            "SELECT COUNT(*) FROM files WHERE chunk IS NOT NULL OR deleted = 1 "
            "OR (row IS NOT NULL AND skip_reason IS NOT NULL)"
        ).fetchone()
        return n > 0 or self.meta is None or self.meta.generation != self.generation

    def consolidate(self, block: int = 4096) -> IndexMeta:
        """Merge committed vectors and pending chunks into a new generation, in path order.

        Memory stays at one block of rows: the output is a memory-mapped ``.npy`` file filled
        block by block from memory-mapped sources.
        """
        self._require_writer()
        model = self.model_id
        root = self.root
        if model is None or root is None:
            raise IndexMissingError(f"index at {self.dir} holds no vectors yet")
        old_gen = self.generation
        new_gen = old_gen + 1
        sources = self.db.execute(
            "SELECT id, row, chunk, chunk_row FROM files WHERE deleted = 0 AND skip_reason IS NULL "
            "AND (chunk IS NOT NULL OR row IS NOT NULL) ORDER BY path"
        ).fetchall()
        count, dim = len(sources), model.dim
        target = self.dir / _vectors_name(new_gen)
        # Opened only when a row comes from it: a repair (_drop_unreadable_vectors) has none.
        old: np.ndarray | None = None
        chunks: dict[int, np.ndarray] = {}
        with atomic.replacing(target) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(count, dim))
            for start in range(0, count, block):
                for j, (_id, row, chunk, chunk_row) in enumerate(sources[start:start + block], start):
                    if chunk is None or chunk == FROM_VECTORS:
                        if old is None:
                            old = self.vectors_for_generation(old_gen)
                        out[j] = old[row if chunk is None else chunk_row]
                    else:
                        if chunk not in chunks:
                            if len(chunks) > 64:  # bound open maps on huge collections
                                chunks.clear()
                            chunks[chunk] = np.load(self.dir / CHUNK_DIR / f"{chunk:06d}.npy", mmap_mode="r")
                        out[j] = chunks[chunk][chunk_row]
            out.flush()
            del out
        chunks.clear()
        old = None
        (skipped,) = self.db.execute(
            "SELECT COUNT(*) FROM files WHERE skip_reason IS NOT NULL AND deleted = 0"
        ).fetchone()
        with self.db:
            self.db.execute("DELETE FROM files WHERE deleted = 1")
            self.db.execute("UPDATE files SET row = NULL")
            self.db.executemany(
                "UPDATE files SET row = ?, chunk = NULL, chunk_row = NULL WHERE id = ?",
                ((i, src[0]) for i, src in enumerate(sources)),
            )
            self.db.execute("UPDATE files SET chunk = NULL, chunk_row = NULL WHERE skip_reason IS NOT NULL")
            self._set("generation", str(new_gen))
            self._set("skipped", str(skipped))
        meta = IndexMeta(
            generation=new_gen, model=model, root=str(root), count=count, dim=dim, skipped=skipped,
            vectors=target.name, ann=None, updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        self._write_meta(meta)
        self._remove_stale()
        return meta

    def vectors_for_generation(self, generation: int) -> np.ndarray:
        """The vectors file of one generation (empty array for generation 0)."""
        if generation == 0:
            dim = self.model_id.dim if self.model_id else 0
            return np.zeros((0, dim), dtype=np.float32)
        return np.load(self.dir / _vectors_name(generation), mmap_mode="r")

    def set_ann(self, ann: AnnInfo | None) -> None:
        """Record (or drop) the Annoy index of the committed generation in ``meta.json``."""
        self._require_writer()
        assert self.meta is not None
        self._write_meta(IndexMeta(**{**vars(self.meta), "ann": ann}))
        self._remove_stale()

    def _write_meta(self, meta: IndexMeta) -> None:
        atomic.write_bytes(self.dir / META_FILE, json.dumps(meta.to_dict(), indent=2).encode())
        self.meta = meta
        self._vectors = None
        self._search_vectors = None

    def record_dirs(self, dirs: Iterable[tuple[str, int]]) -> None:
        """Remember each scanned folder's mtime, for the cheap staleness check at query time."""
        self._require_writer()
        with self.db:
            self.db.execute("DELETE FROM dirs")
            self.db.executemany("INSERT OR REPLACE INTO dirs(path, mtime_ns) VALUES (?, ?)", dirs)

    def dirs(self) -> list[tuple[str, int]]:
        """(relative folder, mtime_ns) as recorded at the last scan."""
        return list(self.db.execute("SELECT path, mtime_ns FROM dirs ORDER BY path"))

    # --- recovery -------------------------------------------------------------------------

    def _recover(self) -> None:
        """Finish an interrupted commit, then drop temporary files and orphan chunks."""
        gen = self.generation
        meta_gen = self.meta.generation if self.meta else 0
        if gen != meta_gen:
            vectors = self.dir / _vectors_name(gen)
            model, root = self.model_id, self.root
            (count,) = self.db.execute("SELECT COUNT(*) FROM files WHERE row IS NOT NULL").fetchone()
            (skipped,) = self.db.execute(
                "SELECT COUNT(*) FROM files WHERE skip_reason IS NOT NULL AND deleted = 0"
            ).fetchone()
            if not vectors.exists() or model is None or root is None:
                raise IndexCorruptError(
                    f"index at {self.dir} is damaged (generation {gen} has no vectors file); "
                    "delete the folder and build it again"
                )
            log.info("finishing the interrupted commit of generation %d", gen)
            self._write_meta(IndexMeta(
                generation=gen, model=model, root=str(root), count=count, dim=model.dim,
                skipped=skipped, vectors=vectors.name, ann=None,
                updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            ))
        self._drop_unreadable_vectors()
        self._remove_stale()

    def _drop_unreadable_vectors(self) -> None:
        """Committed vectors that cannot be read (e.g. a truncated file) leave the index.

        Their manifest rows go with them and a smaller generation is committed at once, so the
        index is consistent again and the next update embeds those files anew.
        """
        if self.meta is None:
            return
        try:
            self.vectors()
            return
        except IndexCorruptError as exc:
            log.warning("%s; its %d images will be embedded again", exc, self.meta.count)
        self._vectors = None
        with self.db:
            self.db.execute("DELETE FROM files WHERE row IS NOT NULL OR chunk = ?", (FROM_VECTORS,))
            self.db.execute("DELETE FROM dirs")  # nothing may look up to date now
        self.consolidate()

    def _remove_stale(self) -> None:
        keep = {META_FILE, MANIFEST_FILE, CHUNK_DIR, LOCK_FILE, f"{MANIFEST_FILE}-journal",
                f"{MANIFEST_FILE}-wal", f"{MANIFEST_FILE}-shm"}
        if self.meta is not None:
            keep.add(self.meta.vectors)
            if self.meta.ann is not None:
                keep.add(self.meta.ann.file)
            if self.meta.dba is not None:
                keep.add(self.meta.dba.file)
        for child in self.dir.iterdir():
            if child.name not in keep and (
                child.name.endswith(".tmp") or child.name.startswith(("vectors.", "index."))
            ):
                with contextlib.suppress(OSError):
                    child.unlink()
        live = {
            c for (c,) in self.db.execute("SELECT DISTINCT chunk FROM files WHERE chunk IS NOT NULL")
        }
        for child in (self.dir / CHUNK_DIR).iterdir():
            stem = child.name.split(".")[0].lstrip(".")
            if not stem.isdigit() or int(stem) not in live or child.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    child.unlink()


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            db = sqlite3.connect(path, check_same_thread=False)
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            with db:
                db.execute(
                    "INSERT OR IGNORE INTO kv(key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
        row = db.execute("SELECT value FROM kv WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise IndexCorruptError(f"cannot read manifest {path}: {exc}") from None
    if row is None or int(row[0]) > SCHEMA_VERSION:
        raise IndexCorruptError(
            f"manifest {path} has schema version {row[0] if row else '?'}, newer than this "
            f"vsearch ({__version__}) reads; upgrade vsearch or rebuild the index"
        )
    return db


def _read_meta(index_dir: Path) -> IndexMeta:
    path = index_dir / META_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != "vsearch-index":
        raise IndexCorruptError(f"{path} is not a vsearch index")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexCorruptError(
            f"index at {index_dir} has format version {version}; this vsearch ({__version__}) reads "
            f"version {FORMAT_VERSION}. Rebuild it with `vsearch build-index`"
        )
    try:
        return IndexMeta.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexCorruptError(f"{path} is incomplete or damaged ({exc!r})") from None


def _take_lock(path: Path) -> int:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            holder = f" (pid {int(os.pread(fd, 32, 0).decode().strip())})"
        os.close(fd)
        raise IndexBusyError(
            f"index at {path.parent} is being written by another vsearch process{holder}; "
            "wait for it to finish"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
