"""Storage: connection pragmas, migrations, the indexes the exports rely on, and hashed API keys."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlite_utils

from sealexports.errors import InvalidRequest, NotFound, Unauthorized
from sealexports.exports.queries import estimate_query, export_query
from sealexports.exports.request import build_request
from sealexports.exports.types import EXPORT_TYPES
from sealexports.storage import accounts
from sealexports.storage.database import BUSY_TIMEOUT_MS, connect, secret_key, transaction
from sealexports.storage.schema import migrations
from tests.conftest import DemoDB

BIG_TABLES = ("visits", "pageviews", "conversions", "microconversions")

# --- Connections --------------------------------------------------------------------------------


def test_connect_sets_wal_and_busy_timeout(db_path: Path) -> None:
    conn = connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
    assert BUSY_TIMEOUT_MS >= 5000
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.isolation_level is None  # autocommit: transactions are explicit
    conn.close()
    # WAL is a property of the file: a plain connection sees it too.
    plain = sqlite3.connect(db_path)
    assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    plain.close()


def test_connect_creates_the_parent_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "x.db"
    connect(path).close()
    assert path.is_file()


def test_a_writer_waits_for_another_instead_of_failing(db_path: Path) -> None:
    first, second = connect(db_path), connect(db_path)
    accounts.create_site(first, "one")
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            accounts.create_site(second, "two")
        except BaseException as e:  # pragma: no cover - only on failure
            errors.append(e)
        done.set()

    with transaction(first):
        first.execute("UPDATE sites SET name = 'busy' WHERE site_id = 'one'")
        thread = threading.Thread(target=write)
        thread.start()
        time.sleep(0.3)
        assert not done.is_set()  # blocked on the write lock, not failed
    thread.join(10)
    assert errors == []
    assert [s.site_id for s in accounts.list_sites(first)] == ["one", "two"]


def test_readers_are_not_blocked_by_a_writer(db_path: Path) -> None:
    writer, reader = connect(db_path), connect(db_path)
    accounts.create_site(writer, "one")
    with transaction(writer):
        writer.execute("UPDATE sites SET name = 'changing' WHERE site_id = 'one'")
        # WAL: the reader sees the last committed state at once.
        assert accounts.get_site(reader, "one").name == "one"
    assert accounts.get_site(reader, "one").name == "changing"


def test_transaction_rolls_back_on_error(db_path: Path) -> None:
    conn = connect(db_path)
    with pytest.raises(RuntimeError), transaction(conn):
        conn.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")
        raise RuntimeError("boom")
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM meta WHERE key = 'k'").fetchone()[0] == 0


def test_secret_key_is_generated_once_and_kept(db_path: Path) -> None:
    first = secret_key(connect(db_path))
    assert len(first) >= 32
    assert secret_key(connect(db_path)) == first


# --- Migrations ---------------------------------------------------------------------------------


def schema(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
    ).fetchall()
    conn.close()
    return rows


def applied(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT migration_set, name FROM _sqlite_migrations ORDER BY migration_set, name"
    ).fetchall()
    conn.close()
    return rows


def test_migrations_are_idempotent(db_path: Path) -> None:
    connect(db_path).close()
    first_schema, first_applied = schema(db_path), applied(db_path)
    connect(db_path).close()
    connect(db_path).close()
    assert schema(db_path) == first_schema
    assert applied(db_path) == first_applied
    # Each migration recorded exactly once, and none left pending.
    assert first_applied == [("sealexports", m.name) for m in migrations._migrations]
    conn = connect(db_path)
    assert migrations.pending(sqlite_utils.Database(conn)) == []
    conn.close()


def test_the_schema_check_reads_what_sqlite_utils_reads_without_importing_it(db_path: Path) -> None:
    """Commands check the schema at every start; sqlite_utils (which imports pandas and numpy
    when installed) is imported only to migrate."""
    import subprocess
    import sys

    from sealexports.storage.upgrades import pending

    connect(db_path).close()
    with sqlite3.connect(db_path) as conn:
        dropped = "'m002_estimate_catalog', 'm009_day_groups'"
        conn.execute(f"DELETE FROM _sqlite_migrations WHERE name IN ({dropped})")
    conn.close()
    conn = connect(db_path, migrate=False)
    expected = [m.name for m in migrations.pending(sqlite_utils.Database(conn))]
    assert expected == ["m002_estimate_catalog", "m009_day_groups"]
    assert pending(conn) == expected
    conn.close()
    code = (
        "import sys; from sealexports.storage.database import connect; "
        "from sealexports.storage.upgrades import pending; "
        f"print(pending(connect({str(db_path)!r}, migrate=False)), 'sqlite_utils' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["['m002_estimate_catalog',", "'m009_day_groups']", "False"]


def test_migrations_create_the_tables_and_indexes(db_path: Path) -> None:
    connect(db_path).close()
    names = {name for _, name, _ in schema(db_path)}
    assert {"meta", "accounts", "sites", "api_keys", "pages", "export_jobs", *BIG_TABLES} <= names
    assert {
        "visits_site_day",
        "pageviews_site_day",
        "conversions_site_day_ts",
        "microconversions_site_day_ts",
    } <= names


def test_connect_without_migrate_leaves_the_file_empty(db_path: Path) -> None:
    connect(db_path, migrate=False).close()
    assert schema(db_path) == []


def test_data_survives_a_second_migration(db_path: Path) -> None:
    conn = connect(db_path)
    accounts.create_site(conn, "kept", timezone="Europe/Madrid")
    conn.close()
    conn = connect(db_path)
    assert accounts.get_site(conn, "kept").timezone == "Europe/Madrid"


# --- Query plans: the (site_id, day...) indexes serve every export ------------------------------


@pytest.fixture(scope="module")
def analyzed_db(demo_db: DemoDB, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo database with ANALYZE statistics, as after a bulk load."""
    path = tmp_path_factory.mktemp("analyzed") / "demo.db"
    src, dst = sqlite3.connect(demo_db.path), sqlite3.connect(path)
    src.backup(dst)
    dst.execute("ANALYZE")
    src.close()
    dst.close()
    return path


