"""The index directory: the writer's lock, and the commit of ``meta.json``.

Layout (format version 1)::

    INDEX_DIR/
      meta.json             commit record of the last consolidation; written last (see below)
      manifest.sqlite       files (the writer's working state: path, size, mtime_ns, digest, row,
                            pending chunk, skip) and committed (each kept generation's frozen
                            row -> file mapping); see ``manifest``
      chunks/NNNNNN.npy     vectors embedded since the last consolidation (crash-safe progress)
      vectors.GGGGGG.npy    float32 (count, dim), L2-normalised; row i = the file whose row is i
      index.GGGGGG.ann      Annoy (angular) over that generation's vectors, when built; meta.json
                            records its size in bytes, checked before Annoy maps the file
      index.GGGGGG.ivfpq    or IVF-PQ (faiss, ``build-index --index ivfpq``) over the vectors search
                            ranks against; meta.json ("ivfpq") records its parameters, size, sha256
      vectors.GGGGGG.FORMAT[.HASH].npy  optional: the search copy in a compressed format
                            (build-index --vectors fp16|pcaD[w]; ``compress``): what search, the
                            stored-vector fast path, MMR/dedupe and Annoy read instead of the raw
                            vectors, which stay the source of truth (refits, DBA, merges, undo)
      pca.HASH.npz          the PCA the search copy was made with (meta.json records its SHA-256);
                            fitted once, reused by incremental runs, refitted with --refit
      vectors.GGGGGG.dbaN.npy  optional: database-side augmented copy of the vectors (build-index
                            --dba N), in the search space (of the search copy when there is one);
                            searched instead of them. Annoy is then built over it.
      head.<sha12>.npz      optional: a projection head fitted by ``vsearch train`` (``adapter``) on
                            the search space, named with its hash in meta.json's ``adapter`` key
      <search vectors>.head-<sha12>.npy  that head's projected copy of the generation's search-space
                            vectors, written before each meta.json that names the head (every commit)
      lock                  flock'd by the one writer
      marks.jsonl           "not a duplicate" marks by content digest (``marks``); outlives --rebuild
      undo/NNNN-DATE.jsonl  undo logs of ``duplicates --move-to/--trash --yes`` (``actions``); likewise

Why a generation number in the file names: a consolidation writes the new vectors beside the
old ones, renumbers the manifest, snapshots the new row mapping and bumps its generation in one
SQLite transaction, then replaces ``meta.json``. Nothing half-written is ever loaded: every file
goes to a temporary name in the same folder, is flushed and fsynced, then ``os.replace``d.

Readers and a concurrent commit: a reader trusts ``meta.json`` and sees exactly the generation it
names, never a mix. The manifest keeps the row mapping of the newest two generations
(``committed``), and the writer keeps the previous generation's files until the next commit, so
a reader that read ``meta.json`` just before a commit (or holds the index open across one)
still finds its own generation's vectors, Annoy file and paths. A reader opening while a commit
is half done reads ``meta.json`` again when the manifest no longer holds its generation. A
process that holds an index open across two commits gets one clear error asking it to open the
index again, never paths of one generation paired with vectors of another. The price: the
previous generation's vector and Annoy files stay on disk until the next commit.

A writer that finds SQLite's generation ahead of ``meta.json`` (a crash between the two) finishes
the commit. Files that cannot be read are repaired where no information is lost (a damaged
chunk's files are embedded again; so are the files of unreadable committed vectors), and
refused otherwise with one remedy: ``vsearch build-index FOLDER --rebuild``, which starts a clean
index and keeps the old manifest's files and vectors where they can be trusted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vsearch import atomic
from vsearch.storage import formats, vectorfiles
from vsearch.errors import IndexBusyError, IndexCorruptError, IndexMissingError, ModelMismatchError, VsearchError
from vsearch.identity import ModelId
from vsearch.storage.meta import (
    MANIFEST_FILE,
    META_FILE,
    AnnInfo,
    DbaInfo,
    FormatInfo,
    IndexMeta,
    IvfpqInfo,
    read_meta,
    rebuild_hint,
)
from vsearch.storage.manifest import FROM_VECTORS, SCHEMA_VERSION, FileEntry, GenerationGone, Manifest
from vsearch.storage.vectorfiles import CHUNK_DIR, ann_name, dba_name

log = logging.getLogger(__name__)

LOCK_FILE = "lock"
#: Side records that outlive every build and ``--rebuild``: not-duplicate marks, undo logs.
MARKS_FILE, UNDO_DIR = "marks.jsonl", "undo"
#: What a person recorded through ``vsearch serve`` (vsearch.learning.judgments): a rebuild keeps them.
KEPT_LOGS = ("judgments.jsonl", "events.jsonl", "judgments.sqlite", "judgments.sqlite-wal", "judgments.sqlite-shm")
#: Manifest keys (the writer's working state): the format its commits make, and its fitted PCA.
FORMAT_KEY, TRANSFORM_KEY = "vectors_format", "transform"
#: How long a reader waits for a commit in flight (SQLite ahead of meta.json) to finish.
COMMIT_WAIT_S = 2.0

__all__ = ["FROM_VECTORS", "SCHEMA_VERSION", "Derivations", "FileEntry", "Store", "ann_name", "dba_name",
           "file_digest", "path_digest"]


def _content_hash() -> Any:
    # The one definition of the content digest: undo logs and marks store digests made with it.
    return hashlib.blake2b(digest_size=16)


def file_digest(data: bytes) -> str:
    """The manifest's content digest (BLAKE2b-128, hex): how renamed, moved and copied files,
    and query photos already in the index, are recognised."""
    h = _content_hash()
    h.update(data)
    return h.hexdigest()


def path_digest(path: Path) -> str:
    """:func:`file_digest` of a file's bytes, read in blocks (memory stays at one block)."""
    h = _content_hash()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class Derivations(Protocol):
    """What a commit makes from the raw vectors besides them: the compressed search copy and
    the trained head's projected copy. The vectors layer supplies it to a writer
    (:class:`vsearch.vectors.space.SearchFiles`): storage stores the files and their names in
    ``meta.json`` but knows no codec and no head."""

    def search_copy(self, store: Store, raw: np.ndarray, generation: int) -> FormatInfo | None:
        """Write the search copy of one generation's raw vectors; None when search reads them as they are."""

    def check_search_copy(self, store: Store) -> None:
        """Raise IndexCorruptError when the committed search copy cannot be read."""

    def before_meta(self, store: Store, meta: IndexMeta) -> IndexMeta:
        """Write what ``meta`` needs beside the vectors before it is committed; the meta to commit."""


