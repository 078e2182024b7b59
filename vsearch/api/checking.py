"""``check()``: verify every file of an index against what its commit recorded (``git fsck``
for an index folder; ``vsearch check``).

    check(index_dir) -> CheckReport   one FileCheck per file: ok, damaged, missing or
                                      unchecked, what is wrong and the call that repairs it

What it looks at, file by file (docs/damage.md says what each damage does and its repair):

* ``meta.json`` reads, and the manifest passes SQLite's own check and agrees with it (the
  generation, one row for each vector);
* each file the committed generation names (vectors, search copy, transform, DBA copy, Annoy
  or IVF-PQ index, head, projected copy): there, a file, its size and SHA-256 as ``meta.json``
  recorded at its commit, and what it must hold: every vector finite and of length 1, a
  transform or head that is the one recorded, an Annoy file whose structure holds;
* pending chunks (embedded, not committed yet), the not-duplicate marks, the undo logs and
  ``judgments.sqlite``: readable.

It reads every byte of the index (4.7 s for 100,000 1,280-d vectors here, measured with
``benchmarks/bench_checksums.py``), changes nothing, and is the one place that hashes: a query
never does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vsearch.api.common import PathLike, index_dir_of
from vsearch.duplicates import actions, marks
from vsearch.errors import IndexCorruptError, IndexMissingError, VsearchError
from vsearch.learning import judgments
from vsearch.storage import checksums, vectorfiles
from vsearch.storage.vectorfiles import CHUNK_DIR
from vsearch.storage.manifest import GenerationGone, Manifest
from vsearch.storage.meta import MANIFEST_FILE, META_FILE, IndexMeta, read_meta, rebuild_hint
from vsearch.storage.snapshot import MARKS_FILE, check_agrees
from vsearch.storage.store import Store
from vsearch.vectors import compress, ivfpq, nearest
from vsearch.vectors import head as adapter

__all__ = ["STATUSES", "CheckReport", "FileCheck", "check"]

Status = Literal["ok", "damaged", "missing", "unchecked"]
#: What :attr:`FileCheck.status` says: as committed (ok), not (damaged), gone (missing), or
#: readable and sound, but with no checksum recorded to prove it is as committed (unchecked).
STATUSES: tuple[Status, ...] = ("ok", "damaged", "missing", "unchecked")


@dataclass(frozen=True)
class FileCheck:
    """What :func:`check` found of one file: its path in the index folder (POSIX), its role
    (``vectors``, ``search copy``, ``marks`` ...), its status (:data:`STATUSES`), what is wrong
    (empty when ok) and what repairs it (a call; empty when nothing needs repairing)."""

    file: str
    role: str
    status: Status
    problem: str = ""
    repair: str = ""


@dataclass(frozen=True)
class CheckReport:
    """Every file :func:`check` looked at, in the order a reader meets them, and notes on the
    index as a whole (e.g. that it records no checksums yet)."""

    index_dir: Path
    generation: int | None
    files: tuple[FileCheck, ...]
    notes: tuple[str, ...] = ()

    @property
    def damaged(self) -> list[FileCheck]:
        """The files that are damaged or missing."""
        return [f for f in self.files if f.status in ("damaged", "missing")]

    @property
    def ok(self) -> bool:
        """True when no file is damaged or missing."""
        return not self.damaged


def check(index_dir: PathLike | None = None) -> CheckReport:
    """Verify every file of the index at ``index_dir`` (default :func:`default_index_dir`) against
    what ``meta.json`` recorded when it was committed; see :class:`CheckReport`. Changes nothing.

    Raises :class:`~vsearch.errors.IndexMissingError` when there is no index there; damage is
    reported, not raised.
    """
    folder = Path(index_dir_of(index_dir)).absolute()
    if not folder.is_dir() or not any((folder / n).exists() for n in (META_FILE, MANIFEST_FILE)):
        raise IndexMissingError(f"no index at {folder}; build one with `build_index(FOLDER)`"
                                " (or point index_dir= / VSEARCH_INDEX_DIR at an existing one)")
    meta: IndexMeta | None = None
    problem = None if (folder / META_FILE).exists() else "missing"
    if problem is None:
        try:
            meta = read_meta(folder)
        except IndexCorruptError as exc:
            problem = _reason(exc)
    checked = _Checker(folder, meta)
    manifest = checked.manifest()  # first: the folder it names is the remedy's when meta.json is damaged
    found = [FileCheck(META_FILE, "commit record", "ok") if problem is None
             else _damaged(META_FILE, "commit record", problem, checked.rebuild), *manifest]
    notes: list[str] = []
    if meta is not None:
        found += [checked.generation_file(role, name) for role, name in meta.named_files()]
        if not meta.checksums:
            notes.append("no checksums recorded (the index was last committed by an older vsearch): "
                         f"{rebuild_hint(meta.root).replace(' repairs it', ' adds them')}")
    found += checked.chunks() + checked.side_files()
    return CheckReport(folder, meta.generation if meta else None, tuple(found), tuple(notes))


def _damaged(file: str, role: str, problem: str, repair: str) -> FileCheck:
    return FileCheck(file, role, "missing" if problem == "missing" else "damaged", problem, repair)


def _reason(exc: Exception) -> str:
    """An error's message without the remedy it ends with (the report has a column for that)."""
    parts = [p for p in str(exc).split("; ") if p and "`" not in p]
    return "; ".join(parts) or str(exc)


