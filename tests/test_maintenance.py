"""Looking after the database file: backups of a live database, the checkpoint at shutdown,
migrations on purpose (with a backup first), and no new empty database from a mistyped --db."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sqlite_utils
from click.testing import Result

from sealexports.storage.database import connect
from sealexports.storage.schema import migrations
from tests import live
from tests.commands import run
from tests.conftest import DemoDB, say
from tests.reliability import all_jobs, body, post_export, wait_settled

LATEST = "m008_job_leases"  # an "old" database is one from before this migration


pytestmark = pytest.mark.usefixtures("no_config_from_the_environment")


def one_error(result: Result, *expected: str) -> str:
    assert result.exit_code != 0, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert [
        ln for ln in result.stderr.splitlines() if ln and not ln.startswith(("Error:", "Usage:", "Try "))
    ] == []
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def schema(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT name, ifnull(sql, '') FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()


def old_database(demo_db: DemoDB, path: Path) -> Path:
    """A copy of the demo database as the previous version left it: the newest migration undone
    (the columns it adds dropped, its record removed)."""
    shutil.copyfile(demo_db.path, path)
    conn = sqlite3.connect(path)
    for column in ("lease_owner", "lease_expires_at", "claimed_at"):
        conn.execute(f"ALTER TABLE export_jobs DROP COLUMN {column}")
    conn.execute("DELETE FROM _sqlite_migrations WHERE name = ?", [LATEST])
    conn.commit()
    conn.close()
    assert pending(path) == [LATEST]
    return path


def pending(path: Path) -> list[str]:
    db = sqlite_utils.Database(path)
    try:
        return [m.name for m in migrations.pending(db)]
    finally:
        db.close()


# --- a mistyped --db --------------------------------------------------------------------------

READERS_AND_WRITERS = [
    ["sites", "list"],
    ["sites", "create", "shop"],
    ["keys", "list"],
    ["keys", "create", "--site", "shop"],
    ["keys", "revoke", "sm_abc"],
    ["export", "--site", "demo", "--type", "pages", "--from", "2025-01-01", "--to", "2025-01-02"],
    ["import", "-", "--site", "demo"],
    ["backup", "copy.db"],
    ["migrate", "--check"],
    ["worker"],
    ["serve"],
]


@pytest.mark.parametrize("args", READERS_AND_WRITERS, ids=lambda a: " ".join(a[:2]))
def test_a_missing_database_is_one_error_line_and_is_not_created(
    tmp_path: Path, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "typo" / "sealexprots.db"
    one_error(run(db, *args), str(db), "does not exist")
    assert not db.exists() and not db.parent.exists()


@pytest.mark.parametrize(
    "args", [["init"], ["migrate"], ["seed", "--days", "1", "--visits", "5", "--silent"]]
)
def test_init_migrate_and_seed_create_a_database(tmp_path: Path, args: list[str]) -> None:
    db = tmp_path / "new.db"
    result = run(db, *args)
    assert result.exit_code == 0, result.output
    assert run(db, "migrate", "--check").exit_code == 0
    assert not list(tmp_path.glob("*.bak"))  # nothing to back up in a new database


# --- migrations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["sites", "list"],
        ["keys", "list"],
        ["keys", "create", "--site", "demo"],
        [
            "export",
            "--site",
            "demo",
            "--type",
            "pages",
            "--from",
            "2025-03-20",
            "--to",
            "2025-03-21",
            "-o",
            "-",
        ],
        ["worker"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_other_commands_never_migrate_an_old_database(
    demo_db: DemoDB, tmp_path: Path, args: list[str]
) -> None:
    db = old_database(demo_db, tmp_path / "old.db")
    before = schema(db)
    one_error(run(db, *args), LATEST, "sealexports migrate")
    assert schema(db) == before
    assert list(tmp_path.iterdir()) == [db]  # no backup, no -wal: untouched


def test_migrate_check_then_migrate_backs_up_first(demo_db: DemoDB, tmp_path: Path) -> None:
    db = old_database(demo_db, tmp_path / "old.db")
    before = schema(db)
    one_error(run(db, "migrate", "--check"), "1 migration(s) pending", LATEST)
    assert schema(db) == before

    result = run(db, "migrate")
    assert result.exit_code == 0, result.output
    assert LATEST in result.stdout
    backups = list(tmp_path.glob("old.db.*.bak"))
    assert len(backups) == 1
    assert re.fullmatch(rf"old\.db\.\d{{8}}T\d{{6}}Z\.before-{LATEST}\.bak", backups[0].name)
    assert str(backups[0]) in result.stderr
    assert stat.S_IMODE(backups[0].stat().st_mode) == 0o600
    assert schema(backups[0]) == before  # the copy is the database as it was
    assert pending(backups[0]) == [LATEST]
    assert run(db, "migrate", "--check").exit_code == 0
    assert run(db, "sites", "list").stdout.splitlines()[1].startswith("demo")
    # Nothing pending: no second backup.
    assert "up to date" in run(db, "migrate").stdout
    assert len(list(tmp_path.glob("old.db.*.bak"))) == 1


# --- backups ------------------------------------------------------------------------------------


def test_backup_refuses_to_overwrite_and_is_owner_only(demo_db: DemoDB, tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    shutil.copyfile(demo_db.path, db)
    dest = tmp_path / "copies" / "b.db"
    old = os.umask(0o022)
    try:
        assert run(db, "backup", str(dest)).exit_code == 0
        assert stat.S_IMODE(dest.stat().st_mode) == 0o600
        dest.write_bytes(b"keep me")
        one_error(run(db, "backup", str(dest)), "already exists", "--force")
        assert dest.read_bytes() == b"keep me"
        assert run(db, "backup", str(dest), "--force").exit_code == 0
        one_error(run(db, "backup", str(db), "--force"), "the database itself")
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert sorted(p.name for p in dest.parent.iterdir()) == ["b.db"]  # no temp file, no -wal
    copy = sqlite3.connect(dest)
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert copy.execute("SELECT COUNT(*) FROM visits").fetchone()[0] == len(demo_db.visits)
    copy.close()


WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("PRAGMA journal_mode = WAL")
batch = 0
while True:
    batch += 1
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO probe (batch, i) VALUES (?, ?)", [(batch, i) for i in range(200)])
    conn.execute("UPDATE probe_total SET n = n + 200")
    conn.execute("COMMIT")
    if batch == 5:
        print("writing", flush=True)
"""


