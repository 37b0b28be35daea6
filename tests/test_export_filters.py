"""Filters and awkward values (quoting, unicode, missing values, ties, odd amounts) against the
independent model in tests/model.py.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sealexports.storage import accounts
from sealexports.storage.database import connect, transaction
from sealexports.storage.visits import Conversion, PageView, Visit, insert_visits
from tests.conftest import DemoDB
from tests.exported import (
    AGGREGATE_TYPES,
    FORMATS,
    assert_matches_model,
    export_bytes,
    make_request,
    read_export,
)
from tests.model import (
    EXPORT_TYPES,
    Model,
    Row,
)

# --- Filters --------------------------------------------------------------------------------------

BASIC = ("sources", "pages", "time_series", "conversions")
FILTER_CASES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    # Simple keys, string and list forms.
    ("utm_source", {"utm_source": "google"}, BASIC),
    ("utm_source list", {"utm_source": ["facebook", "instagram"]}, BASIC),
    ("utm_medium", {"utm_medium": "cpc"}, BASIC),
    ("utm_medium list", {"utm_medium": ["email", "social"]}, ("campaigns", "time_series")),
    ("utm_campaign", {"utm_campaign": "brand"}, ("mediums", "conversions")),
    ("utm_campaign list", {"utm_campaign": ["spring_sale", "retargeting"]}, ("sources", "pages")),
    ("utm_term", {"utm_term": "running shoes"}, ("campaigns", "time_series")),
    ("utm_term list", {"utm_term": ["gps watch", "sealrun"]}, ("terms", "conversions")),
    ("utm_content", {"utm_content": "banner_a"}, ("sources", "microconversions")),
    ("utm_content list", {"utm_content": ["video_15s", "story"]}, ("mediums", "pages")),
    ("country", {"country": "ES"}, ("countries", "devices", "time_series", "conversions")),
    ("country list", {"country": ["MX", "US"]}, ("countries", "pages", "microconversions")),
    ("device_type", {"device_type": "tablet"}, ("devices", "browsers", "conversions")),
    ("device_type list", {"device_type": ["desktop", "mobile"]}, ("os", "time_series")),
    ("browser", {"browser": "Firefox"}, ("browsers", "landing_pages", "conversions")),
    ("browser list", {"browser": ["Safari", "Samsung Internet"]}, ("os", "pages")),
    ("os", {"os": "Linux"}, ("os", "sources", "microconversions")),
    ("os list", {"os": ["iOS", "iPadOS"]}, ("devices", "time_series")),
    # content_grouping: page views by their page, entrances by the landing page, conversions by
    # the page where they fired.
    ("content_grouping", {"content_grouping": "products"}, (*BASIC, "landing_pages", "microconversions")),
    ("content_grouping list", {"content_grouping": ["blog", "checkout"]}, (*BASIC, "landing_pages")),
    ("content_grouping checkout", {"content_grouping": "checkout"}, ("sources", "time_series", "pages")),
    # conversion_type restricts conversions and microconversions only.
    ("conversion_type", {"conversion_type": "purchase"}, (*BASIC, "microconversions")),
    ("conversion_type list", {"conversion_type": ["lead", "signup"]}, ("devices", "conversions")),
    (
        "conversion_type micro",
        {"conversion_type": ["add_to_cart", "scroll_75"]},
        ("time_series", "microconversions"),
    ),
    ("no match", {"utm_source": "nope"}, ("sources", "time_series", "conversions")),
    (
        "combined",
        {"device_type": "mobile", "country": ["ES", "MX"], "conversion_type": "purchase"},
        ("countries", "time_series", "conversions"),
    ),
    # Advanced filters, every operator on several fields.
    ("adv eq", {"advanced_filters": "utm_source:eq:google"}, ("mediums", "time_series")),
    ("adv eq landing", {"advanced_filters": "landing_page:eq:/"}, ("sources", "pages", "conversions")),
    ("adv ne", {"advanced_filters": "utm_medium:ne:organic"}, ("mediums", "pages")),
    ("adv ne missing", {"advanced_filters": "utm_campaign:ne:brand"}, ("campaigns", "conversions")),
    ("adv ne country", {"advanced_filters": "country:ne:ES"}, ("countries",)),
    ("adv ne referrer", {"advanced_filters": "referrer:ne:google.com"}, ("sources", "time_series")),
    ("adv contains", {"advanced_filters": "utm_term:contains:running"}, ("terms", "conversions")),
    ("adv not_contains", {"advanced_filters": "utm_term:not_contains:running"}, ("terms", "time_series")),
    ("adv regex", {"advanced_filters": "utm_content:regex:^banner"}, ("sources", "microconversions")),
    ("adv not_regex", {"advanced_filters": "utm_content:not_regex:^banner"}, ("sources", "time_series")),
    ("adv regex referrer", {"advanced_filters": r"referrer:regex:\.example$"}, ("sources", "conversions")),
    ("adv in", {"advanced_filters": "country:in:ES|MX|US"}, ("countries", "pages")),
    ("adv not_regex matches all", {"advanced_filters": "country:not_regex:.*"}, ("countries", "time_series")),
    ("adv not_in", {"advanced_filters": "country:not_in:ES|MX"}, ("countries", "conversions")),
    ("adv not_in os", {"advanced_filters": "os:not_in:Windows|Android"}, ("os", "time_series")),
    # path: the page path for page views and conversions, the landing page for entrances.
    (
        "path contains",
        {"advanced_filters": "path:contains:/blog/"},
        ("pages", "landing_pages", "time_series"),
    ),
    ("path eq thank-you", {"advanced_filters": "path:eq:/checkout/thank-you"}, (*BASIC, "landing_pages")),
    (
        "path regex",
        {"advanced_filters": "path:regex:^/products/(running|trail)/"},
        ("pages", "landing_pages", "microconversions"),
    ),
    ("path not_regex", {"advanced_filters": "path:not_regex:^/blog/"}, ("pages", "landing_pages", "sources")),
    ("path in", {"advanced_filters": "path:in:/|/pricing|/about"}, ("pages", "landing_pages")),
    ("landing_page in", {"advanced_filters": "landing_page:in:/|/pricing"}, ("pages", "landing_pages")),
    ("cg in", {"advanced_filters": "content_grouping:in:products|checkout"}, ("pages", "landing_pages")),
    ("cg not_in", {"advanced_filters": "content_grouping:not_in:blog|docs"}, ("sources", "conversions")),
    ("cg regex", {"advanced_filters": "content_grouping:regex:^(home|pricing)$"}, ("time_series",)),
    # conversion_type adds no condition on page views and entrances.
    ("adv conversion_type", {"advanced_filters": "conversion_type:eq:purchase"}, ("time_series", "sources")),
    (
        "adv conversion_type not_in",
        {"advanced_filters": "conversion_type:not_in:purchase|scroll_75"},
        ("time_series", "microconversions"),
    ),
    ("adv conversion_type contains", {"advanced_filters": "conversion_type:contains:a"}, ("pages",)),
    # ANDed expressions; commas inside values.
    ("adv and", {"advanced_filters": "device_type:eq:mobile,browser:ne:Chrome"}, ("browsers", "time_series")),
    ("adv and spaced", {"advanced_filters": "device_type:eq:mobile, browser:eq:Safari"}, ("os",)),
    ("adv comma value", {"advanced_filters": "path:contains:a,b"}, ("pages", "sources")),
    (
        "adv comma value and",
        {"advanced_filters": "path:contains:a,b,utm_source:eq:google"},
        ("pages", "time_series"),
    ),
    (
        "adv regex with comma",
        {"advanced_filters": "path:regex:^/blog/[a-z]{3,5}-"},
        ("pages", "landing_pages"),
    ),
    (
        "adv regex comma and in",
        {"advanced_filters": "utm_term:regex:^(running|trail) shoes$,country:in:ES|MX"},
        ("terms", "conversions"),
    ),
    (
        "simple and advanced",
        {"utm_medium": "cpc", "advanced_filters": "path:contains:/products/"},
        ("campaigns", "pages", "conversions"),
    ),
]
_FILTER_PARAMS = [
    pytest.param(filters, t, id=f"{name}-{t}") for name, filters, types in FILTER_CASES for t in types
]


@pytest.mark.parametrize(("filters", "export_type"), _FILTER_PARAMS)
def test_filters_match_model(
    demo_db: DemoDB,
    demo_conn: sqlite3.Connection,
    model: Model,
    filters: dict[str, Any],
    export_type: str,
) -> None:
    req = make_request(demo_db, export_type, "json", filters=filters)
    expected = assert_matches_model(demo_conn, model, req, filters)
    # The case means something: it changes this export.
    assert expected != model.rows(export_type, demo_db.date_from, demo_db.date_to)


@pytest.mark.parametrize(
    "filters",
    [
        {"content_grouping": ["blog", "checkout"]},
        {"advanced_filters": "path:regex:^/blog/[a-z]{3,5}-,utm_medium:ne:organic"},
        {"advanced_filters": "utm_campaign:not_regex:sale,country:not_in:ES|MX"},
    ],
    ids=["cg", "regex comma", "negatives"],
)
@pytest.mark.parametrize("export_type", ["landing_pages", "countries", "conversions"])
def test_filters_match_model_csv(
    demo_db: DemoDB,
    demo_conn: sqlite3.Connection,
    model: Model,
    filters: dict[str, Any],
    export_type: str,
) -> None:
    assert_matches_model(
        demo_conn, model, make_request(demo_db, export_type, "csv", filters=filters), filters
    )


# Path conditions read the rollups (pages, time_series: days; landing pages and days under
# landing_page conditions) or the events, and a regex on a page path runs against the site's
# distinct pages; every aggregate type, with and without a visit-field condition, against the model.
PATH_CONDITIONS = [
    "path:eq:/",
    "path:contains:/blog/",
    "path:not_contains:/products/",
    "path:regex:^/products/(running|trail)/",
    "path:not_regex:^/blog/",
    "path:in:/|/pricing|/about",
    "path:contains:/blog/,path:not_regex:running",
    "landing_page:regex:^/blog/",
    "landing_page:not_in:/|/pricing",
]


@pytest.mark.parametrize("visit_condition", ["", ",country:in:ES|MX"], ids=["path only", "and country"])
@pytest.mark.parametrize("condition", PATH_CONDITIONS)
@pytest.mark.parametrize("export_type", [*AGGREGATE_TYPES, "time_series"])
def test_path_conditions_match_model(
    demo_db: DemoDB,
    demo_conn: sqlite3.Connection,
    model: Model,
    export_type: str,
    condition: str,
    visit_condition: str,
) -> None:
    filters = {"advanced_filters": condition + visit_condition}
    req = make_request(demo_db, export_type, "csv", filters=filters)
    expected = assert_matches_model(demo_conn, model, req, filters)
    assert expected != model.rows(export_type, demo_db.date_from, demo_db.date_to)


def test_filter_semantics_pinned(demo_db: DemoDB, demo_conn: sqlite3.Connection, model: Model) -> None:
    """A few consequences of the contract, stated outright rather than only through the model."""

    def totals(filters: dict[str, Any]) -> Row:
        req = make_request(demo_db, "time_series", "json", filters=filters)
        rows = read_export(demo_conn, req)
        return tuple(sum(r[i] for r in rows) for i in (1, 4, 5, 6))  # e, pv, mc, c

    e, pv, _, c = totals({})
    # conversion_type leaves entrances and page views alone, and restricts conversions.
    e2, pv2, _, c2 = totals({"conversion_type": "purchase"})
    purchases = sum(1 for x in model.events["conversion"] if x.conversion_type == "purchase")
    assert (e2, pv2) == (e, pv) and c2 == purchases < c
    # Negative operators keep rows whose field is missing.
    no_country = sum(1 for v in demo_db.visits if v.country is None)
    es = sum(1 for v in demo_db.visits if v.country == "ES")
    assert no_country > 0
    assert totals({"advanced_filters": "country:ne:ES"})[0] == e - es
    assert totals({"advanced_filters": "country:not_in:ES"})[0] == e - es
    assert totals({"advanced_filters": "country:not_regex:^ES$"})[0] == e - es
    assert totals({"advanced_filters": "country:not_contains:E"})[0] == e - sum(
        1 for v in demo_db.visits if v.country and "E" in v.country
    )
    # Positive operators never match a missing value.
    assert totals({"advanced_filters": "country:regex:.*"})[0] == e - no_country
    # path on entrances means the landing page.
    home = sum(1 for v in demo_db.visits if v.pages[0].path == "/")
    assert totals({"advanced_filters": "path:eq:/"})[0] == home


# --- Awkward values: quoting, unicode, missing values, ties, odd amounts ---------------------------------

TRICKY_TZ = "Pacific/Auckland"  # UTC+13 in January: most local days differ from UTC days


def _at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2025, 1, day, hour, minute, second, tzinfo=ZoneInfo(TRICKY_TZ))


def _tricky_visits() -> list[Visit]:
    props = json.dumps({"note": 'a,b "q"\nnext', "items": [1, 2], "name": "ñandú €"})
    return [
        Visit(
            pages=[
                PageView(_at(10, 23, 59, 50), "/x,y", "odd"),
                PageView(_at(11, 0, 0, 5), '/q"uote', "odd"),
            ],
            referrer="ref,erer.example",
            utm_source="a,b",
            utm_medium="cpc",
            utm_campaign='say "hi"',
            utm_term="line\nbreak",
            utm_content=" padded ",
            country="ES",
            device_type="desktop",
            browser="Chrome",
            os="Windows",
            conversions=[Conversion(_at(11, 0, 1), "purchase", '/q"uote', "odd", 5, props)],
            microconversions=[Conversion(_at(10, 23, 59, 55), "add_to_cart", "/x,y", "odd", 0, None)],
        ),
        Visit(  # every dimension missing
            pages=[PageView(_at(11, 12), "/")],
            conversions=[Conversion(_at(11, 12, 0, 30), "lead", "/", None, 123456, "{}")],
            microconversions=[Conversion(_at(11, 12, 0, 30), "newsletter", "/", None, 0, '{"a":null}')],
        ),
        Visit(
            pages=[PageView(_at(11, 12), "/café", "blog"), PageView(_at(11, 12, 5), "/", None)],
            utm_source="ñandú €",
            utm_content="x\r\ny",
            country="ZZ",  # not a listed code: no country_name
            device_type="mobile",
            browser="Samsung Internet",
            os="Android",
            conversions=[
                Conversion(_at(11, 12, 0, 30), "refund", "/café", "blog", -250, '{"r":"x,y"}'),
                Conversion(_at(12, 9), "purchase", "/", None, 100, None),
            ],
        ),
        Visit(
            pages=[PageView(_at(12, 1), "/x,y", "odd")],
            utm_source="a,b",
            country="ES",
            device_type="tablet",
            browser="Safari",
            os="iPadOS",
            conversions=[Conversion(_at(12, 1, 0, 1), "purchase", "/x,y", "odd", 7, '"just a string"')],
        ),
        Visit(  # formulas a spreadsheet would run: guarded in CSV, as sent in JSON
            pages=[PageView(_at(12, 3), "/f", "=SUM(1)")],
            utm_source='=HYPERLINK("http://evil.example","x")',
            utm_medium="+cmd|' /C calc'!A0",
            utm_campaign="-5",
            utm_term="@SUM(A1)",
            utm_content="\tt",
            device_type="mobile",
            browser="\rb",
            os="-",
            conversions=[Conversion(_at(12, 3, 0, 10), "=1+1", "/f", "@c", 42, '{"f":"=x"}')],
            microconversions=[Conversion(_at(12, 3, 0, 20), "-micro", "/f", None, 0, None)],
        ),
    ]


@pytest.fixture(scope="module")
def tricky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[sqlite3.Connection, DemoDB, Model]]:
    path = tmp_path_factory.mktemp("tricky") / "tricky.db"
    conn = connect(path)
    site = accounts.create_site(conn, "tricky", timezone=TRICKY_TZ)
    visits = _tricky_visits()
    with transaction(conn):
        insert_visits(conn, site, visits)
    yield conn, DemoDB(path, site, visits, date(2025, 1, 10), date(2025, 1, 12)), Model(visits, TRICKY_TZ)
    conn.close()


@pytest.mark.parametrize("fmt", [*FORMATS, "xlsx", "parquet"])
@pytest.mark.parametrize("export_type", EXPORT_TYPES)
def test_awkward_values_match_model(
    tricky: tuple[sqlite3.Connection, DemoDB, Model], export_type: str, fmt: str
) -> None:
    conn, db, model = tricky
    assert assert_matches_model(conn, model, make_request(db, export_type, fmt))


@pytest.mark.parametrize(
    "filters",
    [
        {"utm_source": "a,b"},
        {"utm_campaign": 'say "hi"'},
        {"advanced_filters": "path:contains:x,y"},
        {"advanced_filters": "path:contains:x,y,utm_source:ne:a,b"},
        {"advanced_filters": "utm_source:in:a,b|ñandú €"},
        {"advanced_filters": "utm_content:eq: padded "},
        {"advanced_filters": "referrer:regex:^ref,"},
        {"conversion_type": "refund"},
    ],
)
@pytest.mark.parametrize("export_type", ["sources", "pages", "time_series", "conversions"])
def test_awkward_filters_match_model(
    tricky: tuple[sqlite3.Connection, DemoDB, Model], export_type: str, filters: dict[str, Any]
) -> None:
    conn, db, model = tricky
    for fmt in FORMATS:
        assert_matches_model(conn, model, make_request(db, export_type, fmt, filters=filters), filters)
    assert model.rows(export_type, db.date_from, db.date_to, filters) != model.rows(
        export_type, db.date_from, db.date_to
    )


@pytest.mark.parametrize("export_type", ["sources", "mediums", "campaigns", "landing_pages", "conversions"])
def test_formulas_are_guarded_in_csv_unless_turned_off(
    tricky: tuple[sqlite3.Connection, DemoDB, Model], export_type: str
) -> None:
    conn, db, model = tricky
    guarded = export_bytes(conn, make_request(db, export_type, "csv")).decode()
    assert any(
        cell.startswith("'") for record in csv.reader(io.StringIO(guarded, newline="")) for cell in record
    )
    off = replace(make_request(db, export_type, "csv"), formula_guard=False)
    assert read_export(conn, off) == model.rows(export_type, db.date_from, db.date_to)
    assert export_bytes(conn, off) != guarded.encode()


def test_awkward_csv_bytes(tricky: tuple[sqlite3.Connection, DemoDB, Model]) -> None:
    conn, db, _ = tricky
    data = export_bytes(conn, make_request(db, "conversions", "csv")).decode()
    assert ',"a,b",' in data and ',"say ""hi""",' in data and ',"line\nbreak",' in data
    assert ",-2.50," in data and ",0.05," in data and ",1234.56," in data and ",0.07," in data
    assert ',"""just a string"""\r\n' in data