class IndexView:
    """What every open index offers: its binding, its manifest's rows and its vector files.

    A reader (a plain :class:`Store`) sees the generation ``meta.json`` named when it opened;
    the writer sees, and changes, the manifest's working state.
    """

    def __init__(self, index_dir: Path, manifest: Manifest, meta: IndexMeta | None, lock_fd: int | None,
                 derived: Derivations | None = None):
        self.dir = index_dir
        self.manifest = manifest
        #: What ``meta.json`` committed (a reader's: when it opened), or None before a commit.
        self.meta = meta
        self._lock_fd = lock_fd
        self._derived = derived
        self._vectors: np.ndarray | None = None
        self._rebuilt = False

    # --- what the index is bound to ----------------------------------------------------------

    @property
    def generation(self) -> int:
        """The manifest's generation (a reader's own is ``meta.generation``)."""
        return self.manifest.generation

    @property
    def root(self) -> Path | None:
        """The image root this index covers (recorded at the first write)."""
        value = self.manifest.get("root")
        return Path(value) if value else None

    @property
    def model_id(self) -> ModelId | None:
        """The model bound to this index (recorded before its first vector)."""
        value = self.manifest.get("model")
        return ModelId.from_dict(json.loads(value)) if value else None

    # --- manifest reads: a reader sees its own generation, the writer its working state ------

    def _view(self) -> int | None:
        return None if self._lock_fd is not None or self.meta is None else self.meta.generation

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        # A reader's lookups run in one read transaction; the writer reads its own working state.
        consistent = self.manifest.snapshot() if self._lock_fd is None else contextlib.nullcontext()
        try:
            with consistent:
                yield
        except GenerationGone:
            raise IndexBusyError(self._updated_twice()) from None

    def entry(self, path: str) -> FileEntry | None:
        """The manifest entry for one relative path."""
        with self._reading():
            return self.manifest.entry(path, self._view())

    def entry_by_digest(self, digest: str) -> FileEntry | None:
        """A committed entry with this content digest, if any."""
        with self._reading():
            return self.manifest.entry_by_digest(digest, self._view())

    def entries(self) -> Iterator[FileEntry]:
        """Every live entry, skipped ones included, in path order."""
        return self.manifest.entries()

    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) for every file recorded as skipped."""
        return self.manifest.skipped()

    def paths_of_rows(self, rows: Sequence[int]) -> dict[int, str]:
        """Relative path of each of ``rows`` (committed rows), looked up in batches."""
        with self._reading():
            return dict(self.manifest.rows(self._view(), rows))

    def paths_by_row(self) -> list[str]:
        """Relative path of each committed row, in row order (invariant: row i <-> vectors[i])."""
        paths: list[str | None] = [None] * (self.meta.count if self.meta else 0)
        with self._reading():
            for row, path in self.manifest.rows(self._view()):
                if row >= len(paths):
                    raise IndexCorruptError(f"manifest row {row} beyond the {len(paths)} vectors in {self.dir}; "
                                            f"{rebuild_hint(self.abs_path(''))}")
                paths[row] = path
        if any(p is None for p in paths):
            raise IndexCorruptError(f"manifest and vectors disagree in {self.dir}; {rebuild_hint(self.abs_path(''))}")
        return paths  # type: ignore[return-value]

    def path_of_row(self, row: int) -> str:
        """Relative path of one committed row."""
        found = self.paths_of_rows([row]).get(row)
        if found is None:
            raise IndexCorruptError(f"no manifest entry for row {row} in {self.dir}; {rebuild_hint(self.abs_path(''))}")
        return found

    def abs_path(self, rel: str) -> Path:
        """Absolute path of a manifest path."""
        root = Path(self.meta.root) if self.meta else self.root
        assert root is not None
        return root / rel

    def dirs(self) -> list[tuple[str, int]]:
        """(relative folder, mtime_ns) as recorded at the last scan."""
        return self.manifest.dirs()

    # --- vector files ------------------------------------------------------------------------

    def vectors(self) -> np.ndarray:
        """The committed vectors, memory-mapped read-only, shape (count, dim)."""
        if self._vectors is None:
            if self.meta is None:
                raise IndexMissingError(f"index at {self.dir} has no committed vectors yet")
            self._vectors = self._load(self.meta.vectors, (self.meta.count, self.meta.dim),
                                       f"`vsearch build-index {self.meta.root}` repairs the index")
        return self._vectors

    def _load(self, name: str, shape: tuple[int, ...], remedy: str, dtype: Any = np.float32) -> np.ndarray:
        """A vectors file of this reader's generation (see :meth:`_own_generation`)."""
        path = self.dir / name
        with self._own_generation(path):
            return vectorfiles.load(path, shape, remedy, dtype=dtype)

    @contextlib.contextmanager
    def _own_generation(self, path: Path) -> Iterator[None]:
        """Around opening a file of this reader's generation: missing because two commits landed
        since this reader read meta.json (the writer keeps only the previous generation's files),
        it is the same "open it again" as a manifest lookup that finds its generation gone, not
        damage."""
        try:
            yield
        except IndexCorruptError:
            if self._lock_fd is None and self.meta is not None and not path.exists() and self._superseded():
                raise IndexBusyError(self._updated_twice()) from None
            raise

    def _updated_twice(self) -> str:
        return (f"the index at {self.dir} was updated twice while this process had it open; "
                "open it again (run the command again)")

    def _superseded(self) -> bool:
        """Whether meta.json now names a newer generation than the one this reader holds."""
        try:
            return self.meta is not None and read_meta(self.dir).generation > self.meta.generation
        except VsearchError:
            return False

    def vectors_for_generation(self, generation: int) -> np.ndarray:
        """The vectors file of one generation (empty array for generation 0)."""
        if generation == 0:
            return np.zeros((0, self.model_id.dim if self.model_id else 0), dtype=np.float32)
        if self.meta is not None and generation == self.meta.generation:
            return self.vectors()  # a generation that only moved files maps an older file
        return np.load(self.dir / vectorfiles.vectors_name(generation), mmap_mode="r")

    def ann_path(self) -> Path | None:
        """Path of the Annoy index of the committed generation, if built. Any
        :class:`~vsearch.vectors.nearest.AnnoySearcher` on it checks it first against
        (the size and trees ``meta.json`` records)."""
        if self.meta is None or self.meta.ann is None:
            return None
        return self.dir / self.meta.ann.file


