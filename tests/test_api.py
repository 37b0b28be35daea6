"""The HTTP API end to end: the real app from `create_app`, a real SQLite file per test, and the
real huey consumer started by the app's lifespan (TestClient used as a context manager).
Authentication, bad input, the error body and the service endpoints: test_api_errors.py."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from sealexports.api.app import create_app
from sealexports.config import DEFAULT_PLANS, Plan, Settings
from sealexports.storage import export_jobs
from sealexports.storage.database import secret_key
from sealexports.tokens import DownloadTokens
from tests.apps import (
    API,
    BASE,
    BIG_EXPORT,
    ESTIMATE_FIELDS,
    JOB_FIELDS,
    RUNNING,
    SLOW_FILTERS,
    Api,
    ApiFactory,
    Template,
    count_rows,
)
from tests.checks import assert_error, assert_human_size

SUMMARY_FIELDS = {
    "id", "job_id", "export_type", "format", "compression", "status", "actual_rows", "file_size_human",
    "download_url", "created_at",
}  # fmt: skip
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
STATUS_ORDER = ["pending", "estimating", "generating", "completed"]
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


# --- Fixtures ------------------------------------------------------------------------------------


# Tests that poll a lot are about jobs, not rate limits: lift the pro plan's 480 a minute.
POLLING_PLANS = {**DEFAULT_PLANS, "pro": dataclasses.replace(DEFAULT_PLANS["pro"], requests_per_minute=10**6)}


def rows_of(content: bytes, fmt: str) -> int:
    if fmt == "csv":
        return content.count(b"\r\n") - 1
    return len(json.loads(content))


def ts(value: str) -> datetime:
    assert TIMESTAMP.match(value), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")


def assert_completed_download(api: Api, job: dict[str, Any], body: dict[str, Any]) -> bytes:
    """A completed job's fields agree with its file, which is what the offline engine writes."""
    fmt = body.get("format", "csv")
    assert job["status"] == "completed", job
    assert job["progress_percent"] == 100
    assert job["error_message"] is None
    r = api.download(job["download_url"])
    assert r.status_code == 200, r.text
    content = r.content
    assert content == api.offline_bytes(body)
    assert r.headers["content-type"] == MEDIA_TYPES[fmt]
    assert r.headers["content-length"] == str(len(content))
    start, end = body["date_from"].replace("-", ""), body["date_to"].replace("-", "")
    assert r.headers["content-disposition"] == (
        f'attachment; filename="sealmetrics_{body["export_type"]}_{start}_{end}.{fmt}"'
    )
    assert job["actual_rows"] == rows_of(content, fmt)
    assert job["file_size_bytes"] == len(content)
    assert_human_size(job["file_size_human"], len(content))
    with api.conn() as conn:
        record = export_jobs.get_job(conn, job["job_id"])
    assert record.sha256 == hashlib.sha256(content).hexdigest()
    assert record.file_name is not None
    assert (api.settings.exports_dir / record.file_name).read_bytes() == content
    created, started, completed = ts(job["created_at"]), ts(job["started_at"]), ts(job["completed_at"])
    assert created <= started <= completed
    ttl = timedelta(seconds=api.settings.download_ttl_seconds)
    assert ts(job["download_expires_at"]) == completed + ttl
    return content


# --- POST /exports -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("export_type", "fmt", "filters"),
    [
        ("sources", "csv", None),
        ("pages", "json", None),
        ("conversions", "csv", {"country": ["ES", "FR"]}),
        ("time_series", "json", {"utm_medium": "cpc"}),
        ("microconversions", "csv", {"advanced_filters": "path:contains:/products/"}),
        ("countries", "json", {"device_type": "mobile", "conversion_type": "purchase"}),
    ],
)
def test_create_under_limit_completes_and_download_matches_offline_engine(
    make: ApiFactory, small: Template, export_type: str, fmt: str, filters: dict[str, Any] | None
) -> None:
    api = make(small)
    body = api.body(export_type, format=fmt, **({"filters": filters} if filters else {}))
    out = api.created(body)
    assert set(out) == {"job", "estimate", "message", "warnings"}
    assert out["warnings"] == out["estimate"]["warnings"] == []
    assert set(out["estimate"]) == ESTIMATE_FIELDS
    assert out["estimate"]["will_use_background_job"] is False
    assert out["message"] == "Export completed. Ready for download."
    job = out["job"]
    assert set(job) == JOB_FIELDS
    assert job["site_id"] == api.site_id
    assert (job["export_type"], job["format"]) == (export_type, fmt)
    assert (job["date_from"], job["date_to"]) == (api.date_from, api.date_to)
    assert job["filters"] == (filters or {})
    assert job["download_url"].startswith(f"{BASE}{API}/download/")
    content = assert_completed_download(api, job, body)
    assert job["actual_rows"] > 0, "a test export with no rows proves little"
    assert rows_of(content, fmt) == job["actual_rows"]
    assert api.job(job["job_id"]) == job  # GET returns the bare job object, the same one


