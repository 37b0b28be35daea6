"""Tenant isolation: two accounts, each with two sites, a key, a completed and a pending job.

For every endpoint, one account's key on the other's site or job gets the very 404 an unknown one
gets (same status, headers and body but for the identifier the caller sent) and nothing of the
other's data; revoked keys get 401 everywhere; a download token serves its own job only, and only
until it expires; tokens are signed, so they cannot be made from a job id.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sealexports.storage import export_jobs
from sealexports.storage.accounts import revoke_key
from sealexports.storage.database import connect, secret_key
from sealexports.tokens import DownloadTokens
from tests.apps import API, Api, ApiFactory, Template
from tests.checks import assert_error
from tests.conftest import say
from tests.tenants import World, assert_nothing_leaks, build_world, canonical

OPERATIONS = {
    ("post", API), ("post", f"{API}/estimate"), ("post", f"{API}/stream"), ("get", API),
    ("get", f"{API}/{{job_id}}"), ("delete", f"{API}/{{job_id}}"), ("get", f"{API}/{{job_id}}/manifest"),
    ("get", f"{API}/download/{{download_token}}"),
    ("head", f"{API}/download/{{download_token}}"),
}  # fmt: skip


@pytest.fixture
def world(make: ApiFactory, small: Template) -> World:
    return build_world(make, small)


# --- Helpers -------------------------------------------------------------------------------------

Call = Callable[[str, str], httpx.Response]  # (site_id parameter name, value) -> response


def site_calls(api: Api, headers: dict[str, str]) -> dict[str, Call]:
    """Each site-scoped endpoint, called with its site given as `site_id` or `account_id`."""
    body = api.body("sources")

    def call(method: str, path: str, with_body: bool) -> Call:
        return lambda name, site: api.client.request(
            method, path, params={name: site}, headers=headers, json=body if with_body else None
        )

    return {
        "create": call("POST", API, True),
        "estimate": call("POST", f"{API}/estimate", True),
        "stream": call("POST", f"{API}/stream", True),
        "list": call("GET", API, False),
    }


def snapshot(api: Api) -> list[tuple[Any, ...]]:
    with api.conn() as conn:
        return conn.execute(
            "SELECT job_id, site_id, status, file_name, sha256, download_token FROM export_jobs ORDER BY id"
        ).fetchall()


# --- Other account's sites and jobs ---------------------------------------------------------------


def test_schema_has_exactly_the_operations_checked_here(world: World) -> None:
    paths = world.api.client.get("/schema/openapi.json").json()["paths"]
    exports = {(m, p) for p, ops in paths.items() if p.startswith(API) for m in ops}
    assert exports == OPERATIONS, "a new exports operation: add it to the isolation tests"


@pytest.mark.parametrize("attacker", ["a", "b"])
def test_other_accounts_sites_answer_exactly_like_unknown_sites(
    world: World, attacker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    api, me, them = world.api, getattr(world, attacker), world.b if attacker == "a" else world.a
    before = snapshot(api)
    calls = site_calls(api, me.headers)
    checked = 0
    for endpoint, call in calls.items():
        for name in ("site_id", "account_id"):
            unknown = call(name, "nowhere")
            assert_error(unknown, 404)
            for site in them.sites:
                r = call(name, site)
                assert_error(r, 404)
                assert canonical(r, site, "<site>") == canonical(unknown, "nowhere", "<site>"), endpoint
                assert_nothing_leaks(r, them.secrets(), sent=str(r.request.url) + r.request.content.decode())
                checked += 1
    assert snapshot(api) == before, "nothing was created, changed or deleted"
    # Each tenant's own list shows its own jobs and none of the other's.
    mine = api.list(site_id=me.sites[0], headers=me.headers)
    assert mine.status_code == 200
    assert {j["job_id"] for j in mine.json()["exports"]} == {me.completed["job_id"], me.pending["job_id"]}
    assert_nothing_leaks(mine, them.secrets(), sent="")
    say(
        capsys, f"isolation: {checked} calls by {me.account} on {them.account}'s sites: 404 like unknown ones"
    )


@pytest.mark.parametrize("attacker", ["a", "b"])
def test_other_accounts_jobs_answer_exactly_like_unknown_jobs(
    world: World, attacker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    api, me, them = world.api, getattr(world, attacker), world.b if attacker == "a" else world.a
    before = snapshot(api)
    checked = 0
    for method, suffix in (("GET", ""), ("GET", "/manifest"), ("DELETE", "")):
        for job in (them.completed, them.pending):
            job_id, unknown_id = job["job_id"], str(uuid.uuid4())
            # Through my own sites (the job is not there) and through theirs (not mine to see).
            for site in [*me.sites, *them.sites]:

                def call(
                    jid: str, site: str = site, method: str = method, suffix: str = suffix
                ) -> httpx.Response:
                    return api.client.request(
                        method, f"{API}/{jid}{suffix}", params={"site_id": site}, headers=me.headers
                    )

                r, unknown = call(job_id), call(unknown_id)
                assert_error(r, 404)
                assert canonical(r, job_id, "<job>") == canonical(unknown, unknown_id, "<job>")
                assert_nothing_leaks(r, them.secrets(), sent=str(r.request.url))
                checked += 1
    assert snapshot(api) == before, "their jobs are untouched"
    for job in (them.completed, them.pending):
        r = api.get_job(job["job_id"], site_id=them.sites[0], headers=them.headers)
        assert r.status_code == 200 and r.json() == job
    assert api.download(them.completed["download_url"]).status_code == 200
    say(
        capsys,
        f"isolation: {checked} calls by {me.account} on {them.account}'s jobs: 404 like unknown ids",
    )


def test_revoked_key_gets_401_on_every_endpoint(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    api, a, b = world.api, world.a, world.b
    before = snapshot(api)
    with api.conn() as conn:
        revoke_key(conn, a.key[:12])
    responses: list[httpx.Response] = []
    for site in [*a.sites, *b.sites, "nowhere"]:
        for name in ("site_id", "account_id"):
            responses += [call(name, site) for call in site_calls(api, a.headers).values()]
        for job in (a.completed, a.pending, b.completed):
            responses.append(api.get_job(job["job_id"], site_id=site, headers=a.headers))
            responses.append(api.delete(job["job_id"], site_id=site, headers=a.headers))
    bearer = {"Authorization": f"Bearer {a.key}"}
    responses += [api.list(headers=bearer), api.delete(a.pending["job_id"], headers=bearer)]
    bodies = set()
    for r in responses:
        err = assert_error(r, 401)
        bodies.add((err["detail"], err["error"]["code"]))
    assert bodies == {("invalid or revoked API key", "unauthorized")}, "one answer, whatever was asked"
    assert snapshot(api) == before
    # The other account's key, and the download links (the token is the credential), still work.
    assert api.list(site_id=b.sites[0], headers=b.headers).json()["total"] == 2
    assert api.download(a.completed["download_url"]).status_code == 200
    say(capsys, f"isolation: revoked key: {len(responses)} calls over 6 endpoints, all 401 with one body")


def test_a_key_is_checked_before_the_site_it_names(world: World) -> None:
    """A status poll reads the key, the site and the job in one go; the refusals keep their
    order: no key or a bad key is a 401 whatever else is wrong, then a missing site_id a 422,
    then another account's site a 404 like a job that does not exist."""
    api, a, b = world.api, world.a, world.b
    job = a.completed["job_id"]
    bad = {"X-API-Key": "sm_" + "x" * 43}
    for path in (f"{API}/{job}", API):
        assert_error(api.client.get(path), 401, "missing API key")
        assert_error(api.client.get(path, headers=bad), 401, "invalid or revoked API key")
        assert_error(api.client.get(path, params={"site_id": a.sites[0]}, headers=bad), 401)
        assert_error(api.client.get(path, headers=a.headers), 422, "site_id is required")
        mixed = {"site_id": a.sites[0], "account_id": b.sites[0]}
        assert_error(api.client.get(path, params=mixed, headers=a.headers), 422, "name different sites")
    assert_error(api.get_job(job, site_id=b.sites[0], headers=a.headers), 404)
    assert api.get_job(job, site_id=a.sites[0], headers=a.headers).json()["job_id"] == job


