"""The one place that turns errors into HTTP: status codes, the error body, X-Request-ID.

Every non-2xx body is {"detail", "error": {"code", "message", "detail"}, "request_id"}.
"""

from __future__ import annotations

import logging
import random
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import Message, Scope

from sealexports import errors

log = logging.getLogger(__name__)

STATUS: dict[type[errors.SealExportsError], int] = {
    errors.InvalidRequest: 422,
    errors.NotFound: 404,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.Expired: 410,
    errors.TooLarge: 413,
    errors.LimitReached: 429,
    errors.Conflict: 409,
    errors.UnsupportedMediaType: 415,
    errors.NotInstalled: 501,  # the server lacks an optional part (pyarrow for parquet)
    errors.PreconditionFailed: 412,
    errors.RangeNotSatisfiable: 416,
    errors.Unavailable: 503,
    # The request asks for more work than one request may do (like a regex too slow on a value):
    # a 4xx, since the same request will time out again; the message says what to change.
    errors.QueryTimeout: 422,
    # Stopped by a shutdown (or a client that hung up and will not read this): try again.
    errors.Interrupted: 503,
}
_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 412: "precondition_failed", 413: "too_large",
          415: "unsupported_media_type", 416: "range_not_satisfiable", 422: "invalid_request",
          429: "rate_limited", 500: "internal_error", 501: "not_implemented", 503: "unavailable"}  # fmt: skip
RETRY_AFTER_SECONDS = 5  # for a limit that gives no time of its own (running exports finish)
_INCOMING_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id(scope: Scope) -> str:
    """The request's id: the caller's X-Request-ID if sane, else a new one; fixed per request."""
    state = scope.setdefault("state", {})
    rid = state.get("request_id")
    if rid is None:
        incoming = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        # Random, not secret: a correlation id needs no system entropy (uuid4: a syscall a request).
        rid = incoming if _INCOMING_ID.match(incoming) else f"{random.getrandbits(128):032x}"
        state["request_id"] = rid
    return str(rid)


async def add_request_id(message: Message, scope: Scope) -> None:
    """before_send hook: every response carries X-Request-ID."""
    if message["type"] == "http.response.start":
        header = (b"x-request-id", request_id(scope).encode())
        message["headers"] = [*message.get("headers", ()), header]


def error_response(
    request: Request[Any, Any, Any],
    status: int,
    message: str,
    *,
    code: str | None = None,
    detail: Any = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    rid = request_id(request.scope)
    body = {
        "detail": message,
        "error": {"code": code or _CODES.get(status, "error"), "message": message, "detail": detail},
        "request_id": rid,
    }
    return Response(body, status_code=status, headers=headers)


def domain_error(request: Request[Any, Any, Any], exc: errors.SealExportsError) -> Response[Any]:
    status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
    headers = None
    if isinstance(exc, errors.LimitReached):
        headers = {"Retry-After": str(exc.retry_after or RETRY_AFTER_SECONDS)}
    elif isinstance(exc, errors.RangeNotSatisfiable):  # RFC 9110 15.5.17: the file's current length
        headers = {"Content-Range": f"bytes */{exc.size}", "Accept-Ranges": "bytes"}
    return error_response(request, status, exc.message, code=exc.code, detail=exc.detail, headers=headers)


def validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar's body and parameter validation: 422, listing each bad field."""
    problems = [
        errors.Problem(e.get("key"), str(e.get("message")))
        for e in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(e, dict)
    ]
    message = "; ".join(map(str, problems)) if problems else exc.detail
    return error_response(request, 422, message, detail=[p.detail() for p in problems] or None)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    headers = dict(exc.headers or {})
    message = exc.detail
    if exc.status_code == 429 and "X-RateLimit-Reset" in headers:
        headers["Retry-After"] = headers["X-RateLimit-Reset"]
        message = f"rate limit of {headers.get('X-RateLimit-Limit')} requests per minute reached for this key"
    return error_response(request, exc.status_code, message, headers=headers or None)


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # The route's template, not the path: a download link's path holds its token.
    route = request.scope.get("path_template") or "?"
    log.exception("unhandled error in %s %s", request.method, route, exc_info=exc)
    return error_response(request, 500, "internal server error")


def recursion_error(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    """msgspec refuses JSON nested deeper than the interpreter's recursion limit (a 2 KB body of
    `[` does it) with a RecursionError: bad input, not a server fault."""
    if "while deserializing" in str(exc):
        return error_response(request, 400, "JSON is nested too deeply")
    return internal_error(request, exc)


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    errors.SealExportsError: domain_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    RecursionError: recursion_error,
    Exception: internal_error,
}