class Store(IndexView):
    """An index directory. Readers open it plainly; one writer at a time holds its lock."""

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, index_dir: Path, *, write: bool = False, rebuild: bool = False,
             derived: Derivations | None = None) -> Store:
        """Open an index. ``write=True`` creates it if needed, takes the lock and repairs;
        ``rebuild=True`` (with write) removes a damaged index and starts a clean one that keeps
        the old manifest's files and vectors where they can be trusted (:func:`rebuild`).

        A reader needs a committed index (``meta.json``) that agrees with the manifest. A writer
        that may commit a compressed search copy or a trained head needs ``derived`` (the vectors
        layer's :class:`~vsearch.vectors.space.SearchFiles`); without it such a commit is refused.
        """
        index_dir = Path(index_dir).expanduser().absolute()
        if index_dir.exists() and not index_dir.is_dir():
            raise VsearchError(f"--index-dir {index_dir} is a file, not a folder")
        if not write:
            return cls._open_reader(index_dir)
        return open_writer(cls, index_dir, rebuild=rebuild, derived=derived)

    @classmethod
    def _open_reader(cls, index_dir: Path) -> Store:
        if not (index_dir / META_FILE).exists():
            if (index_dir / MANIFEST_FILE).exists():
                raise IndexMissingError(
                    f"index at {index_dir} was never completed; run `vsearch build-index FOLDER` to finish it")
            raise IndexMissingError(
                f"no index at {index_dir}; build one with `vsearch build-index FOLDER`"
                " (or point --index-dir / VSEARCH_INDEX_DIR at an existing one)")
        deadline = time.monotonic() + COMMIT_WAIT_S
        while True:
            meta = read_meta(index_dir)
            manifest = Manifest.open(index_dir / MANIFEST_FILE, write=False)
            try:
                check_agrees(index_dir, manifest, meta)
                return cls(index_dir, manifest, meta, None)
            except GenerationGone:
                manifest.close()  # a commit landed between reading meta.json and the manifest
            except IndexCorruptError:
                manifest.close()  # maybe a commit half done by a writer from before snapshots
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def close(self) -> None:
        """Release the lock and the database."""
        self._vectors = None
        self.manifest.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- binding (writer) ----------------------------------------------------------------

    def bind(self, root: Path, model_name: str | None) -> None:
        """Check (or, for a new index, record) the image root and model name.

        Only the name is compared here, so that an unchanged re-run needs no model; the full
        identity (weights hash, preprocessing) is checked by :meth:`bind_model` once loaded.
        """
        root = Path(root).resolve()
        known_root = self.root
        if known_root is not None and known_root != root and self._rebuilt:
            log.info("rebuild for another folder: nothing of the old index is kept")
            self.manifest.clear()
            known_root = None
        if known_root is not None and known_root != root:
            raise VsearchError(f"index at {self.dir} covers {known_root}, not {root}; use another --index-dir "
                               "for this folder")
        known = self.model_id
        if known is not None and model_name and model_name != known.name:
            raise ModelMismatchError(
                f"index at {self.dir} was built with model {known.name}; it cannot mix in vectors "
                f"from {model_name}. Leave out --model to use {known.name}, or use another --index-dir")
        self.manifest.set("root", str(root))

    def bind_model(self, model_id: ModelId) -> None:
        """Record the model for a new index, or refuse one that would make other vectors."""
        known = self.model_id
        if known is None:
            self.manifest.set("model", json.dumps(model_id.to_dict()))
            return
        if not known.same_vectors_as(model_id):
            raise ModelMismatchError(
                f"index at {self.dir} was built with {known.name}, but the model loaded now differs "
                f"({known.differences(model_id)}); its vectors would not be comparable. "
                "Rebuild the index in a new --index-dir")

    # --- writes (writer only); the commit itself is consolidate() below ----------------------------

    def _require_writer(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("store opened read-only")

    def add_chunk(self, records: Sequence[tuple[str, int, int, str]], vectors: np.ndarray) -> None:
        """Commit freshly embedded vectors: ``records[i] = (path, size, mtime_ns, digest)``.

        The chunk file is written first; the manifest transaction that points at it second, so a
        crash between the two leaves an orphan chunk that the next writer deletes.
        """
        self._require_writer()
        if len(records) != len(vectors):
            raise ValueError("records and vectors differ in length")
        if records:
            number = int(self.manifest.get("next_chunk", "0") or 0)
            vectorfiles.save(vectorfiles.chunk_path(self.dir, number), vectors)
            self.manifest.add_chunk_rows(number, records)

    def add_reference(self, path: str, size: int, mtime_ns: int, digest: str, source: FileEntry) -> None:
        """A new path whose content equals ``source``'s: it shares that vector, no embedding."""
        self._require_writer()
        self.manifest.add_reference(path, size, mtime_ns, digest, source.id)

    def move(self, entry: FileEntry, new_path: str, size: int, mtime_ns: int) -> None:
        """A file renamed or moved: same content, so the same vector row, under a new path."""
        self._require_writer()
        self.manifest.move(entry.id, new_path, size, mtime_ns)

    def touch(self, entry: FileEntry, size: int, mtime_ns: int) -> None:
        """Same path, same content, new mtime: remember the new stat so the next run skips it."""
        self._require_writer()
        self.manifest.touch(entry.id, size, mtime_ns)

    def record_skip(self, path: str, size: int, mtime_ns: int, reason: str) -> None:
        """A file that could not be embedded; kept so an unchanged re-run does not retry it.

        A file that was indexed and turned bad keeps its row until the next consolidation,
        which leaves it out (:meth:`pending_changes` sees it).
        """
        self._require_writer()
        self.manifest.record_skip(path, size, mtime_ns, reason)

    def mark_deleted(self, paths: Iterable[str]) -> int:
        """Files gone from disk; they leave the vectors at the next consolidation."""
        self._require_writer()
        return self.manifest.mark_deleted(paths)

    def record_dirs(self, dirs: Iterable[tuple[str, int]]) -> None:
        """Remember each scanned folder's mtime, for the cheap staleness check at query time."""
        self._require_writer()
        self.manifest.record_dirs(dirs)

    def pending_changes(self) -> bool:
        """True when the manifest holds work that the committed vectors do not reflect yet."""
        return not self._vectors_current() or self.manifest.get("relabelled") is not None

    def _vectors_current(self) -> bool:
        """True when the committed vectors hold exactly the manifest's files (moves aside)."""
        if self.meta is None or self.meta.generation != self.generation:
            return False
        return self.manifest.pending_count() == 0 and self.manifest.row_count() == self.meta.count

    def consolidate(self, block: int = 4096) -> IndexMeta:
        """Merge committed vectors and pending chunks into a new generation, in path order."""
        return consolidate(self, block)

    def set_ann(self, ann: AnnInfo | None) -> None:
        """Record (or drop) the Annoy index of the committed generation in ``meta.json``."""
        self._require_writer()
        assert self.meta is not None
        if ann is not None and ann.size is None:  # record the size, checked before each load
            ann = dataclasses.replace(ann, size=(self.dir / ann.file).stat().st_size)
        # One approximate index a generation: an Annoy build replaces an IVF-PQ one.
        self.write_meta(dataclasses.replace(self.meta, ann=ann, ivfpq=None if ann is not None else self.meta.ivfpq))

    def set_ivfpq(self, info: IvfpqInfo | None) -> None:
        """Record (or drop) the IVF-PQ index of the committed generation; it replaces Annoy."""
        self._require_writer()
        assert self.meta is not None
        self.write_meta(dataclasses.replace(self.meta, ivfpq=info, ann=None if info is not None else self.meta.ann))

    def set_dba(self, dba: DbaInfo | None) -> None:
        """Record (or drop) the DBA copy of the committed vectors; the Annoy index, built over
        the vectors search ranks against, is dropped with it and must be rebuilt."""
        self._require_writer()
        assert self.meta is not None
        self.write_meta(dataclasses.replace(self.meta, dba=dba, ann=None, ivfpq=None))

    # --- the search copy (writer) ------------------------------------------------------------

    def wanted_format(self) -> formats.VectorFormat:
        """The format this index's commits make (the manifest records it; fp32 when never set)."""
        return formats.parse_format(self.manifest.get(FORMAT_KEY) or "fp32")

    def choose_format(self, fmt: formats.VectorFormat | None, *, refit: bool = False) -> None:
        """Record the format the next commits make (None: keep the index's); ``refit`` forgets
        the fitted PCA, so the next copy fits one again on the current vectors."""
        self._require_writer()
        if fmt is not None:
            self.manifest.set(FORMAT_KEY, fmt.name)
        if refit or (fmt is not None and fmt.kind != "pca"):  # a later PCA fits on the vectors of then
            self.manifest.set(TRANSFORM_KEY, "")

    def search_copy_stale(self) -> bool:
        """Whether the committed search copy is not the one asked for: another format, or a PCA
        refitted or forgotten since (e.g. ``--refit``, or a commit finished by repair)."""
        if self.meta is None:
            return False
        want, have = self.wanted_format(), self.meta.vectors_format
        if not want.compressed:
            return have is not None
        if have is None or have.name != want.name:
            return True
        return want.kind == "pca" and have.transform != self.manifest.get(TRANSFORM_KEY)

    def refresh_search_copy(self) -> IndexMeta:
        """Make the committed generation's search copy again in :meth:`wanted_format`, from the
        raw vectors (no image is embedded again). The Annoy index and the DBA copy, made over
        the old copy, are dropped: the next ``build-index`` step makes them again."""
        self._require_writer()
        assert self.meta is not None
        info = self.search_copy(self.vectors(), self.meta.generation)
        self.write_meta(dataclasses.replace(self.meta, vectors_format=info, ann=None, dba=None, ivfpq=None,
                                            updated=_now()))
        return self.meta

    def search_copy(self, raw: np.ndarray, generation: int) -> FormatInfo | None:
        """The search copy of ``raw`` (one generation's vectors) in :meth:`wanted_format`, made
        by the writer's ``derived``; None for fp32 (search reads the raw vectors)."""
        if self._derived is not None:
            return self._derived.search_copy(self, raw, generation)
        if self.wanted_format().compressed:
            raise RuntimeError(f"a {self.wanted_format().name} search copy needs a writer opened with derived=")
        return None

    def write_meta(self, meta: IndexMeta) -> None:
        """Commit ``meta``: replace ``meta.json``, then drop files no generation kept needs.

        The files of the generation it replaces are kept until the next one (readers may hold it).
        """
        if self.meta is not None and self.meta.generation != meta.generation:
            self.manifest.set("previous_files", json.dumps(sorted(_files_of(self.meta))))
        if self._derived is not None:
            meta = self._derived.before_meta(self, meta)
        elif meta.adapter is not None:
            raise RuntimeError("a meta.json that names a trained head needs a writer opened with derived=")
        atomic.write_bytes(self.dir / META_FILE, json.dumps(meta.to_dict(), indent=2).encode())
        self.meta = meta
        self._vectors = None
        remove_stale(self)


def check_bound(index_dir: Path, manifest: Manifest, meta: IndexMeta) -> None:
    """Refuse a ``meta.json`` whose folder or model is not the manifest's (e.g. an edited root)."""
    root = manifest.get("root")
    if root is not None and root != meta.root:
        raise IndexCorruptError(f"{index_dir / META_FILE} names the folder {meta.root}, but the index was built "
                                f"for {root}; {rebuild_hint(root)}")
    model = manifest.get("model")
    if model is not None and ModelId.from_dict(json.loads(model)) != meta.model:
        raise IndexCorruptError(f"{index_dir / META_FILE} names another model than the manifest; "
                                f"{rebuild_hint(root or 'FOLDER')}")


def check_agrees(index_dir: Path, manifest: Manifest, meta: IndexMeta) -> None:
    """Refuse a ``meta.json`` that disagrees with the manifest (root, model, row count).

    A reader's generation must still be in the manifest; when two commits landed since it
    read ``meta.json``, GenerationGone says to read it again.
    """
    check_bound(index_dir, manifest, meta)
    root = manifest.get("root")
    gen = manifest.generation
    if meta.generation not in manifest.snapshots() and gen != meta.generation:
        if gen > meta.generation + 1:
            raise GenerationGone(meta.generation)
        raise IndexCorruptError(
            f"index at {index_dir} was interrupted while committing (manifest generation {gen}, "
            f"meta.json generation {meta.generation}); re-run `vsearch build-index {root or 'FOLDER'}` to finish it")
    n = manifest.row_span(meta.generation)  # what a query's open can afford at 1M rows
    if n != meta.count:
        raise IndexCorruptError(f"index at {index_dir}: manifest has {n} rows but meta.json says {meta.count}; "
                                f"{rebuild_hint(root or 'FOLDER')}")


def _files_of(meta: IndexMeta) -> set[str]:
    names = {meta.vectors} | {x.file for x in (meta.ann, meta.dba, meta.vectors_format, meta.ivfpq, meta.adapter)
                              if x is not None}
    if meta.vectors_format is not None and meta.vectors_format.transform:
        names.add(meta.vectors_format.transform)
    if meta.adapter is not None:
        names.add(vectorfiles.projected_name(meta.space_file, meta.adapter.sha256))
    return names


def remove_stale(store: Store) -> None:
    """Delete temporaries, orphan chunks and the files no reader may still use: those neither
    ``meta.json`` nor the generation before it names."""
    if store._lock_fd is None:
        return
    keep = {META_FILE, MANIFEST_FILE, CHUNK_DIR, LOCK_FILE, MARKS_FILE, UNDO_DIR, *json.loads(store.manifest.get("previous_files", "[]"))}
    keep.add(store.manifest.get(TRANSFORM_KEY) or "")  # the writer's PCA, reused by the next commit
    if store.meta is not None:
        keep |= _files_of(store.meta)
    for child in store.dir.iterdir():
        stale = (child.name.endswith(".tmp") or vectorfiles.generation_of(child.name) is not None
                 or vectorfiles.is_transform(child.name))
        if child.name not in keep and stale:
            with contextlib.suppress(OSError):
                child.unlink()
    live = set(store.manifest.live_chunks())
    for child in (store.dir / CHUNK_DIR).iterdir():
        stem = child.name.split(".")[0].lstrip(".")
        if not stem.isdigit() or int(stem) not in live or child.name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()


# --- the writer: open, repair, commit ---------------------------------------------------------


def open_writer(cls: type[Store], index_dir: Path, *, rebuild: bool = False,
                derived: Derivations | None = None) -> Store:
    """Create or open an index for writing: take the lock, finish or repair what needs it."""
    if index_dir.exists() and any(index_dir.iterdir()) and not (
        (index_dir / MANIFEST_FILE).exists() or (index_dir / META_FILE).exists()
    ):
        raise VsearchError(f"--index-dir {index_dir} is a non-empty folder that holds no vsearch index; "
                           "choose an empty or new folder")
    try:
        (index_dir / CHUNK_DIR).mkdir(parents=True, exist_ok=True)
        lock_fd = _take_lock(index_dir / LOCK_FILE)
    except PermissionError:
        raise VsearchError(f"cannot write to the index folder {index_dir} (permission denied); "
                           "choose another --index-dir or make it writable") from None
    except OSError as exc:
        raise atomic.write_error(exc, index_dir) or exc from None
    try:
        old_format = _format_before_rebuild(index_dir) if rebuild else None
        kept = rebuild_files(index_dir) if rebuild else None
        manifest = Manifest.open(index_dir / MANIFEST_FILE, write=True)
        store = cls(index_dir, manifest, None, lock_fd, derived)
        if kept is not None:
            store._rebuilt = True
            manifest.restore(*kept[1:])
            if old_format is not None:  # a rebuild keeps the search copy's format (not its PCA)
                manifest.set(FORMAT_KEY, old_format)
        if (index_dir / META_FILE).exists():
            store.meta = read_meta(index_dir)
            check_bound(index_dir, manifest, store.meta)  # counts that disagree, the writer repairs
        _recover(store)
    except BaseException:
        os.close(lock_fd)
        raise
    return store


def _format_before_rebuild(index_dir: Path) -> str | None:
    """The vector format a damaged index was built with, when its meta.json still says."""
    with contextlib.suppress(VsearchError, OSError):
        if (index_dir / META_FILE).exists():
            info = read_meta(index_dir).vectors_format
            return info.name if info else "fp32"
    return None


def _recover(store: Store) -> None:
    """Finish an interrupted commit, drop what cannot be read, then temporaries and orphans."""
    manifest, meta = store.manifest, store.meta
    gen = manifest.generation
    if gen != (meta.generation if meta else 0):
        model, root = store.model_id, store.root
        vectors = store.dir / vectorfiles.vectors_name(gen)
        if not vectors.exists() or model is None or root is None:
            raise IndexCorruptError(f"index at {store.dir} is damaged (generation {gen} has no vectors file); "
                                    f"{rebuild_hint(root or 'FOLDER')}")
        log.info("finishing the interrupted commit of generation %d", gen)
        store.write_meta(IndexMeta(
            generation=gen, model=model, root=str(root), count=manifest.row_count(), dim=model.dim,
            skipped=manifest.skipped_count(), vectors=vectors.name, ann=None, updated=_now(),
            adapter=meta.adapter if meta else None))
    manifest.ensure_snapshot()
    _drop_unreadable_chunks(store)
    _drop_unreadable_vectors(store)
    _remake_unreadable_search_copy(store)
    remove_stale(store)


def _drop_unreadable_chunks(store: Store) -> None:
    """Files whose pending vector is in a chunk that is missing or damaged are forgotten, so
    that the next scan finds them new and embeds them again; nothing else is lost."""
    model = store.model_id
    if model is None:
        return
    for number, rows in sorted(store.manifest.live_chunks().items()):
        path = vectorfiles.chunk_path(store.dir, number)
        problem = vectorfiles.chunk_problem(path, rows, model.dim)
        if problem:
            n = store.manifest.forget_chunk(number)
            log.warning("warning: chunk %s is %s; its %d image(s) will be embedded again", path, problem, n)


def _drop_unreadable_vectors(store: Store) -> None:
    """Committed vectors that cannot be read (e.g. a truncated file) leave the index.

    Their manifest rows go with them and a smaller generation is committed at once, so the
    index is consistent again and the next update embeds those files anew.
    """
    if store.meta is None:
        return
    try:
        store.vectors()
        return
    except IndexCorruptError as exc:
        log.warning("warning: %s; its %d images will be embedded again", exc, store.meta.count)
    store._vectors = None
    with contextlib.suppress(OSError):  # no reader can use it either
        (store.dir / store.meta.vectors).unlink()
    store.manifest.forget_committed()
    consolidate(store)


def _remake_unreadable_search_copy(store: Store) -> None:
    """A search copy or transform that cannot be read (or does not match meta.json) is made
    again from the raw vectors, the transform fitted again: nothing is lost, nothing embedded."""
    if store.meta is None or store.meta.vectors_format is None or store._derived is None:
        return
    try:
        store._derived.check_search_copy(store)
        return
    except IndexCorruptError as exc:
        log.warning("warning: %s; making the %s search copy again", exc, store.meta.vectors_format.name)
    if store.meta.vectors_format.transform is not None:
        store.manifest.set(TRANSFORM_KEY, "")
    if store.manifest.get(FORMAT_KEY) is None:
        store.manifest.set(FORMAT_KEY, store.meta.vectors_format.name)
    store.refresh_search_copy()


def consolidate(store: Store, block: int = 4096) -> IndexMeta:
    """Merge committed vectors and pending chunks into a new generation, in path order.

    Order: the new vectors file; one SQLite transaction (rows renumbered, the new mapping
    snapshotted, generation bumped); ``meta.json``. A failure before the last step leaves the
    previous generation committed, and removes what it wrote.
    """
    store._require_writer()
    model, root, manifest = store.model_id, store.root, store.manifest
    if model is None or root is None:
        raise IndexMissingError(f"index at {store.dir} holds no vectors yet")
    _drop_unreadable_chunks(store)
    new_gen = manifest.generation + 1
    if store.meta is not None and store._vectors_current():
        # Only paths changed (moves): a new generation that maps the same vector files.
        manifest.commit_generation(new_gen, manifest.ids_by_row(), manifest.skipped_count())
        store.write_meta(dataclasses.replace(store.meta, generation=new_gen, updated=_now()))
        return store.meta
    sources = manifest.merge_sources()
    target = store.dir / vectorfiles.vectors_name(new_gen)
    copy: FormatInfo | None = None
    try:
        vectorfiles.merge(
            target, [(None, row) if chunk is None else (None, chunk_row) if chunk == FROM_VECTORS else (chunk, chunk_row)
                     for _id, row, chunk, chunk_row in sources],
            model.dim, store.vectors,
            lambda n: np.load(vectorfiles.chunk_path(store.dir, n), mmap_mode="r"), block)
        # The search copy is part of the commit: made before the manifest moves, so a reader
        # never finds a generation without the copy meta.json names.
        copy = store.search_copy(vectorfiles.load(target, (len(sources), model.dim), rebuild_hint(root)),
                                new_gen)
        skipped = manifest.skipped_count()
        manifest.commit_generation(new_gen, [src[0] for src in sources], skipped)
    except BaseException:
        with contextlib.suppress(OSError):
            if manifest.generation != new_gen:
                target.unlink()
                if copy is not None:
                    (store.dir / copy.file).unlink()
        raise
    meta = IndexMeta(generation=new_gen, model=model, root=str(root), count=len(sources), dim=model.dim,
                     skipped=skipped, vectors=target.name, ann=None, updated=_now(), vectors_format=copy,
                     adapter=store.meta.adapter if store.meta is not None else None)  # a trained head stays
    store.write_meta(meta)
    return meta


def rebuild_files(index_dir: Path) -> tuple[Path, str, str, list] | None:
    """Remove a (damaged) index's files, keeping what can be trusted for :func:`_restore`:
    ``(vectors moved to chunk 0, root, model JSON, rows)`` when the manifest reads and its
    vectors file is intact and agrees with it, else None (everything is embedded again)."""
    kept = None
    with contextlib.suppress(VsearchError, OSError, ValueError, TypeError, KeyError):
        old = Manifest.open(index_dir / MANIFEST_FILE, write=False)
        try:
            root, model = old.get("root"), old.get("model")
            rows = old.salvage()
            dim = ModelId.from_dict(json.loads(model or "null")).dim
            source = index_dir / vectorfiles.vectors_name(old.generation)
            vectorfiles.load(source, (len(rows), dim), "")
            if root and [r[4] for r in rows] == list(range(len(rows))) and rows:
                kept = (source, root, model, rows)
        finally:
            old.close()
    if kept is None:  # the manifest is lost: meta.json may still say which folder and model
        with contextlib.suppress(VsearchError, OSError):
            meta = read_meta(index_dir)
            kept = (None, meta.root, json.dumps(meta.model.to_dict()), [])
    chunk0 = vectorfiles.chunk_path(index_dir, 0)
    if kept is not None and kept[0] is not None:
        os.replace(kept[0], chunk0)
    for child in list(index_dir.iterdir()) + list((index_dir / CHUNK_DIR).iterdir()):
        if child.name not in (LOCK_FILE, MARKS_FILE, *KEPT_LOGS) and child.is_file() and not (kept and kept[3] and child == chunk0):
            child.unlink()
    log.warning("warning: rebuilding the index at %s: %s", index_dir,
                f"kept {len(kept[3])} files and their vectors" if kept and kept[3] else "no vectors could be kept")
    return None if kept is None else (chunk0, kept[1], kept[2], kept[3])


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


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
        raise IndexBusyError(f"index at {path.parent} is being written by another vsearch process{holder}; "
                             "wait for it to finish") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
