"""Request and response bodies (msgspec), with every field described for the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta

ExportTypeName = Literal[
    "pages", "sources", "mediums", "campaigns", "terms", "countries", "devices", "browsers", "os",
    "conversions", "microconversions", "time_series", "landing_pages",
]  # fmt: skip
FormatName = Literal["csv", "json", "ndjson", "xlsx", "parquet"]
CompressionName = Literal["none", "gzip", "zstd"]
StatusName = Literal["pending", "estimating", "generating", "completed", "failed", "expired"]
# The library's names as the literals above: tests/test_schemas.py ties each to its source
# (exports.types.EXPORT_TYPES, exports.formats.FORMATS, storage.export_jobs.Status).
EXPORT_TYPE_NAMES: dict[str, ExportTypeName] = {name: name for name in get_args(ExportTypeName)}
FORMAT_NAMES: dict[str, FormatName] = {name: name for name in get_args(FormatName)}
STATUS_NAMES: dict[str, StatusName] = {name: name for name in get_args(StatusName)}
Date = Annotated[
    str, Meta(description="A date as YYYY-MM-DD, in the site's time zone.", examples=["2025-01-01"])
]
Timestamp = Annotated[str, Meta(description="ISO 8601 UTC time, e.g. 2025-01-10T14:30:00Z.")]
FilterValue = str | list[str]
WARNINGS = (
    "Why the export may come out empty, for people (not in the spec; clients may ignore it): the "
    "dates have no data (and which do), or a filter value never occurs in them (and which do)."
)


class ExportBody(msgspec.Struct, forbid_unknown_fields=True):
    """What to export."""

    export_type: Annotated[ExportTypeName, Meta(description="Type of data to export.")]
    date_from: Annotated[Date, Meta(description="First day of the range (YYYY-MM-DD), inclusive.")]
    date_to: Annotated[Date, Meta(description="Last day of the range (YYYY-MM-DD), inclusive.")]
    format: Annotated[
        FormatName,
        Meta(
            description="csv (default), json (one array), ndjson (one object a line), xlsx "
            "(one sheet; at most 1,048,575 rows, else 413) or parquet (typed columns; 501 if the "
            "server lacks pyarrow, the parquet extra)."
        ),
    ] = "csv"
    compression: Annotated[
        CompressionName,
        Meta(
            description="none (default), gzip (.gz) or zstd (.zst): the file is compressed as it is "
            "written, and served as application/gzip or application/zstd. csv, json and ndjson only."
        ),
    ] = "none"
    filters: Annotated[
        dict[str, FilterValue] | None,
        Meta(
            description=(
                "Filter conditions: utm_source, utm_medium, utm_campaign, utm_term, utm_content, "
                "country, device_type, browser, os, content_grouping, conversion_type (a string, "
                "or a list meaning any of them), and advanced_filters "
                "(`field:op:value[,field:op:value...]`, ops eq ne contains not_contains regex "
                "not_regex in not_in)."
            ),
            examples=[{"country": "ES", "utm_medium": "cpc", "advanced_filters": "path:contains:/products/"}],
        ),
    ] = None


class EstimateOut(msgspec.Struct):
    estimated_rows: Annotated[int, Meta(description="Approximate number of rows.")]
    estimated_size_bytes: Annotated[int, Meta(description="Approximate file size in bytes.")]
    estimated_size_human: Annotated[str, Meta(description="The size for people, e.g. 8.1 MB.")]
    recommended_format: Annotated[FormatName, Meta(description="The format we suggest for this size.")]
    will_use_background_job: Annotated[
        bool, Meta(description="True if the export is at or over the sync row limit (10,000 by default).")
    ]
    estimated_duration_seconds: Annotated[int, Meta(description="Approximate processing time.")]
    warnings: Annotated[list[str], Meta(description=WARNINGS)] = []


class JobOut(msgspec.Struct):
    id: Annotated[int, Meta(description="Sequential id of the job.")]
    job_id: Annotated[str, Meta(description="The job's UUID, used in URLs.")]
    site_id: Annotated[str, Meta(description="The site the data comes from.")]
    export_type: Annotated[ExportTypeName, Meta(description="Type of data exported.")]
    format: Annotated[FormatName, Meta(description="File format.")]
    compression: Annotated[CompressionName, Meta(description="none, gzip or zstd.")]
    date_from: Annotated[str, Meta(description="First day of the range.")]
    date_to: Annotated[str, Meta(description="Last day of the range.")]
    filters: Annotated[dict[str, Any], Meta(description="The filters as given.")]
    status: Annotated[
        StatusName, Meta(description="pending, estimating, generating, completed, failed or expired.")
    ]
    estimated_rows: Annotated[int, Meta(description="Rows estimated before generating.")]
    actual_rows: Annotated[int | None, Meta(description="Rows in the file, once completed.")]
    file_size_bytes: Annotated[int | None, Meta(description="File size in bytes, once completed.")]
    file_size_human: Annotated[str | None, Meta(description="File size for people, e.g. 44.2 KB.")]
    progress_percent: Annotated[int, Meta(description="0-100; moves while generating.")]
    download_url: Annotated[str | None, Meta(description="Signed link to the file while completed.")]
    download_expires_at: Annotated[Timestamp | None, Meta(description="When the download link expires.")]
    error_message: Annotated[str | None, Meta(description="Why the export failed; null unless failed.")]
    started_at: Annotated[Timestamp | None, Meta(description="When generation started.")]
    completed_at: Annotated[Timestamp | None, Meta(description="When the job completed or failed.")]
    created_at: Annotated[Timestamp, Meta(description="When the job was created.")]


class CreateOut(msgspec.Struct):
    job: Annotated[JobOut, Meta(description="The new job.")]
    estimate: Annotated[EstimateOut, Meta(description="The size estimate the job was planned with.")]
    message: Annotated[str, Meta(description="What happens next, for people.")]
    warnings: Annotated[list[str], Meta(description=WARNINGS)] = []


class JobSummary(msgspec.Struct):
    id: Annotated[int, Meta(description="Sequential id of the job.")]
    job_id: Annotated[str, Meta(description="The job's UUID.")]
    export_type: Annotated[ExportTypeName, Meta(description="Type of data exported.")]
    format: Annotated[FormatName, Meta(description="File format.")]
    compression: Annotated[CompressionName, Meta(description="none, gzip or zstd.")]
    status: Annotated[StatusName, Meta(description="The job's status.")]
    actual_rows: Annotated[int | None, Meta(description="Rows in the file, once completed.")]
    file_size_human: Annotated[str | None, Meta(description="File size for people.")]
    download_url: Annotated[str | None, Meta(description="Signed link to the file while completed.")]
    created_at: Annotated[Timestamp, Meta(description="When the job was created.")]


class ListOut(msgspec.Struct):
    exports: Annotated[list[JobSummary], Meta(description="Jobs, newest first.")]
    total: Annotated[int, Meta(description="How many jobs match, over all pages.")]


class ProblemOut(msgspec.Struct):
    field: Annotated[str | None, Meta(description="The field at fault; null: the whole input.")]
    line: Annotated[int | None, Meta(description="Where, in input of many items; else null.")]
    message: Annotated[str, Meta(description="What is wrong with it.")]


class ErrorInfo(msgspec.Struct):
    code: Annotated[str, Meta(description="Stable machine-readable error code.")]
    message: Annotated[str, Meta(description="What went wrong.")]
    detail: Annotated[
        list[ProblemOut] | None, Meta(description="For invalid input, each problem found; else null.")
    ] = None


class ErrorOut(msgspec.Struct):
    detail: Annotated[str, Meta(description="What went wrong, for people.")]
    error: Annotated[ErrorInfo, Meta(description="The same, for programs.")]
    request_id: Annotated[str, Meta(description="Also in the X-Request-ID header; quote it in reports.")]


class HealthOut(msgspec.Struct):
    status: Annotated[str, Meta(description="ok")]
    version: Annotated[str, Meta(description="sealexports version.")]


class RejectedEventOut(msgspec.Struct):
    index: Annotated[
        int, Meta(description="The event's position: in the JSON array, or its NDJSON line, from 0.")
    ]
    field: Annotated[str | None, Meta(description="The field at fault, if one is.")]
    message: Annotated[str, Meta(description="Why the event was not taken in.")]


class EventsOut(msgspec.Struct):
    accepted: Annotated[int, Meta(description="Events written.")]
    rejected: Annotated[int, Meta(description="Events refused; see errors.")]
    duplicates: Annotated[
        int, Meta(description="Events skipped: taken in before (same id or content), or twice in the batch.")
    ]
    visits_created: Annotated[int, Meta(description="New visits; events may also continue stored visits.")]
    errors: Annotated[list[RejectedEventOut], Meta(description="Each refused event, by index.")]


class ManifestRequest(msgspec.Struct):
    site_id: str
    export_type: str
    date_from: Annotated[str, Meta(description="YYYY-MM-DD, the site's day.")]
    date_to: str
    filters: dict[str, Any]
    format: str
    compression: str


class ManifestFile(msgspec.Struct):
    name: str
    media_type: str
    size_bytes: int
    sha256: Annotated[str, Meta(description="Hex SHA-256 of the file's bytes (as served).")]
    rows: Annotated[int, Meta(description="Data rows (a CSV's header not counted).")]


class ManifestColumn(msgspec.Struct, omit_defaults=True):
    name: str
    type: Annotated[
        str,
        Meta(description="string, integer, decimal (scale), json, date, timestamp (UTC)."),
    ]
    scale: int | None = None


class ManifestFreshness(msgspec.Struct):
    latest_event_at: Annotated[
        str | None,
        Meta(description="UTC time of the site's newest event on its days, at generation."),
    ]
    scope: str


class ManifestOut(msgspec.Struct):
    manifest_version: int
    job_id: str | None
    request: ManifestRequest
    timezone: Annotated[str, Meta(description="The site's IANA time zone: its days are the dates.")]
    file: ManifestFile
    columns: list[ManifestColumn]
    generated_at: str
    freshness: ManifestFreshness
