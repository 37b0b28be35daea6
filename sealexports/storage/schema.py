"""The schema, as migrations. Never edit one that has shipped: add the next."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils
    from sqlite_utils.migrations import Migrations

MIGRATION_SET = "sealexports"
Migration = Callable[["sqlite_utils.Database"], None]


@dataclass(frozen=True)
class _Registered:
    name: str
    fn: Migration
    transactional: bool = True


class Registry:
    """The migrations, in order, as `sqlite_utils.Migrations` takes them (`@migrations()`).

    sqlite_utils is imported only to apply them: it imports pandas and numpy when installed
    (about 0.3 s), which a command that only checks the schema (`pending_names`) never needs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._migrations: list[_Registered] = []

    def __call__(
        self, *, name: str | None = None, transactional: bool = True
    ) -> Callable[[Migration], Migration]:
        def inner(fn: Migration) -> Migration:
            self._migrations.append(_Registered(name or fn.__name__, fn, transactional))
            return fn

        return inner

    def _set(self) -> Migrations:
        from sqlite_utils import Migrations

        target = Migrations(self.name)
        for m in self._migrations:
            target(name=m.name, transactional=m.transactional)(m.fn)
        return target

    def apply(self, db: sqlite_utils.Database, *, stop_before: str | Iterable[str] | None = None) -> None:
        self._set().apply(db, stop_before=stop_before)

    def pending(self, db: sqlite_utils.Database) -> list[Any]:
        return self._set().pending(db)

    def applied(self, db: sqlite_utils.Database) -> list[Any]:
        return self._set().applied(db)

    def pending_names(self, conn: sqlite3.Connection) -> list[str]:
        """The migrations not yet applied, in order: `pending` in plain SQL (reads only)."""
        table = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlite_migrations'"
        done: set[str] = set()
        if conn.execute(table).fetchone():
            rows = conn.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ?", [self.name])
            done = {r[0] for r in rows}
        return [m.name for m in self._migrations if m.name not in done]


migrations = Registry(MIGRATION_SET)

# The visit's dimensions, copied onto every event so that filters never need a join.
_VISIT_DIMENSIONS = """
    landing_page TEXT NOT NULL,
    referrer TEXT,
    utm_source TEXT,
    utm_medium TEXT,
    utm_campaign TEXT,
    utm_term TEXT,
    utm_content TEXT,
    country TEXT,
    device_type TEXT,
    browser TEXT,
    os TEXT"""


