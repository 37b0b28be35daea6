"""POST /api/v1/events: a batch of events from a key with the 'write' scope. Parses the body
(JSON array or NDJSON, gzip or not) and calls `ingest.ingest_batch`: no SQL here."""

from __future__ import annotations

import zlib
from typing import Annotated, Any

import anyio
from litestar import Controller, Request, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import Parameter

from sealexports import metrics
from sealexports.api.auth import provide_writer
from sealexports.api.schemas import EventsOut, RejectedEventOut
from sealexports.api.services import Services
from sealexports.errors import InvalidRequest, TooLarge, UnsupportedMediaType
from sealexports.ingest import BATCH_MAX_EVENTS, BatchReport, ingest_batch, json_array_items, ndjson_items
from sealexports.ingest.event import EventError
from sealexports.storage.accounts import Account, get_site

MAX_BODY_BYTES = 8 * 1024 * 1024  # as sent (compressed, when gzip)
MAX_INFLATED_BYTES = 32 * 1024 * 1024  # once decompressed
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson")

SiteId = Annotated[
    str | None,
    Parameter(description="The site the events belong to (its slug).", required=False),
]
AccountId = Annotated[
    str | None,
    Parameter(description="Same as site_id, as newer clients send it.", required=False),
]


def inflate(body: bytes, encoding: str | None) -> bytes:
    """The body decoded from its Content-Encoding (gzip or none), at most MAX_INFLATED_BYTES."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise UnsupportedMediaType(f"Content-Encoding must be gzip (or none), got {encoding!r}")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, MAX_INFLATED_BYTES + 1)
    except zlib.error as e:
        raise InvalidRequest(f"the body is not valid gzip ({e})") from None
    if len(data) > MAX_INFLATED_BYTES:
        raise TooLarge(f"the body is over {MAX_INFLATED_BYTES // 2**20} MiB once decompressed")
    if not inflater.eof:
        raise InvalidRequest("the body is not valid gzip (truncated)")
    return data


def _out(report: BatchReport) -> EventsOut:
    return EventsOut(
        accepted=report.accepted,
        rejected=len(report.rejected),
        duplicates=report.duplicates,
        visits_created=report.counts.visits,
        errors=[RejectedEventOut(index=r.line, field=r.field, message=r.message) for r in report.rejected],
    )


class EventsController(Controller):
    path = "/api/v1/events"
    tags = ("events",)
    dependencies = {"account": Provide(provide_writer)}  # noqa: RUF012 (Litestar's own pattern)

    @post(
        "/",
        status_code=200,
        summary="Send a batch of events",
        request_max_body_size=MAX_BODY_BYTES,
        opt={"ndjson": True},
    )
    async def send(
        self,
        request: Request[Any, Any, Any],
        account: NamedDependency[Account],
        services: NamedDependency[Services],
        site_id: SiteId = None,
        account_id: AccountId = None,
    ) -> EventsOut:
        """Up to 10,000 events in the events format (docs/events.md): a JSON array
        (`Content-Type: application/json`) or one per line (`application/x-ndjson`), optionally
        `Content-Encoding: gzip`; at most 8 MiB as sent, 32 MiB decompressed. Needs a key
        created with `--scope write` (403 otherwise). Good events are written in one
        transaction; each bad one is listed by index. Events taken in before (same `id`, or
        the same content) are skipped, so a batch can be retried safely."""
        slug = site_id or account_id
        if not slug:
            raise InvalidRequest("site_id is required (as a query parameter)", field="site_id")
        try:
            raw = await request.body()
        except HTTPException as e:
            if e.status_code != 413:
                raise
            raise TooLarge(f"the body is over {MAX_BODY_BYTES // 2**20} MiB; send smaller batches") from None
        body = inflate(raw, request.headers.get("content-encoding"))
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type in NDJSON_TYPES:
            items = ndjson_items(body.splitlines(), first=0)
        else:
            try:
                items = json_array_items(body)
            except EventError as e:
                raise InvalidRequest(str(e)) from None

        def ingest() -> BatchReport:
            conn = services.db.get()
            site = get_site(conn, slug, account_id=account.id)
            return ingest_batch(conn, site, items, max_events=BATCH_MAX_EVENTS)

        report = await anyio.to_thread.run_sync(ingest)
        metrics.events_received(report.accepted, report.duplicates, len(report.rejected))
        return _out(report)