def test_backup_while_another_process_writes_is_consistent(
    demo_db: DemoDB, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another process commits batches of 200 rows (and a running total) as fast as it can; each
    copy holds whole batches only, and its total matches its rows."""
    db = tmp_path / "live.db"
    shutil.copyfile(demo_db.path, db)
    conn = connect(db, migrate=False)
    conn.execute("CREATE TABLE probe (batch INTEGER, i INTEGER)")
    conn.execute("CREATE TABLE probe_total (n INTEGER)")
    conn.execute("INSERT INTO probe_total VALUES (0)")
    conn.close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE)
    seen = []
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"writing\n"
        for n in range(5):
            dest = tmp_path / f"copy{n}.db"
            assert run(db, "backup", str(dest)).exit_code == 0
            copy = sqlite3.connect(dest)
            assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            rows, batches, short = copy.execute(
                "SELECT COUNT(*), COUNT(DISTINCT batch), "
                "(SELECT COUNT(*) FROM (SELECT batch FROM probe GROUP BY batch HAVING COUNT(*) != 200)) "
                "FROM probe"
            ).fetchone()
            total = copy.execute("SELECT n FROM probe_total").fetchone()[0]
            copy.close()
            assert short == 0 and rows == batches * 200 == total, (rows, batches, short, total)
            seen.append(batches)
    finally:
        writer.kill()
        writer.wait()
    assert seen == sorted(seen) and seen[0] >= 5
    say(capsys, f"backup under writes: 5 copies holding {seen} whole batches of 200 rows")


def test_after_sigterm_the_database_file_alone_holds_everything(demo_db: DemoDB, tmp_path: Path) -> None:
    """`serve --demo`, a few exports, SIGTERM: a copy of the database file alone (no -wal) has
    the demo key and every job (a WAL left behind would hold them instead)."""
    db = tmp_path / "sealexports.db"
    shutil.copyfile(demo_db.path, db)
    env = {"SEALEXPORTS_SYNC_ROW_LIMIT": "100", "SEALEXPORTS_JOB_LEASE_SECONDS": "3"}
    server = live.start(db, tmp_path, env=env, serve_args=("--demo",))
    try:
        key = re.search(r"API key: (\S+)", server.log.read_text())
        assert key is not None, server.log.read_text()
        for export_type in ("pages", "sources", "conversions"):
            r = post_export(server.api, key.group(1), body(demo_db, export_type))
            assert r.status_code == 201, r.text
            wait_settled(db, timeout=60)  # (the free plan runs one at a time)
    finally:
        assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    alone = tmp_path / "alone" / "copy.db"
    alone.parent.mkdir()
    shutil.copyfile(db, alone)  # what a plain `cp` of the database file gets
    assert {j.status for j in all_jobs(alone)} == {"completed"}
    assert len(all_jobs(alone)) == 3
    conn = sqlite3.connect(alone)
    assert conn.execute("SELECT COUNT(*) FROM api_keys WHERE name = 'serve --demo'").fetchone()[0] == 1
    conn.close()
