"""Connections with the pragmas every caller needs, transactions, and migration on open."""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sealexports.storage.schema import migrations

if TYPE_CHECKING:
    import regex

BUSY_TIMEOUT_MS = 30_000


def make_private_dir(path: Path) -> None:
    """Create the folder (and its parents) if missing; the folder itself owner-only (0700)
    whatever the umask. An existing folder is left as the operator made it."""
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def make_private_file(path: Path) -> None:
    """Create an empty owner-only (0600) file if missing, whatever the umask: SQLite then gives
    the database's `-wal` and `-shm` files the same mode."""
    if path.exists():
        return
    make_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def connect(path: str | Path, *, migrate: bool = True) -> sqlite3.Connection:
    """Open the database in autocommit mode with WAL and a busy timeout; migrate it by default.
    A new database file is created owner-only (it holds the keys' hashes and the signing secret).

    Connections may be used from another thread than the one that made them (Litestar runs
    sync handlers and stream iterators on worker threads), never from two at once.
    """
    if str(path) != ":memory:":
        make_private_file(Path(path))
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.create_function("regexp", 2, _regexp, deterministic=True)
    if migrate:
        import sqlite_utils  # imports pandas when installed: only when migrating

        migrations.apply(sqlite_utils.Database(conn))
    return conn


def database_file(conn: sqlite3.Connection) -> str:
    """The file of the connection's main database ('' for one in memory)."""
    for _, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return str(file or "")
    return ""


def data_version(conn: sqlite3.Connection) -> int:
    """`PRAGMA data_version`: it changes on `conn` only when another connection has committed
    since `conn`'s last read (its own commits leave it alone)."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def begin_reading(conn: sqlite3.Connection) -> None:
    """BEGIN, and read: a transaction's snapshot is taken at its first read."""
    conn.execute("BEGIN")
    conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()


def same_snapshot(conn: sqlite3.Connection, begin_other: Callable[[], object]) -> bool:
    """Begin a read transaction on `conn` that sees the same rows as the one `begin_other`
    begins on another connection; False (and `conn` left outside a transaction) if another
    connection committed in between. `PRAGMA data_version` changes on `conn` only if another
    connection committed since its last read: if it did not between the read before the other
    began and the one that begins `conn`'s, both see the same state."""
    before = data_version(conn)
    begin_other()
    conn.execute("BEGIN")
    if data_version(conn) == before:
        return True
    conn.commit()
    return False


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE: take the write lock up front so the busy timeout applies, not SQLITE_BUSY."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def secret_key(conn: sqlite3.Connection) -> str:
    """The signing secret, generated on first use and kept in the database."""
    with transaction(conn):
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('secret_key', ?)",
            [secrets.token_urlsafe(32)],
        )
    row = conn.execute("SELECT value FROM meta WHERE key = 'secret_key'").fetchone()
    return str(row[0])


REGEX_TIMEOUT_SECONDS = 1.0  # wall time: generous, so a busy machine never fails a sane pattern
_slow = threading.local()


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> regex.Pattern[str]:
    import regex  # imported on the first regex filter: commands start faster without it

    return regex.compile(pattern)


def _regexp(pattern: str, value: str | None) -> bool:
    """SQLite `regexp(pattern, value)`: a search with the `regex` module, which resists
    catastrophic backtracking and can time out; a missing value never matches."""
    if value is None:
        return False
    try:
        return _compiled(pattern).search(value, timeout=REGEX_TIMEOUT_SECONDS) is not None
    except TimeoutError:
        _slow.pattern = pattern  # SQLite turns the exception into a bare OperationalError
        raise


def take_slow_regex() -> str | None:
    """The pattern whose timeout ended this thread's last query, if one did (then forgotten)."""
    pattern: str | None = getattr(_slow, "pattern", None)
    _slow.pattern = None
    return pattern


class ConnectionPerThread:
    """One connection per thread, opened on first use: handlers run on a pool of threads.
    `busy_timeout_ms`: how long its queries wait for a lock (0: they fail at once instead)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, migrate=False)
            if self.busy_timeout_ms != BUSY_TIMEOUT_MS:
                conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms:d}")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close_all(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
