"""POST /api/v1/events: a batch of events from a key with the 'write' scope. Parses the body
(JSON array or NDJSON, gzip or not) and calls `ingest.ingest_batch`: no SQL here."""

from __future__ import annotations

from typing import Any

import anyio
from litestar import Controller, Request, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException

from sealexports import metrics
from sealexports.api import openapi
from sealexports.api.auth import provide_writer
from sealexports.api.params import AccountId, SiteId, site_slug
from sealexports.api.schemas import EventsOut, RejectedEventOut
from sealexports.errors import InvalidRequest, TooLarge
from sealexports.ingest import BATCH_MAX_EVENTS, BatchReport, ingest_batch, json_array_items, ndjson_items
from sealexports.ingest.event_format import EventError
from sealexports.ingest.inflate import body_chunks, lines
from sealexports.services import Services
from sealexports.storage.accounts import Account, site_for

MAX_BODY_BYTES = 8 * 1024 * 1024  # as sent (compressed, when gzip), and once decompressed
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson")


def _out(report: BatchReport) -> EventsOut:
    return EventsOut(
        accepted=report.accepted,
        rejected=len(report.rejected),
        duplicates=report.duplicates,
        visits_created=report.counts.visits,
        errors=[
            RejectedEventOut(index=r.line or 0, field=r.field, message=r.message) for r in report.rejected
        ],
    )


class EventsController(Controller):
    path = "/api/v1/events"
    tags = ("events",)
    dependencies = {"account": Provide(provide_writer)}  # noqa: RUF012 (Litestar's own pattern)

    @post(
        "/",
        status_code=200,
        summary="Send a batch of events",
        operation_id="sendEvents",
        request_max_body_size=MAX_BODY_BYTES,
        responses=openapi.EVENTS,
        operation_class=openapi.EventsOperation,
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
        `Content-Encoding: gzip`; at most 8 MiB as sent and 8 MiB decompressed (a body
        of several gzip members is read whole; bytes after the gzip stream are refused). Needs a key
        created with `--scope write` (403 otherwise). Good events are written in one
        transaction; each bad one is listed by index. Events taken in before (same `id`, or
        the same content) are skipped, so a batch can be retried safely."""
        slug = site_slug(site_id, account_id)
        try:
            raw = await request.body()
        except HTTPException as e:
            if e.status_code != 413:
                raise
            raise TooLarge(f"the body is over {MAX_BODY_BYTES // 2**20} MiB; send smaller batches") from None
        encoding = request.headers.get("content-encoding")
        chunks = body_chunks(raw, encoding, limit=MAX_BODY_BYTES)  # 415 for an unknown encoding
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        items = (
            ndjson_items(lines(chunks), first=0) if media_type in NDJSON_TYPES else json_array_items(chunks)
        )

        def ingest() -> BatchReport:
            # Off the event loop: inflating and parsing, item by item, stop at the first item
            # past the batch limit or the first byte past the size limit.
            conn = services.db.get()
            site = site_for(conn, slug, account)
            try:
                return ingest_batch(conn, site, items, max_events=BATCH_MAX_EVENTS)
            except EventError as e:
                raise InvalidRequest(str(e)) from None

        report = await anyio.to_thread.run_sync(ingest)
        metrics.events_received(report.accepted, report.duplicates, len(report.rejected))
        return _out(report)
