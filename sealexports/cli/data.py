"""Data in and out: `seed`, `import` and `export`."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sealexports.cli import State, cli, pass_state, progress_bar, silent_option
from sealexports.errors import InvalidEvents, SealExportsError
from sealexports.exports import engine, formats, manifest, values
from sealexports.exports.formats import COMPRESSIONS, FORMATS
from sealexports.exports.request import build_request, parse_date
from sealexports.exports.types import EXPORT_TYPES
from sealexports.storage import accounts
from sealexports.storage.database import transaction
from sealexports.storage.timestamps import now_iso
from sealexports.storage.visits import latest_event_at

if TYPE_CHECKING:
    from sealexports.ingest import ImportReport, Meter
    from sealexports.storage.visits import InsertCounts

# demo.DEFAULT_DAYS and DEFAULT_VISITS (tests/test_cli.py checks): the demo generator and the
# ingestion code are imported by the commands that use them, so `export` starts without them.
DEMO_DAYS, DEMO_VISITS = 90, 200_000


@cli.command()
@click.option("--site", default="demo", show_default=True)
@click.option("--days", type=click.IntRange(1, 3660), default=DEMO_DAYS, show_default=True)
@click.option(
    "--end", "end_", metavar="YYYY-MM-DD",
    help="Last day (default: today in the site's time zone; never later: no events in the future).",
)  # fmt: skip
@click.option("--visits", type=click.IntRange(1), default=DEMO_VISITS, show_default=True)
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
    """Fill a site with deterministic demo traffic (creates the site, and the database, if needed).

    The `demo` site is created in Europe/Madrid, so day boundaries follow DST. The demo ends
    today (in the site's time zone) with the events up to now, never any in the future, and
    the summary says which dates it covers.

    \b
    Example:
        sealexports seed --site demo --days 90 --end 2025-03-31 --visits 200000
    """
    from sealexports import demo
    from sealexports.storage.visits import delete_site_data, insert_visits, site_has_data

    end = parse_date(end_, "--end") if end_ else None
    state.set_up()  # seed may create the database
    conn = state.conn
    try:
        target: accounts.Site | None = accounts.get_site(conn, site)
    except SealExportsError:
        target = None
    timezone = target.timezone if target else "Europe/Madrid" if site == "demo" else "UTC"
    today = demo.today(timezone)
    if end is None:
        end = today
    elif end > today:
        raise click.ClickException(
            f"--end {end} is in the future (today is {today} in {timezone}): a demo has no future events"
        )
    if target is None:
        target = accounts.create_site(
            conn, site, name="Demo site" if site == "demo" else None, timezone=timezone
        )
    started = time.perf_counter()
    with progress_bar(silent, visits, "Seeding") as advance, transaction(conn):
        if site_has_data(conn, site):
            if not replace:
                raise click.ClickException(f"site {site!r} already has data; use --replace to seed it again")
            delete_site_data(conn, site)
        counts = insert_visits(
            conn,
            target,
            demo.generate(
                target.timezone, end=end, days=days, visits=visits, seed=seed, until=datetime.now(UTC)
            ),
            progress=lambda c: advance(c.visits),
        )
    elapsed = time.perf_counter() - started
    if not silent:
        span = f"{end - timedelta(days=days - 1)} to {end}"
        click.echo(_seed_summary(site, counts, elapsed, span), err=True)


def _seed_summary(site: str, c: InsertCounts, elapsed: float, span: str) -> str:
    return (
        f"Seeded {site}: {c.visits:,} visits, {c.pageviews:,} page views, {c.conversions:,} "
        f"conversions, {c.microconversions:,} microconversions in {elapsed:.1f}s "
        f"({c.rows / elapsed:,.0f} rows/s); its dates: {span}"
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
    from sealexports.ingest import Meter, NdjsonLines, csv_items, import_events

    target = accounts.get_site(state.conn, site)
    if fmt is None:
        fmt = "csv" if file.removesuffix(".gz").endswith(".csv") else "ndjson"
    started = time.perf_counter()
    with _open_input(file) as (fh, size):
        meter = Meter()
        lines = meter.lines(fh)
        items = csv_items(lines) if fmt == "csv" else NdjsonLines(lines)
        with _Phases(silent, size, meter) as progress:
            try:
                report = import_events(
                    state.conn, target, items, skip_invalid=skip_invalid, progress=progress, processes=2
                )
            except InvalidEvents as e:
                if not e.problems:  # the input as a whole is unreadable: skipping lines would not help
                    raise
                raise click.ClickException(f"{e.message} (fix the input, or use --skip-invalid)") from e
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
@click.option(
    "--format", "fmt", type=click.Choice(list(FORMATS)),
    help="Default: as -o's extension says (x.ndjson, x.csv.gz), else csv.",
)  # fmt: skip
@click.option(
    "--compress", type=click.Choice(list(COMPRESSIONS)),
    help="gzip or zstd, for csv, json and ndjson. Default: as -o's extension says, else none.",
)  # fmt: skip
@click.option(
    "--filter", "filters", multiple=True, metavar="KEY=VALUE",
    help="A filter; repeat a key for a list (any of the values).",
)  # fmt: skip
@click.option("--advanced", metavar="EXPR", help="advanced_filters, e.g. path:contains:/blog/")
@click.option(
    "-o", "--output", metavar="FILE|-",
    help="Output file or folder, or - for stdout (default: sealmetrics_{type}_{from}_{to}.{ext}).",
)  # fmt: skip
@click.option(
    "--manifest", "manifest_file", metavar="FILE", type=click.Path(dir_okay=False, writable=True),
    help="Also write the file's manifest (JSON: request, columns, rows, bytes, SHA-256) to FILE.",
)  # fmt: skip
@silent_option
@pass_state
def export(
    state: State, site: str, export_type: str, date_from: str, date_to: str, fmt: str | None,
    compress: str | None, filters: tuple[str, ...], advanced: str | None, output: str | None,
    manifest_file: str | None, silent: bool,
) -> None:  # fmt: skip
    """Export one type of data for a date range to a CSV, JSON, NDJSON, XLSX or Parquet file.

    csv, json and ndjson may be compressed (gzip, zstd). The format and compression follow
    -o's extension (x.xlsx; x.ndjson.zst: ndjson, zstd) unless --format and --compress say;
    an extension that contradicts them is an error.

    An export that matches nothing still writes its file (a header, or []) and says why on
    stderr: the dates the site has data for, or the values a filter takes.

    \b
    Example:
        # dates of `sealexports seed --end 2025-03-31` (`seed` prints the dates it covers)
        sealexports export --site demo --type sources --from 2025-03-01 --to 2025-03-31 \\
            --filter country=ES --filter device_type=mobile --advanced path:contains:/blog/
        sealexports export --site demo --type conversions --from 2025-03-01 --to 2025-03-31 \\
            -o march.ndjson.zst
    """
    fmt, compress = _format_of(output, fmt, compress)
    raw_filters = _parse_filters(filters, advanced)
    conn = state.conn
    target = accounts.get_site(conn, site)
    req = build_request(
        target.site_id,
        export_type,
        fmt,
        date_from,
        date_to,
        raw_filters,
        formula_guard=state.settings.csv_formula_guard,
        compression=compress,
    )
    if output == "-" and manifest_file:
        raise click.ClickException("--manifest describes a file: use -o FILE, not stdout")
    if manifest_file and not Path(manifest_file).resolve().parent.is_dir():
        raise click.ClickException(
            f"folder {str(Path(manifest_file).parent)!r} does not exist (create it first)"
        )
    if formats.FORMATS[req.format].max_rows:  # an xlsx sheet: too many rows is refused first
        formats.check_rows(req.format, engine.count_rows(conn, req))
    if output == "-":
        try:
            for chunk in engine.chunks(conn, req):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            _reader_stopped()
            return
        _warn(values.warnings(conn, req))
        return
    dest = _destination(output, req.file_name)
    total = engine.count_estimate(conn, req)
    latest = (
        latest_event_at(conn, req.site_id, str(req.date_from), str(req.date_to)) if manifest_file else None
    )
    started = time.perf_counter()
    try:
        with progress_bar(silent, total, "Exporting") as advance:
            # A file the operator asked for where they chose: an ordinary one, as the umask says.
            info = engine.write_file(
                conn,
                req,
                dest,
                progress=advance,
                mode=0o666 & ~_umask(),
                second_core=_second_core(),
                digest=bool(manifest_file),
            )
    except BrokenPipeError:  # a FIFO whose reader closed it
        return
    elapsed = time.perf_counter() - started
    if manifest_file:
        generated = now_iso()
        assert info.sha256 is not None  # asked for with the manifest
        produced = manifest.Produced(dest.name, info.rows, info.size_bytes, info.sha256, generated, latest)
        manifest.write(Path(manifest_file), manifest.build(req, target.timezone, produced))
    if not silent:
        click.echo(
            f"Wrote {info.rows:,} rows ({engine.human_size(info.size_bytes)}) to {dest} in "
            f"{elapsed:.2f}s ({info.rows / max(elapsed, 1e-9):,.0f} rows/s)",
            err=True,
        )
    notes = values.warnings(conn, req)
    if info.rows == 0 and not notes:
        notes = [f"no rows match these filters from {req.date_from} to {req.date_to}"]
    _warn(notes)


def _format_of(output: str | None, fmt: str | None, compress: str | None) -> tuple[str, str]:
    """(format, compression): as given, else as -o's extension says, else csv and none. An
    extension that says otherwise than --format or --compress is an error: `-o x.json` never
    holds CSV, nor `-o x.csv` gzip."""
    if output is None or output == "-" or output.endswith("/"):
        return fmt or "csv", compress or "none"
    name = Path(output).name
    named_fmt, named_compression = formats.from_file_name(name)
    if named_fmt and fmt and named_fmt != fmt:
        raise click.ClickException(f"-o {name} names a {named_fmt} file, but --format is {fmt}")
    if (named_fmt or named_compression) and compress and compress != (named_compression or "none"):
        said = f"a {named_compression} file" if named_compression else "an uncompressed file"
        raise click.ClickException(f"-o {name} names {said}, but --compress is {compress}")
    return fmt or named_fmt or "csv", compress or named_compression or "none"


def _warn(notes: list[str]) -> None:
    """Why an export may be empty, on stderr, even with --silent: the export still succeeded."""
    for note in notes:
        click.echo(f"Warning: {note}", err=True)


def _second_core() -> bool:
    """Whether a big raw export's later part may go to a second process: a core is idle (when
    none is, a second process only adds its start: measured 1.15x the time of one process on a
    machine with a load average of 7.6 on 2 cores)."""
    cores = os.cpu_count() or 1
    return cores >= 2 and _idle_core(cores)


def _idle_core(cores: int) -> bool:
    """Whether another core is free now: the tasks running or ready to run at this instant
    (/proc/loadavg's fourth field, this process included) leave one. Elsewhere, the one-minute
    load average, which lags: it still counts processes that ended seconds ago."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] <= cores - 1
    return running <= cores - 1


def _destination(output: str | None, file_name: str) -> Path:
    """Where -o points: a file, or the default name inside a folder (an existing one, or any path
    ending in '/'). The folder must exist: a typo there should not become a new tree."""
    if output is None:
        return Path(file_name)
    dest = Path(output)
    if output.endswith("/") or dest.is_dir():
        dest = dest / file_name
    if not dest.parent.is_dir():
        raise click.ClickException(f"folder {str(dest.parent)!r} does not exist (create it first)")
    return dest


def _reader_stopped() -> None:
    """The reader of stdout stopped early (`| head`): it had what it wanted, so end quietly with
    status 0. Stdout then points at /dev/null, so that Python's flush at exit does not fail too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (a test runner's stdout)
        pass


def _umask() -> int:
    mask = os.umask(0o022)  # reading it means setting it: put it back at once (one thread here)
    os.umask(mask)
    return mask


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
