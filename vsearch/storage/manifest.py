"""The manifest (``manifest.sqlite``): every SQL statement vsearch runs, and the schema.

Two views of the files live here:

* ``files``: the writer's working state, one row per file under the image root (path, size,
  mtime_ns, digest, its row in the committed vectors, the chunk and chunk row of a vector
  embedded since, a skip reason, a deleted mark). The writer changes it in place while it scans.
* ``committed``: for each generation still kept (the newest two), the frozen mapping
  row -> file (id, path, size, mtime_ns, digest) exactly as that generation committed it.
  Readers look rows and paths up here, by the generation ``meta.json`` names, so a writer's
  work in progress and its next commit never change what a reader sees (see ``store``).

Indexes written before ``committed`` existed have no snapshot: a reader then reads ``files``
when its generation is the manifest's, as before; the next writer adds the snapshot.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Self

from vsearch.version import __version__
from vsearch.errors import IndexCorruptError, IndexWriteError
from vsearch.storage.meta import known_root
from vsearch.storage.regular import regular_problem

SCHEMA_VERSION = 1
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


#: The one column list every FileEntry is read with (``committed`` holds the same names).
COLUMNS = ", ".join(f.name for f in fields(FileEntry))

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
CREATE TABLE IF NOT EXISTS committed (
    generation INTEGER NOT NULL,
    row INTEGER NOT NULL,
    id INTEGER NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    digest TEXT,
    skip_reason TEXT,
    PRIMARY KEY (generation, row)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS committed_path ON committed(generation, path);
CREATE INDEX IF NOT EXISTS committed_digest ON committed(generation, digest);
"""


class GenerationGone(Exception):
    """The generation a reader holds is no longer in the manifest (two commits since)."""


@contextlib.contextmanager
def sql_errors(path: Path) -> Iterator[None]:
    """Turn SQLite's disk-full, I/O and read-only errors into one-line ``IndexWriteError``s."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "disk is full" in text:
            raise IndexWriteError(f"no space left on device writing {path}; free some space and run the command again") from None
        if "disk I/O error" in text:
            raise IndexWriteError(f"input/output error writing {path} (a failing disk or a lost network mount?)") from None
        if "readonly" in text:
            raise IndexWriteError(f"permission denied writing {path}") from None
        raise


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection, after rolling back what a killed writer left half-committed.

    A writer killed inside a commit leaves a hot journal (``manifest.sqlite-journal``) that
    must be played back before the database can be read, and a read-only connection cannot
    (SQLite: ``SQLITE_READONLY_ROLLBACK``), so every reader would fail until a writer ran.
    A plain connection plays it back on its first read: SQLite's own recovery, which runs only
    when no live writer holds the database, so it never undoes a commit in progress.
    """
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
    try:
        db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return db
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorname", "") != "SQLITE_READONLY_ROLLBACK":
            raise
        db.close()
    try:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as recover:
            recover.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError as exc:
        raise IndexWriteError(f"{path} holds a change a killed writer left half done, and rolling it back "
                              f"failed ({exc}); make the index folder writable, then run the command again") from None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)


