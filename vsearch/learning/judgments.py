"""Relevance judgments: a person's verdict on one result of one query, kept in the index folder.

    judgments.sqlite   table ``judgments``: one row per verdict (this module); tables
                       ``queries``, ``impressions``, ``clicks`` and ``dwell``: the click log
                       (vsearch.learning.clicks); ``interleaved*``: the interleaving log
                       (vsearch.learning.interleaving, made on first use)

``kv.schema_version`` says which schema a file has (:data:`SCHEMA_VERSION`); an older file is
migrated in place the first time this version opens it (:func:`_migrate`), a newer one is refused.

Images are keyed by content digest (the manifest's BLAKE2b), so a verdict survives renames,
moves and rebuilds, like the not-duplicate marks. A query key is a digest too: an indexed
image's, or an uploaded (or outside) image's bytes; a text query is ``text:`` + the text. The
path of each image at the time is kept beside its digest, for a person reading the list and for
an outside query image that evaluation can still find on disk.

Why SQLite and not the JSON-lines file the page wrote before (``judgments.jsonl``): the click
log needs joins (clicks against the impressions of one query), and one verdict per pair must be
found without reading every line. Each call is one transaction (WAL journal, synchronous FULL),
so a crash loses at most the call in flight. A ``judgments.jsonl`` found beside a new database
is imported once, in the transaction that creates the schema, and left where it is.

A damaged database is never written to or replaced: every call raises one
:class:`~vsearch.errors.VsearchError` naming the file, and what it held stays for a person to
recover. An empty (0-byte) file counts as damaged: SQLite would read it as a new database and
say nothing of what was lost.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from vsearch.storage import sidelog
from vsearch.storage.regular import regular_problem
from vsearch.errors import IndexWriteError, VsearchError
from vsearch.storage.store import KEPT_LOGS

log = logging.getLogger(__name__)

__all__ = ["DB_FILE", "JSONL_FILE", "SOURCES", "Judgment", "Verdict", "database", "latest_verdicts",
           "read_judgments", "record_judgment", "record_judgments"]

JSONL_FILE, _EVENTS_FILE, DB_FILE = KEPT_LOGS[:3]  # named in store, whose --rebuild keeps them
#: Where a verdict came from.
SOURCES: tuple[str, ...] = ("cli", "page", "augment")
#: 1: verdicts and the click log; 2: adds ``queries.arm`` (the split A/B arm that served a list)
#: and the ``dwell`` table (time spent on a result). A version-1 file is migrated on first open.
SCHEMA_VERSION = 2
#: How long a call waits for another process's transaction on the same file.
BUSY_TIMEOUT_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS judgments (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    query TEXT NOT NULL,
    result TEXT NOT NULL,
    relevant INTEGER NOT NULL,
    grade INTEGER NOT NULL,
    rank INTEGER,
    source TEXT NOT NULL,
    result_path TEXT,
    query_path TEXT
);
CREATE INDEX IF NOT EXISTS judgments_pair ON judgments(query, result);
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    query TEXT NOT NULL,
    shown INTEGER NOT NULL,
    swapped INTEGER,
    arm TEXT
);
CREATE TABLE IF NOT EXISTS impressions (
    query_id INTEGER NOT NULL REFERENCES queries(id),
    rank INTEGER NOT NULL,
    original_rank INTEGER NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (query_id, rank)
);
CREATE INDEX IF NOT EXISTS impressions_result ON impressions(query_id, result);
CREATE TABLE IF NOT EXISTS clicks (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    query_id INTEGER NOT NULL REFERENCES queries(id),
    result TEXT NOT NULL,
    rank INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dwell (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    query_id INTEGER NOT NULL REFERENCES queries(id),
    result TEXT NOT NULL,
    rank INTEGER NOT NULL,
    ms INTEGER NOT NULL CHECK (ms >= 0)
);
"""