@pytest.fixture(params=["fresh", "analyzed"])
def plan_conn(
    request: pytest.FixtureRequest, demo_db: DemoDB, analyzed_db: Path
) -> Iterator[sqlite3.Connection]:
    conn = connect(demo_db.path if request.param == "fresh" else analyzed_db)
    yield conn
    conn.close()


def query_plan(conn: sqlite3.Connection, sql: str, params: list[object]) -> list[str]:
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


FILTER_SETS = {
    "none": None,
    "visit": {"country": ["ES", "FR"], "device_type": "mobile"},
    "advanced": {"advanced_filters": "path:contains:/blog/,utm_medium:ne:email"},
    "conversion_type": {"conversion_type": "purchase"},
}


@pytest.mark.parametrize("filters", list(FILTER_SETS))
@pytest.mark.parametrize("export_type", list(EXPORT_TYPES))
def test_exports_search_the_site_day_indexes(
    plan_conn: sqlite3.Connection, demo_db: DemoDB, export_type: str, filters: str
) -> None:
    req = build_request(
        "demo", export_type, "csv", str(demo_db.date_from), str(demo_db.date_to), FILTER_SETS[filters]
    )
    queries = []
    catalog = [estimate_query(req)]
    if req.conditions and req.type.kind == "events":
        queries.append(estimate_query(req))
        catalog = []  # other estimates read the day catalog by its primary key
    if req.conditions or req.type.kind == "events":
        queries.append(export_query(req))
    else:  # unfiltered aggregates read the daily rollups by their primary key
        catalog.append(export_query(req))
    for sql, params in catalog:
        plan = query_plan(plan_conn, sql, params)
        tables = (*BIG_TABLES, "day_keys", "day_rows", "day_metrics")
        assert not any(step.startswith(tuple(f"SCAN {t}" for t in tables)) for step in plan), plan
        assert any(
            step.startswith(
                tuple(f"SEARCH {t} USING PRIMARY KEY" for t in ("day_keys", "day_rows", "day_metrics"))
            )
            for step in plan
        ), plan
    for sql, params in queries:
        plan = query_plan(plan_conn, sql, params)
        read = [t for t in BIG_TABLES if f" {t} " in sql]
        if "FROM day_groups " in sql:  # visit-field filters: the daily sums per combination
            assert not read, sql
            search = "SEARCH day_groups USING PRIMARY KEY (site_id=? AND day>? AND day<?)"
            assert any(step.startswith(search) for step in plan), plan
        assert read or "FROM day_groups " in sql, sql
        for table in read:
            assert not any(step.startswith(f"SCAN {table}") for step in plan), plan
            searches = [
                step
                for step in plan
                if step.startswith(f"SEARCH {table} USING ")
                and ("INDEX " in step)
                and f"{table}_site_day" in step
                and "(site_id=? AND day>? AND day<?)" in step
            ]
            assert searches, (table, plan)


