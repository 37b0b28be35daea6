"""`create_app(settings)`: the Litestar application, its dependencies and its lifespan."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from litestar import Litestar, route
from litestar.config.cors import CORSConfig
from litestar.di import NamedDependency, Provide
from litestar.enums import HttpMethod
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Server

from sealexports import __version__
from sealexports.api import openapi, proxy
from sealexports.api.access import AccessLog
from sealexports.api.auth import provide_account
from sealexports.api.docs import LocalSwaggerPlugin
from sealexports.api.errors import EXCEPTION_HANDLERS, add_request_id
from sealexports.api.events import EventsController
from sealexports.api.exports import ExportsController
from sealexports.api.limits import KeyBudgets, rate_limits
from sealexports.api.media import require_json
from sealexports.api.metrics import scrape as metrics_scrape
from sealexports.api.polls import StatusPolls
from sealexports.api.schedules import SchedulesController
from sealexports.api.schemas import HealthOut
from sealexports.api.sites import SitesController
from sealexports.api.ui import routers as ui_routers
from sealexports.api.webhooks import WebhooksController
from sealexports.config import Settings
from sealexports.errors import ConfigError, Unavailable
from sealexports.services import Services, build_services
from sealexports.storage.backup import checkpoint
from sealexports.storage.database import connect
from sealexports.storage.upgrades import migrate

MAX_BODY_BYTES = 64 * 1024


@route(
    "/healthz",
    http_method=[HttpMethod.GET, HttpMethod.HEAD],  # load balancers often probe with HEAD
    sync_to_thread=True,
    summary="Health check",
    operation_id=openapi.operation_ids({"GET": "getHealth", "HEAD": "checkHealth"}),
    responses=openapi.errors({400: "A malformed request.", 503: "The database does not answer."}),
    tags=["service"],
)
def healthz(services: NamedDependency[Services]) -> HealthOut:
    """200 with the version when the database answers."""
    try:
        services.db.get().execute("SELECT 1 FROM export_jobs LIMIT 1").fetchall()
    except Exception as e:
        raise Unavailable("database unavailable") from e
    return HealthOut(status="ok", version=__version__)


def create_app(
    settings: Settings, *, run_workers: bool | None = None, stopping: threading.Event | None = None
) -> Litestar:
    """Build the app. Migrates the database first (backing up an existing one). The huey
    consumer starts with the app (in its worker threads) unless `run_workers` is False or
    `settings.workers` is 0; the lease keeper always does.
    Setting `stopping` (the server does it on SIGTERM) stops every running query at once:
    requests answer 503, background exports go back to pending."""
    settings.configured_secret()  # a bad secret_key_file stops here, before any write
    conn = connect(settings.database, migrate=False)
    try:
        migrate(conn, settings.database)
        services = build_services(settings, conn, stopping)
    finally:
        conn.close()
    start_workers = settings.workers > 0 if run_workers is None else run_workers
    budgets = KeyBudgets(services)
    polls: StatusPolls | None = None

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(lambda: services.queue.start(workers=start_workers))
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(services.queue.stop)
            services.db.close_all()
            if polls is not None:
                polls.db.close_all()
            # The database file alone then holds every commit (a copy of it is whole).
            await anyio.to_thread.run_sync(checkpoint, settings.database)

    handlers: list[Any] = [
        ExportsController,
        EventsController,
        SitesController,
        SchedulesController,
        WebhooksController,
        healthz,
        *ui_routers(),
    ]
    if settings.metrics_token:
        handlers.append(metrics_scrape)
    app = Litestar(
        route_handlers=handlers,
        dependencies={
            "services": Provide(lambda: services, sync_to_thread=False, use_cache=True),
            "account": Provide(provide_account),
        },
        middleware=rate_limits(budgets),
        before_request=require_json,
        exception_handlers=EXCEPTION_HANDLERS,
        before_send=[add_request_id],
        lifespan=[lifespan],
        request_max_body_size=MAX_BODY_BYTES,
        cors_config=cors(settings.cors_origins),
        openapi_config=OpenAPIConfig(
            title="sealexports",
            version=__version__,
            description=(
                "Self-hosted Sealmetrics Data Exports API: bulk CSV, JSON, NDJSON, Excel or Parquet "
                "exports of analytics data."
            ),
            path="/schema",
            render_plugins=[LocalSwaggerPlugin()],
            servers=[Server(url=settings.root_path or "/")],
        ),
        logging_config=None,  # the process's logging is set up once, by sealexports.logs
        debug=False,
    )
    openapi.finish(app)
    _check_root_path(app, settings.root_path)
    # Litestar's middleware runs after routing; the prefix and forwarded Host must be set before.
    # The access log inside: it sees the client and path the proxy headers give; 404s included.
    polls = StatusPolls(app.asgi_handler, services, budgets)
    access = AccessLog(polls, count=bool(settings.metrics_token))
    app.asgi_handler = proxy.ProxyHeaders(access, settings.trusted_proxies, settings.root_path)
    return app


# What a page on another origin may send, and read back, beyond the CORS-safelisted ones.
CORS_REQUEST_HEADERS = [
    "X-API-Key", "Authorization", "Content-Type", "Content-Encoding", "X-Request-ID", "Idempotency-Key",
    "Range", "If-Range", "If-None-Match", "If-Match",
]  # fmt: skip
CORS_EXPOSED_HEADERS = [
    "Content-Disposition",
    "X-Request-ID",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Policy",
    "Idempotent-Replayed",
    "ETag",
    "Repr-Digest",
    "Digest",
    "Content-Range",
    "Accept-Ranges",
]


def cors(origins: tuple[str, ...]) -> CORSConfig | None:
    """Pages on `origins` may call the API (none: no CORS headers at all). Keys travel in headers,
    never cookies, so credentials stay off."""
    if not origins:
        return None
    return CORSConfig(
        allow_origins=list(origins),
        allow_methods=["GET", "HEAD", "POST", "DELETE", "OPTIONS"],
        allow_headers=CORS_REQUEST_HEADERS,
        expose_headers=CORS_EXPOSED_HEADERS,
        allow_credentials=False,
        max_age=600,
    )


def _check_root_path(app: Litestar, root_path: str) -> None:
    """A prefix that starts one of our own routes would make `/api/...` ambiguous (stripped or not)."""
    for r in app.routes:
        if root_path and (r.path == root_path or r.path.startswith(root_path + "/")):
            raise ConfigError(f"root_path {root_path!r} clashes with the service's own route {r.path}")
