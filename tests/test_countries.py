"""Country codes and the values ingest normalises: names for every ISO code (pycountry), unknown
codes refused at ingest, XX stored as missing, and filter values matched as ingest stores them
(`country=es` is ES, `device_type=Mobile` is mobile)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Any

import pycountry
import pytest

from sealexports import normal
from sealexports.countries import country_name
from sealexports.exports import engine
from sealexports.exports.request import build_request
from sealexports.ingest.event_format import EventError, parse_event
from tests.conftest import DemoDB


def test_every_iso_code_has_a_name() -> None:
    codes = [c.alpha_2 for c in pycountry.countries]
    assert len(codes) == 249
    assert all(country_name(code) for code in codes)
    # The hand-kept table knew 120 of them: KH was blank.
    assert country_name("KH") == "Cambodia"
    assert country_name("KR") == "South Korea"  # the common name where ISO's is formal
    assert country_name("ES") == "Spain"
    for missing in (None, "", "QQ", "XX", "ZZ", "UK", "ESP"):
        assert country_name(missing) is None


def event(**extra: Any) -> dict[str, Any]:
    return {"type": "pageview", "ts": "2025-06-01T10:00:00Z", "visitor": "v", "path": "/", **extra}


@pytest.mark.parametrize("code", ["QQ", "UK", "AA", "E1", "ÉS"])
def test_ingest_refuses_codes_that_are_not_countries(code: str) -> None:
    with pytest.raises(EventError, match=r"country: .* is not an ISO 3166-1 alpha-2 country code"):
        parse_event(event(country=code), 1)


@pytest.mark.parametrize(("given", "stored"), [("es", "ES"), ("Kh", "KH"), ("XX", None), ("zz", None)])
def test_ingest_stores_codes_upper_case_and_unknown_as_missing(given: str, stored: str | None) -> None:
    assert parse_event(event(country=given), 1).country == stored


def test_unknown_country_is_the_same_event_as_none() -> None:
    assert parse_event(event(country="XX"), 1).event_id == parse_event(event(), 1).event_id


def export(conn: sqlite3.Connection, export_type: str, filters: dict[str, Any], days: DemoDB) -> list[Any]:
    req = build_request("demo", export_type, "csv", str(days.date_from), str(days.date_to), filters)
    return list(engine.rows(conn, req))


def test_country_filter_values_are_matched_as_ingest_stores_them(
    demo_db: DemoDB, demo_conn: sqlite3.Connection
) -> None:
    by_country = Counter(v.country for v in demo_db.visits)  # the independent count
    upper = export(demo_conn, "countries", {"country": "ES"}, demo_db)
    assert [(r[0], r[2]) for r in upper] == [("ES", by_country["ES"])]
    assert export(demo_conn, "countries", {"country": "es"}, demo_db) == upper
    assert export(demo_conn, "countries", {"country": ["es", "fr"]}, demo_db) == export(
        demo_conn, "countries", {"country": ["ES", "FR"]}, demo_db
    )
    advanced = export(demo_conn, "countries", {"advanced_filters": "country:in:es|fr"}, demo_db)
    assert {r[0]: r[2] for r in advanced} == {"ES": by_country["ES"], "FR": by_country["FR"]}
    # Every country but Spain: ne compares with the stored form too.
    others = export(demo_conn, "countries", {"advanced_filters": "country:ne:es"}, demo_db)
    assert sum(r[2] for r in others) == len(demo_db.visits) - by_country["ES"]


def test_device_type_filter_values_are_matched_as_ingest_stores_them(
    demo_db: DemoDB, demo_conn: sqlite3.Connection
) -> None:
    mobile = Counter(v.device_type for v in demo_db.visits)["mobile"]
    rows = export(demo_conn, "devices", {"device_type": "Mobile"}, demo_db)
    assert [(r[0], r[1]) for r in rows] == [("mobile", mobile)]
    assert export(demo_conn, "devices", {"advanced_filters": "device_type:eq:MOBILE"}, demo_db) == rows


def test_referrer_url_means_its_host(demo_db: DemoDB, demo_conn: sqlite3.Connection) -> None:
    google = sum(1 for v in demo_db.visits if v.referrer == "google.com")
    assert google > 0
    for given in ("google.com", "Google.com", "https://www.google.com/search?q=shoes"):
        rows = export(demo_conn, "sources", {"advanced_filters": f"referrer:eq:{given}"}, demo_db)
        assert sum(r[1] for r in rows) == google, given


def test_regex_values_are_left_as_written() -> None:
    assert normal.filter_value("country", "regex", "^es$") == "^es$"
    assert normal.filter_value("country", "contains", "e") == "E"
    assert normal.filter_value("utm_source", "eq", "Google") == "Google"  # stored as sent
