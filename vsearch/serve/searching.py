"""What the search page needs besides the search itself: its own files (stylesheet, script,
icon), the uploads a session searched by (so ``/?upload=DIGEST`` survives Back and Reload), the
details of one photo for the large view, the judgments already recorded for a query, and the
"is this already in my library?" check.

Same rules as the rest of the app (see ``app.py``): a GET only reads; the library check is a
POST behind the CSRF token; photos are named by row and content digest, never by a path from the
request; an upload is capped in bytes and pixels before anything decodes it, and the check
writes it only into a private temporary folder outside the photo folder, always removed; it is
never added to the index.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vsearch import api as library
from vsearch import atomic
from vsearch.errors import VsearchError
from vsearch.serve.common import CSRF_COOKIE, error, guarded, media_type, quoted, state_of, whole_number
from vsearch.serve.state import LockedIndex, PageState

__all__ = ["SEARCH_ROUTES", "UploadStore", "read_upload", "static_text", "uploads_of"]

#: The page's own files, served from the installed package (no CDN: the page works offline).
STATIC = resources.files("vsearch.serve") / "static"
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml", ".html": "text/html; charset=utf-8"}
#: A static file's name as a URL gives it: no folder, no dot file, a known type.
STATIC_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,60}\.(?:css|js|svg)")
#: A content digest as a URL names it (as app.DIGEST).
DIGEST = re.compile(r"[0-9a-f]{16,128}")
#: Bytes of uploads kept for Back and Reload, over every session; the oldest go first past it.
UPLOADS_BYTES = 128 * 1024 * 1024
#: Uploads kept per session at most (the oldest go first).
UPLOADS_PER_SESSION = 32
#: What a file's header format is named as on disk, so the library's folder scan takes it.
SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif",
            "HEIF": ".heic", "AVIF": ".avif", "MPO": ".jpg"}
#: Levels the library check offers (those of ``Index.against``).
LEVELS = ("exact", "near", "similar")
#: Served files name their content (row and digest): they may be kept; nothing else may be sniffed.
FILE_HEADERS = {"Cache-Control": "private, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}


def static_text(name: str) -> str:
    """The text of one of the page's files (``search.html``, ``style.css``, ...)."""
    return (STATIC / name).read_text(encoding="utf-8")


class UploadStore:
    """Uploads searched by, per session (its CSRF cookie), in memory and bounded: what makes
    ``/?upload=DIGEST`` a URL that Back, Forward, Reload and another tab of the same browser
    can search by again. Nothing is written to disk; a restart forgets them."""

    def __init__(self, cap_bytes: int = UPLOADS_BYTES, per_session: int = UPLOADS_PER_SESSION) -> None:
        self.cap_bytes, self.per_session = cap_bytes, per_session
        self._kept: OrderedDict[tuple[str, str], bytes] = OrderedDict()  # (session, digest): oldest first
        self._lock = threading.Lock()

    def keep(self, session: str, digest: str, data: bytes) -> None:
        """Keep ``data`` (whose content digest is ``digest``) for ``session``."""
        with self._lock:
            self._kept.pop((session, digest), None)
            self._kept[(session, digest)] = data
            mine = [key for key in self._kept if key[0] == session]
            for key in mine[:max(0, len(mine) - self.per_session)]:
                del self._kept[key]
            while sum(len(v) for v in self._kept.values()) > self.cap_bytes and len(self._kept) > 1:
                self._kept.popitem(last=False)

    def get(self, session: str, digest: str) -> bytes | None:
        """The upload ``digest`` of ``session``, or None when it was never kept or was forgotten."""
        with self._lock:
            data = self._kept.get((session, digest))
            if data is not None:
                self._kept.move_to_end((session, digest))
            return data


def uploads_of(request: Request) -> UploadStore:
    """The app's :class:`UploadStore` (made on first use)."""
    store: UploadStore | None = getattr(request.app.state, "uploads", None)
    if store is None:
        store = request.app.state.uploads = UploadStore()
    return store


