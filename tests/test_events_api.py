"""POST /api/v1/events through real HTTP (Litestar's TestClient) on a real SQLite file."""

# ruff: noqa: E501  (event literals read best one per line)

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from sealexports.api.app import create_app
from sealexports.config import Settings
from sealexports.storage import accounts
from sealexports.storage.database import connect
from tests.checks import assert_error

URL = "/api/v1/events"


class Client:
    def __init__(self, client: TestClient[Any], db: Path, keys: dict[str, str]) -> None:
        self.http, self.db, self.keys = client, db, keys

    def send(
        self,
        body: Any,
        *,
        key: str = "write",
        site: str | None = "shop",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        params = {"site_id": site} if site else {}
        hdrs = {"X-API-Key": self.keys[key], **(headers or {})} if key else dict(headers or {})
        if isinstance(body, bytes):
            return self.http.post(URL, params=params, content=body, headers=hdrs)
        return self.http.post(URL, params=params, json=body, headers=hdrs)

    def count(self, table: str) -> int:
        conn = sqlite3.connect(self.db)
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Client]:
    db = tmp_path / "sealexports.db"
    conn = connect(db)
    accounts.create_site(conn, "shop", timezone="Europe/Madrid")
    accounts.create_site(conn, "rival")
    keys = {
        "write": accounts.create_key(conn, "shop", scope="write"),
        "read": accounts.create_key(conn, "shop"),
        "rival": accounts.create_key(conn, "rival", scope="write"),
    }
    conn.close()
    settings = Settings(database=db, exports_dir=tmp_path / "exports", public_url="http://testserver.local")
    with TestClient(create_app(settings, run_workers=False), base_url="http://testserver.local") as client:
        yield Client(client, db, keys)


def pv(ts: str, path: str = "/", visitor: str = "v", **extra: Any) -> dict[str, Any]:
    return {"type": "pageview", "ts": ts, "visitor": visitor, "path": path, **extra}


def purchase(ts: str, visitor: str = "v", **extra: Any) -> dict[str, Any]:
    return {"type": "conversion", "ts": ts, "visitor": visitor, "path": "/checkout",
            "conversion_type": "purchase", "amount": 10, **extra}  # fmt: skip


# --- Taking events in ----------------------------------------------------------------------------


def test_a_batch_is_written_and_answered_with_counts(api: Client) -> None:
    events = [pv("2025-03-30T10:00:00Z", "/a", utm_source="google"), pv("2025-03-30T10:05:00Z", "/b"),
              purchase("2025-03-30T10:06:00Z"), pv("2025-03-30T10:00:00Z", visitor="w")]  # fmt: skip
    r = api.send(events)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 4, "rejected": 0, "duplicates": 0, "visits_created": 2, "errors": []}
    assert api.rows("SELECT landing_page, page_views, utm_source FROM visits ORDER BY started_at, id") == [
        ("/a", 2, "google"), ("/", 1, None)
    ]  # fmt: skip
    assert api.rows("SELECT amount_cents, landing_page FROM conversions") == [(1000, "/a")]


