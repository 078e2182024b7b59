"""The Starlette app behind ``vsearch serve``: a search page, a duplicates page (``dupes.py``)
and the JSON they call.

It holds no search logic: every answer is a call on one open :class:`vsearch.api.Index`
(opened once by the caller and kept). Security, since it serves files from disk:

* files are named by index row and content digest only (``/thumb/{row}/{digest}``), never by a
  path from the request; a row whose file is gone, holds other content now, or resolves
  (through a symlink) outside the indexed root, is a 404;
* a GET only reads (and fills the bounded thumbnail cache). Everything that writes or costs
  seconds is a POST: a search (it logs the impressions), finding duplicates, judgments, clicks,
  moving or trashing copies, undo. A POST needs the page's CSRF token (``X-CSRF-Token``,
  matching the session cookie) and an ``Origin`` (or ``Referer``) naming this server;
* the ``Host`` header must be ``name[:port]`` with the name this machine's (loopback) unless
  the server was started for the network;
* every request value is checked (whole numbers within SQLite's range, strict JSON): a client
  gets a 4xx with a JSON error for anything it sends, never a 500;
* files change only through the library's undo-logged actions, on groups the library found;
* an upload is capped in bytes (read as a stream, refused past the cap) and in pixels, decoded
  by the same safe decoder as indexing, from a temporary file outside the photo folder;
* a query embeds through the index's own model, which on the CPU is its exported ONNX file.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from vsearch import api as library
from vsearch.errors import VsearchError
from vsearch.imaging.reading import read_image_bytes
from vsearch.serve.common import error as _error
from vsearch.serve.common import read_json as _json
from vsearch.serve.common import whole_number as _int
from vsearch.serve.common import CSRF_COOKIE, guarded, media_type, number, quoted, state_of
from vsearch.serve import experiment as experiments
from vsearch.serve.dupes import DUPLICATE_ROUTES
from vsearch.serve.page import DUPLICATES_PAGE, SEARCH_PAGE
from vsearch.serve.searching import SEARCH_ROUTES, session_of, uploads_of
from vsearch.serve.state import LockedIndex, PageState
from vsearch.serve.thumbs import ThumbCache

__all__ = ["DEFAULT_HOST", "DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_MAX_UPLOAD_PIXELS", "DEFAULT_PORT",
           "check_host", "create_app", "listen", "serve", "url_of"]

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
#: Uploads larger than this are refused (413) before they are decoded.
DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024
#: Uploads claiming more pixels than this are refused (413) before they are decoded.
DEFAULT_MAX_UPLOAD_PIXELS = 50_000_000
MAX_K = 200
#: Host headers a loopback server answers: others are refused (400), which stops a DNS
#: rebinding page (evil.example resolving to 127.0.0.1) from reading photos or posting.
LOOPBACK_NAMES: tuple[str, ...] = ("127.0.0.1", "localhost", "::1", "[::1]")
#: On every served image: a browser must not guess another type (an "image" that sniffs as HTML),
#: and may keep it for good: its URL names its content (the digest), so what a URL shows never changes.
FILE_HEADERS = {"Cache-Control": "private, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}
#: A content digest as a URL names it (the manifest's BLAKE2b, hex).
DIGEST = re.compile(r"[0-9a-f]{16,128}")
#: A text query's words: the click log keys it as ``text:`` + the words, one line of at most 1000.
MAX_TEXT = 900
#: A Host header: a DNS name (labels of 1 to 63 letters, digits and inner hyphens) or an IPv4
#: address, or an IPv6 address in brackets; then an optional port.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(?:(?P<name>{_LABEL}(?:\.{_LABEL})*\.?)|\[(?P<ipv6>[0-9a-f:.]{{2,45}})\])(?::(?P<port>[0-9]{{1,5}}))?")


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
               swap_fraction: float = 0.0, experiment: experiments.Experiment | None = None) -> Starlette:
    """The web app over an open :class:`vsearch.api.Index` (which the caller closes).

    ``allowed_hosts``: the Host header names it answers (``["*"]``: any, for --allow-remote).
    ``swap_fraction``: share of searches shown with one adjacent pair swapped (the click log's
    position-bias measure); :func:`serve` (the page people use) passes the page's, 0.1.
    ``experiment``: an interleaving or split A/B of two configurations
    (:func:`vsearch.serve.experiment.open_experiment`), which searches and clicks then go through.
    """
    routes = [
        Route("/", search_page),
        Route("/duplicates", duplicates_page),
        *DUPLICATE_ROUTES,
        *SEARCH_ROUTES,
        Route("/api/info", guarded(info)),
        Route("/api/search", guarded(search), methods=["POST"]),
        Route("/api/judgment", guarded(judgment), methods=["POST"]),
        Route("/api/event", guarded(event), methods=["POST"]),
        Route("/thumb/{row:int}/{digest}", thumb),
        Route("/image/{row:int}/{digest}", image),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_HostCheck, allowed=allowed_hosts)],
                    exception_handlers={HTTPException: _http_error})
    app.state.experiment = experiment
    app.state.page = PageState(
        LockedIndex(index, swap_fraction),
        ThumbCache(index.index_dir, **({"cap_bytes": thumb_cache_bytes} if thumb_cache_bytes else {})),
        max_upload_bytes=max_upload_bytes, max_upload_pixels=max_upload_pixels)
    return app


# --- the handlers: each finds the open index and the session tokens in the app's state -----------


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route 404, wrong method 405) as JSON, as every other."""
    assert isinstance(exc, HTTPException)  # registered for HTTPException only
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


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
                         "root": str(index.root), "max_upload_bytes": page.max_upload_bytes,
                         **experiments.info(page, experiments.experiment_of(request))})


