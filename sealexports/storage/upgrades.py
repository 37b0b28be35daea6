"""Bringing a database up to the current schema, with a backup first, and telling when it is not.

Only the commands that set a database up (`init`, `migrate`, `seed`, `serve`) change its schema;
the others open it as it is and refuse an outdated one (`SchemaOutdated`), so that an operator
upgrades on purpose, with a copy to go back to.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sealexports.errors import SchemaOutdated
from sealexports.storage.backup import backup
from sealexports.storage.schema import migrations

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upgrade:
    applied: list[str]  # the migrations just applied, in order
    backup: Path | None  # the copy taken before them (None for a new database or no change)


def pending(conn: sqlite3.Connection) -> list[str]:
    """The migrations not yet applied, in order (reads only)."""
    return migrations.pending_names(conn)


def require_current(conn: sqlite3.Connection, path: str | Path) -> None:
    """Refuse a database that needs migrating, naming what is pending."""
    waiting = pending(conn)
    if waiting:
        raise SchemaOutdated(
            f"the database {path} needs migrating ({len(waiting)} pending: {', '.join(waiting)})"
        )


def backup_path(path: Path, first: str, now: datetime | None = None) -> Path:
    """Beside the database: sealexports.db.20260101T120000Z.before-m006_job_leases.bak"""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return path.with_name(f"{path.name}.{stamp}.before-{first}.bak")


def migrate(conn: sqlite3.Connection, path: Path) -> Upgrade:
    """Apply the pending migrations. A database that has data (any migration applied) is backed
    up beside itself first (see `backup_path`); a new, empty one is not."""
    import sqlite_utils  # imports pandas when installed: only when migrating

    db = sqlite_utils.Database(conn)
    waiting = pending(conn)
    if not waiting:
        return Upgrade([], None)
    copy = None
    if migrations.applied(db):
        copy = backup(conn, backup_path(path, waiting[0])).path
        log.warning("database %s backed up to %s before migrating (%s)", path, copy, ", ".join(waiting))
    migrations.apply(db)
    return Upgrade(waiting, copy)