def _run(db: sqlite_utils.Database, script: str) -> None:
    # Not executescript(): it would COMMIT the migration's transaction half-way.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    _run(
        db,
        f"""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE accounts (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            plan TEXT NOT NULL CHECK (plan IN ('free', 'pro', 'enterprise')),
            created_at TEXT NOT NULL
        );
        CREATE TABLE sites (
            site_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            timezone TEXT NOT NULL DEFAULT 'UTC',
            created_at TEXT NOT NULL
        );
        CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            name TEXT,
            prefix TEXT NOT NULL UNIQUE,
            key_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            last_used_at TEXT,
            revoked_at TEXT
        );
        CREATE TABLE pages (
            site_id TEXT NOT NULL,
            path TEXT NOT NULL,
            content_grouping TEXT,
            first_day TEXT NOT NULL,
            last_day TEXT NOT NULL,
            PRIMARY KEY (site_id, path)
        ) WITHOUT ROWID;
        CREATE TABLE visits (
            id INTEGER PRIMARY KEY,
            site_id TEXT NOT NULL,
            day TEXT NOT NULL,
            started_at TEXT NOT NULL,
            content_grouping TEXT,
            page_views INTEGER NOT NULL,{_VISIT_DIMENSIONS}
        );
        CREATE TABLE pageviews (
            id INTEGER PRIMARY KEY,
            site_id TEXT NOT NULL,
            day TEXT NOT NULL,
            ts TEXT NOT NULL,
            visit_id INTEGER NOT NULL,
            path TEXT NOT NULL,
            content_grouping TEXT,
            is_entrance INTEGER NOT NULL,{_VISIT_DIMENSIONS}
        );
        CREATE TABLE conversions (
            id INTEGER PRIMARY KEY,
            site_id TEXT NOT NULL,
            day TEXT NOT NULL,
            ts TEXT NOT NULL,
            visit_id INTEGER NOT NULL,
            conversion_type TEXT NOT NULL,
            amount_cents INTEGER NOT NULL,
            path TEXT NOT NULL,
            content_grouping TEXT,
            properties TEXT,{_VISIT_DIMENSIONS}
        );
        CREATE TABLE microconversions (
            id INTEGER PRIMARY KEY,
            site_id TEXT NOT NULL,
            day TEXT NOT NULL,
            ts TEXT NOT NULL,
            visit_id INTEGER NOT NULL,
            conversion_type TEXT NOT NULL,
            path TEXT NOT NULL,
            content_grouping TEXT,
            properties TEXT,{_VISIT_DIMENSIONS}
        );
        CREATE INDEX visits_site_day ON visits (site_id, day);
        CREATE INDEX pageviews_site_day ON pageviews (site_id, day);
        CREATE INDEX conversions_site_day_ts ON conversions (site_id, day, ts);
        CREATE INDEX microconversions_site_day_ts ON microconversions (site_id, day, ts);
        CREATE TABLE export_jobs (
            id INTEGER PRIMARY KEY,
            job_id TEXT NOT NULL UNIQUE,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            site_id TEXT NOT NULL REFERENCES sites(site_id),
            export_type TEXT NOT NULL,
            format TEXT NOT NULL,
            date_from TEXT NOT NULL,
            date_to TEXT NOT NULL,
            filters TEXT NOT NULL,
            status TEXT NOT NULL,
            estimated_rows INTEGER NOT NULL,
            actual_rows INTEGER,
            file_size_bytes INTEGER,
            progress_percent INTEGER NOT NULL DEFAULT 0,
            file_name TEXT,
            sha256 TEXT,
            download_token TEXT,
            error_message TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            download_expires_at TEXT,
            started_at TEXT,
            completed_at TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX export_jobs_site ON export_jobs (site_id, id);
        CREATE INDEX export_jobs_account_status ON export_jobs (account_id, status);
        CREATE INDEX export_jobs_status ON export_jobs (status)
        """,
    )


# The fields of a visit that filters take (and, with referrer, that a visit stores).
VISIT_FIELDS = (
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
    "country", "device_type", "browser", "os",
)  # fmt: skip
# A visit's dimensions that exports group by (utm_content and referrer are filters only).
GROUPED_VISIT_DIMENSIONS = (
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "country", "device_type", "browser", "os",
)  # fmt: skip
# The dimensions whose values the estimate catalog keeps, by day.
CATALOG_DIMENSIONS = (*GROUPED_VISIT_DIMENSIONS, "landing_page", "path")


@migrations()
def m002_estimate_catalog(db: sqlite_utils.Database) -> None:
    """Which values each dimension takes on each day, and how many raw events each day has:
    unfiltered estimates read these instead of the events."""
    _run(
        db,
        """
        CREATE TABLE day_keys (
            site_id TEXT NOT NULL,
            dimension TEXT NOT NULL,
            day TEXT NOT NULL,
            value TEXT NOT NULL,  -- '' stands for a missing value
            PRIMARY KEY (site_id, dimension, day, value)
        ) WITHOUT ROWID;
        CREATE TABLE day_rows (
            site_id TEXT NOT NULL,
            kind TEXT NOT NULL,  -- conversions | microconversions
            day TEXT NOT NULL,
            rows INTEGER NOT NULL,
            PRIMARY KEY (site_id, kind, day)
        ) WITHOUT ROWID
        """,
    )
    for dim in CATALOG_DIMENSIONS:
        for table in ["pageviews", "conversions"] if dim == "path" else ["visits"]:
            db.execute(
                f"INSERT OR IGNORE INTO day_keys SELECT DISTINCT site_id, '{dim}', day, ifnull({dim}, '') "
                f"FROM {table}"
            )
    for kind in ("conversions", "microconversions"):
        db.execute(
            f"INSERT INTO day_rows SELECT site_id, '{kind}', day, COUNT(*) FROM {kind} GROUP BY site_id, day"
        )


