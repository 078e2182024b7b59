"""The writer of an index directory: its lock, the commit of a generation (``consolidate``,
``meta.json`` last) and the repair of what a crash or damage left. The layout, and why, is
the package's docstring (:mod:`vsearch.storage`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vsearch import atomic
from vsearch.storage import checksums, formats, vectorfiles
from vsearch.storage.checksums import FileSum
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
    known_root,
    read_meta,
    rebuild_hint,
)
from vsearch.storage.manifest import FROM_VECTORS, SCHEMA_VERSION, FileEntry, GenerationGone, Manifest
from vsearch.storage.vectorfiles import CHUNK_DIR, ann_name, dba_name
from vsearch.storage.snapshot import (
    COMMIT_WAIT_S,
    FORMAT_KEY,
    KEPT_LOGS,
    LOCK_FILE,
    MARKS_FILE,
    TRANSFORM_KEY,
    UNDO_DIR,
    Snapshot,
    check_agrees,
    check_bound,
    file_digest,
    path_digest,
)

log = logging.getLogger(__name__)

__all__ = ["FROM_VECTORS", "SCHEMA_VERSION", "Derivations", "FileEntry", "Store", "ann_name", "dba_name",
           "file_digest", "path_digest"]


class Derivations(Protocol):
    """What a commit makes from the source vectors besides them: the compressed search copy and
    the trained head's projected copy. The vectors layer supplies it to a writer
    (:class:`vsearch.vectors.space.SearchFiles`): storage stores the files and their names in
    ``meta.json`` but knows no codec and no head."""

    def search_copy(self, store: Store, source: np.ndarray, generation: int) -> FormatInfo | None:
        """Write the search copy of one generation's source vectors; None when search reads them as they are."""

    def check_search_copy(self, store: Store) -> None:
        """Raise IndexCorruptError when the committed search copy cannot be read."""

    def before_meta(self, store: Store, meta: IndexMeta) -> IndexMeta:
        """Write what ``meta`` needs beside the vectors before it is committed; the meta to commit."""


