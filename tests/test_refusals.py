"""A filtered aggregate's estimate is an upper bound; a refusal (413) or a trip to the background
is decided by the real row count, checked against the independent model (tests/model.py)."""

from __future__ import annotations

import csv
import dataclasses
import io
import sqlite3
from typing import Any

import pytest

from sealexports.config import DEFAULT_PLANS
from sealexports.errors import QueryTimeout
from sealexports.exports import engine
from sealexports.exports.request import build_request
from sealexports.storage.deadline import Deadline
from tests.apps import ApiFactory, Template
from tests.conftest import DemoDB
from tests.model import Model

# Pages of the blog: the day catalog saw ~1,900 paths in the range, the blog has ~970 of them.
BLOG = {"content_grouping": "blog"}


@pytest.fixture(scope="module")
def template(demo_db: DemoDB) -> Template:
    return Template(demo_db.path, demo_db.site.site_id, str(demo_db.date_from), str(demo_db.date_to))


@pytest.fixture(scope="module")
def counts(demo_db: DemoDB) -> tuple[int, int]:
    """(the upper bound the quick estimate gives, the real rows as the model counts them)."""
    real = len(
        Model(demo_db.visits, demo_db.site.timezone).rows("pages", demo_db.date_from, demo_db.date_to, BLOG)
    )
    conn = sqlite3.connect(demo_db.path)
    try:
        req = build_request("demo", "pages", "csv", str(demo_db.date_from), str(demo_db.date_to), BLOG)
        bound = engine.count_estimate(conn, req)
    finally:
        conn.close()
    assert bound > real * 1.5 > 0, "the case needs an estimate far over the real count"
    return bound, real


def _csv_rows(data: bytes) -> int:
    return len(list(csv.reader(io.StringIO(data.decode())))) - 1


def _body(template: Template) -> dict[str, Any]:
    return {
        "export_type": "pages",
        "date_from": template.date_from,
        "date_to": template.date_to,
        "filters": BLOG,
    }


def test_real_count_is_the_models(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, counts: tuple[int, int]
) -> None:
    bound, real = counts
    req = build_request("demo", "pages", "csv", str(demo_db.date_from), str(demo_db.date_to), BLOG)
    est = engine.estimate(demo_conn, req, 10_000)
    assert (est.estimated_rows, est.exact) == (bound, False)
    assert engine.count_rows(demo_conn, req) == real
    settled = engine.settle(demo_conn, req, est, sync_row_limit=real + 1)
    assert (settled.estimated_rows, settled.exact, settled.will_use_background_job) == (real, True, False)
    # An upper bound that decides nothing is left alone (no extra query).
    assert engine.settle(demo_conn, req, est, sync_row_limit=bound + 1) is est


def test_stream_under_the_limit_by_real_count_is_not_413(
    make: ApiFactory, template: Template, counts: tuple[int, int]
) -> None:
    """Old: 413 'too large for streaming (1,893 rows)' for an export of 972 rows, limit 973."""
    _, real = counts
    api = make(template, run_workers=False, sync_row_limit=real + 1)
    r = api.stream(_body(template))
    assert r.status_code == 200, r.text
    assert _csv_rows(r.content) == real
    # At the real count the limit refuses, and says the real count.
    api = make(template, run_workers=False, sync_row_limit=real)
    r = api.stream(_body(template))
    assert r.status_code == 413
    assert f"({real:,} rows)" in r.json()["detail"]


def test_small_export_is_made_during_the_request_not_in_the_background(
    make: ApiFactory, template: Template, counts: tuple[int, int]
) -> None:
    """Old: a pending background job for 972 rows, sync limit 973."""
    _, real = counts
    api = make(template, run_workers=False, sync_row_limit=real + 1)
    estimate = api.estimate(_body(template)).json()
    assert (estimate["estimated_rows"], estimate["will_use_background_job"]) == (real, False)
    out = api.created(_body(template))
    assert out["job"]["status"] == "completed"
    assert out["job"]["actual_rows"] == out["estimate"]["estimated_rows"] == real


@pytest.mark.parametrize(("under", "allowed"), [(0, True), (1, False)], ids=["at-real", "under-real"])
def test_plan_max_rows_decided_by_real_count(
    make: ApiFactory, template: Template, counts: tuple[int, int], under: int, allowed: bool
) -> None:
    """Old: 413 'about 1,893 rows, and the plan allows at most 972' for a 972-row export."""
    _, real = counts
    max_rows = real - under
    plans = {**DEFAULT_PLANS, "free": dataclasses.replace(DEFAULT_PLANS["free"], max_rows=max_rows)}
    api = make(template, run_workers=False, plan="free", plans=plans, sync_row_limit=real + 1)
    r = api.create(_body(template))
    if allowed:
        assert r.status_code == 201, r.text
        assert r.json()["estimate"]["estimated_rows"] == real
        assert r.json()["job"]["actual_rows"] == real
    else:
        assert r.status_code == 413, r.text
        assert f"{real:,} rows, and the plan allows at most {max_rows:,}" in r.json()["detail"]


class _RunsOutAfter(Deadline):
    """A deadline that lets `n` query blocks start and has expired after them (time injected)."""

    def __init__(self, n: int) -> None:
        super().__init__(60, "too slow")
        self.left = n

    def expired(self) -> bool:
        return self.left < 0

    def running(self, conn: sqlite3.Connection):  # type: ignore[no-untyped-def]
        self.left -= 1
        return super().running(conn)


def test_a_count_past_the_deadline_keeps_the_bound_or_raises(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, counts: tuple[int, int]
) -> None:
    bound, real = counts
    req = build_request("demo", "pages", "csv", str(demo_db.date_from), str(demo_db.date_to), BLOG)
    est = engine.estimate_within(demo_conn, req, _RunsOutAfter(1), real + 1, bound_on_timeout=True)
    assert (est.estimated_rows, est.exact, est.will_use_background_job) == (bound, False, True)
    with pytest.raises(QueryTimeout):
        engine.estimate_within(demo_conn, req, _RunsOutAfter(1), real + 1)
    exact = engine.estimate_within(demo_conn, req, _RunsOutAfter(2), real + 1)
    assert (exact.estimated_rows, exact.exact) == (real, True)
