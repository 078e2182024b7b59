"""Acting on duplicate groups: move or trash the copies that are not kept, and undo it.

    plan(groups, root=..., move_to=DIR | trash=True) -> [Action]   checks only; changes nothing
    apply(index_dir, actions)                        -> UndoLog    logs first, then acts
    undo(index_dir, log=None)                        -> UndoResult puts the files and rows back

Nothing is ever deleted outright: a copy is moved under ``--move-to DIR`` (keeping its path
relative to the indexed folder) or sent to the freedesktop trash (``send2trash``).

The undo log (``INDEX/undo/NNNN-DATE.jsonl``, append-only) has a header line naming the index
and its folder, then one line per action, written and fsynced *before* the file is touched:
its kind, source and target, and the file's content digest, size, mtime and stored vector. A
trashed file gets a second line saying where in the trash it went. A successful undo appends a
last line marking the log undone. Because each line comes first, a crash leaves at most one
logged action that did not happen, which undo finds already in place.

The index follows the files, without embedding anything: a copy moved inside the indexed
folder keeps its manifest row under its new path; one moved out of it, or trashed, leaves the
index (marked gone, then a commit). Undo restores those rows from the vectors in the log.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import numpy as np

from vsearch import atomic
from vsearch.storage import sidelog
from vsearch.errors import VsearchError
from vsearch.vectors.space import SearchFiles
from vsearch.indexing import derived
from vsearch.storage.meta import META_FILE
from vsearch.storage.store import UNDO_DIR, Store, path_digest

log = logging.getLogger(__name__)

__all__ = ["Action", "UndoLog", "UndoResult", "apply", "index_of_log", "is_keeper", "latest_log", "plan", "undo", "undo_dir"]

LOG_FORMAT = "vsearch-undo"
_LOG_NAME = re.compile(r"^(\d+)-.*\.jsonl$")


def is_keeper(member: Any) -> bool:
    """Whether a group member is its group's keeper (the copy that stays)."""
    return bool(member.keeper)


@dataclass(frozen=True)
class Action:
    """One planned change: ``kind`` "move" (to ``target``) or "trash", of a copy in ``group``
    whose kept member is ``keeper``. Paths are absolute."""

    kind: Literal["move", "trash"]
    source: Path
    target: Path | None
    group: int
    keeper: Path

    def describe(self) -> str:
        """``move A -> B`` or ``trash A``."""
        return f"move {self.source} -> {self.target}" if self.kind == "move" else f"trash {self.source}"


@dataclass(frozen=True)
class UndoLog:
    """What :func:`apply` did: the log that undoes it, and how many files it moved or trashed."""

    path: Path
    moved: int
    trashed: int


@dataclass(frozen=True)
class UndoResult:
    """What :func:`undo` did: files put back, and files that were already in place."""

    log: Path
    restored: int
    already: int


def index_of_log(log: Path) -> Path | None:
    """The index folder an undo log lies in (``INDEX/undo/LOG``), or None for a log elsewhere."""
    folder = Path(log).expanduser().absolute().parent
    return folder.parent if folder.name == UNDO_DIR and (folder.parent / META_FILE).is_file() else None


def undo_dir(index_dir: Path) -> Path:
    """The folder of an index's undo logs."""
    return Path(index_dir) / UNDO_DIR


# --- planning --------------------------------------------------------------------------------


def plan(groups: Iterable[Iterable[Any]], *, root: Path, move_to: Path | None = None, trash: bool = False,
         index_dir: Path | None = None) -> list[Action]:
    """The actions that move (``move_to``) or trash (``trash``) every member that is not its
    group's keeper. Checks everything it can without changing anything: one of the two is
    given; the target folder exists, is writable, is not the indexed folder (or above it) nor
    inside the index folder ``index_dir``; no copy is under the target already; no target
    exists. A problem raises :class:`VsearchError` before any file is touched.
    """
    if (move_to is None) == (not trash):
        raise VsearchError("give one of move_to=DIR or trash=True")
    root = Path(root).absolute()
    if move_to is not None:
        move_to = _check_target(Path(move_to).expanduser().absolute(), root, index_dir)
    actions: list[Action] = []
    for group in groups:
        members = list(group)
        keepers = [m for m in members if is_keeper(m)]
        if len(keepers) != 1:
            raise VsearchError(f"duplicate group {members[0].group if members else '?'} has no single keeper")
        keeper = Path(keepers[0].path)
        for m in members:
            if is_keeper(m):
                continue
            source = Path(m.path)
            target = None
            if move_to is not None:
                target = move_to / _relative(source, root)
            actions.append(Action("trash" if trash else "move", source, target, int(m.group), keeper))
    if move_to is not None:
        _check_moves(actions, move_to)
    return actions


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        raise VsearchError(f"{path} is not under the indexed folder {root}") from None


