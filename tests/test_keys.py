"""API keys: bound to one site or to a whole account, when they were last used, and the demo key."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlite_utils
from click.testing import CliRunner
from litestar.testing import TestClient

from sealexports.api.app import create_app
from sealexports.cli import State, cli
from sealexports.cli.service import _prepare_demo
from sealexports.config import Settings
from sealexports.storage import accounts
from sealexports.storage.database import connect
from sealexports.storage.schema import migrations
from tests.conftest import seed_demo

BASE = "http://testserver.local"
EXPORT = {"export_type": "sources", "date_from": "2025-03-20", "date_to": "2025-03-30"}
EVENT = [{"type": "pageview", "ts": "2025-03-30T10:00:00Z", "visitor": "v", "path": "/"}]


@dataclass
class Service:
    http: TestClient[Any]
    db: Path

    def export(self, key: str, site: str) -> httpx.Response:
        return self.http.post("/api/v1/exports/estimate", params={"site_id": site}, json=EXPORT,
                              headers={"X-API-Key": key})  # fmt: skip

    def events(self, key: str, site: str) -> httpx.Response:
        batch = [{**EVENT[0], "visitor": uuid.uuid4().hex}]  # a new event each time: never a duplicate
        return self.http.post(
            "/api/v1/events", params={"site_id": site}, json=batch, headers={"X-API-Key": key}
        )

    def sites(self, key: str) -> list[str]:
        r = self.http.get("/api/v1/sites", headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        return [s["site_id"] for s in r.json()["sites"]]

    def values(self, key: str, site: str) -> int:
        url = f"/api/v1/sites/{site}/values"
        return self.http.get(url, params={"key": "country"}, headers={"X-API-Key": key}).status_code

    def last_used(self, key: str) -> str | None:
        conn = sqlite3.connect(self.db)
        try:
            row = conn.execute("SELECT last_used_at FROM api_keys WHERE prefix = ?", [key[:12]]).fetchone()
            return None if row is None else row[0]
        finally:
            conn.close()

    def set_last_used(self, key: str, value: str | None) -> None:
        conn = sqlite3.connect(self.db)
        try:
            conn.execute("UPDATE api_keys SET last_used_at = ? WHERE prefix = ?", [value, key[:12]])
            conn.commit()
        finally:
            conn.close()


def serve(db: Path, tmp_path: Path) -> Iterator[Service]:
    settings = Settings(database=db, exports_dir=tmp_path / "exports", public_url=BASE)
    with TestClient(create_app(settings, run_workers=False), base_url=BASE) as client:
        yield Service(client, db)


@pytest.fixture
def acme(tmp_path: Path) -> Path:
    """Account acme with sites shop and blog; account rival with site rival."""
    db = tmp_path / "sealexports.db"
    conn = connect(db)
    for site, account in (("shop", "acme"), ("blog", "acme"), ("rival", "rival")):
        accounts.create_site(conn, site, account=account)
    conn.close()
    return db


def key(db: Path, site: str | None = None, scope: str = "read", account: str | None = None) -> str:
    conn = connect(db)
    try:
        return accounts.create_key(conn, site, None, scope, account=account)
    finally:
        conn.close()


# --- Scopes: one site, or the whole account ------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["export", "events"])
def test_a_site_key_works_on_its_site_only(acme: Path, tmp_path: Path, endpoint: str) -> None:
    scope = "read" if endpoint == "export" else "write"
    shop_key, wide_key = key(acme, "shop", scope), key(acme, scope=scope, account="acme")
    for service in serve(acme, tmp_path):
        call = getattr(service, endpoint)
        assert call(shop_key, "shop").status_code == 200
        # The account's other site answers exactly as an unknown site does.
        other, unknown = call(shop_key, "blog"), call(shop_key, "nowhere")
        assert other.status_code == unknown.status_code == 404
        assert other.json()["detail"].replace("blog", "X") == unknown.json()["detail"].replace("nowhere", "X")
        assert call(shop_key, "rival").status_code == 404
        # The account-wide key reaches both of the account's sites, and still not the rival's.
        assert [call(wide_key, s).status_code for s in ("shop", "blog", "rival")] == [200, 200, 404]
    if endpoint == "events":  # the refused batch wrote nothing on blog
        conn = connect(acme)
        counts = dict(conn.execute("SELECT site_id, COUNT(*) FROM pageviews GROUP BY site_id").fetchall())
        conn.close()
        assert counts == {"shop": 2, "blog": 1}  # shop: site key + wide key; blog: wide key


def test_a_site_key_lists_and_reads_only_its_site(acme: Path, tmp_path: Path) -> None:
    shop_key, wide_key = key(acme, "shop"), key(acme, account="acme")
    for service in serve(acme, tmp_path):
        assert service.sites(shop_key) == ["shop"]
        assert service.sites(wide_key) == ["blog", "shop"]
        assert [service.values(shop_key, s) for s in ("shop", "blog", "nowhere")] == [200, 404, 404]
        assert [service.values(wide_key, s) for s in ("shop", "blog", "rival")] == [200, 200, 404]


def test_keys_made_before_site_binding_keep_working_on_every_site(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    migrations.apply(sqlite_utils.Database(conn), stop_before="m006_key_sites")  # yesterday's schema
    conn.execute(
        "INSERT INTO accounts (name, plan, created_at) VALUES ('acme', 'free', '2025-01-01T00:00:00Z')"
    )
    for site in ("shop", "blog"):
        conn.execute("INSERT INTO sites (site_id, name, account_id, created_at) "
                     "VALUES (?, ?, 1, '2025-01-01T00:00:00Z')", [site, site])  # fmt: skip
    old = "sm_" + "k" * 43
    conn.execute(
        "INSERT INTO api_keys (account_id, name, prefix, key_hash, created_at) VALUES (1, 'old', ?, ?, ?)",
        [old[:12], accounts.key_hash(old), "2025-01-01T00:00:00Z"],
    )
    conn.close()
    for service in serve(db, tmp_path):  # migrates
        assert [service.export(old, s).status_code for s in ("shop", "blog", "nowhere")] == [200, 200, 404]
    conn = connect(db)
    assert [(k.name, k.site) for k in accounts.list_keys(conn)] == [("old", None)]
    conn.close()


def test_a_site_keys_rate_limit_and_plan_are_its_accounts(acme: Path) -> None:
    conn = connect(acme)
    account = accounts.authenticate(conn, key(acme, "shop"))
    conn.close()
    assert (account.name, account.plan, account.key_site) == ("acme", "free", "shop")


# --- last_used_at --------------------------------------------------------------------------------


def ago(seconds: int) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("endpoint", ["export", "events"])
def test_last_used_at_is_written_at_most_once_a_minute(acme: Path, tmp_path: Path, endpoint: str) -> None:
    k = key(acme, "shop", "read" if endpoint == "export" else "write")
    for service in serve(acme, tmp_path):
        call = getattr(service, endpoint)
        assert service.last_used(k) is None
        before = datetime.now(UTC).replace(microsecond=0)
        assert call(k, "shop").status_code == 200
        first = service.last_used(k)
        assert first is not None
        seen = datetime.strptime(first, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert before <= seen <= datetime.now(UTC)
        # Used again within the minute: not written again (an older value stays as it was).
        recent = ago(30)
        service.set_last_used(k, recent)
        for _ in range(5):
            assert call(k, "shop").status_code == 200
        assert service.last_used(k) == recent
        # Over a minute later: written again.
        service.set_last_used(k, ago(61))
        assert call(k, "shop").status_code == 200
        again = service.last_used(k)
        assert again is not None and again >= first
        # An unknown key is a 401 and records nothing.
        assert call("sm_" + "x" * 43, "shop").status_code == 401
        conn = connect(acme)
        assert conn.execute("SELECT COUNT(*) FROM api_keys WHERE last_used_at IS NOT NULL").fetchone() == (1,)
        conn.close()


def test_keys_list_shows_last_used_at(acme: Path, tmp_path: Path) -> None:
    k = key(acme, "shop")
    for service in serve(acme, tmp_path):
        assert service.export(k, "shop").status_code == 200
    out = CliRunner().invoke(cli, ["--db", str(acme), "keys", "list"]).stdout
    row = next(line.split() for line in out.splitlines() if line.startswith(k[:12]))
    assert row[-1] == service.last_used(k) and row[-1].startswith("20")


# --- The demo key --------------------------------------------------------------------------------


def test_serve_demo_reuses_its_key(tmp_path: Path) -> None:
    db = tmp_path / "sealexports.db"
    seed_demo(db, visits=200, days=2)  # a demo site with data: nothing to seed
    state = State(Settings(database=db))
    first = _prepare_demo(state)
    again = _prepare_demo(State(Settings(database=db)))  # the next start
    assert again == first
    conn = connect(db)
    demo_keys = [k for k in accounts.list_keys(conn) if k.name == "serve --demo"]
    assert len(demo_keys) == 1 and demo_keys[0].site == "demo"
    assert accounts.authenticate(conn, first).key_site == "demo"
    # Revoked: the next start makes a new one (and only one).
    accounts.revoke_key(conn, first[:12])
    conn.close()
    third = _prepare_demo(State(Settings(database=db)))
    assert third != first and _prepare_demo(State(Settings(database=db))) == third
    conn = connect(db)
    assert len([k for k in accounts.list_keys(conn) if k.name == "serve --demo"]) == 2
    assert accounts.authenticate(conn, third).name == "demo"
    conn.close()
