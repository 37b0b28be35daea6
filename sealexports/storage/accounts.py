"""Accounts (with a plan), their sites (with a time zone) and their API keys (stored hashed)."""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sealexports.config import PLAN_NAMES
from sealexports.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from sealexports.storage.database import transaction

SITE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
KEY_PREFIX_LEN = 12
# What a key may do: 'read' exports (the default), or 'write' events (ingestion keys). A key has one.
SCOPES = ("read", "write")
_SCOPE_USE = {"read": "exports", "write": "sending events"}


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    plan: str


@dataclass(frozen=True)
class Site:
    site_id: str
    name: str
    timezone: str
    account: Account


@dataclass(frozen=True)
class ApiKey:
    prefix: str
    name: str | None
    account: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None
    scope: str = "read"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def create_site(
    conn: sqlite3.Connection,
    site_id: str,
    *,
    name: str | None = None,
    timezone: str = "UTC",
    plan: str | None = None,
    account: str | None = None,
) -> Site:
    """Create a site, and its account if new (named after the site unless given).

    A plan given for an existing account changes that account's plan.
    """
    if not SITE_ID.match(site_id):
        raise InvalidRequest(
            f"invalid site id {site_id!r}: use 1-64 lowercase letters, digits, '-' or '_'",
            field="site_id",
        )
    _check_timezone(timezone)
    if plan is not None and plan not in PLAN_NAMES:
        raise InvalidRequest(f"unknown plan {plan!r} (expected one of {', '.join(PLAN_NAMES)})")
    account_name = account or site_id
    with transaction(conn):
        if conn.execute("SELECT 1 FROM sites WHERE site_id = ?", [site_id]).fetchone():
            raise InvalidRequest(f"site {site_id!r} already exists", field="site_id")
        conn.execute(
            "INSERT INTO accounts (name, plan, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
            [account_name, plan or "free", now_iso()],
        )
        if plan is not None:
            conn.execute("UPDATE accounts SET plan = ? WHERE name = ?", [plan, account_name])
        conn.execute(
            "INSERT INTO sites (site_id, name, account_id, timezone, created_at) "
            "SELECT ?, ?, id, ?, ? FROM accounts WHERE name = ?",
            [site_id, name or site_id, timezone, now_iso(), account_name],
        )
    return get_site(conn, site_id)


_SITE_SELECT = (
    "SELECT s.site_id, s.name, s.timezone, a.id, a.name, a.plan "
    "FROM sites s JOIN accounts a ON a.id = s.account_id"
)


def _site(row: tuple[str, str, str, int, str, str]) -> Site:
    return Site(row[0], row[1], row[2], Account(row[3], row[4], row[5]))


def get_site(conn: sqlite3.Connection, site_id: str, *, account_id: int | None = None) -> Site:
    """The site; NotFound if unknown or (when `account_id` is given) another account's."""
    row = conn.execute(_SITE_SELECT + " WHERE s.site_id = ?", [site_id]).fetchone()
    if row is None or (account_id is not None and row[3] != account_id):
        raise NotFound(f"site {site_id!r} not found")
    return _site(row)


def list_sites(conn: sqlite3.Connection, *, account_id: int | None = None) -> list[Site]:
    """Every site, or (when `account_id` is given) that account's."""
    if account_id is None:
        return [_site(r) for r in conn.execute(_SITE_SELECT + " ORDER BY s.site_id")]
    rows = conn.execute(_SITE_SELECT + " WHERE a.id = ? ORDER BY s.site_id", [account_id])
    return [_site(r) for r in rows]


def create_key(conn: sqlite3.Connection, site_id: str, name: str | None = None, scope: str = "read") -> str:
    """A new key for the site's account. Only its hash is stored: the caller shows it once."""
    if scope not in SCOPES:
        raise InvalidRequest(f"unknown scope {scope!r} (expected one of {', '.join(SCOPES)})", field="scope")
    site = get_site(conn, site_id)
    key = "sm_" + secrets.token_urlsafe(32)
    with transaction(conn):
        conn.execute(
            "INSERT INTO api_keys (account_id, name, prefix, key_hash, created_at, scope) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [site.account.id, name, key[:KEY_PREFIX_LEN], _hash(key), now_iso(), scope],
        )
    return key


def list_keys(conn: sqlite3.Connection) -> list[ApiKey]:
    rows = conn.execute(
        "SELECT k.prefix, k.name, a.name, k.created_at, k.last_used_at, k.revoked_at, k.scope "
        "FROM api_keys k JOIN accounts a ON a.id = k.account_id ORDER BY k.id"
    )
    return [ApiKey(*r) for r in rows]


def revoke_key(conn: sqlite3.Connection, prefix: str) -> None:
    with transaction(conn):
        cur = conn.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL",
            [now_iso(), prefix],
        )
    if cur.rowcount == 0:
        raise NotFound(f"no active key with prefix {prefix!r}")


def authenticate(conn: sqlite3.Connection, key: str, scope: str | None = None) -> Account:
    """The account a key belongs to; Unauthorized for a missing, unknown or revoked key,
    Forbidden for a key without `scope` (None: any scope will do)."""
    row = conn.execute(
        "SELECT a.id, a.name, a.plan, k.scope FROM api_keys k JOIN accounts a ON a.id = k.account_id "
        "WHERE k.key_hash = ? AND k.revoked_at IS NULL",
        [_hash(key)],
    ).fetchone()
    if row is None:
        raise Unauthorized("invalid or revoked API key")
    if scope is not None and row[3] != scope:
        raise Forbidden(
            f"this API key has the {row[3]!r} scope, for {_SCOPE_USE[row[3]]}; {_SCOPE_USE[scope]} "
            f"needs a key with the {scope!r} scope (sealexports keys create --scope {scope})"
        )
    return Account(*row[:3])


def _hash(key: str) -> str:
    # Keys carry 256 random bits, so a plain digest is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def _check_timezone(tz: str) -> None:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(f"unknown time zone {tz!r}", field="timezone") from None
