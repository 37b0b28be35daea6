"""Helpers for driving the real HTTP app: a seeded database copy, the app built by `create_app`,
a `TestClient` whose lifespan runs the real huey consumer, and small wrappers for the calls."""

from __future__ import annotations

import builtins
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from litestar.testing import TestClient

from sealexports.api.app import create_app
from sealexports.config import Settings
from sealexports.exports import engine
from sealexports.exports.request import build_request
from sealexports.storage.accounts import create_key, create_site, get_site
from sealexports.storage.database import connect

BASE = "http://testserver.local"
API = "/api/v1/exports"
JOB_FIELDS = {
    "id", "job_id", "site_id", "export_type", "format", "compression", "date_from", "date_to", "filters",
    "status", "estimated_rows", "actual_rows", "file_size_bytes", "file_size_human", "progress_percent",
    "download_url", "download_expires_at", "started_at", "completed_at", "created_at", "error_message",
}  # fmt: skip
ESTIMATE_FIELDS = {
    "estimated_rows", "estimated_size_bytes", "estimated_size_human", "recommended_format",
    "will_use_background_job", "estimated_duration_seconds", "warnings",
}  # fmt: skip
# A template site has 1,319 page rows: over the low limits the tests set, and with a thousands separator.
BIG_EXPORT = "pages"
TERMINAL = ("completed", "failed", "expired")
RUNNING = ("pending", "estimating", "generating")
POLL_SECONDS = 0.01
# Five regexes (the most a request may have) that keep every row but backtrack on each path for
# about 0.1 ms: a second or so per 2,000-row chunk of the big template, so a job is seen while
# it runs, and a regex-heavy query outlasts a short deadline.
SLOW_FILTERS = {
    "advanced_filters": ",".join(f"path:not_regex:(.*[-/]){{5}}[A-Z]{{{i}}}" for i in range(1, 6))
}


@dataclass(frozen=True)
class Template:
    """A seeded database file to copy: each test gets its own database."""

    path: Path
    site_id: str
    date_from: str
    date_to: str