def test_create_defaults_to_csv(make: ApiFactory, small: Template) -> None:
    api = make(small)
    job = api.created(api.body("devices"))["job"]
    assert job["format"] == "csv"
    r = api.download(job["download_url"])
    assert r.headers["content-type"] == MEDIA_TYPES["csv"]
    assert r.headers["content-disposition"].endswith('.csv"')


@pytest.mark.parametrize(
    ("delta", "background"), [(1, False), (0, True), (-600, True)], ids=["under", "at", "over"]
)
def test_create_switches_to_background_at_sync_row_limit(
    make: ApiFactory, small: Template, delta: int, background: bool
) -> None:
    body = {"export_type": BIG_EXPORT, "date_from": small.date_from, "date_to": small.date_to}
    n = count_rows(make.database(small), small.site_id, body)
    api = make(small, sync_row_limit=n + delta)
    out = api.created(body)
    assert out["estimate"]["estimated_rows"] == n
    assert out["estimate"]["will_use_background_job"] is background
    assert out["job"]["status"] == ("pending" if background else "completed")
    assert out["job"]["estimated_rows"] == n
    if not background:
        assert_completed_download(api, out["job"], body)
        return
    assert out["job"]["download_url"] is None
    # The message's poll URL works as given: with its site_id (without it GET answers 422).
    poll = re.search(r"Poll GET (\S+) until it completes\.$", out["message"])
    assert poll, out["message"]
    assert poll[1] == f"{BASE}{API}/{out['job']['job_id']}?site_id={api.site_id}"
    polled = api.client.get(poll[1].removeprefix(BASE), headers=api.headers)
    assert polled.status_code == 200 and polled.json()["job_id"] == out["job"]["job_id"]
    job, seen = api.wait(out["job"]["job_id"])
    assert_completed_download(api, job, body)
    assert job["actual_rows"] == n
    # Every poll showed a legal state, moving forward only, with progress never going back.
    for before, after in itertools.pairwise(seen):
        assert STATUS_ORDER.index(before["status"]) <= STATUS_ORDER.index(after["status"])
        assert before["progress_percent"] <= after["progress_percent"]
    for j in seen:
        assert set(j) == JOB_FIELDS
        assert 0 <= j["progress_percent"] <= 100
        assert j["error_message"] is None
        assert (j["download_url"] is None) == (j["status"] != "completed")
        assert (j["actual_rows"] is None) == (j["status"] != "completed")


def test_pending_job_has_every_spec_field_and_nulls(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False, sync_row_limit=50)
    body = api.body("pages", filters={"country": "ES"})
    out = api.created(body)
    job = out["job"]
    assert set(job) == JOB_FIELDS
    assert job["status"] == "pending" and job["progress_percent"] == 0
    for name in ("actual_rows", "file_size_bytes", "file_size_human", "download_url", "download_expires_at",
                 "started_at", "completed_at", "error_message"):  # fmt: skip
        assert job[name] is None, name
    assert ts(job["created_at"])
    assert isinstance(job["id"], int) and re.fullmatch(r"[0-9a-f-]{36}", job["job_id"])
    assert job["filters"] == {"country": "ES"}
    assert api.job(job["job_id"]) == job
    assert api.files() == []


