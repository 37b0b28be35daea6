"""Idempotent creates (Stripe's semantics): the same Idempotency-Key with the same request, from
the same account within 24 hours, gets the first answer again and makes nothing new; with
another request it is refused (422). Two requests with one key at once: the second waits for
the first's answer (at most `wait_seconds`, then 409: retry).

Only an answer that made a job is kept. A request refused before that (a bad body, a plan
limit, a timeout) releases its key, so that its retry runs afresh, as Stripe does for requests
that never began executing.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sealexports.errors import Conflict, InvalidRequest
from sealexports.storage import idempotency as store

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces, as Stripe's
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Outcome:
    response: str | None  # the answer's JSON body; None: its request died after making the job
    job_id: str
    replayed: bool


def fingerprint(site_id: str, body: Any) -> str:
    """The request a key came with: its site and its body, whatever the keys' order."""
    text = json.dumps({"site_id": site_id, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise InvalidRequest(
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
            field="Idempotency-Key",
        )
    return key


def run_once(
    conn: sqlite3.Connection,
    account_id: int,
    key: str,
    print_: str,
    create: Callable[[Callable[[str], None]], tuple[str, str]],
    *,
    wait_seconds: float,
    stale_seconds: float,
) -> Outcome:
    """`create(made)` once per account and key: it calls `made(job_id)` as soon as its job exists
    and returns the job id and the answer's JSON. A request that died after making its job (a
    crash) leaves no answer: past `stale_seconds` a retry gets that job (response None), and
    never makes a second one."""
    check_key(key)
    give_up = time.monotonic() + wait_seconds
    while True:
        now = time.time()
        earlier = store.claim(conn, account_id, key, print_, now)
        if earlier is None:
            break
        if earlier.fingerprint != print_:
            raise InvalidRequest(
                f"Idempotency-Key {key!r} was used with another request (site or body) in the last 24 "
                "hours; send the same request again, or use a new key",
                field="Idempotency-Key",
            )
        if earlier.response is not None and earlier.job_id is not None:
            return Outcome(earlier.response, earlier.job_id, replayed=True)
        if now - earlier.created_at > stale_seconds:  # its request died without an answer
            if earlier.job_id is not None:
                return Outcome(None, earlier.job_id, replayed=True)
            store.release(conn, account_id, key, earlier.created_at)
            continue
        if time.monotonic() > give_up:
            raise Conflict(f"a request with Idempotency-Key {key!r} is still running; retry in a moment")
        time.sleep(POLL_SECONDS)
    made: list[str] = []

    def link(job_id: str) -> None:
        store.link(conn, account_id, key, now, job_id)
        made.append(job_id)

    try:
        job_id, response = create(link)
    except BaseException:
        if not made:  # nothing was made: a retry runs afresh
            store.release(conn, account_id, key, now)
        raise
    store.answer(conn, account_id, key, job_id, response)
    return Outcome(response, job_id, replayed=False)