def _check_target(move_to: Path, root: Path, index_dir: Path | None) -> Path:
    if not move_to.exists():
        raise VsearchError(f"move_to={move_to} does not exist; create it first (mkdir -p {move_to})")
    if not move_to.is_dir():
        raise VsearchError(f"move_to={move_to} is a file; give a folder")
    if not os.access(move_to, os.W_OK | os.X_OK):
        raise VsearchError(f"move_to={move_to} is not writable; choose a folder you can write to")
    real, real_root = move_to.resolve(), root.resolve()
    if real == real_root or real in real_root.parents:
        raise VsearchError(f"move_to={move_to} holds the indexed folder {root}; choose a folder outside it, "
                           f"or one inside it such as {root / 'duplicates'}")
    if index_dir is not None:
        real_index = Path(index_dir).resolve()
        if real == real_index or real_index in real.parents:
            raise VsearchError(f"move_to={move_to} is inside the index folder {index_dir}; choose another folder")
    return move_to


def _check_moves(actions: list[Action], move_to: Path) -> None:
    real = move_to.resolve()
    seen: set[Path] = set()
    for a in actions:
        assert a.target is not None
        if real in a.source.resolve().parents:
            raise VsearchError(f"{a.source} is already under move_to={move_to}; choose another folder, "
                               "or leave that folder out of the index (build_index with exclude=)")
        if a.target.exists() or a.target.is_symlink():
            raise VsearchError(f"{a.target} already exists; vsearch never overwrites a file (choose another move_to=)")
        if a.target in seen:  # pragma: no cover - sources are distinct paths under one root
            raise VsearchError(f"two copies would be moved to {a.target}")
        seen.add(a.target)


# --- applying --------------------------------------------------------------------------------


def apply(index_dir: Path, actions: list[Action], *, progress: Callable[[int, int], None] | None = None) -> UndoLog:
    """Do ``actions`` (from :func:`plan`), each logged first, and make the index follow.

    Before anything changes, every copy and keeper must still be the file that was indexed
    (same content digest), so a stale group never costs a photo. Returns the undo log.
    """
    with Store.open(Path(index_dir), write=True, derived=SearchFiles()) as store:
        if store.meta is None or store.root is None:
            raise VsearchError(f"index at {store.dir} holds no images yet")
        root = Path(store.meta.root)
        seen: dict[Path, str] = {}  # a keeper is read once, however many copies it has
        facts = [_check_unchanged(store, root, a, seen) for a in actions]
        previous = store.meta
        path = _new_log(store, root)
        moved = trashed = 0
        try:
            for i, (action, fact) in enumerate(zip(actions, facts)):
                with atomic.disk_errors(action.target or action.source):  # a full disk: one error line
                    _do(store, root, path, action, fact)
                moved += action.kind == "move"
                trashed += action.kind == "trash"
                if progress:
                    progress(i + 1, len(actions))
        finally:
            _commit(store, previous)
    return UndoLog(path, moved, trashed)


@dataclass(frozen=True)
class _Fact:
    """What is known of a copy before it is acted on: what the log records."""

    rel: str
    digest: str
    size: int
    mtime_ns: int
    vector: str | None  # base64 float32, from the committed vectors