@dataclass
class Api:
    client: TestClient[Any]
    settings: Settings
    key: str
    site_id: str
    date_from: str
    date_to: str
    other: dict[str, str] = field(default_factory=dict)  # other sites: site_id -> key
    closed: bool = False

    def close(self) -> None:
        """Stop the app (its lifespan stops the huey consumer); idempotent."""
        if not self.closed:
            self.closed = True
            self.client.__exit__(None, None, None)

    # --- plumbing ---------------------------------------------------------------------------------

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    @contextmanager
    def conn(self) -> Iterator[sqlite3.Connection]:
        conn = connect(self.settings.database, migrate=False)
        try:
            yield conn
        finally:
            conn.close()

    def body(self, export_type: str = "sources", **extra: Any) -> dict[str, Any]:
        """A request body over the whole seeded range."""
        return {"export_type": export_type, "date_from": self.date_from, "date_to": self.date_to, **extra}

    def params(self, site_id: str | None, **extra: Any) -> dict[str, Any]:
        return {"site_id": site_id or self.site_id, **extra}

    # --- the endpoints ----------------------------------------------------------------------------

    def create(self, body: dict[str, Any], site_id: str | None = None, **kw: Any) -> httpx.Response:
        kw.setdefault("headers", self.headers)
        return self.client.post(API, params=self.params(site_id), json=body, **kw)

    def estimate(self, body: dict[str, Any], site_id: str | None = None, **kw: Any) -> httpx.Response:
        kw.setdefault("headers", self.headers)
        return self.client.post(f"{API}/estimate", params=self.params(site_id), json=body, **kw)

    def stream(self, body: dict[str, Any], site_id: str | None = None, **kw: Any) -> httpx.Response:
        kw.setdefault("headers", self.headers)
        return self.client.post(f"{API}/stream", params=self.params(site_id), json=body, **kw)

    def get_job(self, job_id: str, site_id: str | None = None, **kw: Any) -> httpx.Response:
        kw.setdefault("headers", self.headers)
        return self.client.get(f"{API}/{job_id}", params=self.params(site_id), **kw)

    def list(
        self, site_id: str | None = None, headers: dict[str, str] | None = None, **q: Any
    ) -> httpx.Response:
        headers = self.headers if headers is None else headers
        return self.client.get(API, params=self.params(site_id, **q), headers=headers)

    def delete(self, job_id: str, site_id: str | None = None, **kw: Any) -> httpx.Response:
        kw.setdefault("headers", self.headers)
        return self.client.delete(f"{API}/{job_id}", params=self.params(site_id), **kw)

    def download(self, url: str) -> httpx.Response:
        """Follow a download_url (absolute, on public_url) without any credentials."""
        assert url.startswith(BASE + API + "/download/"), url
        return self.client.get(url.removeprefix(BASE))

    # --- conveniences -----------------------------------------------------------------------------

    def created(self, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        r = self.create(body, **kw)
        assert r.status_code == 201, r.text
        created: dict[str, Any] = r.json()
        return created

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.get_job(job_id)
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        return job

    def wait(
        self,
        job_id: str,
        until: Callable[[dict[str, Any]], bool] = lambda j: j["status"] in TERMINAL,
        timeout: float = 20.0,
    ) -> tuple[dict[str, Any], builtins.list[dict[str, Any]]]:  # builtins: Api.list is a method
        """Poll GET /exports/{job_id} until `until(job)`; the last job and every job seen."""
        seen: builtins.list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            seen.append(job)
            if until(job):
                return job, seen
            assert time.monotonic() < deadline, f"job never got there; last seen: {job}"
            # Quick polls at first (to see short states), then gentler ones (rate limits).
            time.sleep(POLL_SECONDS if len(seen) < 100 else 0.1)

    def offline_bytes(self, body: dict[str, Any], site_id: str | None = None) -> bytes:
        """What the offline engine writes for the same request."""
        req = build_request(
            site_id or self.site_id,
            body["export_type"],
            body.get("format"),
            body["date_from"],
            body["date_to"],
            body.get("filters"),
            compression=body.get("compression"),
        )
        with self.conn() as conn:
            return b"".join(engine.chunks(conn, req))

    def files(self) -> builtins.list[str]:
        """Every entry of the exports directory, hidden temporary files included."""
        return sorted(p.name for p in self.settings.exports_dir.iterdir())


def count_rows(path: Path, site_id: str, body: dict[str, Any]) -> int:
    """The row count the server's estimate gives for `body` (to set limits around it)."""
    req = build_request(
        site_id,
        body["export_type"],
        body.get("format"),
        body["date_from"],
        body["date_to"],
        body.get("filters"),
    )
    conn = connect(path, migrate=False)
    try:
        return engine.count_estimate(conn, req)
    finally:
        conn.close()


class ApiFactory:
    """Builds apps on fresh copies of a template database; closes every client at teardown."""

    def __init__(self, tmp_path: Path, stack: ExitStack) -> None:
        self.tmp_path = tmp_path
        self.stack = stack

    def database(self, template: Template) -> Path:
        """A private copy of the template, made once per test."""
        path = self.tmp_path / "sealexports.db"
        if not path.exists():
            shutil.copyfile(template.path, path)
        return path

    def __call__(
        self,
        template: Template,
        *,
        run_workers: bool | None = None,
        plan: str | None = None,
        **overrides: Any,
    ) -> Api:
        database = self.database(template)
        overrides.setdefault("public_url", BASE)
        settings = Settings(database=database, exports_dir=self.tmp_path / "exports", **overrides)
        conn = connect(database)
        try:
            if plan is not None:
                conn.execute(
                    "UPDATE accounts SET plan = ? "
                    "WHERE id = (SELECT account_id FROM sites WHERE site_id = ?)",
                    [plan, template.site_id],
                )
            # Account-wide, as every key was before keys could be bound to one site.
            key = create_key(conn, account=get_site(conn, template.site_id).account.name)
        finally:
            conn.close()
        client: TestClient[Any] = TestClient(create_app(settings, run_workers=run_workers), base_url=BASE)
        client.__enter__()
        api = Api(client, settings, key, template.site_id, template.date_from, template.date_to)
        self.stack.callback(api.close)
        return api

    def add_site(self, api: Api, site_id: str, *, account: str | None = None, plan: str | None = None) -> str:
        """Another site (of a new account unless `account` is given); returns a key for it."""
        with api.conn() as conn:
            site = create_site(conn, site_id, account=account, plan=plan)
            key = create_key(conn, account=site.account.name)
        api.other[site_id] = key
        return key


class _ErrorLog(logging.Handler):
    """Collects error records from every thread (request handlers and huey workers alike)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def apps_logging_no_errors(tmp_path: Path) -> Iterator[ApiFactory]:
    """An ApiFactory whose apps, once they have stopped, must have logged no error (a 500, or a
    background export that failed: its traceback goes to the log, not to a body)."""
    errors = _ErrorLog()
    logger = logging.getLogger("sealexports")
    logger.addHandler(errors)
    try:
        with ExitStack() as stack:
            yield ApiFactory(tmp_path, stack)
    finally:
        logger.removeHandler(errors)
    assert not errors.records, [f"{r.name}: {r.getMessage()} {r.exc_text or ''}" for r in errors.records]