#: What takes a file of each older version to the next one (each in the migrating transaction).
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE queries ADD COLUMN arm TEXT",
        "CREATE TABLE IF NOT EXISTS dwell (id INTEGER PRIMARY KEY, time TEXT NOT NULL, "
        "query_id INTEGER NOT NULL REFERENCES queries(id), result TEXT NOT NULL, rank INTEGER NOT NULL, "
        "ms INTEGER NOT NULL CHECK (ms >= 0))"),
}


@dataclass(frozen=True)
class Verdict:
    """One verdict to record: ``result`` (a digest) judged for ``query`` (a query key).

    ``grade``: graded relevance, used as the gain of nDCG; None means 1 when relevant, 0 when
    not. ``rank``: where the result was shown (1 = first), when known.
    """

    query: str
    result: str
    relevant: bool
    grade: int | None = None
    rank: int | None = None
    result_path: str | None = None
    query_path: str | None = None


@dataclass(frozen=True)
class Judgment:
    """A recorded verdict, as read back (oldest first)."""

    time: str
    query: str
    result: str
    relevant: bool
    grade: int
    rank: int | None
    source: str
    result_path: str | None = None
    query_path: str | None = None

    @property
    def label(self) -> str:
        """``relevant`` or ``not-relevant``, the page's words."""
        return "relevant" if self.relevant else "not-relevant"


def check_key(name: str, value: object) -> str:
    """A query or result key: one line, non-empty, at most 1000 characters."""
    if not isinstance(value, str) or not value or len(value) > 1000 or "\n" in value:
        raise VsearchError(f"{name} must be a content digest or text key (one line, at most 1000 characters)")
    return value


def _check_rank(rank: object) -> None:
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise VsearchError(f"rank must be a whole number, 1 or more (got {rank!r})")


#: The highest grade a verdict may have. nDCG takes the grade as its gain, as it is, so any scale
#: a person judges on (0-3, 0-10, a percentage) fits; beyond it is a typo, and past 2**63 SQLite
#: cannot store it at all.
MAX_GRADE = 1000


def _grade(v: Verdict) -> int:
    if v.grade is None:
        return 1 if v.relevant else 0
    if isinstance(v.grade, bool) or not isinstance(v.grade, int):
        raise VsearchError(f"grade must be a whole number (got {v.grade!r})")
    if v.relevant and v.grade < 1:
        raise VsearchError(f"a relevant result needs a grade of 1 or more (got {v.grade})")
    if not v.relevant and v.grade != 0:
        raise VsearchError(f"an irrelevant result has grade 0 (got {v.grade})")
    if v.grade > MAX_GRADE:
        raise VsearchError(f"a grade is at most {MAX_GRADE} (got {v.grade})")
    return v.grade


# --- the database file -----------------------------------------------------------------------


def db_path(index_dir: Path) -> Path:
    """Where an index keeps its judgments and click log."""
    return Path(index_dir) / DB_FILE