def _check_unchanged(store: Store, root: Path, action: Action, seen: dict[Path, str]) -> _Fact:
    rel = _relative(action.source, root).as_posix()
    entry = store.entry(rel)
    keeper = store.entry(_relative(action.keeper, root).as_posix())
    for path, e in ((action.source, entry), (action.keeper, keeper)):
        if e is None or e.digest is None:
            raise VsearchError(f"{path} is not in the index (any more); call `build_index({root})` first")
        try:
            if path not in seen and path.is_file():
                seen[path] = path_digest(path)
            same = seen.get(path) == e.digest
        except OSError as exc:
            raise VsearchError(f"cannot read {path}: {exc.strerror or exc}") from None
        if not same:
            raise VsearchError(f"{path} changed or is gone since it was indexed; nothing was done. Call "
                               f"`build_index({root})` and look at the groups again")
    st = action.source.stat()
    assert entry is not None and entry.digest is not None
    vector = None
    if entry.row is not None and store.meta is not None and entry.row < store.meta.count:
        vector = base64.b64encode(np.asarray(store.vectors()[entry.row], dtype="<f4").tobytes()).decode("ascii")
    return _Fact(rel, entry.digest, st.st_size, st.st_mtime_ns, vector)


def _new_log(store: Store, root: Path) -> Path:
    folder = undo_dir(store.dir)
    with atomic.disk_errors(folder):
        folder.mkdir(exist_ok=True)
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _LOG_NAME.match(p.name))]
    path = folder / f"{max(numbers, default=0) + 1:04d}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    _append(path, {"format": LOG_FORMAT, "version": 1, "index": str(store.dir), "root": str(root),
                   "model": store.meta.model.name if store.meta else None, "time": sidelog.timestamp()})
    return path


def _do(store: Store, root: Path, log_path: Path, action: Action, fact: _Fact) -> None:
    record = {"action": action.kind, "source": str(action.source),
              "target": str(action.target) if action.target else None, "group": action.group,
              "keeper": str(action.keeper), "digest": fact.digest, "size": fact.size, "mtime_ns": fact.mtime_ns,
              "vector": fact.vector}
    _append(log_path, record)  # first: a crash after this line leaves a file undo can find
    entry = store.entry(fact.rel)
    if action.kind == "move":
        assert action.target is not None
        _move_file(action.source, action.target, fact.digest)
        inside = _under(action.target, root)
        if entry is not None and inside is not None:
            st = action.target.stat()
            store.move(entry, inside, st.st_size, st.st_mtime_ns)  # same row, new path
            return
    else:
        where = _send_to_trash(action.source, fact.digest)
        _append(log_path, {"trashed": str(action.source), "at": str(where)})
    store.mark_deleted([fact.rel])


def _commit(store: Store, previous: Any) -> None:
    """Commit what the manifest now says (moves keep their vectors; gone files leave them), and
    build again the Annoy index and DBA copy the index had."""
    if not store.pending_changes():
        return
    store.consolidate()
    if previous.dba is not None or previous.ann is not None or previous.ivfpq is not None:
        if previous.dba is not None:
            derived.build_dba(store, previous.dba.neighbours)
        if previous.ann is not None:
            derived.build_ann(store, previous.ann.trees)
        if previous.ivfpq is not None:
            derived.build_ivfpq(store)


# --- undoing ---------------------------------------------------------------------------------


def latest_log(index_dir: Path) -> Path:
    """The newest undo log of the index that has not been undone yet."""
    folder = undo_dir(index_dir)
    logs = sorted(((int(m.group(1)), p) for p in (folder.iterdir() if folder.is_dir() else [])
                   if (m := _LOG_NAME.match(p.name))), reverse=True)
    for _n, path in logs:
        if _read_log(path)["undone"] is None:
            return path
    raise VsearchError(f"nothing to undo: no undo log in {folder} that is not undone already")


