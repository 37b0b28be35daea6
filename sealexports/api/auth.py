"""API key authentication: `X-API-Key: sm_...` or `Authorization: Bearer sm_...`."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.types import Scope

from sealexports.api.services import Services
from sealexports.errors import Unauthorized
from sealexports.storage.accounts import Account, authenticate


def api_key(scope: Scope) -> str | None:
    """The key a request carries: X-API-Key, else Authorization: Bearer. Read from the raw
    headers, so that the rate limiter can have it without building a Request."""
    bearer = None
    for raw_name, value in scope["headers"]:
        name = raw_name.lower()  # servers send lowercase names; test clients may not
        if name == b"x-api-key":
            return value.decode("latin-1") or None
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                bearer = credentials.strip()
    return bearer


async def provide_account(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Account:
    """The key's account. One indexed read: it runs on the event loop (in WAL mode a reader
    never waits for a writer), sparing every request a hop to a worker thread."""
    key = api_key(request.scope)
    if not key:
        raise Unauthorized("missing API key: send it as X-API-Key or Authorization: Bearer")
    return authenticate(services.db.get(), key, scope="read")


async def provide_writer(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Account:
    """The account of a key with the 'write' scope (sending events); 403 for a read-only key."""
    key = api_key(request.scope)
    if not key:
        raise Unauthorized("missing API key: send it as X-API-Key or Authorization: Bearer")
    return authenticate(services.db.get(), key, scope="write")
