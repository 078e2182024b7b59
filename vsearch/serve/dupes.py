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

The page itself finds the groups in the background (:class:`~vsearch.serve.groups.SearchSlot`):
``POST /api/duplicates/search`` starts a search (or finds the one running, or the groups kept
for an unchanged index), and ``GET /api/duplicates/search?id=&page=`` answers how far it got
and one page of groups, the first ones while it still runs. ``POST /api/duplicates/apply``
moves or trashes the copies of every group a person selected, in one undo log, and
``POST /api/duplicates/explain`` says why two members are a pair (as ``--explain A B``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vsearch import api as library
from vsearch.api import DuplicateGroup, choose_keeper
from vsearch.errors import VsearchError
from vsearch.serve.common import error, guarded, number, quoted, read_json, state_of, whole_number
from vsearch.serve.groups import GroupQuery, GroupSearch, Member, StaleGroup, the_group
from vsearch.serve.state import PageState

#: Groups sent to the page at most (largest first); the answer says how many there are.
MAX_GROUPS = 500
#: Members one action may name: more than any real group, few enough to check quickly.
MAX_MEMBERS = 10_000
#: Groups a page of the answer holds by default, and at most.
PER_PAGE, MAX_PER_PAGE = 50, 500
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


def _move_to(body: dict[str, Any]) -> Path | None:
    """The folder of ``{action: "move", move_to}``, or None for ``{action: "trash"}``."""
    how = body.get("action")
    if how not in ("trash", "move"):
        raise VsearchError(f"action must be trash or move (got {quoted(how)})")
    return _folder(body.get("move_to")) if how == "move" else None


def _fresh(body: dict[str, Any]) -> bool:
    """``fresh`` of a body: look again even when the groups are remembered."""
    fresh = body.get("fresh", False)
    if not isinstance(fresh, bool):
        raise VsearchError(f"fresh must be true or false (got {quoted(fresh)})")
    return fresh


async def groups(request: Request) -> Response:
    """The groups for ``{level, keep, threshold, fresh}`` (a POST: finding near duplicates takes
    seconds, and ``fresh`` looks again even when they are remembered)."""
    page = state_of(request)
    body = await read_json(request)
    query = _group_query(body)
    fresh = _fresh(body)
    groups = await run_in_threadpool(_groups_now, page, query, fresh)
    root = Path(page.api.index.root)
    return JSONResponse({"level": query.level, "keep": query.keep, "threshold": query.threshold,
                         "total": len(groups), "groups": [_group_json(g, root) for g in groups[:MAX_GROUPS]]})


async def act(request: Request) -> Response:
    page = state_of(request)
    body = await read_json(request)
    move_to = _move_to(body)
    members = _members(body.get("members"))
    keeper = whole_number(body.get("keeper"), "keeper")
    try:
        done = await run_in_threadpool(_act_now, page, _group_query(body), members, keeper, move_to)
    except StaleGroup:
        return _stale()
    return _acted(done, move_to)


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


# --- the search in the background, bulk actions, one pair explained --------------------------


def _opener(page: PageState) -> Any:
    """How a search's thread opens the index: again, on its own (see :class:`SearchSlot`)."""
    index = page.api.index
    return lambda: library.open_index(index.index_dir, adapter=index.adapted)


async def start_search(request: Request) -> Response:
    """Start finding the groups for ``{level, keep, threshold, fresh}`` in the background (a
    POST: it costs seconds to minutes of work); the answer is how far it got at once."""
    page = state_of(request)
    body = await read_json(request)
    query = _group_query(body)
    fresh = _fresh(body)
    _check_query(query)
    search = page.searches.start(query, page.api.index.state(), _opener(page), fresh=fresh)
    return JSONResponse(_search_json(page, search, 1, PER_PAGE))


async def follow_search(request: Request) -> Response:
    """How far search ``id`` got, and page ``page`` (``per`` groups) of its groups: all of them,
    largest first, once it finished; the ones settled so far while it runs. 409 when another
    search replaced it, 404 when there is none."""
    page = state_of(request)
    params = request.query_params
    number_of = whole_number(params.get("page", "1"), "page")
    per = whole_number(params.get("per", str(PER_PAGE)), "per")
    if number_of < 1 or not 1 <= per <= MAX_PER_PAGE:
        raise VsearchError(f"page must be 1 or more and per between 1 and {MAX_PER_PAGE}")
    search = page.searches.current
    if search is None:
        return error(404, "no search for duplicates was started: find the duplicates first")
    if params.get("id") not in (None, search.id):
        return error(409, "another search for duplicates replaced that one")
    return JSONResponse(_search_json(page, search, number_of, per))


def _search_json(page: PageState, search: GroupSearch, number_of: int, per: int) -> dict[str, Any]:
    groups = search.shown()
    pages = max(1, -(-len(groups) // per))
    root = Path(page.api.index.root)
    q = search.query
    return {**search.progress(), "level": q.level, "keep": q.keep, "threshold": q.threshold,
            "stale": search.stamp != page.api.index.state(), "groups_total": len(groups),
            "copies_total": sum(sum(m.is_copy for m in g) for g in groups),
            "page": number_of, "per": per, "pages": pages,
            # every group's number once finished: "select all pages" less a few, without every page
            "all_numbers": [g.number for g in groups] if search.groups is not None else [],
            "groups": [_group_json(g, root) for g in groups[(number_of - 1) * per:number_of * per]]}


def _check_query(query: GroupQuery) -> None:
    """Refuse a level or keep rule the library does not know before a thread is started for it."""
    if query.level not in library.DUPLICATE_LEVELS:
        raise VsearchError(f"level must be one of {', '.join(library.DUPLICATE_LEVELS)} (got {quoted(query.level)})")
    if query.keep not in library.KEEP_RULES:
        raise VsearchError(f"keep must be one of {', '.join(library.KEEP_RULES)} (got {quoted(query.keep)})")
    if query.threshold is not None and not -1.0 <= query.threshold <= 1.0:
        raise VsearchError(f"threshold must be a cosine between -1 and 1 (got {query.threshold})")


def _apply_now(page: PageState, search: GroupSearch, numbers: set[int] | None, keepers: dict[int, int],
               move_to: Path | None) -> Any:
    with page.api.lock:
        if search.groups is None or search.stamp != page.api.index.state():
            raise StaleGroup("stale search")
        chosen = []
        for group in search.groups:
            if numbers is not None and group.number not in numbers:
                continue
            row = keepers.get(group.number)
            if row is not None:
                keeper = next((m for m in group if m.row == row), None)
                if keeper is None:
                    raise VsearchError(f"the keeper (row {row}) is not a member of group {group.number}")
                group = choose_keeper(group, keeper.path)
            chosen.append(group)
        if numbers is not None and len(chosen) != len(numbers):
            raise VsearchError("a selected group number is not one of this search's groups")
        if not chosen:
            raise VsearchError("select at least one group")
        actions = page.api.index.plan_actions(chosen, move_to=move_to, trash=move_to is None)
        if not actions:
            raise VsearchError("the selected groups hold no copy to act on (only links to their keepers)")
        return page.api.index.apply_actions(actions)  # one undo log for every group: one Undo puts all back


async def apply_selected(request: Request) -> Response:
    """Move or trash the copies of every selected group of search ``search`` at once:
    ``{search, action, move_to, groups: "all" | [number, ...], keepers: {number: row}}`` (a
    keeper a person picked, else the suggested one). One undo log: Undo puts all of it back."""
    page = state_of(request)
    body = await read_json(request)
    move_to = _move_to(body)
    wanted = body.get("groups")
    numbers: set[int] | None
    if wanted == "all":
        numbers = None
    elif isinstance(wanted, list) and 1 <= len(wanted) <= MAX_MEMBERS:
        numbers = {whole_number(n, "each group number") for n in wanted}
    else:
        raise VsearchError('groups must be "all" or a list of group numbers')
    raw = body.get("keepers", {})
    if not isinstance(raw, dict) or len(raw) > MAX_MEMBERS:
        raise VsearchError("keepers must map group numbers to the row of the copy to keep")
    keepers = {whole_number(k, "each group number"): whole_number(v, "each keeper row") for k, v in raw.items()}
    search = page.searches.current
    if search is None or body.get("search") != search.id:
        return _stale()
    if search.running:
        raise VsearchError("the search for duplicates is still running: act once it has finished")
    try:
        done = await run_in_threadpool(_apply_now, page, search, numbers, keepers, move_to)
    except StaleGroup:
        return _stale()
    return _acted(done, move_to, ", in one undo log")


def _explain_now(page: PageState, a: Member, b: Member, level: str, threshold: float | None) -> dict[str, Any]:
    paths = [_file_of(page.api, m) for m in (a, b)]  # row_file takes the lock itself
    with page.api.lock:
        why = page.api.index.explain(paths[0], paths[1], level=level, threshold=threshold)
        root = Path(page.api.index.root).resolve()
    details = [library.photo_details(p) for p in paths]  # the header: EXIF date taken, width x height
    return {
        "a": _shown_path(paths[0], root), "b": _shown_path(paths[1], root),
        "taken": [d.taken.isoformat(sep=" ") if d.taken is not None else None for d in details],
        "size": [[d.width, d.height] if d.width is not None else None for d in details],
        "cosine": round(why.cosine, 4), "same_bytes": why.same_bytes, "matches": why.matches,
        "inliers": why.inliers, "mirrored": why.mirrored, "scale": why.scale, "rotation": why.rotation,
        "shift": why.shift, "overlap": why.overlap, "agreement": why.agreement, "verdict": why.verdict,
        "level": why.level, "why": why.why,
        "checks": [{"test": c.test, "value": c.value, "needs": c.needs,
                    "result": "" if c.passed is None else "pass" if c.passed else "miss"} for c in why.checks],
    }


async def explain(request: Request) -> Response:
    """Why members ``a`` and ``b`` are (or are not) a pair, ``a`` in the keeper's place: every
    test with its measure and what the level needs, as ``vsearch duplicates --explain A B``
    prints it (a POST: it verifies the pair), and when each was taken (EXIF)."""
    page = state_of(request)
    body = await read_json(request)
    a, b = (_member(body.get(name), name) for name in ("a", "b"))
    if a == b:
        raise VsearchError("a and b are the same image")
    query = _group_query(body)
    _check_query(query)
    try:
        answer = await run_in_threadpool(_explain_now, page, a, b, query.level, query.threshold)
    except StaleGroup:
        return _stale()
    return JSONResponse(answer)


def _shown_path(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name


#: The duplicates page's JSON endpoints, each behind the POST checks.
DUPLICATE_ROUTES = [
    Route("/api/duplicates/search", guarded(start_search), methods=["POST"]),
    Route("/api/duplicates/search", guarded(follow_search), methods=["GET"]),
    Route("/api/duplicates/apply", guarded(apply_selected), methods=["POST"]),
    Route("/api/duplicates/explain", guarded(explain), methods=["POST"]),
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


def _acted(done: Any, move_to: Path | None, how: str = "") -> JSONResponse:
    """The answer to an action carried out (``done``: its undo log's counts and path): the
    counts, the log, and one sentence saying what was done (``how``: said after where)."""
    count = done.moved + done.trashed
    files = f"{count} file{'s' if count != 1 else ''}"
    where = "sent to the trash" if move_to is None else f"moved to {move_to}"
    return JSONResponse({"moved": done.moved, "trashed": done.trashed, "log": str(done.path),
                         "message": f"{files} {where}{how}; Undo puts {'them' if count != 1 else 'it'} back"})


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