def undo(index_dir: Path, log_path: Path | None = None) -> UndoResult:
    """Put back the files an undo log moved or trashed (the newest log not undone, when None),
    and their rows in the index. Refuses, before changing anything, to overwrite a file, to
    restore a copy whose content changed, or to use a log made for another index."""
    with Store.open(Path(index_dir), write=True, derived=SearchFiles()) as store:
        if store.meta is None:
            raise VsearchError(f"index at {store.dir} holds no images yet")
        path = Path(log_path).expanduser().absolute() if log_path is not None else latest_log(store.dir)
        data = _read_log(path)
        header, root = data["header"], Path(store.meta.root)
        mine = path.parent.resolve() == undo_dir(store.dir).resolve()
        if header.get("root") != str(root) or not (mine or header.get("index") == str(store.dir)):
            raise VsearchError(f"{path} is an undo log of another index ({header.get('index')}, folder "
                               f"{header.get('root')}); give that index with index_dir=")
        if data["undone"] is not None:
            raise VsearchError(f"{path} was undone already ({data['undone']})")
        steps = [_restore_step(a, data["trashed"].get(a["source"])) for a in reversed(data["actions"])]
        problems = [p for _a, _where, p in steps if p]
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise VsearchError(f"{problems[0]}{more}; nothing was undone")
        previous = store.meta
        restored = already = 0
        added: list[tuple[tuple[str, int, int, str], np.ndarray]] = []
        try:
            for record, where, _ in steps:
                source = Path(record["source"])
                if where is None:
                    already += 1
                else:
                    _move_file(where, source, record["digest"])
                    if record["action"] == "trash":
                        _forget_trash_info(where)
                    restored += 1
                row = _follow_back(store, root, record, where)
                if row is not None:
                    added.append(row)
            if added:
                store.add_chunk([r for r, _v in added], np.stack([v for _r, v in added]))
        finally:
            _commit(store, previous)
        _append(path, {"undone": sidelog.timestamp()})
    return UndoResult(path, restored, already)


def _restore_step(record: dict[str, Any], trashed_at: str | None) -> tuple[dict[str, Any], Path | None, str | None]:
    """(record, where the file is now or None when already back, problem or None)."""
    source, digest = Path(record["source"]), record["digest"]
    if source.exists() or source.is_symlink():
        if source.is_file() and path_digest(source) == digest:
            return record, None, None  # never moved (a crash after the log line), or put back already
        return record, None, f"{source} exists and is another file; vsearch never overwrites a file"
    where: Path | None
    if record["action"] == "move":
        where = Path(record["target"])
    else:
        found = Path(trashed_at) if trashed_at else None
        where = found if found is not None and found.is_file() else _find_in_trash(source, digest)
        if where is None:
            return record, None, f"{source} is not in the trash any more (emptied or restored elsewhere?)"
    if not where.is_file():
        return record, None, f"{where} is gone; cannot put back {source}"
    if path_digest(where) != digest:
        return record, None, f"{where} changed since it was moved; not putting it back over {source}"
    return record, where, None


def _follow_back(store: Store, root: Path, record: dict[str, Any],
                 where: Path | None) -> tuple[tuple[str, int, int, str], np.ndarray] | None:
    """Give a put-back file its row again: the moved row when it is under its new path, else a
    row with the vector the log kept (no embedding). Returns a row to add, or None."""
    rel = _under(Path(record["source"]), root)
    if rel is None:
        return None
    st = Path(record["source"]).stat()
    moved_rel = _under(where, root) if where is not None and record["action"] == "move" else None
    moved = store.entry(moved_rel) if moved_rel is not None else None
    if moved is not None and moved.digest == record["digest"]:
        store.move(moved, rel, st.st_size, st.st_mtime_ns)
        return None
    if store.entry(rel) is not None or not record.get("vector"):
        return None  # in the index already, or no vector kept: the next build embeds it
    vector = np.frombuffer(base64.b64decode(record["vector"]), dtype="<f4")
    if store.meta is None or vector.shape != (store.meta.dim,):
        return None
    return (rel, st.st_size, st.st_mtime_ns, record["digest"]), vector


def _read_log(path: Path) -> dict[str, Any]:
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise VsearchError(f"no undo log {path}") from None
    except OSError as exc:
        raise VsearchError(f"cannot read the undo log {path}: {exc.strerror or exc}") from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            if number == len(lines):
                continue  # a torn last line: its action never started
            raise VsearchError(f"{path} line {number} is damaged; it is not an undo log vsearch can use") from None
    if not records or not isinstance(records[0], dict) or records[0].get("format") != LOG_FORMAT:
        raise VsearchError(f"{path} is not a vsearch undo log")
    actions = [r for r in records[1:] if isinstance(r, dict) and r.get("action") in ("move", "trash")]
    trashed = {r["trashed"]: r["at"] for r in records[1:] if isinstance(r, dict) and "trashed" in r}
    undone = next((r["undone"] for r in records[1:] if isinstance(r, dict) and "undone" in r), None)
    return {"header": records[0], "actions": actions, "trashed": trashed, "undone": undone}


# --- files -----------------------------------------------------------------------------------


