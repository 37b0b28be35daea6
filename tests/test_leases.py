"""Several processes on one database: leases, takeover after a crash, and the fair claim.

Real `serve` and `sealexports worker` processes, SIGKILL, and a real huey consumer; the truth is
read from export_jobs and the exports folder, and every file is compared with a fresh
`engine.chunks` of its job's request."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sealexports.config import Settings
from sealexports.exports import engine
from sealexports.exports.request import build_request
from sealexports.jobs import lifecycle
from sealexports.jobs.queue import JobQueue
from sealexports.jobs.runner import reclaim
from sealexports.storage import accounts, export_jobs
from sealexports.storage.database import connect
from sealexports.tokens import DownloadTokens
from tests import live
from tests.conftest import DemoDB, say
from tests.reliability import (
    Expected,
    Seeded,
    all_jobs,
    body,
    file_digest,
    post_export,
    seed_heavy,
    temp_files,
    wait_settled,
)

LEASE = 3  # seconds: short, so that a takeover is quick
ENV = {
    "SEALEXPORTS_SYNC_ROW_LIMIT": "100",
    "SEALEXPORTS_WORKERS": "2",
    "SEALEXPORTS_JOB_LEASE_SECONDS": str(LEASE),
}
SLOW = {"advanced_filters": "path:not_regex:^/nowhere/"}  # SQLite calls Python's regex on every row


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed_heavy(tmp_path_factory.mktemp("leases-template") / "leases.db")


def wait_for(what: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.02)


def generating_of(db: Path, pid: int) -> list[export_jobs.JobRecord]:
    """Jobs generating under a lease of process `pid` (owner ids are host:pid:random)."""
    return [j for j in all_jobs(db) if j.status == "generating" and owner_pid(j) == pid]


def check_all_completed(db: Path, exports: Path) -> list[export_jobs.JobRecord]:
    jobs = wait_settled(db, timeout=90)
    expected = Expected(db)
    for job in jobs:
        assert job.status == "completed", job
        assert job.file_name is not None
        assert file_digest(exports / job.file_name) == expected(job) == (job.sha256, job.file_size_bytes)
    assert temp_files(exports) == []
    assert {p.name for p in exports.iterdir()} == {j.file_name for j in jobs}
    return jobs


def test_second_serve_leaves_the_first_ones_running_jobs_alone(template: Seeded, tmp_path: Path) -> None:
    """A second `serve` on the same file used to put the first one's running jobs back to
    pending (running them twice) and delete their temporary files at its start."""
    db = template.copy(tmp_path)
    exports = tmp_path / "exports"
    first = live.start(db, tmp_path, env=ENV)
    second = None
    try:  # (both servers are stopped whatever fails)
        for _ in range(2):
            r = post_export(first.api, template.key, body(template.demo, "microconversions", "json", SLOW))
            assert r.status_code == 201, r.text
        wait_for(lambda: len(generating_of(db, first.process.pid)) == 2, 30, "the first serve runs no export")
        wait_for(lambda: len(temp_files(exports)) == 2, 30, "no temporary files")
        before = {j.job_id: j for j in generating_of(db, first.process.pid)}
        temps = temp_files(exports)
        second = live.start(db, tmp_path, env=ENV)
        time.sleep(LEASE / 3 + 0.5)  # one lease check of the second process
        now = {j.job_id: j for j in all_jobs(db)}
        for job_id, job in before.items():
            if now[job_id].status == "generating":  # (or it has completed meanwhile)
                assert now[job_id].lease_owner == job.lease_owner
            assert now[job_id].status in ("generating", "completed"), now[job_id]
            assert now[job_id].attempts == 1
        for name in temps:  # the first one's temporary files are still being written
            if now[name[1:].split(".")[0]].status == "generating":
                assert (exports / name).is_file(), name
        jobs = check_all_completed(db, exports)
        assert all(j.attempts == 1 for j in jobs), [(j.job_id, j.attempts) for j in jobs]
    finally:
        first.stop(signal.SIGTERM)
        if second is not None:
            second.stop(signal.SIGTERM)


def test_sigkilled_workers_jobs_are_taken_over_after_the_lease(
    template: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """serve (no workers of its own) + two `sealexports worker` processes share the work; one
    worker is SIGKILLed mid-export: the other takes its jobs over once their lease has run out."""
    db = template.copy(tmp_path)
    exports = tmp_path / "exports"
    server = live.start(db, tmp_path, env={**ENV, "SEALEXPORTS_WORKERS": "0"})
    workers: list[live.Worker] = []
    codes: list[int] = []
    try:
        workers += [live.start_worker(db, tmp_path, env=ENV) for _ in range(2)]
        for export_type, fmt, filters in [
            ("microconversions", "json", SLOW),
            ("microconversions", "csv", SLOW),
        ] * 2:
            r = post_export(server.api, template.key, body(template.demo, export_type, fmt, filters))
            assert r.status_code == 201, r.text
        victim, survivor = workers
        wait_for(lambda: generating_of(db, victim.process.pid) != [], 30, "the worker to kill runs nothing")
        taken = {j.job_id for j in generating_of(db, victim.process.pid)}
        victim.stop(signal.SIGKILL)
        killed_at = time.monotonic()

        def taken_over() -> bool:
            jobs = {j.job_id: j for j in all_jobs(db)}
            return all(
                jobs[j].status == "completed" or owner_pid(jobs[j]) not in (None, victim.process.pid)
                for j in taken
            )

        wait_for(taken_over, LEASE * 4 + 10, "the killed worker's jobs were not taken over")
        took = time.monotonic() - killed_at
        jobs = check_all_completed(db, exports)
        by_id = {j.job_id: j for j in jobs}
        assert all(by_id[j].attempts == 2 for j in taken)
        log = survivor.log.read_text() + server.log.read_text()
        assert "lease of" in log
    finally:  # every process ends, whatever failed above
        for w in workers:
            if w.process.poll() is None:
                codes.append(w.stop(signal.SIGTERM))
        server.stop(signal.SIGTERM)
    assert all(code in (0, -signal.SIGTERM) for code in codes), codes
    say(
        capsys,
        f"leases: {len(taken)} job(s) of a SIGKILLed worker taken over {took:.1f}s after the kill "
        f"(lease {LEASE}s); all {len(jobs)} jobs completed byte-identical",
    )


def owner_pid(job: export_jobs.JobRecord) -> int | None:
    return None if job.lease_owner is None else int(job.lease_owner.split(":")[1])


# --- the lease rules, with the time given ----------------------------------------------------------


def make_job(conn: object, demo: DemoDB, settings: Settings) -> export_jobs.JobRecord:
    site = accounts.get_site(conn, demo.site.site_id)  # type: ignore[arg-type]
    req = build_request(site.site_id, "pages", "csv", str(demo.date_from), str(demo.date_to), {})
    est = engine.estimate(conn, req, settings.sync_row_limit)  # type: ignore[arg-type]
    return lifecycle.create_job(conn, settings, site, req, est)  # type: ignore[arg-type]


def test_reclaim_takes_only_lapsed_jobs_and_their_files(demo_db: DemoDB, tmp_path: Path) -> None:
    db = tmp_path / "sealexports.db"
    shutil.copyfile(demo_db.path, db)
    exports = tmp_path / "exports"
    exports.mkdir()
    settings = Settings(database=db, exports_dir=exports)
    conn = connect(db)
    conn.execute("UPDATE accounts SET plan = 'enterprise'")
    alive, dead, legacy = (make_job(conn, demo_db, settings) for _ in range(3))
    t = 1_000_000.0
    for job, owner, until in ((alive, "h:1:a", t + 10), (dead, "h:2:b", t - 1)):
        conn.execute(
            "UPDATE export_jobs SET status = 'generating', attempts = 1, lease_owner = ?, "
            "lease_expires_at = ? WHERE job_id = ?",
            [owner, until, job.job_id],
        )
    conn.execute(
        "UPDATE export_jobs SET status = 'estimating', attempts = 1 WHERE job_id = ?", [legacy.job_id]
    )
    files = {
        name: exports / name
        for name in (f".{alive.job_id}.csv.x1.tmp", f".{dead.job_id}.csv.x2.tmp", ".stray.tmp", ".fresh.tmp")
    }
    for path in files.values():
        path.write_text("half")
    os.utime(files[".stray.tmp"], (t - 100, t - 100))
    os.utime(files[".fresh.tmp"], (t - 1, t - 1))

    back = reclaim(conn, exports, t, stray_after=30)

    assert sorted(back) == sorted([dead.job_id, legacy.job_id])
    jobs = {j.job_id: j for j in all_jobs(db)}
    assert jobs[alive.job_id].status == "generating" and jobs[alive.job_id].lease_owner == "h:1:a"
    for job_id in back:
        assert jobs[job_id].status == "pending" and jobs[job_id].lease_owner is None
    assert sorted(p.name for p in exports.iterdir()) == sorted([f".{alive.job_id}.csv.x1.tmp", ".fresh.tmp"])
    # The live owner's heartbeat keeps its job; once it stops, the job lapses too.
    assert export_jobs.renew_leases(conn, "h:1:a", t + 40) == 1
    assert reclaim(conn, exports, t + 39, stray_after=30) == []
    assert reclaim(conn, exports, t + 41, stray_after=30) == [alive.job_id]
    conn.close()


def test_fair_claim_one_accounts_queue_does_not_hold_back_another(
    template: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """2 workers; account A queues 10 background jobs, then account B queues 1: B's job starts
    before A's third (huey's own order, first in first out, would run it last). A's jobs take
    about a second each, far longer than queueing them all."""
    db = template.copy(tmp_path)
    demo = template.demo
    settings = Settings(database=db, exports_dir=tmp_path / "exports", workers=2, sync_row_limit=1)
    conn = connect(db)
    other = accounts.create_site(conn, "other", account="b", plan="enterprise")
    site_a = accounts.get_site(conn, demo.site.site_id)
    start, end = str(demo.date_from), str(demo.date_to)
    est = engine.estimate(conn, build_request(site_a.site_id, "microconversions", "csv", start, end, SLOW), 1)

    def queue_job(site: accounts.Site) -> str:
        req = build_request(site.site_id, "microconversions", "csv", start, end, SLOW)
        job = lifecycle.create_job(conn, settings, site, req, est)  # (estimated once: quick to queue)
        queue.enqueue(job.job_id)
        return job.job_id

    def started() -> dict[str, export_jobs.JobRecord]:
        return {j.job_id: j for j in all_jobs(db) if j.claimed_at is not None}

    queue = JobQueue(settings, DownloadTokens("s" * 32, 60))
    queue.start()
    try:
        a = [queue_job(site_a) for _ in range(10)]
        b = queue_job(other)
        wait_for(lambda: {b, a[2]} <= set(started()), 120, "B's job or A's third never started")
        jobs = started()
    finally:
        queue.stop()
        conn.close()
    order = sorted(jobs, key=lambda j: jobs[j].claimed_at or 0)
    names = " ".join("B" if j == b else f"A{a.index(j) + 1}" for j in order)
    assert order.index(b) < order.index(a[2]), names
    say(capsys, f"fairness: 2 workers, A queues 10 then B 1; start order {names}")
