"""Looking after the database file: `migrate` and `backup`."""

from __future__ import annotations

from pathlib import Path

import click

from sealexports.cli import State, cli, pass_state
from sealexports.storage.backup import backup as backup_database
from sealexports.storage.upgrades import pending


@cli.command()
@click.option("--check", is_flag=True, help="Change nothing; exit 1 if a migration is pending.")
@pass_state
def migrate(state: State, check: bool) -> None:
    """Bring the database up to this version's schema (creating it if missing).

    An existing database is first backed up beside itself, as
    DB.YYYYMMDDTHHMMSSZ.before-MIGRATION.bak. `serve` and `init` migrate too; other
    commands refuse an outdated database. Stop the service first.

    \b
    Example:
        sealexports --db /var/lib/sealexports/sealexports.db migrate --check
        sealexports --db /var/lib/sealexports/sealexports.db migrate
    """
    path = state.settings.database
    if check:
        waiting = pending(state.existing())
        if waiting:
            raise click.ClickException(
                f"{len(waiting)} migration(s) pending on {path}: {', '.join(waiting)}; "
                "run `sealexports migrate`"
            )
        click.echo(f"Database {path} is up to date.")
        return
    upgrade = state.set_up()
    if upgrade.applied:
        click.echo(f"Applied {len(upgrade.applied)} migration(s) to {path}: {', '.join(upgrade.applied)}")
    else:
        click.echo(f"Database {path} is up to date.")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@pass_state
def backup(state: State, file: Path, force: bool) -> None:
    """Copy the database to FILE, consistently, even while the service writes to it.

    The copy is one self-contained file, readable by its owner only. The queue file
    (DB.queue) is not needed: jobs are in the database. Restore: stop the service, put
    the copy in place of the database (and remove DB-wal and DB-shm), start again.

    \b
    Example:
        sealexports --db /var/lib/sealexports/sealexports.db backup /backups/sealexports-$(date +%F).db
    """
    conn = state.existing()
    try:
        done = backup_database(conn, file, force=force)
    finally:
        conn.close()
    click.echo(f"Backed up {state.settings.database} to {done.path} ({done.size_bytes:,} bytes).")
