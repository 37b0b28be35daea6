"""Running one export job to its file, and putting interrupted jobs back in line.

The HTTP handler (small exports) and the huey task (large ones) both call `run_export`.
It is idempotent: a job that is not pending (deleted, running elsewhere, done) is left alone.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sealexports import logs, metrics
from sealexports.errors import Cancelled, Interrupted, SealExportsError
from sealexports.exports import engine
from sealexports.exports.request import ExportRequest, build_request
from sealexports.jobs.lifecycle import RUNNING, Status, remove_file, transition
from sealexports.storage import jobs as store
from sealexports.storage.accounts import now_iso
from sealexports.storage.database import connect
from sealexports.storage.deadline import Deadline
from sealexports.tokens import DownloadTokens

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3


class _Stopping(Exception):
    """The process is shutting down: the job goes back to pending."""


def request_for(job: store.JobRecord, *, formula_guard: bool = True) -> ExportRequest:
    return build_request(
        job.site_id,
        job.export_type,
        job.format,
        job.date_from,
        job.date_to,
        json.loads(job.filters),
        formula_guard=formula_guard,
    )


def run_export(
    conn: sqlite3.Connection,
    exports_dir: Path,
    tokens: DownloadTokens,
    job_id: str,
    stopping: threading.Event | None = None,
    deadline: Deadline | None = None,
    *,
    formula_guard: bool = True,
) -> None:
    """`deadline` bounds the whole run: past it the job fails and leaves no file; if its `stop`
    is set (a shutdown, a client that hung up) the job goes back to pending."""
    job = store.find_job(conn, job_id)
    if job is None or job.status != Status.PENDING:
        return
    with logs.context(job_id=job_id, site=job.site_id, type=job.export_type):
        _run(conn, exports_dir, tokens, job, stopping, deadline, formula_guard)


def _run(
    conn: sqlite3.Connection,
    exports_dir: Path,
    tokens: DownloadTokens,
    job: store.JobRecord,
    stopping: threading.Event | None,
    deadline: Deadline | None,
    formula_guard: bool,
) -> None:
    job_id = job.job_id
    if not transition(
        conn, job_id, Status.PENDING, Status.ESTIMATING, attempts=job.attempts + 1, started_at=now_iso()
    ):
        return
    log.info("export started (%s, attempt %d)", job.format, job.attempts + 1)
    started = time.monotonic()
    dest = exports_dir / f"{job_id}.{job.format}"
    if deadline is None:
        deadline = Deadline(float("inf"), "", shutdown=stopping)
    try:
        dest.unlink(missing_ok=True)  # an earlier attempt killed between its rename and its commit
        req = request_for(job, formula_guard=formula_guard)
        with deadline.running(conn):
            total = engine.count_estimate(conn, req)
        if not transition(conn, job_id, Status.ESTIMATING, Status.GENERATING, estimated_rows=total):
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
                store.set_progress(side, job_id, percent)

        def cancelled() -> bool:
            if stopping is not None and stopping.is_set():
                raise _Stopping
            deadline.check()
            return store.job_status(side, job_id) != Status.GENERATING

        try:
            with deadline.running(conn):
                info = engine.write_file(conn, req, dest, progress=progress, cancelled=cancelled)
        finally:
            side.close()
    except Cancelled:
        log.info("export deleted while generating")  # write_file left no file
        return
    except (_Stopping, Interrupted):
        transition(conn, job_id, RUNNING, Status.PENDING, progress_percent=0)
        log.info("export stopped by shutdown: back to pending")
        return
    except Exception as e:
        message = _failure(e)
        transition(conn, job_id, RUNNING, Status.FAILED, error_message=message, completed_at=now_iso())
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
        actual_rows=info.rows,
        file_size_bytes=info.size_bytes,
        sha256=info.sha256,
        file_name=dest.name,
        progress_percent=100,
        download_token=tokens.sign(job_id),
        completed_at=completed.strftime("%Y-%m-%dT%H:%M:%SZ"),
        download_expires_at=expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    if not done:  # deleted between the last chunk and now
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


def recover(conn: sqlite3.Connection, exports_dir: Path) -> list[str]:
    """After a crash or restart: running jobs go back to pending (or fail after MAX_ATTEMPTS),
    stray temporary files go, and the ids of all pending jobs come back to be enqueued."""
    for job in store.jobs_in(conn, RUNNING):
        if job.attempts >= MAX_ATTEMPTS:
            transition(
                conn, job.job_id, RUNNING, Status.FAILED, completed_at=now_iso(),
                error_message=f"the export was interrupted {job.attempts} times; giving up",
            )  # fmt: skip
            # A kill between the file's rename and the `completed` commit leaves a whole file.
            remove_file(exports_dir / f"{job.job_id}.{job.format}")
        else:
            transition(conn, job.job_id, RUNNING, Status.PENDING, progress_percent=0)
    if exports_dir.is_dir():
        for tmp in exports_dir.glob(".*.tmp"):
            remove_file(tmp)
    return [job.job_id for job in store.jobs_in(conn, [Status.PENDING])]
