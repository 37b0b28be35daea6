"""Webhooks: the outbox written with the job's transition, signed deliveries to a real receiver on
loopback, retries driven by an injected clock, 410, SSRF, rotation, the CLI, the API, and the
receiver of docs/webhooks.md run as a process."""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sealexports.cli import cli
from sealexports.config import Settings
from sealexports.jobs.lifecycle import transition
from sealexports.storage import accounts, export_jobs
from sealexports.storage import webhooks as store
from sealexports.storage.database import connect
from sealexports.storage.export_jobs import Status
from sealexports.webhooks import endpoints, outbox
from tests.apps import ApiFactory, Template
from tests.checks import assert_cli_error, assert_error
from tests.receiver import Received, receiving

OWNER = "test:1:owner"
T0 = 1_800_000_000.0


def settings(db: Path, **kw: Any) -> Settings:
    return Settings(database=db, webhooks_allow_private=True, public_url="https://exports.example", **kw)


def setup_db(db: Path) -> int:
    conn = connect(db)
    try:
        return accounts.create_site(conn, "shop", account="acme", timezone="Europe/Madrid").account.id
    finally:
        conn.close()


def new_job(conn: sqlite3.Connection, account_id: int, *, filters: str, estimated_rows: int) -> str:
    """A pending sources job of site shop, as a create leaves it; its id."""
    job_id = str(uuid.uuid4())
    export_jobs.insert_job(conn, {
        "job_id": job_id, "account_id": account_id, "site_id": "shop", "export_type": "sources",
        "format": "csv", "date_from": "2025-01-01", "date_to": "2025-01-31", "filters": filters,
        "status": "pending", "estimated_rows": estimated_rows, "created_at": "2025-02-01T10:00:00Z",
    })  # fmt: skip
    return job_id


def finish_job(db: Path, account_id: int, status: Status = Status.COMPLETED) -> str:
    """A job taken through the state machine to `status`, as the runner does."""
    conn = connect(db)
    job_id = new_job(conn, account_id, filters='{"country":"ES"}', estimated_rows=12)
    transition(conn, job_id, Status.PENDING, Status.ESTIMATING)
    transition(conn, job_id, Status.ESTIMATING, Status.GENERATING)
    extra: dict[str, Any] = (
        {"actual_rows": 12, "file_size_bytes": 2048, "download_token": "tok.en", "progress_percent": 100,
         "completed_at": "2025-02-01T10:00:05Z", "download_expires_at": "2025-02-02T10:00:05Z",
         "file_name": f"{job_id}.csv"}
        if status == Status.COMPLETED
        else {"error_message": "disk full", "completed_at": "2025-02-01T10:00:05Z"}
    )  # fmt: skip
    transition(conn, job_id, Status.GENERATING, status, **extra)
    conn.close()
    return job_id


def hmac_hex(secret: str, t: str, body: bytes) -> str:
    return hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()


def signatures(r: Received) -> tuple[str, list[str]]:
    parts = [p.split("=", 1) for p in r.headers["X-Sealexports-Signature"].split(",")]
    t = [v for k, v in parts if k == "t"]
    assert len(t) == 1
    return t[0], [v for k, v in parts if k == "v1"]