@contextlib.contextmanager
def _errors(path: Path) -> Iterator[None]:
    """SQLite's errors as one-line VsearchErrors naming the file (the file is never touched)."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise VsearchError(f"{path} is busy: another vsearch process is writing it; try again") from None
        if "disk is full" in text:
            raise IndexWriteError(f"no space left on device writing {path}; free some space and run the command "
                                  "again (nothing was recorded)") from None
        if "readonly" in text or "unable to open" in text:
            raise IndexWriteError(f"cannot write {path}: {text} (nothing was recorded)") from None
        raise VsearchError(f"{path} is damaged and cannot be read ({text}); it was left as it is: move it away to "
                           "start a new one, or restore it from a backup") from None


@contextlib.contextmanager
def database(index_dir: Path, *, write: bool = False) -> Iterator[sqlite3.Connection]:
    """One transaction on the index's ``judgments.sqlite`` (created with its schema when absent).

    ``write``: an immediate (write-locked) transaction, committed when the block ends without
    an error and rolled back otherwise. Raises :class:`VsearchError` naming the file when it is
    damaged, busy past :data:`BUSY_TIMEOUT_S`, or cannot be written.
    """
    index_dir = Path(index_dir)
    path = db_path(index_dir)
    if not index_dir.is_dir():
        raise VsearchError(f"no index at {index_dir}")
    kind = _not_regular(path)
    if kind is not None:  # SQLite would wait on a FIFO, or open a device
        raise VsearchError(f"{path} is not a regular file ({kind}); it was left as it is: move it away to start a "
                           "new one, or restore it from a backup")
    if _empty(path):  # SQLite would take it for a new database, and its loss would go unsaid
        raise VsearchError(f"{path} is damaged: it is empty (0 bytes), so whatever it held is lost; it was left as "
                           "it is: move it away to start a new one, or restore it from a backup")
    with _errors(path):
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            _prepare(db, index_dir)
            with _transaction(db, write=write):
                yield db
        finally:
            db.close()


def problem(index_dir: Path) -> str | None:
    """What is wrong with ``judgments.sqlite`` (for ``check()``), or None (also when there is
    none). Writes nothing, not even a schema into an empty file: SQLite's own check of every
    page, then the tables this module reads."""
    path = db_path(index_dir)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if regular_problem(st) is not None:
        return f"{regular_problem(st)}, not a database"
    if st.st_size == 0:
        return "empty: the verdicts and clicks it held are lost"
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.DatabaseError as exc:
        return f"cannot be opened ({exc})"
    try:
        found = [str(r[0]) for r in db.execute("PRAGMA quick_check")]
        if found != ["ok"]:
            return f"damaged ({'; '.join(found[:3])})"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"kv", "judgments", "queries", "impressions", "clicks"} <= tables:
            return "it does not hold vsearch's judgments tables"
        row = db.execute("SELECT value FROM kv WHERE key = 'schema_version'").fetchone()
        if row is None or not str(row[0]).isdigit() or int(row[0]) > SCHEMA_VERSION:
            return f"schema version {row[0] if row else '?'} is not one this vsearch reads"
    except sqlite3.DatabaseError as exc:
        return f"damaged ({exc})"
    finally:
        db.close()
    return None


def _not_regular(path: Path) -> str | None:
    """What stands at ``path`` when it is there and not a regular file (``a FIFO``...), else None."""
    try:
        return regular_problem(path.stat())
    except OSError:
        return None


def _empty(path: Path) -> bool:
    """Whether ``path`` is a file of 0 bytes. vsearch creates the database with its schema in
    one transaction, so an empty file is one cut short (a failed copy, a truncation, a crash in
    the instant between creating the file and committing the schema): treated as damaged."""
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _prepare(db: sqlite3.Connection, index_dir: Path) -> None:
    """Check the file is ours and current; create the schema (and import the page's old
    ``judgments.jsonl``) the first time, in one transaction."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "kv" in tables:
        row = db.execute("SELECT value FROM kv WHERE key = 'schema_version'").fetchone()
        if row is None or not str(row[0]).isdigit() or int(row[0]) > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {row[0] if row else '?'} is not one this vsearch reads")
        db.execute("PRAGMA synchronous=FULL")
        if int(row[0]) < SCHEMA_VERSION:
            _migrate(db)
        return
    if tables:
        raise sqlite3.DatabaseError("it holds tables that are not vsearch's judgments")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    with _transaction(db):
        if db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'kv'").fetchone()[0] == 0:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT INTO kv(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            imported = _import_jsonl(db, index_dir / JSONL_FILE)
            if imported:
                db.execute("INSERT INTO kv(key, value) VALUES ('imported_jsonl', ?)", (str(imported),))


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection, *, write: bool = True) -> Iterator[None]:
    """One transaction on ``db`` (autocommit mode): committed when the block ends, rolled back
    when it raises. ``write`` takes the write lock at the start (``BEGIN IMMEDIATE``), so what
    the block reads is still true when it writes."""
    db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _migrate(db: sqlite3.Connection) -> None:
    """Bring an older file up to :data:`SCHEMA_VERSION`, one version at a time, in one
    transaction: what it held stays, new columns are empty (NULL). The version is read again
    under the write lock, so two processes opening the same old file migrate it once."""
    with _transaction(db):
        version = int(db.execute("SELECT value FROM kv WHERE key = 'schema_version'").fetchone()[0])
        while version < SCHEMA_VERSION:
            for statement in _MIGRATIONS[version]:
                db.execute(statement)
            version += 1
        db.execute("UPDATE kv SET value = ? WHERE key = 'schema_version'", (str(version),))
    log.info("migrated %s to schema version %d", DB_FILE, SCHEMA_VERSION)


