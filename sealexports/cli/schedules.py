"""`schedules`: recurring exports of a site, each run an ordinary export job."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import click

from sealexports.cli import Group, State, cli, pass_state, print_table
from sealexports.cli.data import _parse_filters
from sealexports.exports.formats import COMPRESSIONS, FORMATS
from sealexports.exports.types import EXPORT_TYPES
from sealexports.schedules import cadence, ranges
from sealexports.storage import accounts
from sealexports.storage import schedules as store


@cli.group(cls=Group)
def schedules() -> None:
    """Recurring exports: a relative range, daily, weekly or monthly at a local time.

    \b
    Example:
        sealexports schedules add --site demo --type sources --range yesterday --every daily --at 06:00
        sealexports schedules list
    """


@schedules.command("add")
@click.option("--site", required=True, help="The site to export from.")
@click.option("--type", "export_type", required=True, type=click.Choice(list(EXPORT_TYPES)))
@click.option("--range", "range_name", required=True, type=click.Choice(ranges.RANGES),
              help="The days each run exports, as the site's local days when it runs.")  # fmt: skip
@click.option("--every", required=True, type=click.Choice(cadence.EVERY))
@click.option("--at", "at", required=True, metavar="HH:MM", help="Local time (the site's time zone).")
@click.option("--day", help="weekly: mon..sun; monthly: 1..31 (past a month's end: its last day).")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="csv", show_default=True)
@click.option("--compress", type=click.Choice(list(COMPRESSIONS)), help="none (default), gzip or zstd.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="A filter; repeat a key for a list (any of the values).")  # fmt: skip
@click.option("--advanced", metavar="EXPR", help="advanced_filters, e.g. path:contains:/blog/")
@click.option("--deliver-to-dir", metavar="DIR", help="Also copy each file and its manifest into DIR.")
@pass_state
def schedules_add(
    state: State, site: str, export_type: str, range_name: str, every: str, at: str, day: str | None,
    fmt: str, compress: str | None, filters: tuple[str, ...], advanced: str | None,
    deliver_to_dir: str | None,
) -> None:  # fmt: skip
    """Add a schedule and print its id (only the id, on stdout).

    \b
    Example:
        ID=$(sealexports schedules add --site demo --type pages --range previous_week \\
            --every weekly --day mon --at 07:30 --filter country=ES --deliver-to-dir /srv/exports)
    """
    from sealexports.schedules import runs  # the job runner and its metrics: only these commands

    target = accounts.get_site(state.conn, site)
    schedule = runs.add(
        state.conn, target, export_type=export_type, fmt=fmt, compression=compress,
        filters=_parse_filters(filters, advanced),
        range_name=range_name, every=every, at=at, day=day, deliver_to_dir=deliver_to_dir,
    )  # fmt: skip
    click.echo(schedule.schedule_id)


@schedules.command("list")
@pass_state
def schedules_list(state: State) -> None:
    """List schedules with their next run (in the site's time zone) and last job.

    \b
    Example:
        sealexports schedules list
    """
    from sealexports.schedules import runs  # the job runner and its metrics: only these commands

    rows = []
    for s in store.list_schedules(state.conn):
        tz = ZoneInfo(accounts.get_site(state.conn, s.site_id).timezone)
        last = store.runs_of(state.conn, s, limit=1)
        next_local = datetime.fromtimestamp(s.next_run_at, UTC).astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
        rows.append((
            s.schedule_id, s.site_id, s.export_type,
            s.format + ("" if s.compression == "none" else f"+{s.compression}"), s.range,
            runs.cadence_of(s).describe(),
            next_local, (last[0].job_id or f"error: {last[0].error}") if last else "-",
            s.deliver_to_dir or "-",
        ))  # fmt: skip
    print_table(
        ["id", "site", "type", "format", "range", "cadence", "next_run", "last_job", "deliver_to"], rows
    )


@schedules.command("remove")
@click.argument("schedule_id")
@pass_state
def schedules_remove(state: State, schedule_id: str) -> None:
    """Remove a schedule (the jobs it made stay).

    \b
    Example:
        sealexports schedules remove sch_0123456789ab
    """
    store.remove_schedule(state.conn, store.get_schedule(state.conn, schedule_id))
    click.echo(f"Removed {schedule_id}")


@schedules.command("run-now")
@click.argument("schedule_id")
@pass_state
def schedules_run_now(state: State, schedule_id: str) -> None:
    """Start a run at once (its next scheduled run stays as it was); print the job id. A running
    `serve` or `worker` generates it.

    \b
    Example:
        sealexports schedules run-now sch_0123456789ab
    """
    from sealexports.schedules import runs  # the job runner and its metrics: only these commands

    run = runs.run_now(state.conn, state.settings, store.get_schedule(state.conn, schedule_id))
    if run.job_id is None:
        raise click.ClickException(run.error or "the run did not start")
    click.echo(run.job_id)