class ManifestReader:
    """One connection to ``manifest.sqlite`` (readers open it read-only): the schema, the
    key/value state and every read. :class:`Manifest` adds the writer's statements."""

    def __init__(self, path: Path, db: sqlite3.Connection, writable: bool) -> None:
        self.path = path
        self.db = db
        self.writable = writable

    @classmethod
    def open(cls, path: Path, *, write: bool) -> Self:
        """Connect (a writer creates the schema); refuse a damaged or too new manifest."""
        def remedy() -> str:  # read only when needed: it looks for the folder in meta.json, then here
            return f"`build_index({known_root(path.parent)}, rebuild=True)` rebuilds it"

        with contextlib.suppress(FileNotFoundError):  # a writer creates a missing one
            kind = regular_problem(path.stat())
            if kind is not None:  # SQLite would wait on a FIFO, or open a device
                raise IndexCorruptError(f"cannot read manifest {path}: not a regular file ({kind}); {remedy()}")
        try:
            with sql_errors(path):
                if write:
                    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
                    db.execute("PRAGMA journal_mode=DELETE")
                    db.execute("PRAGMA synchronous=FULL")
                    db.executescript(_SCHEMA)
                    db.execute("INSERT OR IGNORE INTO kv(key, value) VALUES ('schema_version', ?)",
                                (str(SCHEMA_VERSION),))
                else:
                    db = _open_read_only(path)
                row = db.execute("SELECT value FROM kv WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"cannot read manifest {path}: {exc}; {remedy()}") from None
        if row is None or not str(row[0]).isdigit() or int(row[0]) > SCHEMA_VERSION:
            db.close()
            raise IndexCorruptError(
                f"manifest {path} has schema version {row[0] if row else '?'}, which this vsearch "
                f"({__version__}) does not read; upgrade vsearch, or `build_index({known_root(path.parent)}, rebuild=True)`"
            )
        manifest = cls(path, db, write)
        try:
            manifest.generation  # noqa: B018 - a damaged kv table shows here, not at first use
        except (sqlite3.DatabaseError, ValueError) as exc:
            db.close()
            raise IndexCorruptError(f"cannot read manifest {path}: {exc}; {remedy()}") from None
        return manifest

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All of the block's statements, or none of them."""
        with sql_errors(self.path):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk does): then there is none.
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """The block's reads see one state of the manifest: a writer's commit cannot land between
        them (a reader checks which generations are kept, then reads one: both must agree)."""
        if self.db.in_transaction:
            yield
            return
        with sql_errors(self.path):
            self.db.execute("BEGIN")
        try:
            yield
        finally:
            if self.db.in_transaction:
                self.db.execute("COMMIT")

    # --- key/value state ---------------------------------------------------------------------

    def get(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set(self, key: str, value: str) -> None:
        """Set one key (inside the caller's transaction, or in one of its own)."""
        if self.db.in_transaction:
            self.db.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (key, value))
            return
        with self.transaction():
            self.set(key, value)

    @property
    def generation(self) -> int:
        return int(self.get("generation", "0") or 0)

    def snapshots(self) -> list[int]:
        """Generations whose row mapping ``committed`` holds."""
        return json.loads(self.get("snapshots", "[]") or "[]")

    # --- reads: ``generation=None`` is the writer's working state ------------------------------

    def _source(self, generation: int | None) -> tuple[str, str, tuple]:
        """(table, condition, parameters) that select the live rows of one view."""
        if generation is None or generation not in self.snapshots():
            if generation is not None and generation != self.generation:
                raise GenerationGone(generation)
            return "files", "deleted = 0", ()
        return "committed", "generation = ?", (generation,)

    def entry(self, path: str, generation: int | None = None) -> FileEntry | None:
        table, cond, args = self._source(generation)
        row = self.db.execute(f"SELECT {COLUMNS} FROM {table} WHERE {cond} AND path = ?", (*args, path)).fetchone()
        return FileEntry(*row) if row else None

    def entry_by_digest(self, digest: str, generation: int | None = None) -> FileEntry | None:
        table, cond, args = self._source(generation)
        row = self.db.execute(f"SELECT {COLUMNS} FROM {table} WHERE {cond} AND digest = ? AND row IS NOT NULL LIMIT 1",
                              (*args, digest)).fetchone()
        return FileEntry(*row) if row else None

    def entries_of_rows(self, rows: Sequence[int], generation: int | None = None) -> dict[int, FileEntry]:
        """The entry of each of ``rows`` (committed rows) that has one, in batches: one query per
        900 rows where :meth:`rows` then :meth:`entry` would take two per row."""
        table, cond, args = self._source(generation)
        found: dict[int, FileEntry] = {}
        wanted = sorted({int(r) for r in rows})
        for start in range(0, len(wanted), 900):  # SQLite's bound-parameter limit
            part = wanted[start:start + 900]
            marks = ",".join("?" * len(part))
            for values in self.db.execute(f"SELECT {COLUMNS} FROM {table} WHERE {cond} AND row IN ({marks})",
                                          (*args, *part)):
                entry = FileEntry(*values)
                assert entry.row is not None  # selected by row
                found[entry.row] = entry
        return found

    def entries(self) -> Iterator[FileEntry]:
        """Every live entry of the working state, skipped ones included, in path order."""
        for row in self.db.execute(f"SELECT {COLUMNS} FROM files WHERE deleted = 0 ORDER BY path"):
            yield FileEntry(*row)

    def skipped(self) -> list[tuple[str, str]]:
        return list(self.db.execute(
            "SELECT path, skip_reason FROM files WHERE skip_reason IS NOT NULL AND deleted = 0 ORDER BY path"))

    def rows(self, generation: int | None = None, wanted: Sequence[int] | None = None) -> Iterator[tuple[int, str]]:
        """(row, path) of committed rows: all of them, or those in ``wanted``."""
        table, _cond, args = self._source(generation)
        cond = "generation = ?" if table == "committed" else "1"
        if wanted is None:
            yield from self.db.execute(f"SELECT row, path FROM {table} WHERE {cond} AND row IS NOT NULL", args)
            return
        wanted = sorted(set(wanted))
        for start in range(0, len(wanted), 900):  # SQLite's bound-parameter limit
            part = wanted[start:start + 900]
            marks = ",".join("?" * len(part))
            yield from self.db.execute(f"SELECT row, path FROM {table} WHERE {cond} AND row IN ({marks})", (*args, *part))

    def row_count(self, generation: int | None = None) -> int:
        table, _cond, args = self._source(generation)
        cond = "generation = ?" if table == "committed" else "1"
        return self.db.execute(f"SELECT COUNT(*) FROM {table} WHERE {cond} AND row IS NOT NULL", args).fetchone()[0]

    def row_span(self, generation: int | None = None) -> int:
        """1 + the highest committed row: the row count when rows are dense (they are, by
        construction), read from an index in O(log n) where COUNT(*) reads every row."""
        table, _cond, args = self._source(generation)
        cond = "generation = ?" if table == "committed" else "1"
        (top,) = self.db.execute(f"SELECT MAX(row) FROM {table} WHERE {cond}", args).fetchone()
        return 0 if top is None else top + 1

    def skipped_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM files WHERE skip_reason IS NOT NULL AND deleted = 0").fetchone()[0]

    def dirs(self) -> list[tuple[str, int]]:
        return list(self.db.execute("SELECT path, mtime_ns FROM dirs ORDER BY path"))



