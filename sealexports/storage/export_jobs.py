"""The export_jobs table: the truth about every export job (huey only carries job ids)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence, Sized
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sealexports.errors import LimitReached, NotFound
from sealexports.storage.database import transaction
from sealexports.storage.timestamps import iso


class Status(StrEnum):
    """A job's status: the moves between them are `jobs.lifecycle`'s."""

    PENDING = "pending"
    ESTIMATING = "estimating"
    GENERATING = "generating"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"


ACTIVE = (Status.PENDING, Status.ESTIMATING, Status.GENERATING)  # count against concurrent_exports
RUNNING = (Status.ESTIMATING, Status.GENERATING)


@dataclass(frozen=True)
class JobRecord:
    id: int
    job_id: str
    account_id: int
    site_id: str
    export_type: str
    format: str
    date_from: str
    date_to: str
    filters: str  # JSON text
    status: Status
    estimated_rows: int
    actual_rows: int | None
    file_size_bytes: int | None
    progress_percent: int
    file_name: str | None
    sha256: str | None
    download_token: str | None
    error_message: str | None
    attempts: int
    download_expires_at: str | None
    started_at: str | None
    completed_at: str | None
    created_at: str
    lease_owner: str | None = None
    lease_expires_at: float | None = None  # POSIX seconds
    claimed_at: float | None = None  # POSIX seconds
    latest_event_at: str | None = None  # the manifest's freshness (see exports/manifest.py)
    compression: str = "none"  # none, gzip or zstd


_COLUMNS = ", ".join(f.name for f in fields(JobRecord))
_STATUS = [f.name for f in fields(JobRecord)].index("status")


def insert_job(
    conn: sqlite3.Connection, values: dict[str, Any], *, max_active: int | None = None
) -> JobRecord:
    """Insert a job; with `max_active`, refuse (LimitReached) if the account already has that many
    unfinished jobs. Count and insert share one write transaction, so concurrent requests cannot
    both slip under the limit."""
    columns = ", ".join(values)
    marks = ", ".join("?" * len(values))
    with transaction(conn):
        if max_active is not None:
            active = conn.execute(
                f"SELECT COUNT(*) FROM export_jobs WHERE account_id = ? AND status IN ({_marks(ACTIVE)})",
                [values["account_id"], *ACTIVE],
            ).fetchone()[0]
            if active >= max_active:
                raise LimitReached(
                    f"the account already has {active} export(s) running; its plan allows "
                    f"{max_active} at a time"
                )
        conn.execute(f"INSERT INTO export_jobs ({columns}) VALUES ({marks})", list(values.values()))
    return get_job(conn, values["job_id"])


def stored_bytes(conn: sqlite3.Connection, account_id: int, now: str) -> tuple[int, str | None]:
    """The bytes of the account's live export files (completed, link not yet expired), and when
    the first of them expires (None if there are none)."""
    row = conn.execute(
        "SELECT TOTAL(file_size_bytes), MIN(download_expires_at) FROM export_jobs "
        "WHERE account_id = ? AND status = ? AND download_expires_at > ?",
        [account_id, Status.COMPLETED, now],
    ).fetchone()
    return int(row[0]), row[1]


def get_job(conn: sqlite3.Connection, job_id: str, *, account_id: int | None = None) -> JobRecord:
    row = conn.execute(f"SELECT {_COLUMNS} FROM export_jobs WHERE job_id = ?", [job_id]).fetchone()
    if row is None or (account_id is not None and row[2] != account_id):
        raise NotFound(f"export job {job_id!r} not found")
    return _record(row)


def readable_job(
    conn: sqlite3.Connection, key_hash: str, site_id: str, job_id: str
) -> tuple[JobRecord, str | None] | None:
    """The job and the key's last recorded use, if a read key with this hash may read the job
    of this site (the key's account's site, and the key not bound to another), in one read:
    what `accounts.check_key`, `accounts.site_for` and `get_job` check in three."""
    row = conn.execute(
        f"SELECT k.last_used_at, {', '.join(f'j.{f.name}' for f in fields(JobRecord))} "
        "FROM api_keys k JOIN sites s ON s.account_id = k.account_id "
        "JOIN export_jobs j ON j.site_id = s.site_id AND j.account_id = s.account_id "
        "WHERE k.key_hash = ? AND k.revoked_at IS NULL AND k.scope = 'read' "
        "AND (k.site_id IS NULL OR k.site_id = s.site_id) AND s.site_id = ? AND j.job_id = ?",
        [key_hash, site_id, job_id],
    ).fetchone()
    return None if row is None else (_record(row[1:]), row[0])


def find_job(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
    try:
        return get_job(conn, job_id)
    except NotFound:
        return None


def list_jobs(
    conn: sqlite3.Connection, site_id: str, *, limit: int, offset: int, include_expired: bool
) -> tuple[list[JobRecord], int]:
    """A page of the site's jobs, newest first, and the total count."""
    where, params = "site_id = ?", [site_id]
    if not include_expired:
        where, params = "site_id = ? AND status != ?", [site_id, Status.EXPIRED]
    total = conn.execute(f"SELECT COUNT(*) FROM export_jobs WHERE {where}", params).fetchone()[0]
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM export_jobs WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return [_record(r) for r in rows], total


