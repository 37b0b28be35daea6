"""The seven /exports endpoints. Each parses, calls the library, and formats: no SQL here."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable, Generator
from typing import Annotated, Any

import anyio
import msgspec
from litestar import Controller, Request, Response, delete, get, post, route
from litestar.di import NamedDependency
from litestar.enums import HttpMethod
from litestar.params import HeaderParameter, JSONBody, Parameter
from litestar.response import Stream

from sealexports.api import openapi, proxy
from sealexports.api.files import file_response, representation
from sealexports.api.schemas import (
    CreateOut,
    EstimateOut,
    ExportBody,
    JobOut,
    JobSummary,
    ListOut,
    ManifestOut,
)
from sealexports.api.services import Services
from sealexports.api.threads import bridge, in_thread, request_deadline
from sealexports.errors import Expired, InvalidRequest, NotFound, TooLarge, UnsupportedMediaType
from sealexports.exports import engine, formats, manifest, values
from sealexports.exports.request import ExportRequest, build_request
from sealexports.jobs import idempotency, lifecycle, view
from sealexports.jobs.runner import request_for, run_export
from sealexports.storage import jobs as store
from sealexports.storage.accounts import Account, Site, now_iso, site_for
from sealexports.storage.database import connect

SiteId = Annotated[str | None, Parameter(description="The site to export from (its slug).", required=False)]
AccountId = Annotated[
    str | None,
    Parameter(description="Same as site_id, as newer clients send it.", required=False),
]
JobId = Annotated[str, Parameter(description="The job's UUID (job_id).")]
MAX_OFFSET = 1_000_000_000
FIRST_CHUNKS = 2  # a raw export's header, then its first rows


def _site(services: Services, account: Account, site_id: str | None, account_id: str | None) -> Site:
    slug = site_id or account_id
    if not slug:
        raise InvalidRequest("site_id is required (as a query parameter)", field="site_id")
    if site_id and account_id and site_id != account_id:
        raise InvalidRequest(
            f"site_id {site_id!r} and account_id {account_id!r} name different sites: give one",
            field="account_id",
        )
    return site_for(services.db.get(), slug, account)


def _request(services: Services, site: Site, data: ExportBody) -> ExportRequest:
    return build_request(
        site.site_id,
        data.export_type,
        data.format,
        data.date_from,
        data.date_to,
        data.filters,
        formula_guard=services.settings.csv_formula_guard,
        compression=data.compression,
    )


def _job(services: Services, site: Site, job_id: str) -> store.JobRecord:
    """The site's job (a read: fast enough for the event loop)."""
    job = store.get_job(services.db.get(), job_id, account_id=site.account.id)
    if job.site_id != site.site_id:
        raise NotFound(f"export job {job_id!r} not found")
    return job


async def _current(services: Services, job: store.JobRecord) -> store.JobRecord:
    """The job, expired first (a write, on a worker thread) if its link has passed its time."""
    if not lifecycle.is_due(job):
        return job

    def expire() -> store.JobRecord:
        conn = services.db.get()
        lifecycle.expire_job(conn, services.settings.exports_dir, job)
        return store.get_job(conn, job.job_id)

    return await anyio.to_thread.run_sync(expire)


def job_out(services: Services, job: store.JobRecord, request: Request[Any, Any, Any]) -> JobOut:
    """The job as the API shows it; its download_url is built for the request reading it."""
    return JobOut(**view.job_object(job, proxy.base_url(services.settings, str(request.base_url))))


def _estimate_out(est: engine.Estimate, warnings: list[str]) -> EstimateOut:
    return EstimateOut(
        estimated_rows=est.estimated_rows,
        estimated_size_bytes=est.estimated_size_bytes,
        estimated_size_human=est.estimated_size_human,
        recommended_format=est.recommended_format,  # type: ignore[arg-type]
        will_use_background_job=est.will_use_background_job,
        estimated_duration_seconds=est.estimated_duration_seconds,
        warnings=warnings,
    )


