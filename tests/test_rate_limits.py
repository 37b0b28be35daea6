"""Per-key request rate limits by plan (`plans.<plan>.requests_per_minute`, api/limits.py): the
X-RateLimit-* headers, 429 with Retry-After and our error body once over, a budget per key (not
per account, not per header style), the plan's own limit, and the routes that are never limited.

Small limits (free 5, pro 8 a minute) keep each test to a few dozen requests through the real app.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sealexports.config import DEFAULT_PLANS, Plan
from sealexports.storage.accounts import create_key, revoke_key
from tests.apps import API, Api, ApiFactory, Template
from tests.checks import assert_error
from tests.conftest import say

FREE, PRO = 5, 8
PLANS = {
    "free": Plan(concurrent_exports=1, max_rows=100_000, requests_per_minute=FREE),
    "pro": Plan(concurrent_exports=3, max_rows=1_000_000, requests_per_minute=PRO),
    "enterprise": DEFAULT_PLANS["enterprise"],
}
HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


@pytest.fixture
def api(make: ApiFactory, small: Template) -> Api:
    """The demo site's account on the free plan (5 requests a minute per key); no workers."""
    return make(small, run_workers=False, plans=PLANS)


def limits(r: httpx.Response) -> tuple[int, int, int]:
    """(limit, remaining, reset) from the response's X-RateLimit-* headers."""
    missing = [h for h in HEADERS if h not in r.headers]
    assert not missing, (r.status_code, dict(r.headers))
    return (
        int(r.headers["x-ratelimit-limit"]),
        int(r.headers["x-ratelimit-remaining"]),
        int(r.headers["x-ratelimit-reset"]),
    )


def spend(call: Any, n: int) -> list[httpx.Response]:
    return [call() for _ in range(n)]


def assert_limited(r: httpx.Response, limit: int) -> dict[str, Any]:
    """A 429 in our error shape, with Retry-After and the limit headers."""
    err = assert_error(r, 429)
    assert err["error"]["code"] == "rate_limited"
    assert f"{limit} requests per minute" in err["detail"]
    retry_after = int(r.headers["retry-after"])
    assert 1 <= retry_after <= 60, retry_after
    assert limits(r) == (limit, 0, retry_after)
    return err


def test_headers_count_down_then_429_with_retry_after(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    responses = spend(api.list, FREE)
    assert [r.status_code for r in responses] == [200] * FREE
    seen = [limits(r) for r in responses]
    assert [remaining for _, remaining, _ in seen] == list(range(FREE - 1, -1, -1))
    assert {limit for limit, _, _ in seen} == {FREE}
    assert all(0 < reset <= 60 for _, _, reset in seen), seen

    over = api.list()
    err = assert_limited(over, FREE)
    # Every endpoint shares the key's budget: a POST is refused as well, and creates nothing.
    assert_limited(api.estimate(api.body("sources")), FREE)
    assert_limited(api.create(api.body("sources")), FREE)
    with api.conn() as conn:
        assert conn.execute("SELECT COUNT(*) FROM export_jobs").fetchone()[0] == 0
    say(
        capsys,
        f"rate limits: free plan {FREE}/min: remaining {[s[1] for s in seen]}, then 429 "
        f"Retry-After {over.headers['retry-after']} s ({err['detail']!r})",
    )


def test_each_key_has_its_own_budget(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    with api.conn() as conn:
        second = create_key(conn, api.site_id, "second")  # the same account, on the same plan
    assert [r.status_code for r in spend(api.list, FREE)] == [200] * FREE
    assert_limited(api.list(), FREE)

    other = {"X-API-Key": second}
    r = api.list(headers=other)
    assert r.status_code == 200, r.text
    assert limits(r)[:2] == (FREE, FREE - 1)
    assert [r.status_code for r in spend(lambda: api.list(headers=other), FREE - 1)] == [200] * (FREE - 1)
    assert_limited(api.list(headers=other), FREE)
    say(capsys, f"rate limits: two keys of one free account: {FREE} + {FREE} requests, then 429 for each")


def test_the_same_key_in_either_header_shares_one_budget(api: Api) -> None:
    bearer = {"Authorization": f"Bearer {api.key}"}
    for i in range(FREE):
        r = api.list(headers=bearer if i % 2 else api.headers)
        assert r.status_code == 200, r.text
    assert_limited(api.list(headers=bearer), FREE)
    assert_limited(api.list(), FREE)


def test_a_pro_key_gets_the_pro_limit(make: ApiFactory, api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    pro = {"X-API-Key": make.add_site(api, "prosite", plan="pro")}
    responses = spend(lambda: api.list(site_id="prosite", headers=pro), PRO)
    assert [r.status_code for r in responses] == [200] * PRO
    assert [limits(r)[:2] for r in responses] == [(PRO, PRO - 1 - i) for i in range(PRO)]
    assert_limited(api.list(site_id="prosite", headers=pro), PRO)
    # The free key next to it still has all of its own, smaller budget.
    assert limits(api.list())[:2] == (FREE, FREE - 1)
    say(capsys, f"rate limits: pro key {PRO}/min next to a free key {FREE}/min, each on its own")


def test_download_link_and_healthz_are_not_limited(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    url = api.created(api.body("devices"))["job"]["download_url"]
    assert [r.status_code for r in spend(api.list, FREE - 1)] == [200] * (FREE - 1)
    assert_limited(api.list(), FREE)

    n = 3 * FREE
    downloads = spend(lambda: api.download(url), n)
    health = spend(lambda: api.client.get("/healthz", headers=api.headers), n)
    schema = spend(lambda: api.client.get("/schema/openapi.json", headers=api.headers), 2)
    for r in downloads + health + schema:
        assert r.status_code == 200, (r.request.url, r.status_code, r.text[:200])
        assert not set(HEADERS) & set(r.headers), (r.request.url, dict(r.headers))
    assert_limited(api.list(), FREE)  # still limited: none of those touched the budget
    say(capsys, f"rate limits: over the limit, {n} downloads and {n} /healthz calls all answered 200")


@pytest.mark.parametrize(
    "path",
    [f"{API}/healthz", f"{API}/schema", f"{API}/my-healthz"],
    ids=["healthz", "schema", "my-healthz"],
)
def test_a_job_id_named_like_an_unlimited_route_is_still_limited(api: Api, path: str) -> None:
    # These are GET /exports/{job_id}: a key must not get unmetered requests by naming a job
    # after a route that is exempt (the exemptions once matched anywhere in the path).
    calls = spend(lambda: api.client.get(path, params={"site_id": api.site_id}, headers=api.headers), FREE)
    for r in calls:
        assert_error(r, 404)
    assert [limits(r)[1] for r in calls] == list(range(FREE - 1, -1, -1))
    assert_limited(api.client.get(path, params={"site_id": api.site_id}, headers=api.headers), FREE)


def test_unknown_and_revoked_keys_get_401_not_a_budget(api: Api) -> None:
    prefix = api.key[:12]
    with api.conn() as conn:
        revoke_key(conn, prefix)
    for headers in ({"X-API-Key": "sm_" + "x" * 43}, api.headers, {}):
        for r in spend(lambda h=headers: api.list(headers=h), FREE + 2):
            assert_error(r, 401)
            assert not set(HEADERS) & set(r.headers)
