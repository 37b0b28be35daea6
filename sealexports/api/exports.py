"""The seven /exports endpoints. Each parses, calls one use case of `jobs.service` on a worker
thread, and formats: no SQL and no rules here."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import anyio
from litestar import Controller, Request, delete, get, post, route
from litestar.app import Litestar
from litestar.di import NamedDependency
from litestar.enums import HttpMethod
from litestar.params import JSONBody, Parameter
from litestar.response import File, Stream
from litestar.response.file import ASGIFileResponse

from sealexports.api import openapi, proxy
from sealexports.api.params import AccountId, SiteId, site_of
from sealexports.api.schemas import (
    EXPORT_TYPE_NAMES,
    FORMAT_NAMES,
    STATUS_NAMES,
    CreateOut,
    EstimateOut,
    ExportBody,
    JobOut,
    JobSummary,
    ListOut,
)
from sealexports.api.threads import bridge, in_thread, request_deadline
from sealexports.errors import TooLarge
from sealexports.exports import engine
from sealexports.exports.request import ExportRequest, build_request
from sealexports.jobs import service
from sealexports.services import Services
from sealexports.storage.accounts import Account, Site
from sealexports.storage.export_jobs import JobRecord, Status

JobId = Annotated[str, Parameter(description="The job's UUID (job_id).")]
MAX_OFFSET = 1_000_000_000
Req = Request[Any, Any, Any]


class ExportFile(File):
    """A file response that, for HEAD, sends the headers (Content-Length included) and never
    reads the file (Litestar's File would read it all for the server to throw away)."""

    def to_asgi_response(self, app: Litestar | None, request: Req, **kwargs: Any) -> ASGIFileResponse:
        if request.method == HttpMethod.HEAD:
            kwargs["is_head_response"] = True
            media_type = str(self.media_type)  # Litestar leaves Content-Type out of HEAD answers
            text = media_type.startswith("text/")
            self.headers.setdefault("content-type", f"{media_type}; charset=utf-8" if text else media_type)
        return super().to_asgi_response(app, request, **kwargs)


def _base(services: Services, request: Req) -> str:
    """public_url, or the reading request's own base URL."""
    return proxy.base_url(services.settings, str(request.base_url))


def _job_url(services: Services, job: JobRecord, request: Req) -> str:
    """Where a client polls the job: GET answers 422 without the site in the query."""
    return (
        f"{_base(services, request)}/api/v1/exports/{quote(job.job_id)}?{urlencode({'site_id': job.site_id})}"
    )


def _request(services: Services, site: Site, data: ExportBody) -> ExportRequest:
    return build_request(
        site.site_id,
        data.export_type,
        data.format,
        data.date_from,
        data.date_to,
        data.filters,
        formula_guard=services.settings.csv_formula_guard,
    )


def job_out(services: Services, job: JobRecord, request: Req) -> JobOut:
    """The job as the API shows it; its download_url is built for the request reading it."""
    completed = job.status == Status.COMPLETED and job.download_token
    expired = job.status == Status.EXPIRED
    return JobOut(
        id=job.id,
        job_id=job.job_id,
        site_id=job.site_id,
        export_type=EXPORT_TYPE_NAMES[job.export_type],
        format=FORMAT_NAMES[job.format],
        date_from=job.date_from,
        date_to=job.date_to,
        filters=json.loads(job.filters),
        status=STATUS_NAMES[job.status],
        estimated_rows=job.estimated_rows,
        actual_rows=job.actual_rows,
        file_size_bytes=job.file_size_bytes,
        file_size_human=None if job.file_size_bytes is None else engine.human_size(job.file_size_bytes),
        progress_percent=job.progress_percent,
        download_url=f"{_base(services, request)}/api/v1/exports/download/{job.download_token}"
        if completed
        else None,
        # Kept once expired: when the link stopped working.
        download_expires_at=job.download_expires_at if completed or expired else None,
        error_message=job.error_message,
        started_at=job.started_at,
        completed_at=job.completed_at,
        created_at=job.created_at,
    )


def _summary(full: JobOut) -> JobSummary:
    return JobSummary(**{name: getattr(full, name) for name in JobSummary.__struct_fields__})


def _estimate_out(est: engine.Estimate) -> EstimateOut:
    return EstimateOut(
        estimated_rows=est.estimated_rows,
        estimated_size_bytes=est.estimated_size_bytes,
        estimated_size_human=est.estimated_size_human,
        recommended_format=FORMAT_NAMES[est.recommended_format],
        will_use_background_job=est.will_use_background_job,
        estimated_duration_seconds=est.estimated_duration_seconds,
    )


def _create_out(services: Services, started: service.Started, request: Req) -> CreateOut:
    job = started.job
    poll = f"Poll GET {_job_url(services, job, request)} until it completes."
    if job.status == Status.FAILED:
        message = f"Export failed: {job.error_message}"
    elif started.background:
        message = f"Export job created. {poll}"
    elif job.status == Status.PENDING:
        message = f"Export continues in the background. {poll}"
    else:
        message = "Export completed. Ready for download."
    out = job_out(services, job, request)
    return CreateOut(job=out, estimate=_estimate_out(started.estimate), message=message)


class ExportsController(Controller):
    path = "/api/v1/exports"
    tags = ("exports",)

    @post("/", status_code=201, summary="Create an export job", responses=openapi.CREATE)
    async def create(
        self,
        request: Req,
        data: JSONBody[ExportBody],
        account: NamedDependency[Account],
        services: NamedDependency[Services],
        site_id: SiteId = None,
        account_id: AccountId = None,
    ) -> CreateOut:
        """Under the sync row limit the file is generated during the request (`completed`);
        at or over it a background job starts (`pending`): poll GET /exports/{job_id}."""
        deadline = request_deadline(services)

        def work() -> CreateOut:
            site = site_of(services, account, site_id, account_id)
            started = service.start_export(services, site, _request(services, site, data), deadline)
            return _create_out(services, started, request)

        return await in_thread(work, deadline, request.receive)

    @post("/estimate", status_code=200, summary="Estimate an export's size", responses=openapi.ESTIMATE)
    async def estimate(
        self,
        request: Req,
        data: JSONBody[ExportBody],
        account: NamedDependency[Account],
        services: NamedDependency[Services],
        site_id: SiteId = None,
        account_id: AccountId = None,
    ) -> EstimateOut:
        """Rows, bytes and time an export would take, without creating a job."""
        deadline = request_deadline(services)

        def work() -> engine.Estimate:
            site = site_of(services, account, site_id, account_id)
            return service.estimate(services, site, _request(services, site, data), deadline)

        return _estimate_out(await in_thread(work, deadline, request.receive))

    @get("/", summary="List export jobs", responses=openapi.LIST)
    async def list(
        self,
        request: Req,
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
        deadline = request_deadline(services)

        def work() -> ListOut:
            site = site_of(services, account, site_id, account_id)
            jobs, total = service.list_jobs(
                services, site, deadline, limit=limit, offset=offset, include_expired=include_expired
            )
            return ListOut(exports=[_summary(job_out(services, j, request)) for j in jobs], total=total)

        return await in_thread(work, deadline)

    @get("/{job_id:str}", summary="Get an export job's status", responses=openapi.JOB)
    async def status(
        self,
        request: Req,
        job_id: JobId,
        account: NamedDependency[Account],
        services: NamedDependency[Services],
        site_id: SiteId = None,
        account_id: AccountId = None,
    ) -> JobOut:
        """The job object, as in the create response."""

        def work() -> JobOut:
            site = site_of(services, account, site_id, account_id)
            return job_out(services, service.site_job(services, site, job_id), request)

        return await anyio.to_thread.run_sync(work)

    @delete(
        "/{job_id:str}",
        status_code=204,
        sync_to_thread=True,
        summary="Cancel or delete an export",
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
        service.delete_job(services, site_of(services, account, site_id, account_id), job_id)

    @route(
        "/download/{download_token:str}",
        http_method=[HttpMethod.GET, HttpMethod.HEAD],  # clients and proxies probe with HEAD
        sync_to_thread=True,
        summary="Download a completed export",
        responses=openapi.DOWNLOAD,
        operation_class=openapi.FileOperation,
    )
    def download(
        self,
        download_token: Annotated[str, Parameter(description="From download_url.")],
        services: NamedDependency[Services],
    ) -> ExportFile:
        """No authentication: the signed token is the credential. 410 once expired.
        HEAD answers the same status and headers, without the file."""
        found = service.open_download(services, download_token)
        return ExportFile(
            path=found.path,
            filename=found.file_name,
            media_type=found.media_type,
            content_disposition_type="attachment",
        )

    @post(
        "/stream",
        status_code=200,
        summary="Stream a small export",
        responses=openapi.STREAM,
        operation_class=openapi.FileOperation,
    )
    async def stream(
        self,
        request: Req,
        data: JSONBody[ExportBody],
        account: NamedDependency[Account],
        services: NamedDependency[Services],
        site_id: SiteId = None,
        account_id: AccountId = None,
    ) -> Stream:
        """The file itself, for exports under the sync row limit; 413 at or over it."""
        deadline = request_deadline(services)

        def start() -> service.ExportStream:
            site = site_of(services, account, site_id, account_id)
            try:
                return service.open_stream(services, _request(services, site, data), deadline)
            except TooLarge as e:
                raise TooLarge(f"{e.message} Use POST /exports to create a background job.") from None

        opened = await in_thread(start, deadline, request.receive)
        return Stream(
            bridge(opened, deadline),
            media_type=opened.media_type,
            headers={
                "Content-Disposition": f'attachment; filename="{opened.file_name}"',
                "Cache-Control": "no-store",
            },
        )
