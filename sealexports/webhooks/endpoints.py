"""Managing endpoints: add (URL and events checked), test, replay, rotate the secret."""

from __future__ import annotations

import sqlite3
import time

from sealexports.config import Settings
from sealexports.errors import InvalidRequest
from sealexports.storage import webhooks as store
from sealexports.webhooks.addresses import resolve

ROTATION_GRACE_SECONDS = 24 * 3600  # the replaced secret keeps signing this long


def parse_events(events: list[str] | None) -> list[str]:
    """The event types to subscribe to (default: all); unknown ones refused."""
    if not events:
        return list(store.EVENTS)
    wanted = list(dict.fromkeys(e.strip() for e in events if e.strip()))
    unknown = [e for e in wanted if e not in store.EVENTS]
    if unknown or not wanted:
        raise InvalidRequest(
            f"unknown webhook event {(unknown or [''])[0]!r}; events are {', '.join(store.EVENTS)}",
            field="events",
        )
    return wanted


def add(
    conn: sqlite3.Connection, settings: Settings, account_id: int, url: str, events: list[str] | None
) -> tuple[store.Endpoint, str]:
    """A new endpoint for the account, and its signing secret. The URL must be http(s) and,
    unless `webhooks_allow_private`, resolve to public addresses only."""
    subscribed = parse_events(events)
    resolve(url, allow_private=settings.webhooks_allow_private)
    return store.add_endpoint(conn, account_id, url, subscribed)


def send_test(conn: sqlite3.Connection, endpoint: store.Endpoint) -> store.Delivery:
    """A `webhook.test` delivery, sent by the workers like any other."""
    return store.add_delivery(conn, endpoint, store.TEST_EVENT, None, None)


def replay(conn: sqlite3.Connection, delivery: store.Delivery) -> store.Delivery:
    """The same event again, as a new delivery (a new id: a receiver that kept the first id
    would otherwise drop it) to the same endpoint."""
    endpoint = store.endpoint_by_rowid(conn, delivery.endpoint_id)
    if endpoint.disabled_at is not None:
        raise InvalidRequest(
            f"webhook endpoint {endpoint.endpoint_id} is disabled ({endpoint.disabled_reason}); "
            "add it again to send to it"
        )
    return store.add_delivery(conn, endpoint, delivery.event_type, delivery.job_id, delivery.job)


def rotate(conn: sqlite3.Connection, endpoint: store.Endpoint, now: float | None = None) -> str:
    """A new secret; deliveries carry a signature with each of the two for 24 hours."""
    now = time.time() if now is None else now
    return store.rotate_secret(conn, endpoint, now + ROTATION_GRACE_SECONDS)
