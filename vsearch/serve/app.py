"""The Starlette app behind ``vsearch serve``: a search page, a duplicates page (``dupes.py``)
and the JSON they call.

It holds no search logic: every answer is a call on one open :class:`vsearch.api.Index`
(opened once by the caller and kept). Security, since it serves files from disk:

* files are named by index row only, never by a path from the request; a row whose file is
  gone, or which resolves (through a symlink) outside the indexed root, is a 404;
* POSTs (every change: judgments, logs, moving or trashing copies, undo) need the page's CSRF
  token (``X-CSRF-Token``, matching the session cookie) and an ``Origin`` (or ``Referer``)
  naming this server;
* files change only through the library's undo-logged actions, on groups the library found;
* an upload is capped in bytes (read as a stream, refused past the cap) and in pixels, decoded
  by the same safe decoder as indexing, from a temporary file outside the photo folder;
* a query embeds through the index's own model, which on the CPU is its exported ONNX file.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from vsearch import api as library
from vsearch.errors import VsearchError
from vsearch.serve.common import error as _error
from vsearch.serve.common import read_json as _json
from vsearch.serve.common import whole_number as _int
from vsearch.serve.common import CSRF_COOKIE, guarded, state_of
from vsearch.serve.dupes import DUPLICATE_ROUTES
from vsearch.serve.page import DUPLICATES_PAGE, SEARCH_PAGE
from vsearch.serve.state import LockedIndex, PageState
from vsearch.serve.thumbs import ThumbCache

__all__ = ["DEFAULT_HOST", "DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_MAX_UPLOAD_PIXELS", "DEFAULT_PORT",
           "check_host", "create_app", "serve"]

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
#: Uploads larger than this are refused (413) before they are decoded.
DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024
#: Uploads claiming more pixels than this are refused (413) before they are decoded.
DEFAULT_MAX_UPLOAD_PIXELS = 50_000_000
MAX_K = 200
#: Host headers a loopback server answers: others are refused (400), which stops a DNS
#: rebinding page (evil.example resolving to 127.0.0.1) from reading photos or posting.
LOOPBACK_NAMES: tuple[str, ...] = ("127.0.0.1", "localhost", "::1", "[::1]")
#: On every served image: a browser must not guess another type (an "image" that sniffs as HTML).
FILE_HEADERS = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> str | None:
    """Refuse a non-loopback ``host`` unless ``allow_remote``; return the warning to print then.

    None for a loopback host. Raises :class:`VsearchError` for a remote one without the flag.
    """
    if is_loopback(host):
        return None
    if not allow_remote:
        raise VsearchError(f"--host {host} would let other machines reach your photos; "
                           "add --allow-remote if that is what you want (default: 127.0.0.1, this machine only)")
    return (f"warning: serving on {host}: anyone who can reach this machine on the network can search your "
            "photos and see them, record judgments, and move duplicates to the trash or to a folder; "
            "there is no login and no TLS")


def create_app(index: Any, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS, thumb_cache_bytes: int | None = None,
               allowed_hosts: Sequence[str] = LOOPBACK_NAMES,
               swap_fraction: float = 0.0) -> Starlette:
    """The web app over an open :class:`vsearch.api.Index` (which the caller closes).

    ``allowed_hosts``: the Host header names it answers (``["*"]``: any, for --allow-remote).
    ``swap_fraction``: share of searches shown with one adjacent pair swapped (the click log's
    position-bias measure); :func:`serve` (the page people use) passes the page's, 0.1.
    """
    routes = [
        Route("/", search_page),
        Route("/duplicates", duplicates_page),
        *DUPLICATE_ROUTES,
        Route("/api/info", guarded(info)),
        Route("/api/search", guarded(search_get), methods=["GET"]),
        Route("/api/search", guarded(search_upload), methods=["POST"]),
        Route("/api/judgment", guarded(judgment), methods=["POST"]),
        Route("/api/event", guarded(event), methods=["POST"]),
        Route("/thumb/{row:int}", thumb),
        Route("/image/{row:int}", image),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_HostCheck, allowed=allowed_hosts)])
    app.state.page = PageState(
        LockedIndex(index, swap_fraction),
        ThumbCache(index.index_dir, **({"cap_bytes": thumb_cache_bytes} if thumb_cache_bytes else {})),
        max_upload_bytes=max_upload_bytes, max_upload_pixels=max_upload_pixels)
    return app


# --- the handlers: each finds the open index and the session tokens in the app's state -----------


def _page_of(template: str) -> Callable[[Request], Any]:
    """A page handler: the HTML with this session's CSRF token (made on the first visit)."""
    async def page(request: Request) -> Response:
        state = state_of(request)
        token = state.session_token(request.cookies.get(CSRF_COOKIE))
        html = template.replace("{{CSRF}}", token).replace("{{TEXT}}", "true" if state.api.index.text_search else "false")
        response = HTMLResponse(html, headers={"Cache-Control": "no-store"})
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict")
        return response
    return page


