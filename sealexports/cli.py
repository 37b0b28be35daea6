"""The `sealexports` command line: a thin shell over the library."""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from sealexports import __version__, demo
from sealexports.config import PLAN_NAMES, Settings, load_settings
from sealexports.errors import SealExportsError
from sealexports.exports import engine
from sealexports.exports.request import build_request, parse_date
from sealexports.exports.types import EXPORT_TYPES, FORMATS
from sealexports.ingest import ImportReport, Meter, csv_items, import_events, ndjson_items
from sealexports.storage import accounts
from sealexports.storage.database import connect, transaction
from sealexports.storage.events import (
    InsertCounts,
    delete_site_data,
    insert_visits,
    site_has_data,
)

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"]}


class State:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.settings.database)
        return self._conn


pass_state = click.make_pass_decorator(State)


class Group(click.Group):
    """Turns domain errors into one `Error:` line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SealExportsError as e:
            raise click.ClickException(e.message) from e
        except sqlite3.DatabaseError as e:
            raise click.ClickException(f"database error: {e}") from e
        except OSError as e:  # e.g. an output path under a regular file, a full disk
            raise click.ClickException(f"{e.strerror or e}: {e.filename}" if e.filename else str(e)) from e


def silent_option(f: F) -> F:
    return click.option("--silent", is_flag=True, help="No progress bar or summary.")(f)


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="SEALEXPORTS_CONFIG",
    help="TOML config file (also SEALEXPORTS_CONFIG).",
)
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite database file.")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, db: str | None) -> None:
    """Bulk exports of web analytics data (CSV or JSON) from one SQLite file.

    \b
    Example:
        sealexports seed && sealexports export --site demo --type sources \\
            --from 2025-01-01 --to 2025-01-31
    """
    try:
        settings = load_settings(config_file)
    except SealExportsError as e:
        raise click.ClickException(e.message) from e
    if db:
        settings = settings.replace(database=Path(db))
    ctx.obj = State(settings)


@cli.command()
@pass_state
def init(state: State) -> None:
    """Create or migrate the database; safe to run again.

    \b
    Example:
        sealexports --db /var/lib/sealexports/sealexports.db init
    """
    state.conn  # noqa: B018 (connecting migrates)
    click.echo(f"Database ready: {state.settings.database}")


@cli.group(cls=Group)
def sites() -> None:
    """Create and list sites.

    \b
    Example:
        sealexports sites create shop --timezone Europe/Madrid && sealexports sites list
    """


@sites.command("create")
@click.argument("site")
@click.option("--name", help="Display name (default: the site id).")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone of the site.")
@click.option("--plan", type=click.Choice(PLAN_NAMES), help="The account's plan (default: free).")
@click.option("--account", help="Account name (default: the site id).")
@pass_state
def sites_create(
    state: State, site: str, name: str | None, timezone: str, plan: str | None, account: str | None
) -> None:
    """Create SITE, and its account if new.

    \b
    Example:
        sealexports sites create shop --timezone Europe/Madrid --plan pro --account acme
    """
    s = accounts.create_site(state.conn, site, name=name, timezone=timezone, plan=plan, account=account)
    click.echo(f"Created site {s.site_id} (account {s.account.name}, plan {s.account.plan}, {s.timezone})")


@sites.command("list")
@pass_state
def sites_list(state: State) -> None:
    """List sites with their account, plan and time zone.

    \b
    Example:
        sealexports sites list
    """
    _table(
        ["site_id", "name", "account", "plan", "timezone"],
        [
            (s.site_id, s.name, s.account.name, s.account.plan, s.timezone)
            for s in accounts.list_sites(state.conn)
        ],
    )


@cli.group(cls=Group)
def keys() -> None:
    """Create, list and revoke API keys.

    \b
    Example:
        sealexports keys create --site demo --name ci && sealexports keys list
    """


@keys.command("create")
@click.option("--site", required=True, help="A site of the account the key is for.")
@click.option("--name", help="A label for the key.")
@click.option(
    "--scope", type=click.Choice(accounts.SCOPES), default="read", show_default=True,
    help="read: exports. write: sending events (POST /api/v1/events), nothing else.",
)  # fmt: skip
@pass_state
def keys_create(state: State, site: str, name: str | None, scope: str) -> None:
    """Create an API key and print it (only the key, on stdout). It is not shown again.

    \b
    Example:
        KEY=$(sealexports keys create --site demo --name ci)
        INGEST_KEY=$(sealexports keys create --site demo --scope write --name tracker)
    """
    click.echo(accounts.create_key(state.conn, site, name, scope))


@keys.command("list")
@pass_state
def keys_list(state: State) -> None:
    """List keys by prefix (never the keys themselves).

    \b
    Example:
        sealexports keys list
    """
    _table(
        ["prefix", "account", "scope", "name", "created_at", "last_used_at", "revoked_at"],
        [
            (k.prefix, k.account, k.scope, k.name, k.created_at, k.last_used_at, k.revoked_at)
            for k in accounts.list_keys(state.conn)
        ],
    )


@keys.command("revoke")
@click.argument("prefix")
@pass_state
def keys_revoke(state: State, prefix: str) -> None:
    """Revoke the key starting with PREFIX (as shown by `keys list`).

    \b
    Example:
        sealexports keys revoke sm_AbCdEfGh
    """
    accounts.revoke_key(state.conn, prefix)
    click.echo(f"Revoked {prefix}")


@cli.command()
@click.option("--site", default="demo", show_default=True)
@click.option("--days", type=click.IntRange(1, 3660), default=demo.DEFAULT_DAYS, show_default=True)
@click.option("--end", "end_", metavar="YYYY-MM-DD", help="Last day (default: today, UTC).")
@click.option("--visits", type=click.IntRange(1), default=demo.DEFAULT_VISITS, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--replace", is_flag=True, help="Delete the site's existing data first.")
@silent_option
@pass_state
def seed(
    state: State,
    site: str,
    days: int,
    end_: str | None,
    visits: int,
    seed: int,
    replace: bool,
    silent: bool,
) -> None:
    """Fill a site with deterministic demo traffic (creates the site if needed).

    The `demo` site is created in Europe/Madrid, so day boundaries follow DST.

    \b
    Example:
        sealexports seed --site demo --days 90 --end 2025-03-31 --visits 200000
    """
    end = parse_date(end_, "--end") if end_ else datetime.now(UTC).date()
    conn = state.conn
    try:
        target = accounts.get_site(conn, site)
    except SealExportsError:
        target = accounts.create_site(
            conn, site, name="Demo site" if site == "demo" else None,
            timezone="Europe/Madrid" if site == "demo" else "UTC",
        )  # fmt: skip
    started = time.perf_counter()
    with _progress(silent, visits, "Seeding") as advance, transaction(conn):
        if site_has_data(conn, site):
            if not replace:
                raise click.ClickException(f"site {site!r} already has data; use --replace to seed it again")
            delete_site_data(conn, site)
        counts = insert_visits(
            conn,
            target,
            demo.generate(target.timezone, end=end, days=days, visits=visits, seed=seed),
            progress=lambda c: advance(c.visits),
        )
    elapsed = time.perf_counter() - started
    if not silent:
        click.echo(_seed_summary(site, counts, elapsed), err=True)


def _seed_summary(site: str, c: InsertCounts, elapsed: float) -> str:
    return (
        f"Seeded {site}: {c.visits:,} visits, {c.pageviews:,} page views, {c.conversions:,} "
        f"conversions, {c.microconversions:,} microconversions in {elapsed:.1f}s "
        f"({c.rows / elapsed:,.0f} rows/s)"
    )


@cli.command("import")
@click.argument("file", metavar="FILE|-")
@click.option("--site", required=True, help="The site the events belong to.")
@click.option(
    "--format", "fmt", type=click.Choice(["ndjson", "csv"]),
    help="Default: csv for *.csv and *.csv.gz, else ndjson.",
)  # fmt: skip
@click.option("--skip-invalid", is_flag=True, help="Import the good events; list the bad ones.")
@silent_option
@pass_state
def import_(state: State, file: str, site: str, fmt: str | None, skip_invalid: bool, silent: bool) -> None:
    """Import events from FILE (or - for stdin) into SITE: NDJSON or CSV, see docs/events.md.

    Every line is checked before anything is written: a bad line stops the import with its
    line number, unless --skip-invalid. Events imported before are skipped, so importing a
    file again adds nothing. *.gz files are read through gzip.

    \b
    Example:
        sealexports import events.ndjson --site shop
        zcat events.csv.gz | sealexports import - --site shop --format csv --skip-invalid
    """
    target = accounts.get_site(state.conn, site)
    if fmt is None:
        fmt = "csv" if file.removesuffix(".gz").endswith(".csv") else "ndjson"
    started = time.perf_counter()
    with _open_input(file) as (fh, size):
        meter = Meter()
        lines = meter.lines(fh)
        items = csv_items(lines) if fmt == "csv" else ndjson_items(lines)
        with _Phases(silent, size, meter) as progress:
            report = import_events(state.conn, target, items, skip_invalid=skip_invalid, progress=progress)
    if not silent:
        click.echo(_import_summary(report, time.perf_counter() - started), err=True)


@contextmanager
def _open_input(name: str) -> Iterator[tuple[Any, int | None]]:
    """The input as binary lines, and its size in bytes when known (for the progress bar)."""
    if name == "-":
        yield sys.stdin.buffer, None
    elif name.endswith(".gz"):
        import gzip

        with gzip.open(name, "rb") as fh:
            yield fh, None
    else:
        with open(name, "rb") as fh:
            yield fh, Path(name).stat().st_size


_PHASE_LABELS = {"read": "Reading", "check": "Checking", "write": "Importing"}


class _Phases:
    """Progress bars on stderr for an import's passes: reading (bytes), checking, writing."""

    def __init__(self, silent: bool, size: int | None, meter: Meter) -> None:
        self.silent, self.size, self.meter = silent, size, meter
        self.phase: str | None = None
        self.bar: Any = None

    def __enter__(self) -> _Phases:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if self.silent:
            return
        length = self.size if phase == "read" else total
        if phase != self.phase:
            self.close()
            self.phase = phase
            if length:
                self.bar = click.progressbar(length=length, label=_PHASE_LABELS[phase], file=sys.stderr)
                self.bar.__enter__()
        if self.bar is not None and length:
            pos = self.meter.bytes if phase == "read" else done
            self.bar.update(min(pos, length) - self.bar.pos)


