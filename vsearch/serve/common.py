"""What every handler of the page shares: the app's state, the POST checks (CSRF token, same
origin) with the JSON error answer, and the checks of request values."""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from vsearch import api as library
from vsearch.errors import VsearchError
from vsearch.serve.state import PageState

CSRF_COOKIE, CSRF_HEADER = "vsearch_csrf", "x-csrf-token"
#: A JSON request body larger than this is refused: the page never sends more.
MAX_JSON_BYTES = 1024 * 1024
#: Arrays and objects nested deeper than this are refused: the page's bodies are 3 deep.
MAX_JSON_DEPTH = 16
#: The whole numbers a request may carry: SQLite's INTEGER (a signed 64-bit int).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: A whole number as a query string spells it (at most 19 digits, so parsing it is cheap).
_DIGITS = re.compile(r"[+-]?[0-9]{1,19}")
#: A lone UTF-16 surrogate: JSON's ``"\udc80"`` parses to one, and no UTF-8 text (SQLite, an
#: answer) can hold it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def error(status: int, message: str) -> JSONResponse:
    """The answer to a request that cannot be served: ``{"error": message}`` with ``status``."""
    # A message that quotes a request value must still encode as UTF-8 (the answer would fail).
    return JSONResponse({"error": message.encode("utf-8", "backslashreplace").decode("utf-8")}, status_code=status)


def quoted(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: what an error message quotes of a request."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def whole_number(value: Any, name: str) -> int:
    """``value`` as an int in SQLite's range (:data:`INT64_MIN` .. :data:`INT64_MAX`): an int, a
    float with no fraction, or a string of digits. :class:`VsearchError` (a 400) naming ``name``
    for anything else: a bool, NaN, an infinity (JSON's ``Infinity``, ``1e400``), a fraction."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip())
    if number is None or not INT64_MIN <= number <= INT64_MAX:
        raise VsearchError(f"{name} must be a whole number (got {quoted(value)})")
    return number


def number(value: Any, message: str) -> float:
    """``value`` (a number, or a string that spells one) as a finite float; :class:`VsearchError`
    (a 400), ``message`` and the value, for anything else (NaN, an infinity, ``1e400``, a bool)."""
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        result = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int too large for a float
        result = math.nan
    if not math.isfinite(result):
        raise VsearchError(f"{message} (got {quoted(value)})")
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)  # NaN, Infinity, -Infinity: not JSON, though Python's parser takes them


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise ValueError(text)
    return value


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; :class:`VsearchError` (a 400) for anything else.

    Strict: UTF-8 only, at most :data:`MAX_JSON_BYTES`, nested at most :data:`MAX_JSON_DEPTH`
    deep, no ``NaN`` or infinity (``Infinity``, ``1e400``), no lone surrogate in a string.
    """
    body = await request.body()
    if len(body) > MAX_JSON_BYTES:
        raise VsearchError("request body too large")
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite)
    except (ValueError, RecursionError):  # RecursionError: "[" nested past Python's stack
        raise VsearchError("the request body must be JSON (UTF-8, finite numbers)") from None
    if not isinstance(data, dict):
        raise VsearchError("the request body must be a JSON object")
    _check_values(data)
    return data


def _check_values(data: Any) -> None:
    """Refuse nesting past :data:`MAX_JSON_DEPTH` and strings with a lone surrogate (an iterative
    walk: the body may be as deep as the parser allowed)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise VsearchError(f"the request body is nested too deep (at most {MAX_JSON_DEPTH} levels)")
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
        elif isinstance(value, str) and _SURROGATE.search(value):
            raise VsearchError("the request body holds a lone surrogate (\\ud800-\\udfff): "
                               "strings must be Unicode text")


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
    try:
        parts = urlsplit(origin)
    except ValueError:  # "http://[bad": not a URL at all
        return error(403, "cross-origin request refused: the Origin or Referer is not a URL")
    if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.lower():
        return error(403, f"cross-origin request refused: {parts.scheme}://{parts.netloc} is not this server")
    cookie, header = request.cookies.get(CSRF_COOKIE), request.headers.get(CSRF_HEADER)
    if not header or cookie not in tokens or not secrets.compare_digest(header, cookie or ""):
        return error(403, "missing or wrong CSRF token: reload the page")
    return None


def media_type(data: bytes) -> str:
    """The type to send a photo as, from its header (Pillow's format name), else a plain download."""
    try:
        kind = str(library.read_header(data).format or "").lower()
    except Exception:  # noqa: BLE001 - any failure to parse a header: send it as bytes
        kind = ""
    return f"image/{kind}" if kind in ("jpeg", "png", "gif", "webp", "bmp", "tiff", "avif", "heif") \
        else "application/octet-stream"