def update_job(
    conn: sqlite3.Connection,
    job_id: str,
    from_status: Iterable[Status],
    changes: dict[str, Any],
    *,
    owner: str | None = None,
) -> bool:
    """Apply `changes` only if the job is still in one of `from_status` (and, with `owner`,
    still leased by it); True if it was."""
    allowed = tuple(from_status)
    sets = ", ".join(f"{k} = ?" for k in changes)
    leased = "" if owner is None else " AND lease_owner = ?"
    with transaction(conn):
        cur = conn.execute(
            f"UPDATE export_jobs SET {sets} WHERE job_id = ? AND status IN ({_marks(allowed)}){leased}",
            [*changes.values(), job_id, *allowed, *([] if owner is None else [owner])],
        )
    return cur.rowcount == 1


def set_progress(conn: sqlite3.Connection, job_id: str, percent: int) -> bool:
    """Record progress; False if the job is no longer generating (deleted or stopped)."""
    cur = conn.execute(
        "UPDATE export_jobs SET progress_percent = ? WHERE job_id = ? AND status = ?",
        [percent, job_id, Status.GENERATING],
    )
    return cur.rowcount == 1


# The fair order: accounts with the fewest running jobs first, then the account whose last claim
# is the oldest (never claimed first), then the oldest job. So one account's long queue cannot
# hold back another account's single job.
_FAIR_NEXT = """
    SELECT j.job_id FROM export_jobs j
    LEFT JOIN (
        SELECT account_id, SUM(status IN (?, ?)) AS running, MAX(claimed_at) AS last_claim
        FROM export_jobs
        WHERE account_id IN (SELECT account_id FROM export_jobs WHERE status = ?)
        GROUP BY account_id
    ) a ON a.account_id = j.account_id
    WHERE j.status = ?
    ORDER BY ifnull(a.running, 0), ifnull(a.last_claim, 0), j.id
    LIMIT 1"""
_FAIR_NEXT_PARAMS = [*RUNNING, Status.PENDING, Status.PENDING]


def claim_next(conn: sqlite3.Connection, owner: str, now: float, lease_until: float) -> JobRecord | None:
    """Take the next pending job in the fair order: it becomes `estimating`, leased by `owner`
    until `lease_until`. One write transaction, so two processes never take the same job."""
    with transaction(conn):
        row = conn.execute(_FAIR_NEXT, _FAIR_NEXT_PARAMS).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE export_jobs SET status = ?, attempts = attempts + 1, started_at = ?, "
            "lease_owner = ?, lease_expires_at = ?, claimed_at = ? WHERE job_id = ?",
            [Status.ESTIMATING, iso(datetime.fromtimestamp(now, UTC)), owner, lease_until, now, row[0]],
        )
    return get_job(conn, row[0])


