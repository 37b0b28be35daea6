"""What the OpenAPI schema says beyond what Litestar infers: our error body for each status an
operation may give, the file formats of the two file endpoints, and bodies that refuse unknown fields."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from litestar import Litestar
from litestar.enums import HttpMethod
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
    SecurityScheme,
)

from sealexports.api.schemas import CreateOut, ErrorOut, ExportBody
from sealexports.exports import formats


def errors(described: Mapping[int, str]) -> dict[int, ResponseSpec]:
    """Each status with our error body, {detail, error: {code, message, detail}, request_id}."""
    return {
        status: ResponseSpec(data_container=ErrorOut, description=text, generate_examples=False)
        for status, text in sorted(described.items())
    }


_MALFORMED = {400: "A malformed request."}  # replaces the 400 Litestar documents with its own body
_KEYED = {
    **_MALFORMED,
    401: "Missing, unknown or revoked API key.",
    404: "Unknown site, or a site of another account.",
    422: "Invalid parameters (site_id missing, a value out of range): error.detail lists each.",
    429: "Over the key's requests per minute: see Retry-After.",
}
_PARQUET = {501: "format parquet, and this server lacks pyarrow (the parquet extra)."}
_BODY = {
    400: "The body is not valid JSON.",
    413: "The body is over 64 KiB.",
    415: "The Content-Type is not application/json.",
    422: "Invalid body or parameters (type, dates, filters): error.detail lists each bad field.",
}

CREATE = {
    # The handler answers a Response (a replayed Idempotency-Key gives back the first answer), so
    # its 201 body is declared here: generated clients then know it is a CreateOut.
    201: ResponseSpec(
        data_container=CreateOut,
        description="The job (completed, or pending for a background export), its estimate and a message.",
        generate_examples=False,
    ),
    **errors(
        {
            **_KEYED,
            **_BODY,
            409: "Another request with this Idempotency-Key is still running: retry in a moment.",
            413: "The body is over 64 KiB, or the export over the plan's max rows per export (or an "
            "xlsx sheet's rows).",
            422: "Invalid body or parameters (type, dates, filters), or an Idempotency-Key used with another "
            "request in the last 24 hours: error.detail lists each bad field.",
            429: "Over the key's requests per minute, or the plan's concurrent exports: see Retry-After.",
            **_PARQUET,
        }
    ),
}
ESTIMATE = errors({**_KEYED, **_BODY, **_PARQUET})
STREAM = errors(
    {
        **_KEYED,
        **_BODY,
        413: "The body is over 64 KiB, or the export has too many rows to stream (or for an xlsx sheet).",
        **_PARQUET,
    }
)
LIST = errors(_KEYED)
MANIFEST = errors(
    {
        **_KEYED,
        404: "Unknown job or site, or one of another account.",
        409: "The job has not completed (pending, running or failed): no file to describe yet.",
    }
)
JOB = errors({**_KEYED, 404: "Unknown job or site, or one of another account."})
_WEBHOOKS = {**_KEYED, 403: "A key bound to one site: webhooks need an account-wide read key."}
WEBHOOK = errors({**_WEBHOOKS, 404: "Unknown endpoint or delivery, or one of another account."})
SCHEDULE = errors({**_KEYED, 404: "Unknown site or schedule, or one of another account."})
SCHEDULE_CREATE = errors(
    {**_KEYED, **_BODY, 422: "A bad type, range, cadence, filter or folder: error.detail says which."}
)
WEBHOOK_CREATE = errors({**_WEBHOOKS, **_BODY, 422: "A bad URL (not http(s), a private address) or event."})
DOWNLOAD = {
    **errors(
        {
            **_MALFORMED,
            404: "Unknown, tampered or deleted download link.",
            410: "The link has expired, or its file is gone: create a new export.",
            412: "If-Match names another file (its ETag differs).",
            416: "The Range starts past the end of the file; Content-Range: bytes */{size}.",
        }
    ),
    206: ResponseSpec(
        data_container=None,
        description="One byte range of the file (`Range: bytes=a-b`, `a-` or `-n`), with Content-Range; "
        "an If-Range naming another file gets the whole file (200) instead. Several ranges in one "
        "request get the whole file.",
    ),
    304: ResponseSpec(
        data_container=None,
        description="If-None-Match matches the ETag (or If-Modified-Since is not older than the file): "
        "no body, the same validators.",
    ),
}

SITES = errors({status: text for status, text in _KEYED.items() if status != 404})
VALUES = errors({**_KEYED, 422: "An unknown filter key, a bad date or limit: error.detail says which."})
EVENTS = errors(
    {
        **_MALFORMED,
        401: "Missing, unknown or revoked API key.",
        403: "The key has no 'write' scope.",
        404: "Unknown site, or a site of another account.",
        413: "Over 10,000 events, or over 8 MiB as sent or once decompressed.",
        415: "The Content-Type or Content-Encoding is not one of those taken.",
        422: "site_id missing, the body not a JSON array (or NDJSON) or not valid gzip, or bytes after it.",
        429: "Over the key's requests per minute: see Retry-After.",
    }
)


def _file_content() -> dict[str, OpenAPIMediaType]:
    """Each format's and compression's registered media type, as exports/formats.py lists them."""
    content = {
        f.media_type: OpenAPIMediaType(
            schema=Schema(type=OpenAPIType.STRING, description=f"{f.name}: {f.description}.")
        )
        for f in formats.FORMATS.values()
    }
    content["application/json"] = OpenAPIMediaType(
        schema=Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(type=OpenAPIType.OBJECT),
            description="One array of objects keyed by the CSV header.",
        )
    )
    for c in formats.COMPRESSIONS.values():
        if c.media_type:
            content[c.media_type] = OpenAPIMediaType(
                schema=Schema(
                    type=OpenAPIType.STRING,
                    description=f"A csv, json or ndjson file compressed with {c.name} ({c.suffix}).",
                )
            )
    return content


_FILE_CONTENT = _file_content()


def _header(description: str) -> OpenAPIHeader:
    return OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), description=description)


FILE_HEADERS = {  # a download's validators and digests, on 200, 206 and 304 alike
    "etag": _header(
        'The file\'s SHA-256 in hex, quoted: "9f86d0...". Strong: use it in If-None-Match, If-Range.'
    ),
    "repr-digest": _header("RFC 9530: sha-256=:{base64 of the SHA-256}: of the whole file (also on a 206)."),
    "digest": _header("RFC 3230, for older clients: SHA-256={base64 of the SHA-256}."),
    "accept-ranges": _header("bytes: a download can be resumed with Range."),
    "cache-control": _header("private, no-store: a tenant's data, never kept by shared caches."),
}


@dataclass
class FileOperation(Operation):
    """An operation whose 200 is an export file: text/csv, application/json and so on, as the
    request's `format` and `compression` say, sent as an attachment (Litestar alone would
    document one media type)."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            ok.description = "The export file, as an attachment."
            ok.content = dict(_FILE_CONTENT)
            headers = dict(ok.headers or {})
            if "last-modified" in headers:  # an HTTP date, not the date-time Litestar declares
                headers["last-modified"] = OpenAPIHeader(
                    schema=Schema(type=OpenAPIType.STRING),
                    description="When the file was written (HTTP date).",
                )
            headers["content-disposition"] = OpenAPIHeader(
                schema=Schema(type=OpenAPIType.STRING),
                description='attachment; filename="..." (the file name for the export).',
                required=True,
            )
            ok.headers = headers


