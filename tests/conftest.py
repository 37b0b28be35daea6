"""Shared fixtures: real SQLite files seeded with deterministic demo data."""

from __future__ import annotations

import io
import logging
import os
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
from tests.apps import ApiFactory, Template
from tests.model import Model

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


def seed_demo(
    path: Path,
    site_id: str = "demo",
    *,
    end: date = DEMO_END,
    days: int = DEMO_DAYS,
    visits: int = DEMO_VISITS,
    seed: int = DEMO_SEED,
) -> DemoDB:
    """A site in Europe/Madrid with `visits` demo visits over the `days` days ending `end`."""
    conn = connect(path)
    site = accounts.create_site(conn, site_id, timezone="Europe/Madrid")
    inserted = list(demo.generate(site.timezone, end=end, days=days, visits=visits, seed=seed))
    with transaction(conn):
        insert_visits(conn, site, inserted)
    conn.close()
    start = date.fromordinal(end.toordinal() - days + 1)
    return DemoDB(path, site, inserted, start, end)


def template(path: Path, *, visits: int, days: int) -> Template:
    """A seeded database for the HTTP tests to copy (each test gets its own copy)."""
    db = seed_demo(path, visits=visits, days=days)
    return Template(db.path, db.site.site_id, str(db.date_from), str(db.date_to))


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """3,000 visits over 10 days."""
    return template(tmp_path_factory.mktemp("api-small") / "template.db", visits=3000, days=10)


@pytest.fixture(scope="session")
def big(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """15,000 visits over 10 days: about 40,000 page views and 4,100 microconversions (three
    chunks of a file)."""
    return template(tmp_path_factory.mktemp("api-big") / "template.db", visits=15000, days=10)


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
def no_config_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SEALEXPORTS_* variable of the shell running the tests reaches the code under test."""
    for name in list(os.environ):
        if name.startswith("SEALEXPORTS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder, away from the database (for commands that write files there)."""
    folder = tmp_path / "out"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sealexports.db"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Our handler on the root logger, writing to a buffer; the logging setup is put back after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("huey").level
    buf = io.StringIO()
    yield buf
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("huey").setLevel(saved[2])


@pytest.fixture(scope="session")
def model(demo_db: DemoDB) -> Model:
    return Model(demo_db.visits, demo_db.site.timezone)


def say(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """A figures line that shows in pytest's output without -s."""
    with capsys.disabled():
        print(f"\n{line}")


@pytest.fixture
def make(tmp_path: Path) -> Iterator[ApiFactory]:
    """Apps on this test's own database, stopped at the end of the test."""
    with ExitStack() as stack:
        yield ApiFactory(tmp_path, stack)
