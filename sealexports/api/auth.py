"""API key authentication: `X-API-Key: sm_...` or `Authorization: Bearer sm_...`."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.types import Scope

from sealexports.api.threads import read
from sealexports.errors import Forbidden, Unauthorized
from sealexports.services import Services
from sealexports.storage.accounts import Account, check_key, record_use, use_is_due

log = logging.getLogger(__name__)


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
    """The key's account (one indexed read, on a reader thread: a checkpoint or a lock never
    holds the event loop)."""
    key = required_key(request.scope)
    return await read(lambda: check(services, key, "read"))


async def provide_writer(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Account:
    """The account of a key with the 'write' scope (sending events); 403 for a read-only key."""
    key = required_key(request.scope)
    return await read(lambda: check(services, key, "write"))


def required_key(scope: Scope) -> str:
    key = api_key(scope)
    if not key:
        raise Unauthorized("missing API key: send it as X-API-Key or Authorization: Bearer")
    return key


def check(services: Services, key: str, scope: str) -> Account:
    """The account of `key` if it has `scope` (401, 403 otherwise); a read, for a reader thread."""
    conn = services.db.get()
    try:
        credential = check_key(conn, key, scope=scope)
    except Forbidden as e:
        raise Forbidden(f"{e.message} (sealexports keys create --scope {scope})") from None
    if use_is_due(credential.last_used_at):  # at most once a minute a key
        try:
            record_use(conn, credential.key_id)
        except sqlite3.Error as e:  # bookkeeping: never the reason a request fails
            log.warning("could not record the use of API key %s: %s", credential.key_id, e)
    return credential.account