@migrations()
def m003_import_ids(db: sqlite_utils.Database) -> None:
    """What ingestion needs to be idempotent and to stitch visits across batches.

    `import_ids`: a 16-byte digest of every event taken in (of its `id`, else of its content),
    so that importing the same events again skips them. `visit_keys`: for each visit key
    ('v:' + visit_id, or 'u:' + visitor), the latest visit it made, so that the next batch can
    continue it (times are POSIX seconds)."""
    _run(
        db,
        """
        CREATE TABLE import_ids (
            site_id TEXT NOT NULL,
            event_id BLOB NOT NULL,
            PRIMARY KEY (site_id, event_id)
        ) WITHOUT ROWID;
        CREATE TABLE visit_keys (
            site_id TEXT NOT NULL,
            key TEXT NOT NULL,
            visit_id INTEGER NOT NULL,
            started_at REAL NOT NULL,
            last_ts REAL NOT NULL,
            PRIMARY KEY (site_id, key)
        ) WITHOUT ROWID
        """,
    )


@migrations()
def m004_key_scopes(db: sqlite_utils.Database) -> None:
    """API keys get a scope: 'read' (exports; every existing key) or 'write' (sending events)."""
    db.execute(
        "ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'read' "
        "CHECK (scope IN ('read', 'write'))"
    )


# Daily rollups: what every unfiltered aggregate export reads. '' stands for a missing value;
# the dimension '' (value '') holds each day's totals.
ROLLUP_DIMENSIONS = (*GROUPED_VISIT_DIMENSIONS, "landing_page")


@migrations()
def m005_day_metrics(db: sqlite_utils.Database) -> None:
    """Per site, dimension, day and value: the metrics of every aggregate export, so that an
    unfiltered one reads a few thousand rows instead of every event of the range."""
    _run(
        db,
        """
        CREATE TABLE day_metrics (
            site_id TEXT NOT NULL,
            dimension TEXT NOT NULL,
            day TEXT NOT NULL,
            value TEXT NOT NULL,
            entrances INTEGER NOT NULL DEFAULT 0,
            engaged INTEGER NOT NULL DEFAULT 0,
            page_views INTEGER NOT NULL DEFAULT 0,
            microconversions INTEGER NOT NULL DEFAULT 0,
            conversions INTEGER NOT NULL DEFAULT 0,
            revenue_cents INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (site_id, dimension, day, value)
        ) WITHOUT ROWID
        """,
    )
    upsert = (
        "INSERT INTO day_metrics SELECT site_id, ?, day, k, SUM(e), SUM(g), SUM(pv), SUM(mc), SUM(c), "
        "SUM(rev) FROM ({}) GROUP BY site_id, day, k ON CONFLICT DO UPDATE SET "
        "entrances = entrances + excluded.entrances, engaged = engaged + excluded.engaged, "
        "page_views = page_views + excluded.page_views, "
        "microconversions = microconversions + excluded.microconversions, "
        "conversions = conversions + excluded.conversions, "
        "revenue_cents = revenue_cents + excluded.revenue_cents"
    )
    parts = {
        "visits": "COUNT(*) AS e, SUM(page_views >= 2) AS g, 0 AS pv, 0 AS mc, 0 AS c, 0 AS rev",
        "pageviews": "0, 0, COUNT(*), 0, 0, 0",
        "microconversions": "0, 0, 0, COUNT(*), 0, 0",
        "conversions": "0, 0, 0, 0, COUNT(*), SUM(amount_cents)",
    }
    for dim in (*ROLLUP_DIMENSIONS, "", "path"):
        keys = {table: f"ifnull({dim}, '')" if dim else "''" for table in parts}
        if dim == "path":  # pages: entrances by landing page, conversions where they fired
            keys = {"visits": "landing_page", "pageviews": "path", "conversions": "path"}
        union = " UNION ALL ".join(
            f"SELECT site_id, day, {key} AS k, {parts[table]} FROM {table} GROUP BY site_id, day, k"
            for table, key in keys.items()
        )
        db.execute(upsert.format(union), [dim])


