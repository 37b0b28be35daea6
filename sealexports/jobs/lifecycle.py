"""Job statuses as an explicit machine, and the operations that move jobs through it.

pending -> estimating -> generating -> completed -> expired; any running state -> failed.
A running job stopped by a shutdown goes back to pending, to run again.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sealexports.config import Settings
from sealexports.errors import Conflict, LimitReached, TooLarge
from sealexports.exports import formats
from sealexports.exports.engine import Estimate, human_size
from sealexports.exports.request import ExportRequest
from sealexports.jobs.leases import Lease
from sealexports.storage import export_jobs
from sealexports.storage.accounts import Site
from sealexports.storage.export_jobs import Status
from sealexports.storage.timestamps import iso, now_iso, parse_iso

log = logging.getLogger(__name__)


ALLOWED: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.ESTIMATING, Status.FAILED}),
    Status.ESTIMATING: frozenset({Status.GENERATING, Status.PENDING, Status.FAILED}),
    Status.GENERATING: frozenset({Status.COMPLETED, Status.PENDING, Status.FAILED}),
    Status.COMPLETED: frozenset({Status.EXPIRED}),
    Status.FAILED: frozenset(),
    Status.EXPIRED: frozenset(),
}


def transition(
    conn: sqlite3.Connection,
    job_id: str,
    source: Status | tuple[Status, ...],
    target: Status,
    *,
    owner: str | None = None,
    **changes: Any,
) -> bool:
    """Move a job from `source` to `target`. Raises Conflict for a move the machine forbids;
    returns False if the job is no longer in `source` (deleted or moved on meanwhile) or, with
    `owner`, no longer leased by it (taken over by another process)."""
    sources = source if isinstance(source, tuple) else (source,)
    for s in sources:
        if target not in ALLOWED[s]:
            raise Conflict(f"an export job cannot go from {s} to {target}")
    return export_jobs.update_job(conn, job_id, sources, {"status": target.value, **changes}, owner=owner)


def create_job(
    conn: sqlite3.Connection,
    settings: Settings,
    site: Site,
    req: ExportRequest,
    estimate: Estimate,
    *,
    claimed_by: Lease | None = None,
) -> export_jobs.JobRecord:
    """A pending job, if the account's plan allows its size, the files it already keeps, and
    one more running export; with `claimed_by`, a job already estimating under that lease (a
    small export run at once)."""
    plan = settings.plans[site.account.plan]
    if plan.max_stored_bytes:
        _check_stored_bytes(conn, site, plan.max_stored_bytes)
    if plan.max_rows and estimate.estimated_rows > plan.max_rows:
        size = (
            f"{estimate.estimated_rows:,} rows"
            if estimate.exact
            else f"up to {estimate.estimated_rows:,} rows (counting them exactly took too long)"
        )
        raise TooLarge(
            f"Export too large for the {site.account.plan} plan: {size}, and the plan allows at most "
            f"{plan.max_rows:,} rows per export. Narrow the date range or add filters."
        )
    formats.check_rows(req.format, estimate.estimated_rows)
    claim: dict[str, Any] = {"status": Status.PENDING.value}
    if claimed_by is not None:
        now = time.time()
        claim = {
            "status": Status.ESTIMATING.value, "attempts": 1, "started_at": now_iso(),
            "lease_owner": claimed_by.owner, "lease_expires_at": claimed_by.until(now), "claimed_at": now,
        }  # fmt: skip
    return export_jobs.insert_job(
        conn,
        {
            "job_id": str(uuid.uuid4()),
            "account_id": site.account.id,
            "site_id": site.site_id,
            "export_type": req.type.name,
            "format": req.format,
            "compression": req.compression,
            "date_from": req.date_from.isoformat(),
            "date_to": req.date_to.isoformat(),
            "filters": json.dumps(req.filters, separators=(",", ":")),
            "estimated_rows": estimate.estimated_rows,
            "created_at": now_iso(),
            **claim,
        },
        max_active=plan.concurrent_exports,
    )


def _check_stored_bytes(conn: sqlite3.Connection, site: Site, limit: int) -> None:
    """LimitReached (429) once the account's live export files reach its plan's quota; it can
    retry when the oldest expires (or after deleting exports)."""
    now = datetime.now(UTC)
    stored, first_expiry = export_jobs.stored_bytes(conn, site.account.id, iso(now))
    if stored < limit or first_expiry is None:
        return
    wait = parse_iso(first_expiry) - now
    raise LimitReached(
        f"the account stores {human_size(stored)} of export files ({stored:,} bytes) and its "
        f"{site.account.plan} plan allows {human_size(limit)} ({limit:,} bytes); the oldest expires "
        f"at {first_expiry}. Delete exports you have downloaded "
        "or wait until then",
        retry_after=max(1, math.ceil(wait.total_seconds())),
    )


def delete_job(conn: sqlite3.Connection, exports_dir: Path, job: export_jobs.JobRecord) -> None:
    """Gone at once: a pending job never runs, a generating one stops at its next chunk
    (the runner sees the row is gone), a completed one loses its file."""
    export_jobs.delete_job(conn, job.job_id)
    if job.file_name:
        remove_file(exports_dir / job.file_name)


def delete_site_jobs(conn: sqlite3.Connection, exports_dir: Path, site_id: str) -> int:
    """Delete every export job of the site, with its file; how many there were."""
    jobs, total = export_jobs.list_jobs(conn, site_id, limit=-1, offset=0, include_expired=True)
    for job in jobs:
        delete_job(conn, exports_dir, job)
    return total


def expire_job(conn: sqlite3.Connection, exports_dir: Path, job: export_jobs.JobRecord) -> bool:
    """A completed job becomes expired and loses its file; False if it was not completed."""
    expired = transition(conn, job.job_id, Status.COMPLETED, Status.EXPIRED)
    if expired and job.file_name:
        remove_file(exports_dir / job.file_name)
    return expired


def remove_file(path: Path) -> None:
    """Delete an export file if there. A folder that cannot be written (read-only, failing disk)
    is logged, not raised: the job's new state is already recorded, and a 500 on a download,
    or a server that cannot start because a link expired, would be worse than a stray file."""
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        log.warning("could not delete %s: %s", path, e.strerror or e)


def is_due(job: export_jobs.JobRecord, now: str | None = None) -> bool:
    """A completed job whose download link has passed its expiry time."""
    return (
        job.status == Status.COMPLETED
        and job.download_expires_at is not None
        and job.download_expires_at <= (now or now_iso())
    )


def expire_jobs(conn: sqlite3.Connection, exports_dir: Path, now: str | None = None) -> int:
    """The periodic sweep: every completed job past its download TTL expires."""
    return sum(expire_job(conn, exports_dir, job) for job in export_jobs.expired_jobs(conn, now or now_iso()))
