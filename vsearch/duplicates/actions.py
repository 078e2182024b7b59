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
logged action that did not happen, which undo finds already in place (and clears what it left
at the target: a second hard link, a temporary copy). A line torn by a kill (no newline) is an
action that never started: the reader skips it, and the next append cuts it away. Undo checks
every line before it moves a file: one damaged line is one error naming it, and nothing moves.

Before the log is written, every keeper is checked to be a regular file with its indexed bytes
(a symbolic link kept while its target went would dangle), a member that is the keeper's own
file (``same-file``) is no action, and each target folder must take a new file.

The index follows the files, without embedding anything: a copy moved inside the indexed
folder keeps its manifest row under its new path; one moved out of it, or trashed, leaves the
index (marked gone, then a commit). Undo restores those rows from the vectors in the log. Both
record the new mtimes of the folders they changed, so the index stays up to date.
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
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import numpy as np

from vsearch import atomic
from vsearch.storage import sidelog
from vsearch.duplicates.grouping import SAME_FILE
from vsearch.errors import ImageDecodeError, VsearchError
from vsearch.imaging import reading
from vsearch.vectors.space import SearchFiles
from vsearch.indexing import derived
from vsearch.storage.meta import META_FILE
from vsearch.storage.store import UNDO_DIR, Store, path_digest

log = logging.getLogger(__name__)

__all__ = ["Action", "UndoLog", "UndoResult", "apply", "index_of_log", "is_keeper", "latest_log", "log_problem", "plan",
           "undo", "undo_dir", "undo_logs"]

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


def plan(groups: Iterable[Iterable[Any]], *, root: Path, move_to: str | os.PathLike[str] | None = None, trash: bool = False,
         index_dir: Path | None = None) -> list[Action]:
    """The actions that move (``move_to``) or trash (``trash``) every member that is not its
    group's keeper. Checks everything it can without changing anything: one of the two is
    given; the target folder is a folder on a disk (or can be made: :func:`apply` creates a
    missing one), is writable, is not the indexed folder (or above it) nor inside the index
    folder ``index_dir``; no copy is under the target already; no target exists; each copy's
    folder lets it go. A member that is the keeper's own file (a hard link to it, a symbolic
    link to it: level ``same-file``) is no copy and never acted on. A problem raises
    :class:`VsearchError` before any file is touched.
    """
    if (move_to is None) == (not trash):
        raise VsearchError("give one of move_to=DIR or trash=True")
    root = Path(root).absolute()
    if move_to is not None:
        if not os.fspath(move_to).strip():
            raise VsearchError("move_to= is empty; give the folder to move the copies to")
        move_to = _check_target(Path(move_to).expanduser().absolute(), root, index_dir)
    actions: list[Action] = []
    for group in groups:
        members = list(group)
        keepers = [m for m in members if is_keeper(m)]
        if len(keepers) != 1:
            raise VsearchError(f"duplicate group {members[0].group if members else '?'} has no single keeper")
        keeper = Path(keepers[0].path)
        for m in members:
            if is_keeper(m) or getattr(m, "level", None) == SAME_FILE or _same_file(Path(m.path), keeper):
                continue
            source = Path(m.path)
            target = None
            if move_to is not None:
                target = move_to / _relative(source, root)
            actions.append(Action("trash" if trash else "move", source, target, int(m.group), keeper))
    for a in actions:
        _check_source_folder(a.source)
    if move_to is not None:
        _check_moves(actions, move_to)
    return actions


#: File systems that hold no files a person keeps (the kernel's views, pipes, control files):
#: never a place to move photos to.
_PSEUDO_FILE_SYSTEMS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "pstore",
    "configfs", "bpf", "efivarfs", "fusectl", "mqueue", "binfmt_misc", "autofs", "rpc_pipefs", "nsfs",
    "hugetlbfs", "selinuxfs"})


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths lead to one file (hard links, or a symbolic link and its target)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        raise VsearchError(f"{path} is not under the indexed folder {root}") from None


