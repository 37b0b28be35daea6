"""Export schedules and their runs. A run is claimed by moving the schedule's `next_run_at` on
in the same transaction that records it (an atomic compare-and-set), so of several processes on
one database exactly one starts each run."""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass, fields
from typing import Any

from sealexports.errors import NotFound
from sealexports.storage.database import transaction
from sealexports.storage.timestamps import now_iso


@dataclass(frozen=True)
class Schedule:
    id: int
    schedule_id: str
    account_id: int
    site_id: str
    export_type: str
    format: str
    filters: str  # JSON
    range: str
    every: str
    at: str
    day: int | None
    deliver_to_dir: str | None
    next_run_at: float
    created_at: str
    compression: str = "none"


@dataclass(frozen=True)
class Run:
    id: int
    schedule_id: int
    slot: float | None
    started_at: float
    job_id: str | None
    error: str | None
    copied_at: str | None
    copy_owner: str | None
    copy_until: float | None


_SCHEDULE = ", ".join(f.name for f in fields(Schedule))
_RUN = ", ".join(f"r.{f.name}" for f in fields(Run))


def add_schedule(conn: sqlite3.Connection, values: dict[str, Any]) -> Schedule:
    schedule_id = "sch_" + secrets.token_hex(6)
    row = {"schedule_id": schedule_id, **values, "created_at": now_iso()}
    with transaction(conn):
        conn.execute(
            f"INSERT INTO export_schedules ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
    return get_schedule(conn, schedule_id)


def get_schedule(
    conn: sqlite3.Connection, schedule_id: str, *, account_id: int | None = None, site_id: str | None = None
) -> Schedule:
    row = conn.execute(
        f"SELECT {_SCHEDULE} FROM export_schedules WHERE schedule_id = ?", [schedule_id]
    ).fetchone()
    if (
        row is None
        or (account_id is not None and row[2] != account_id)
        or (site_id is not None and row[3] != site_id)
    ):
        raise NotFound(f"schedule {schedule_id!r} not found")
    return Schedule(*row)


def schedule_by_rowid(conn: sqlite3.Connection, rowid: int) -> Schedule:
    return Schedule(
        *conn.execute(f"SELECT {_SCHEDULE} FROM export_schedules WHERE id = ?", [rowid]).fetchone()
    )


def list_schedules(conn: sqlite3.Connection, *, site_id: str | None = None) -> list[Schedule]:
    where, args = ("", []) if site_id is None else (" WHERE site_id = ?", [site_id])
    return [
        Schedule(*r)
        for r in conn.execute(f"SELECT {_SCHEDULE} FROM export_schedules{where} ORDER BY id", args)
    ]


def remove_schedule(conn: sqlite3.Connection, schedule: Schedule) -> None:
    """The schedule and its runs' records go; the jobs it made stay, as any job."""
    with transaction(conn):
        conn.execute("DELETE FROM export_schedules WHERE id = ?", [schedule.id])


def due_schedules(conn: sqlite3.Connection, now: float) -> list[Schedule]:
    rows = conn.execute(
        f"SELECT {_SCHEDULE} FROM export_schedules WHERE next_run_at <= ? ORDER BY next_run_at, id", [now]
    )
    return [Schedule(*r) for r in rows]


def claim_slot(conn: sqlite3.Connection, schedule: Schedule, now: float, next_run_at: float) -> Run | None:
    """Record a run of the slot `schedule.next_run_at` and move the schedule to `next_run_at`,
    if no other process did first (then None)."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE export_schedules SET next_run_at = ? WHERE id = ? AND next_run_at = ?",
            [next_run_at, schedule.id, schedule.next_run_at],
        )
        if cur.rowcount != 1:
            return None
        run_id = conn.execute(
            "INSERT INTO schedule_runs (schedule_id, slot, started_at) VALUES (?, ?, ?)",
            [schedule.id, schedule.next_run_at, now],
        ).lastrowid
    return get_run(conn, int(run_id or 0))


def add_run(conn: sqlite3.Connection, schedule: Schedule, now: float) -> Run:
    """A run made by hand (run-now): the schedule's times do not move."""
    with transaction(conn):
        run_id = conn.execute(
            "INSERT INTO schedule_runs (schedule_id, slot, started_at) VALUES (?, NULL, ?)",
            [schedule.id, now],
        ).lastrowid
    return get_run(conn, int(run_id or 0))


def get_run(conn: sqlite3.Connection, run_id: int) -> Run:
    return Run(*conn.execute(f"SELECT {_RUN} FROM schedule_runs r WHERE r.id = ?", [run_id]).fetchone())


def orphan_runs(conn: sqlite3.Connection, before: float) -> list[Run]:
    """Runs that recorded neither a job nor an error since `before`: their process died between
    claiming the run and creating its job."""
    rows = conn.execute(
        f"SELECT {_RUN} FROM schedule_runs r WHERE r.job_id IS NULL AND r.error IS NULL AND r.started_at < ?",
        [before],
    )
    return [Run(*r) for r in rows]


def retake_run(conn: sqlite3.Connection, run: Run, now: float) -> bool:
    with transaction(conn):
        cur = conn.execute(
            "UPDATE schedule_runs SET started_at = ? WHERE id = ? AND started_at = ? AND job_id IS NULL",
            [now, run.id, run.started_at],
        )
    return cur.rowcount == 1


def finish_run(
    conn: sqlite3.Connection, run: Run, *, job_id: str | None = None, error: str | None = None
) -> None:
    with transaction(conn):
        conn.execute("UPDATE schedule_runs SET job_id = ?, error = ? WHERE id = ?", [job_id, error, run.id])


def runs_of(conn: sqlite3.Connection, schedule: Schedule, limit: int = 20) -> list[Run]:
    rows = conn.execute(
        f"SELECT {_RUN} FROM schedule_runs r WHERE r.schedule_id = ? ORDER BY r.id DESC LIMIT ?",
        [schedule.id, limit],
    )
    return [Run(*r) for r in rows]


def runs_to_copy(conn: sqlite3.Connection, now: float) -> list[tuple[Run, Schedule]]:
    """Runs whose job completed and whose schedule delivers to a folder, not yet copied (nor
    being copied by a live process)."""
    rows = conn.execute(
        f"SELECT {_RUN}, {', '.join('s.' + f.name for f in fields(Schedule))} FROM schedule_runs r "
        "JOIN export_schedules s ON s.id = r.schedule_id JOIN export_jobs j ON j.job_id = r.job_id "
        "WHERE r.copied_at IS NULL AND s.deliver_to_dir IS NOT NULL AND j.status = 'completed' "
        "AND (r.copy_until IS NULL OR r.copy_until < ?) ORDER BY r.id",
        [now],
    )
    width = len(fields(Run))
    return [(Run(*r[:width]), Schedule(*r[width:])) for r in rows]


def claim_copy(conn: sqlite3.Connection, run: Run, owner: str, now: float, until: float) -> bool:
    with transaction(conn):
        cur = conn.execute(
            "UPDATE schedule_runs SET copy_owner = ?, copy_until = ? WHERE id = ? AND copied_at IS NULL "
            "AND (copy_until IS NULL OR copy_until < ?)",
            [owner, until, run.id, now],
        )
    return cur.rowcount == 1


def copied(conn: sqlite3.Connection, run: Run, error: str | None = None) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE schedule_runs SET copied_at = ?, error = coalesce(?, error), copy_owner = NULL, "
            "copy_until = NULL WHERE id = ?",
            [now_iso(), error, run.id],
        )