def test_background_progress_moves_while_generating(make: ApiFactory, big: Template) -> None:
    api = make(big, sync_row_limit=50, plan="pro")
    body = api.body("microconversions", filters=SLOW_FILTERS)
    job_id = api.created(body)["job"]["job_id"]
    job, seen = api.wait(job_id)
    assert job["status"] == "completed", job
    statuses = [j["status"] for j in seen]
    assert "generating" in statuses, statuses
    middle = {j["progress_percent"] for j in seen if j["status"] == "generating"} - {0}
    assert middle and all(0 < p < 100 for p in middle), [(j["status"], j["progress_percent"]) for j in seen]
    assert job["actual_rows"] > 2000  # more than one chunk


def test_account_id_works_in_place_of_site_id(make: ApiFactory, small: Template) -> None:
    api = make(small)
    q = {"account_id": api.site_id}
    body = api.body("sources")
    r = api.client.post(API, params=q, json=body, headers=api.headers)
    assert r.status_code == 201, r.text
    job_id = r.json()["job"]["job_id"]
    r = api.client.get(f"{API}/{job_id}", params=q, headers=api.headers)
    assert r.status_code == 200 and r.json()["job_id"] == job_id
    r = api.client.get(API, params=q, headers=api.headers)
    assert r.status_code == 200 and r.json()["total"] == 1
    r = api.client.post(f"{API}/estimate", params=q, json=body, headers=api.headers)
    assert r.status_code == 200 and set(r.json()) == ESTIMATE_FIELDS
    r = api.client.post(f"{API}/stream", params=q, json=body, headers=api.headers)
    assert r.status_code == 200 and r.content == api.offline_bytes(body)
    r = api.client.delete(f"{API}/{job_id}", params=q, headers=api.headers)
    assert r.status_code == 204


def test_missing_site_id_and_account_id_returns_422(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False)
    body, h, c = api.body("sources"), api.headers, api.client
    job_id = "00000000-0000-0000-0000-000000000000"
    calls: dict[str, Callable[[], httpx.Response]] = {
        "create": lambda: c.post(API, json=body, headers=h),
        "estimate": lambda: c.post(f"{API}/estimate", json=body, headers=h),
        "stream": lambda: c.post(f"{API}/stream", json=body, headers=h),
        "list": lambda: c.get(API, headers=h),
        "get": lambda: c.get(f"{API}/{job_id}", headers=h),
        "delete": lambda: c.delete(f"{API}/{job_id}", headers=h),
    }
    for name, call in calls.items():
        assert "site_id" in assert_error(call(), 422)["detail"], name


# --- POST /exports/estimate ----------------------------------------------------------------------


def test_estimate_returns_the_six_spec_fields(make: ApiFactory, small: Template) -> None:
    api = make(small)
    body = api.body("sources", format="json")
    r = api.estimate(body)
    assert r.status_code == 200, r.text
    est = r.json()
    assert set(est) == ESTIMATE_FIELDS
    assert isinstance(est["estimated_rows"], int) and est["estimated_rows"] > 0
    assert isinstance(est["estimated_size_bytes"], int) and est["estimated_size_bytes"] > 0
    assert_human_size(est["estimated_size_human"], est["estimated_size_bytes"])
    # The smaller file of the two formats is recommended, whichever was asked for.
    other = api.estimate({**body, "format": "csv"}).json()
    assert other["recommended_format"] == est["recommended_format"]
    smaller = min(("csv", other), ("json", est), key=lambda e: e[1]["estimated_size_bytes"])[0]
    assert est["recommended_format"] == smaller
    assert est["will_use_background_job"] is False
    assert isinstance(est["estimated_duration_seconds"], int) and est["estimated_duration_seconds"] >= 1
    assert api.list().json()["total"] == 0, "an estimate creates no job"
    assert api.created(body)["estimate"] == est


@pytest.mark.parametrize(
    ("delta", "background"), [(1, False), (0, True), (-1, True)], ids=["under", "at", "over"]
)
def test_estimate_will_use_background_job_at_or_over_limit(
    make: ApiFactory, small: Template, delta: int, background: bool
) -> None:
    body = {"export_type": BIG_EXPORT, "date_from": small.date_from, "date_to": small.date_to}
    n = count_rows(make.database(small), small.site_id, body)
    api = make(small, run_workers=False, sync_row_limit=n + delta)
    est = api.estimate(body).json()
    assert est["estimated_rows"] == n
    assert est["will_use_background_job"] is background