@migrations()
def m006_key_sites(db: sqlite_utils.Database) -> None:
    """A key may be bound to one site (`site_id`); NULL: every site of its account, as every key
    made before was."""
    db.execute("ALTER TABLE api_keys ADD COLUMN site_id TEXT REFERENCES sites(site_id)")


@migrations()
def m007_visit_days(db: sqlite_utils.Database) -> None:
    """Page views of a visit on a day other than the one it started (a visit past midnight):
    with them, page views under a visit filter come from `visits` alone (its page_views), not
    from every page view of the range."""
    _run(
        db,
        """
        CREATE TABLE visit_days (
            site_id TEXT NOT NULL,
            day TEXT NOT NULL,
            visit_id INTEGER NOT NULL,
            page_views INTEGER NOT NULL,
            PRIMARY KEY (site_id, day, visit_id)
        ) WITHOUT ROWID;
        INSERT INTO visit_days
            SELECT p.site_id, p.day, p.visit_id, COUNT(*) FROM pageviews p JOIN visits v ON v.id = p.visit_id
            WHERE p.day <> v.day GROUP BY p.site_id, p.day, p.visit_id
        """,
    )


@migrations()
def m008_job_leases(db: sqlite_utils.Database) -> None:
    """A running job is leased by one process (`lease_owner`) until `lease_expires_at` (POSIX
    seconds), renewed while it runs: other processes on the same database take it over only once
    the lease has run out. `claimed_at` (POSIX seconds) orders the fair claim between accounts."""
    db.execute("ALTER TABLE export_jobs ADD COLUMN lease_owner TEXT")
    db.execute("ALTER TABLE export_jobs ADD COLUMN lease_expires_at REAL")
    db.execute("ALTER TABLE export_jobs ADD COLUMN claimed_at REAL")


# The visit fields of `day_groups`, in the order of its key (the filters' visit fields).
GROUP_FIELDS = (
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
    "country", "device_type", "browser", "os",
)  # fmt: skip


@migrations()
def m009_day_groups(db: sqlite_utils.Database) -> None:
    """Per site, day and combination of the visit fields in GROUP_FIELDS ('' for a missing
    value): the six sums. An aggregate filtered on those fields only reads these rows (a few
    per hundred visits) instead of the visits and the events."""
    fields = ", ".join(GROUP_FIELDS)
    _run(
        db,
        f"""
        CREATE TABLE day_groups (
            site_id TEXT NOT NULL,
            day TEXT NOT NULL,
            {", ".join(f"{f} TEXT NOT NULL" for f in GROUP_FIELDS)},
            entrances INTEGER NOT NULL DEFAULT 0,
            engaged INTEGER NOT NULL DEFAULT 0,
            page_views INTEGER NOT NULL DEFAULT 0,
            microconversions INTEGER NOT NULL DEFAULT 0,
            conversions INTEGER NOT NULL DEFAULT 0,
            revenue_cents INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (site_id, day, {fields})
        ) WITHOUT ROWID
        """,
    )
    parts = {
        "visits": "COUNT(*) AS e, SUM(page_views >= 2) AS g, 0 AS pv, 0 AS mc, 0 AS c, 0 AS rev",
        "pageviews": "0, 0, COUNT(*), 0, 0, 0",
        "microconversions": "0, 0, 0, COUNT(*), 0, 0",
        "conversions": "0, 0, 0, 0, COUNT(*), SUM(amount_cents)",
    }
    keys = ", ".join(f"ifnull({f}, '') AS {f}" for f in GROUP_FIELDS)
    union = " UNION ALL ".join(
        f"SELECT site_id, day, {keys}, {sums} FROM {table} GROUP BY site_id, day, {fields}"
        for table, sums in parts.items()
    )
    db.execute(
        f"INSERT INTO day_groups SELECT site_id, day, {fields}, SUM(e), SUM(g), SUM(pv), SUM(mc), SUM(c), "
        f"SUM(rev) FROM ({union}) GROUP BY site_id, day, {fields}"
    )


