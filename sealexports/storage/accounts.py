"""Accounts (with a plan), their sites (with a time zone) and their API keys (stored hashed)."""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sealexports.config import PLAN_NAMES
from sealexports.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from sealexports.storage.database import transaction
from sealexports.storage.timestamps import iso, now_iso

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
    # Reached through a key bound to one site: that site (the account's others answer 404).
    # Not part of which account it is: equal accounts are equal whatever key reached them.
    key_site: str | None = field(default=None, compare=False)


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
    site: str | None = None  # the one site it works on; None: every site of its account


@dataclass(frozen=True)
class Credential:
    """What a key authenticates as, and when it was last recorded as used."""

    account: Account
    key_id: int
    last_used_at: str | None


USE_RECORD_SECONDS = 60  # last_used_at is written at most once a minute a key
DEMO_KEY = "demo_key"  # the `meta` row that keeps `serve --demo`'s key


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

    A plan given for an existing account must be its plan: changing a plan is `set_plan`'s job,
    never a side effect of adding a site.
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
        row = conn.execute("SELECT plan FROM accounts WHERE name = ?", [account_name]).fetchone()
        if row is not None and plan is not None and plan != row[0]:
            raise InvalidRequest(
                f"account {account_name!r} has the {row[0]} plan, not {plan}; leave --plan out to add "
                "the site to it, or change its plan with "
                f"`sealexports accounts set-plan {account_name} {plan}`",
                field="plan",
            )
        if row is None:
            conn.execute(
                "INSERT INTO accounts (name, plan, created_at) VALUES (?, ?, ?)",
                [account_name, plan or "free", now_iso()],
            )
        conn.execute(
            "INSERT INTO sites (site_id, name, account_id, timezone, created_at) "
            "SELECT ?, ?, id, ?, ? FROM accounts WHERE name = ?",
            [site_id, name or site_id, timezone, now_iso(), account_name],
        )
    return get_site(conn, site_id)


@dataclass(frozen=True)
class AccountSummary:
    name: str
    plan: str
    sites: int
    keys: int  # active ones
    created_at: str


def list_accounts(conn: sqlite3.Connection) -> list[AccountSummary]:
    rows = conn.execute(
        "SELECT a.name, a.plan, "
        "(SELECT count(*) FROM sites s WHERE s.account_id = a.id), "
        "(SELECT count(*) FROM api_keys k WHERE k.account_id = a.id AND k.revoked_at IS NULL), "
        "a.created_at FROM accounts a ORDER BY a.name"
    )
    return [AccountSummary(*r) for r in rows]


def set_plan(conn: sqlite3.Connection, name: str, plan: str) -> None:
    """Change an account's plan: its limits apply from the next request on."""
    if plan not in PLAN_NAMES:
        raise InvalidRequest(f"unknown plan {plan!r} (expected one of {', '.join(PLAN_NAMES)})", field="plan")
    with transaction(conn):
        cur = conn.execute("UPDATE accounts SET plan = ? WHERE name = ?", [plan, name])
    if cur.rowcount == 0:
        raise NotFound(f"account {name!r} not found")


def update_site(
    conn: sqlite3.Connection, site_id: str, *, name: str | None = None, timezone: str | None = None
) -> Site:
    """Rename a site, or change its time zone while it has no events: stored events, rollups and
    jobs are filed by the local day of the zone they came in with, and would stay on those days."""
    site = get_site(conn, site_id)
    if timezone is not None and timezone != site.timezone:
        _check_timezone(timezone)
        if conn.execute("SELECT 1 FROM visits WHERE site_id = ? LIMIT 1", [site_id]).fetchone():
            raise InvalidRequest(
                f"site {site_id!r} has events filed by their local days in {site.timezone}; a new "
                "time zone would leave them on those days. Create a new site in the new zone and "
                "import the events there (or `sealexports sites delete` this one first)",
                field="timezone",
            )
    with transaction(conn):
        conn.execute(
            "UPDATE sites SET name = coalesce(?, name), timezone = coalesce(?, timezone) WHERE site_id = ?",
            [name, timezone, site_id],
        )
    return get_site(conn, site_id)


def delete_site(conn: sqlite3.Connection, site_id: str) -> None:
    """Delete the site with its events and keys (its account stays). Its export jobs and their
    files must be gone first (jobs.lifecycle.delete_site_jobs)."""
    from sealexports.storage.visits import delete_site_data  # events imports this module

    get_site(conn, site_id)
    with transaction(conn):
        delete_site_data(conn, site_id)
        conn.execute("DELETE FROM api_keys WHERE site_id = ?", [site_id])
        conn.execute("DELETE FROM export_jobs WHERE site_id = ?", [site_id])
        conn.execute("DELETE FROM sites WHERE site_id = ?", [site_id])


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


def site_for(conn: sqlite3.Connection, site_id: str, account: Account) -> Site:
    """The site as an authenticated key may reach it: NotFound if unknown, another account's,
    or (for a key bound to one site) any other site, all alike."""
    if account.key_site is not None and site_id != account.key_site:
        raise NotFound(f"site {site_id!r} not found")
    return get_site(conn, site_id, account_id=account.id)