@dataclass
class DownloadOperation(FileOperation):
    """GET/HEAD of a finished file: its 200 also carries validators and digests."""

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            ok.headers = {**(ok.headers or {}), **FILE_HEADERS}


_EVENT = Schema(  # any JSON value: the batch is taken, and an item that is no event is listed in errors
    description="One event of the events format (docs/events.md), a JSON object; any other item is "
    "refused alone and listed in errors."
)


@dataclass
class EventsOperation(Operation):
    """POST /api/v1/events reads its body itself (a JSON array or NDJSON, maybe gzip): say so.

    NDJSON is told in the body's description, not as a second media type: with two, generated
    clients (openapi-python-client 0.29) pick the body by `isinstance(body, list[Any])`, a
    TypeError on every call."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="Up to 10,000 events, as a JSON array (application/json) or as NDJSON "
            "(Content-Type: application/x-ndjson, one event a line); Content-Encoding: gzip is taken.",
            content={
                "application/json": OpenAPIMediaType(schema=Schema(type=OpenAPIType.ARRAY, items=_EVENT)),
            },
        )


# How a client sends its key; every operation takes either, but a download and /healthz.
SECURITY_SCHEMES = {
    "ApiKey": SecurityScheme(
        type="apiKey", name="X-API-Key", security_scheme_in="header", description="An API key, sm_..."
    ),
    "Bearer": SecurityScheme(type="http", scheme="bearer", description="The same key as a bearer token."),
}
_KEYED_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]
_OPEN_PATHS = ("/healthz", "/api/v1/exports/download/{download_token}")
_RATE_HEADERS = {
    "Retry-After": ("integer", "Seconds to wait before trying again."),
    "X-RateLimit-Limit": ("integer", "Requests a minute the key's plan allows."),
    "X-RateLimit-Remaining": ("integer", "Requests left in the current minute (0 here)."),
    "X-RateLimit-Reset": ("integer", "Seconds until the minute's window resets."),
    "X-RateLimit-Policy": ("string", "The limit and its window, e.g. '240; w=60'."),
}
_DATE_FIELDS = {"date_from", "date_to", "first_day", "last_day"}


def operation_ids(names: Mapping[str, str]) -> Callable[[Any, HttpMethod | str, list[Any]], str]:
    """operationId by HTTP method, for a handler that answers more than one (GET and HEAD)."""

    def choose(handler: Any, method: HttpMethod | str, path: list[Any]) -> str:
        return names[str(getattr(method, "value", method)).upper()]

    return choose


def finish(app: Litestar) -> None:
    """What Litestar leaves out of the schema: how keys are sent (the docs' Authorize button and
    generated clients use it), the rate limit headers of a 429, dates as `format: date` and
    times as `date-time`, and bodies that refuse unknown fields."""
    schema = app.openapi_schema
    schema.components.security_schemes = dict(SECURITY_SCHEMES)
    for path, item in (schema.paths or {}).items():
        for method in ("get", "head", "post", "delete"):
            op = getattr(item, method, None)
            if not isinstance(op, Operation):
                continue
            op.security = [] if path in _OPEN_PATHS else list(_KEYED_SECURITY)
            for param in op.parameters or []:
                if isinstance(param, Parameter) and param.name in _DATE_FIELDS:
                    _set_format(param.schema, "date")
            limited = (op.responses or {}).get("429")
            if isinstance(limited, OpenAPIResponse):
                limited.headers = {
                    name: OpenAPIHeader(schema=Schema(type=OpenAPIType(kind)), description=text)
                    for name, (kind, text) in _RATE_HEADERS.items()
                }
    for component in schema.components.schemas.values():
        for name, prop in (component.properties or {}).items():
            if name in _DATE_FIELDS:
                _set_format(prop, "date")
            elif name.endswith("_at"):
                _set_format(prop, "date-time")
    strict_bodies(app)


def _set_format(schema: Any, fmt: str) -> None:
    """On a string schema, or the string branch of a nullable one."""
    if not isinstance(schema, Schema):
        return
    if schema.type == OpenAPIType.STRING:
        schema.format = OpenAPIFormat(fmt)
    for branch in schema.one_of or []:
        _set_format(branch, fmt)


def strict_bodies(app: Litestar) -> None:
    """Say what msgspec enforces (forbid_unknown_fields) and Litestar leaves out: a request body
    with an unknown field is refused (422)."""
    schemas = app.openapi_schema.components.schemas
    for struct in (ExportBody,):
        schemas[struct.__name__].additional_properties = False
