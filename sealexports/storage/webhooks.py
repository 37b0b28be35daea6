"""Webhook endpoints, their deliveries (the outbox) and every attempt at one.

A job's completed/failed transition writes its deliveries itself (a trigger, see schema.py), so
this module only claims them, under a lease like jobs, and records what came of each attempt.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from sealexports.errors import NotFound
from sealexports.storage.database import transaction
from sealexports.storage.timestamps import now_iso

EVENTS = ("export.completed", "export.failed")
TEST_EVENT = "webhook.test"


@dataclass(frozen=True)
class Endpoint:
    id: int
    endpoint_id: str
    account_id: int
    url: str
    events: str  # comma-separated
    secret: str
    previous_secret: str | None
    previous_secret_until: float | None
    disabled_at: str | None
    disabled_reason: str | None
    created_at: str

    @property
    def event_list(self) -> list[str]:
        return self.events.split(",")

    def secrets(self, now: float) -> list[str]:
        """The secrets that sign now: the current one, and the one it replaced for its grace time."""
        old = self.previous_secret
        return (
            [self.secret] if old is None or (self.previous_secret_until or 0) <= now else [self.secret, old]
        )


class DeliveryStatus(StrEnum):
    """A webhook delivery's status: due or waiting for a retry, then delivered or given up."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class Delivery:
    id: int
    delivery_id: str
    endpoint_id: int
    event_type: str
    job_id: str | None
    job: str | None  # JSON
    body: str | None
    created_at: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float
    lease_owner: str | None
    lease_expires_at: float | None
    last_status_code: int | None
    last_error: str | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", DeliveryStatus(self.status))


@dataclass(frozen=True)
class Attempt:
    attempt: int
    started_at: str
    status_code: int | None
    error: str | None
    duration_ms: float


_ENDPOINT = ", ".join(f.name for f in fields(Endpoint))
_DELIVERY = ", ".join(f"d.{f.name}" for f in fields(Delivery))


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def add_endpoint(
    conn: sqlite3.Connection, account_id: int, url: str, events: list[str]
) -> tuple[Endpoint, str]:
    """A new endpoint and its secret (shown once by the shells)."""
    endpoint_id = "wh_" + secrets.token_hex(6)
    secret = new_secret()
    with transaction(conn):
        conn.execute(
            "INSERT INTO webhook_endpoints (endpoint_id, account_id, url, events, secret, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [endpoint_id, account_id, url, ",".join(events), secret, now_iso()],
        )
    return get_endpoint(conn, endpoint_id), secret


def get_endpoint(conn: sqlite3.Connection, endpoint_id: str, *, account_id: int | None = None) -> Endpoint:
    row = conn.execute(
        f"SELECT {_ENDPOINT} FROM webhook_endpoints WHERE endpoint_id = ?", [endpoint_id]
    ).fetchone()
    if row is None or (account_id is not None and row[2] != account_id):
        raise NotFound(f"webhook endpoint {endpoint_id!r} not found")
    return Endpoint(*row)


def endpoint_by_rowid(conn: sqlite3.Connection, rowid: int) -> Endpoint:
    row = conn.execute(f"SELECT {_ENDPOINT} FROM webhook_endpoints WHERE id = ?", [rowid]).fetchone()
    if row is None:
        raise NotFound("webhook endpoint not found")
    return Endpoint(*row)


def list_endpoints(conn: sqlite3.Connection, *, account_id: int | None = None) -> list[Endpoint]:
    where, args = ("", []) if account_id is None else (" WHERE account_id = ?", [account_id])
    rows = conn.execute(f"SELECT {_ENDPOINT} FROM webhook_endpoints{where} ORDER BY id", args)
    return [Endpoint(*r) for r in rows]


def remove_endpoint(conn: sqlite3.Connection, endpoint: Endpoint) -> None:
    """The endpoint goes, with its deliveries (pending ones are never sent) and their attempts."""
    with transaction(conn):
        conn.execute("DELETE FROM webhook_endpoints WHERE id = ?", [endpoint.id])


def rotate_secret(conn: sqlite3.Connection, endpoint: Endpoint, old_valid_until: float) -> str:
    """A new secret; the current one keeps signing (a second signature) until `old_valid_until`."""
    secret = new_secret()
    with transaction(conn):
        conn.execute(
            "UPDATE webhook_endpoints SET secret = ?, previous_secret = secret, previous_secret_until = ? "
            "WHERE id = ?",
            [secret, old_valid_until, endpoint.id],
        )
    return secret


def disable_endpoint(conn: sqlite3.Connection, rowid: int, reason: str) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE webhook_endpoints SET disabled_at = ?, disabled_reason = ? WHERE id = ?",
            [now_iso(), reason, rowid],
        )