class Manifest(ManifestReader):
    """The manifest with the writer's statements: the working state, and committing a generation."""

    def add_chunk_rows(self, number: int, records: Sequence[tuple[str, int, int, str]]) -> None:
        with self.transaction():
            self.set("next_chunk", str(number + 1))
            for i, (path, size, mtime_ns, digest) in enumerate(records):
                self._upsert(path, size, mtime_ns, digest, chunk=number, chunk_row=i, skip_reason=None)

    def add_reference(self, path: str, size: int, mtime_ns: int, digest: str, source_id: int) -> None:
        chunk, chunk_row, row = self.db.execute("SELECT chunk, chunk_row, row FROM files WHERE id = ?",
                                                (source_id,)).fetchone()
        if chunk is None:
            chunk, chunk_row = FROM_VECTORS, row
        with self.transaction():
            self._upsert(path, size, mtime_ns, digest, chunk=chunk, chunk_row=chunk_row, skip_reason=None)

    def move(self, entry_id: int, new_path: str, size: int, mtime_ns: int) -> None:
        with self.transaction() as db:
            self.set("relabelled", "1")  # readers see the new path once a commit snapshots it
            db.execute("DELETE FROM files WHERE path = ? AND id != ?", (new_path, entry_id))
            db.execute("UPDATE files SET path = ?, size = ?, mtime_ns = ?, deleted = 0 WHERE id = ?",
                       (new_path, size, mtime_ns, entry_id))

    def touch(self, entry_id: int, size: int, mtime_ns: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE id = ?", (size, mtime_ns, entry_id))

    def record_skip(self, path: str, size: int, mtime_ns: int, reason: str) -> None:
        # The row keeps its committed row number: the committed vectors still hold the file's
        # old vector until the next consolidation, which leaves every skipped file out.
        with self.transaction():
            self._upsert(path, size, mtime_ns, None, chunk=None, chunk_row=None, skip_reason=reason)

    def mark_deleted(self, paths: Iterable[str]) -> int:
        with self.transaction() as db:
            cur = db.executemany("UPDATE files SET deleted = 1 WHERE path = ?", ((p,) for p in paths))
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

    def record_dirs(self, dirs: Iterable[tuple[str, int]]) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM dirs")
            db.executemany("INSERT OR REPLACE INTO dirs(path, mtime_ns) VALUES (?, ?)", dirs)

    def update_dirs(self, dirs: Iterable[tuple[str, int]]) -> None:
        """Set the recorded mtime of these folders, leaving the others' as they are."""
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO dirs(path, mtime_ns) VALUES (?, ?)", dirs)

    def pending_count(self) -> int:
        """Working-state rows that the committed vectors do not reflect yet."""
        return self.db.execute(
            "SELECT COUNT(*) FROM files WHERE chunk IS NOT NULL OR deleted = 1 "
            "OR (row IS NOT NULL AND skip_reason IS NOT NULL)").fetchone()[0]

    def ids_by_row(self) -> list[int]:
        """File id of each committed row, in row order."""
        return [i for (i,) in self.db.execute("SELECT id FROM files WHERE row IS NOT NULL ORDER BY row")]

    def integrity_problem(self) -> str | None:
        """What SQLite's own check (``PRAGMA quick_check``: pages, records, indexes) finds wrong
        in the file, or None. Reads every page: ``check()`` calls it, a query never does."""
        try:
            found = [str(r[0]) for r in self.db.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:
            return str(exc)
        return None if found == ["ok"] else "; ".join(found[:3])

    def live_chunks(self) -> dict[int, int]:
        """Chunk number -> rows the manifest expects it to hold (its largest chunk_row + 1)."""
        return dict(self.db.execute(
            "SELECT chunk, MAX(chunk_row) + 1 FROM files WHERE chunk IS NOT NULL AND chunk != ? GROUP BY chunk",
            (FROM_VECTORS,)))

    def forget_chunk(self, number: int) -> int:
        """Forget the files whose only vector is in chunk ``number``: the next scan finds them new."""
        with self.transaction() as db:
            cur = db.execute("DELETE FROM files WHERE chunk = ?", (number,))
            db.execute("DELETE FROM dirs")  # nothing may look up to date now
        return cur.rowcount

    def forget_committed(self) -> None:
        """Forget every file whose vector is in the committed vectors (they cannot be read)."""
        with self.transaction() as db:
            db.execute("DELETE FROM files WHERE row IS NOT NULL OR chunk = ?", (FROM_VECTORS,))
            db.execute("DELETE FROM dirs")

    def merge_sources(self) -> list[tuple[int, int | None, int | None, int | None]]:
        """(id, row, chunk, chunk_row) of every file in the next generation, in path order."""
        return self.db.execute(
            "SELECT id, row, chunk, chunk_row FROM files WHERE deleted = 0 AND skip_reason IS NULL "
            "AND (chunk IS NOT NULL OR row IS NOT NULL) ORDER BY path").fetchall()

    def commit_generation(self, generation: int, ids: Sequence[int], skipped: int) -> None:
        """Renumber rows to ``ids`` order, snapshot them as ``generation``, keep the previous one."""
        with self.transaction() as db:
            db.execute("DELETE FROM files WHERE deleted = 1")
            db.execute("UPDATE files SET row = NULL")
            db.executemany("UPDATE files SET row = ?, chunk = NULL, chunk_row = NULL WHERE id = ?",
                           ((i, file_id) for i, file_id in enumerate(ids)))
            db.execute("UPDATE files SET chunk = NULL, chunk_row = NULL WHERE skip_reason IS NOT NULL")
            self._snapshot(generation)
            db.execute("DELETE FROM kv WHERE key = 'relabelled'")
            self.set("generation", str(generation))
            self.set("skipped", str(skipped))

    def ensure_snapshot(self) -> None:
        """Give an index written before snapshots existed one for its current generation."""
        if self.generation and self.generation not in self.snapshots():
            with self.transaction():
                self._snapshot(self.generation)

    def _snapshot(self, generation: int) -> None:
        keep = [g for g in self.snapshots() if g == generation - 1] + [generation]
        self.db.execute("DELETE FROM committed WHERE generation < ? OR generation >= ?", (generation - 1, generation))
        self.db.execute(f"INSERT OR REPLACE INTO committed(generation, {COLUMNS}) "
                        f"SELECT ?, {COLUMNS} FROM files WHERE row IS NOT NULL", (generation,))
        self.set("snapshots", json.dumps(keep))

    def salvage(self) -> list[tuple[str, int, int, str | None, int]]:
        """(path, size, mtime_ns, digest, row) of each committed file, for ``--rebuild``."""
        return list(self.db.execute(
            "SELECT path, size, mtime_ns, digest, row FROM files WHERE row IS NOT NULL AND skip_reason IS NULL "
            "AND digest IS NOT NULL ORDER BY row"))

    def restore(self, root: str, model: str, rows: Sequence[tuple[str, int, int, str | None, int]]) -> None:
        """``--rebuild``: the old index's folder, model and committed files (now chunk 0)."""
        with self.transaction():
            self.set("root", root)
            self.set("model", model)
            self.set("next_chunk", "1" if rows else "0")
            for path, size, mtime_ns, digest, row in rows:
                self._upsert(path, size, mtime_ns, digest, chunk=0, chunk_row=row, skip_reason=None)

    def clear(self) -> None:
        """Forget every file (a rebuild for another folder keeps nothing)."""
        with self.transaction() as db:
            for table in ("files", "dirs", "committed"):
                db.execute(f"DELETE FROM {table}")
            db.execute("DELETE FROM kv WHERE key NOT IN ('schema_version', 'next_chunk')")
