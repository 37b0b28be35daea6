"""Consistent copies of a live database, and the checkpoint that makes the file itself whole.

In WAL mode, recent commits live in the `-wal` file until a checkpoint copies them into the
database file: a `cp` of the database file alone (or of both files at slightly different moments)
while the service runs misses them or mixes two states. SQLite's backup API reads the database
in one read transaction, a snapshot that writers (in WAL mode) do not wait for.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sealexports.errors import Conflict


@dataclass(frozen=True)
class Backup:
    path: Path
    size_bytes: int


def backup(conn: sqlite3.Connection, dest: Path, *, force: bool = False) -> Backup:
    """Copy the database behind `conn` to `dest`, owner-only (0600), as one self-contained file
    (rollback journal mode: no `-wal` beside it). Written to a temporary name and renamed, so
    `dest` is never half a copy. Refuses an existing `dest` unless `force`."""
    source = Path(conn.execute("PRAGMA database_list").fetchone()[2])
    if dest.resolve() == source.resolve():
        raise Conflict(f"{dest} is the database itself; give another file")
    if dest.exists() and not force:
        raise Conflict(f"{dest} already exists; pass --force to overwrite it")
    if dest.is_dir():
        raise Conflict(f"{dest} is a folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o600)
        os.close(fd)
        copy = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.backup(copy)  # all pages in one step: one snapshot, however busy the source
            copy.execute("PRAGMA journal_mode = DELETE")
        finally:
            copy.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Backup(dest, dest.stat().st_size)


def checkpoint(path: Path, *, busy_ms: int = 2000) -> bool:
    """Copy every commit from the `-wal` file into the database file and empty the `-wal`, so
    that the database file alone holds everything (on clean shutdown). False if another
    process's readers kept part of it back (it stays in the `-wal`, safe)."""
    if not path.exists():
        return False
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy
    except sqlite3.Error:
        return False
    finally:
        conn.close()