def list_sites(conn: sqlite3.Connection, *, account_id: int | None = None) -> list[Site]:
    """Every site, or (when `account_id` is given) that account's."""
    if account_id is None:
        return [_site(r) for r in conn.execute(_SITE_SELECT + " ORDER BY s.site_id")]
    rows = conn.execute(_SITE_SELECT + " WHERE a.id = ? ORDER BY s.site_id", [account_id])
    return [_site(r) for r in rows]


def create_key(
    conn: sqlite3.Connection,
    site_id: str | None = None,
    name: str | None = None,
    scope: str = "read",
    *,
    account: str | None = None,
) -> str:
    """A new key for one site (`site_id`), or for every site of an account (`account`).
    Only its hash is stored: the caller shows it once."""
    if scope not in SCOPES:
        raise InvalidRequest(f"unknown scope {scope!r} (expected one of {', '.join(SCOPES)})", field="scope")
    if (site_id is None) == (account is None):
        raise InvalidRequest("a key is for one site or for a whole account: give exactly one of the two")
    if site_id is not None:
        account_id: int = get_site(conn, site_id).account.id
    else:
        row = conn.execute("SELECT id FROM accounts WHERE name = ?", [account]).fetchone()
        if row is None:
            raise NotFound(f"account {account!r} not found")
        account_id = row[0]
    key = "sm_" + secrets.token_urlsafe(32)
    with transaction(conn):
        conn.execute(
            "INSERT INTO api_keys (account_id, site_id, name, prefix, key_hash, created_at, scope) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [account_id, site_id, name, key[:KEY_PREFIX_LEN], key_hash(key), now_iso(), scope],
        )
    return key


def demo_key(conn: sqlite3.Connection, site_id: str) -> str:
    """`serve --demo`'s key for the demo site: the one it made before while it still works, else
    a new one. Unlike any other key its plaintext is kept (in `meta`), so that every start can
    print it again: it opens demo data only, on a server meant for trying the API."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", [DEMO_KEY]).fetchone()
    if row is not None:
        try:
            if authenticate(conn, row[0]).key_site == site_id:
                return str(row[0])
        except Unauthorized:
            pass  # revoked: make another
    key = create_key(conn, site_id, "serve --demo")
    with transaction(conn):
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [DEMO_KEY, key])
    return key


def list_keys(conn: sqlite3.Connection) -> list[ApiKey]:
    rows = conn.execute(
        "SELECT k.prefix, k.name, a.name, k.created_at, k.last_used_at, k.revoked_at, k.scope, k.site_id "
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
    """The account a key belongs to (with the key's site, if bound to one); Unauthorized for a
    missing, unknown or revoked key, Forbidden for a key without `scope` (None: any will do)."""
    return check_key(conn, key, scope).account


def check_key(conn: sqlite3.Connection, key: str, scope: str | None = None) -> Credential:
    """`authenticate`, with the key's id and last recorded use."""
    row = conn.execute(
        "SELECT a.id, a.name, a.plan, k.site_id, k.scope, k.id, k.last_used_at "
        "FROM api_keys k JOIN accounts a ON a.id = k.account_id "
        "WHERE k.key_hash = ? AND k.revoked_at IS NULL",
        [key_hash(key)],
    ).fetchone()
    if row is None:
        raise Unauthorized("invalid or revoked API key")
    if scope is not None and row[4] != scope:
        raise Forbidden(
            f"this API key has the {row[4]!r} scope, for {_SCOPE_USE[row[4]]}; {_SCOPE_USE[scope]} "
            f"needs a key with the {scope!r} scope"
        )
    return Credential(Account(*row[:4]), row[5], row[6])


def use_is_due(last_used_at: str | None) -> bool:
    """Whether a use of the key should be recorded: never recorded, or a minute ago or more.
    (Compares the ISO strings: on every request, this must cost next to nothing.)"""
    if last_used_at is None:
        return True
    return last_used_at <= now_iso(plus_seconds=-USE_RECORD_SECONDS)


def record_use(conn: sqlite3.Connection, key_id: int) -> bool:
    """Set the key's last_used_at to now, unless another request did within the minute."""
    now = datetime.now(UTC)
    before = iso(now - timedelta(seconds=USE_RECORD_SECONDS))
    with transaction(conn):
        cur = conn.execute(
            "UPDATE api_keys SET last_used_at = ? "
            "WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)",
            [iso(now), key_id, before],
        )
    return cur.rowcount == 1


def key_hash(key: str) -> str:
    # Keys carry 256 random bits, so a plain digest is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def _check_timezone(tz: str) -> None:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(f"unknown time zone {tz!r}", field="timezone") from None


def get_account(conn: sqlite3.Connection, name: str) -> Account:
    row = conn.execute("SELECT id, name, plan FROM accounts WHERE name = ?", [name]).fetchone()
    if row is None:
        raise NotFound(f"account {name!r} not found")
    return Account(*row)