def _import_summary(r: ImportReport, elapsed: float) -> str:
    c = r.counts
    lines = [
        f"Imported {r.imported:,} events ({c.visits:,} new visits, {c.pageviews:,} page views, "
        f"{c.conversions:,} conversions, {c.microconversions:,} microconversions) in {elapsed:.1f}s "
        f"({r.records / max(elapsed, 1e-9):,.0f} events/s); skipped {r.duplicates:,} duplicates"
    ]
    if r.invalid or r.rejected:
        lines[0] += f", {r.invalid + r.rejected:,} bad lines:"
        lines += [f"  line {e.line}: {e}" for e in r.errors]
        if len(r.errors) < r.invalid + r.rejected:
            lines.append(f"  ... and {r.invalid + r.rejected - len(r.errors):,} more")
    return "\n".join(lines)


@cli.command()
@click.option("--site", required=True)
@click.option("--type", "export_type", required=True, type=click.Choice(list(EXPORT_TYPES)))
@click.option("--from", "date_from", required=True, metavar="YYYY-MM-DD")
@click.option("--to", "date_to", required=True, metavar="YYYY-MM-DD")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="csv", show_default=True)
@click.option(
    "--filter", "filters", multiple=True, metavar="KEY=VALUE",
    help="A filter; repeat a key for a list (any of the values).",
)  # fmt: skip
@click.option("--advanced", metavar="EXPR", help="advanced_filters, e.g. path:contains:/blog/")
@click.option(
    "-o", "--output", metavar="FILE|-",
    help="Output file or folder, or - for stdout (default: sealmetrics_{type}_{from}_{to}.{ext}).",
)  # fmt: skip
@silent_option
@pass_state
def export(
    state: State, site: str, export_type: str, date_from: str, date_to: str, fmt: str,
    filters: tuple[str, ...], advanced: str | None, output: str | None, silent: bool,
) -> None:  # fmt: skip
    """Export one type of data for a date range to a CSV or JSON file.

    \b
    Example:
        sealexports export --site demo --type sources --from 2025-01-01 --to 2025-01-31 \\
            --filter country=ES --filter device_type=mobile --advanced path:contains:/blog/
    """
    raw_filters = _parse_filters(filters, advanced)
    conn = state.conn
    target = accounts.get_site(conn, site)
    req = build_request(target.site_id, export_type, fmt, date_from, date_to, raw_filters)
    if output == "-":
        out = sys.stdout.buffer
        for chunk in engine.chunks(conn, req):
            out.write(chunk)
        out.flush()
        return
    dest = Path(output) if output else Path(req.file_name)
    if dest.is_dir():
        dest = dest / req.file_name
    total = engine.count_estimate(conn, req)
    started = time.perf_counter()
    with _progress(silent, total, "Exporting") as advance:
        info = engine.write_file(conn, req, dest, progress=advance)
    elapsed = time.perf_counter() - started
    if not silent:
        click.echo(
            f"Wrote {info.rows:,} rows ({engine.human_size(info.size_bytes)}) to {dest} in "
            f"{elapsed:.2f}s ({info.rows / max(elapsed, 1e-9):,.0f} rows/s)",
            err=True,
        )