# --- POST /exports/stream ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("export_type", "fmt"), [("sources", "csv"), ("landing_pages", "json"), ("conversions", "csv")]
)
def test_stream_under_limit_returns_the_file(
    make: ApiFactory, small: Template, export_type: str, fmt: str
) -> None:
    api = make(small, run_workers=False)
    body = api.body(export_type, format=fmt)
    r = api.stream(body)
    assert r.status_code == 200, r.text
    assert r.content == api.offline_bytes(body)
    assert rows_of(r.content, fmt) > 0
    assert r.headers["content-type"] == MEDIA_TYPES[fmt]
    # The download's and the CLI's name (it was "{type}_{date_from}_{date_to}.{ext}").
    start, end = api.date_from.replace("-", ""), api.date_to.replace("-", "")
    assert r.headers["content-disposition"] == (
        f'attachment; filename="sealmetrics_{export_type}_{start}_{end}.{fmt}"'
    )
    assert r.headers["cache-control"] == "no-store"
    assert api.list().json()["total"] == 0, "a stream creates no job"
    assert api.files() == []


@pytest.mark.parametrize("delta", [0, -1, -1000], ids=["at", "over", "far-over"])
def test_stream_over_limit_returns_413(make: ApiFactory, small: Template, delta: int) -> None:
    body = {"export_type": BIG_EXPORT, "date_from": small.date_from, "date_to": small.date_to}
    n = count_rows(make.database(small), small.site_id, body)
    assert n >= 1000, "the count must need a thousands separator"
    api = make(small, run_workers=False, sync_row_limit=n + delta)
    err = assert_error(api.stream(body), 413)
    assert err["detail"] == (
        f"Export too large for streaming ({n:,} rows). Use POST /exports to create a background job."
    )
    assert "," in err["detail"]
    assert api.list().json()["total"] == 0


# --- GET /exports --------------------------------------------------------------------------------


def test_list_newest_first_with_total_and_paging(make: ApiFactory, small: Template) -> None:
    api = make(small)
    types = ["sources", "mediums", "countries", "devices", "browsers"]
    created = [api.created(api.body(t))["job"] for t in types]
    out = api.list().json()
    assert set(out) == {"exports", "total"}
    assert out["total"] == 5
    listed = out["exports"]
    assert [j["job_id"] for j in listed] == [j["job_id"] for j in reversed(created)]
    assert [j["id"] for j in listed] == sorted((j["id"] for j in created), reverse=True)
    for summary in listed:
        assert set(summary) == SUMMARY_FIELDS
        full = next(j for j in created if j["job_id"] == summary["job_id"])
        assert {k: full[k] for k in SUMMARY_FIELDS} == summary
    pages = [api.list(limit=2, offset=o).json() for o in (0, 2, 4, 10)]
    assert [p["total"] for p in pages] == [5, 5, 5, 5]
    assert [[j["export_type"] for j in p["exports"]] for p in pages] == [
        ["browsers", "devices"], ["countries", "mediums"], ["sources"], []
    ]  # fmt: skip
    assert len(api.list(limit=1).json()["exports"]) == 1
    assert len(api.list(limit=100).json()["exports"]) == 5


def test_list_shows_only_the_sites_jobs(make: ApiFactory, small: Template) -> None:
    api = make(small)
    make.add_site(api, "sister", account="demo")  # same account, another site
    api.created(api.body("sources"))
    assert api.list(site_id="sister").json() == {"exports": [], "total": 0}
    assert api.list().json()["total"] == 1


def test_list_rejects_out_of_range_parameters(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"offset": -1}, "offset"),
        ({"limit": "x"}, "limit"), ({"include_expired": "maybe"}, "include_expired"),
    ]  # fmt: skip
    for query, name in bad:
        err = assert_error(api.list(**query), 422)
        assert err["detail"].startswith(f"{name}:"), (query, err)
        assert err["error"]["detail"][0]["field"] == name


def test_list_include_expired(make: ApiFactory, small: Template) -> None:
    api = make(small, download_ttl_seconds=1)
    old = api.created(api.body("sources"))["job"]
    api.wait(old["job_id"], until=lambda j: j["status"] == "expired", timeout=10)
    new = api.created(api.body("devices"))["job"]
    default = api.list().json()
    assert default["total"] == 1 and [j["job_id"] for j in default["exports"]] == [new["job_id"]]
    everything = api.list(include_expired="true").json()
    assert everything["total"] == 2
    assert [(j["job_id"], j["status"]) for j in everything["exports"]][1] == (old["job_id"], "expired")
    assert everything["exports"][1]["download_url"] is None


