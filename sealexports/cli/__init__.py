"""The `sealexports` command line: a thin shell over the library.

The group and what its commands share live here; the commands, by subject, in the modules
imported at the end.
"""

from __future__ import annotations

import importlib
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from sealexports import __version__
from sealexports.config import Settings, load_settings
from sealexports.errors import SchemaOutdated, SealExportsError
from sealexports.storage.database import connect
from sealexports.storage.upgrades import Upgrade, migrate, require_current

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"]}


class State:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        """The existing database, at the current schema: a missing file (a mistyped --db) or an
        outdated schema is an error, never a new empty database or a silent migration."""
        if self._conn is None:
            conn = self.existing()
            try:
                require_current(conn, self.settings.database)
            except SchemaOutdated as e:
                conn.close()
                raise click.ClickException(
                    f"{e.message}; run `sealexports migrate` (it takes a backup first)"
                ) from e
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def existing(self) -> sqlite3.Connection:
        """The existing database as it is (any schema)."""
        path = self.settings.database
        if not path.is_file():
            raise click.ClickException(
                f"database {path} does not exist (check --db, or create it with `sealexports init`)"
            )
        return connect(path, migrate=False)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def set_up(self) -> Upgrade:
        """Create the database if missing, and migrate it (an existing one is backed up first).
        Only `init`, `migrate`, `seed` and `serve` do this."""
        path = self.settings.database
        conn = connect(path, migrate=False)
        try:
            upgrade = migrate(conn, path)
        except BaseException:
            conn.close()
            raise
        if upgrade.backup is not None:
            click.echo(f"Backed up {path} to {upgrade.backup} before migrating.", err=True)
        self._conn = conn
        return upgrade


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


# Each top-level command's module in sealexports.cli.
COMMAND_MODULES = {
    "accounts": "sites", "backup": "maintenance", "export": "data",
    "import": "data", "keys": "sites", "migrate": "maintenance", "schedules": "schedules",
    "seed": "data", "serve": "service", "sites": "sites", "webhooks": "webhooks", "worker": "service",
}  # fmt: skip


class Commands(Group):
    """The top group: each command's module is imported when the command is asked for (or help
    lists them), so a command loads only what it uses (an export does not load the server)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMAND_MODULES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(f"sealexports.cli.{COMMAND_MODULES[cmd_name]}")  # registers it
        return super().get_command(ctx, cmd_name)


@click.group(cls=Commands, context_settings=CONTEXT)
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
    """Bulk exports of web analytics data (CSV, JSON, NDJSON, XLSX, Parquet) from one SQLite file.

    \b
    Example:
        # a demo of 2025-01-01 to 2025-03-31 (plain `seed` ends today, and prints its dates)
        sealexports seed --end 2025-03-31 && sealexports export --site demo --type sources \\
            --from 2025-03-01 --to 2025-03-31
    """
    settings = load_settings(config_file)  # a SealExportsError is an `Error:` line (Group.invoke)
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
    state.set_up()
    click.echo(f"Database ready: {state.settings.database}")


@contextmanager
def progress_bar(silent: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; the callback takes the absolute count done so far."""
    if silent:
        yield lambda done: None
        return
    with click.progressbar(length=max(total, 1), label=label, file=sys.stderr) as bar:

        def advance(done: int) -> None:
            bar.update(min(done, total) - bar.pos)

        yield advance


def print_table(header: list[str], rows: list[tuple[Any, ...]]) -> None:
    cells = [header, *[["" if v is None else str(v) for v in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def main() -> None:
    cli(prog_name="sealexports")