# --- Download tokens ------------------------------------------------------------------------------


def _file(api: Api, job_id: str) -> bytes:
    with api.conn() as conn:
        record = export_jobs.get_job(conn, job_id)
    assert record.file_name
    return (api.settings.exports_dir / record.file_name).read_bytes()


def _tokens(api: Api) -> DownloadTokens:
    with api.conn() as conn:
        return DownloadTokens(secret_key(conn), api.settings.download_ttl_seconds)


def fresh_token(api: Api, job_id: str, issued: str) -> str:
    """A token signed now with the server's secret, once the clock has left the second in which
    `issued` was signed (the same job and second would give the very same token)."""
    signer = _tokens(api)
    while (token := signer.sign(job_id)).split(".")[1] == issued.split(".")[1]:
        time.sleep(0.05)
    return token


def start_of_second() -> None:
    """Wait for a fresh second: completion times are kept to the second, so a job completed late
    in one would lose most of a one-second TTL to the rounding."""
    while time.time() % 1 > 0.05:
        time.sleep(0.01)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_a_token_serves_only_its_own_job(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    api, a, b = world.api, world.a, world.b
    for tenant in (a, b):
        r = api.client.get(f"{API}/download/{tenant.token}")
        assert r.status_code == 200
        assert r.content == _file(api, tenant.completed["job_id"])
    assert _file(api, a.completed["job_id"]) != _file(api, b.completed["job_id"])

    a_payload, a_stamp, a_sig = a.token.split(".")
    b_payload, b_stamp, b_sig = b.token.split(".")
    forged = {
        "b-payload-a-signature": f"{b_payload}.{a_stamp}.{a_sig}",
        "a-payload-b-signature": f"{a_payload}.{b_stamp}.{b_sig}",
        # Authentic signatures (the server's secret) over the other's job ids, but never issued:
        "fresh-token-for-b": fresh_token(api, b.completed["job_id"], b.token),
        "fresh-token-for-b-pending": fresh_token(api, b.pending["job_id"], b.token),
    }
    for name, token in forged.items():
        assert token not in (a.token, b.token), name
        r = api.client.get(f"{API}/download/{token}")
        err = assert_error(r, 404)
        assert err["detail"] == "download link not found", name
        assert_nothing_leaks(r, a.secrets() | b.secrets(), sent=token)
        head = api.client.head(f"{API}/download/{token}")
        assert head.status_code == 404 and head.content == b"", name
    say(
        capsys,
        f"isolation: {len(forged)} forged or swapped tokens: all 404; each real token serves its own file",
    )


def test_tokens_are_signed_not_derived_from_job_ids(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    api, a = world.api, world.a
    job_id = a.completed["job_id"]
    token = a.token
    payload, stamp, signature = token.split(".")
    assert job_id not in token and job_id.replace("-", "") not in token
    # The payload is the job id, signed but not encrypted (tokens.py); the rest is a timestamp and
    # an HMAC that only the server's secret can make.
    assert json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))) == job_id
    assert len(signature) >= 27  # at least 160 bits
    other_secret = DownloadTokens("not the server's secret", 3600)
    guesses = {
        "job-id": job_id,
        "job-id-hex": uuid.UUID(job_id).hex,
        "base64-job-id": _b64(job_id.encode()),
        "base64-json-job-id": payload,
        "unsigned": f"{payload}.{stamp}",
        "sha256-job-id": hashlib.sha256(job_id.encode()).hexdigest(),
        "other-secret": other_secret.sign(job_id),
        "other-secret-same-stamp": f"{payload}.{stamp}.{other_secret.sign(job_id).rsplit('.', 1)[1]}",
    }
    for name, guess in guesses.items():
        assert guess != token, name
        assert_error(api.client.get(f"{API}/download/{guess}"), 404)
    # The signature depends on the secret: the same job id and time signed with two secrets differ.
    for _ in range(3):
        pair = [DownloadTokens(secret, 3600).sign(job_id) for secret in ("secret one", "secret two")]
        if pair[0].split(".")[1] == pair[1].split(".")[1]:
            break
    assert pair[0].split(".")[:2] == pair[1].split(".")[:2] and pair[0] != pair[1]
    assert api.download(a.completed["download_url"]).status_code == 200
    say(capsys, f"isolation: {len(guesses)} tokens made from the job id without the secret: all 404")