async def search(request: Request) -> Response:
    """A search, which logs what it shows (so it is a POST): by ``row=`` (an indexed image), by
    ``text=`` (CLIP indexes), or by the image sent as the body (an upload); options in the query."""
    page = state_of(request)
    api = experiments.searcher(request, page)  # page.api, or it answering through the server's experiment
    params = request.query_params
    options = _options(params)
    if "row" in params:
        row = _int(params["row"], "row")
        try:
            path, digest = await run_in_threadpool(api.row_file, row)
        except LookupError:
            return _error(404, f"no image at row {row}")
        hits = await run_in_threadpool(lambda: api.query(queries=path, **options))
        return await run_in_threadpool(_hits, api, hits, digest)
    if "upload" in params:  # /?upload=DIGEST: an upload this session searched by before (Back, Reload)
        session, digest = session_of(request), params["upload"]
        kept = uploads_of(request).get(session, digest) if session else None
        if kept is None:
            return _error(404, "that upload is no longer kept: drop the photo again")
        hits = await run_in_threadpool(lambda: _query_bytes(api, kept, options))
        return await run_in_threadpool(_hits, api, hits, digest)
    if "text" in params:
        text = " ".join(params["text"].split())  # one line: the click log keys it as text:WORDS
        if not text or len(text) > MAX_TEXT:
            return _error(400, f"text= must hold 1 to {MAX_TEXT} characters")
        hits = await run_in_threadpool(lambda: api.query(text=text, **options))
        return await run_in_threadpool(_hits, api, hits, "text:" + text)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > page.max_upload_bytes:
        return _too_large(page.max_upload_bytes)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > page.max_upload_bytes:
            return _too_large(page.max_upload_bytes)
    if not data:
        return _error(400, "give row= (an indexed image), text= (CLIP indexes), or an image's bytes as the "
                           "request body (an upload)")
    pixels = _pixels(bytes(data))
    if pixels is None:
        return _error(400, "the upload is not an image vsearch can read")
    if pixels > page.max_upload_pixels:
        return _error(413, f"the upload has {pixels:,} pixels; the limit is {page.max_upload_pixels:,}")
    hits = await run_in_threadpool(lambda: _query_bytes(api, bytes(data), options))
    digest = library.bytes_digest(bytes(data))
    if (session := session_of(request)) is not None:  # kept, so that /?upload=DIGEST searches by it again
        uploads_of(request).keep(session, digest, bytes(data))
    return await run_in_threadpool(_hits, api, hits, digest)


async def thumb(request: Request) -> Response:
    page = state_of(request)
    row, digest = request.path_params["row"], request.path_params["digest"]
    try:
        path = await run_in_threadpool(_named_file, page.api, row, digest)
        data = await run_in_threadpool(page.thumbs.get, path, digest)
    except (LookupError, VsearchError):
        return _error(404, f"no image at row {row} with that content")
    return Response(data, media_type="image/jpeg", headers={**FILE_HEADERS, "ETag": f'"{digest}-thumb"'})


