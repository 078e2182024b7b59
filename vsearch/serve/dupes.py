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

from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vsearch.api import DuplicateGroup, choose_keeper
from vsearch.errors import VsearchError
from vsearch.serve.common import error, guarded, read_json, state_of, whole_number
from vsearch.serve.groups import GroupQuery, Member, StaleGroup, the_group
from vsearch.serve.state import PageState

#: Groups sent to the page at most (largest first); the answer says how many there are.
MAX_GROUPS = 500
#: Members one action may name: more than any real group, few enough to check quickly.
MAX_MEMBERS = 10_000


def _groups_now(page: PageState, query: GroupQuery, fresh: bool) -> list[DuplicateGroup]:
    with page.api.lock:  # the near level can take a while; searches wait (the Index is not thread-safe)
        return page.found.get(query, page.api.index, fresh=fresh)


def _act_now(page: PageState, query: GroupQuery, shown: list[Member], keeper_row: int, move_to: Path | None) -> Any:
    with page.api.lock:
        group = the_group(page.found.get(query, page.api.index), shown)
        keeper = next((m for m in group if m.row == keeper_row), None)
        if keeper is None:
            raise VsearchError(f"the keeper (row {keeper_row}) is not a member of this group")
        chosen = choose_keeper(group, keeper.path)
        actions = page.api.index.plan_actions([chosen], move_to=move_to, trash=move_to is None)
        return page.api.index.apply_actions(actions)


def _mark_now(page: PageState, a: Member, b: Member) -> None:
    paths = [_file_of(page.api, m) for m in (a, b)]  # row_file takes the lock itself
    page.api.index.not_duplicate(*paths)  # reads the two files and appends to marks.jsonl: no index state


def _undo_now(page: PageState) -> Any:
    with page.api.lock:
        return page.api.index.undo()


async def groups(request: Request) -> Response:
    page = state_of(request)
    query = _group_query(request.query_params)
    fresh = request.query_params.get("fresh", "") in ("1", "true")
    groups = await run_in_threadpool(_groups_now, page, query, fresh)
    root = Path(page.api.index.root)
    return JSONResponse({"level": query.level, "keep": query.keep, "threshold": query.threshold,
                         "total": len(groups), "groups": [_group_json(g, root) for g in groups[:MAX_GROUPS]]})


async def act(request: Request) -> Response:
    page = state_of(request)
    body = await read_json(request)
    how = body.get("action")
    if how not in ("trash", "move"):
        raise VsearchError(f"action must be trash or move (got {how!r})")
    move_to = _folder(body.get("move_to")) if how == "move" else None
    shown = _members(body.get("members"))
    keeper = whole_number(body.get("keeper"), "keeper")
    try:
        done = await run_in_threadpool(_act_now, page, _group_query(body), shown, keeper, move_to)
    except StaleGroup:
        return _stale()
    count = done.moved + done.trashed
    files = f"{count} file{'s' if count != 1 else ''}"
    where = "sent to the trash" if how == "trash" else f"moved to {move_to}"
    return JSONResponse({"moved": done.moved, "trashed": done.trashed, "log": str(done.path),
                         "message": f"{files} {where}; Undo puts {'them' if count != 1 else 'it'} back"})


async def not_duplicate(request: Request) -> Response:
    page = state_of(request)
    body = await read_json(request)
    a, b = (_member(body.get(name), name) for name in ("a", "b"))
    if a == b:
        raise VsearchError("a and b are the same image")
    try:
        await run_in_threadpool(_mark_now, page, a, b)
    except StaleGroup:
        return _stale()
    return JSONResponse({"recorded": True})


async def undo(request: Request) -> Response:
    page = state_of(request)
    done = await run_in_threadpool(_undo_now, page)
    count = done.restored + done.already
    return JSONResponse({"restored": done.restored, "already": done.already, "log": str(done.log),
                         "message": f"{count} file{'s' if count != 1 else ''} put back (undo log {done.log.name})"})


#: The duplicates page's JSON endpoints, each behind the POST checks.
DUPLICATE_ROUTES = [
    Route("/api/duplicates", guarded(groups), methods=["GET"]),
    Route("/api/duplicates/act", guarded(act), methods=["POST"]),
    Route("/api/duplicates/not-duplicate", guarded(not_duplicate), methods=["POST"]),
    Route("/api/undo", guarded(undo), methods=["POST"]),
]


# --- the group a request names ---------------------------------------------------------------


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