def _check_target(move_to: Path, root: Path, index_dir: Path | None) -> Path:
    """``move_to`` when copies can be moved under it: a folder, or a path whose nearest existing
    folder can take the new folders (:func:`apply` makes them), on a file system that holds files."""
    too_long = _long_name(move_to)
    if too_long is not None:
        raise VsearchError(f"move_to={move_to}: {too_long}; choose a shorter one")
    existing = move_to
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing.is_file() else "is not a folder" if existing.exists() else "is a broken link"
        where = f"move_to={move_to}" if existing == move_to else f"move_to={move_to}: {existing}"
        raise VsearchError(f"{where} {what}; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise VsearchError(f"move_to={move_to} is not writable; choose a folder you can write to")
    kind = _file_system_type(existing)
    if kind in _PSEUDO_FILE_SYSTEMS:
        raise VsearchError(f"move_to={move_to} is on a {kind} file system, which holds no files; "
                           "choose a folder on a disk")
    real, real_root = move_to.resolve(), root.resolve()
    if real == real_root or real in real_root.parents:
        raise VsearchError(f"move_to={move_to} holds the indexed folder {root}; choose a folder outside it, "
                           f"or one inside it such as {root / 'duplicates'}")
    if index_dir is not None:
        real_index = Path(index_dir).resolve()
        if real == real_index or real_index in real.parents:
            raise VsearchError(f"move_to={move_to} is inside the index folder {index_dir}; choose another folder")
    return move_to


def _long_name(path: Path) -> str | None:
    """The first name in ``path`` that is longer than its file system takes (``NAME_MAX``, asked
    of the nearest folder that exists; 255 bytes where it cannot say), in words; else None."""
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:  # lexists: False, never a raise
        existing = existing.parent
    try:
        limit = os.pathconf(existing if existing.is_dir() else existing.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for name in path.parts:
        size = len(os.fsencode(name))
        if name != path.anchor and size > limit:
            return f"the name {name} is {size} bytes, more than the file system takes ({limit})"
    return None


def _file_system_type(folder: Path) -> str | None:
    """The type of the file system ``folder`` is on (Linux: from /proc/self/mountinfo), or None."""
    try:
        real = os.path.realpath(folder)
        lines = Path("/proc/self/mountinfo").read_text(errors="replace").splitlines()
    except OSError:
        return None
    best, kind = "", None
    for line in lines:
        fields = line.split(" - ", 1)
        left, right = fields[0].split(), fields[1].split() if len(fields) == 2 else []
        if len(left) < 5 or not right:
            continue
        mount = left[4].replace("\\040", " ")
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
            best, kind = mount, right[0]
    return kind


def _check_source_folder(source: Path) -> None:
    """A copy can only be moved or trashed when its folder lets it go (a read-only folder does not)."""
    if not os.access(source.parent, os.W_OK | os.X_OK):
        raise VsearchError(f"cannot move {source}: its folder {source.parent} is read-only (permission denied); "
                           "nothing was done")


def _check_moves(actions: list[Action], move_to: Path) -> None:
    real = move_to.resolve()
    seen: set[Path] = set()
    for a in actions:
        assert a.target is not None
        if real in a.source.resolve().parents:
            raise VsearchError(f"{a.source} is already under move_to={move_to}; choose another folder, "
                               "or leave that folder out of the index (build_index with exclude=)")
        try:
            os.lstat(a.target)
        except (FileNotFoundError, NotADirectoryError):
            pass  # the way it should be: nothing there yet
        except OSError as exc:  # a path too long for the file system, a folder that cannot be searched
            raise VsearchError(f"cannot move {a.source} to {a.target}: {exc.strerror or exc}; "
                               "choose another move_to=") from None
        else:
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
        _check_can_move(actions)  # before the log: a target nothing can be written to leaves no log
        previous = store.meta
        path = _new_log(store, root)
        moved = trashed = 0
        touched: list[Path] = []
        try:
            for i, (action, fact) in enumerate(zip(actions, facts)):
                with atomic.disk_errors(action.target or action.source):  # a full disk: one error line
                    _do(store, root, path, action, fact)
                touched += [action.source, *([action.target] if action.target else [])]
                moved += action.kind == "move"
                trashed += action.kind == "trash"
                if progress:
                    progress(i + 1, len(actions))
        except BaseException:
            if moved + trashed == 0:
                _drop_idle_log(path, actions[0], facts[0])
            raise
        finally:
            _record_folders(store, root, touched)
            _commit(store, previous)
    return UndoLog(path, moved, trashed)


def _check_can_move(actions: list[Action]) -> None:
    """Try, in each folder new files go to (or the nearest one that exists), to create a file;
    an error names the folder. A mount that is read-only, or a folder that no file can be made
    in (a kernel view such as /proc), is found here, before the undo log is written."""
    tried: set[Path] = set()
    for action in actions:
        if action.target is None:
            continue
        folder = action.target.parent
        while not os.path.lexists(folder) and folder != folder.parent:
            folder = folder.parent
        if folder in tried:
            continue
        tried.add(folder)
        try:
            _probe(folder)
        except OSError as exc:
            raise VsearchError(f"cannot move files into {folder}: {exc.strerror or exc}; nothing was done") from None


def _probe(folder: Path) -> None:
    """Make a file in ``folder`` and let it go: an unnamed one where the file system can
    (O_TMPFILE: a kill leaves nothing behind), else a named one, removed at once."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            os.close(os.open(folder, tmpfile | os.O_WRONLY, 0o600))
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    probe = atomic.temp_name(folder / ".vsearch-probe")
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    os.unlink(probe)


def _drop_idle_log(path: Path, first: Action, fact: _Fact) -> None:
    """Remove the undo log of a run that failed before it changed any file (its first copy
    still in place with its content, nothing at its target): a log that undoes nothing would
    only stand in front of the one before it."""
    with contextlib.suppress(OSError):
        if first.source.is_file() and path_digest(first.source) == fact.digest and not (
                first.target is not None and os.path.lexists(first.target)):
            path.unlink()
            atomic.fsync_dir(path.parent)


@dataclass(frozen=True)
class _Fact:
    """What is known of a copy before it is acted on: what the log records."""

    rel: str
    digest: str
    size: int
    mtime_ns: int
    vector: str | None  # base64 float32, from the committed vectors


def _check_unchanged(store: Store, root: Path, action: Action, seen: dict[Path, str]) -> _Fact:
    """What the log records of a copy, once both it and its keeper are checked: the keeper is a
    regular file (never a symbolic link, which would dangle once its target went), both still
    hold the indexed bytes, and the copy is not the keeper's own file under another path."""
    try:
        keeper_stat = os.lstat(action.keeper)
    except OSError:
        raise VsearchError(f"the keeper {action.keeper} is gone since it was indexed; nothing was done. Call "
                           f"`build_index({root})` and look at the groups again") from None
    if not stat.S_ISREG(keeper_stat.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(keeper_stat.st_mode) else "not a regular file"
        raise VsearchError(f"the keeper {action.keeper} is {what}; vsearch keeps only a regular file "
                           f"(choose another keeper); nothing was done")
    if _same_file(action.source, action.keeper):
        raise VsearchError(f"{action.source} is the keeper's own file ({action.keeper}) under another path; "
                           "moving it would free nothing; nothing was done")
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
    """The newest undo log of the index that has not been undone yet and records an action (a
    log cut off before its first action did nothing, and is passed over)."""
    folder = undo_dir(index_dir)
    for path in reversed(undo_logs(index_dir)):
        data = _read_log(path)
        if data["undone"] is None and data["actions"]:
            return path
    raise VsearchError(f"nothing to undo: no undo log in {folder} that is not undone already")


def undo(index_dir: Path, log_path: Path | None = None) -> UndoResult:
    """Put back the files an undo log moved or trashed (the newest log not undone, when None),
    and their rows in the index: all or nothing. Every entry of the log is checked, and every
    file found where the log says, before anything moves; a damaged entry, a file that would be
    overwritten, a copy whose content changed, or a log made for another index is one error and
    nothing is touched. What a killed run left in the destination (a second hard link to a file
    still in place, a temporary copy) is removed."""
    with Store.open(Path(index_dir), write=True, derived=SearchFiles()) as store:
        if store.meta is None:
            raise VsearchError(f"index at {store.dir} holds no images yet")
        path = Path(log_path).expanduser().absolute() if log_path is not None else latest_log(store.dir)
        data = _read_log(path)
        header, root = data["header"], Path(store.meta.root)
        if header is None:
            raise VsearchError(f"nothing to undo: {path} was cut off in its first line (its run did nothing)")
        mine = path.parent.resolve() == undo_dir(store.dir).resolve()
        if header.get("root") != str(root) or not (mine or header.get("index") == str(store.dir)):
            raise VsearchError(f"{path} is an undo log of another index ({header.get('index')}, folder "
                               f"{header.get('root')}); give that index with index_dir=")
        if data["undone"] is not None:
            raise VsearchError(f"{path} was undone already ({data['undone']})")
        for record in data["actions"]:
            raw = base64.b64decode(record["vector"]) if record.get("vector") else b""
            if raw and len(raw) != 4 * store.meta.dim:
                raise VsearchError(f"{path} line {record['_line']} is damaged (its vector has {len(raw) // 4} "
                                   f"numbers, the index's vectors {store.meta.dim}); nothing was undone")
        steps = [_restore_step(a, data["trashed"].get(a["source"])) for a in reversed(data["actions"])]
        problems = [p for _a, _where, p in steps if p]
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise VsearchError(f"{problems[0]}{more}; nothing was undone")
        previous = store.meta
        restored = already = 0
        added: list[tuple[tuple[str, int, int, str], np.ndarray]] = []
        touched: list[Path] = []
        try:
            for record, where, _ in steps:
                source = Path(record["source"])
                if where is None:
                    already += 1
                    if record["action"] == "move":
                        touched += _clear_leftovers(source, Path(record["target"]), record["digest"])
                else:
                    _move_file(where, source, record["digest"])
                    if record["action"] == "trash":
                        _forget_trash_info(where)
                    restored += 1
                    touched += [source, where]
                row = _follow_back(store, root, record, where)
                if row is not None:
                    added.append(row)
            if added:
                store.add_chunk([r for r, _v in added], np.stack([v for _r, v in added]))
        finally:
            _record_folders(store, root, touched)
            _commit(store, previous)
        _append(path, {"undone": sidelog.timestamp()})
    return UndoResult(path, restored, already)


def _clear_leftovers(source: Path, target: Path, digest: str) -> list[Path]:
    """Remove what a move killed half way left at ``target`` while ``source`` (checked: in
    place, its content as logged) still holds the file: a second hard link to it, the finished
    copy of a move across file systems, or that copy's temporary file. Returns what it removed."""
    removed = []
    with contextlib.suppress(OSError):
        st = target.lstat()
        if stat.S_ISREG(st.st_mode) and (os.path.samefile(source, target) or path_digest(target) == digest):
            target.unlink()
            removed.append(target)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.\d+\.tmp$")  # atomic.temp_name's form
    with contextlib.suppress(OSError):
        for leftover in target.parent.iterdir():
            if pattern.match(leftover.name) and leftover.is_file() and not leftover.is_symlink():
                leftover.unlink()
                removed.append(leftover)
    if removed:
        atomic.fsync_dir(target.parent)
    return removed


def _record_folders(store: Store, root: Path, paths: Iterable[Path]) -> None:
    """Record the mtimes of the folders under ``root`` that holding or losing ``paths`` changed
    (and of every folder above one up to ``root``, as a scan records them), so that the index
    does not look stale after vsearch's own moves."""
    dirs: dict[str, int] = {}
    real_root = root.resolve()
    for path in paths:
        folder = path.parent
        while True:
            try:
                rel = folder.resolve().relative_to(real_root).as_posix()
            except (ValueError, OSError):
                break
            rel = "" if rel == "." else rel
            if rel in dirs:
                break
            with contextlib.suppress(OSError):
                dirs[rel] = folder.stat().st_mtime_ns
            if not rel:
                break
            folder = folder.parent
    if dirs:
        store.update_dirs(sorted(dirs.items()))


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


def undo_logs(index_dir: Path) -> list[Path]:
    """Every undo log of the index (each entry of its undo folder named like one), oldest first."""
    folder = undo_dir(index_dir)
    found = [(int(m.group(1)), p) for p in (folder.iterdir() if folder.is_dir() else [])
             if (m := _LOG_NAME.match(p.name))]
    return [p for _n, p in sorted(found)]


def log_problem(path: Path) -> str | None:
    """What keeps :func:`undo` from reading an undo log (for ``check()``), or None."""
    try:
        _read_log(path)
    except VsearchError as exc:
        return str(exc)
    return None


def _read_log(path: Path) -> dict[str, Any]:
    try:
        data = reading.read_regular(path)  # a FIFO or device: refused, never waited on
    except FileNotFoundError:
        raise VsearchError(f"no undo log {path}") from None
    except OSError as exc:
        raise VsearchError(f"cannot read the undo log {path}: {exc.strerror or exc}") from None
    except ImageDecodeError as exc:  # not a regular file, or too large
        raise VsearchError(f"cannot read the undo log {path}: {exc}") from None
    return _parse_log(path, data)


def _parse_log(path: Path, data: bytes) -> dict[str, Any]:
    """Every record of an undo log, each checked (see :func:`_record_problem`): all or nothing.

    A torn last line (a kill mid-append: the line has no newline, and is no JSON) is an action
    that never started, and is skipped; any other line that is not a record this module wrote
    is damage, named with its line number. A log written before the torn tail was cut away
    on the next append holds it terminated, followed by nothing but the ``undone`` line; that
    is recognised too.
    """
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    parsed: list[tuple[int, Any]] = []
    bad: list[int] = []
    for number, line in enumerate(lines, 1):
        try:
            parsed.append((number, json.loads(line)))
        except ValueError:
            bad.append(number)
    if not parsed and len(lines) == 1 and not data.endswith(b"\n"):
        return {"header": None, "actions": [], "trashed": {}, "undone": None}  # cut off in its first line
    if not parsed or not isinstance(parsed[0][1], dict) or parsed[0][1].get("format") != LOG_FORMAT \
            or parsed[0][0] != 1:
        raise VsearchError(f"{path} is not a vsearch undo log")
    for number in bad:
        after = [r for n, r in parsed if n > number]
        torn = (number == len(lines) and not data.endswith(b"\n")) or (
            len(after) == 1 and isinstance(after[0], dict) and set(after[0]) == {"undone"} and number == len(lines) - 1)
        if not torn:
            raise VsearchError(f"{path} line {number} is damaged (not a JSON record); nothing was undone")
    actions, trashed, undone = [], {}, None
    for number, record in parsed[1:]:
        problem = _record_problem(record)
        if problem:
            raise VsearchError(f"{path} line {number} is damaged ({problem}); nothing was undone")
        if "action" in record:
            actions.append({**record, "_line": number})
        elif "trashed" in record:
            trashed[record["trashed"]] = record["at"]
        elif undone is None:
            undone = record["undone"]
    return {"header": parsed[0][1], "actions": actions, "trashed": trashed, "undone": undone}


def _record_problem(record: Any) -> str | None:
    """What is wrong with one record after an undo log's header, or None: an action (its kind,
    absolute paths, content digest, size, mtime, and a base64 float32 vector or null), the
    trash location of a trashed file, or the mark that the log was undone."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if "action" in record:
        if record["action"] not in ("move", "trash"):
            return f"unknown action {record['action']!r}"
        for key in ("source", "keeper") + (("target",) if record["action"] == "move" else ()):
            value = record.get(key)
            if not isinstance(value, str) or not value or not Path(value).is_absolute():
                return f"{key} is {value!r}, not an absolute path"
        if not isinstance(record.get("digest"), str) or not record["digest"]:
            return f"digest is {record.get('digest')!r}"
        for key in ("size", "mtime_ns"):
            if not isinstance(record.get(key), int) or isinstance(record.get(key), bool):
                return f"{key} is {record.get(key)!r}, not a whole number"
        vector = record.get("vector")
        if vector is not None:
            try:
                raw = base64.b64decode(vector, validate=True) if isinstance(vector, str) else b"?"
            except ValueError:
                raw = b"?"
            if not raw or len(raw) % 4:
                return "vector is not base64 float32"
            if not np.isfinite(np.frombuffer(raw, dtype="<f4")).all():
                return "vector holds a value that is not a number"
        return None
    if "trashed" in record:
        if not isinstance(record["trashed"], str) or not isinstance(record.get("at"), str):
            return "trashed and at must be paths"
        return None
    if "undone" in record:
        return None
    return "not a record of an undo log"


# --- files -----------------------------------------------------------------------------------


def _move_file(source: Path, target: Path, digest: str) -> None:
    """Move a file without ever overwriting one: a hard link then an unlink on one file system;
    across file systems a copy (fsynced, digest checked) then the unlink. When the unlink is
    refused (a read-only folder), the new link or copy is taken back: the file stays where it
    was, once, and the error names the folder that refused. A symbolic link moves as itself."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _file_error(exc, target.parent, f"cannot create the folder {target.parent}") from None
    try:
        os.link(source, target, follow_symlinks=False)  # fails if target exists: no overwrite, even in a race
    except FileExistsError:
        raise VsearchError(f"{target} already exists; vsearch never overwrites a file") from None
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            _copy_across(source, target, digest)
        elif exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP):
            if target.exists() or target.is_symlink():  # no hard links here (FAT, some network shares)
                raise VsearchError(f"{target} already exists; vsearch never overwrites a file") from None
            try:
                os.rename(source, target)
            except OSError as exc2:
                raise _file_error(exc2, source, f"cannot move {source} to {target}") from None
            atomic.fsync_dir(target.parent)
            atomic.fsync_dir(source.parent)
            return
        else:
            raise _file_error(exc, target, f"cannot move {source} to {target}") from None
    atomic.fsync_dir(target.parent)
    try:
        os.unlink(source)
    except OSError as exc:
        with contextlib.suppress(OSError):  # take the new name back: the file was never in two places for long
            target.unlink()
            atomic.fsync_dir(target.parent)
        raise _file_error(exc, source.parent, f"cannot move {source}: its folder {source.parent} does not let it "
                                              f"go") from None
    atomic.fsync_dir(source.parent)


def _file_error(exc: OSError, path: Path, what: str) -> VsearchError:
    """One error line for an OSError met while moving a file: a full or failing disk as
    :func:`vsearch.atomic.write_error` words it (naming ``path``), else ``what`` and the reason."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG):
        return atomic.write_error(exc, path) or VsearchError(what)
    return VsearchError(f"{what} ({exc.strerror or exc})")


def _copy_across(source: Path, target: Path, digest: str) -> None:
    tmp = atomic.temp_name(target)
    try:
        shutil.copy2(source, tmp)
        with open(tmp, "rb+") as fh:
            atomic.sync(fh.fileno())
        if path_digest(tmp) != digest:
            raise VsearchError(f"copying {source} to {target} changed its bytes; nothing was moved")
        os.link(tmp, target)
    except FileExistsError:
        raise VsearchError(f"{target} already exists; vsearch never overwrites a file") from None
    except OSError as exc:
        raise _file_error(exc, target, f"cannot copy {source} to {target}") from None
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
    """Append one record to an undo log, first cutting away a torn last line (what a kill in
    the middle of an append leaves): ended by a newline, it would read as damage forever."""
    _cut_torn_tail(path)
    atomic.append_line(path, json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogateescape"))


def _cut_torn_tail(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError), atomic.disk_errors(path), open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0 or (fh.seek(size - 1), fh.read(1))[1] == b"\n":
            return
        start = max(0, size - (1 << 20))
        fh.seek(start)
        tail = fh.read()
        cut = tail.rfind(b"\n") + 1
        if cut == 0 and start > 0:
            return  # a last line longer than any record this module writes: leave it to the reader
        try:
            json.loads(tail[cut:])
            return  # a whole record, only its newline missing: append_line adds one
        except ValueError:
            pass
        fh.truncate(start + cut)
        fh.flush()
        atomic.sync(fh.fileno())


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