def session_of(request: Request) -> str | None:
    """The session (its CSRF cookie) of a request, when the server made it."""
    token = request.cookies.get(CSRF_COOKIE)
    return token if token is not None and token in state_of(request).tokens else None


async def read_upload(request: Request, page: PageState) -> bytes | Response:
    """The request body as an image upload, or the 4xx answer: refused past the byte cap while
    it streams (413), empty or not an image (400), past the pixel cap (413), nothing decoded."""
    declared = request.headers.get("content-length")
    cap = page.max_upload_bytes
    too_large = error(413, f"the upload is larger than the limit of {cap // (1024 * 1024)} MiB ({cap:,} bytes)")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        return too_large
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > cap:
            return too_large
    if not data:
        return error(400, "send a photo's bytes as the request body")
    try:
        pixels = int(library.read_header(bytes(data)).pixels)
    except Exception:  # noqa: BLE001 - any failure to parse a header means "not an image"
        return error(400, "the upload is not an image vsearch can read")
    if pixels > page.max_upload_pixels:
        return error(413, f"the upload has {pixels:,} pixels; the limit is {page.max_upload_pixels:,}")
    return bytes(data)


def private_folder(api: LockedIndex) -> Path:
    """A new folder only this user may read, outside the photo folder (an upload written inside
    it would sit among the photos); the caller removes it."""
    root = Path(api.index.root).resolve()
    parent = Path(tempfile.gettempdir()).resolve()
    if parent.is_relative_to(root):
        parent = Path(api.index.index_dir).resolve()
        if parent.is_relative_to(root):
            raise VsearchError("no place outside the photo folder for the upload: set TMPDIR to another folder")
    return Path(tempfile.mkdtemp(prefix="vsearch-check-", dir=parent))  # mode 0700


# --- the handlers ---------------------------------------------------------------------------


async def static_file(request: Request) -> Response:
    name = request.path_params["name"]
    if not STATIC_NAME.fullmatch(name) or not (STATIC / name).is_file():
        return error(404, f"no such file: {quoted(name)}")
    data = (STATIC / name).read_bytes()
    # no-cache: the browser asks again (a cheap 200) so a new version of the page is never mixed with an old script
    return Response(data, media_type=STATIC_TYPES[Path(name).suffix],
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


async def favicon(request: Request) -> Response:
    return Response((STATIC / "favicon.svg").read_bytes(), media_type="image/svg+xml",
                    headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})


async def kept_upload(request: Request) -> Response:
    """An upload this session searched by (the query panel shows it)."""
    digest, session = request.path_params["digest"], session_of(request)
    data = uploads_of(request).get(session, digest) if session and DIGEST.fullmatch(digest) else None
    if data is None:
        return error(404, "no such upload in this session")
    return Response(data, media_type=media_type(data),
                    headers={**FILE_HEADERS, "Cache-Control": "private, max-age=86400"})


async def photo(request: Request) -> Response:
    """One indexed photo's details for the large view and the query panel: by ``row`` and
    ``digest`` (404 when that row does not hold it), or by ``digest`` alone: whether the library
    holds these bytes (``path`` None when it does not)."""
    api = state_of(request).api
    params = request.query_params
    digest = params.get("digest", "")
    if not DIGEST.fullmatch(digest):
        return error(400, "digest= must be a content digest (hex)")
    try:
        if "row" in params:
            row = whole_number(params["row"], "row")
        else:
            row = await run_in_threadpool(_row_of_digest, api, digest)
        path = await run_in_threadpool(api.file_with, row, digest)
    except LookupError:
        if "row" in params:
            return error(404, f"no image at row {params['row']} with that content")
        # Asked by content alone, "not held" is an answer (an upload that is new), not an error.
        return JSONResponse({"row": None, "digest": digest, "path": None})
    details = await run_in_threadpool(library.photo_details, path)
    root = Path(api.index.root).resolve()
    return JSONResponse({"row": row, "digest": digest, "path": path.relative_to(root).as_posix(),
                         "bytes": details.bytes, "width": details.width, "height": details.height,
                         "format": details.format, "taken": details.taken.isoformat() if details.taken else None,
                         "thumb": f"/thumb/{row}/{digest}", "image": f"/image/{row}/{digest}"})