def test_completed_job_is_delivered_signed_and_a_500_is_retried_with_the_same_id(db_path: Path) -> None:
    account = setup_db(db_path)
    conn = connect(db_path)
    with receiving(answers=[500]) as rx:
        s = settings(db_path)
        endpoint, secret = endpoints.add(conn, s, account, rx.url, None)
        job_id = finish_job(db_path, account)
        clock = [T0]
        assert outbox.deliver_due(conn, s, OWNER, lambda: clock[0]) == 1
        clock[0] = T0 + 9  # not yet due
        assert outbox.deliver_due(conn, s, OWNER, lambda: clock[0]) == 0
        clock[0] = T0 + 10
        assert outbox.deliver_due(conn, s, OWNER, lambda: clock[0]) == 1
        first, second = rx.wait_for(2)
    for r, t_expected in ((first, T0), (second, T0 + 10)):
        t, v1 = signatures(r)
        assert int(t) == int(t_expected)
        assert v1 == [hmac_hex(secret, t, r.body)]
        assert r.headers["X-Sealexports-Event"] == "export.completed"
        assert r.headers["Content-Type"] == "application/json"
    assert first.body == second.body
    assert first.headers["X-Sealexports-Delivery"] == second.headers["X-Sealexports-Delivery"]
    event = json.loads(first.body)
    assert event["id"] == first.headers["X-Sealexports-Delivery"]
    assert event["type"] == "export.completed"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["created_at"])
    job = event["data"]["job"]
    assert job["job_id"] == job_id and job["status"] == "completed" and job["filters"] == {"country": "ES"}
    assert job["download_url"] == "https://exports.example/api/v1/exports/download/tok.en"
    assert job["file_size_human"] == "2.0 KB" and job["actual_rows"] == 12
    delivery = store.list_deliveries(conn, endpoint=endpoint)[0]
    assert delivery.status == "delivered" and delivery.attempts == 2
    tries = store.attempts(conn, delivery)
    assert [(a.attempt, a.status_code) for a in tries] == [(1, 500), (2, 200)]
    assert all(a.duration_ms > 0 for a in tries)
    conn.close()


def test_network_errors_back_off_six_attempts_over_about_an_hour(db_path: Path) -> None:
    account = setup_db(db_path)
    conn = connect(db_path)
    with socket.socket() as closed:  # a port with nobody listening: connection refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    s = settings(db_path, webhooks_timeout_seconds=2.0)
    endpoints.add(conn, s, account, f"http://127.0.0.1:{port}/x", ["export.failed"])
    finish_job(db_path, account, Status.FAILED)
    finish_job(db_path, account, Status.COMPLETED)  # not subscribed: no delivery
    now = T0
    times = []
    while now < T0 + 4000:
        if outbox.deliver_due(conn, s, OWNER, functools.partial(float, now)):  # a clock stopped at now
            times.append(now - T0)
        now += 10
    (delivery,) = store.list_deliveries(conn)
    assert delivery.event_type == "export.failed" and delivery.status == "failed"
    tries = store.attempts(conn, delivery)
    assert len(tries) == 6 and all(a.status_code is None and a.error for a in tries)
    assert times[1] <= 30  # the first retry within 30 s
    assert 3000 <= times[-1] <= 4500, times  # about an hour
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == sorted(gaps)  # backing off
    conn.close()


def test_410_disables_the_endpoint_and_other_4xx_are_not_retried(db_path: Path) -> None:
    account = setup_db(db_path)
    conn = connect(db_path)
    with receiving(answers=[400, 410]) as rx:
        s = settings(db_path)
        endpoint, _ = endpoints.add(conn, s, account, rx.url, None)
        finish_job(db_path, account)
        outbox.deliver_due(conn, s, OWNER, lambda: T0)
        finish_job(db_path, account)
        outbox.deliver_due(conn, s, OWNER, lambda: T0 + 1)
        finish_job(db_path, account)  # after the 410: no delivery at all
        assert outbox.deliver_due(conn, s, OWNER, lambda: T0 + 3600) == 0
        assert len(rx.received) == 2
    assert [d.status for d in store.list_deliveries(conn)] == ["failed", "failed"]
    gone = store.get_endpoint(conn, endpoint.endpoint_id)
    assert gone.disabled_at is not None and "410" in (gone.disabled_reason or "")
    conn.close()