def add_delivery(conn: sqlite3.Connection, endpoint: Endpoint, event_type: str, job_id: str | None,
                 job: str | None) -> Delivery:  # fmt: skip
    """A delivery made by hand (a test event, a replay): due at once, with a new id."""
    delivery_id = "whd_" + secrets.token_hex(12)
    with transaction(conn):
        conn.execute(
            "INSERT INTO webhook_deliveries (delivery_id, endpoint_id, event_type, job_id, job, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [delivery_id, endpoint.id, event_type, job_id, job, now_iso()],
        )
    return get_delivery(conn, delivery_id)


def get_delivery(conn: sqlite3.Connection, delivery_id: str, *, account_id: int | None = None) -> Delivery:
    row = conn.execute(
        f"SELECT {_DELIVERY}, e.account_id FROM webhook_deliveries d "
        "JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.delivery_id = ?",
        [delivery_id],
    ).fetchone()
    if row is None or (account_id is not None and row[-1] != account_id):
        raise NotFound(f"webhook delivery {delivery_id!r} not found")
    return Delivery(*row[:-1])


def list_deliveries(
    conn: sqlite3.Connection, *, endpoint: Endpoint | None = None, account_id: int | None = None,
    limit: int = 100,
) -> list[Delivery]:  # fmt: skip
    """The newest deliveries first: of one endpoint, of an account's endpoints, or of all."""
    where: list[str] = []
    args: list[Any] = []
    if endpoint is not None:
        where.append("d.endpoint_id = ?")
        args.append(endpoint.id)
    if account_id is not None:
        where.append("e.account_id = ?")
        args.append(account_id)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {_DELIVERY} FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id"
        f"{clause} ORDER BY d.id DESC LIMIT ?",
        [*args, limit],
    )
    return [Delivery(*r) for r in rows]


def attempts(conn: sqlite3.Connection, delivery: Delivery) -> list[Attempt]:
    rows = conn.execute(
        "SELECT attempt, started_at, status_code, error, duration_ms FROM webhook_attempts "
        "WHERE delivery_id = ? ORDER BY id",
        [delivery.id],
    )
    return [Attempt(*r) for r in rows]


def claim_due(conn: sqlite3.Connection, owner: str, now: float, lease_until: float) -> Delivery | None:
    """Take the next due delivery (pending, its time come, no live lease), leased by `owner`
    until `lease_until`: one write transaction, so two processes never send the same attempt."""
    with transaction(conn):
        row = conn.execute(
            "SELECT id FROM webhook_deliveries WHERE status = ? AND next_attempt_at <= ? "
            "AND (lease_expires_at IS NULL OR lease_expires_at < ?) ORDER BY next_attempt_at, id LIMIT 1",
            [DeliveryStatus.PENDING, now, now],
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE webhook_deliveries SET lease_owner = ?, lease_expires_at = ? WHERE id = ?",
            [owner, lease_until, row[0]],
        )
    found = conn.execute(f"SELECT {_DELIVERY} FROM webhook_deliveries d WHERE d.id = ?", [row[0]]).fetchone()
    return Delivery(*found)


def set_body(conn: sqlite3.Connection, delivery: Delivery, body: str) -> None:
    """The bytes of the first attempt: every retry sends the same."""
    with transaction(conn):
        conn.execute(
            "UPDATE webhook_deliveries SET body = ? WHERE id = ? AND body IS NULL", [body, delivery.id]
        )


def record_attempt(
    conn: sqlite3.Connection,
    delivery: Delivery,
    owner: str,
    attempt: Attempt,
    status: DeliveryStatus,
    next_attempt_at: float,
) -> bool:
    """The attempt, and the delivery's new state, in one transaction; only under `owner`'s lease
    (else another process took the delivery over, and this attempt is not counted)."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?, "
            "last_status_code = ?, last_error = ?, lease_owner = NULL, lease_expires_at = NULL "
            "WHERE id = ? AND lease_owner = ? AND status = ?",
            [
                status,
                next_attempt_at,
                attempt.status_code,
                attempt.error,
                delivery.id,
                owner,
                DeliveryStatus.PENDING,
            ],
        )
        if cur.rowcount != 1:
            return False
        conn.execute(
            "INSERT INTO webhook_attempts "
            "(delivery_id, attempt, started_at, status_code, error, duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
            [delivery.id, attempt.attempt, attempt.started_at, attempt.status_code, attempt.error,
             attempt.duration_ms],
        )  # fmt: skip
    return True


def give_up(conn: sqlite3.Connection, delivery: Delivery, owner: str, reason: str) -> None:
    """End a claimed delivery without sending it."""
    with transaction(conn):
        conn.execute(
            "UPDATE webhook_deliveries SET status = ?, last_error = ?, lease_owner = NULL, "
            "lease_expires_at = NULL WHERE id = ? AND lease_owner = ?",
            [DeliveryStatus.FAILED, reason, delivery.id, owner],
        )