def _row_of_digest(api: LockedIndex, digest: str) -> int:
    with api.lock:
        entry = api.index.entry_of_digest(digest)
    if entry is None or entry.row is None:
        raise LookupError(digest)
    return int(entry.row)


async def judged(request: Request) -> Response:
    """The verdicts recorded for ``query`` (a query key as a search answered it), newest per
    result: ``{"judged": {digest: "relevant" | "not-relevant"}}``, so the page shows them again."""
    query = request.query_params.get("query", "")
    if not query or len(query) > 1000 or "\n" in query:
        return error(400, "query= must be the query key the search answered with")
    index_dir = state_of(request).api.index.index_dir
    verdicts = await run_in_threadpool(library.read_judgments, index_dir)
    return JSONResponse({"judged": {j.result: j.label for j in verdicts if j.query == query}})


async def library_check(request: Request) -> Response:
    """Whether the library already holds the photo sent as the body (one photo a request: the
    page sends each of several in turn), as ``vsearch duplicates --against`` answers it:
    ``status`` present (with the ``level`` and the ``match``), new or unreadable."""
    page = state_of(request)
    level = request.query_params.get("level", "near")
    if level not in LEVELS:
        raise VsearchError(f"level must be one of {', '.join(LEVELS)} (got {quoted(level)})")
    data = await read_upload(request, page)
    if isinstance(data, Response):
        return data
    result = await run_in_threadpool(_check, page.api, data, level)
    answer: dict[str, Any] = {"status": result.status, "level": result.level, "reason": result.reason,
                              "score": None if result.score is None else round(float(result.score), 4),
                              "match": None}
    if result.status == "present" and result.row is not None:
        try:
            path, digest = await run_in_threadpool(page.api.row_file, int(result.row))
        except LookupError:  # the match went since: say what the library said, without a picture
            pass
        else:
            rel = path.relative_to(Path(page.api.index.root).resolve()).as_posix()
            answer["match"] = {"row": result.row, "digest": digest, "path": rel,
                               "thumb": f"/thumb/{result.row}/{digest}", "image": f"/image/{result.row}/{digest}"}
    return JSONResponse(answer)


def _check(api: LockedIndex, data: bytes, level: str) -> Any:
    """``Index.against`` over a private folder holding only ``data``, removed whatever happens."""
    try:
        fmt = str(library.read_header(data).format or "")
    except Exception:  # noqa: BLE001 - read_upload parsed it already; a second failure is not an image either
        raise VsearchError("the upload is not an image vsearch can read") from None
    folder = private_folder(api)
    try:
        name = folder / f"upload{SUFFIXES.get(fmt.upper(), '.jpg')}"
        atomic.write_bytes(name, data)  # a full disk is an IndexWriteError (a 400), not a 500
        with api.lock:
            results = api.index.against(folder, level=level)
    except VsearchError as exc:  # the message names the temporary file: the page says "the upload"
        raise VsearchError(str(exc).replace(str(folder), "the upload")) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if len(results) != 1:
        raise VsearchError("the upload is not an image vsearch can read")
    result = results[0]
    if result.reason:  # why it could not be read, naming the temporary file: say "the upload"
        result = dataclasses.replace(result, reason=result.reason.replace(str(name), "the upload")
                                     .replace(str(folder), "the upload"))
    return result


SEARCH_ROUTES = [
    Route("/static/{name}", static_file),
    Route("/favicon.ico", favicon),
    Route("/upload/{digest}", kept_upload),
    Route("/api/photo", guarded(photo)),
    Route("/api/judged", guarded(judged)),
    Route("/api/library-check", guarded(library_check), methods=["POST"]),
]
