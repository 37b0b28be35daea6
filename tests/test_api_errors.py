"""The HTTP API's refusals and its service endpoints, end to end on the real app: authentication
and ownership, bad input, the error body and X-Request-ID, /healthz and the OpenAPI schema."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sealexports import __version__
from sealexports.config import DEFAULT_PLANS, Plan
from sealexports.storage.accounts import revoke_key
from tests.apps import (
    API,
    BIG_EXPORT,
    ESTIMATE_FIELDS,
    JOB_FIELDS,
    Api,
    ApiFactory,
    Template,
    apps_logging_no_errors,
)
from tests.checks import assert_error

# --- Fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def make(tmp_path: Path) -> Iterator[ApiFactory]:
    """Apps on this test's own database that must log no error."""
    with apps_logging_no_errors(tmp_path) as factory:
        yield factory


# --- Authentication and ownership ----------------------------------------------------------------


def _calls(api: Api, job_id: str, site_id: str | None = None) -> dict[str, Callable[..., httpx.Response]]:
    body = api.body("sources")
    return {
        "create": lambda **kw: api.create(body, site_id=site_id, **kw),
        "estimate": lambda **kw: api.estimate(body, site_id=site_id, **kw),
        "stream": lambda **kw: api.stream(body, site_id=site_id, **kw),
        "list": lambda **kw: api.list(site_id=site_id, **kw),
        "get": lambda **kw: api.get_job(job_id, site_id=site_id, **kw),
        "delete": lambda **kw: api.delete(job_id, site_id=site_id, **kw),
    }


def test_missing_api_key_returns_401(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False)
    job_id = api.created(api.body("sources"))["job"]["job_id"]
    for name, call in _calls(api, job_id).items():
        for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}):
            r = call(headers=headers)
            assert r.status_code == 401, (name, headers, r.text)
            assert_error(r, 401)
    assert api.job(job_id)["status"] == "completed"


def test_wrong_or_revoked_key_returns_401(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False)
    assert api.list().status_code == 200
    assert_error(api.list(headers={"X-API-Key": "sm_" + "x" * 43}), 401)
    assert_error(api.list(headers={"X-API-Key": api.key[:-1]}), 401)
    assert_error(api.list(headers={"Authorization": "Bearer sm_nope"}), 401)
    with api.conn() as conn:
        revoke_key(conn, api.key[:12])
    assert_error(api.list(), 401)
    assert_error(api.list(headers={"Authorization": f"Bearer {api.key}"}), 401)


def test_bearer_authorization_works(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False)
    bearer = {"Authorization": f"Bearer {api.key}"}
    r = api.create(api.body("sources"), headers=bearer)
    assert r.status_code == 201, r.text
    assert api.list(headers=bearer).json()["total"] == 1
    assert api.list(headers={"authorization": f"bearer {api.key}"}).status_code == 200


def test_other_accounts_site_returns_404(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False)
    job_id = api.created(api.body("sources"))["job"]["job_id"]
    rival = make.add_site(api, "rival")
    # The rival's key on our site, and our key on a site that does not exist: the same 404.
    for name, call in _calls(api, job_id).items():
        r = call(headers={"X-API-Key": rival})
        assert r.status_code == 404, (name, r.text)
        assert assert_error(r, 404)["detail"] == f"site {api.site_id!r} not found"
    for name, call in _calls(api, job_id, site_id="nowhere").items():
        r = call()
        assert r.status_code == 404, (name, r.text)
        assert assert_error(r, 404)["detail"] == "site 'nowhere' not found"
    assert api.job(job_id)["status"] == "completed"


def test_other_accounts_job_returns_404(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False)
    job = api.created(api.body("sources"))["job"]
    rival = {"X-API-Key": make.add_site(api, "rival")}
    for site in ("rival", api.site_id):  # via the rival's own site, and via ours
        assert_error(api.get_job(job["job_id"], site_id=site, headers=rival), 404)
        assert_error(api.delete(job["job_id"], site_id=site, headers=rival), 404)
    # Our job, asked for through another site of our own account, is not there either.
    make.add_site(api, "sister", account="demo")
    assert_error(api.get_job(job["job_id"], site_id="sister"), 404)
    assert_error(api.delete(job["job_id"], site_id="sister"), 404)
    assert api.job(job["job_id"]) == job
    assert api.download(job["download_url"]).status_code == 200