def renew_leases(conn: sqlite3.Connection, owner: str, lease_until: float) -> int:
    """The heartbeat: every running job of `owner` is leased until `lease_until`."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE export_jobs SET lease_expires_at = ? "
            f"WHERE lease_owner = ? AND status IN ({_marks(RUNNING)})",
            [lease_until, owner, *RUNNING],
        )
    return cur.rowcount


def lapsed_jobs(conn: sqlite3.Connection, now: float) -> list[JobRecord]:
    """Running jobs whose lease has run out (or that have none: left by an older version)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM export_jobs WHERE status IN ({_marks(RUNNING)}) "
        "AND (lease_expires_at IS NULL OR lease_expires_at < ?) ORDER BY id",
        [*RUNNING, now],
    )
    return [_record(r) for r in rows]


def leased_job_ids(conn: sqlite3.Connection, now: float) -> set[str]:
    """Running jobs whose lease still holds."""
    rows = conn.execute(
        f"SELECT job_id FROM export_jobs WHERE status IN ({_marks(RUNNING)}) AND lease_expires_at >= ?",
        [*RUNNING, now],
    )
    return {r[0] for r in rows}


def requeue_lapsed(conn: sqlite3.Connection, job_id: str, now: float, changes: dict[str, Any]) -> bool:
    """Apply `changes` to a running job only if its lease has still run out (no heartbeat came
    meanwhile); the lease is dropped."""
    with transaction(conn):
        cur = conn.execute(
            f"UPDATE export_jobs SET {', '.join(f'{k} = ?' for k in changes)}, lease_owner = NULL, "
            f"lease_expires_at = NULL WHERE job_id = ? AND status IN ({_marks(RUNNING)}) "
            "AND (lease_expires_at IS NULL OR lease_expires_at < ?)",
            [*changes.values(), job_id, *RUNNING, now],
        )
    return cur.rowcount == 1


def pending_ids(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT job_id FROM export_jobs WHERE status = ? ORDER BY id", [Status.PENDING])
    return [r[0] for r in rows]


def delete_job(conn: sqlite3.Connection, job_id: str) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM export_jobs WHERE job_id = ?", [job_id])


def jobs_in(conn: sqlite3.Connection, statuses: Iterable[Status]) -> list[JobRecord]:
    wanted = tuple(statuses)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM export_jobs WHERE status IN ({_marks(wanted)}) ORDER BY id", wanted
    )
    return [_record(r) for r in rows]


def expired_jobs(conn: sqlite3.Connection, now: str) -> list[JobRecord]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM export_jobs WHERE status = ? AND download_expires_at <= ?",
        [Status.COMPLETED, now],
    )
    return [_record(r) for r in rows]


def holds_lease(conn: sqlite3.Connection, job_id: str, status: Status, owner: str) -> bool:
    """The job is still in `status` and leased by `owner`."""
    row = conn.execute(
        "SELECT 1 FROM export_jobs WHERE job_id = ? AND status = ? AND lease_owner = ?",
        [job_id, status, owner],
    ).fetchone()
    return row is not None


def job_status(conn: sqlite3.Connection, job_id: str) -> Status | None:
    row = conn.execute("SELECT status FROM export_jobs WHERE job_id = ?", [job_id]).fetchone()
    return None if row is None else Status(row[0])


def count_by_status(conn: sqlite3.Connection) -> dict[Status, int]:
    """How many jobs are in each status (statuses with none are absent)."""
    rows = conn.execute("SELECT status, COUNT(*) FROM export_jobs GROUP BY status").fetchall()
    return {Status(status): count for status, count in rows}


def _record(row: Sequence[Any]) -> JobRecord:
    values = list(row)
    values[_STATUS] = Status(values[_STATUS])
    return JobRecord(*values)


def _marks(values: Sized) -> str:
    return ", ".join("?" * len(values))
