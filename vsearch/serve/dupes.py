"""The duplicates page's JSON: groups from :meth:`Index.duplicates`, and the undo-logged actions.

The page never names a file to change. It names a group by the ``(row, digest)`` of each member
it showed, and the keeper a person chose among them. The server finds the groups again with the
same level, keep rule and threshold, and acts only on the group that has exactly those members:
when none does (the files or the index changed since the page loaded) the answer is 409 and
nothing changes. The rest is the library, as the CLI calls it: :func:`vsearch.api.choose_keeper`,
then :meth:`Index.plan_actions` (its checks refuse a bad folder) and :meth:`Index.apply_actions`
(logged for undo, the index follows), as ``vsearch duplicates --move-to DIR|--trash --yes``;
:meth:`Index.undo` puts back the newest log, as ``vsearch undo``; :meth:`Index.not_duplicate`
records a pair, as ``--not-duplicate A B``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vsearch.api import DuplicateGroup, choose_keeper
from vsearch.errors import VsearchError
from vsearch.serve.common import error, read_json, whole_number

#: Groups sent to the page at most (largest first); the answer says how many there are.
MAX_GROUPS = 500
#: Members one action may name: more than any real group, few enough to check quickly.
MAX_MEMBERS = 10_000


class StaleGroup(Exception):
    """What the page showed is not what the index holds now (answered 409, nothing done)."""


@dataclass(frozen=True)
class GroupQuery:
    """How the groups were found: ``Index.duplicates``'s level, keep rule and threshold."""

    level: str = "near"
    keep: str = "default"
    threshold: float | None = None

    def find(self, index: Any) -> list[DuplicateGroup]:
        """The groups, from the library (which checks level and keep)."""
        return index.duplicates(self.threshold, level=self.level, keep=self.keep)


@dataclass(frozen=True)
class Member:
    """A member as the page names it: the row and content digest it was shown with."""

    row: int
    digest: str


def duplicate_routes(api: Any, guarded: Callable[[Callable[[Request], Any]], Callable[[Request], Any]]) -> list[Route]:
    """The routes of the duplicates page's JSON over ``api`` (the app's lock-holding index
    wrapper); ``guarded`` adds the app's POST checks (CSRF token, same origin) and error answers."""
    index = api.index

    found = FoundGroups()

    def groups_now(query: GroupQuery, fresh: bool) -> list[DuplicateGroup]:
        with api.lock:  # the near level can take a while; searches wait (the Index is not thread-safe)
            return found.get(query, index, fresh=fresh)

    def act_now(query: GroupQuery, shown: list[Member], keeper_row: int, move_to: Path | None) -> Any:
        with api.lock:
            group = _the_group(found.get(query, index), shown)
            keeper = next((m for m in group if m.row == keeper_row), None)
            if keeper is None:
                raise VsearchError(f"the keeper (row {keeper_row}) is not a member of this group")
            chosen = choose_keeper(group, keeper.path)
            actions = index.plan_actions([chosen], move_to=move_to, trash=move_to is None)
            return index.apply_actions(actions)

    def mark_now(a: Member, b: Member) -> None:
        paths = [_file_of(api, m) for m in (a, b)]  # row_file takes the lock itself
        index.not_duplicate(*paths)  # reads the two files and appends to marks.jsonl: no index state

    def undo_now() -> Any:
        with api.lock:
            return index.undo()

    async def groups(request: Request) -> Response:
        query = _group_query(request.query_params)
        fresh = request.query_params.get("fresh", "") in ("1", "true")
        groups = await run_in_threadpool(groups_now, query, fresh)
        root = Path(index.root)
        return JSONResponse({"level": query.level, "keep": query.keep, "threshold": query.threshold,
                             "total": len(groups), "groups": [_group_json(g, root) for g in groups[:MAX_GROUPS]]})

    async def act(request: Request) -> Response:
        body = await read_json(request)
        how = body.get("action")
        if how not in ("trash", "move"):
            raise VsearchError(f"action must be trash or move (got {how!r})")
        move_to = _folder(body.get("move_to")) if how == "move" else None
        shown = _members(body.get("members"))
        keeper = whole_number(body.get("keeper"), "keeper")
        try:
            done = await run_in_threadpool(act_now, _group_query(body), shown, keeper, move_to)
        except StaleGroup:
            return _stale()
        count = done.moved + done.trashed
        files = f"{count} file{'s' if count != 1 else ''}"
        where = "sent to the trash" if how == "trash" else f"moved to {move_to}"
        return JSONResponse({"moved": done.moved, "trashed": done.trashed, "log": str(done.path),
                             "message": f"{files} {where}; Undo puts {'them' if count != 1 else 'it'} back"})

    async def not_duplicate(request: Request) -> Response:
        body = await read_json(request)
        a, b = (_member(body.get(name), name) for name in ("a", "b"))
        if a == b:
            raise VsearchError("a and b are the same image")
        try:
            await run_in_threadpool(mark_now, a, b)
        except StaleGroup:
            return _stale()
        return JSONResponse({"recorded": True})

    async def undo(request: Request) -> Response:
        done = await run_in_threadpool(undo_now)
        count = done.restored + done.already
        return JSONResponse({"restored": done.restored, "already": done.already, "log": str(done.log),
                             "message": f"{count} file{'s' if count != 1 else ''} put back (undo log {done.log.name})"})

    return [
        Route("/api/duplicates", guarded(groups), methods=["GET"]),
        Route("/api/duplicates/act", guarded(act), methods=["POST"]),
        Route("/api/duplicates/not-duplicate", guarded(not_duplicate), methods=["POST"]),
        Route("/api/undo", guarded(undo), methods=["POST"]),
    ]


