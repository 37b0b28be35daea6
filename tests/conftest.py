"""Shared fixtures: real SQLite files seeded with deterministic demo data."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from sealexports import demo
from sealexports.storage import accounts
from sealexports.storage.database import connect, transaction
from sealexports.storage.visits import Visit, insert_visits
from tests.apps import ApiFactory

# A small demo site whose range crosses the spring DST change in Europe/Madrid (2025-03-30).
DEMO_END = date(2025, 4, 5)
DEMO_DAYS = 21
DEMO_VISITS = 6000
DEMO_SEED = 7


@dataclass
class DemoDB:
    path: Path
    site: accounts.Site
    visits: list[Visit]  # exactly what was inserted: the independent source of truth
    date_from: date
    date_to: date


def seed_demo(path: Path, site_id: str = "demo", **kwargs: object) -> DemoDB:
    conn = connect(path)
    site = accounts.create_site(conn, site_id, timezone="Europe/Madrid")
    args = {"end": DEMO_END, "days": DEMO_DAYS, "visits": DEMO_VISITS, "seed": DEMO_SEED, **kwargs}
    visits = list(demo.generate(site.timezone, **args))  # type: ignore[arg-type]
    with transaction(conn):
        insert_visits(conn, site, visits)
    conn.close()
    end: date = args["end"]  # type: ignore[assignment]
    start = date.fromordinal(end.toordinal() - int(args["days"]) + 1)  # type: ignore[call-overload]
    return DemoDB(path, site, visits, start, end)


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> DemoDB:
    """A seeded database shared by the whole session: treat it as read-only."""
    return seed_demo(tmp_path_factory.mktemp("demo") / "demo.db")


@pytest.fixture
def demo_conn(demo_db: DemoDB) -> Iterator[sqlite3.Connection]:
    conn = connect(demo_db.path)
    yield conn
    conn.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sealexports.db"


def say(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """A figures line that shows in pytest's output without -s."""
    with capsys.disabled():
        print(f"\n{line}")


@pytest.fixture
def make(tmp_path: Path) -> Iterator[ApiFactory]:
    """Apps on this test's own database, stopped at the end of the test."""
    with ExitStack() as stack:
        yield ApiFactory(tmp_path, stack)
