"""The access log and the request counter, around the whole application (404s included).

One line a request, after its response: method, path, status, time taken, with the request's
X-Request-ID in the line's context (and in every other line logged while it ran). Download
tokens are secrets in the path: the log shows `/api/v1/exports/download/***`.
"""

from __future__ import annotations

import logging
import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from sealexports import logs, metrics
from sealexports.api.errors import request_id

log = logging.getLogger("sealexports.access")
SECRET_AFTER = "/download/"


def masked(path: str) -> str:
    """The path as it may be logged: everything after `/download/` replaced by ***. Not only
    after `/api/v1/exports/download/`: the router also takes `/api/v1//exports//download/...`."""
    at = path.find(SECRET_AFTER)
    return path if at < 0 else path[: at + len(SECRET_AFTER)] + "***"


class AccessLog:
    """ASGI wrapper: sets the request's log context, logs the line, counts the request."""

    def __init__(self, app: ASGIApp, *, count: bool) -> None:
        self.app = app
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        token = logs.set_context(request_id=request_id(scope))
        if not (self.count or log.isEnabledFor(logging.INFO)):  # nothing to write down
            try:
                await self.app(scope, receive, send)
            finally:
                logs.reset_context(token)
            return
        method, path = scope["method"], scope["path"]  # routing may rewrite the path
        started = time.perf_counter()
        status = 500  # unless a response starts

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                fields = {
                    "client": client[0] if client else "-",
                    "method": method,
                    "path": masked(path),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                }
                log.info('%(client)s "%(method)s %(path)s" %(status)d %(duration_ms).1f ms', fields,
                         extra={"fields": fields})  # fmt: skip
            if self.count:
                route = scope.get("path_template") or "unmatched"
                metrics.requests.labels(route, method, str(status)).inc()
            logs.reset_context(token)
