"""Running one export job to its file, and putting interrupted jobs back in line.

The HTTP handler runs a small export it created already claimed (`run_export`); a huey task
claims the next pending job in the fair order and runs it (`run_next`). A job is written to only
under its lease: one deleted, or taken over by another process, is left alone.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sealexports import logs, metrics
from sealexports.errors import Cancelled, Interrupted, SealExportsError
from sealexports.exports import engine, formats
from sealexports.exports.request import ExportRequest, build_request
from sealexports.jobs.leases import Lease
from sealexports.jobs.lifecycle import remove_file, transition
from sealexports.storage import export_jobs
from sealexports.storage.database import connect
from sealexports.storage.deadline import Deadline
from sealexports.storage.export_jobs import RUNNING, Status
from sealexports.storage.timestamps import iso, now_iso
from sealexports.storage.visits import latest_event_at
from sealexports.tokens import DownloadTokens

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
# The nice value of a worker thread while it runs exports. Measured: with two threads exporting
# in a loop on two busy cores, an asyncio server's polls went from a median 0.60 of its
# no-export rate (0.39-1.03, p99 12-55 ms) to 1.02 (0.86-1.19, p99 12-17 ms), six rounds each;
# the exports still wrote 67-100% as many rows.
WORKER_NICE = 10


class _Stopping(Exception):
    """The process is shutting down: the job goes back to pending."""


def request_for(job: export_jobs.JobRecord, *, formula_guard: bool = True) -> ExportRequest:
    return build_request(
        job.site_id,
        job.export_type,
        job.format,
        job.date_from,
        job.date_to,
        json.loads(job.filters),
        formula_guard=formula_guard,
        compression=job.compression,
    )


def file_path(exports_dir: Path, job: export_jobs.JobRecord) -> Path:
    """Where a job's file is written: {job_id}.{ext}, ext as csv, ndjson.zst, xlsx."""
    return exports_dir / f"{job.job_id}.{formats.extension(job.format, job.compression)}"


def run_next(
    conn: sqlite3.Connection,
    exports_dir: Path,
    tokens: DownloadTokens,
    lease: Lease,
    stopping: threading.Event | None = None,
    deadline: Deadline | None = None,
    *,
    formula_guard: bool = True,
) -> str | None:
    """Claim the next pending job in the fair order (see `export_jobs.claim_next`) and run it; its id,
    or None if no job was waiting."""
    yield_cpu_to_requests()
    now = time.time()
    job = export_jobs.claim_next(conn, lease.owner, now, lease.until(now))
    if job is None:
        return None
    with logs.context(job_id=job.job_id, site=job.site_id, type=job.export_type):
        _run(conn, exports_dir, tokens, job, lease.owner, stopping, deadline, formula_guard)
    return job.job_id


def yield_cpu_to_requests() -> None:
    """Give this thread (a worker's: exports only) a lower CPU priority than the threads that
    answer requests, so that on busy cores the event loop runs first and polls stay quick while
    exports run. Linux only: there a thread has its own nice value (elsewhere setpriority would
    lower the whole process). Raising it back needs privileges, so the thread keeps it."""
    if sys.platform != "linux":
        return
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < WORKER_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, WORKER_NICE)
    except OSError:  # not allowed here (a sandbox): run at the priority we have
        log.debug("could not lower the worker thread's priority", exc_info=True)


def run_export(
    conn: sqlite3.Connection,
    exports_dir: Path,
    tokens: DownloadTokens,
    job_id: str,
    owner: str,
    stopping: threading.Event | None = None,
    deadline: Deadline | None = None,
    *,
    formula_guard: bool = True,
) -> None:
    """Run a job that `owner` has claimed already (a small export is created claimed, and runs
    during its request); a job not estimating under that lease is left alone. `deadline` bounds
    the whole run: past it the job fails and leaves no file; if its `stop` is set (a shutdown, a
    client that hung up) the job goes back to pending."""
    job = export_jobs.find_job(conn, job_id)
    if job is None or job.status != Status.ESTIMATING or job.lease_owner != owner:
        return
    with logs.context(job_id=job.job_id, site=job.site_id, type=job.export_type):
        _run(conn, exports_dir, tokens, job, owner, stopping, deadline, formula_guard)


