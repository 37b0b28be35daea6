"""An import on two processes (the command line's) stores exactly what one process stores:
every table compared row for row, also when another connection writes while it runs, and
against a digest of the tables written by the single-process import before the second process
existed (commit b92c55f)."""

from __future__ import annotations

import gc
import hashlib
import random
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from sealexports.errors import InvalidEvents
from sealexports.ingest import NdjsonLines, import_events, ingest_batch, ndjson_items
from sealexports.ingest.importer import ImportReport, Progress
from sealexports.storage import accounts
from sealexports.storage.database import connect
from sealexports.storage.visits import ANALYTICS_TABLES, INGEST_TABLES

TIMEZONE = "Europe/Madrid"
WINDOW = 250  # small windows: many of them, visits carried across them, blocks on both processes
# The tables the single-process import wrote for lines() (first file, then second), before
# the import had a second process: sha256 of dump(), first 16 hex digits.
BEFORE = "8a61bce951969bc8"


PATHS = ("/", "/pricing", "/blog/a", "/blog/b", "/products/x", "/products/y", "/checkout/thank-you")
SOURCES: tuple[dict[str, str], ...] = (
    {},
    {"referrer": "https://www.google.com/search?q=shoes", "utm_source": "google", "utm_medium": "cpc"},
    {"referrer": "news.example.org", "utm_source": "news", "utm_campaign": "spring", "utm_term": "run"},
    {"utm_source": "mail", "utm_medium": "email", "utm_content": "footer"},
)
CLIENTS: tuple[dict[str, str], ...] = (
    {"country": "es", "device_type": "Mobile", "browser": "Safari", "os": "iOS"},
    {"country": "FR", "device_type": "desktop", "browser": "Firefox", "os": "Linux"},
    {"country": "XX"},
    {},
)


