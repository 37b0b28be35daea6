"""Sending the outbox: claim a due delivery under a lease, sign it, POST it, record the attempt.

Retries (network errors, timeouts, 408, 429, 5xx) back off exponentially, the first after 10 s,
six attempts over about an hour, each with the same delivery id and body; 410 Gone disables the
endpoint; any other answer ends the delivery. A process killed mid-attempt leaves the lease to
run out: another process (or the next start) sends that attempt again, same id, same body.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sealexports.config import Settings
from sealexports.errors import InvalidRequest
from sealexports.jobs.view import from_snapshot, job_object
from sealexports.storage import webhooks as store
from sealexports.storage.timestamps import iso
from sealexports.webhooks import signing
from sealexports.webhooks.addresses import Target, Unresolvable, resolve
from sealexports.webhooks.sender import Response, post

log = logging.getLogger(__name__)
RETRY_DELAYS = (10, 60, 300, 900, 2400)  # seconds after attempts 1..5; a 6th is the last
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
RETRY_STATUSES = frozenset({408, 429})
Poster = Callable[[Target, dict[str, str], bytes, float], Response]


def public_base(settings: Settings) -> str:
    """Where a webhook's download_url points: public_url, else the address `serve` listens on
    (right for receivers on the same machine; set public_url for any other)."""
    if settings.public_url:
        return settings.public_url
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}{settings.root_path}"


def body_of(delivery: store.Delivery, endpoint: store.Endpoint, base: str) -> str:
    """`{"id", "type", "created_at", "data": {"job": <the job as GET /exports/{job_id} shows it>}}`."""
    if delivery.job is not None:
        data: dict[str, object] = {"job": job_object(from_snapshot(delivery.job), base)}
    else:
        data = {"endpoint_id": endpoint.endpoint_id}
    event = {"id": delivery.delivery_id, "type": delivery.event_type, "created_at": delivery.created_at,
             "data": data}  # fmt: skip
    return json.dumps(event, separators=(",", ":"))


def deliver_due(
    conn: sqlite3.Connection,
    settings: Settings,
    owner: str,
    now: Callable[[], float] = time.time,
    send: Poster = post,
    limit: int = 100,
) -> int:
    """Send due deliveries (at most `limit`) one after another; how many attempts were made."""
    done = 0
    while done < limit:
        t = now()
        delivery = store.claim_due(conn, owner, t, t + 3 * settings.webhooks_timeout_seconds + 5)
        if delivery is None:
            break
        attempt(conn, settings, owner, delivery, now, send)
        done += 1
    return done


def attempt(
    conn: sqlite3.Connection,
    settings: Settings,
    owner: str,
    delivery: store.Delivery,
    now: Callable[[], float] = time.time,
    send: Poster = post,
) -> store.DeliveryStatus | None:
    """One attempt at a claimed delivery; its new status (None: our lease ran out meanwhile)."""
    endpoint = store.endpoint_by_rowid(conn, delivery.endpoint_id)
    if endpoint.disabled_at is not None:
        store.give_up(conn, delivery, owner, f"the endpoint was disabled: {endpoint.disabled_reason}")
        return store.DeliveryStatus.FAILED
    body = delivery.body
    if body is None:
        body = body_of(delivery, endpoint, public_base(settings))
        store.set_body(conn, delivery, body)
    started = now()
    stamp = int(started)
    raw = body.encode()
    headers = {
        "X-Sealexports-Signature": signing.header(endpoint.secrets(started), stamp, raw),
        "X-Sealexports-Event": delivery.event_type,
        "X-Sealexports-Delivery": delivery.delivery_id,
    }
    blocked = False
    try:
        target = resolve(endpoint.url, allow_private=settings.webhooks_allow_private)
    except InvalidRequest as e:
        blocked = not isinstance(e, Unresolvable)
        response = Response(None, e.message, 0.0)
    else:
        response = send(target, headers, raw, settings.webhooks_timeout_seconds)
    number = delivery.attempts + 1
    code = response.status_code
    retry = not blocked and (code is None or code >= 500 or code in RETRY_STATUSES)
    if code is not None and 200 <= code < 300:
        status, next_at = store.DeliveryStatus.DELIVERED, 0.0
    elif retry and number < MAX_ATTEMPTS:
        status, next_at = store.DeliveryStatus.PENDING, started + RETRY_DELAYS[number - 1]
    else:
        status, next_at = store.DeliveryStatus.FAILED, 0.0
    error = response.error or (None if status == store.DeliveryStatus.DELIVERED else f"HTTP {code}")
    record = store.Attempt(number, _iso(started), code, error, round(response.duration_ms, 1))
    if not store.record_attempt(conn, delivery, owner, record, status, next_at):
        return None  # our lease ran out meanwhile: another process has the delivery
    if code == 410:
        store.disable_endpoint(conn, endpoint.id, f"the receiver answered 410 Gone on {_iso(started)}")
        log.warning("webhook endpoint %s answered 410 Gone: disabled", endpoint.endpoint_id)
    log.log(
        logging.INFO if status == store.DeliveryStatus.DELIVERED else logging.WARNING,
        "webhook %s %s to %s: attempt %d, %s",
        delivery.event_type, delivery.delivery_id, endpoint.endpoint_id, number, error or f"HTTP {code}",
    )  # fmt: skip
    return status


def _iso(ts: float) -> str:
    return iso(datetime.fromtimestamp(ts, UTC))