async def image(request: Request) -> Response:
    page = state_of(request)
    row, digest = request.path_params["row"], request.path_params["digest"]
    try:
        data = await run_in_threadpool(_image_bytes, page.api, row, digest)
    except (LookupError, VsearchError):
        return _error(404, f"no image at row {row} with that content")
    return Response(data, media_type=media_type(data), headers={**FILE_HEADERS, "ETag": f'"{digest}"'})


def _image_bytes(api: LockedIndex, row: int, digest: str) -> bytes:
    """The bytes of the file a URL names, read once (capped, regular files only) and hashed: what
    is sent is exactly the content the URL names, even if the file changes meanwhile."""
    data = read_image_bytes(_named_file(api, row, digest))
    if library.bytes_digest(data) != digest:
        raise LookupError(digest)
    return data


def _named_file(api: LockedIndex, row: int, digest: str) -> Path:
    """The file a thumbnail or image URL names: ``row``, holding the content ``digest``."""
    if not DIGEST.fullmatch(digest):
        raise LookupError(digest)
    return api.file_with(row, digest)


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
    query, label = body.get("query", ""), str(body.get("label", ""))
    if not isinstance(query, str):
        raise VsearchError(f"query must be the query key the search answered with (got {quoted(query)})")
    if label not in ("relevant", "not-relevant"):
        raise VsearchError(f"label must be relevant or not-relevant (got {quoted(label)})")
    shown = await run_in_threadpool(library.latest_shown, index.index_dir, query, digest) if query else None
    done = library.record_verdict(index.index_dir, query, digest, label == "relevant", source="page",
                           rank=shown[1] if shown else None, result_path=rel)
    return JSONResponse({**done.__dict__, "label": label})


async def event(request: Request) -> Response:
    page = state_of(request)
    api, index = page.api, page.api.index
    body = await _json(request)
    handled = await experiments.event(request, page, body)  # time on a result; a click on an interleaved list
    if handled is not None:
        return handled
    kind, query = str(body.get("kind", "")), body.get("query", "")
    if not isinstance(query, str):
        raise VsearchError(f"query must be the query key the search answered with (got {quoted(query)})")
    if kind != "click":  # impressions are logged as the search answers (_hits)
        raise VsearchError(f"kind must be click or dwell (got {quoted(kind)})")
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


def host_name(header: str) -> str | None:
    """The host a ``Host`` header names (lower case, an IPv6 address without brackets), or None
    when it is not exactly ``name[:port]``: ``localhost:8731@evil.example`` is not."""
    found = _HOST.fullmatch(header.lower()) if len(header) <= 300 else None  # a name has at most 253
    if found is None or (found["port"] is not None and not 0 < int(found["port"]) < 65536):
        return None
    if found["ipv6"] is not None:
        try:
            return str(ipaddress.IPv6Address(found["ipv6"]))
        except ValueError:
            return None
    return str(found["name"]).rstrip(".")  # localhost. is localhost


def _address(host: str) -> str:
    """An allowed host as :func:`host_name` gives it: lower case, an IPv6 address unbracketed
    and in its short form."""
    try:
        return str(ipaddress.IPv6Address(host.strip("[]")))
    except ValueError:
        return host.lower()