def _run(
    conn: sqlite3.Connection,
    exports_dir: Path,
    tokens: DownloadTokens,
    job: export_jobs.JobRecord,
    owner: str,
    stopping: threading.Event | None,
    deadline: Deadline | None,
    formula_guard: bool,
) -> None:
    job_id = job.job_id
    log.info("export started (%s, attempt %d)", job.format, job.attempts)
    started = time.monotonic()
    dest = file_path(exports_dir, job)
    released = {"lease_owner": None, "lease_expires_at": None}
    if deadline is None:
        deadline = Deadline(float("inf"), "", shutdown=stopping)
    try:
        dest.unlink(missing_ok=True)  # an earlier attempt killed between its rename and its commit
        req = request_for(job, formula_guard=formula_guard)
        with deadline.running(conn):
            total = engine.count_estimate(conn, req)
            latest = latest_event_at(conn, req.site_id, job.date_from, job.date_to)
        if not transition(
            conn, job_id, Status.ESTIMATING, Status.GENERATING, owner=owner, estimated_rows=total
        ):
            return
        shown = [0]
        # The export's open cursor pins a read snapshot on `conn` until its last row. On `conn`,
        # the job row would look as it was (a DELETE never seen) and a progress write would fail
        # at once with "database is locked" (SQLITE_BUSY_SNAPSHOT) after any other connection's
        # write. So the job row is read and written through a connection of its own meanwhile.
        side = connect(conn.execute("PRAGMA database_list").fetchone()[2], migrate=False)

        def progress(rows: int) -> None:
            percent = min(99, rows * 100 // max(total, 1))
            if percent != shown[0]:
                shown[0] = percent
                export_jobs.set_progress(side, job_id, percent)

        def cancelled() -> bool:
            if stopping is not None and stopping.is_set():
                raise _Stopping
            deadline.check()
            # Deleted, or taken over by another process after this one's lease ran out.
            return not export_jobs.holds_lease(side, job_id, Status.GENERATING, owner)

        try:
            with deadline.running(conn):
                info = engine.write_file(conn, req, dest, progress=progress, cancelled=cancelled)
        finally:
            side.close()
    except Cancelled:
        log.info("export deleted while generating")  # write_file left no file
        return
    except (_Stopping, Interrupted):
        transition(conn, job_id, RUNNING, Status.PENDING, owner=owner, progress_percent=0, **released)
        log.info("export stopped by shutdown: back to pending")
        return
    except Exception as e:
        message = _failure(e)
        transition(
            conn, job_id, RUNNING, Status.FAILED, owner=owner,
            error_message=message, completed_at=now_iso(), **released,
        )  # fmt: skip
        log.warning("export failed: %s", message)
        metrics.export_failed(job.export_type)
        return
    completed = datetime.now(UTC)
    expires = completed + timedelta(seconds=tokens.ttl_seconds)
    done = transition(
        conn,
        job_id,
        Status.GENERATING,
        Status.COMPLETED,
        owner=owner,
        **released,
        actual_rows=info.rows,
        file_size_bytes=info.size_bytes,
        sha256=info.sha256,
        latest_event_at=latest,
        file_name=dest.name,
        progress_percent=100,
        download_token=tokens.sign(job_id),
        completed_at=iso(completed),
        download_expires_at=iso(expires),
    )
    if not done:  # deleted (or taken over after a lapsed lease) between the last chunk and now
        if export_jobs.find_job(conn, job_id) is None:
            dest.unlink(missing_ok=True)
        return
    seconds = time.monotonic() - started
    metrics.export_done(job.export_type, job.format, info.rows, info.size_bytes, seconds)
    log.info("export completed: %d rows, %d bytes in %.2f s", info.rows, info.size_bytes, seconds)


def _failure(e: Exception) -> str:
    if isinstance(e, SealExportsError):
        return e.message
    if isinstance(e, OSError):
        return f"could not write the export file: {e.strerror or e}"
    log.exception("export failed")
    return f"internal error while generating the export ({type(e).__name__})"


def reclaim(conn: sqlite3.Connection, exports_dir: Path, now: float, stray_after: float) -> list[str]:
    """Take back the jobs whose lease has run out (their process died, or hung past its lease):
    their temporary files go, then they go back to pending (or fail after MAX_ATTEMPTS). Jobs
    leased by a live process are left alone, and so are their files. Temporary files of no
    running job, older than `stray_after` seconds, go too. Returns the ids put back to pending."""
    back: list[str] = []
    for job in export_jobs.lapsed_jobs(conn, now):
        if exports_dir.is_dir():
            for tmp in exports_dir.glob(f".{job.job_id}.*.tmp"):
                remove_file(tmp)
        if job.attempts >= MAX_ATTEMPTS:
            failed = export_jobs.requeue_lapsed(
                conn, job.job_id, now,
                {"status": Status.FAILED.value, "completed_at": now_iso(),
                 "error_message": f"the export was interrupted {job.attempts} times; giving up"},
            )  # fmt: skip
            if failed:  # a kill between the file's rename and the `completed` commit leaves a whole file
                remove_file(file_path(exports_dir, job))
        elif export_jobs.requeue_lapsed(
            conn, job.job_id, now, {"status": Status.PENDING.value, "progress_percent": 0}
        ):
            log.warning("export job %s: lease of %s ran out; back to pending", job.job_id, job.lease_owner)
            back.append(job.job_id)
    if exports_dir.is_dir():
        leased = export_jobs.leased_job_ids(conn, now)
        for tmp in exports_dir.glob(".*.tmp"):
            owner = tmp.name[1:].split(".", 1)[0]
            if owner not in leased and _age(tmp, now) > stray_after:
                remove_file(tmp)
    return back


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
