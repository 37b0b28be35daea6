"""Recurring exports, with time driven by the test: runs at the right local time across DST
changes (checked against UTC instants written out by hand), once after missed slots, once among
several processes; deliver_to_dir; the CLI and the API."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from sealexports.cli import cli
from sealexports.config import Settings
from sealexports.jobs.leases import Lease
from sealexports.jobs.runner import run_next
from sealexports.schedules import cadence, ranges, runs
from sealexports.storage import accounts, export_jobs
from sealexports.storage import schedules as store
from sealexports.storage.database import connect
from sealexports.tokens import DownloadTokens
from sealexports.webhooks import endpoints
from tests.apps import ApiFactory, Template
from tests.checks import assert_cli_error, assert_error
from tests.receiver import receiving

MADRID = ZoneInfo("Europe/Madrid")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def runs_from(c: cadence.Cadence, start: str, count: int, tz: ZoneInfo = MADRID) -> list[str]:
    out, at = [], utc(start)
    for _ in range(count):
        at = c.next_run(at, tz)
        out.append(at.strftime("%Y-%m-%dT%H:%M"))
    return out


# Europe/Madrid, 2026: clocks go 02:00 CET -> 03:00 CEST on March 29, 03:00 CEST -> 02:00 CET on
# October 25. CET is UTC+1, CEST UTC+2.
@pytest.mark.parametrize(
    ("every", "at", "day", "start", "expected"),
    [
        (
            "daily",
            "06:00",
            None,
            "2026-03-27T12:00",
            ["2026-03-28T05:00", "2026-03-29T04:00", "2026-03-30T04:00"],
        ),
        # 02:30 does not exist on March 29: the first instant after the gap, 03:00 CEST.
        (
            "daily",
            "02:30",
            None,
            "2026-03-27T12:00",
            ["2026-03-28T01:30", "2026-03-29T01:00", "2026-03-30T00:30"],
        ),
        # 02:30 happens twice on October 25: once, the first time (CEST).
        (
            "daily",
            "02:30",
            None,
            "2026-10-23T12:00",
            ["2026-10-24T00:30", "2026-10-25T00:30", "2026-10-26T01:30"],
        ),
        ("daily", "00:00", None, "2026-10-24T21:00", ["2026-10-24T22:00", "2026-10-25T23:00"]),
        ("weekly", "07:30", "mon", "2026-03-20T00:00", ["2026-03-23T06:30", "2026-03-30T05:30"]),
        (
            "monthly",
            "06:00",
            "31",
            "2026-01-15T00:00",
            ["2026-01-31T05:00", "2026-02-28T05:00", "2026-03-31T04:00"],
        ),
    ],
)
def test_next_runs_are_local_wall_times_across_dst(
    every: str, at: str, day: str | None, start: str, expected: list[str]
) -> None:
    assert runs_from(cadence.parse(every, at, day), start, len(expected)) == expected


def test_ranges_are_local_days_before_the_run() -> None:
    today = date(2026, 3, 4)  # a Wednesday
    got = {name: tuple(d.isoformat() for d in ranges.dates(name, today)) for name in ranges.RANGES}
    assert got == {
        "yesterday": ("2026-03-03", "2026-03-03"),
        "last_7_days": ("2026-02-25", "2026-03-03"),
        "last_30_days": ("2026-02-02", "2026-03-03"),
        "previous_week": ("2026-02-23", "2026-03-01"),
        "previous_month": ("2026-02-01", "2026-02-28"),
        "month_to_date": ("2026-03-01", "2026-03-04"),
    }


@pytest.fixture
def db(small: Template, tmp_path: Path) -> Path:
    path = tmp_path / "sched.db"
    shutil.copyfile(small.path, path)
    conn = connect(path)
    conn.execute("UPDATE accounts SET plan = 'enterprise'")  # runs pile up: no worker runs them here
    conn.close()
    return path


def settings(db: Path, tmp_path: Path) -> Settings:
    return Settings(database=db, exports_dir=tmp_path / "exports")


def test_a_daily_schedule_fires_at_local_time_across_the_spring_change(db: Path, tmp_path: Path) -> None:
    conn = connect(db)
    site = accounts.get_site(conn, "demo")
    assert site.timezone == "Europe/Madrid"
    start = utc("2026-03-27T12:00").timestamp()
    runs.add(conn, site, export_type="sources", range_name="yesterday", every="daily", at="02:30", now=start)
    fired: list[tuple[str, str]] = []
    now = start
    while now < utc("2026-03-31T00:00").timestamp():  # every 5 minutes: the clock, driven
        for job_id in runs.fire_due(conn, settings(db, tmp_path), now):
            fired.append((datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M"), job_id))
        now += 300
    assert [t for t, _ in fired] == ["2026-03-28T01:30", "2026-03-29T01:00", "2026-03-30T00:30"]
    local = [
        datetime.fromisoformat(t).replace(tzinfo=UTC).astimezone(MADRID).strftime("%H:%M") for t, _ in fired
    ]
    assert local == ["02:30", "03:00", "02:30"]
    jobs = [export_jobs.get_job(conn, job_id) for _, job_id in fired]
    assert [(j.date_from, j.date_to, j.status) for j in jobs] == [
        ("2026-03-27", "2026-03-27", "pending"),
        ("2026-03-28", "2026-03-28", "pending"),
        ("2026-03-29", "2026-03-29", "pending"),
    ]
    conn.close()


def test_missed_runs_run_once_and_one_process_starts_each(db: Path, tmp_path: Path) -> None:
    conn, other = connect(db), connect(db)
    site = accounts.get_site(conn, "demo")
    start = utc("2026-06-01T00:00").timestamp()
    schedule = runs.add(conn, site, export_type="pages", range_name="last_7_days", every="daily", at="06:00",
                        now=start)  # fmt: skip
    later = utc("2026-06-06T10:00").timestamp()  # five slots missed while down
    first = runs.fire_due(conn, settings(db, tmp_path), later)
    assert len(first) == 1
    assert runs.fire_due(other, settings(db, tmp_path), later) == []  # another process: nothing left
    assert store.claim_slot(other, schedule, later, later + 1) is None  # a stale view cannot claim
    after = store.get_schedule(conn, schedule.schedule_id)
    assert datetime.fromtimestamp(after.next_run_at, UTC) == utc("2026-06-07T04:00")
    job = export_jobs.get_job(conn, first[0])
    assert (job.date_from, job.date_to) == ("2026-05-30", "2026-06-05")
    conn.close()
    other.close()


def test_deliver_to_dir_copies_the_file_and_its_manifest(db: Path, tmp_path: Path) -> None:
    conn = connect(db)
    site = accounts.get_site(conn, "demo")
    out = tmp_path / "out"
    out.mkdir()
    s = settings(db, tmp_path)
    s.exports_dir.mkdir()
    schedule = runs.add(conn, site, export_type="countries", fmt="json", compression="gzip",
                        range_name="last_30_days", every="weekly", day="fri", at="08:00",
                        deliver_to_dir=str(out))  # fmt: skip
    run = runs.run_now(conn, s, schedule)
    assert run.job_id is not None
    assert runs.deliver_files(conn, s, "me") == 0  # not completed yet
    assert run_next(conn, s.exports_dir, DownloadTokens("x" * 32, 3600), Lease(30)) == run.job_id
    job = export_jobs.get_job(conn, run.job_id)
    assert job.status == "completed"
    assert runs.deliver_files(conn, s, "me") == 1
    assert runs.deliver_files(conn, s, "me") == 0  # once
    files = sorted(p.name for p in out.iterdir())
    name = f"sealmetrics_countries_{job.date_from.replace('-', '')}_{job.date_to.replace('-', '')}.json.gz"
    assert files == [name, f"{name}.manifest.json"]
    data = (out / name).read_bytes()
    assert data == (s.exports_dir / (job.file_name or "")).read_bytes()
    assert isinstance(json.loads(gzip.decompress(data)), list)
    meta = json.loads((out / f"{name}.manifest.json").read_text())
    assert hashlib.sha256(data).hexdigest() in json.dumps(meta) and str(len(data)) in json.dumps(meta)
    conn.close()


def invoke(db: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=False)


def test_cli_add_prints_only_the_id_and_manages_schedules(db: Path, tmp_path: Path) -> None:
    r = invoke(db, "schedules", "add", "--site", "demo", "--type", "sources", "--range", "last_7_days",
               "--every", "daily", "--at", "06:00", "--filter", "country=ES", "--format", "json",
               "--compress", "zstd")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert re.fullmatch(r"sch_[0-9a-f]{12}\n", r.stdout)
    schedule_id = r.stdout.strip()
    listed = invoke(db, "schedules", "list").stdout
    assert schedule_id in listed and "daily at 06:00" in listed and re.search(r" 06:00 CES?T ", listed)
    job = invoke(db, "schedules", "run-now", schedule_id)
    assert job.exit_code == 0 and re.fullmatch(r"[0-9a-f-]{36}\n", job.stdout)
    conn = connect(db)
    made = export_jobs.get_job(conn, job.stdout.strip())
    assert (made.export_type, made.format, made.compression, made.status) == (
        "sources",
        "json",
        "zstd",
        "pending",
    )
    assert json.loads(made.filters) == {"country": "ES"}
    assert invoke(db, "schedules", "remove", schedule_id).exit_code == 0
    assert store.list_schedules(conn) == []
    conn.close()
    base = ["schedules", "add", "--site", "demo", "--type", "sources", "--range", "yesterday"]
    assert_cli_error(invoke(db, *base, "--every", "daily", "--at", "25:00"), "HH:MM")
    assert_cli_error(invoke(db, *base, "--every", "weekly", "--at", "06:00"), "weekly schedule needs a day")
    assert_cli_error(invoke(db, *base, "--every", "monthly", "--at", "06:00", "--day", "32"), "1 to 31")
    assert_cli_error(
        invoke(db, *base, "--every", "daily", "--at", "06:00", "--filter", "colour=red"), "colour"
    )
    assert_cli_error(
        invoke(db, *base, "--every", "daily", "--at", "06:00", "--deliver-to-dir", str(tmp_path / "nope")),
        "deliver_to_dir",
    )
    assert_cli_error(invoke(db, "schedules", "remove", "sch_nope"), "'sch_nope' not found")
    conn = connect(db)
    assert store.list_schedules(conn) == []  # nothing half-written
    conn.close()


def test_api_manages_a_sites_schedules(make: ApiFactory, small: Template, tmp_path: Path) -> None:
    api = make(small)
    url = "/api/v1/schedules"
    params = {"site_id": small.site_id}
    body = {"export_type": "pages", "range": "previous_month", "every": "monthly", "day": 1, "at": "07:00"}
    r = api.client.post(url, params=params, json=body, headers=api.headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["next_run_local"].endswith(("07:00:00+01:00", "07:00:00+02:00"))
    assert created["next_run_local"][8:10] == "01" and created["compression"] == "none"
    assert api.client.get(url, params=params, headers=api.headers).json()["schedules"] == [created]
    refused = {**body, "deliver_to_dir": str(tmp_path)}
    assert_error(api.client.post(url, params=params, json=refused, headers=api.headers), 422, "operator")
    assert_error(
        api.client.post(url, params=params, json={**body, "range": "last_year"}, headers=api.headers), 422
    )
    other = make.add_site(api, "elsewhere")
    assert_error(api.client.get(url, params=params, headers={"X-API-Key": other}), 404)
    run = api.client.post(f"{url}/{created['id']}/run", params=params, headers=api.headers)
    assert run.status_code == 202, run.text
    job, _ = api.wait(run.json()["job_id"])
    assert job["status"] == "completed" and job["export_type"] == "pages"
    assert api.client.delete(f"{url}/{created['id']}", params=params, headers=api.headers).status_code == 204
    assert api.client.get(url, params=params, headers=api.headers).json() == {"schedules": []}


def test_a_schedule_missed_while_down_runs_once_at_start_with_its_webhook_and_folder(
    make: ApiFactory, small: Template, tmp_path: Path
) -> None:
    """End to end in the app: the dispatcher starts the overdue run once, a worker generates it,
    the webhook goes out and the file lands in the folder."""
    out = tmp_path / "drop"
    out.mkdir()
    database = make.database(small)
    conn = connect(database)
    site = accounts.get_site(conn, small.site_id)
    conn.execute("UPDATE accounts SET plan = 'enterprise'")
    week_ago = datetime.now(UTC).timestamp() - 7 * 86400
    schedule = runs.add(conn, site, export_type="devices", range_name="yesterday", every="daily", at="06:00",
                        deliver_to_dir=str(out), now=week_ago)  # fmt: skip
    with receiving() as rx:
        endpoints.add(
            conn, Settings(database=database, webhooks_allow_private=True), site.account.id, rx.url, None
        )
        api = make(small, webhooks_allow_private=True)
        (got,) = rx.wait_for(1)
        job_id = json.loads(got.body)["data"]["job"]["job_id"]
        job, _ = api.wait(job_id)
        for _ in range(100):
            if len(list(out.iterdir())) == 2:
                break
            time.sleep(0.05)
    made = store.runs_of(conn, schedule)
    assert [r.job_id for r in made] == [job_id]  # seven missed slots, one run
    assert job["status"] == "completed" and got.headers["X-Sealexports-Event"] == "export.completed"
    assert sorted(p.suffix for p in out.iterdir()) == [".csv", ".json"]
    after = store.get_schedule(conn, schedule.schedule_id)
    assert after.next_run_at > datetime.now(UTC).timestamp()
    conn.close()
