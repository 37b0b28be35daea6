"""Two tenants in one database, for the isolation tests (tests/test_isolation.py, and the sites
API's in tests/test_sites_api.py): account "demo" and account "rival-co", each with sites, a key,
a completed and a pending job; and what one may tell apart from another's answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx

from sealexports.storage.accounts import create_site
from tests.apps import Api, ApiFactory, Template
from tests.conftest import seed_demo

SYNC_LIMIT = 50  # devices (3 rows) completes at once; pages (1,000+ rows) stays pending (no workers)


@dataclass
class Tenant:
    account: str
    key: str
    sites: list[str]  # the first one has data and the jobs
    completed: dict[str, Any] = field(default_factory=dict)
    pending: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    @property
    def token(self) -> str:
        return str(self.completed["download_url"]).rsplit("/", 1)[1]

    def secrets(self) -> set[str]:
        """What nobody else may ever see: ids, tokens, names."""
        jobs = (self.completed, self.pending)
        return {self.account, *self.sites, *(j["job_id"] for j in jobs), self.token}


@dataclass
class World:
    api: Api
    a: Tenant
    b: Tenant


def _add_jobs(api: Api, tenant: Tenant, fmt: str) -> None:
    site, headers = tenant.sites[0], tenant.headers
    tenant.completed = api.created(api.body("devices", format=fmt), site_id=site, headers=headers)["job"]
    tenant.pending = api.created(api.body("pages"), site_id=site, headers=headers)["job"]
    assert (tenant.completed["status"], tenant.pending["status"]) == ("completed", "pending")


def build_world(make: ApiFactory, template: Template, **settings: Any) -> World:
    """Account "demo" (sites demo, demo-blog) and account "rival-co" (sites rival, rival-blog),
    each site of the first pair holding data over the same days."""
    api = make(template, run_workers=False, sync_row_limit=SYNC_LIMIT, **settings)
    end = date.fromisoformat(api.date_to)
    seed_demo(api.settings.database, site_id="rival", visits=1500, days=10, end=end, seed=11)
    with api.conn() as conn:
        conn.execute("UPDATE accounts SET name = 'rival-co' WHERE name = 'rival'")
        create_site(conn, "rival-blog", account="rival-co")
        create_site(conn, "demo-blog", account="demo")
    b_key = make.add_site(api, "rival-shop", account="rival-co")  # a key for the rival account
    a = Tenant("demo", api.key, ["demo", "demo-blog"])
    b = Tenant("rival-co", b_key, ["rival", "rival-blog", "rival-shop"])
    _add_jobs(api, a, "csv")
    _add_jobs(api, b, "json")
    return World(api, a, b)


def canonical(r: httpx.Response, sent: str, placeholder: str) -> tuple[Any, ...]:
    """What a caller can tell apart: status, header names, body (but for the identifier it sent
    and the request id)."""
    text = r.text.replace(r.headers.get("x-request-id", "\0"), "<rid>").replace(sent, placeholder)
    names = sorted(k for k in r.headers if not k.startswith("x-ratelimit"))
    return r.status_code, names, r.headers.get("content-type"), text


def assert_nothing_leaks(r: httpx.Response, secrets: set[str], sent: str) -> None:
    """Neither body nor headers carry another tenant's identifiers, except what the caller sent."""
    seen = r.text + "".join(f"{k}:{v}" for k, v in r.headers.items())
    leaked = sorted(s for s in secrets if s in seen and s not in sent)
    assert not leaked, (r.request.method, str(r.request.url), leaked, r.text[:300])
