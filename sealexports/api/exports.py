"""The seven /exports endpoints. Each parses, calls one use case of `jobs.service` on a worker
thread, and formats: no SQL and no rules here."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

import msgspec
from litestar import Controller, Request, Response, delete, get, post, route
from litestar.di import NamedDependency, Provide
from litestar.enums import HttpMethod
from litestar.params import HeaderParameter, JSONBody, Parameter
from litestar.response import Stream

from sealexports.api import openapi, proxy
from sealexports.api.auth import required_key
from sealexports.api.files import file_response, representation
from sealexports.api.params import AccountId, SiteId, provide_site, site_of
from sealexports.api.schemas import (
    FORMAT_NAMES,
    CreateOut,
    EstimateOut,
    ExportBody,
    JobOut,
    JobSummary,
    ListOut,
    ManifestOut,
)
from sealexports.api.threads import bridge, in_thread, read, request_deadline
from sealexports.errors import TooLarge
from sealexports.exports.request import ExportRequest, build_request
from sealexports.jobs import service, view
from sealexports.services import Services
from sealexports.storage.accounts import Site
from sealexports.storage.export_jobs import JobRecord, Status

JobId = Annotated[str, Parameter(description="The job's UUID (job_id).")]
MAX_OFFSET = 1_000_000_000
Req = Request[Any, Any, Any]


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
        compression=data.compression,
    )


def job_out(services: Services, job: JobRecord, request: Req) -> JobOut:
    """The job as the API shows it; its download_url is built for the request reading it."""
    return job_for(services, job, str(request.base_url))


def job_for(services: Services, job: JobRecord, base_url: str) -> JobOut:
    """The job as the API shows it to a request whose base URL is `base_url`."""
    return JobOut(**view.job_object(job, proxy.base_url(services.settings, base_url)))


def _summary(full: JobOut) -> JobSummary:
    return JobSummary(**{name: getattr(full, name) for name in JobSummary.__struct_fields__})


def _estimate_out(estimated: service.Estimated) -> EstimateOut:
    est = estimated.estimate
    return EstimateOut(
        estimated_rows=est.estimated_rows,
        estimated_size_bytes=est.estimated_size_bytes,
        estimated_size_human=est.estimated_size_human,
        recommended_format=FORMAT_NAMES[est.recommended_format],
        will_use_background_job=est.will_use_background_job,
        estimated_duration_seconds=est.estimated_duration_seconds,
        warnings=estimated.warnings,
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
    estimate = _estimate_out(service.Estimated(started.estimate, started.warnings))
    return CreateOut(job=out, estimate=estimate, message=message, warnings=started.warnings)


def _created(
    services: Services, answered: service.Answered, request: Req, *, idempotent: bool
) -> Response[Any]:
    body = answered.body
    if answered.job is not None:  # a replay: the same answer, its job as it is now
        body = {**body, "job": msgspec.to_builtins(job_out(services, answered.job, request))}
    headers = {"Idempotent-Replayed": "true" if answered.replayed else "false"} if idempotent else {}
    return Response(body, status_code=201, headers=headers)


class ExportsController(Controller):
    path = "/api/v1/exports"
    tags = ("exports",)
    dependencies = {"site": Provide(provide_site)}  # noqa: RUF012 (Litestar's own pattern)

    @post(
        "/",
        status_code=201,
        summary="Create an export job",
        operation_id="createExport",
        responses=openapi.CREATE,
    )
    async def create(
        self,
        request: Req,
        data: JSONBody[ExportBody],
        site: NamedDependency[Site],
        services: NamedDependency[Services],
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
        deadline = request_deadline(services)

        def work() -> Response[Any]:
            answered = service.create_export(
                services,
                site,
                _request(services, site, data),
                deadline,
                lambda started: msgspec.to_builtins(_create_out(services, started, request)),
                key=idempotency_key,
                body=msgspec.to_builtins(data),
            )
            return _created(services, answered, request, idempotent=idempotency_key is not None)

        return await in_thread(work, deadline, request.receive)

    @post(
        "/estimate",
        status_code=200,
        summary="Estimate an export's size",
        operation_id="estimateExport",
        responses=openapi.ESTIMATE,
    )
    async def estimate(
        self,
        request: Req,
        data: JSONBody[ExportBody],
        site: NamedDependency[Site],
        services: NamedDependency[Services],
    ) -> EstimateOut:
        """Rows, bytes and time an export would take, without creating a job."""
        deadline = request_deadline(services)

        def work() -> service.Estimated:
            return service.estimate(services, site, _request(services, site, data), deadline)

        return _estimate_out(await in_thread(work, deadline, request.receive))

    @get("/", summary="List export jobs", operation_id="listExports", responses=openapi.LIST)
    async def list(
        self,
        request: Req,
        site: NamedDependency[Site],
        services: NamedDependency[Services],
        limit: Annotated[int, Parameter(ge=1, le=100, description="Max results (1-100).")] = 20,
        # Bounded: past SQLite's integer range a huge offset was a 500 (OverflowError).
        offset: Annotated[int, Parameter(ge=0, le=MAX_OFFSET, description="Skip this many results.")] = 0,
        include_expired: Annotated[bool, Parameter(description="Include expired exports.")] = False,
    ) -> ListOut:
        """The site's export jobs, newest first."""
        deadline = request_deadline(services)

        def work() -> ListOut:
            jobs, total = service.list_jobs(
                services, site, deadline, limit=limit, offset=offset, include_expired=include_expired
            )
            return ListOut(exports=[_summary(job_out(services, j, request)) for j in jobs], total=total)

        return await in_thread(work, deadline)

    @get(
        "/{job_id:str}", summary="Get an export job's status", operation_id="getExport", responses=openapi.JOB
    )
    async def status(
        self,
        request: Req,
        job_id: JobId,
        services: NamedDependency[Services],
        site_id: SiteId = None,
        account_id: AccountId = None,
    ) -> JobOut:
        """The job object, as in the create response."""
        key = required_key(request.scope)

        def work() -> JobOut:  # the key, the site and the job in one hop: clients poll this one
            site = site_of(services, key, site_id, account_id)
            return job_out(services, service.site_job(services, site, job_id), request)

        return await read(work)

    @get(
        "/{job_id:str}/manifest",
        sync_to_thread=True,
        summary="Get an export file's manifest",
        operation_id="getExportManifest",
        responses=openapi.MANIFEST,
    )
    def manifest(
        self,
        job_id: JobId,
        site: NamedDependency[Site],
        services: NamedDependency[Services],
    ) -> ManifestOut:
        """What was asked (type, dates, filters, format), the site's time zone, the columns and
        their types, and the file's rows, bytes and SHA-256, when it was generated and how fresh
        its data was. 409 until the job has completed."""
        return msgspec.convert(service.job_manifest(services, site, job_id), ManifestOut)

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
        site: NamedDependency[Site],
        services: NamedDependency[Services],
    ) -> None:
        """Pending: never runs. Generating: stops and leaves no file. Completed: its file is
        deleted. Afterwards the job is gone (404) and its download link dead."""
        service.delete_job(services, site, job_id)

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
        request: Req,
        download_token: Annotated[str, Parameter(description="From download_url.")],
        services: NamedDependency[Services],
    ) -> Response[Any]:
        """No authentication: the signed token is the credential. 410 once expired.
        Resumable: `Range` (one range: 206, or 416 past the end; several: the whole file),
        `If-Range`, `If-None-Match` (304) and `If-Match` (412) against the ETag, the file's SHA-256,
        also sent as `Repr-Digest`. HEAD answers the same status and headers, without the file."""
        found = service.open_download(services, download_token)
        info = representation(found.job, found.path)
        return file_response(request, found.path, found.file_name, found.media_type, info)

    @post(
        "/stream",
        status_code=200,
        summary="Stream a small export",
        responses=openapi.STREAM,
        operation_id="streamExport",
        operation_class=openapi.FileOperation,
    )
    async def stream(
        self,
        request: Req,
        data: JSONBody[ExportBody],
        site: NamedDependency[Site],
        services: NamedDependency[Services],
    ) -> Stream:
        """The file itself, for exports under the sync row limit; 413 at or over it."""
        deadline = request_deadline(services)

        def start() -> service.ExportStream:
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