# --- Downloads -----------------------------------------------------------------------------------


def test_download_after_ttl_answers_410_and_job_expired(make: ApiFactory, small: Template) -> None:
    api = make(small, download_ttl_seconds=2)
    job = api.created(api.body("sources"))["job"]
    url = job["download_url"]
    with api.conn() as conn:
        file_name = export_jobs.get_job(conn, job["job_id"]).file_name
    assert file_name and (api.settings.exports_dir / file_name).is_file()
    assert api.download(url).status_code == 200  # within the TTL
    deadline = time.monotonic() + 10
    while (r := api.download(url)).status_code == 200:
        assert time.monotonic() < deadline, "the link never expired"
        time.sleep(0.1)
    assert "expired" in assert_error(r, 410)["detail"]
    assert api.download(url).status_code == 410  # and stays gone
    expired = api.job(job["job_id"])
    assert expired["status"] == "expired"
    assert expired["download_url"] is None and expired["error_message"] is None
    # The time the link stopped working is kept (it was null once expired).
    assert expired["download_expires_at"] == job["download_expires_at"]
    assert not (api.settings.exports_dir / file_name).exists()
    assert api.files() == []


def test_head_on_download_answers_headers_without_the_file(make: ApiFactory, small: Template) -> None:
    """HEAD was a 405; clients and proxies probe links with it."""
    api = make(small, download_ttl_seconds=2)
    job = api.created(api.body("sources"))["job"]
    path = job["download_url"].removeprefix(BASE)
    got, head = api.client.get(path), api.client.head(path)
    assert head.status_code == 200 and head.content == b""
    for name in ("content-type", "content-length", "content-disposition"):
        assert head.headers[name] == got.headers[name], name
    assert int(head.headers["content-length"]) == len(got.content) > 0
    assert api.client.head(path[:-3] + "AAA").status_code == 404
    deadline = time.monotonic() + 10
    while (r := api.client.head(path)).status_code == 200:
        assert time.monotonic() < deadline, "the link never expired"
        time.sleep(0.1)
    assert r.status_code == 410 and api.job(job["job_id"])["status"] == "expired"


def test_head_on_healthz(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False)
    r = api.client.head("/healthz")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-type"] == "application/json"


def _flip(ch: str) -> str:
    return "B" if ch == "A" else "A"


TAMPERS: dict[str, Callable[[str, str], str]] = {
    "signature-1st": lambda t, _: (
        t[: t.rindex(".") + 1] + _flip(t[t.rindex(".") + 1]) + t[t.rindex(".") + 2 :]
    ),
    "signature-5th": lambda t, _: (
        t[: t.rindex(".") + 5] + _flip(t[t.rindex(".") + 5]) + t[t.rindex(".") + 6 :]
    ),
    "payload": lambda t, _: _flip(t[0]) + t[1:],
    "truncated": lambda t, _: t[:-4],
    "extended": lambda t, _: t + "x",
    "garbage": lambda t, _: "garbage",
    "dots": lambda t, _: "a.b.c",
    "other-secret": lambda t, job_id: DownloadTokens("another secret", 3600).sign(job_id),
    "no-signature": lambda t, _: t.rsplit(".", 1)[0],
}


def test_tampered_download_token_returns_404(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False)
    job = api.created(api.body("sources"))["job"]
    token = job["download_url"].rsplit("/", 1)[1]
    for name, tamper in TAMPERS.items():
        bad = tamper(token, job["job_id"])
        assert bad != token, name
        assert (
            assert_error(api.client.get(f"{API}/download/{bad}"), 404)["detail"] == "download link not found"
        )
    assert api.download(job["download_url"]).status_code == 200  # the real one still works


def test_authentic_token_for_unknown_job_returns_404(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False)
    with api.conn() as conn:
        secret = secret_key(conn)
    token = DownloadTokens(secret, 3600).sign("00000000-0000-0000-0000-000000000000")
    assert_error(api.client.get(f"{API}/download/{token}"), 404)


