"""The export_jobs table: the truth about every export job (huey only carries job ids)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from sealexports.errors import LimitReached, NotFound
from sealexports.storage.database import transaction

ACTIVE = ("pending", "estimating", "generating")


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
    status: str
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


_COLUMNS = ", ".join(f.name for f in fields(JobRecord))


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
                f"SELECT COUNT(*) FROM export_jobs WHERE account_id = ? AND status IN {ACTIVE}",
                [values["account_id"]],
            ).fetchone()[0]
            if active >= max_active:
                raise LimitReached(
                    f"the account already has {active} export(s) running; its plan allows "
                    f"{max_active} at a time",
                    retry_after=5,
                )
        conn.execute(f"INSERT INTO export_jobs ({columns}) VALUES ({marks})", list(values.values()))
    return get_job(conn, values["job_id"])


def stored_bytes(conn: sqlite3.Connection, account_id: int, now: str) -> tuple[int, str | None]:
    """The bytes of the account's live export files (completed, link not yet expired), and when
    the first of them expires (None if there are none)."""
    row = conn.execute(
        "SELECT TOTAL(file_size_bytes), MIN(download_expires_at) FROM export_jobs "
        "WHERE account_id = ? AND status = 'completed' AND download_expires_at > ?",
        [account_id, now],
    ).fetchone()
    return int(row[0]), row[1]


def get_job(conn: sqlite3.Connection, job_id: str, *, account_id: int | None = None) -> JobRecord:
    row = conn.execute(f"SELECT {_COLUMNS} FROM export_jobs WHERE job_id = ?", [job_id]).fetchone()
    if row is None or (account_id is not None and row[2] != account_id):
        raise NotFound(f"export job {job_id!r} not found")
    return JobRecord(*row)


def find_job(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
    try:
        return get_job(conn, job_id)
    except NotFound:
        return None


def list_jobs(
    conn: sqlite3.Connection, site_id: str, *, limit: int, offset: int, include_expired: bool
) -> tuple[list[JobRecord], int]:
    """A page of the site's jobs, newest first, and the total count."""
    where = "site_id = ?" + ("" if include_expired else " AND status != 'expired'")
    total = conn.execute(f"SELECT COUNT(*) FROM export_jobs WHERE {where}", [site_id]).fetchone()[0]
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM export_jobs WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?",
        [site_id, limit, offset],
    )
    return [JobRecord(*r) for r in rows], total


def update_job(
    conn: sqlite3.Connection, job_id: str, from_status: Iterable[str], changes: dict[str, Any]
) -> bool:
    """Apply `changes` only if the job is still in one of `from_status`; True if it was."""
    allowed = tuple(from_status)
    sets = ", ".join(f"{k} = ?" for k in changes)
    marks = ", ".join("?" * len(allowed))
    with transaction(conn):
        cur = conn.execute(
            f"UPDATE export_jobs SET {sets} WHERE job_id = ? AND status IN ({marks})",
            [*changes.values(), job_id, *allowed],
        )
    return cur.rowcount == 1


def set_progress(conn: sqlite3.Connection, job_id: str, percent: int) -> bool:
    """Record progress; False if the job is no longer generating (deleted or stopped)."""
    cur = conn.execute(
        "UPDATE export_jobs SET progress_percent = ? WHERE job_id = ? AND status = 'generating'",
        [percent, job_id],
    )
    return cur.rowcount == 1


def delete_job(conn: sqlite3.Connection, job_id: str) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM export_jobs WHERE job_id = ?", [job_id])


def jobs_in(conn: sqlite3.Connection, statuses: Iterable[str]) -> list[JobRecord]:
    wanted = tuple(statuses)
    marks = ", ".join("?" * len(wanted))
    rows = conn.execute(f"SELECT {_COLUMNS} FROM export_jobs WHERE status IN ({marks}) ORDER BY id", wanted)
    return [JobRecord(*r) for r in rows]


def expired_jobs(conn: sqlite3.Connection, now: str) -> list[JobRecord]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM export_jobs WHERE status = 'completed' AND download_expires_at <= ?",
        [now],
    )
    return [JobRecord(*r) for r in rows]


def job_status(conn: sqlite3.Connection, job_id: str) -> str | None:
    row = conn.execute("SELECT status FROM export_jobs WHERE job_id = ?", [job_id]).fetchone()
    return None if row is None else str(row[0])


def count_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    """How many jobs are in each status (statuses with none are absent)."""
    rows = conn.execute("SELECT status, COUNT(*) FROM export_jobs GROUP BY status").fetchall()
    return {status: count for status, count in rows}
