"""Per-key request rate limits by plan, on Litestar's RateLimitMiddleware and RateLimitConfig
(route exclusions, TooManyRequestsException, the X-RateLimit-* headers).

Counted per key in fixed one-minute windows, in memory, with the limit of the key's plan. A
429 also has Retry-After (added where the error body is built).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from litestar.exceptions import TooManyRequestsException
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.rate_limit import DURATION_VALUES, RateLimitConfig, RateLimitMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from sealexports.api.auth import api_key
from sealexports.api.threads import read
from sealexports.errors import Unauthorized
from sealexports.services import Services
from sealexports.storage.accounts import authenticate

PLAN_CACHE_SECONDS = 30.0
# Anchored: Litestar searches these anywhere in the path, so "/healthz" alone also exempted
# GET /api/v1/exports/healthz (a job id) and gave any key unmetered requests.
UNLIMITED = ("^/schema(/|$)", "^/healthz$", "^/metrics$", "^/api/v1/exports/download/")


class KeyBudgets:
    """Each key's plan (remembered for a while, so most requests need no query) and window."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._plans: dict[str, tuple[str | None, float]] = {}
        # key -> [requests so far, window end]; here, not on the middleware: Litestar makes a
        # middleware instance per route, and a key's budget covers every route.
        self.windows: dict[str, list[int]] = {}

    def cached_plan(self, key: str) -> str | None:
        """The key's plan if it is remembered (None: unknown, or not remembered now)."""
        cached = self._plans.get(key)
        return cached[0] if cached is not None and cached[1] > time.monotonic() else None

    async def plan(self, key: str) -> str | None:
        if (plan := self.cached_plan(key)) is not None:
            return plan
        plan = await read(lambda: self._lookup(key))
        if len(self._plans) > 10_000:
            self._plans.clear()
        self._plans[key] = (plan, time.monotonic() + PLAN_CACHE_SECONDS)
        return plan

    def take(self, key: str, plan: str) -> tuple[bool, dict[str, str]]:
        """Count a request of `key` in its window if its plan's limit allows (True), and the
        X-RateLimit-* headers to answer with. Call it with no await until the request is counted
        or refused: one event loop needs no lock."""
        limit = self.services.settings.plans[plan].requests_per_minute
        now = int(time.time())
        window = self.windows.get(key)
        if window is None or window[1] <= now:
            if len(self.windows) > 100_000:
                for stale in [k for k, w in self.windows.items() if w[1] <= now]:
                    del self.windows[stale]
            window = self.windows[key] = [0, now + DURATION_VALUES["minute"]]
        count, reset = window
        headers = _headers(limit, max(0, limit - count - 1), reset - now)
        if count >= limit:
            headers["X-RateLimit-Remaining"] = "0"
            return False, headers
        window[0] = count + 1
        return True, headers

    def _lookup(self, key: str) -> str | None:
        try:
            return authenticate(self.services.db.get(), key).plan
        except Unauthorized:
            return None  # not throttled here: the handler answers 401


class PlanRateLimitMiddleware(RateLimitMiddleware):
    """Litestar's rate limiting, with the limit of the plan of the request's key (one middleware
    for every plan), and a count per window rather than the time of every request (Litestar's
    history list is decoded and encoded whole on each request: O(limit) at 10,000 a minute).
    The window is Litestar's: it opens with the first request and resets after a minute."""

    def __init__(self, app: ASGIApp, config: RateLimitConfig) -> None:
        super().__init__(app, config)
        self.budgets: KeyBudgets = config.budgets  # type: ignore[attr-defined]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = api_key(scope)
        plan = None if key is None else await self.budgets.plan(key)
        if key is None or plan is None:  # no or unknown key: the handler answers 401
            await self.app(scope, receive, send)
            return
        allowed, headers = self.budgets.take(key, plan)
        if not allowed:
            raise TooManyRequestsException(headers=headers)
        extra = raw_headers(headers)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


def _headers(limit: int, remaining: int, reset: int) -> dict[str, str]:
    return {
        "X-RateLimit-Policy": f"{limit}; w=60",
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset),
    }


@dataclass
class PlanRateLimitConfig(RateLimitConfig):
    budgets: KeyBudgets | None = None


def rate_limits(budgets: KeyBudgets) -> list[DefineMiddleware]:
    config = PlanRateLimitConfig(
        rate_limit=("minute", 1),  # unused: each key gets its plan's limit
        exclude=list(UNLIMITED),
        middleware_class=PlanRateLimitMiddleware,
        budgets=budgets,
    )
    return [config.middleware]
