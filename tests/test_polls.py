"""Status polls answered on their own path (`api.polls`): the answer is Litestar's, header for
header; everything else, including every error and every request that would write, is left to
Litestar."""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sealexports import logs
from sealexports.api.polls import StatusPolls
from sealexports.config import DEFAULT_PLANS, Plan
from sealexports.storage.accounts import create_key, create_site, get_site, key_hash
from tests.apps import API, Api, ApiFactory, Template

PLANS = {**DEFAULT_PLANS, "pro": Plan(concurrent_exports=3, max_rows=1_000_000, requests_per_minute=12)}
# Differ between two answers made a moment apart.
MOVING = {"x-request-id", "x-ratelimit-remaining", "x-ratelimit-reset"}


class Spy:
    """Counts the polls answered on the fast path; `declining` sends them all to Litestar."""

    def __init__(self, polls: StatusPolls, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answered = 0
        self.declining = False
        answer = polls._answer

        def spied(scope: Any) -> Any:
            result = None if self.declining else answer(scope)
            self.answered += result is not None
            return result

        monkeypatch.setattr(polls, "_answer", spied)


def spy(api: Api, monkeypatch: pytest.MonkeyPatch) -> Spy:
    polls = api.client.app.asgi_handler.app.app  # ProxyHeaders(AccessLog(StatusPolls(...)))
    assert isinstance(polls, StatusPolls)
    return Spy(polls, monkeypatch)


def job_id(api: Api) -> str:
    body = api.body("time_series", date_from=api.date_to)
    return str(api.created(body)["job"]["job_id"])


def both(spied: Spy, send: Any) -> tuple[httpx.Response, httpx.Response]:
    """The same request answered on the fast path, then by Litestar."""
    before = spied.answered
    fast = send()
    assert spied.answered == before + 1, "not answered on the fast path"
    spied.declining = True
    try:
        slow = send()
    finally:
        spied.declining = False
    return fast, slow


def assert_same(fast: httpx.Response, slow: httpx.Response) -> None:
    assert fast.status_code == slow.status_code == 200
    assert [(k, v) for k, v in fast.headers.multi_items() if k not in MOVING] == [
        (k, v) for k, v in slow.headers.multi_items() if k not in MOVING
    ]
    assert [k for k, _ in fast.headers.multi_items()] == [k for k, _ in slow.headers.multi_items()]
    # The download token is signed with the time in seconds: the same unless a second turned.
    unsigned = re.compile(rb'(/download/[^".]+)\.[^"]+')
    assert unsigned.sub(rb"\1", fast.content) == unsigned.sub(rb"\1", slow.content)
    assert fast.json()["download_url"].startswith(fast.json()["download_url"].rsplit(".", 2)[0])


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"site_id": "demo"}, {}),
        ({"account_id": "demo"}, {}),
        ({"site_id": "demo", "account_id": "demo"}, {}),
        ({"site_id": "demo"}, {"bearer": "yes"}),
    ],
    ids=["site_id", "account_id", "both", "bearer"],
)
def test_a_poll_is_answered_as_litestar_answers_it(
    make: ApiFactory, small: Template, monkeypatch: pytest.MonkeyPatch, params: dict[str, str], headers: Any
) -> None:
    api = make(small)
    spied = spy(api, monkeypatch)
    job = job_id(api)
    sent = {"Authorization": f"Bearer {api.key}"} if headers else api.headers
    fast, slow = both(spied, lambda: api.client.get(f"{API}/{job}", params=params, headers=sent))
    assert_same(fast, slow)
    assert fast.json()["status"] == "completed" and fast.json()["download_url"]


@pytest.mark.parametrize(
    "overrides",
    [{"public_url": None}, {"public_url": None, "root_path": "/analytics"}, {"root_path": "/analytics"}],
    ids=["request-host", "request-host-prefix", "public-url-prefix"],
)
def test_download_links_are_built_for_the_request_as_litestar_builds_them(
    make: ApiFactory, small: Template, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, Any]
) -> None:
    api = make(small, **overrides)
    spied = spy(api, monkeypatch)
    job = job_id(api)
    prefix = overrides.get("root_path", "")
    paths = [f"{prefix}{API}/{job}", f"{API}/{job}"]  # a proxy that keeps the prefix, or strips it
    for path, host in itertools.product(paths, ["stats.example.org:8443", "other.example.net"]):
        fast, slow = both(
            spied,
            lambda path=path, host=host: api.client.get(
                path, params={"site_id": "demo"}, headers={**api.headers, "Host": host}
            ),
        )
        assert_same(fast, slow)
        link = fast.json()["download_url"]
        if overrides.get("public_url", "") is None:  # each request's own host
            assert link.startswith(f"http://{host}{prefix}{API}/download/"), link


