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
from vsearch.serve.common import error, guarded, number, quoted, read_json, state_of, whole_number
from vsearch.serve.groups import GroupQuery, Member, StaleGroup, the_group
from vsearch.serve.state import PageState

#: Groups sent to the page at most (largest first); the answer says how many there are.
MAX_GROUPS = 500
#: Members one action may name: more than any real group, few enough to check quickly.
MAX_MEMBERS = 10_000
#: The longest folder name and path a move may name: Linux's NAME_MAX and PATH_MAX (less its NUL).
MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 4095


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
    """The groups for ``{level, keep, threshold, fresh}`` (a POST: finding near duplicates takes
    seconds, and ``fresh`` looks again even when they are remembered)."""
    page = state_of(request)
    body = await read_json(request)
    query = _group_query(body)
    fresh = body.get("fresh", False)
    if not isinstance(fresh, bool):
        raise VsearchError(f"fresh must be true or false (got {quoted(fresh)})")
    groups = await run_in_threadpool(_groups_now, page, query, fresh)
    root = Path(page.api.index.root)
    return JSONResponse({"level": query.level, "keep": query.keep, "threshold": query.threshold,
                         "total": len(groups), "groups": [_group_json(g, root) for g in groups[:MAX_GROUPS]]})


async def act(request: Request) -> Response:
    page = state_of(request)
    body = await read_json(request)
    how = body.get("action")
    if how not in ("trash", "move"):
        raise VsearchError(f"action must be trash or move (got {quoted(how)})")
    move_to = _folder(body.get("move_to")) if how == "move" else None
    members = _members(body.get("members"))
    keeper = whole_number(body.get("keeper"), "keeper")
    try:
        done = await run_in_threadpool(_act_now, page, _group_query(body), members, keeper, move_to)
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
    Route("/api/duplicates", guarded(groups), methods=["POST"]),
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
    value = None if threshold in (None, "") else number(threshold, "threshold must be a cosine between -1 and 1")
    level, keep = values.get("level") or "near", values.get("keep") or "default"
    if not isinstance(level, str) or not isinstance(keep, str):
        raise VsearchError("level and keep must be strings, as the page sends them")
    return GroupQuery(level, keep, value)


def _member(value: Any, name: str) -> Member:
    if not isinstance(value, dict) or not isinstance(value.get("digest"), str):
        raise VsearchError(f"{name} must be an object {{row, digest}} as the page got it")
    return Member(whole_number(value.get("row"), f"{name}.row"), value["digest"])


def _members(value: Any) -> list[Member]:
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_MEMBERS:
        raise VsearchError("members must list the group's members ({row, digest} each) as the page got them")
    return [_member(v, "each member") for v in value]


def _folder(value: Any) -> Path:
    """The folder a person typed for the copies. Its form is checked here, and that it exists
    (the CLI makes a missing folder, after its dry run said so; the page has no dry run); whether
    it is a folder one can move copies into (writable, not the photos' parent, not in the index
    folder, nothing in the way) is :meth:`Index.plan_actions`'s check, the CLI's own."""
    if not isinstance(value, str) or not value.strip():
        raise VsearchError("type the folder to move the copies to")
    if "\0" in value:
        raise VsearchError("the folder name holds a NUL character")
    if len(value.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES or any(
            len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for part in value.split("/")):
        # Refused here, as the file system would (ENAMETOOLONG), before any check touches it.
        raise VsearchError(f"the folder name is too long (at most {MAX_NAME_BYTES} bytes a name, "
                           f"{MAX_PATH_BYTES} in all)")
    try:
        folder = Path(value.strip()).expanduser()
    except RuntimeError:  # ~someone who is not a user here
        raise VsearchError(f"no such home folder: {quoted(value)}") from None
    if not folder.is_absolute():
        raise VsearchError(f"give the folder as a full path such as /home/you/duplicates (got {quoted(value)}); "
                           "a relative one would depend on where the server was started")
    if not folder.exists():  # the page acts at once, with no dry run to show a typo would make a new folder
        raise VsearchError(f"{folder} does not exist; create it first")
    return folder


# --- answers ---------------------------------------------------------------------------------


def _group_json(group: DuplicateGroup, root: Path) -> dict[str, Any]:
    return {"number": group.number, "level": group.level, "members": [
        {"row": m.row, "digest": m.digest, "keeper": m.keeper, "level": m.level, "score": round(m.score, 4),
         "bytes": m.bytes, "pixels": m.pixels, "format": m.format, "mtime": m.mtime,
         "path": m.path.relative_to(root).as_posix() if m.path.is_relative_to(root) else m.path.name,
         "thumb": f"/thumb/{m.row}/{m.digest}", "image": f"/image/{m.row}/{m.digest}"}
        for m in group]}
