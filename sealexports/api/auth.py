"""API key authentication: `X-API-Key: sm_...` or `Authorization: Bearer sm_...`."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from sealexports.api.services import Services
from sealexports.errors import Unauthorized
from sealexports.storage.accounts import Account, authenticate


def api_key(request: Request[Any, Any, Any]) -> str | None:
    """The key the request carries, if any."""
    key = request.headers.get("x-api-key")
    if key is None:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials:
            key = credentials.strip()
    return key or None


async def provide_account(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Account:
    """The key's account. One indexed read: it runs on the event loop (in WAL mode a reader
    never waits for a writer), sparing every request a hop to a worker thread."""
    key = api_key(request)
    if not key:
        raise Unauthorized("missing API key: send it as X-API-Key or Authorization: Bearer")
    return authenticate(services.db.get(), key, scope="read")


async def provide_writer(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Account:
    """The account of a key with the 'write' scope (sending events); 403 for a read-only key."""
    key = api_key(request)
    if not key:
        raise Unauthorized("missing API key: send it as X-API-Key or Authorization: Bearer")
    return authenticate(services.db.get(), key, scope="write")