class _HostCheck:
    """Answer only requests whose Host header is ``name[:port]`` with an allowed name (``*``: any
    name), else 400. Starlette's TrustedHostMiddleware cuts ``[::1]:8000`` at the first colon
    and takes ``localhost:1@evil.example`` for localhost; this parses the header whole."""

    def __init__(self, app: ASGIApp, allowed: Sequence[str]) -> None:
        self.app = app
        self.any = "*" in allowed
        self.allowed = {_address(h) for h in allowed if h != "*"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            name = host_name(Headers(scope=scope).get("host", ""))
            if name is None or not (self.any or name in self.allowed):
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
        options["diverse"] = number(params["diverse"], "diverse must be a number between 0 and 1")
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
    except VsearchError as exc:  # the message names the temporary file: the page says "the upload"
        text = str(exc).replace(f"query image {name}", "the upload").replace(name, "the upload")
        raise VsearchError(text.replace(Path(name).name, "the upload")) from None
    finally:
        Path(name).unlink(missing_ok=True)


def _hits(api: LockedIndex, hits: list[Any], query_key: str) -> JSONResponse:
    """(Run in the thread pool: it reads the manifest and writes the click log.) The results as
    the page shows them, logged as impressions (library.log_impressions): on a
    share of searches one adjacent pair is swapped, to measure position bias.

    A click log that cannot be written (``judgments.sqlite`` damaged, busy, on a full disk) does
    not stop the search: the answer's ``logging`` says why nothing was logged (else it is None).
    An experiment's hits (:class:`vsearch.serve.experiment.Ranked`) log a split's arm with the
    list, or an interleaved list in the interleaving log (as merged: no swap), whose id clicks name.
    """
    root = Path(api.index.root)
    results, query_id, logging = [], None, None
    digests = api.digests_of_rows([h.row for h in hits])
    if hits and None not in digests:
        interleaved = getattr(hits, "interleaved", None)
        try:
            if interleaved is not None:
                query_id = library.log_interleaved(api.index.index_dir, query_key,
                                                   library.Interleaved(tuple(digests), interleaved.teams),  # type: ignore[arg-type]  # no None: checked above
                                                   interleaved.a, interleaved.b)
            else:
                shown = library.log_impressions(api.index.index_dir, query_key, digests,  # type: ignore[arg-type]  # no None: checked above
                                               swap_fraction=api.swap_fraction, arm=getattr(hits, "arm", None))
                hits, digests = [hits[i] for i in shown.order], [digests[i] for i in shown.order]
                query_id = shown.query_id
        except VsearchError as exc:
            logging = f"this search was not logged, and clicks on it will not be: {exc}"
    for rank, (h, digest) in enumerate(zip(hits, digests), start=1):
        results.append({"rank": rank, "score": round(float(h.score), 4), "row": h.row, "digest": digest,
                        "path": h.path.relative_to(root).as_posix() if h.path.is_relative_to(root) else h.path.name,
                        "thumb": f"/thumb/{h.row}/{digest}" if digest else None,
                        "image": f"/image/{h.row}/{digest}" if digest else None})
    return JSONResponse({"query": query_key, "query_id": query_id, "logging": logging, "results": results})


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host`` (a name, an IPv4 address, or an IPv6 one, bracketed or
    not) and ``port`` (0: a free one the system picks), listening.

    Raises :class:`VsearchError` with one line when it cannot: the port in use, an address this
    machine does not have, a port it may not use.
    """
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        family, kind, proto, _, address = socket.getaddrinfo(name or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (OSError, UnicodeError) as exc:
        raise VsearchError(f"cannot listen on {host}: {getattr(exc, 'strerror', None) or exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # as uvicorn does: a restart may bind while old connections wait out TIME_WAIT
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise VsearchError(f"port {port} is in use: --port 0 picks a free one") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise VsearchError(f"cannot listen on {host}: this machine has no such address") from None
        if exc.errno == errno.EACCES:
            raise VsearchError(f"cannot listen on port {port}: permission denied (ports below 1024 need root); "
                               "choose another --port") from None
        raise VsearchError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    """The page's address on a bound socket: ``http://127.0.0.1:8000/``, ``http://[::1]:8000/``."""
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def serve(index: Any, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          swap_fraction: float = library.DEFAULT_SWAP_FRACTION, *,
          ready: Callable[[str], None] | None = None, experiment: experiments.Experiment | None = None) -> None:
    """Serve the app over ``index`` with uvicorn until interrupted (the caller checked ``host``).
    ``experiment``: see :func:`create_app`.

    Binds first (:func:`listen`: a port in use is a :class:`VsearchError`, and nothing was
    served), then calls ``ready`` with the address it is bound to (:func:`url_of`; with
    ``port=0``, the port the system picked), then serves on that very socket.
    """
    import uvicorn  # the server: only serving pays for it

    sock = listen(host, port)
    try:
        hosts = [*LOOPBACK_NAMES, host] if is_loopback(host) else ["*"]  # remote: check_host warned
        app = create_app(index, allowed_hosts=hosts, swap_fraction=swap_fraction, experiment=experiment)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        if ready is not None:
            ready(url_of(sock))
        server.run(sockets=[sock])
        app.state.page.searches.close()  # the duplicates page's search, if one runs, ends before the index closes
    finally:
        sock.close()