def test_the_exports_show_what_was_sent(api: Client) -> None:
    api.send([pv("2025-03-30T10:00:00Z", "/a", utm_source="google"), pv("2025-03-30T10:05:00Z", "/b"),
              purchase("2025-03-30T10:06:00Z")])  # fmt: skip
    r = api.http.post("/api/v1/exports/stream", params={"site_id": "shop"}, headers={"X-API-Key": api.keys["read"]},
                      json={"export_type": "sources", "date_from": "2025-03-30", "date_to": "2025-03-30"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.text.split("\r\n")[1] == "google,1,1,0.00,2,0,1,100.00,10.00"


def test_bad_events_are_listed_by_index_and_the_good_ones_kept(api: Client) -> None:
    events = [pv("2025-03-30T10:00:00Z"), pv("yesterday"), "not an object",
              {**pv("2025-03-30T10:00:00Z"), "colour": "red"}, purchase("2025-03-30T12:00:00Z"),
              purchase("2025-03-30T10:01:00Z", amount="1.001")]  # fmt: skip
    r = api.send(events)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"], body["duplicates"]) == (1, 5, 0)
    assert body["errors"] == [
        {"index": 1, "field": "ts", "message": "'yesterday' is not an ISO 8601 time or epoch seconds"},
        {"index": 2, "field": None, "message": "an event must be a JSON object"},
        {"index": 3, "field": "colour", "message": "unknown field (see docs/events.md for the fields)"},
        {
            "index": 4,
            "field": "visitor",
            "message": "no visit open for this visitor: a conversion must follow a page view of the visitor by at most 30 minutes of inactivity",
        },
        {"index": 5, "field": "amount", "message": "'1.001' has more than 2 decimals"},
    ]
    assert api.count("pageviews") == 1 and api.count("conversions") == 0


def test_a_deeply_nested_or_nul_event_is_refused_alone(api: Client) -> None:
    deep = (
        json.dumps(purchase("2025-03-30T10:01:00Z"))[:-1]
        + ', "properties": '
        + '{"a": ' * 1000
        + "1"
        + "}" * 1001
    )
    nul = json.dumps(purchase("2025-03-30T10:02:00Z", conversion_type="buy\0,INJECTED"))
    body = f"[{json.dumps(pv('2025-03-30T10:00:00Z'))}, {deep}, {nul}, {json.dumps(purchase('2025-03-30T10:03:00Z'))}]"
    r = api.send(body.encode())
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["rejected"]) == (2, 2)
    assert r.json()["errors"] == [
        {"index": 1, "field": "properties", "message": "nested more than 32 levels deep"},
        {"index": 2, "field": "conversion_type", "message": "contains a NUL character (U+0000)"},
    ]
    assert api.count("conversions") == 1


def test_sending_the_same_batch_again_adds_nothing(api: Client) -> None:
    events = [pv("2025-03-30T10:00:00Z"), purchase("2025-03-30T10:01:00Z", id="order-1")]
    assert api.send(events).json()["accepted"] == 2
    again = api.send([*events, purchase("2025-03-30T10:02:00Z", id="order-1")]).json()
    assert (again["accepted"], again["duplicates"], again["visits_created"]) == (0, 3, 0)
    assert api.count("pageviews") == 1 and api.count("conversions") == 1


def test_a_visit_goes_on_in_the_next_batch_within_30_minutes(api: Client) -> None:
    assert api.send([pv("2025-03-30T00:50:00Z", "/a")]).json()["visits_created"] == 1
    second = api.send([pv("2025-03-30T03:10:00+02:00", "/b"), purchase("2025-03-30T01:11:00Z")]).json()
    assert (second["accepted"], second["visits_created"]) == (2, 0)
    third = api.send([pv("2025-03-30T01:41:01Z", "/c")]).json()
    assert third["visits_created"] == 1
    assert api.rows("SELECT landing_page, page_views, day FROM visits ORDER BY id") == [
        ("/a", 2, "2025-03-30"), ("/c", 1, "2025-03-30")
    ]  # fmt: skip
    assert api.rows("SELECT path, is_entrance, landing_page, visit_id FROM pageviews ORDER BY ts") == [
        ("/a", 1, "/a", 1), ("/b", 0, "/a", 1), ("/c", 1, "/c", 2)
    ]  # fmt: skip
    assert api.rows("SELECT landing_page, visit_id FROM conversions") == [("/a", 1)]


def test_a_visit_id_continues_in_any_later_batch(api: Client) -> None:
    api.send([{"type": "pageview", "ts": "2025-03-30T08:00:00Z", "visit_id": "s1", "path": "/"}])
    r = api.send([{"type": "conversion", "ts": "2025-03-30T18:00:00Z", "visit_id": "s1", "path": "/",
                   "conversion_type": "lead"},
                  {"type": "pageview", "ts": "2025-03-30T07:00:00Z", "visit_id": "s1", "path": "/early"}]).json()  # fmt: skip
    assert r["accepted"] == 1 and r["errors"][0]["index"] == 1 and r["errors"][0]["field"] == "ts"
    assert "before the start of visit 's1'" in r["errors"][0]["message"]


# --- Body formats ----------------------------------------------------------------------------------


def ndjson(events: list[Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


@pytest.mark.parametrize("media_type", ["application/x-ndjson", "application/ndjson; charset=utf-8"])
def test_ndjson_bodies(api: Client, media_type: str) -> None:
    body = ndjson([pv("2025-03-30T10:00:00Z")]) + b"\n" + b"{oops\n"
    r = api.send(body, headers={"Content-Type": media_type})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    assert r.json()["errors"][0]["index"] == 2 and "not valid JSON" in r.json()["errors"][0]["message"]


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_gzip_bodies(api: Client, content_type: str) -> None:
    events = [pv("2025-03-30T10:00:00Z"), pv("2025-03-30T10:01:00Z", "/b")]
    raw = json.dumps(events).encode() if content_type == "application/json" else ndjson(events)
    r = api.send(gzip.compress(raw), headers={"Content-Type": content_type, "Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2


@pytest.mark.parametrize(
    ("body", "headers", "status", "text"),
    [
        (b"[1, 2", {}, 422, "the body is not valid JSON"),
        (b"", {}, 422, "the body is not valid JSON"),
        (b"[{}, {]", {}, 422, "the body is not valid JSON"),
        (b'[{"a": "b]', {}, 422, "the body is not valid JSON"),
        (b"[1,]", {}, 422, "the body is not valid JSON"),
        (b"[,1]", {}, 422, "the body is not valid JSON"),
        (b"[] []", {}, 422, "the body is not valid JSON"),
        (b"[{}, x]", {}, 422, "the body is not valid JSON"),
        (b'{"type": "pageview"}', {}, 422, "the body must be a JSON array of events"),
        (b"not gzip", {"Content-Encoding": "gzip"}, 422, "the body is not valid gzip"),
        (gzip.compress(b"[]")[:-6], {"Content-Encoding": "gzip"}, 422, "the body is not valid gzip"),
        (b"[]", {"Content-Encoding": "br"}, 415, "Content-Encoding must be gzip"),
        (
            b"type,ts\n",
            {"Content-Type": "text/csv"},
            415,
            "Content-Type must be application/json or application/x-ndjson",
        ),
    ],
)
def test_bad_bodies_are_clear_4xx(
    api: Client, body: bytes, headers: dict[str, str], status: int, text: str
) -> None:
    assert_error(api.send(body, headers=headers), status, text)
    assert api.count("import_ids") == 0


def test_an_empty_batch_is_fine(api: Client) -> None:
    assert api.send([]).json() == {
        "accepted": 0,
        "rejected": 0,
        "duplicates": 0,
        "visits_created": 0,
        "errors": [],
    }


# --- Limits ------------------------------------------------------------------------------------------


def test_over_10000_events_is_413_and_writes_nothing(api: Client) -> None:
    events = [pv(f"2025-03-30T10:00:{i % 60:02d}Z", f"/{i}", visitor=f"v{i}") for i in range(10_001)]
    assert_error(api.send(events), 413, "at most 10,000 events")
    assert api.count("pageviews") == 0
    assert api.send(events[:10_000]).json()["accepted"] == 10_000


def test_a_body_over_8_mib_is_413(api: Client) -> None:
    assert_error(api.send(b"[" + b" " * (8 * 2**20) + b"]"), 413, "the body is over 8 MiB")


def test_a_body_over_8_mib_once_decompressed_is_413(api: Client) -> None:
    bomb = gzip.compress(b"[" + b" " * (8 * 2**20 - 1) + b"]")
    assert_error(api.send(bomb, headers={"Content-Encoding": "gzip"}), 413, "8 MiB once decompressed")
    exactly = gzip.compress(b"[" + b" " * (8 * 2**20 - 2) + b"]")
    assert api.send(exactly, headers={"Content-Encoding": "gzip"}).json()["accepted"] == 0


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_a_gzip_bomb_of_millions_of_items_stops_at_the_batch_limit(api: Client, content_type: str) -> None:
    item = b"[]," if content_type == "application/json" else b"[]\n"
    bomb = gzip.compress(b"[" * (content_type == "application/json") + item * 2_000_000 + b"[]]", 9)
    assert len(bomb) < 32 * 1024
    r = api.send(bomb, headers={"Content-Encoding": "gzip", "Content-Type": content_type})
    assert_error(r, 413, "a batch takes at most 10,000 events")


def test_a_body_of_several_gzip_members_is_read_whole(api: Client) -> None:
    first, second = pv("2025-03-30T10:00:00Z"), pv("2025-03-30T10:01:00Z", "/b")
    body = gzip.compress(b"[" + json.dumps(first).encode() + b",") + gzip.compress(
        json.dumps(second).encode() + b"]"
    )
    r = api.send(body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    first, second = pv("2025-03-30T10:00:00Z", visitor="w"), pv("2025-03-30T10:01:00Z", "/b", visitor="w")
    body = gzip.compress(ndjson([first])) + gzip.compress(ndjson([second]))
    r = api.send(body, headers={"Content-Encoding": "gzip", "Content-Type": "application/x-ndjson"})
    assert r.json()["accepted"] == 2


@pytest.mark.parametrize("tail", [b"junk", b"\0" * 8, b"\n"])
def test_bytes_after_the_gzip_stream_are_422(api: Client, tail: bytes) -> None:
    body = gzip.compress(json.dumps([pv("2025-03-30T10:00:00Z")]).encode()) + tail
    assert_error(
        api.send(body, headers={"Content-Encoding": "gzip"}), 422, "after the end of its gzip stream"
    )
    assert api.count("pageviews") == 0


# --- Keys and sites ----------------------------------------------------------------------------------


def test_a_read_only_key_gets_403(api: Client) -> None:
    assert_error(api.send([pv("2025-03-30T10:00:00Z")], key="read"), 403, "'read' scope", "--scope write")
    assert api.count("pageviews") == 0


def test_an_ingestion_key_cannot_export(api: Client) -> None:
    r = api.http.post("/api/v1/exports/estimate", params={"site_id": "shop"}, headers={"X-API-Key": api.keys["write"]},
                      json={"export_type": "pages", "date_from": "2025-03-30", "date_to": "2025-03-30"})  # fmt: skip
    assert_error(r, 403, "'write' scope")


def test_no_key_is_401(api: Client) -> None:
    assert_error(api.send([], key=""), 401, "missing API key")


def test_another_accounts_site_is_404(api: Client) -> None:
    assert_error(api.send([pv("2025-03-30T10:00:00Z")], key="rival"), 404, "site 'shop' not found")


def test_the_site_is_required(api: Client) -> None:
    assert_error(api.send([], site=None), 422, "site_id is required")
    r = api.http.post(URL, params={"account_id": "shop"}, json=[pv("2025-03-30T10:00:00Z")],
                      headers={"X-API-Key": api.keys["write"]})  # fmt: skip
    assert r.status_code == 200 and r.json()["accepted"] == 1


def test_the_route_is_in_the_openapi_schema(api: Client) -> None:
    schema = api.http.get("/schema/openapi.json").json()
    assert "post" in schema["paths"]["/api/v1/events"]