def test_download_token_of_deleted_job_returns_404(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False)
    job = api.created(api.body("sources"))["job"]
    assert api.download(job["download_url"]).status_code == 200
    assert api.delete(job["job_id"]).status_code == 204
    assert_error(api.download(job["download_url"]), 404)


def test_download_of_file_deleted_by_hand_returns_410(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False)
    job = api.created(api.body("sources"))["job"]
    for path in api.settings.exports_dir.iterdir():
        path.unlink()
    assert "no longer available" in assert_error(api.download(job["download_url"]), 410)["detail"]


# --- DELETE /exports/{job_id} --------------------------------------------------------------------


def test_delete_pending_job_never_runs(make: ApiFactory, small: Template) -> None:
    first = make(small, run_workers=False, sync_row_limit=50)
    body = first.body(BIG_EXPORT)
    job_id = first.created(body)["job"]["job_id"]  # queued, but no worker is running
    assert first.job(job_id)["status"] == "pending"
    r = first.delete(job_id)
    assert r.status_code == 204 and r.content == b""
    assert_error(first.get_job(job_id), 404)
    assert_error(first.delete(job_id), 404)
    first.close()
    # Now a worker starts on the same database and queue; its single thread takes tasks in order,
    # so once a later job has completed, the deleted job's task has been consumed.
    second = make(small, workers=1, sync_row_limit=50)
    later = second.created(second.body("microconversions"))["job"]["job_id"]
    assert second.wait(later)[0]["status"] == "completed"
    assert second.files() == [f"{later}.csv"]
    assert_error(second.get_job(job_id), 404)
    assert second.list().json()["total"] == 1


def test_delete_completed_job_removes_file_and_link(make: ApiFactory, small: Template) -> None:
    api = make(small)
    job = api.created(api.body("sources"))["job"]
    assert api.files() == [f"{job['job_id']}.csv"]
    r = api.delete(job["job_id"])
    assert r.status_code == 204 and r.content == b""
    assert api.files() == []
    assert_error(api.download(job["download_url"]), 404)
    assert_error(api.get_job(job["job_id"]), 404)
    assert api.list(include_expired="true").json()["total"] == 0


def test_delete_generating_job_stops_and_leaves_no_file(make: ApiFactory, big: Template) -> None:
    api = make(big, sync_row_limit=50, plan="pro", plans=POLLING_PLANS)
    body = api.body("microconversions", filters=SLOW_FILTERS)
    job_id = api.created(body)["job"]["job_id"]
    # Wait until rows are being written (progress > 0): the export's cursor is open by then.
    job, _ = api.wait(job_id, until=lambda j: j["status"] not in RUNNING or j["progress_percent"] > 0)
    assert job["status"] == "generating" and 0 < job["progress_percent"] < 100, job
    assert any(job_id in name for name in api.files()), "a generating job writes a temporary file"
    assert api.delete(job_id).status_code == 204
    deadline = time.monotonic() + 20
    while any(job_id in name or name.endswith(".tmp") for name in api.files()):
        assert time.monotonic() < deadline, api.files()
        time.sleep(0.02)
    time.sleep(0.5)  # had the runner gone on, it would have written the file by now or soon
    assert api.files() == []
    assert_error(api.get_job(job_id), 404)
    # The worker is free again: the next background job runs to completion.
    nxt = api.created(api.body(BIG_EXPORT))["job"]["job_id"]
    assert api.wait(nxt)[0]["status"] == "completed"
    assert api.files() == [f"{nxt}.csv"]


# --- Plans ---------------------------------------------------------------------------------------


def test_free_plan_second_background_export_returns_429_with_retry_after(
    make: ApiFactory, small: Template
) -> None:
    api = make(small, run_workers=False, sync_row_limit=50)
    first = api.created(api.body(BIG_EXPORT))["job"]
    assert first["status"] == "pending"
    r = api.create(api.body("microconversions"))
    err = assert_error(r, 429)
    assert int(r.headers["retry-after"]) >= 1
    assert "1 at a time" in err["detail"]
    assert api.list().json()["total"] == 1, "the refused export left no job"
    assert api.delete(first["job_id"]).status_code == 204
    assert api.created(api.body("microconversions"))["job"]["status"] == "pending"