class Store(Snapshot):
    """An index directory. Readers open it plainly; one writer at a time holds its lock."""

    def __init__(self, index_dir: Path, manifest: Manifest, meta: IndexMeta | None, lock_fd: int | None,
                 derived: Derivations | None = None):
        super().__init__(index_dir, manifest, meta, lock_fd)
        self._derived = derived
        #: Files written since the last commit of ``meta.json``, with their checksum when the
        #: writer knew it (None: computed at that commit); see :meth:`wrote`.
        self._fresh: dict[str, FileSum | None] = {}

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
            raise VsearchError(f"index_dir={index_dir} is a file, not a folder")
        if not write:
            return cls._open_reader(index_dir)
        return open_writer(cls, index_dir, rebuild=rebuild, derived=derived)

    @classmethod
    def _open_reader(cls, index_dir: Path) -> Store:
        if not (index_dir / META_FILE).exists():
            if (index_dir / MANIFEST_FILE).exists():
                raise IndexMissingError(
                    f"index at {index_dir} was never completed; call `build_index({known_root(index_dir)})` to "
                    "finish it")
            raise IndexMissingError(
                f"no index at {index_dir}; build one with `build_index(FOLDER)`"
                " (or point index_dir= / VSEARCH_INDEX_DIR at an existing one)")
        deadline = time.monotonic() + COMMIT_WAIT_S
        while True:
            meta = read_meta(index_dir)
            manifest = Manifest.open(index_dir / MANIFEST_FILE, write=False)
            try:
                check_agrees(index_dir, manifest, meta)
                return cls(index_dir, manifest, meta, None)
            except GenerationGone:
                # Two commits landed between reading meta.json and the manifest: read it again. One
                # that still names a gone generation after the wait is stale (restored from an older
                # copy, or edited), and a writer's next commit rewrites it.
                generation, root = manifest.generation, manifest.get("root")
                manifest.close()
                if time.monotonic() > deadline:
                    raise IndexCorruptError(
                        f"{index_dir / META_FILE} names generation {meta.generation}, which the manifest (at "
                        f"generation {generation}) no longer holds (a meta.json restored from an older copy, or edited); "
                        f"`build_index({root or meta.root})` rewrites it") from None
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
            raise VsearchError(f"index at {self.dir} covers {known_root}, not {root}; use another index_dir= "
                               "for this folder")
        known = self.model_id
        if known is not None and model_name and model_name != known.name:
            raise ModelMismatchError(
                f"index at {self.dir} was built with model {known.name}; it cannot mix in vectors "
                f"from {model_name}. Leave out model= to use {known.name}, or use another index_dir=")
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
                "Rebuild the index in a new index_dir=")

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
        """A file that could not be embedded, with the reason (``vsearch info`` counts them).
        Every run tries skipped files again: making a file readable, or installing a codec,
        changes no size or mtime.

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

    def update_dirs(self, dirs: Iterable[tuple[str, int]]) -> None:
        """Remember the new mtime of folders vsearch itself changed (moving files in or out),
        so that the staleness check does not take its own work for a change; others keep theirs."""
        self._require_writer()
        self.manifest.update_dirs(dirs)

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

    def wrote(self, name: str, checksum: FileSum | None = None) -> None:
        """Say that file ``name`` in the index folder was (re)written: the next commit of
        ``meta.json`` records its checksum anew (``checksum`` when the writer has it, else
        computed then). A file not said so keeps the checksum of its first commit, so damage
        done after a commit is never recorded as the file's truth."""
        self._fresh[name] = checksum

    def set_ann(self, ann: AnnInfo | None) -> None:
        """Record (or drop) the Annoy index of the committed generation in ``meta.json``."""
        self._require_writer()
        assert self.meta is not None
        if ann is not None:
            self.wrote(ann.file)
        if ann is not None and ann.size is None:  # record the size, checked before each load
            ann = dataclasses.replace(ann, size=(self.dir / ann.file).stat().st_size)
        # One approximate index a generation: an Annoy build replaces an IVF-PQ one.
        self.write_meta(dataclasses.replace(self.meta, ann=ann, ivfpq=None if ann is not None else self.meta.ivfpq))

    def set_ivfpq(self, info: IvfpqInfo | None) -> None:
        """Record (or drop) the IVF-PQ index of the committed generation; it replaces Annoy."""
        self._require_writer()
        assert self.meta is not None
        if info is not None:  # its size and SHA-256 are what the build measured
            self.wrote(info.file, FileSum(info.file, info.size, info.sha256))
        self.write_meta(dataclasses.replace(self.meta, ivfpq=info, ann=None if info is not None else self.meta.ann))

    def set_dba(self, dba: DbaInfo | None) -> None:
        """Record (or drop) the DBA copy of the committed vectors; the Annoy index, built over
        the vectors search ranks against, is dropped with it and must be rebuilt."""
        self._require_writer()
        assert self.meta is not None
        if dba is not None:
            self.wrote(dba.file)
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
        source vectors (no image is embedded again). The Annoy index and the DBA copy, made over
        the old copy, are dropped: the next ``build-index`` step makes them again."""
        self._require_writer()
        assert self.meta is not None
        info = self.search_copy(self.vectors(), self.meta.generation)
        self.write_meta(dataclasses.replace(self.meta, vectors_format=info, ann=None, dba=None, ivfpq=None,
                                            updated=_now()))
        return self.meta

    def search_copy(self, source: np.ndarray, generation: int) -> FormatInfo | None:
        """The search copy of ``source`` (one generation's vectors) in :meth:`wanted_format`, made
        by the writer's ``derived``; None for fp32 (search reads the source vectors)."""
        if self._derived is not None:
            info = self._derived.search_copy(self, source, generation)
            if info is not None:
                self.wrote(info.file)
            return info
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
        previous = {s.name: s for s in (self.meta.checksums if self.meta is not None else ())}
        meta = dataclasses.replace(meta, checksums=checksums.record(
            self.dir, (name for _role, name in meta.named_files()), previous, self._fresh))
        atomic.write_bytes(self.dir / META_FILE, json.dumps(meta.to_dict(), indent=2).encode())
        self._fresh = {}
        self.meta = meta
        self._vectors = None
        remove_stale(self)


def _files_of(meta: IndexMeta) -> set[str]:
    return {name for _role, name in meta.named_files()}


def remove_stale(store: Store) -> None:
    """Delete temporaries, orphan chunks and the files no reader may still use: those neither
    ``meta.json`` nor the generation before it names."""
    if store._lock_fd is None:
        return
    keep = {META_FILE, MANIFEST_FILE, CHUNK_DIR, LOCK_FILE, MARKS_FILE, UNDO_DIR, *json.loads(store.manifest.get("previous_files") or "[]")}
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
        raise VsearchError(f"index_dir={index_dir} is a non-empty folder that holds no vsearch index; "
                           "choose an empty or new folder")
    try:
        (index_dir / CHUNK_DIR).mkdir(parents=True, exist_ok=True)
        lock_fd = _take_lock(index_dir / LOCK_FILE)
    except PermissionError:
        raise VsearchError(f"cannot write to the index folder {index_dir} (permission denied); "
                           "choose another index_dir= or make it writable") from None
    except OSError as exc:
        # A disk error as one; else the folder cannot be made there (a file in the way, a name
        # too long), which is no bug either.
        raise atomic.write_error(exc, index_dir) or VsearchError(
            f"cannot make the index folder {index_dir}: {exc.strerror or exc}; choose another index_dir=") from None
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
    again from the source vectors, the transform fitted again: nothing is lost, nothing embedded."""
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
        store.wrote(target.name)
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


def rebuild_files(index_dir: Path) -> tuple[Path, str, str, list[Any]] | None:
    """Remove a (damaged) index's files, keeping what can be trusted for ``Manifest.restore``:
    ``(vectors moved to chunk 0, root, model JSON, rows)`` when the manifest reads and its
    vectors file is intact and agrees with it, else None (everything is embedded again).

    Only damage is forgiven here (an unreadable manifest or vectors file, a model record that
    does not parse); any other error is a bug and propagates, rather than silently embedding
    the whole folder again."""
    kept: tuple[Path | None, str, str, list[Any]] | None = None
    with contextlib.suppress(VsearchError, OSError):
        old = Manifest.open(index_dir / MANIFEST_FILE, write=False)
        try:
            root, model = old.get("root"), old.get("model")
            rows = old.salvage()
            dim = _model_dim(model)
            source = index_dir / vectorfiles.vectors_name(old.generation)
            if dim is not None:
                vectors = vectorfiles.load(source, (len(rows), dim), "")
                if model and root and [r[4] for r in rows] == list(range(len(rows))) and rows:
                    rows = _trusted_rows(index_dir, source, vectors, rows)
                    kept = (source if rows else None, root, model, rows)
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
        elif child.is_dir() and not child.is_symlink() and _index_file_name(child.name):
            shutil.rmtree(child)  # a folder where an index file belongs: damage, in the way of the new file
    log.warning("warning: rebuilding the index at %s: %s", index_dir,
                f"kept {len(kept[3])} files and their vectors" if kept and kept[3] else "no vectors could be kept")
    return None if kept is None else (chunk0, kept[1], kept[2], kept[3])


def _index_file_name(name: str) -> bool:
    """Whether ``name`` is the name of a file the index writes (never of a folder it keeps)."""
    return (name in (META_FILE, MANIFEST_FILE) or vectorfiles.generation_of(name) is not None
            or vectorfiles.is_transform(name) or (name.startswith("head.") and name.endswith(".npz")))


def _trusted_rows(index_dir: Path, source: Path, vectors: np.ndarray, rows: list[Any]) -> list[Any]:
    """The manifest rows whose vectors a rebuild may keep: none when ``meta.json`` recorded a
    checksum that the vectors file no longer matches (which rows changed cannot be told), else
    those whose vector is a finite unit vector; the others' images are embedded again."""
    recorded = None
    with contextlib.suppress(VsearchError, OSError):
        recorded = read_meta(index_dir).checksum(source.name)
    if recorded is not None:
        problem = checksums.problem(source, recorded)
        if problem is not None:
            log.warning("warning: the vectors %s are damaged (%s); every image will be embedded again", source, problem)
            return []
    not_finite, not_unit = vectorfiles.bad_rows(vectors)
    bad = set(not_finite.tolist()) | set(not_unit.tolist())
    if bad:
        log.warning("warning: %d vector(s) in %s are damaged; their images will be embedded again", len(bad), source)
    return [r for r in rows if r[4] not in bad]


def _model_dim(model_json: str | None) -> int | None:
    """The vector length a manifest's model record names, or None when it is missing or damaged."""
    try:
        return ModelId.from_dict(json.loads(model_json or "null")).dim
    except (ValueError, TypeError, KeyError, AttributeError):  # damaged JSON or a record of another shape
        return None


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