def test_private_addresses_are_refused_when_added_and_again_at_delivery(db_path: Path) -> None:
    account = setup_db(db_path)
    conn = connect(db_path)
    strict = Settings(database=db_path)
    for url, text in [
        ("http://127.0.0.1:9/x", "private, loopback or link-local"),
        ("http://169.254.169.254/latest/meta-data", "private, loopback or link-local"),
        ("http://[::1]/x", "private, loopback or link-local"),
        ("http://10.1.2.3/x", "private, loopback or link-local"),
        ("http://localhost/x", "private, loopback or link-local"),
        ("ftp://example.com/x", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("http://user:pw@example.com/", "user name or password"),
    ]:
        with pytest.raises(Exception, match=re.escape(text)):
            endpoints.add(conn, strict, account, url, None)
    with receiving() as rx:  # allowed when added, refused at delivery once the operator forbids it
        endpoints.add(conn, settings(db_path), account, rx.url, None)
        finish_job(db_path, account)
        assert outbox.deliver_due(conn, strict, OWNER, lambda: T0) == 1
        assert rx.received == []
    (delivery,) = store.list_deliveries(conn)
    assert delivery.status == "failed" and "127.0.0.1" in (delivery.last_error or "")
    conn.close()


def test_rotation_signs_with_both_secrets_for_24_hours(db_path: Path) -> None:
    account = setup_db(db_path)
    conn = connect(db_path)
    with receiving() as rx:
        s = settings(db_path)
        endpoint, old = endpoints.add(conn, s, account, rx.url, None)
        new = endpoints.rotate(conn, endpoint, now=T0)
        assert new != old and new.startswith("whsec_")
        finish_job(db_path, account)
        outbox.deliver_due(conn, s, OWNER, lambda: T0 + 3600)
        finish_job(db_path, account)
        outbox.deliver_due(conn, s, OWNER, lambda: T0 + 24 * 3600 + 1)
        during, after = rx.wait_for(2)
    t, v1 = signatures(during)
    assert v1 == [hmac_hex(new, t, during.body), hmac_hex(old, t, during.body)]
    t, v1 = signatures(after)
    assert v1 == [hmac_hex(new, t, after.body)]
    conn.close()


def test_a_crashed_attempt_is_taken_over_after_its_lease_with_the_same_delivery(db_path: Path) -> None:
    """A claim whose process died (nothing recorded) is sent again, same id, by another owner;
    the transition wrote exactly one delivery, however often the job was retried before."""
    account = setup_db(db_path)
    conn = connect(db_path)
    with receiving() as rx:
        s = settings(db_path, webhooks_timeout_seconds=1.0)
        endpoints.add(conn, s, account, rx.url, None)
        finish_job(db_path, account)
        dead = store.claim_due(conn, "dead:1:x", T0, T0 + 8)  # then killed before sending
        assert dead is not None
        assert outbox.deliver_due(conn, s, OWNER, lambda: T0 + 5) == 0  # its lease holds
        assert outbox.deliver_due(conn, s, OWNER, lambda: T0 + 9) == 1
        (r,) = rx.wait_for(1)
    assert r.headers["X-Sealexports-Delivery"] == dead.delivery_id
    assert not store.record_attempt(  # the dead owner's late write is refused
        conn, dead, "dead:1:x", store.Attempt(1, "x", 200, None, 1.0), store.DeliveryStatus.DELIVERED, 0
    )
    assert [(d.status, d.attempts) for d in store.list_deliveries(conn)] == [("delivered", 1)]
    conn.close()


def invoke(db: Path, *args: str) -> Any:
    return CliRunner().invoke(
        cli,
        ["--db", str(db), *args],
        env={"SEALEXPORTS_WEBHOOKS_ALLOW_PRIVATE": "true"},
        catch_exceptions=False,
    )


def test_cli_add_prints_only_the_secret_and_manages_endpoints(db_path: Path) -> None:
    account = setup_db(db_path)
    with receiving() as rx:
        r = invoke(db_path, "webhooks", "add", rx.url, "--account", "acme", "--events", "export.completed")
        assert r.exit_code == 0, r.output
        assert re.fullmatch(r"whsec_[A-Za-z0-9_-]{43}\n", r.stdout)
        secret = r.stdout.strip()
        listed = invoke(db_path, "webhooks", "list")
        assert secret not in listed.stdout and rx.url in listed.stdout and "export.completed" in listed.stdout
        endpoint_id = re.search(r"wh_[0-9a-f]{12}", listed.stdout).group(0)  # type: ignore[union-attr]
        test = invoke(db_path, "webhooks", "test", endpoint_id)
        assert re.fullmatch(r"whd_[0-9a-f]{24}\n", test.stdout)
        conn = connect(db_path)
        outbox.deliver_due(conn, settings(db_path), OWNER, lambda: time.time())
        (got,) = rx.wait_for(1)
        assert got.headers["X-Sealexports-Event"] == "webhook.test"
        t, v1 = signatures(got)
        assert v1 == [hmac_hex(secret, t, got.body)]
        shown = invoke(db_path, "webhooks", "deliveries", endpoint_id)
        assert test.stdout.strip() in shown.stdout and "delivered" in shown.stdout and " 200 " in shown.stdout
        replay = invoke(db_path, "webhooks", "replay", test.stdout.strip())
        assert re.fullmatch(r"whd_[0-9a-f]{24}\n", replay.stdout) and replay.stdout != test.stdout
        rotated = invoke(db_path, "webhooks", "rotate", endpoint_id)
        assert re.fullmatch(r"whsec_[A-Za-z0-9_-]{43}\n", rotated.stdout) and rotated.stdout != r.stdout
        assert invoke(db_path, "webhooks", "remove", endpoint_id).exit_code == 0
        assert store.list_endpoints(conn, account_id=account) == [] and store.list_deliveries(conn) == []
        conn.close()
    assert_cli_error(invoke(db_path, "webhooks", "add", "gopher://x", "--account", "acme"), "http://")
    assert_cli_error(invoke(db_path, "webhooks", "add", rx.url, "--account", "nobody"), "account 'nobody'")
    assert_cli_error(
        invoke(db_path, "webhooks", "add", rx.url, "--account", "acme", "--events", "export.started"),
        "unknown webhook event 'export.started'",
    )
    assert_cli_error(invoke(db_path, "webhooks", "remove", "wh_nope"), "'wh_nope' not found")
    assert_cli_error(invoke(db_path, "webhooks", "replay", "whd_nope"), "'whd_nope' not found")
    conn = connect(db_path)
    assert store.list_endpoints(conn) == []  # nothing half-written by the refusals
    conn.close()


def test_api_needs_an_account_wide_key_and_sends_the_job_as_get_shows_it(
    make: ApiFactory, small: Template
) -> None:
    api = make(small, webhooks_allow_private=True)
    with api.conn() as conn:
        site_key = accounts.create_key(conn, small.site_id)
    hooks = "/api/v1/webhooks"
    with receiving() as rx:
        r = api.client.get(hooks, headers={"X-API-Key": site_key})
        assert_error(r, 403, "account-wide")
        r = api.client.post(hooks, json={"url": rx.url}, headers={"X-API-Key": site_key})
        assert_error(r, 403, "account-wide")
        assert_error(api.client.post(hooks, json={"url": "ftp://x"}, headers=api.headers), 422, "http://")
        r = api.client.post(hooks, json={"url": rx.url, "events": ["export.completed"]}, headers=api.headers)
        assert r.status_code == 201, r.text
        created = r.json()
        assert set(created) == {"id", "secret"}
        listed = api.client.get(hooks, headers=api.headers).json()["webhooks"]
        assert listed == [{"id": created["id"], "url": rx.url, "events": ["export.completed"],
                           "status": "active", "disabled_reason": None,
                           "created_at": listed[0]["created_at"]}]  # fmt: skip
        job = api.created(api.body("sources"))["job"]  # small: done during the request
        assert job["status"] == "completed"
        (got,) = rx.wait_for(1)  # sent by the app's dispatcher thread, after the request
        t, v1 = signatures(got)
        assert v1 == [hmac_hex(created["secret"], t, got.body)]
        assert json.loads(got.body)["data"]["job"] == api.job(job["job_id"])
        r = api.client.get(f"{hooks}/{created['id']}/deliveries", headers=api.headers)
        (delivery,) = r.json()["deliveries"]
        assert delivery["id"] == got.headers["X-Sealexports-Delivery"] and delivery["status"] == "delivered"
        assert [a["status_code"] for a in delivery["attempts"]] == [200]
        assert delivery["attempts"][0]["duration_ms"] > 0
        r = api.client.post(f"{hooks}/deliveries/{delivery['id']}/replay", headers=api.headers)
        assert r.status_code == 202 and r.json()["id"] != delivery["id"]
        again = rx.wait_for(2)[1]
        assert json.loads(again.body)["data"] == json.loads(got.body)["data"]
        assert api.client.post(f"{hooks}/{created['id']}/test", headers=api.headers).status_code == 202
        rotated = api.client.post(f"{hooks}/{created['id']}/rotate", headers=api.headers).json()
        assert rotated["secret"] != created["secret"]
        other_key = make.add_site(api, "elsewhere")
        assert_error(api.client.delete(f"{hooks}/{created['id']}", headers={"X-API-Key": other_key}), 404)
        assert api.client.delete(f"{hooks}/{created['id']}", headers=api.headers).status_code == 204
        assert api.client.get(hooks, headers=api.headers).json() == {"webhooks": []}


def doc_receiver() -> str:
    text = (Path(__file__).parent.parent / "docs" / "webhooks.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    assert len([line for line in blocks[0].splitlines() if line.strip()]) <= 16  # about a dozen
    return str(blocks[0])


def post(url: str, body: bytes, signature: str) -> int:
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "X-Sealexports-Signature": signature,
        "X-Sealexports-Event": "export.completed", "X-Sealexports-Delivery": "whd_x",
    })  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_the_documented_receiver_verifies_signatures_and_rejects_old_timestamps(
    db_path: Path, tmp_path: Path
) -> None:
    script = tmp_path / "receiver.py"
    script.write_text(doc_receiver())
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()
    account = setup_db(db_path)
    conn = connect(db_path)
    s = settings(db_path)
    url = f"http://127.0.0.1:{number}/"
    endpoint, secret = endpoints.add(conn, s, account, url, None)
    env = {"WEBHOOK_SECRET": secret, "PORT": str(number), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", number), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        job_id = finish_job(db_path, account)
        assert outbox.deliver_due(conn, s, OWNER) == 1  # real time: the receiver checks it
        (delivery,) = store.list_deliveries(conn)
        assert (delivery.status, delivery.last_status_code) == ("delivered", 204)
        body = delivery.body.encode()  # type: ignore[union-attr]
        now = str(int(time.time()))
        assert post(url, body, f"t={now},v1={hmac_hex(secret, now, body)}") == 204
        assert post(url, body, f"t={now},v1={hmac_hex('whsec_wrong', now, body)}") == 400
        assert post(url, body + b" ", f"t={now},v1={hmac_hex(secret, now, body)}") == 400
        old = str(int(time.time()) - 3600)
        assert post(url, body, f"t={old},v1={hmac_hex(secret, old, body)}") == 400
        assert post(url, body, "garbage") == 400
        endpoints.rotate(conn, endpoint)  # two v1: the receiver, knowing the old secret, still accepts
        finish_job(db_path, account)
        outbox.deliver_due(conn, s, OWNER)
        assert store.list_deliveries(conn)[0].last_status_code == 204
        lines = [proc.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert all(line.startswith("export.completed {") for line in lines)
    assert json.loads(lines[0].split(" ", 1)[1])["data"]["job"]["job_id"] == job_id
    conn.close()


def test_a_job_interrupted_and_run_again_makes_one_event(db_path: Path) -> None:
    """Deliveries come from the completed/failed transition itself: a job put back to pending by
    a crash (its lease lapsed) and finished by another process has one delivery; an expiry none."""
    account = setup_db(db_path)
    conn = connect(db_path)
    endpoints.add(conn, settings(db_path), account, "http://127.0.0.1:9/x", None)
    job_id = new_job(conn, account, filters="{}", estimated_rows=1)
    export_jobs.claim_next(conn, "dead:1:x", T0, T0 + 1)
    transition(conn, job_id, Status.ESTIMATING, Status.GENERATING, owner="dead:1:x")
    assert export_jobs.requeue_lapsed(conn, job_id, T0 + 5, {"status": "pending", "progress_percent": 0})
    assert store.list_deliveries(conn) == []
    export_jobs.claim_next(conn, "alive:2:y", T0 + 6, T0 + 60)
    transition(conn, job_id, Status.ESTIMATING, Status.GENERATING, owner="alive:2:y")
    transition(conn, job_id, Status.GENERATING, Status.COMPLETED, owner="alive:2:y", download_token="t")
    assert not transition(conn, job_id, Status.GENERATING, Status.COMPLETED, owner="dead:1:x")
    transition(conn, job_id, Status.COMPLETED, Status.EXPIRED)
    assert [(d.event_type, d.job_id) for d in store.list_deliveries(conn)] == [("export.completed", job_id)]
    conn.close()