@migrations()
def m010_manifests_and_idempotency(db: sqlite_utils.Database) -> None:
    """`latest_event_at`: a job's freshness, recorded when it runs (its manifest shows it).
    `idempotency_keys`: an account's Idempotency-Key on a create, the request it came with
    (`fingerprint`), the job it made and the answer given (kept 24 hours)."""
    db.execute("ALTER TABLE export_jobs ADD COLUMN latest_event_at TEXT")
    _run(
        db,
        """
        CREATE TABLE idempotency_keys (
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            job_id TEXT,
            response TEXT,
            created_at REAL NOT NULL,
            PRIMARY KEY (account_id, key)
        ) WITHOUT ROWID;
        CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at)
        """,
    )


# The job row as it was when it finished, for the webhook body (the job may be deleted or expire
# before the delivery goes out). Names as in storage.export_jobs.JobRecord.
_JOB_SNAPSHOT = "json_object(" + ", ".join(
    f"'{c}', NEW.{c}"
    for c in (
        "id", "job_id", "account_id", "site_id", "export_type", "format", "date_from", "date_to",
        "filters", "status", "estimated_rows", "actual_rows", "file_size_bytes", "progress_percent",
        "file_name", "sha256", "download_token", "error_message", "attempts", "download_expires_at",
        "started_at", "completed_at", "created_at", "latest_event_at",
    )
) + ")"  # fmt: skip


def _finished_trigger(snapshot: str) -> str:
    """The trigger that queues webhook deliveries when a job finishes (one statement: its body's
    semicolons are not statement ends), with the job row as `snapshot` makes it."""
    return f"""
        CREATE TRIGGER export_jobs_finished AFTER UPDATE OF status ON export_jobs
        WHEN NEW.status IN ('completed', 'failed') AND OLD.status <> NEW.status
        BEGIN
            INSERT INTO webhook_deliveries (delivery_id, endpoint_id, event_type, job_id, job, created_at)
            SELECT 'whd_' || lower(hex(randomblob(12))), e.id, 'export.' || NEW.status, NEW.job_id,
                   {snapshot}, strftime('%Y-%m-%dT%H:%M:%SZ', 'now')
            FROM webhook_endpoints e
            WHERE e.account_id = NEW.account_id AND e.disabled_at IS NULL
              AND instr(',' || e.events || ',', ',export.' || NEW.status || ',') > 0;
        END
        """