search_page = _page_of(SEARCH_PAGE)
duplicates_page = _page_of(DUPLICATES_PAGE)


async def info(request: Request) -> Response:
    page = state_of(request)
    index = page.api.index
    return JSONResponse({"model": index.model, "count": index.count, "text_search": index.text_search,
                         "root": str(index.root), "max_upload_bytes": page.max_upload_bytes})


async def search_get(request: Request) -> Response:
    page = state_of(request)
    api = page.api
    params = request.query_params
    options = _options(params)
    if "row" in params:
        row = _int(params["row"], "row")
        try:
            path, digest = await run_in_threadpool(api.row_file, row)
        except LookupError:
            return _error(404, f"no image at row {row}")
        hits = await run_in_threadpool(lambda: api.query(queries=path, **options))
        return _hits(api, hits, f"{digest}")
    if params.get("text", "").strip():
        text = params["text"].strip()
        hits = await run_in_threadpool(lambda: api.query(text=text, **options))
        return _hits(api, hits, "text:" + text)
    return _error(400, "give row= (an indexed image) or text= (CLIP indexes)")


async def search_upload(request: Request) -> Response:
    page = state_of(request)
    api = page.api
    options = _options(request.query_params)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > page.max_upload_bytes:
        return _too_large(page.max_upload_bytes)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > page.max_upload_bytes:
            return _too_large(page.max_upload_bytes)
    if not data:
        return _error(400, "the upload is empty: send the image's bytes as the request body")
    pixels = _pixels(bytes(data))
    if pixels is None:
        return _error(400, "the upload is not an image vsearch can read")
    if pixels > page.max_upload_pixels:
        return _error(413, f"the upload has {pixels:,} pixels; the limit is {page.max_upload_pixels:,}")
    hits = await run_in_threadpool(lambda: _query_bytes(api, bytes(data), options))
    return _hits(api, hits, library.bytes_digest(bytes(data)))


async def thumb(request: Request) -> Response:
    page = state_of(request)
    api = page.api
    row = request.path_params["row"]
    try:
        path, digest = await run_in_threadpool(api.row_file, row)
        data = await run_in_threadpool(page.thumbs.get, path, digest)
    except (LookupError, VsearchError):
        return _error(404, f"no image at row {row}")
    return Response(data, media_type="image/jpeg", headers=FILE_HEADERS)


async def image(request: Request) -> Response:
    page = state_of(request)
    api = page.api
    row = request.path_params["row"]
    try:
        path, _ = await run_in_threadpool(api.row_file, row)
    except LookupError:
        return _error(404, f"no image at row {row}")
    return FileResponse(path, headers=FILE_HEADERS)


async def judgment(request: Request) -> Response:
    page = state_of(request)
    api, index = page.api, page.api.index
    body = await _json(request)
    result_row = _int(body.get("row"), "row")
    try:
        path, digest = await run_in_threadpool(api.row_file, result_row)
    except LookupError:
        return _error(404, f"no image at row {result_row}")
    rel = path.relative_to(Path(index.root).resolve()).as_posix()
    query, label = str(body.get("query", "")), str(body.get("label", ""))
    if label not in ("relevant", "not-relevant"):
        raise VsearchError(f"label must be relevant or not-relevant (got {label!r})")
    shown = await run_in_threadpool(library.latest_shown, index.index_dir, query, digest) if query else None
    done = library.record_verdict(index.index_dir, query, digest, label == "relevant", source="page",
                           rank=shown[1] if shown else None, result_path=rel)
    return JSONResponse({**done.__dict__, "label": label})


async def event(request: Request) -> Response:
    page = state_of(request)
    api, index = page.api, page.api.index
    body = await _json(request)
    kind, query = str(body.get("kind", "")), str(body.get("query", ""))
    if kind != "click":  # impressions are logged as the search answers (_hits)
        raise VsearchError(f"kind must be click (got {kind!r})")
    shown = body.get("results")
    if not isinstance(shown, list) or not shown or len(shown) > MAX_K:
        return _error(400, f"results must be a list of 1 to {MAX_K} {{row, rank}} objects")
    logged = 0
    for item in shown:
        row = _int(item.get("row") if isinstance(item, dict) else None, "row")
        rank = _int(item.get("rank"), "rank")
        try:
            _, digest = await run_in_threadpool(api.row_file, row)
        except LookupError:
            continue
        qid = body.get("query_id")
        found = (_int(qid, "query_id"), rank) if qid is not None else \
            await run_in_threadpool(library.latest_shown, index.index_dir, query, digest)
        if found is None:
            continue
        await run_in_threadpool(library.log_click, index.index_dir, found[0], digest)
        logged += 1
    return JSONResponse({"logged": logged})