def test_pro_plan_allows_three_concurrent_exports(make: ApiFactory, small: Template) -> None:
    api = make(small, run_workers=False, sync_row_limit=50, plan="pro")
    for _ in range(3):
        assert api.created(api.body(BIG_EXPORT))["job"]["status"] == "pending"
    assert_error(api.create(api.body(BIG_EXPORT)), 429)


def test_plan_max_rows_returns_413_naming_the_limit(make: ApiFactory, small: Template) -> None:
    plans = {**DEFAULT_PLANS, "free": Plan(concurrent_exports=1, max_rows=1000, requests_per_minute=240)}
    api = make(small, plans=plans)
    body = api.body(BIG_EXPORT)
    n = count_rows(api.settings.database, api.site_id, body)
    assert n > 1000
    err = assert_error(api.create(body), 413)
    assert "1,000" in err["detail"] and f"{n:,}" in err["detail"] and "free" in err["detail"]
    assert api.list().json()["total"] == 0
    assert api.created(api.body("sources"))["job"]["status"] == "completed"  # under the limit: fine


# --- Concurrency ---------------------------------------------------------------------------------


def test_no_database_locked_while_two_background_exports_run(make: ApiFactory, big: Template) -> None:
    api = make(big, sync_row_limit=50, plan="pro", plans=POLLING_PLANS)
    ids = [
        api.created(api.body("microconversions", filters=SLOW_FILTERS))["job"]["job_id"],
        api.created(api.body("microconversions", format="json", filters=SLOW_FILTERS))["job"]["job_id"],
    ]
    failures: list[tuple[int, str]] = []
    running_seen = 0
    for i in range(200):
        r = api.list() if i % 10 == 9 else api.get_job(ids[i % 2])
        if r.status_code != 200:
            failures.append((r.status_code, r.text))
        elif i % 10 != 9 and r.json()["status"] in RUNNING[1:]:
            running_seen += 1
    assert failures == []
    assert running_seen > 0, "the polls never overlapped a running export"
    jobs = [api.wait(job_id)[0] for job_id in ids]
    assert [j["status"] for j in jobs] == ["completed", "completed"], jobs
    assert jobs[0]["actual_rows"] == jobs[1]["actual_rows"] > 2000  # the same rows, as CSV and JSON


def test_healthz_answers_503_when_the_database_is_gone(tmp_path: Path) -> None:
    db = tmp_path / "gone.db"
    app = create_app(Settings(database=db, exports_dir=tmp_path / "exports"), run_workers=False)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        conn = sqlite3.connect(db)
        conn.execute("DROP TABLE export_jobs")
        conn.close()
        r = client.get("/healthz")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "unavailable"


# --- warnings: why an export may come out empty ---------------------------------------------------


def test_a_filter_value_that_never_occurs_is_named_with_the_values_that_do(
    make: ApiFactory, small: Template
) -> None:
    api = make(small)
    body = api.body("conversions", filters={"conversion_type": "purchse", "country": ["es", "QQ"]})
    span = f"from {api.date_from} to {api.date_to}"
    with api.conn() as conn:  # the independent truth: the conversions' own types
        types = {r[0] for r in conn.execute("SELECT DISTINCT conversion_type FROM conversions")}
    r = api.estimate(body)
    assert r.status_code == 200, r.text
    warnings = r.json()["warnings"]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"conversion_type 'purchse' does not occur {span}; it has: ")
    assert set(warnings[0].split("it has: ")[1].split(", ")) == types == {"purchase", "lead", "signup"}
    assert warnings[1].startswith(f"country 'QQ' does not occur {span}; it has: ES, ")  # es is ES
    out = api.created(body)
    assert out["warnings"] == out["estimate"]["warnings"] == warnings
    assert out["job"]["actual_rows"] == 0


def test_dates_without_data_say_which_dates_have_it(make: ApiFactory, small: Template) -> None:
    api = make(small)
    body = {**api.body("sources"), "date_from": "2020-01-01", "date_to": "2020-01-31"}
    expected = f"site {api.site_id!r} has no data from 2020-01-01 to 2020-01-31; it has data from "
    expected += f"{api.date_from} to {api.date_to}"
    assert api.estimate(body).json()["warnings"] == [expected]
    assert api.created(body)["warnings"] == [expected]
    assert api.estimate(api.body("sources")).json()["warnings"] == []
