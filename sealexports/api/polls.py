"""Status polls on a path of their own: `GET /api/v1/exports/{job_id}` answered before Litestar's
router, middleware and dependency injection, with the key, the site and the job read on the
event loop, when the request is the usual one.

Clients poll this route in a loop while their export runs. Through Litestar, a poll cost the
event loop about three times a bare route's time (a hop to a reader thread, four middleware
layers, the dependencies), which capped polls at 0.29 of a bare app's rate. Here it is one
indexed read (on a connection that never waits for a lock, remembered until another connection
commits) and the same functions that make the answer through Litestar: 0.75 idle.

Anything else goes on to Litestar, which answers as it always does: an error of any kind, a key
whose plan the rate limiter does not hold in memory or whose window is full, a write due (a key's
use to record, a link to expire), a busy database, a CORS request, other query parameters.
The answer is Litestar's own, header for header (tests/test_polls.py compares them).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from dataclasses import dataclass, field
from typing import cast

import msgspec
from litestar.datastructures import URL
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    Receive,
    Scope,
    Send,
)

from sealexports.api.auth import api_key
from sealexports.api.exports import job_for
from sealexports.api.limits import KeyBudgets, raw_headers
from sealexports.api.params import site_slug
from sealexports.errors import SealExportsError
from sealexports.jobs import lifecycle
from sealexports.services import Services
from sealexports.storage.accounts import key_hash, use_is_due
from sealexports.storage.database import ConnectionPerThread, data_version
from sealexports.storage.export_jobs import JobRecord, readable_job

PREFIX = "/api/v1/exports/"
TEMPLATE = "/api/v1/exports/{job_id}"  # the route's, as Litestar labels it in the metrics
# The query strings taken here: site_id or account_id, or both, plain slugs.
_QUERY = re.compile(
    r"(?:(site_id|account_id)=([A-Za-z0-9._~-]+))(?:&(site_id|account_id)=([A-Za-z0-9._~-]+))?"
)
_JSON = (b"content-type", b"application/json")
REMEMBERED = 10_000  # reads remembered at most (all forgotten at once past it)


_BASES = 8  # JSON bodies remembered a read, one a base URL


@dataclass
class _Seen:
    """What `readable_job` read when `PRAGMA data_version` was `version`, and the job's JSON
    for each base URL asked since."""

    version: int
    found: tuple[JobRecord, str | None] | None
    bodies: dict[str, bytes] = field(default_factory=dict)


class StatusPolls:
    """ASGI wrapper, inside the access log (which logs and counts these polls as any request)."""

    def __init__(self, app: ASGIApp, services: Services, budgets: KeyBudgets) -> None:
        self.app = app
        self.services = services
        self.budgets = budgets
        # The event loop's: its queries never wait for a lock (a busy database goes to Litestar).
        self.db = ConnectionPerThread(services.settings.database, busy_timeout_ms=0)
        self._seen: dict[tuple[str, str, str], _Seen] = {}  # (key, site, job) -> what was read
        self._version: tuple[asyncio.AbstractEventLoop, int] | None = None  # this turn's

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = None
        if scope["type"] == ScopeType.HTTP and scope["method"] == "GET":
            answer = self._answer(scope)
        if answer is None:
            await self.app(scope, receive, send)
            return
        headers, body = answer
        scope["path_template"] = TEMPLATE
        await send(HTTPResponseStartEvent(type="http.response.start", status=200, headers=headers))
        await send(HTTPResponseBodyEvent(type="http.response.body", body=body, more_body=False))

    def _answer(self, scope: HTTPScope) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        job_id = path[len(PREFIX) :] if path.startswith(PREFIX) else ""
        query = _query(scope["query_string"])
        key = api_key(scope)
        if not job_id or "/" in job_id or query is None or key is None or _has_origin(scope):
            return None
        plan = self.budgets.cached_plan(key)
        if plan is None:
            return None
        try:
            body = self._body(key, job_id, query, scope)
        except (SealExportsError, sqlite3.OperationalError):  # Litestar answers, or waits its turn
            return None
        if body is None:
            return None
        allowed, limits = self.budgets.take(key, plan)
        if not allowed:
            return None
        # X-Request-ID comes from Litestar's before_send hook, which wraps `send` for every request.
        return [_JSON, (b"content-length", str(len(body)).encode()), *raw_headers(limits)], body

    def _body(self, key: str, job_id: str, query: dict[str, str], scope: HTTPScope) -> bytes | None:
        """The job's JSON as GET /exports/{job_id} answers it, from one read; None where that
        read would write, or refuse. A read, and the JSON made from it for a base URL, are
        remembered until another connection commits (`PRAGMA data_version`, read first: a
        commit after it only makes the next poll read again)."""
        conn = self.db.get()
        version = self._data_version(conn)
        slug = site_slug(query.get("site_id"), query.get("account_id"))
        seen = self._seen.get((key, slug, job_id))
        if seen is None or seen.version != version:
            if len(self._seen) >= REMEMBERED:
                self._seen.clear()
            seen = self._seen[(key, slug, job_id)] = _Seen(
                version, readable_job(conn, key_hash(key), slug, job_id)
            )
        if seen.found is None:
            return None
        job, last_used_at = seen.found
        if use_is_due(last_used_at) or lifecycle.is_due(job):
            return None
        base = str(_base_url(scope))
        body = seen.bodies.get(base)
        if body is None:
            if len(seen.bodies) >= _BASES:  # Host headers are the client's to choose
                seen.bodies.clear()
            body = seen.bodies[base] = msgspec.json.encode(job_for(self.services, job, base))
        return body

    def _data_version(self, conn: sqlite3.Connection) -> int:
        """`PRAGMA data_version`, read once per turn of the event loop: the polls one turn runs
        share it. A poll is never older than its turn's first: a commit made while the turn runs
        is seen from the next one on. And a client sees its own writes: the response to its
        write goes out at least one turn after the commit (the handler resumes from its thread
        in a later turn), so the client's next poll runs in a later turn still."""
        loop = asyncio.get_running_loop()
        if self._version is None or self._version[0] is not loop:
            self._version = (loop, data_version(conn))
            loop.call_soon(self._next_turn)
        return self._version[1]

    def _next_turn(self) -> None:
        self._version = None


def _query(raw: bytes) -> dict[str, str] | None:
    if not raw:
        return {}
    match = _QUERY.fullmatch(raw.decode("latin-1"))
    if match is None:
        return None
    names = match.group(1, 3)
    if names[0] == names[1]:
        return None  # a repeated parameter: Litestar decides
    return {name: value for name, value in zip(names, match.group(2, 4), strict=True) if name}


def _has_origin(scope: HTTPScope) -> bool:
    return any(name.lower() == b"origin" for name, _ in scope["headers"])


def _base_url(scope: HTTPScope) -> URL:
    """The request's base URL, as Litestar's `Request.base_url` makes it."""
    return URL.from_scope(cast("HTTPScope", {**scope, "path": "/", "query_string": b""}))
