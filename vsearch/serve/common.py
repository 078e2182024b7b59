"""What every handler of the page shares: the JSON error answer and the checks of request values."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from vsearch.errors import VsearchError

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
