"""The export use cases, the same for every shell (HTTP handlers, commands, tests): estimate,
start an export, stream a small one, read, list and delete a site's jobs, open a download.

Each takes the `Services` and plain values, runs its queries on the calling thread (the HTTP
shell calls them on a worker thread, under the request's deadline) and returns library objects.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealexports.errors import Expired, NotFound, TooLarge
from sealexports.exports import engine, formats, manifest, values
from sealexports.exports.request import ExportRequest
from sealexports.jobs import idempotency, lifecycle
from sealexports.jobs.runner import request_for, run_export
from sealexports.services import Services
from sealexports.storage import export_jobs
from sealexports.storage.accounts import Site
from sealexports.storage.database import connect
from sealexports.storage.deadline import Deadline
from sealexports.storage.export_jobs import Status

FIRST_CHUNKS = 2  # a raw export's header, then its first rows
LINK_EXPIRED = "this download link has expired; create a new export"


@dataclass(frozen=True)
class Started:
    """A new job, and the estimate it was planned with. `background`: it was queued for a
    worker (`job` is as created: pending); else it ran during the call, and is completed, failed,
    or pending again if a disconnect or a shutdown stopped it (then it is queued too)."""

    job: export_jobs.JobRecord
    estimate: engine.Estimate
    warnings: list[str]
    background: bool


@dataclass(frozen=True)
class Estimated:
    """An estimate, and why the export may come out empty (dates without data, values that
    never occur): `values.warnings`."""

    estimate: engine.Estimate
    warnings: list[str]


@dataclass(frozen=True)
class Answered:
    """A create under an Idempotency-Key: `body`, the answer (a replay: the first request's);
    `job`, on a replay, the job as it is now, to show in place of the one `body` was made with."""

    body: dict[str, Any]
    job: export_jobs.JobRecord | None
    replayed: bool


@dataclass(frozen=True)
class Download:
    job: export_jobs.JobRecord
    path: Path
    file_name: str
    media_type: str


@dataclass
class ExportStream:
    """A small export's bytes: `first` already made, the rest from `chunks`, on `conn` (the
    stream's own connection, closed by `close`)."""

    conn: sqlite3.Connection
    chunks: Generator[bytes, None, None]
    first: list[bytes]
    file_name: str
    media_type: str

    def close(self) -> None:
        self.chunks.close()
        self.conn.close()


def estimate(services: Services, site: Site, req: ExportRequest, deadline: Deadline) -> Estimated:
    """Rows, bytes and time the export would take, without creating a job. Past the deadline
    while counting a filtered aggregate's real rows, its upper bound stands."""
    conn = services.db.get()
    max_rows = services.settings.plans[site.account.plan].max_rows
    est = engine.estimate_within(
        conn, req, deadline, services.settings.sync_row_limit, max_rows, bound_on_timeout=True
    )
    return Estimated(est, values.warnings_within(conn, req, deadline))


def start_export(
    services: Services,
    site: Site,
    req: ExportRequest,
    deadline: Deadline,
    *,
    made: Callable[[str], None] | None = None,
) -> Started:
    """Estimate, check the plan (size, stored bytes, running exports) and create the job (`made`
    is told its id at once); under the sync row limit run it now (within `deadline`), else queue it."""
    estimated = estimate(services, site, req, deadline)
    est, warnings = estimated.estimate, estimated.warnings
    conn = services.db.get()
    # A small export is created claimed by this process, so no worker takes it meanwhile.
    lease = None if est.will_use_background_job else services.queue.lease
    job = lifecycle.create_job(conn, services.settings, site, req, est, claimed_by=lease)
    if made is not None:
        made(job.job_id)
    if lease is None:
        services.queue.enqueue(job.job_id)
        # The job as created (pending): a worker may have claimed it already, any worker on any
        # doorbell, and the answer should not depend on that race.
        return Started(job, est, warnings, background=True)
    run_export(
        conn,
        services.settings.exports_dir,
        services.tokens,
        job.job_id,
        lease.owner,
        deadline=deadline,
        formula_guard=services.settings.csv_formula_guard,
    )
    job = export_jobs.get_job(conn, job.job_id)
    if job.status == Status.PENDING:  # stopped by a disconnect or a shutdown: a worker finishes it
        services.queue.enqueue(job.job_id)
    return Started(job, est, warnings, background=False)


def create_export(
    services: Services,
    site: Site,
    req: ExportRequest,
    deadline: Deadline,
    answer: Callable[[Started], dict[str, Any]],
    *,
    key: str | None = None,
    body: Any = None,
) -> Answered:
    """`start_export`, its answer made by `answer`. With an Idempotency-Key `key`: once per
    account and key (`jobs.idempotency`), the answer kept for replays; `body`, the request's
    own, tells a retry from another request under the same key. A key whose first request died
    after making its job is answered by that job, as a background one."""
    if key is None:
        return Answered(answer(start_export(services, site, req, deadline)), None, replayed=False)
    settings = services.settings

    def first(made: Callable[[str], None]) -> tuple[str, str]:
        started = start_export(services, site, req, deadline, made=made)
        return started.job.job_id, json.dumps(answer(started))

    outcome = idempotency.run_once(
        services.db.get(),
        site.account.id,
        key,
        idempotency.fingerprint(site.site_id, body),
        first,
        wait_seconds=settings.query_timeout_seconds,
        stale_seconds=2 * settings.query_timeout_seconds + 60,
    )
    conn = services.db.get()
    if outcome.response is None:
        job = export_jobs.get_job(conn, outcome.job_id)
        est = engine.estimate(conn, req, settings.sync_row_limit)
        return Answered(answer(Started(job, est, [], background=True)), None, replayed=True)
    now = export_jobs.find_job(conn, outcome.job_id) if outcome.replayed else None
    return Answered(json.loads(outcome.response), now, outcome.replayed)


def open_stream(services: Services, req: ExportRequest, deadline: Deadline) -> ExportStream:
    """The export's bytes, for one under the sync row limit (TooLarge at or over it). The first
    chunks are made here, so that a deadline passed in the query's first (for aggregates: only)
    long step is an error, not a cut stream."""
    est = engine.estimate_within(services.db.get(), req, deadline, services.settings.sync_row_limit)
    if est.will_use_background_job:
        raise TooLarge(f"Export too large for streaming ({est.estimated_rows:,} rows).")
    formats.check_rows(req.format, est.estimated_rows)
    conn = connect(services.settings.database, migrate=False)  # the stream's own
    chunks = engine.chunks(conn, req)
    try:
        with deadline.running(conn):
            first = list(itertools.islice(chunks, FIRST_CHUNKS))
    except BaseException:
        chunks.close()
        conn.close()
        raise
    return ExportStream(conn, chunks, first, req.file_name, req.media_type)


def site_job(services: Services, site: Site, job_id: str) -> export_jobs.JobRecord:
    """The site's job (NotFound for another site's), expired first if its link has passed its time."""
    conn = services.db.get()
    job = _site_job(conn, site, job_id)
    if not lifecycle.is_due(job):
        return job
    lifecycle.expire_job(conn, services.settings.exports_dir, job)
    return export_jobs.get_job(conn, job_id)


def job_manifest(services: Services, site: Site, job_id: str) -> dict[str, Any]:
    """The site's job's manifest (`exports.manifest`): Conflict until it has completed."""
    job = site_job(services, site, job_id)
    return manifest.of_job(request_for(job), site.timezone, job)


def list_jobs(
    services: Services,
    site: Site,
    deadline: Deadline,
    *,
    limit: int,
    offset: int,
    include_expired: bool,
) -> tuple[list[export_jobs.JobRecord], int]:
    """A page of the site's jobs, newest first, and their total; links past their time expire first."""
    conn = services.db.get()
    lifecycle.expire_jobs(conn, services.settings.exports_dir)
    with deadline.running(conn):
        return export_jobs.list_jobs(
            conn, site.site_id, limit=limit, offset=offset, include_expired=include_expired
        )


def delete_job(services: Services, site: Site, job_id: str) -> None:
    """Cancel or delete the site's job (see `lifecycle.delete_job`)."""
    conn = services.db.get()
    lifecycle.delete_job(conn, services.settings.exports_dir, _site_job(conn, site, job_id))


def open_download(services: Services, token: str) -> Download:
    """The file a download token opens. NotFound for a forged or unknown token; Expired once the
    link has passed its time (the job expires then) or the file is gone."""
    conn = services.db.get()
    job_id, expired = services.tokens.open(token)
    job = export_jobs.find_job(conn, job_id)
    if job is None or job.download_token != token:
        raise NotFound("download link not found")
    if expired or lifecycle.is_due(job):
        lifecycle.expire_job(conn, services.settings.exports_dir, job)
        raise Expired(LINK_EXPIRED)
    if job.status == Status.EXPIRED:
        raise Expired(LINK_EXPIRED)
    path = services.settings.exports_dir / (job.file_name or "")
    if job.status != Status.COMPLETED or not job.file_name or not path.is_file():
        raise Expired("the export file is no longer available; create a new export")
    req = request_for(job)
    return Download(job, path, req.file_name, req.media_type)


def _site_job(conn: sqlite3.Connection, site: Site, job_id: str) -> export_jobs.JobRecord:
    job = export_jobs.get_job(conn, job_id, account_id=site.account.id)
    if job.site_id != site.site_id:
        raise NotFound(f"export job {job_id!r} not found")
    return job