@migrations()
def m011_webhooks(db: sqlite_utils.Database) -> None:
    """Webhook endpoints per account, and their outbox: a trigger writes one delivery per
    subscribed endpoint in the very transaction that moves a job to completed or failed, so an
    event is never lost nor doubled by a crash. Every attempt is kept."""
    _run(
        db,
        """
        CREATE TABLE webhook_endpoints (
            id INTEGER PRIMARY KEY,
            endpoint_id TEXT NOT NULL UNIQUE,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            url TEXT NOT NULL,
            events TEXT NOT NULL,  -- comma-separated event types
            secret TEXT NOT NULL,
            previous_secret TEXT,  -- still signs until previous_secret_until (POSIX seconds)
            previous_secret_until REAL,
            disabled_at TEXT,
            disabled_reason TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account_id);
        CREATE TABLE webhook_deliveries (
            id INTEGER PRIMARY KEY,
            delivery_id TEXT NOT NULL UNIQUE,
            endpoint_id INTEGER NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
            event_type TEXT NOT NULL,
            job_id TEXT,
            job TEXT,  -- JSON: the job row when the event happened
            body TEXT,  -- the exact bytes sent, fixed at the first attempt
            created_at TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',  -- pending, delivered, failed
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL DEFAULT 0,  -- POSIX seconds
            lease_owner TEXT,
            lease_expires_at REAL,
            last_status_code INTEGER,
            last_error TEXT
        );
        CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
        CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
        CREATE TABLE webhook_attempts (
            id INTEGER PRIMARY KEY,
            delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
            attempt INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            status_code INTEGER,
            error TEXT,
            duration_ms REAL NOT NULL
        );
        CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id)
        """,
    )
    db.execute(_finished_trigger(_JOB_SNAPSHOT))


@migrations()
def m012_job_compression(db: sqlite_utils.Database) -> None:
    """How a job's file is compressed: none, gzip or zstd (csv, json and ndjson only)."""
    db.execute("ALTER TABLE export_jobs ADD COLUMN compression TEXT NOT NULL DEFAULT 'none'")
    # Webhook bodies show it too: the trigger's snapshot of the job row gets the column.
    db.execute("DROP TRIGGER export_jobs_finished")
    db.execute(_finished_trigger(_JOB_SNAPSHOT[:-1] + ", 'compression', NEW.compression)"))


@migrations()
def m013_schedules(db: sqlite_utils.Database) -> None:
    """Recurring exports: a schedule per site (request, relative range, cadence in the site's
    time zone, `next_run_at` in POSIX seconds), and its runs: the job each made, and whether its
    file was copied to the schedule's `deliver_to_dir`."""
    _run(
        db,
        """
        CREATE TABLE export_schedules (
            id INTEGER PRIMARY KEY,
            schedule_id TEXT NOT NULL UNIQUE,
            account_id INTEGER NOT NULL REFERENCES accounts(id),
            site_id TEXT NOT NULL REFERENCES sites(site_id),
            export_type TEXT NOT NULL,
            format TEXT NOT NULL,
            filters TEXT NOT NULL,  -- JSON
            range TEXT NOT NULL,
            every TEXT NOT NULL,
            at TEXT NOT NULL,  -- HH:MM, the site's local time
            day INTEGER,  -- weekly: 0 (Monday) .. 6, monthly: 1 .. 31
            deliver_to_dir TEXT,
            next_run_at REAL NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX export_schedules_due ON export_schedules (next_run_at);
        CREATE TABLE schedule_runs (
            id INTEGER PRIMARY KEY,
            schedule_id INTEGER NOT NULL REFERENCES export_schedules(id) ON DELETE CASCADE,
            slot REAL,  -- the run it stands for (POSIX seconds), NULL: run-now
            started_at REAL NOT NULL,
            job_id TEXT,
            error TEXT,
            copied_at TEXT,
            copy_owner TEXT,
            copy_until REAL
        );
        CREATE INDEX schedule_runs_schedule ON schedule_runs (schedule_id, id);
        CREATE INDEX schedule_runs_open ON schedule_runs (copied_at, job_id)
        """,
    )


@migrations()
def m014_schedule_compression(db: sqlite_utils.Database) -> None:
    """A schedule's runs are compressed as it says: none, gzip or zstd."""
    db.execute("ALTER TABLE export_schedules ADD COLUMN compression TEXT NOT NULL DEFAULT 'none'")


def _without_nul(value: str | None) -> str | None:
    return value.replace("\0", "") if value is not None else None