def _move_file(source: Path, target: Path, digest: str) -> None:
    """Move a file without ever overwriting one: a hard link then an unlink on one file system;
    across file systems a copy (fsynced, digest checked) then the unlink."""
    with atomic.disk_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)  # fails if target exists: no overwrite, even in a race
        except FileExistsError:
            raise VsearchError(f"{target} already exists; vsearch never overwrites a file") from None
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                _copy_across(source, target, digest)
            elif exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP):
                if target.exists():  # no hard links here (FAT, some network shares)
                    raise VsearchError(f"{target} already exists; vsearch never overwrites a file") from None
                os.rename(source, target)
                atomic.fsync_dir(target.parent)
                return
            else:
                raise
        atomic.fsync_dir(target.parent)
        os.unlink(source)
        atomic.fsync_dir(source.parent)


def _copy_across(source: Path, target: Path, digest: str) -> None:
    tmp = atomic.temp_name(target)
    try:
        shutil.copy2(source, tmp)
        with open(tmp, "rb+") as fh:
            atomic.sync(fh.fileno())
        if path_digest(tmp) != digest:
            raise VsearchError(f"copying {source} to {target} changed its bytes; nothing was moved")
        os.link(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _under(path: Path | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def _append(path: Path, record: dict[str, Any]) -> None:
    atomic.append_line(path, json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogateescape"))


# --- the freedesktop trash -------------------------------------------------------------------


def _send_to_trash(path: Path, digest: str) -> Path:
    """Send one file to the trash (send2trash); return where it went there."""
    try:
        from send2trash import send2trash
    except ImportError:  # pragma: no cover - an install requirement
        raise VsearchError("trash=True needs the send2trash package: pip install send2trash") from None
    try:
        send2trash(str(path))
    except OSError as exc:
        raise VsearchError(f"cannot move {path} to the trash: {exc.strerror or exc}") from None
    found = _find_in_trash(path, digest)
    if found is None:  # e.g. a desktop's own trash that is not where the spec says
        log.warning("warning: %s went to the trash, but vsearch cannot find it there; undo will look again", path)
    return found or Path("")


def _trash_dirs(path: Path) -> list[Path]:
    """The trash folders a file under ``path`` may have gone to (freedesktop trash spec)."""
    dirs = [Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / "Trash"]
    with contextlib.suppress(ImportError, AttributeError):
        from send2trash import plat_other  # where this process's send2trash put files

        dirs.append(Path(plat_other.HOMETRASH))
    mount = path.parent
    with contextlib.suppress(OSError):
        mount = Path(os.path.realpath(path.parent))
        while not os.path.ismount(mount) and mount != mount.parent:
            mount = mount.parent
    dirs += [mount / ".Trash" / str(os.getuid()), mount / f".Trash-{os.getuid()}"]
    return list(dict.fromkeys(dirs))


def _find_in_trash(path: Path, digest: str) -> Path | None:
    """The trashed copy of ``path`` with this content: named like it (``name``, ``stem N.ext``),
    its .trashinfo naming ``path`` when one does."""
    best = None
    for trash in _trash_dirs(path):
        files = trash / "files"
        if not files.is_dir():
            continue
        names = [files / path.name] + sorted(files.glob(f"{_glob_escape(path.stem)} *{_glob_escape(path.suffix)}"))
        for candidate in names:
            if not candidate.is_file() or path_digest(candidate) != digest:
                continue
            info = trash / "info" / f"{candidate.name}.trashinfo"
            if _trashinfo_path(info, trash) == path:
                return candidate
            best = best or candidate
    return best


def _trashinfo_path(info: Path, trash: Path) -> Path | None:
    with contextlib.suppress(OSError):
        for line in info.read_text(errors="surrogateescape").splitlines():
            if line.startswith("Path="):
                value = Path(unquote(line[5:], errors="surrogateescape"))
                if value.is_absolute():
                    return value
                top = trash.parent.parent if trash.parent.name == ".Trash" else trash.parent
                return top / value
    return None


def _forget_trash_info(where: Path) -> None:
    """Remove the .trashinfo of a file taken back out of the trash (the spec's restore step)."""
    info = where.parent.parent / "info" / f"{where.name}.trashinfo"
    with contextlib.suppress(OSError):
        info.unlink()


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
