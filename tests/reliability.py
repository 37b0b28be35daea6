"""Shared by the crash and storage-failure tests: a database with big raw exports, and checks
that read the truth (export_jobs, the exports folder, the bytes) rather than the API's word."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests

from sealexports.exports import engine
from sealexports.jobs.runner import request_for
from sealexports.storage import export_jobs
from sealexports.storage.accounts import create_key, get_site
from sealexports.storage.database import connect, transaction
from sealexports.storage.visits import insert_visits
from tests.conftest import DemoDB, seed_demo

RUNNING = ("pending", "estimating", "generating")


@dataclasses.dataclass(frozen=True)
class Seeded:
    demo: DemoDB
    key: str
    microconversions: int

    def copy(self, folder: Path) -> Path:
        """A copy of the seeded database, as folder/sealexports.db, for one test to change."""
        db = folder / "sealexports.db"
        shutil.copyfile(self.demo.path, db)
        return db


def seed_heavy(path: Path, *, visits: int = 15_000, days: int = 20, repeat: int = 20) -> Seeded:
    """A demo site on the enterprise plan whose raw microconversions export is big enough to take
    a noticeable time: the demo's
    visits that have microconversions are inserted again (through the normal ingestion path, so
    the estimate catalog stays right), each with its microconversions `repeat` times."""
    demo = seed_demo(path, visits=visits, days=days)
    conn = connect(path)
    try:
        site = get_site(conn, "demo")
        heavy = [
            dataclasses.replace(
                v, pages=v.pages[:1], conversions=[], microconversions=v.microconversions * repeat
            )
            for v in demo.visits
            if v.microconversions
        ]
        with transaction(conn):
            insert_visits(conn, site, heavy)
            conn.execute("UPDATE accounts SET plan = 'enterprise' WHERE id = ?", [site.account.id])
        conn.execute("ANALYZE")
        micro = conn.execute("SELECT COUNT(*) FROM microconversions").fetchone()[0]
        key = create_key(conn, "demo", "reliability")
    finally:
        conn.close()
    return Seeded(demo, key, micro)


def body(
    demo: DemoDB, export_type: str, fmt: str = "csv", filters: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "export_type": export_type,
        "format": fmt,
        "date_from": str(demo.date_from),
        "date_to": str(demo.date_to),
        "filters": filters or {},
    }


def post_export(api: str, key: str, data: dict[str, Any], timeout: float = 30) -> requests.Response:
    return requests.post(
        f"{api}/exports", params={"site_id": "demo"}, headers={"X-API-Key": key}, json=data, timeout=timeout
    )


def get_job(api: str, key: str, job_id: str) -> dict[str, Any]:
    r = requests.get(
        f"{api}/exports/{job_id}", params={"site_id": "demo"}, headers={"X-API-Key": key}, timeout=10
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def all_jobs(db: Path) -> list[export_jobs.JobRecord]:
    """Every job, read straight from the database (what the server says is not the test)."""
    conn = connect(db, migrate=False)
    try:
        return export_jobs.jobs_in(conn, tuple(export_jobs.Status))
    finally:
        conn.close()


def wait_settled(db: Path, timeout: float) -> list[export_jobs.JobRecord]:
    """Wait until no job is pending, estimating or generating; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = all_jobs(db)
        active = [j for j in jobs if j.status in RUNNING]
        if not active:
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(
                f"jobs still unfinished after {timeout}s: {[(j.job_id, j.status) for j in active]}"
            )
        time.sleep(0.2)


class Expected:
    """sha256 and size of a fresh `engine.chunks` for each job's request, computed once per request."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self._cache: dict[tuple[str, ...], tuple[str, int]] = {}

    def __call__(self, job: export_jobs.JobRecord) -> tuple[str, int]:
        k = (job.export_type, job.format, job.date_from, job.date_to, job.filters)
        if k not in self._cache:
            conn = connect(self.db, migrate=False)
            try:
                self._cache[k] = digest(engine.chunks(conn, request_for(job)))
            finally:
                conn.close()
        return self._cache[k]


def digest(chunks: Iterable[bytes]) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    for chunk in chunks:
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def file_digest(path: Path) -> tuple[str, int]:
    with open(path, "rb") as f:
        return digest(iter(lambda: f.read(1 << 20), b""))


def download(url: str) -> tuple[int, tuple[str, int]]:
    """(status, (sha256, size) of the body); the body is checked against Content-Length."""
    with requests.get(url, stream=True, timeout=30) as r:
        got = digest(r.iter_content(1 << 20))
        if r.status_code == 200:
            assert int(r.headers["content-length"]) == got[1]
        return r.status_code, got


def temp_files(exports_dir: Path) -> list[str]:
    return sorted(p.name for p in exports_dir.glob(".*.tmp")) if exports_dir.is_dir() else []


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()