@migrations()
def m015_no_nul(db: sqlite_utils.Database) -> None:
    """Stored text holds no NUL character: removed from the events, the visits and the rollups
    kept from them, as the CSV writer drops it (ingestion refuses it since; SQLite's printf ends
    a value at one). A rollup row whose value loses a NUL is merged into the row of the value
    without it (a page keeps the content group of the one seen latest)."""
    db.conn.create_function("without_nul", 1, _without_nul, deterministic=True)

    def text_columns(table: str) -> list[str]:
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})").fetchall() if row[2] == "TEXT"]

    def has_nul(columns: list[str]) -> str:
        return " OR ".join(f"instr(CAST({c} AS BLOB), x'00')" for c in columns)

    def cleaned(columns: list[str], keys: list[str]) -> str:
        return ", ".join(f"without_nul({c})" if c in keys else c for c in columns)

    for table in ("visits", "pageviews", "conversions", "microconversions"):
        cols = text_columns(table)
        sets = ", ".join(f"{c} = without_nul({c})" for c in cols)
        db.execute(f"UPDATE {table} SET {sets} WHERE {has_nul(cols)}")
    sums = ("entrances", "engaged", "page_views", "microconversions", "conversions", "revenue_cents")
    add = ", ".join(f"{s} = {s} + excluded.{s}" for s in sums)
    merges = {  # table: (its text key columns that values fill, what a merge does)
        "day_keys": (["value"], "NOTHING"),
        "day_metrics": (["value"], f"UPDATE SET {add}"),
        "day_groups": (list(GROUP_FIELDS), f"UPDATE SET {add}"),
        "pages": (
            ["path"],
            "UPDATE SET first_day = min(first_day, excluded.first_day), "
            "last_day = max(last_day, excluded.last_day), content_grouping = CASE WHEN "
            "excluded.last_day > last_day THEN excluded.content_grouping ELSE content_grouping END",
        ),
    }
    for table, (keys, merge) in merges.items():
        cols = [row[1] for row in db.execute(f"PRAGMA table_info({table})").fetchall()]
        db.execute(
            f"INSERT INTO {table} ({', '.join(cols)}) SELECT {cleaned(cols, keys)} FROM {table} "
            f"WHERE {has_nul(keys)} ON CONFLICT DO {merge}"
        )
        db.execute(f"DELETE FROM {table} WHERE {has_nul(keys)}")
    group = "content_grouping"
    db.execute(f"UPDATE pages SET {group} = without_nul({group}) WHERE {has_nul([group])}")


# An event's values before the last CSV column, besides its date and time (always plain).
CSV_HEAD_FIELDS = ("conversion_type", "path", "landing_page", *VISIT_FIELDS, "content_grouping")
ODD_STARTS = ("=", "+", "-", "@", "\t")  # the CSV formula guard's, CR aside (quoted anyway)


@migrations()
def m016_odd_rows(db: sqlite_utils.Database) -> None:
    """`day_rows.odd`: how many of a day's events have a value before the last CSV column that a
    CSV line must quote (a comma, a quote, CR or LF) or may guard (it starts with = + - @ or
    tab; a negative amount). A raw CSV export takes the lines of the days without one as
    SQLite prints them, and checks the others (exports/raw.py)."""
    db.execute("ALTER TABLE day_rows ADD COLUMN odd INTEGER NOT NULL DEFAULT 0")
    starts = ", ".join("char(9)" if s == "\t" else f"'{s}'" for s in ODD_STARTS)
    odd = " OR ".join(
        f"instr({f}, ',') OR instr({f}, '\"') OR instr({f}, char(10)) OR instr({f}, char(13)) "
        f"OR substr({f}, 1, 1) IN ({starts})"
        for f in CSV_HEAD_FIELDS
    )
    for kind, extra in (("conversions", " OR amount_cents < 0"), ("microconversions", "")):
        db.execute(
            f"UPDATE day_rows SET odd = (SELECT COUNT(*) FROM {kind} e WHERE e.site_id = day_rows.site_id "
            f"AND e.day = day_rows.day AND ({odd}{extra})) WHERE kind = '{kind}'"
        )
