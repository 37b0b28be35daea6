"""The idempotency_keys table: an account's Idempotency-Key, the request it came with (a
fingerprint), the job it made and the answer given. A key lives 24 hours."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from sealexports.storage.database import transaction

TTL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class KeyRecord:
    account_id: int
    key: str
    fingerprint: str
    job_id: str | None
    response: str | None  # the JSON body answered, once answered
    created_at: float  # POSIX seconds


_COLUMNS = "account_id, key, fingerprint, job_id, response, created_at"


def claim(
    conn: sqlite3.Connection, account_id: int, key: str, fingerprint: str, now: float
) -> KeyRecord | None:
    """Take `key` for a new request: None if taken now (the caller goes on), else the live record
    of an earlier request with it. One write transaction: of two concurrent claims, one wins.
    Keys past their 24 hours are dropped on the way (all of them: an index range)."""
    with transaction(conn):
        conn.execute("DELETE FROM idempotency_keys WHERE created_at <= ?", [now - TTL_SECONDS])
        cur = conn.execute(
            "INSERT OR IGNORE INTO idempotency_keys (account_id, key, fingerprint, created_at) "
            "VALUES (?, ?, ?, ?)",
            [account_id, key, fingerprint, now],
        )
        if cur.rowcount == 1:
            return None
        return get(conn, account_id, key)


def get(conn: sqlite3.Connection, account_id: int, key: str) -> KeyRecord | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM idempotency_keys WHERE account_id = ? AND key = ?", [account_id, key]
    ).fetchone()
    return None if row is None else KeyRecord(*row)


def link(conn: sqlite3.Connection, account_id: int, key: str, created_at: float, job_id: str) -> None:
    """The job the claim's request made, as soon as it exists (before its answer)."""
    with transaction(conn):
        conn.execute(
            "UPDATE idempotency_keys SET job_id = ? WHERE account_id = ? AND key = ? AND created_at = ?",
            [job_id, account_id, key, created_at],
        )


def answer(conn: sqlite3.Connection, account_id: int, key: str, job_id: str, response: str) -> None:
    """The job made and the answer given: later requests with the key get it again."""
    with transaction(conn):
        conn.execute(
            "UPDATE idempotency_keys SET job_id = ?, response = ? WHERE account_id = ? AND key = ?",
            [job_id, response, account_id, key],
        )


def release(conn: sqlite3.Connection, account_id: int, key: str, created_at: float) -> None:
    """Forget a claim (the request made nothing: a refusal, or a crash before its job), so that
    a retry runs afresh. `created_at` names the claim: a newer one by another request stays."""
    with transaction(conn):
        conn.execute(
            "DELETE FROM idempotency_keys WHERE account_id = ? AND key = ? AND created_at = ?",
            [account_id, key, created_at],
        )
