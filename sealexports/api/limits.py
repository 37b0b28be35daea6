"""Per-key request rate limits by plan, on Litestar's own RateLimitMiddleware.

One middleware per plan; each throttles only the keys whose account is on its plan, counting
per key. Responses carry X-RateLimit-Limit/-Remaining/-Reset; a 429 also has Retry-After
(added where the error body is built).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import anyio
from litestar import Request
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig

from sealexports.api.auth import api_key
from sealexports.api.services import Services
from sealexports.errors import Unauthorized
from sealexports.storage.accounts import authenticate

PLAN_CACHE_SECONDS = 30.0
# Anchored: Litestar searches these anywhere in the path, so "/healthz" alone also exempted
# GET /api/v1/exports/healthz (a job id) and gave any key unmetered requests.
UNLIMITED = ("^/schema(/|$)", "^/healthz$", "^/api/v1/exports/download/")


class KeyPlans:
    """The plan of each key's account, remembered for a while so that most requests need no query."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._plans: dict[str, tuple[str | None, float]] = {}

    async def plan(self, request: Request[Any, Any, Any]) -> str | None:
        key = api_key(request)
        if key is None:
            return None
        cached = self._plans.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        plan = await anyio.to_thread.run_sync(self._lookup, key)
        if len(self._plans) > 10_000:
            self._plans.clear()
        self._plans[key] = (plan, time.monotonic() + PLAN_CACHE_SECONDS)
        return plan

    def _lookup(self, key: str) -> str | None:
        try:
            return authenticate(self.services.db.get(), key).plan
        except Unauthorized:
            return None  # not throttled here: the handler answers 401


def _identifier(request: Request[Any, Any, Any]) -> str:
    return hashlib.sha256((api_key(request) or "").encode()).hexdigest()


def rate_limits(services: Services) -> list[DefineMiddleware]:
    plans = KeyPlans(services)
    middlewares = []
    for name, plan in services.settings.plans.items():

        async def on_plan(request: Request[Any, Any, Any], name: str = name) -> bool:
            return await plans.plan(request) == name

        middlewares.append(
            RateLimitConfig(
                rate_limit=("minute", plan.requests_per_minute),
                identifier_for_request=_identifier,
                check_throttle_handler=on_plan,
                exclude=list(UNLIMITED),
                rate_limit_policy_header_key="X-RateLimit-Policy",
                rate_limit_limit_header_key="X-RateLimit-Limit",
                rate_limit_remaining_header_key="X-RateLimit-Remaining",
                rate_limit_reset_header_key="X-RateLimit-Reset",
            ).middleware
        )
    return middlewares