def test_what_would_write_or_fail_goes_to_litestar(
    make: ApiFactory, small: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = make(small, cors_origins=("https://app.example.org",))
    spied = spy(api, monkeypatch)
    job = job_id(api)
    assert api.get_job(job).status_code == 200 and spied.answered == 1

    def declined(send: Callable[[], httpx.Response], status: int) -> dict[str, Any]:
        before = spied.answered
        response = send()
        assert response.status_code == status, response.text
        assert spied.answered == before, "answered on the fast path"
        body: dict[str, Any] = response.json()
        return body

    # Errors: each Litestar's own.
    assert declined(lambda: api.get_job(job, headers={}), 401)["error"]["code"] == "unauthorized"
    assert (
        declined(lambda: api.get_job(job, headers={"X-API-Key": "sm_nope"}), 401)["error"]["code"]
        == "unauthorized"
    )
    assert declined(lambda: api.get_job("no-such-job"), 404)["error"]["code"] == "not_found"
    r = declined(lambda: api.client.get(f"{API}/{job}", headers=api.headers), 422)
    assert "site_id is required" in r["error"]["message"]
    other_key = make.add_site(api, "other")
    declined(
        lambda: api.client.get(f"{API}/{job}", params={"site_id": "other"}, headers={"X-API-Key": other_key}),
        404,
    )
    with api.conn() as conn:  # a key of the site's account, but for writing; one bound to another site
        account = get_site(conn, "demo").account.name
        create_site(conn, "sibling", account=account)
        writer = {"X-API-Key": create_key(conn, site_id="demo", scope="write")}
        bound = {"X-API-Key": create_key(conn, site_id="sibling")}
    assert declined(lambda: api.get_job(job, headers=writer), 403)["error"]["code"] == "forbidden"
    assert declined(lambda: api.get_job(job, headers=bound), 404)["error"]["code"] == "not_found"
    # A repeated parameter, an unusual one: Litestar reads the query.
    declined(lambda: api.client.get(f"{API}/{job}?site_id=demo&site_id=demo", headers=api.headers), 200)
    declined(lambda: api.client.get(f"{API}/{job}?site_id=demo&x=1", headers=api.headers), 200)
    # A CORS request: Litestar adds the CORS headers.
    cors = {**api.headers, "Origin": "https://app.example.org"}
    declined(lambda: api.get_job(job, headers=cors), 200)
    assert api.get_job(job, headers=cors).headers["access-control-allow-origin"] == "https://app.example.org"
    # A key whose use is due to be recorded: Litestar records it.
    with api.conn() as conn:
        conn.execute("UPDATE api_keys SET last_used_at = NULL")
    declined(lambda: api.get_job(job), 200)
    with api.conn() as conn:
        used = "SELECT last_used_at FROM api_keys WHERE key_hash = ?"
        assert conn.execute(used, [key_hash(api.key)]).fetchone()[0] is not None
    assert api.get_job(job).status_code == 200 and spied.answered == 2  # recorded: fast again
    # A link past its time: Litestar expires the job.
    with api.conn() as conn:
        conn.execute("UPDATE export_jobs SET download_expires_at = '2000-01-01T00:00:00Z'")
    assert declined(lambda: api.get_job(job), 200)["status"] == "expired"


def test_polls_share_the_key_s_rate_limit(
    make: ApiFactory, small: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = make(small, plan="pro", plans=PLANS)  # 12 requests a minute
    spied = spy(api, monkeypatch)
    job = job_id(api)  # 1
    remaining = []
    for i in range(11):  # 2-12: on the fast path and through Litestar in turn
        spied.declining = i % 2 == 1
        r = api.get_job(job)
        assert r.status_code == 200, r.text
        remaining.append(int(r.headers["x-ratelimit-remaining"]))
    assert remaining == list(range(10, -1, -1))
    assert spied.answered == 6
    spied.declining = False
    r = api.get_job(job)  # 13: the window is full
    assert r.status_code == 429 and spied.answered == 6
    assert r.headers["x-ratelimit-remaining"] == "0" and r.headers["retry-after"]


def test_fast_polls_are_logged_and_counted_under_the_route(
    make: ApiFactory, small: Template, monkeypatch: pytest.MonkeyPatch, captured: io.StringIO
) -> None:
    logs.configure("info", "text", captured)
    api = make(small, metrics_token="t0ken")
    spied = spy(api, monkeypatch)
    job = job_id(api)
    for i in range(4):
        spied.declining = i >= 3
        assert api.get_job(job, headers={**api.headers, "X-Request-ID": f"poll-{i}"}).status_code == 200
    assert spied.answered == 3
    lines = [line for line in captured.getvalue().splitlines() if "request_id=poll-" in line]
    assert len(lines) == 4 and all(f'"GET {API}/{job}" 200' in line for line in lines), lines
    metrics = api.client.get("/metrics", headers={"Authorization": "Bearer t0ken"}).text
    route = re.escape("/api/v1/exports/{job_id}")
    counted = re.search(rf'sealexports_http_requests_total\{{[^}}]*route="{route}"[^}}]*\}} (\d+)', metrics)
    assert counted and float(counted.group(1)) == 4, metrics


def test_a_poll_sees_every_commit_made_before_it(
    make: ApiFactory, small: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a fast poll read is remembered only until another connection commits."""
    api = make(small)
    spied = spy(api, monkeypatch)
    job = job_id(api)
    assert api.job(job)["file_size_bytes"] and spied.answered == 1
    assert api.job(job)["file_size_bytes"] and spied.answered == 2  # remembered
    with api.conn() as conn:
        conn.execute("UPDATE export_jobs SET file_size_bytes = 12345 WHERE job_id = ?", [job])
    assert api.job(job)["file_size_bytes"] == 12345 and spied.answered == 3
    with api.conn() as conn:
        conn.execute("UPDATE api_keys SET revoked_at = '2026-01-01T00:00:00Z'")
    r = api.get_job(job)
    assert r.status_code == 401 and spied.answered == 3
