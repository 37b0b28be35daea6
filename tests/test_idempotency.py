"""Idempotency-Key on POST /exports: a retry gets the first answer and makes nothing new."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from sealexports.storage.accounts import create_key
from sealexports.storage.database import connect
from tests import live
from tests.apps import ApiFactory, Template
from tests.conftest import DemoDB


def _template(demo_db: DemoDB) -> Template:
    return Template(demo_db.path, demo_db.site.site_id, str(demo_db.date_from), str(demo_db.date_to))


def test_a_retry_gets_the_same_answer_and_no_second_export(make: ApiFactory, demo_db: DemoDB) -> None:
    api = make(_template(demo_db))
    body = api.body("sources", filters={"country": "ES"})
    key = {**api.headers, "Idempotency-Key": "order-42"}
    first = api.create(body, headers=key)
    assert first.status_code == 201 and first.headers["idempotent-replayed"] == "false"
    # The same request, its keys in another order.
    again = api.create(dict(reversed(list(body.items()))), headers=key)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert api.list().json()["total"] == 1
    assert len(api.files()) == 1
    # Another body, or another site of the account, with the key: 422, saying so.
    other = api.create(api.body("pages"), headers=key)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["error"]["message"]
    # Another key: another export.
    assert api.create(body, headers={**api.headers, "Idempotency-Key": "order-43"}).status_code == 201
    assert api.list().json()["total"] == 2


def test_a_replay_shows_the_job_as_it_is_now(make: ApiFactory, demo_db: DemoDB) -> None:
    api = make(_template(demo_db), sync_row_limit=1)
    key = {**api.headers, "Idempotency-Key": "bg-1"}
    first = api.create(api.body("sources"), headers=key).json()
    assert first["job"]["status"] == "pending"
    done, _ = api.wait(first["job"]["job_id"])
    again = api.create(api.body("sources"), headers=key).json()
    assert again["job"] == api.job(first["job"]["job_id"]) and again["job"]["status"] == done["status"]
    assert again["message"] == first["message"] and again["estimate"] == first["estimate"]
    assert api.list().json()["total"] == 1


def test_keys_are_per_account_and_refusals_are_not_kept(make: ApiFactory, demo_db: DemoDB) -> None:
    api = make(_template(demo_db))
    other_key = make.add_site(api, "other")
    key = "shared-key"
    assert api.create(api.body("sources"), headers={**api.headers, "Idempotency-Key": key}).status_code == 201
    r = api.create(
        api.body("pages"), site_id="other", headers={"X-API-Key": other_key, "Idempotency-Key": key}
    )
    assert r.status_code == 201  # another account: its own keys
    bad = {**api.headers, "Idempotency-Key": "retry-me"}
    assert api.create(api.body("sources", filters={"colour": "x"}), headers=bad).status_code == 422
    assert api.create(api.body("sources"), headers=bad).status_code == 201  # the refusal kept nothing
    assert (
        api.create(api.body("sources"), headers={**api.headers, "Idempotency-Key": "a b"}).status_code == 422
    )


@pytest.fixture
def server(tmp_path: Path, demo_db: DemoDB) -> Any:
    db = tmp_path / "live.db"
    shutil.copyfile(demo_db.path, db)
    conn = connect(db)
    key = create_key(conn, demo_db.site.site_id)
    conn.close()
    with live.running(db, tmp_path) as s:
        yield s, key


def test_concurrent_creates_with_one_key_make_one_job(server: Any, demo_db: DemoDB) -> None:
    s, key = server
    body = {
        "export_type": "microconversions",
        "date_from": str(demo_db.date_from),
        "date_to": str(demo_db.date_to),
    }
    headers = {"X-API-Key": key, "Idempotency-Key": "together"}
    answers: list[requests.Response] = []
    start = threading.Barrier(4)

    def post() -> None:
        start.wait()
        answers.append(
            requests.post(
                f"{s.api}/exports", params={"site_id": "demo"}, json=body, headers=headers, timeout=60
            )
        )

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in answers] == [201] * 4, [r.text for r in answers]
    assert len({r.json()["job"]["job_id"] for r in answers}) == 1
    assert sorted(r.headers["idempotent-replayed"] for r in answers) == ["false", "true", "true", "true"]
    listed = requests.get(
        f"{s.api}/exports", params={"site_id": "demo"}, headers={"X-API-Key": key}, timeout=10
    )
    assert listed.json()["total"] == 1


# --- the rules, on a real database ----------------------------------------------------------------


def test_a_request_that_dies_after_making_its_job_is_answered_by_that_job(tmp_path: Path) -> None:
    from sealexports.errors import Conflict
    from sealexports.jobs.idempotency import run_once
    from sealexports.storage.accounts import create_site

    conn = connect(tmp_path / "k.db")
    account = create_site(conn, "s").account.id
    calls: list[str] = []

    def dies_after_its_job(made: Any) -> tuple[str, str]:
        calls.append("first")
        made("job-1")
        raise SystemExit("the process dies")

    with pytest.raises(SystemExit):
        run_once(conn, account, "k", "print", dies_after_its_job, wait_seconds=1, stale_seconds=3600)

    def second(made: Any) -> tuple[str, str]:
        calls.append("second")
        made("job-2")
        return "job-2", "{}"

    # While the first might still be running: wait, then 409.
    with pytest.raises(Conflict):
        run_once(conn, account, "k", "print", second, wait_seconds=0.1, stale_seconds=3600)
    # Once it is surely dead: its job, no second one.
    out = run_once(conn, account, "k", "print", second, wait_seconds=0.1, stale_seconds=0)
    assert (out.job_id, out.response, out.replayed) == ("job-1", None, True)
    assert calls == ["first"]

    # A request that dies before making anything leaves the key free.
    def refused(made: Any) -> tuple[str, str]:
        raise ValueError("refused")

    with pytest.raises(ValueError):
        run_once(conn, account, "k2", "print", refused, wait_seconds=0.1, stale_seconds=3600)
    assert (
        run_once(conn, account, "k2", "print", second, wait_seconds=0.1, stale_seconds=3600).job_id == "job-2"
    )
    conn.close()
