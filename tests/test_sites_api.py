"""GET /api/v1/sites and /sites/{site_id}/values: the pickers of the web page, checked against
plain Python over the seeded visits."""

from __future__ import annotations

from collections import Counter
from zoneinfo import ZoneInfo

import httpx
import pytest

from sealexports.storage.accounts import revoke_key
from sealexports.storage.visits import Visit
from tests.apps import Api, ApiFactory, Template
from tests.checks import assert_error
from tests.conftest import DemoDB
from tests.tenants import assert_nothing_leaks, build_world, canonical

SITES = "/api/v1/sites"


@pytest.fixture
def api(make: ApiFactory, demo_db: DemoDB) -> Api:
    return make(Template(demo_db.path, "demo", str(demo_db.date_from), str(demo_db.date_to)))


def _day(visit: Visit, tz: ZoneInfo) -> str:
    return visit.pages[0].ts.astimezone(tz).date().isoformat()


def test_sites_lists_the_keys_sites_with_time_zone_and_span(
    api: Api, make: ApiFactory, demo_db: DemoDB
) -> None:
    make.add_site(api, "other")  # another account's: never listed
    make.add_site(api, "shop-two", account=demo_db.site.account.name)
    tz = ZoneInfo("Europe/Madrid")
    days = sorted(  # any event's day: a visit started before midnight has page views after it
        ts.astimezone(tz).date().isoformat()
        for v in demo_db.visits
        for ts in (*(p.ts for p in v.pages), *(c.ts for c in (*v.conversions, *v.microconversions)))
    )
    r = api.client.get(SITES, headers=api.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "sites": [
            {
                "site_id": "demo",
                "name": "demo",
                "timezone": "Europe/Madrid",
                "first_day": days[0],
                "last_day": days[-1],
            },
            {
                "site_id": "shop-two",
                "name": "shop-two",
                "timezone": "UTC",
                "first_day": None,
                "last_day": None,
            },
        ]
    }
    assert api.client.get(SITES).status_code == 401


@pytest.mark.parametrize("key", ["country", "utm_source", "utm_content", "device_type"])
def test_values_count_the_visits_of_the_range(api: Api, demo_db: DemoDB, key: str) -> None:
    tz = ZoneInfo("Europe/Madrid")
    date_from, date_to = "2025-03-20", "2025-03-31"
    expected = Counter(
        getattr(v, key) for v in demo_db.visits if getattr(v, key) and date_from <= _day(v, tz) <= date_to
    )
    r = api.client.get(
        f"{SITES}/demo/values",
        params={"key": key, "date_from": date_from, "date_to": date_to, "limit": 500},
        headers=api.headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["unit"] == "visits" and body["truncated"] is False
    assert {v["value"]: v["count"] for v in body["values"]} == dict(expected)
    counts = [v["count"] for v in body["values"]]
    assert counts == sorted(counts, reverse=True)


def test_conversion_type_values_count_both_kinds_of_event(api: Api, demo_db: DemoDB) -> None:
    expected = Counter(
        c.conversion_type for v in demo_db.visits for c in (*v.conversions, *v.microconversions)
    )
    r = api.client.get(f"{SITES}/demo/values", params={"key": "conversion_type"}, headers=api.headers)
    assert r.status_code == 200, r.text
    assert r.json()["unit"] == "events"
    assert r.json()["date_from"] <= str(demo_db.date_from)  # defaults: the data's span
    assert {v["value"]: v["count"] for v in r.json()["values"]} == dict(expected)


def test_content_grouping_values_count_page_views(api: Api, demo_db: DemoDB) -> None:
    tz = ZoneInfo("Europe/Madrid")
    date_from, date_to = "2025-03-25", "2025-04-02"
    expected = Counter(
        p.content_grouping
        for v in demo_db.visits
        for p in v.pages
        if p.content_grouping and date_from <= p.ts.astimezone(tz).date().isoformat() <= date_to
    )
    params = {"key": "content_grouping", "date_from": date_from, "date_to": date_to}
    r = api.client.get(f"{SITES}/demo/values", params=params, headers=api.headers)
    assert r.status_code == 200, r.text
    assert r.json()["unit"] == "page views"
    assert {v["value"]: v["count"] for v in r.json()["values"]} == dict(expected)


def test_values_are_capped_at_the_limit_and_say_so(api: Api, demo_db: DemoDB) -> None:
    r = api.client.get(f"{SITES}/demo/values", params={"key": "country", "limit": 3}, headers=api.headers)
    assert r.status_code == 200, r.text
    top = Counter(v.country for v in demo_db.visits if v.country).most_common()
    assert [v["value"] for v in r.json()["values"]] == [c for c, _ in top[:3]]
    assert r.json()["truncated"] is True


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"key": "colour"}, "key"),
        ({"key": "advanced_filters"}, "key"),
        ({"key": "country", "date_from": "2025-13-01"}, "date_from"),
        ({"key": "country", "date_from": "2025-03-10", "date_to": "2025-03-01"}, "date_from"),
    ],
)
def test_bad_values_requests_are_422_naming_the_field(api: Api, params: dict[str, str], field: str) -> None:
    r = api.client.get(f"{SITES}/demo/values", params=params, headers=api.headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["detail"][0]["field"] == field


def test_values_of_another_accounts_site_are_404(api: Api, make: ApiFactory) -> None:
    make.add_site(api, "other")
    r = api.client.get(f"{SITES}/other/values", params={"key": "country"}, headers=api.headers)
    assert r.status_code == 404
    r = api.client.get(
        f"{SITES}/demo/values", params={"key": "country"}, headers={"X-API-Key": api.other["other"]}
    )
    assert r.status_code == 404


# --- Isolation (the world of tests/test_isolation.py: two accounts, two or three sites each) -----


def test_each_account_sees_only_its_sites_and_others_answer_like_unknown(
    make: ApiFactory, small: Template
) -> None:
    world = build_world(make, small)
    api = world.api
    for me, them in ((world.a, world.b), (world.b, world.a)):
        listed = api.client.get(SITES, headers=me.headers)
        assert [s["site_id"] for s in listed.json()["sites"]] == sorted(me.sites)
        assert_nothing_leaks(listed, them.secrets(), sent="")

        def values(site: str, headers: dict[str, str] = me.headers) -> httpx.Response:
            return api.client.get(f"{SITES}/{site}/values", params={"key": "country"}, headers=headers)

        unknown = values("nowhere")
        assert_error(unknown, 404)
        for site in them.sites:
            r = values(site)
            assert canonical(r, site, "<site>") == canonical(unknown, "nowhere", "<site>")
            assert_nothing_leaks(r, them.secrets(), sent=str(r.request.url))
    with api.conn() as conn:
        revoke_key(conn, world.a.key[:12])
    for r in (
        api.client.get(SITES, headers=world.a.headers),
        api.client.get(f"{SITES}/demo/values", params={"key": "os"}, headers=world.a.headers),
    ):
        assert assert_error(r, 401)["detail"] == "invalid or revoked API key"