class _Checker:
    """The checks of one index folder, whose ``meta.json`` read as ``meta`` (None: damaged)."""

    def __init__(self, folder: Path, meta: IndexMeta | None) -> None:
        self.folder, self.meta = folder, meta
        self.root = meta.root if meta is not None else "FOLDER"
        self.chunk_rows: dict[int, int] = {}
        self.dim: int | None = meta.dim if meta is not None else None

    @property
    def rebuild(self) -> str:
        return rebuild_hint(self.root)

    # --- the manifest ------------------------------------------------------------------------

    def manifest(self) -> list[FileCheck]:
        path = self.folder / MANIFEST_FILE
        if not path.exists():
            return [_damaged(MANIFEST_FILE, "manifest", "missing", self.rebuild)]
        try:
            manifest = Manifest.open(path, write=False)
        except VsearchError as exc:
            return [_damaged(MANIFEST_FILE, "manifest", _reason(exc), self.rebuild)]
        try:
            if self.meta is None and manifest.get("root"):
                self.root = manifest.get("root") or self.root
            problem = manifest.integrity_problem()
            if problem is None and self.meta is not None:
                problem = self._agrees(manifest)
            if problem is None:
                self.chunk_rows = manifest.live_chunks()
        finally:
            manifest.close()
        if problem is not None:
            return [_damaged(MANIFEST_FILE, "manifest", problem, self.rebuild)]
        return [FileCheck(MANIFEST_FILE, "manifest", "ok")]

    def _agrees(self, manifest: Manifest) -> str | None:
        """Whether the manifest holds the generation meta.json names, one path for each row."""
        assert self.meta is not None
        try:
            check_agrees(self.folder, manifest, self.meta)
            with Store.open(self.folder) as view:
                view.paths_by_row()
        except GenerationGone:
            return "two commits landed while it was being checked: check again"
        except IndexCorruptError as exc:
            return _reason(exc)
        return None

    # --- the files of the committed generation ---------------------------------------------------

    def generation_file(self, role: str, name: str) -> FileCheck:
        """One file ``meta.json`` names: there, as its commit recorded it, and sound."""
        assert self.meta is not None
        path = self.folder / name
        repair = self._repair(role)
        if not path.exists() and not path.is_symlink():
            return _damaged(name, role, "missing", repair)
        if not path.is_file():
            return _damaged(name, role, "a folder or special file, not the file that was committed", repair)
        recorded = self.meta.checksum(name)
        problems = [checksums.problem(path, recorded)] if recorded is not None else []
        try:
            problems.append(self._contents(role, path))  # what it holds, too: which rows, when it can say
        except VsearchError as exc:
            problems.append(_reason(exc))
        except (OSError, ValueError, EOFError) as exc:  # anything a damaged file makes a reader raise
            problems.append(f"cannot be read ({exc})")
        found = [p for p in problems if p is not None]
        if found:
            return _damaged(name, role, "; ".join(dict.fromkeys(found)), repair)
        if recorded is None:
            return FileCheck(name, role, "unchecked", "no checksum recorded: only what it holds was checked")
        return FileCheck(name, role, "ok")

    def _repair(self, role: str) -> str:
        if role in ("head", "projected copy"):
            return adapter.RETRAIN
        if role == "vectors":
            return f"{self.rebuild} (every image is embedded again)"
        return f"{self.rebuild} (made again from the vectors: nothing is embedded again)"

    def _contents(self, role: str, path: Path) -> str | None:
        """What is wrong with what a file holds, by its role (None: nothing)."""
        meta = self.meta
        assert meta is not None
        fmt = meta.vectors_format
        space_dtype = fmt.dtype if fmt is not None else "float32"
        if role == "vectors":
            return vectorfiles.rows_problem(vectorfiles.load(path, (meta.count, meta.dim), ""))
        if role == "search copy":
            assert fmt is not None
            return vectorfiles.rows_problem(vectorfiles.load(path, (meta.count, fmt.dim), "", dtype=fmt.dtype))
        if role == "transform":
            assert fmt is not None
            pca = compress.Pca.load(path)
            if pca.digest != fmt.sha256 or pca.dim != fmt.dim or pca.in_dim != meta.dim:
                return f"not the transform the {fmt.name} search copy was made with"
            return None
        if role == "DBA copy":
            return vectorfiles.rows_problem(vectorfiles.load(path, (meta.count, meta.space_dim), "", dtype=space_dtype))
        if role == "Annoy index":
            assert meta.ann is not None
            nearest.check_annoy_file(path, meta.space_dim, count=meta.count, trees=meta.ann.trees, size=meta.ann.size)
            return None
        if role == "IVF-PQ index":
            assert meta.ivfpq is not None
            ivfpq.read_checked(path, size=meta.ivfpq.size, sha256=meta.ivfpq.sha256)
            return None
        if role == "head":
            info = meta.adapter
            assert info is not None
            adapter.Head.load(path, sha256=info.sha256, dim_in=info.dim_in, dim_out=info.dim_out)
            return None
        if role == "projected copy":
            assert meta.adapter is not None
            return vectorfiles.rows_problem(vectorfiles.load(path, (meta.count, meta.adapter.dim_out), ""))
        return None  # pragma: no cover - every role meta.json names is above

    # --- the rest of the folder ----------------------------------------------------------------

    def chunks(self) -> list[FileCheck]:
        """Vectors embedded since the last commit, which the next build commits."""
        out: list[FileCheck] = []
        if self.dim is None:
            return out
        for number, rows in sorted(self.chunk_rows.items()):
            path = vectorfiles.chunk_path(self.folder, number)
            problem = vectorfiles.chunk_problem(path, rows, self.dim)
            name = f"{CHUNK_DIR}/{path.name}"
            if problem is None:
                out.append(FileCheck(name, "pending chunk", "ok"))
            else:
                out.append(_damaged(name, "pending chunk", problem,
                                    f"`build_index({self.root})` embeds its images again"))
        return out

    def side_files(self) -> list[FileCheck]:
        """The records a person made, which a rebuild keeps: marks, undo logs, judgments."""
        out: list[FileCheck] = []
        if (self.folder / MARKS_FILE).exists() or (self.folder / MARKS_FILE).is_symlink():
            problem = marks.marks_problem(self.folder)
            if problem is None:
                out.append(FileCheck(MARKS_FILE, "not-duplicate marks", "ok"))
            elif problem.startswith("line "):
                out.append(_damaged(MARKS_FILE, "not-duplicate marks", problem,
                                    "remove the damaged lines (or leave them: they are skipped)"))
            else:
                out.append(_damaged(MARKS_FILE, "not-duplicate marks", problem,
                                    "move it out of the index folder (its marks no longer apply; mark the pairs again)"))
        for log_path in actions.undo_logs(self.folder):
            name = log_path.relative_to(self.folder).as_posix()
            problem = actions.log_problem(log_path) or _torn(log_path)
            if problem is None:
                out.append(FileCheck(name, "undo log", "ok"))
            else:
                out.append(_damaged(name, "undo log", _reason_of(problem, log_path),
                                    "move it out of the index folder (what it moved must then be put back by hand)"))
        db = judgments.db_path(self.folder)
        if db.exists() or db.is_symlink():
            problem = judgments.problem(self.folder)
            if problem is None:
                out.append(FileCheck(db.name, "judgments", "ok"))
            else:
                out.append(_damaged(db.name, "judgments", problem,
                                    "move it away to start a new one, or restore it from a backup"))
        return out


def _torn(path: Path) -> str | None:
    """Whether an undo log that undo reads ends in a line cut short: what a run killed while
    acting leaves (that action never started), and what a truncated file looks like."""
    try:
        with open(path, "rb") as fh:
            fh.seek(-1, 2)
            last = fh.read(1)
    except OSError:
        return None
    if last == b"\n":
        return None
    return ("its last line is cut short: a run killed while acting leaves that (the action never started, nothing "
            "to repair), and so does a truncated file (restore it from a backup)")


def _reason_of(problem: str, path: Path) -> str:
    """A message about ``path`` without the path (the report names the file already)."""
    return problem.replace(f" {path}", "").replace(f"{path} ", "")