def _import_jsonl(db: sqlite3.Connection, path: Path) -> int:
    """Copy the page's old ``judgments.jsonl`` verdicts in (source ``page``); the file stays."""
    def parse(record: object) -> tuple:
        if not isinstance(record, dict) or record.get("label") not in ("relevant", "not-relevant"):
            raise ValueError(record)
        relevant = record["label"] == "relevant"
        return (str(record["time"]), check_key("query", record["query"]), check_key("result", record["result"]),
                int(relevant), int(relevant), None, "page", record.get("result_path"), None)

    rows = sidelog.read(path, parse)  # one that cannot be read is its own error, naming it (not the database)
    db.executemany(_INSERT, rows)
    if rows:
        log.warning("imported %d judgment(s) from %s into %s (the old file is kept)", len(rows), path, DB_FILE)
    return len(rows)


_INSERT = ("INSERT INTO judgments(time, query, result, relevant, grade, rank, source, result_path, query_path) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")


# --- verdicts -----------------------------------------------------------------------------


def record_judgments(index_dir: Path, verdicts: Sequence[Verdict], *, source: str = "cli") -> list[Judgment]:
    """Record every verdict in one transaction (all or none); return them as recorded."""
    if source not in SOURCES:
        raise VsearchError(f"source must be one of {', '.join(SOURCES)} (got {source!r})")
    now = sidelog.timestamp()
    out = []
    for v in verdicts:
        check_key("query", v.query)
        check_key("result", v.result)
        _check_rank(v.rank)
        out.append(Judgment(now, v.query, v.result, bool(v.relevant), _grade(v), v.rank, source,
                            v.result_path, v.query_path))
    if not out:
        raise VsearchError("no verdicts to record")
    with database(index_dir, write=True) as db:
        db.executemany(_INSERT, [(j.time, j.query, j.result, int(j.relevant), j.grade, j.rank, j.source,
                                  j.result_path, j.query_path) for j in out])
    return out


def record_judgment(index_dir: Path, query: str, result: str, relevant: bool, *, grade: int | None = None,
                    rank: int | None = None, source: str = "cli", result_path: str | None = None,
                    query_path: str | None = None) -> Judgment:
    """Record one verdict of ``result`` (a digest) for ``query`` (a query key); return it."""
    if not isinstance(relevant, bool):
        raise VsearchError(f"relevant must be true or false (got {relevant!r})")
    verdict = Verdict(query, result, relevant, grade, rank, result_path, query_path)
    return record_judgments(index_dir, [verdict], source=source)[0]


def read_judgments(index_dir: Path) -> list[Judgment]:
    """Every recorded verdict, oldest first (a pair judged twice appears twice)."""
    if not db_path(index_dir).exists() and not (Path(index_dir) / JSONL_FILE).exists():
        return []  # nothing recorded: no need to create the file to say so
    with database(index_dir) as db:
        rows = db.execute("SELECT time, query, result, relevant, grade, rank, source, result_path, query_path "
                          "FROM judgments ORDER BY id").fetchall()
    return [Judgment(t, q, r, bool(rel), g, rank, s, rp, qp) for t, q, r, rel, g, rank, s, rp, qp in rows]


def latest_verdicts(judgments: Sequence[Judgment]) -> list[Judgment]:
    """The latest verdict of each (query, result) pair, in the order pairs were first judged:
    a person may change their mind, and the last word counts."""
    last: dict[tuple[str, str], Judgment] = {}
    for j in judgments:
        last[(j.query, j.result)] = j
    return list(last.values())
