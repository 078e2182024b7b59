"""What every handler of the page shares: the app's state, the POST checks (CSRF token, same
origin) with the JSON error answer, and the checks of request values."""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from vsearch.errors import VsearchError
from vsearch.serve.state import PageState

CSRF_COOKIE, CSRF_HEADER = "vsearch_csrf", "x-csrf-token"
#: A JSON request body larger than this is refused: the page never sends more.
MAX_JSON_BYTES = 1024 * 1024


def error(status: int, message: str) -> JSONResponse:
    """The answer to a request that cannot be served: ``{"error": message}`` with ``status``."""
    return JSONResponse({"error": message}, status_code=status)


def whole_number(value: Any, name: str) -> int:
    """``value`` as an int; :class:`VsearchError` (a 400) naming ``name`` when it is not one."""
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise VsearchError(f"{name} must be a whole number (got {value!r})") from None


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; :class:`VsearchError` (a 400) for anything else."""
    body = await request.body()
    if len(body) > MAX_JSON_BYTES:
        raise VsearchError("request body too large")
    try:
        data = json.loads(body)
    except ValueError:
        raise VsearchError("the request body must be JSON") from None
    if not isinstance(data, dict):
        raise VsearchError("the request body must be a JSON object")
    return data


def state_of(request: Request) -> PageState:
    """What the app shares between requests (see :class:`~vsearch.serve.state.PageState`)."""
    state: PageState = request.app.state.page
    return state


Handler = Callable[[Request], Awaitable[Response]]


def guarded(handler: Handler) -> Handler:
    """``handler`` behind the POST checks (:func:`refuse_post`), with a library error as a 400."""
    async def run(request: Request) -> Response:
        if request.method == "POST":
            refusal = refuse_post(request, state_of(request).tokens)
            if refusal is not None:
                return refusal
        try:
            return await handler(request)
        except VsearchError as exc:
            return error(400, str(exc))
    run.__name__ = run.__qualname__ = handler.__name__
    return run


def refuse_post(request: Request, tokens: dict[str, None]) -> Response | None:
    """403 unless the request comes from this server's own page with its session's token."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host")
    if not origin or not host:
        return error(403, "cross-origin request refused: no Origin or Referer header")
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.lower():
        return error(403, f"cross-origin request refused: {parts.scheme}://{parts.netloc} is not this server")
    cookie, header = request.cookies.get(CSRF_COOKIE), request.headers.get(CSRF_HEADER)
    if not header or cookie not in tokens or not secrets.compare_digest(header, cookie or ""):
        return error(403, "missing or wrong CSRF token: reload the page")
    return None