# --- Bad input -----------------------------------------------------------------------------------

BAD_INPUT: dict[str, tuple[dict[str, Any], str]] = {
    "unknown-export-type": ({"export_type": "referrers"}, "export_type: Invalid enum value 'referrers'"),
    "unknown-format": ({"format": "xml"}, "format: Invalid enum value 'xml'"),
    "unknown-filter-key": ({"filters": {"colour": "red"}}, "unknown filter key 'colour'"),
    "bad-filter-value": ({"filters": {"country": []}},
                         "filters.country must be a string or a non-empty list of strings"),
    "malformed-advanced": ({"filters": {"advanced_filters": "path:contains"}},
                           "malformed advanced filter 'path:contains'"),
    "unknown-advanced-field": ({"filters": {"advanced_filters": "colour:eq:red"}},
                               "unknown field 'colour' in advanced filter 'colour:eq:red'"),
    "unknown-advanced-op": ({"filters": {"advanced_filters": "path:like:/x"}},
                            "unknown operator 'like' in advanced filter 'path:like:/x'"),
    "invalid-regex": ({"filters": {"advanced_filters": "path:regex:(unclosed"}},
                      "invalid regex in advanced filter 'path:regex:(unclosed'"),
    "impossible-date": ({"date_from": "2025-02-30"}, "date_from '2025-02-30' is not a valid date"),
    "date-format": ({"date_to": "05/04/2025"}, "date_to must be a date as YYYY-MM-DD, got '05/04/2025'"),
    "from-after-to": ({"date_from": "2025-04-06", "date_to": "2025-04-05"},
                      "date_from 2025-04-06 is after date_to 2025-04-05"),
    "unknown-body-field": ({"colour": "red"}, "unknown field `colour`"),
    "missing-field": ({"date_to": None}, "missing required field `date_to`"),
    "wrong-type": ({"date_from": 20250101}, "date_from: Expected `str`, got `int`"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_returns_422_with_specific_message(make: ApiFactory, small: Template, case: str) -> None:
    api = make(small, run_workers=False)
    changes, message = BAD_INPUT[case]
    body = {k: v for k, v in {**api.body("sources"), **changes}.items() if v is not None}
    for endpoint in (api.create, api.estimate, api.stream):
        err = assert_error(endpoint(body), 422)
        assert message in err["detail"], (endpoint.__name__, err)
        assert err["error"]["code"] == "invalid_request"
        assert isinstance(err["error"]["detail"], list) and err["error"]["detail"], "422s list each bad field"
    assert api.list().json()["total"] == 0, "nothing was created"
    assert api.files() == []


# --- The error body and X-Request-ID --------------------------------------------------------------

ErrorCase = Callable[[ApiFactory, Template], httpx.Response]


def _big_plan_case(make: ApiFactory, small: Template) -> httpx.Response:
    plans = {**DEFAULT_PLANS, "free": Plan(concurrent_exports=1, max_rows=10, requests_per_minute=240)}
    api = make(small, run_workers=False, plans=plans)
    return api.create(api.body(BIG_EXPORT))


def _limit_case(make: ApiFactory, small: Template) -> httpx.Response:
    api = make(small, run_workers=False, sync_row_limit=50)
    api.created(api.body(BIG_EXPORT))
    return api.create(api.body(BIG_EXPORT))


def _gone_case(make: ApiFactory, small: Template) -> httpx.Response:
    api = make(small, run_workers=False)
    url = api.created(api.body("sources"))["job"]["download_url"]
    for path in api.settings.exports_dir.iterdir():
        path.unlink()
    return api.download(url)


def _api(make: ApiFactory, small: Template, **kw: Any) -> Api:
    return make(small, run_workers=False, **kw)


def _post_raw(api: Api, content: bytes) -> httpx.Response:
    headers = {**api.headers, "content-type": "application/json"}
    return api.client.post(API, params={"site_id": api.site_id}, content=content, headers=headers)


def _create(body: dict[str, Any], **settings: Any) -> ErrorCase:
    return lambda m, s: (a := _api(m, s, **settings)).create({**a.body("sources"), **body})


ERROR_CASES: dict[str, tuple[int, ErrorCase]] = {
    "no-key": (401, lambda m, s: _api(m, s).list(headers={})),
    "bad-key": (401, lambda m, s: _api(m, s).list(headers={"X-API-Key": "sm_bad"})),
    "unknown-site": (404, lambda m, s: _api(m, s).list(site_id="nowhere")),
    "unknown-job": (404, lambda m, s: _api(m, s).get_job("no-such-job")),
    "bad-token": (404, lambda m, s: _api(m, s).client.get(f"{API}/download/garbage")),
    "unknown-route": (404, lambda m, s: _api(m, s).client.get("/api/v1/nothing-here")),
    "wrong-method": (405, lambda m, s: _api(m, s).client.put(API)),
    "file-gone": (410, _gone_case),
    "stream-too-large": (413, lambda m, s: (a := _api(m, s, sync_row_limit=5)).stream(a.body(BIG_EXPORT))),
    "body-too-large": (413, _create({"filters": {"x": "y" * 70_000}})),
    "plan-max-rows": (413, _big_plan_case),
    "malformed-json": (400, lambda m, s: _post_raw(_api(m, s), b"{nope")),
    "body-validation": (422, _create({"export_type": "nope"})),
    "domain-validation": (422, _create({"date_to": "2025-13-01"})),
    "query-validation": (422, lambda m, s: _api(m, s).list(limit=0)),
    "missing-site": (422, lambda m, s: (a := _api(m, s)).client.get(API, headers=a.headers)),
    "concurrency": (429, _limit_case),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_error_body_shape(make: ApiFactory, small: Template, case: str) -> None:
    status, call = ERROR_CASES[case]
    assert_error(call(make, small), status)


def test_every_response_has_request_id(make: ApiFactory, small: Template) -> None:
    api = make(small)
    job = api.created(api.body("sources"))["job"]
    responses = [
        api.client.get("/healthz"),
        api.client.get("/schema/openapi.json"),
        api.create(api.body("devices")),
        api.estimate(api.body("devices")),
        api.stream(api.body("devices")),
        api.list(),
        api.get_job(job["job_id"]),
        api.download(job["download_url"]),
        api.delete(job["job_id"]),
        api.client.get("/no/such/route"),
        api.client.options(API),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), [(r.request.url, r.status_code) for r, i in zip(responses, ids, strict=True) if not i]
    assert len(set(ids)) == len(ids), "a new id per request"
    assert {r.status_code for r in responses} >= {200, 201, 204, 404}


def test_request_id_from_the_caller_is_kept_when_sane(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False)
    r = api.list(headers={**api.headers, "X-Request-ID": "client-trace.42"})
    assert r.headers["x-request-id"] == "client-trace.42"
    r = api.get_job("nope", headers={**api.headers, "X-Request-ID": "client-trace.43"})
    assert r.headers["x-request-id"] == r.json()["request_id"] == "client-trace.43"
    r = api.list(headers={**api.headers, "X-Request-ID": "<script>alert(1)</script>"})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])


# --- Service endpoints ---------------------------------------------------------------------------


def test_healthz_returns_version_without_auth(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False)
    r = api.client.get("/healthz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "version": __version__}


def test_openapi_schema_lists_the_seven_export_operations_all_described(
    make: ApiFactory, small: Template
) -> None:
    api = make(small, run_workers=False)
    r = api.client.get("/schema/openapi.json")
    assert r.status_code == 200, r.text
    schema = r.json()
    paths = schema["paths"]
    job, token = f"{API}/{{job_id}}", f"{API}/download/{{download_token}}"
    operations = {
        (API, "post"), (f"{API}/estimate", "post"), (API, "get"), (job, "get"),
        (token, "get"), (f"{API}/stream", "post"), (job, "delete"),
    }  # fmt: skip
    for path, method in operations:
        assert method in paths.get(path, {}), (path, method, sorted(paths))
    components = schema["components"]["schemas"]
    for name in ("ExportBody", "JobOut", "EstimateOut"):
        properties = components[name]["properties"]
        assert properties
        undescribed = [p for p, spec in properties.items() if not spec.get("description")]
        assert undescribed == [], (name, undescribed)
    assert set(components["JobOut"]["properties"]) == JOB_FIELDS
    assert set(components["EstimateOut"]["properties"]) == ESTIMATE_FIELDS