def lines(seed: int, visits: int) -> list[bytes]:
    """NDJSON of `visits` visits over 20 days of March 2025 (across the change to summer time,
    some past midnight): some visitors come back, some visits are keyed by visit_id, every
    field of the events format is used somewhere; then shuffled, with copies of some lines."""
    rng = random.Random(seed)
    start = datetime(2025, 3, 12, tzinfo=UTC).timestamp()
    out: list[bytes] = []
    for number in range(visits):
        who: dict[str, Any] = (
            {"visit_id": f"visit-{number}"}
            if number % 7 == 0
            else {"visitor": f"u{rng.randrange(visits // 2)}"}
        )
        ts = start + rng.randrange(20 * 86400)
        if number % 13 == 0:
            ts = ts - ts % 86400 + 86400 - 600  # ten minutes before midnight UTC
        events: list[dict[str, Any]] = []
        for i in range(rng.choice((1, 1, 2, 3, 5))):
            e: dict[str, Any] = {"type": "pageview", "ts": _iso(ts), **who, "path": rng.choice(PATHS)}
            if rng.random() < 0.7:
                e["content_grouping"] = e["path"].split("/")[1] or "home"
            if i == 0:
                e.update(rng.choice(SOURCES))
                e.update(rng.choice(CLIENTS))
            events.append(e)
            ts += rng.choice((5, 40, 300, 1700))
        for kind in ("conversion", "microconversion"):
            if rng.random() < 0.3:
                e = {"type": kind, "ts": _iso(ts - 3), **who, "path": "/checkout/thank-you",
                     "conversion_type": rng.choice(("purchase", "signup"))}  # fmt: skip
                if kind == "conversion":
                    e["amount"] = rng.choice((0, 9.99, 120, "15.5"))
                if rng.random() < 0.5:
                    e["properties"] = {"order": f"A{number}", "items": [1, {"n": number % 3}]}
                if number % 11 == 0:
                    e["id"] = f"order-{number}-{kind}"
                events.append(e)
        out += [orjson.dumps(e) for e in events]
    rng.shuffle(out)  # any order: the import sorts
    out += out[: len(out) // 20]  # duplicates in the same input
    out.insert(len(out) // 3, b"")  # a blank line, counted
    return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat() if int(ts) % 2 else str(int(ts))


def dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(db)
    try:
        return {
            t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
            for t in (*ANALYTICS_TABLES, *INGEST_TABLES)
        }
    finally:
        conn.close()


def digest(tables: dict[str, list[tuple[Any, ...]]]) -> str:
    return hashlib.sha256(repr(sorted(tables.items())).encode()).hexdigest()[:16]


def fresh(path: Path) -> tuple[sqlite3.Connection, accounts.Site]:
    conn = connect(path)
    return conn, accounts.create_site(conn, "shop", timezone=TIMEZONE)


def run(
    path: Path,
    data: list[bytes],
    processes: int,
    progress: Progress | None = None,
    *,
    skip_invalid: bool = False,
) -> ImportReport:
    conn = connect(path)
    try:
        site = accounts.get_site(conn, "shop")
        items = NdjsonLines(data) if processes > 1 else ndjson_items(data)
        return import_events(
            conn,
            site,
            items,
            window=WINDOW,
            processes=processes,
            progress=progress,
            skip_invalid=skip_invalid,
        )
    finally:
        conn.close()


@pytest.fixture(scope="module")
def files() -> tuple[list[bytes], list[bytes]]:
    """Two files: the second continues visits of the first (and has events before them), and
    repeats some of its lines."""
    first, second = lines(1, 500), lines(2, 400)
    return first, second + first[:200]


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, files: tuple[list[bytes], list[bytes]]) -> Path:
    path = tmp_path_factory.mktemp("single") / "one.db"
    fresh(path)[0].close()
    run(path, files[0], processes=1)
    run(path, files[1], processes=1, skip_invalid=True)  # some events come before a stored visit
    return path


def test_the_files_make_many_windows_and_visits_across_them(single: Path) -> None:
    tables = dump(single)
    assert len(tables["import_ids"]) > 5 * WINDOW
    assert len({row[0] for row in tables["visits"]}) > 300
    assert tables["visit_days"] and tables["conversions"] and tables["microconversions"]


def test_one_process_writes_what_it_wrote_before(single: Path) -> None:
    tables = dump(single)
    # day_rows.odd came later (m016; checked in test_raw_pages.py): the rest is unchanged.
    tables["day_rows"] = sorted((row[:4] for row in tables["day_rows"]), key=repr)
    assert digest(tables) == BEFORE


def test_two_processes_write_every_table_as_one_does(
    tmp_path: Path, files: tuple[list[bytes], list[bytes]], single: Path
) -> None:
    path = tmp_path / "two.db"
    fresh(path)[0].close()
    reports = [run(path, files[0], processes=2), run(path, files[1], processes=2, skip_invalid=True)]
    assert dump(path) == dump(single)
    assert reports[1].duplicates > 200  # the repeated lines, and the copies in the same input
    assert reports[0].imported + reports[1].imported == len(dump(path)["import_ids"])


def writer(path: Path) -> Callable[[str, int, int | None], None]:
    """A progress callback that has another connection take in a batch after the first window
    written: a server taking in events while the import runs."""
    state = {"written": False}

    def progress(phase: str, done: int, total: int | None) -> None:
        if phase == "write" and not state["written"]:
            state["written"] = True
            conn = connect(path)
            try:
                site = accounts.get_site(conn, "shop")
                batch = [
                    {"type": "pageview", "ts": "2025-03-20T10:00:00Z", "visitor": "server", "path": "/live"}
                ]
                ingest_batch(conn, site, ndjson_items([orjson.dumps(e) for e in batch]))
            finally:
                conn.close()

    return progress


def test_a_server_writing_meanwhile_gets_the_same_tables(
    tmp_path: Path, files: tuple[list[bytes], list[bytes]]
) -> None:
    results = []
    for processes in (1, 2):
        path = tmp_path / f"p{processes}.db"
        fresh(path)[0].close()
        report = run(path, files[0], processes=processes, progress=writer(path))
        results.append((dump(path), report.imported, report.counts))
    assert results[0] == results[1]
    visits = results[1][0]["visits"]
    assert len({v[0] for v in visits}) == len(visits)
    live = [v[0] for v in visits if "/live" in v]  # its id: taken between two windows of the import
    assert len(live) == 1 and 1 < live[0] < max(v[0] for v in visits)


def test_an_import_leaves_no_reference_cycles(tmp_path: Path, files: tuple[list[bytes], list[bytes]]) -> None:
    """Imports run with the cyclic collector off: what they leave for it must not grow with the
    input (bad lines, rejected events and duplicates included)."""
    left = []
    for n in (100, 2000):
        path = tmp_path / f"{n}.db"
        fresh(path)[0].close()
        data = [*files[1][:n], b"not json", b'{"type": "pageview"}']
        gc.collect()
        gc.disable()
        try:
            run(path, data, processes=1, skip_invalid=True)
            left.append(gc.collect())
        finally:
            gc.enable()
    assert left[0] == left[1]


def test_bad_lines_read_by_either_process_are_reported_as_by_one(
    tmp_path: Path, files: tuple[list[bytes], list[bytes]]
) -> None:
    """Bad lines in the blocks of both processes: the same error (the first five by line, and
    the count), nothing written; with skip_invalid the same report."""
    data = list(files[0][: 12 * WINDOW])
    for n in range(3, len(data), 97):
        data[n] = b'{"type": "pageview", "ts": "yesterday", "visitor": "x", "path": "/"}' if n % 2 else b"{"
    outcomes = []
    for processes in (1, 2):
        path = tmp_path / f"bad{processes}.db"
        fresh(path)[0].close()
        with pytest.raises(InvalidEvents) as raised:
            run(path, data, processes=processes)
        assert not any(dump(path).values())  # nothing written
        report = run(path, data, processes=processes, skip_invalid=True)
        error = (str(raised.value), raised.value.count)
        outcomes.append((error, report.invalid, report.errors, report.imported, dump(path)))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0][1] == outcomes[0][1] == len(range(3, len(data), 97))
