"""A reader's view of an index directory: the generation ``meta.json`` named when it opened,
the manifest's rows of that generation and its vector files (see :mod:`vsearch.storage.store`
for the layout and the commit). The writer (:class:`~vsearch.storage.store.Store`) is a view
that also changes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vsearch.storage import vectorfiles
from vsearch.errors import IndexBusyError, IndexCorruptError, IndexMissingError, VsearchError
from vsearch.identity import ModelId
from vsearch.storage.meta import (
    META_FILE,
    IndexMeta,
    read_meta,
    rebuild_hint,
)
from vsearch.storage.manifest import FileEntry, GenerationGone, Manifest
from vsearch.storage.regular import require_regular


__all__ = ["COMMIT_WAIT_S", "FORMAT_KEY", "KEPT_LOGS", "LOCK_FILE", "MARKS_FILE", "TRANSFORM_KEY", "UNDO_DIR", "Snapshot",
           "check_agrees", "check_bound", "file_digest", "path_digest"]


LOCK_FILE = "lock"
#: Side records that outlive every build and ``--rebuild``: not-duplicate marks, undo logs.
MARKS_FILE, UNDO_DIR = "marks.jsonl", "undo"
#: What a person recorded through ``vsearch serve`` (vsearch.learning.judgments): a rebuild keeps them.
KEPT_LOGS = ("judgments.jsonl", "events.jsonl", "judgments.sqlite", "judgments.sqlite-wal", "judgments.sqlite-shm")
#: Manifest keys (the writer's working state): the format its commits make, and its fitted PCA.
FORMAT_KEY, TRANSFORM_KEY = "vectors_format", "transform"
#: How long a reader waits for a commit in flight (SQLite ahead of meta.json) to finish.
COMMIT_WAIT_S = 2.0


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


class Snapshot:
    """What every open index offers: its binding, its manifest's rows and its vector files.

    A reader (a plain :class:`Store`) sees the generation ``meta.json`` named when it opened;
    the writer sees, and changes, the manifest's working state.
    """

    def __init__(self, index_dir: Path, manifest: Manifest, meta: IndexMeta | None, lock_fd: int | None):
        self.dir = index_dir
        self.manifest = manifest
        #: What ``meta.json`` committed (a reader's: when it opened), or None before a commit.
        self.meta = meta
        self._lock_fd = lock_fd
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

    def entries_of_rows(self, rows: Sequence[int]) -> dict[int, FileEntry]:
        """The manifest entry of each of ``rows`` that has one (committed rows), in batches."""
        with self._reading():
            return self.manifest.entries_of_rows(rows, self._view())

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
        return paths  # type: ignore[return-value]  # no None left: checked above

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
                                       f"`build_index({self.meta.root})` repairs the index")
        return self._vectors

    def _load(self, name: str, shape: tuple[int, int], remedy: str, dtype: Any = np.float32) -> np.ndarray:
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
        path = self.dir / vectorfiles.vectors_name(generation)
        require_regular(path)  # np.load would wait on a FIFO forever
        return np.load(path, mmap_mode="r")

    def ann_path(self) -> Path | None:
        """Path of the Annoy index of the committed generation, if built. Any
        :class:`~vsearch.vectors.nearest.AnnoySearcher` on it checks it first against
        (the size and trees ``meta.json`` records)."""
        if self.meta is None or self.meta.ann is None:
            return None
        return self.dir / self.meta.ann.file


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
            f"meta.json generation {meta.generation}); re-run `build_index({root or 'FOLDER'})` to finish it")
    n = manifest.row_span(meta.generation)  # what a query's open can afford at 1M rows
    if n != meta.count:
        raise IndexCorruptError(f"index at {index_dir}: manifest has {n} rows but meta.json says {meta.count}; "
                                f"{rebuild_hint(root or 'FOLDER')}")