async def require_json(request: Request[Any, Any, Any]) -> None:
    """Bodies are JSON: another declared Content-Type is a 415 (none at all is taken as JSON).
    Routes with `opt={"ndjson": True}` (POST /events) also take NDJSON."""
    if request.method == "POST":
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        takes_ndjson = bool(request.route_handler.opt.get("ndjson"))
        if takes_ndjson and media_type in ("application/x-ndjson", "application/ndjson"):
            return
        if media_type and media_type != "application/json" and not media_type.endswith("+json"):
            ndjson = " or application/x-ndjson" if takes_ndjson else ""
            raise UnsupportedMediaType(f"Content-Type must be application/json{ndjson}, got {media_type!r}")


class ExportsController(Controller):
    path = "/api/v1/exports"
    tags = ("exports",)

    @post(
        "/",
        status_code=201,
        summary="Create an export job",
        operation_id="createExport",
        responses=openapi.CREATE,
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ExportBody],
        account: NamedDependency[Account],
        services: NamedDependency[Services],
        site_id: SiteId = None,
        account_id: AccountId = None,
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(
                name="Idempotency-Key",
                required=False,
                description="Makes a retry safe: the same key and request within 24 hours get the "
                "first answer again (the job as it is now) and start nothing; another request: 422.",
            ),
        ] = None,
    ) -> Response[Any]:
        """Under the sync row limit the file is generated during the request (`completed`);
        at or over it a background job starts (`pending`): poll GET /exports/{job_id}."""
        site = _site(services, account, site_id, account_id)
        req = _request(services, site, data)
        deadline = request_deadline(services)
        base = str(request.base_url)

        def work(made: Callable[[str], None] | None = None) -> CreateOut:
            conn = services.db.get()
            max_rows = services.settings.plans[site.account.plan].max_rows
            est = engine.estimate_within(
                conn, req, deadline, services.settings.sync_row_limit, max_rows, bound_on_timeout=True
            )
            warnings = values.warnings_within(conn, req, deadline)
            # A small export is created claimed by this process, so no worker takes it meanwhile.
            lease = None if est.will_use_background_job else services.queue.lease
            job = lifecycle.create_job(conn, services.settings, site, req, est, claimed_by=lease)
            if made is not None:
                made(job.job_id)
            poll = services.job_url(job.job_id, site.site_id, proxy.base_url(services.settings, base))
            if lease is None:
                services.queue.enqueue(job.job_id)
                message = f"Export job created. Poll GET {poll} until it completes."
                # The job as created (pending): a worker may have claimed it already, any worker
                # on any doorbell, and the answer should not depend on that race.
                return CreateOut(
                    job=job_out(services, job, request),
                    estimate=_estimate_out(est, warnings),
                    message=message,
                    warnings=warnings,
                )
            exports_dir = services.settings.exports_dir
            run_export(
                conn,
                exports_dir,
                services.tokens,
                job.job_id,
                lease.owner,
                deadline=deadline,
                formula_guard=services.settings.csv_formula_guard,
            )
            message = "Export completed. Ready for download."
            job = store.get_job(conn, job.job_id)
            if job.status == lifecycle.Status.PENDING:  # stopped by a disconnect or a shutdown
                services.queue.enqueue(job.job_id)
                message = f"Export continues in the background. Poll GET {poll} until it completes."
            if job.status == lifecycle.Status.FAILED:
                message = f"Export failed: {job.error_message}"
            return CreateOut(
                job=job_out(services, job, request),
                estimate=_estimate_out(est, warnings),
                message=message,
                warnings=warnings,
            )

        if idempotency_key is None:
            return Response(await in_thread(work, deadline, request.receive), status_code=201)
        settings = services.settings

        def once() -> Response[Any]:
            def create(made: Callable[[str], None]) -> tuple[str, str]:
                out = work(made)
                return out.job.job_id, msgspec.json.encode(out).decode()

            outcome = idempotency.run_once(
                services.db.get(),
                site.account.id,
                idempotency_key,
                idempotency.fingerprint(site.site_id, msgspec.to_builtins(data)),
                create,
                wait_seconds=settings.query_timeout_seconds,
                stale_seconds=2 * settings.query_timeout_seconds + 60,
            )
            job = store.find_job(services.db.get(), outcome.job_id) if outcome.replayed else None
            if outcome.response is None:  # its first request died after making the job: that job
                conn = services.db.get()
                job = store.get_job(conn, outcome.job_id)
                est = engine.estimate(conn, req, settings.sync_row_limit)
                poll = services.job_url(job.job_id, site.site_id, proxy.base_url(settings, base))
                body = msgspec.to_builtins(
                    CreateOut(
                        job=job_out(services, job, request),
                        estimate=_estimate_out(est, []),
                        message=f"Export job created. Poll GET {poll} until it completes.",
                    )
                )
            else:
                body = json.loads(outcome.response)
            if job is not None:  # the same answer, its job as it is now
                body["job"] = msgspec.to_builtins(job_out(services, job, request))
            headers = {"Idempotent-Replayed": "true" if outcome.replayed else "false"}
            return Response(body, status_code=201, headers=headers)

        return await in_thread(once, deadline, request.receive)

    @post(
        "/estimate",
        status_code=200,
        summary="Estimate an export's size",
        operation_id="estimateExport",
        responses=openapi.ESTIMATE,
    )
    async def estimate(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ExportBody],
        account: NamedDependency[Account],
        services: NamedDependency[Services],
        site_id: SiteId = None,
        account_id: AccountId = None,
    ) -> EstimateOut:
        """Rows, bytes and time an export would take, without creating a job."""
        site = _site(services, account, site_id, account_id)
        req = _request(services, site, data)
        deadline = request_deadline(services)

        def work() -> EstimateOut:
            conn = services.db.get()
            max_rows = services.settings.plans[site.account.plan].max_rows
            est = engine.estimate_within(
                conn, req, deadline, services.settings.sync_row_limit, max_rows, bound_on_timeout=True
            )
            return _estimate_out(est, values.warnings_within(conn, req, deadline))

        return await in_thread(work, deadline, request.receive)

    @get("/", summary="List export jobs", operation_id="listExports", responses=openapi.LIST)
    async def list(
        self,
        request: Request[Any, Any, Any],
        account: NamedDependency[Account],
        services: NamedDependency[Services],
        site_id: SiteId = None,
        account_id: AccountId = None,
        limit: Annotated[int, Parameter(ge=1, le=100, description="Max results (1-100).")] = 20,
        # Bounded: past SQLite's integer range a huge offset was a 500 (OverflowError).
        offset: Annotated[int, Parameter(ge=0, le=MAX_OFFSET, description="Skip this many results.")] = 0,
        include_expired: Annotated[bool, Parameter(description="Include expired exports.")] = False,
    ) -> ListOut:
        """The site's export jobs, newest first."""
        site = _site(services, account, site_id, account_id)
        conn = services.db.get()
        if store.expired_jobs(conn, now_iso()):  # rare: expire them first, off the event loop
            await anyio.to_thread.run_sync(
                lambda: lifecycle.expire_jobs(services.db.get(), services.settings.exports_dir)
            )
        with request_deadline(services).running(conn):
            jobs, total = store.list_jobs(
                conn, site.site_id, limit=limit, offset=offset, include_expired=include_expired
            )
        summaries = []
        for job in jobs:
            full = job_out(services, job, request)
            summaries.append(
                JobSummary(
                    id=full.id,
                    job_id=full.job_id,
                    export_type=full.export_type,
                    format=full.format,
                    compression=full.compression,
                    status=full.status,
                    actual_rows=full.actual_rows,
                    file_size_human=full.file_size_human,
                    download_url=full.download_url,
                    created_at=full.created_at,
                )
            )
        return ListOut(exports=summaries, total=total)

    @get(
        "/{job_id:str}", summary="Get an export job's status", operation_id="getExport", responses=openapi.JOB
    )
    async def status(
        self,
        request: Request[Any, Any, Any],
        job_id: JobId,
        account: NamedDependency[Account],
        services: NamedDependency[Services],
        site_id: SiteId = None,
        account_id: AccountId = None,
    ) -> JobOut:
        """The job object, as in the create response."""
        site = _site(services, account, site_id, account_id)
        return job_out(services, await _current(services, _job(services, site, job_id)), request)

    @get(
        "/{job_id:str}/manifest",
        summary="Get an export file's manifest",
        operation_id="getExportManifest",
        responses=openapi.MANIFEST,
    )
    async def manifest(
        self,
        job_id: JobId,
        account: NamedDependency[Account],
        services: NamedDependency[Services],
        site_id: SiteId = None,
        account_id: AccountId = None,
    ) -> ManifestOut:
        """What was asked (type, dates, filters, format), the site's time zone, the columns and
        their types, and the file's rows, bytes and SHA-256, when it was generated and how fresh
        its data was. 409 until the job has completed."""
        site = _site(services, account, site_id, account_id)
        job = await _current(services, _job(services, site, job_id))
        return msgspec.convert(manifest.of_job(request_for(job), site.timezone, job), ManifestOut)

    @delete(
        "/{job_id:str}",
        status_code=204,
        sync_to_thread=True,
        summary="Cancel or delete an export",
        operation_id="deleteExport",
        responses=openapi.JOB,
    )
    def remove(
        self,
        job_id: JobId,
        account: NamedDependency[Account],
        services: NamedDependency[Services],
        site_id: SiteId = None,
        account_id: AccountId = None,
    ) -> None:
        """Pending: never runs. Generating: stops and leaves no file. Completed: its file is
        deleted. Afterwards the job is gone (404) and its download link dead."""
        site = _site(services, account, site_id, account_id)
        lifecycle.delete_job(services.db.get(), services.settings.exports_dir, _job(services, site, job_id))

    @route(
        "/download/{download_token:str}",
        http_method=[HttpMethod.GET, HttpMethod.HEAD],  # clients and proxies probe with HEAD
        sync_to_thread=True,
        summary="Download a completed export",
        operation_id=openapi.operation_ids({"GET": "downloadExport", "HEAD": "checkExportDownload"}),
        responses=openapi.DOWNLOAD,
        operation_class=openapi.DownloadOperation,
    )
    def download(
        self,
        request: Request[Any, Any, Any],
        download_token: Annotated[str, Parameter(description="From download_url.")],
        services: NamedDependency[Services],
    ) -> Response[Any]:
        """No authentication: the signed token is the credential. 410 once expired.
        Resumable: `Range` (one range: 206, or 416 past the end; several: the whole file),
        `If-Range`, `If-None-Match` (304) and `If-Match` (412) against the ETag, the file's SHA-256,
        also sent as `Repr-Digest`. HEAD answers the same status and headers, without the file."""
        conn = services.db.get()
        job_id, expired = services.tokens.open(download_token)
        job = store.find_job(conn, job_id)
        if job is None or job.download_token != download_token:
            raise NotFound("download link not found")
        if expired or lifecycle.is_due(job):
            lifecycle.expire_job(conn, services.settings.exports_dir, job)
            raise Expired("this download link has expired; create a new export")
        if job.status == lifecycle.Status.EXPIRED:
            raise Expired("this download link has expired; create a new export")
        path = services.settings.exports_dir / (job.file_name or "")
        if job.status != lifecycle.Status.COMPLETED or not job.file_name or not path.is_file():
            raise Expired("the export file is no longer available; create a new export")
        req = request_for(job)
        return file_response(request, path, req.file_name, req.media_type, representation(job, path))

    @post(
        "/stream",
        status_code=200,
        summary="Stream a small export",
        operation_id="streamExport",
        responses=openapi.STREAM,
        operation_class=openapi.FileOperation,
    )
    async def stream(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ExportBody],
        account: NamedDependency[Account],
        services: NamedDependency[Services],
        site_id: SiteId = None,
        account_id: AccountId = None,
    ) -> Stream:
        """The file itself, for exports under the sync row limit; 413 at or over it."""
        site = _site(services, account, site_id, account_id)
        req = _request(services, site, data)
        deadline = request_deadline(services)

        def start() -> tuple[sqlite3.Connection, Generator[bytes, None, None], list[bytes]]:
            """Estimate, then make the first chunks here, so that a deadline passed in the
            query's first (for aggregates: only) long step is an error answer, not a cut stream."""
            est = engine.estimate_within(services.db.get(), req, deadline, services.settings.sync_row_limit)
            if est.will_use_background_job:
                raise TooLarge(
                    f"Export too large for streaming ({est.estimated_rows:,} rows). "
                    "Use POST /exports to create a background job."
                )
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
            return conn, chunks, first

        conn, chunks, first = await in_thread(start, deadline, request.receive)
        return Stream(
            bridge(conn, chunks, deadline, first),
            media_type=req.media_type,
            headers={
                "Content-Disposition": f'attachment; filename="{req.file_name}"',
                "Cache-Control": "no-store",
            },
        )
