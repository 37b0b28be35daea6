"""Running the service: `serve` and `worker`."""

from __future__ import annotations

import gc
import logging
import threading
from datetime import UTC, date, datetime
from types import FrameType
from typing import Any

import click

from sealexports import logs
from sealexports.cli import State, cli, pass_state, progress_bar
from sealexports.config import Settings
from sealexports.errors import SealExportsError
from sealexports.logs import LEVELS
from sealexports.storage import accounts
from sealexports.storage.database import transaction
from sealexports.storage.visits import (
    insert_visits,
    site_has_data,
)

log = logging.getLogger("sealexports.worker")


log_level_option = click.option(
    "--log-level",
    type=click.Choice(LEVELS),
    help="Least severe level logged (default: config `log_level`, info).",
)


# On SIGTERM, open requests (a slow download) get this long before the workers are stopped;
# deploy/sealexports.service's TimeoutStopSec leaves room for it.
GRACEFUL_SHUTDOWN_SECONDS = 20


@cli.command()
@click.option("--host", help="Interface to bind (default: config `host`, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: config `port`, 8000).")
@click.option("--demo", "demo_mode", is_flag=True, help="Seed the demo site if empty; print an API key.")
@log_level_option
@pass_state
def serve(state: State, host: str | None, port: int | None, demo_mode: bool, log_level: str | None) -> None:
    """Run the HTTP API, with background export workers in the same process.

    Migrates the database first (backing it up beside itself when a migration is pending);
    only `--demo` creates a missing one. Ctrl-C or SIGTERM stops cleanly: running exports go back
    to the queue, for another process or the next start.

    \b
    Example:
        sealexports serve --demo
        sealexports --config /etc/sealexports.toml serve --host 0.0.0.0 --port 8080
    """
    from sealexports.api.app import create_app
    from sealexports.api.proxy import link_warnings

    if not demo_mode:
        state.existing().close()  # a mistyped --db is an error; `serve --demo` creates one
    state.set_up()
    settings = state.settings.replace(**{k: v for k, v in (("host", host), ("port", port)) if v})
    level = log_level or settings.log_level
    logs.configure(level, settings.log_format)
    demo_key = _prepare_demo(state) if demo_mode else None
    state.close()  # the app opens its own connections; an open one would hold the WAL back at exit
    stopping = threading.Event()
    app = create_app(settings, stopping=stopping)
    for warning in link_warnings(settings):
        logging.getLogger("sealexports").warning(warning)
    if demo_key:
        click.echo(_demo_banner(settings, demo_key), err=True)
    _run_uvicorn(app, settings, level, stopping)


def _run_uvicorn(app: Any, settings: Settings, level: str, stopping: threading.Event) -> None:
    """uvicorn, which on SIGINT/SIGTERM first stops every running query (their requests answer
    503, background exports go back to pending), so a stop never waits behind a long query."""
    import uvicorn  # not at the top: every other command starts faster without it

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            stopping.set()
            super().handle_exit(sig, frame)

    # proxy_headers off: the app honours forwarded headers itself, from `trusted_proxies` only.
    # uvicorn's lines go through our handler (log_config=None); its access log is ours (api/access.py).
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=level,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=settings.timeout_keep_alive,
    )
    # The app and everything imported so far live as long as the process: out of the cyclic
    # collector's full scans, which otherwise stall every request in flight (a status poll's p99
    # under load 63-75 ms before, 30-37 ms after).
    gc.freeze()
    Server(config).run()


def _local_url(settings: Settings) -> str:
    """Where this machine reaches the service (for the demo banner)."""
    if settings.public_url:
        return settings.public_url
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}{settings.root_path}"


def _prepare_demo(state: State) -> str:
    conn = state.conn
    try:
        accounts.get_site(conn, "demo")
    except SealExportsError:
        accounts.create_site(conn, "demo", name="Demo site", timezone="Europe/Madrid")
    if not site_has_data(conn, "demo"):
        from sealexports import demo  # builds its tables on import: only when seeding

        site = accounts.get_site(conn, "demo")
        with progress_bar(False, demo.DEFAULT_VISITS, "Seeding demo data") as advance, transaction(conn):
            visits = demo.generate(site.timezone, end=demo.today(site.timezone), until=datetime.now(UTC))
            insert_visits(conn, site, visits, progress=lambda c: advance(c.visits))
    return accounts.demo_key(conn, "demo")


def _demo_banner(settings: Settings, key: str) -> str:
    today = datetime.now(UTC).date()
    start = date.fromordinal(today.toordinal() - 29)
    base = _local_url(settings)
    body = f'{{"export_type": "sources", "date_from": "{start}", "date_to": "{today}"}}'
    return (
        f"\nDemo site 'demo' is ready. API key: {key}\n"
        f"API docs: {base}/schema\n"
        "Try:\n"
        f'  curl -s -X POST "{base}/api/v1/exports/stream?site_id=demo" -H "X-API-Key: {key}" '
        f"-H 'Content-Type: application/json' -d '{body}'\n"
    )


@cli.command()
@log_level_option
@pass_state
def worker(state: State, log_level: str | None) -> None:
    """Run the background export workers on their own, until Ctrl-C or SIGTERM.

    Any number of worker processes (and `serve`) can share one database: each job is leased
    by the process running it, and taken over by another one only once its lease has run out
    (`job_lease_seconds`), e.g. after a crash. With `workers = 0`, `serve` runs none itself.

    \b
    Example:
        SEALEXPORTS_WORKERS=4 sealexports worker
    """
    import signal
    import threading

    from sealexports.services import build_services
    from sealexports.storage.backup import checkpoint

    settings = state.settings
    logs.configure(log_level or settings.log_level, settings.log_format)
    if settings.workers < 1:
        settings = settings.replace(workers=2)
    queue = build_services(settings, state.conn).queue
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    queue.start()
    log.info("worker running with %d threads; Ctrl-C to stop", settings.workers)
    done.wait()
    log.info("stopping: running exports go back to the queue")
    queue.stop()
    state.close()
    checkpoint(settings.database)