@cli.command()
@click.option("--host", help="Interface to bind (default: config `host`, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: config `port`, 8000).")
@click.option("--demo", "demo_mode", is_flag=True, help="Seed the demo site if empty; print an API key.")
@pass_state
def serve(state: State, host: str | None, port: int | None, demo_mode: bool) -> None:
    """Run the HTTP API, with background export workers in the same process.

    Migrates the database first. Ctrl-C or SIGTERM stops cleanly: running exports go back
    to the queue and run again at the next start.

    \b
    Example:
        sealexports serve --demo
        sealexports --config /etc/sealexports.toml serve --host 0.0.0.0 --port 8080
    """
    import uvicorn

    from sealexports.api.app import create_app

    settings = state.settings.replace(**{k: v for k, v in (("host", host), ("port", port)) if v})
    if settings.host != state.settings.host or settings.port != state.settings.port:
        settings = settings.replace(public_url=_public_url(state.settings, settings))
    demo_key = _prepare_demo(state) if demo_mode else None
    app = create_app(settings)
    if demo_key:
        click.echo(_demo_banner(settings, demo_key), err=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")


def _public_url(before: Settings, after: Settings) -> str:
    """Keep an explicitly configured public_url; otherwise follow --host/--port."""
    if before.public_url != f"http://{before.host}:{before.port}":
        return before.public_url
    return f"http://{after.host}:{after.port}"


def _prepare_demo(state: State) -> str:
    conn = state.conn
    try:
        accounts.get_site(conn, "demo")
    except SealExportsError:
        accounts.create_site(conn, "demo", name="Demo site", timezone="Europe/Madrid")
    if not site_has_data(conn, "demo"):
        site = accounts.get_site(conn, "demo")
        with _progress(False, demo.DEFAULT_VISITS, "Seeding demo data") as advance, transaction(conn):
            insert_visits(
                conn, site, demo.generate(site.timezone, end=datetime.now(UTC).date()),
                progress=lambda c: advance(c.visits),
            )  # fmt: skip
    return accounts.create_key(conn, "demo", "serve --demo")


def _demo_banner(settings: Settings, key: str) -> str:
    today = datetime.now(UTC).date()
    start = date.fromordinal(today.toordinal() - 29)
    base = settings.public_url
    body = f'{{"export_type": "sources", "date_from": "{start}", "date_to": "{today}"}}'
    return (
        f"\nDemo site 'demo' is ready. API key: {key}\n"
        f"API docs: {base}/schema\n"
        "Try:\n"
        f'  curl -s -X POST "{base}/api/v1/exports/stream?site_id=demo" -H "X-API-Key: {key}" '
        f"-H 'Content-Type: application/json' -d '{body}'\n"
    )


@cli.command()
@pass_state
def worker(state: State) -> None:
    """Run the background export workers on their own, until Ctrl-C or SIGTERM.

    For deployments that set `workers = 0` so that `serve` runs no workers itself.
    Run one worker process at most: it puts back jobs left unfinished when it starts.

    \b
    Example:
        SEALEXPORTS_WORKERS=4 sealexports worker
    """
    import signal
    import threading

    from sealexports.jobs.queue import JobQueue
    from sealexports.storage.database import secret_key
    from sealexports.tokens import DownloadTokens

    settings = state.settings
    if settings.workers < 1:
        settings = settings.replace(workers=2)
    secret = settings.secret_key or secret_key(state.conn)
    queue = JobQueue(settings, DownloadTokens(secret, settings.download_ttl_seconds))
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    queue.start()
    click.echo(f"Worker running with {settings.workers} threads; Ctrl-C to stop.", err=True)
    done.wait()
    click.echo("Stopping: running exports go back to the queue.", err=True)
    queue.stop()


def _parse_filters(pairs: tuple[str, ...], advanced: str | None) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.ClickException(f"--filter takes KEY=VALUE, got {pair!r}")
        if key in filters:
            previous = filters[key]
            filters[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            filters[key] = value
    if advanced is not None:
        if "advanced_filters" in filters:
            raise click.ClickException("give advanced filters with --advanced or --filter, not both")
        filters["advanced_filters"] = advanced
    return filters


@contextmanager
def _progress(silent: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; the callback takes the absolute count done so far."""
    if silent:
        yield lambda done: None
        return
    with click.progressbar(length=max(total, 1), label=label, file=sys.stderr) as bar:

        def advance(done: int) -> None:
            bar.update(min(done, total) - bar.pos)

        yield advance


def _table(header: list[str], rows: list[tuple[Any, ...]]) -> None:
    cells = [header, *[["" if v is None else str(v) for v in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def main() -> None:
    cli(prog_name="sealexports")