def test_tokens_work_only_until_they_expire(
    make: ApiFactory, small: Template, capsys: pytest.CaptureFixture[str]
) -> None:
    world = build_world(make, small, download_ttl_seconds=1)
    api = world.api
    lifetimes = []
    for tenant in (world.a, world.b):
        site, headers = tenant.sites[0], tenant.headers
        assert api.delete(tenant.pending["job_id"], site_id=site, headers=headers).status_code == 204
        start_of_second()
        started = time.monotonic()
        job = api.created(api.body("devices"), site_id=site, headers=headers)["job"]
        assert api.download(job["download_url"]).status_code == 200, "alive within its TTL"
        while (r := api.download(job["download_url"])).status_code == 200:
            assert time.monotonic() - started < 10, "the link never expired"
            time.sleep(0.05)
        lifetimes.append(time.monotonic() - started)
        assert "expired" in assert_error(r, 410)["detail"]
        assert api.get_job(job["job_id"], site_id=site, headers=headers).json()["status"] == "expired"
        # A fresh token over the expired job, even signed with the server's secret, serves nothing.
        token = job["download_url"].rsplit("/", 1)[1]
        assert_error(api.client.get(f"{API}/download/{fresh_token(api, job['job_id'], token)}"), 404)
    # Both tenants' first links too (made earlier, with the same TTL).
    for tenant in (world.a, world.b):
        assert_error(api.download(tenant.completed["download_url"]), 410)
    assert all(0.5 < t < 3.5 for t in lifetimes), lifetimes
    assert api.files() == []
    lived = ", ".join(f"{t:.1f}" for t in lifetimes)
    say(capsys, f"isolation: download_ttl_seconds=1: one link per tenant, each lived {lived} s, then 410")


def test_job_ids_are_not_sequential_or_guessable(world: World) -> None:
    ids = [job["job_id"] for t in (world.a, world.b) for job in (t.completed, t.pending)]
    assert all(uuid.UUID(i).version == 4 for i in ids)
    assert len(set(ids)) == len(ids)
    # The sequential `id` is shown, but no endpoint takes it: asking for a job by it finds nothing.
    r = world.api.get_job(str(world.b.completed["id"]), site_id=world.a.sites[0])
    assert_error(r, 404)


def test_database_has_one_account_per_tenant(world: World) -> None:
    conn = connect(world.api.settings.database, migrate=False)
    try:
        rows = conn.execute(
            "SELECT a.name, s.site_id FROM sites s JOIN accounts a ON a.id = s.account_id ORDER BY s.site_id"
        ).fetchall()
    finally:
        conn.close()
    by_account: dict[str, set[str]] = {}
    for account, site in rows:
        by_account.setdefault(account, set()).add(site)
    assert by_account == {"demo": set(world.a.sites), "rival-co": set(world.b.sites)}