# --- checks ----------------------------------------------------------------------------------


class _HostCheck:
    """Answer only requests whose Host header names an allowed host (``*``: any), else 400.

    Starlette's TrustedHostMiddleware cuts ``[::1]:8000`` at the first colon; this keeps IPv6.
    """

    def __init__(self, app: ASGIApp, allowed: Sequence[str]) -> None:
        self.app = app
        self.allowed = {h.lower() for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "*" not in self.allowed:
            host = Headers(scope=scope).get("host", "").lower()
            name = host.partition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0]
            if name not in self.allowed:
                await _error(400, "this server answers only to this machine's own address (Host header)")(
                    scope, receive, send)
                return
        await self.app(scope, receive, send)



def _too_large(cap: int) -> JSONResponse:
    return _error(413, f"the upload is larger than the limit of {cap // (1024 * 1024)} MiB ({cap:,} bytes)")


def _options(params: Any) -> dict[str, Any]:
    """The query options the page offers: k, exclude_self, path (glob), diverse."""
    k = _int(params.get("k", 20), "k")
    if not 1 <= k <= MAX_K:
        raise VsearchError(f"k must be between 1 and {MAX_K} (got {k})")
    options: dict[str, Any] = {"k": k, "exclude_self": params.get("exclude_self", "") in ("1", "true", "on")}
    if params.get("path", "").strip():
        options["path_glob"] = params["path"].strip()
    if params.get("diverse", "").strip():
        try:
            options["diverse"] = float(params["diverse"])
        except ValueError:
            raise VsearchError(f"diverse must be a number between 0 and 1 (got {params['diverse']!r})") from None
    return options


def _pixels(data: bytes) -> int | None:
    """Width x height an image's header claims (nothing decoded), or None for no image."""
    try:
        return int(library.read_header(data).pixels)
    except Exception:  # noqa: BLE001 - any failure to parse a header means "not an image"
        return None


def _query_bytes(api: LockedIndex, data: bytes, options: dict[str, Any]) -> list[Any]:
    """Search by an upload, from a temporary file outside the photo folder (removed afterwards)."""
    root = Path(api.index.root).resolve()
    folder = Path(tempfile.gettempdir()).resolve()
    if folder.is_relative_to(root):  # a temp dir inside the photos would put the upload among them
        folder = Path(api.index.index_dir).resolve()
        if folder.is_relative_to(root):
            raise VsearchError("no place outside the photo folder for the upload: set TMPDIR to another folder")
    fd, name = tempfile.mkstemp(prefix="vsearch-upload-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return api.query(queries=Path(name), **options)
    finally:
        Path(name).unlink(missing_ok=True)


def _hits(api: LockedIndex, hits: list[Any], query_key: str) -> JSONResponse:
    """The results as the page shows them, logged as impressions (library.log_impressions): on a
    share of searches one adjacent pair is swapped, to measure position bias."""
    root = Path(api.index.root)
    results, query_id = [], None
    digests = [_digest_of_hit(api, h) for h in hits]
    if hits and None not in digests:
        shown = library.log_impressions(api.index.index_dir, query_key, digests,  # type: ignore[arg-type]  # no None: checked above
                                       swap_fraction=api.swap_fraction)
        hits, query_id = [hits[i] for i in shown.order], shown.query_id
    for rank, h in enumerate(hits, start=1):
        results.append({"rank": rank, "score": round(float(h.score), 4), "row": h.row,
                        "path": h.path.relative_to(root).as_posix() if h.path.is_relative_to(root) else h.path.name,
                        "thumb": f"/thumb/{h.row}", "image": f"/image/{h.row}"})
    return JSONResponse({"query": query_key, "query_id": query_id, "results": results})


def _digest_of_hit(api: LockedIndex, hit: Any) -> str | None:
    try:
        return api.row_file(hit.row)[1]
    except LookupError:
        return None


def serve(index: Any, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          swap_fraction: float = library.DEFAULT_SWAP_FRACTION) -> None:
    """Serve the app over ``index`` with uvicorn until interrupted (the caller checked ``host``)."""
    import uvicorn

    hosts = [*LOOPBACK_NAMES, host] if is_loopback(host) else ["*"]  # remote: check_host warned
    uvicorn.run(create_app(index, allowed_hosts=hosts, swap_fraction=swap_fraction), host=host, port=port,
                log_level="warning")