# --- the groups, found once per commit ----------------------------------------------------------


class FoundGroups:
    """The groups last found for each :class:`GroupQuery`, kept while the index folder's commit
    record (``meta.json``) and not-duplicate marks (``marks.jsonl``) stay the same file.

    Finding near duplicates verifies every shortlisted pair (about 45 s for 1,360 photos here),
    so switching the level back, or acting on a group, must not find them all again. A commit
    (an action here, a build or ``vsearch duplicates --yes`` elsewhere) or a new mark replaces
    those files, and the next request finds the groups again. A file changed on disk without a
    commit is caught by :meth:`Index.apply_actions`, which checks every copy before touching any.
    """

    #: Queries remembered (level x keep rule fits; thresholds vary).
    KEPT = 12

    def __init__(self) -> None:
        self.found: dict[GroupQuery, tuple[tuple[Any, ...], list[DuplicateGroup]]] = {}

    def get(self, query: GroupQuery, index: Any, *, fresh: bool = False) -> list[DuplicateGroup]:
        """The groups for ``query``: remembered, unless the stamp changed or ``fresh``."""
        stamp = index.state()  # before finding: a commit meanwhile makes the next call find again
        kept = self.found.get(query)
        if kept is not None and kept[0] == stamp and not fresh:
            return kept[1]
        groups = query.find(index)
        self.found = {q: v for q, v in self.found.items() if v[0] == stamp and q != query}
        while len(self.found) >= self.KEPT:
            del self.found[next(iter(self.found))]
        self.found[query] = (stamp, groups)
        return groups


# --- the group a request names ---------------------------------------------------------------


def _the_group(groups: list[DuplicateGroup], shown: list[Member]) -> DuplicateGroup:
    """The group whose members are exactly ``shown``; :class:`StaleGroup` (409) when none is any more."""
    wanted = {(m.row, m.digest) for m in shown}
    for group in groups:
        if {(m.row, m.digest) for m in group} == wanted:
            return group
    raise StaleGroup("stale group")


def _file_of(api: Any, member: Member) -> Path:
    """The indexed file the page showed as ``member``; :class:`StaleGroup` (409) when the row now
    holds another file or none."""
    try:
        path, digest = api.row_file(member.row)
    except LookupError:
        raise StaleGroup("stale row") from None
    if digest != member.digest:
        raise StaleGroup("stale row")
    return path


def _stale() -> Response:
    return error(409, "the duplicates changed since the page showed them (files or index); nothing was done. "
                      "Find the duplicates again")


# --- request values --------------------------------------------------------------------------


def _group_query(values: Any) -> GroupQuery:
    threshold = values.get("threshold")
    if threshold in (None, ""):
        value = None
    else:
        try:
            value = float(threshold)
        except (TypeError, ValueError):
            raise VsearchError(f"threshold must be a cosine between -1 and 1 (got {threshold!r})") from None
    return GroupQuery(str(values.get("level") or "near"), str(values.get("keep") or "default"), value)


def _member(value: Any, name: str) -> Member:
    if not isinstance(value, dict) or not isinstance(value.get("digest"), str):
        raise VsearchError(f"{name} must be an object {{row, digest}} as the page got it")
    return Member(whole_number(value.get("row"), f"{name}.row"), value["digest"])


def _members(value: Any) -> list[Member]:
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_MEMBERS:
        raise VsearchError("members must list the group's members ({row, digest} each) as the page got them")
    return [_member(v, "each member") for v in value]


def _folder(value: Any) -> Path:
    """The folder a person typed for the copies. Only its form is checked here; whether it is a
    folder one can move copies into (exists, writable, not the photos' parent, not in the index
    folder, nothing in the way) is :meth:`Index.plan_actions`'s check, the CLI's own."""
    if not isinstance(value, str) or not value.strip():
        raise VsearchError("type the folder to move the copies to")
    if "\0" in value:
        raise VsearchError("the folder name holds a NUL character")
    folder = Path(value.strip()).expanduser()
    if not folder.is_absolute():
        raise VsearchError(f"give the folder as a full path such as /home/you/duplicates (got {value!r}); "
                           "a relative one would depend on where the server was started")
    return folder


# --- answers ---------------------------------------------------------------------------------


def _group_json(group: DuplicateGroup, root: Path) -> dict[str, Any]:
    return {"number": group.number, "level": group.level, "members": [
        {"row": m.row, "digest": m.digest, "keeper": m.keeper, "level": m.level, "score": round(m.score, 4),
         "bytes": m.bytes, "pixels": m.pixels, "format": m.format, "mtime": m.mtime,
         "path": m.path.relative_to(root).as_posix() if m.path.is_relative_to(root) else m.path.name,
         "thumb": f"/thumb/{m.row}", "image": f"/image/{m.row}"}
        for m in group]}