@pytest.mark.parametrize("filters", list(FILTER_SETS))
@pytest.mark.parametrize("export_type", ["conversions", "microconversions"])
def test_raw_event_exports_need_no_sort(
    plan_conn: sqlite3.Connection, demo_db: DemoDB, export_type: str, filters: str
) -> None:
    req = build_request(
        "demo", export_type, "json", str(demo_db.date_from), str(demo_db.date_to), FILTER_SETS[filters]
    )
    plan = query_plan(plan_conn, *export_query(req))
    assert plan == [
        f"SEARCH {export_type} USING INDEX {export_type}_site_day_ts (site_id=? AND day>? AND day<?)"
    ]
    assert not any("TEMP B-TREE" in step for step in plan)


def test_raw_event_index_order_is_timestamp_order(demo_conn: sqlite3.Connection) -> None:
    """The plan's claim, checked on the data: (day, ts, id) order is ts order."""
    ts = [
        r[0]
        for r in demo_conn.execute("SELECT ts FROM conversions WHERE site_id = 'demo' ORDER BY day, ts, id")
    ]
    assert len(ts) > 100
    assert ts == sorted(ts)


# --- API keys -----------------------------------------------------------------------------------


@pytest.fixture
def site_conn(db_path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect(db_path)
    accounts.create_site(conn, "shop", plan="pro", account="acme")
    yield conn
    conn.close()


def database_bytes(path: Path) -> bytes:
    """The database and its WAL and shared-memory files, as they are on disk."""
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


def test_keys_are_stored_hashed(site_conn: sqlite3.Connection, db_path: Path) -> None:
    key = accounts.create_key(site_conn, "shop", "ci")
    assert key.startswith("sm_") and len(key) > 40
    stored = site_conn.execute("SELECT prefix, key_hash FROM api_keys").fetchall()
    assert stored == [(key[: accounts.KEY_PREFIX_LEN], hashlib.sha256(key.encode()).hexdigest())]
    raw = database_bytes(db_path)
    assert key[: accounts.KEY_PREFIX_LEN].encode() in raw  # we are reading the right bytes
    assert hashlib.sha256(key.encode()).hexdigest().encode() in raw
    assert key.encode() not in raw
    assert key[accounts.KEY_PREFIX_LEN :].encode() not in raw
    site_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert key.encode() not in database_bytes(db_path)


def test_keys_are_unique(site_conn: sqlite3.Connection) -> None:
    keys = {accounts.create_key(site_conn, "shop") for _ in range(20)}
    assert len(keys) == 20
    assert len({k[: accounts.KEY_PREFIX_LEN] for k in keys}) == 20


def test_authenticate_returns_the_keys_account(site_conn: sqlite3.Connection) -> None:
    accounts.create_site(site_conn, "other", account="globex")
    key = accounts.create_key(site_conn, "shop")
    other = accounts.create_key(site_conn, "other")
    account = accounts.authenticate(site_conn, key)
    assert (account.name, account.plan) == ("acme", "pro")
    assert account == accounts.get_site(site_conn, "shop").account
    assert accounts.authenticate(site_conn, other).name == "globex"


@pytest.mark.parametrize("bad", ["", "sm_", "sm_nope", "Bearer sm_x"])
def test_unknown_keys_are_unauthorized(site_conn: sqlite3.Connection, bad: str) -> None:
    accounts.create_key(site_conn, "shop")
    with pytest.raises(Unauthorized):
        accounts.authenticate(site_conn, bad)


def test_a_key_with_one_character_changed_is_unauthorized(site_conn: sqlite3.Connection) -> None:
    key = accounts.create_key(site_conn, "shop")
    changed = key[:-1] + ("A" if key[-1] != "A" else "B")
    with pytest.raises(Unauthorized):
        accounts.authenticate(site_conn, changed)
    with pytest.raises(Unauthorized):
        accounts.authenticate(site_conn, key[: accounts.KEY_PREFIX_LEN])  # the prefix is no key


def test_revoked_keys_are_unauthorized(site_conn: sqlite3.Connection) -> None:
    key = accounts.create_key(site_conn, "shop")
    kept = accounts.create_key(site_conn, "shop")
    accounts.revoke_key(site_conn, key[: accounts.KEY_PREFIX_LEN])
    with pytest.raises(Unauthorized):
        accounts.authenticate(site_conn, key)
    assert accounts.authenticate(site_conn, kept).name == "acme"
    listed = {k.prefix: k for k in accounts.list_keys(site_conn)}
    assert listed[key[: accounts.KEY_PREFIX_LEN]].revoked_at is not None
    assert listed[kept[: accounts.KEY_PREFIX_LEN]].revoked_at is None


def test_revoking_twice_or_an_unknown_prefix_is_not_found(site_conn: sqlite3.Connection) -> None:
    key = accounts.create_key(site_conn, "shop")
    accounts.revoke_key(site_conn, key[: accounts.KEY_PREFIX_LEN])
    with pytest.raises(NotFound):
        accounts.revoke_key(site_conn, key[: accounts.KEY_PREFIX_LEN])
    with pytest.raises(NotFound):
        accounts.revoke_key(site_conn, "sm_unknown00")


def test_key_for_an_unknown_site_is_not_found(site_conn: sqlite3.Connection) -> None:
    with pytest.raises(NotFound):
        accounts.create_key(site_conn, "nope")
    assert accounts.list_keys(site_conn) == []


def test_list_keys_never_shows_the_key(site_conn: sqlite3.Connection) -> None:
    key = accounts.create_key(site_conn, "shop", "ci")
    [listed] = accounts.list_keys(site_conn)
    assert (listed.prefix, listed.name, listed.account) == (key[: accounts.KEY_PREFIX_LEN], "ci", "acme")
    assert key not in repr(listed)


# --- Sites --------------------------------------------------------------------------------------


def test_sites_share_an_account(site_conn: sqlite3.Connection) -> None:
    second = accounts.create_site(site_conn, "blog", account="acme")
    assert second.account == accounts.get_site(site_conn, "shop").account
    assert second.account.plan == "pro"


def test_get_site_of_another_account_is_not_found(site_conn: sqlite3.Connection) -> None:
    other = accounts.create_site(site_conn, "other")
    shop = accounts.get_site(site_conn, "shop")
    assert accounts.get_site(site_conn, "shop", account_id=shop.account.id) == shop
    with pytest.raises(NotFound):
        accounts.get_site(site_conn, "shop", account_id=other.account.id)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"site_id": "Shop"}, "invalid site id"),
        ({"site_id": "a b"}, "invalid site id"),
        ({"site_id": ""}, "invalid site id"),
        ({"site_id": "-x"}, "invalid site id"),
        ({"site_id": "x" * 65}, "invalid site id"),
        ({"site_id": "ok", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"site_id": "ok", "timezone": "../etc/passwd"}, "unknown time zone"),
        ({"site_id": "ok", "plan": "gold"}, "unknown plan"),
        ({"site_id": "shop"}, "already exists"),
    ],
)
def test_bad_sites_are_refused_and_nothing_is_written(
    site_conn: sqlite3.Connection, kwargs: dict[str, str], message: str
) -> None:
    before = site_conn.execute("SELECT count(*) FROM accounts").fetchone()[0]
    site_id = kwargs.pop("site_id")
    with pytest.raises(InvalidRequest, match=message):
        accounts.create_site(site_conn, site_id, account="newco", **kwargs)
    assert site_conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == before
    assert [s.site_id for s in accounts.list_sites(site_conn)] == ["shop"]
