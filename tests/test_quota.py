"""The per-plan quota of stored export bytes: one key cannot fill the disk with export files."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

from sealexports.config import DEFAULT_PLANS
from tests.apps import ApiFactory, Template
from tests.checks import assert_error, assert_human_size


def _plans(max_stored_bytes: int) -> dict[str, object]:
    free = dataclasses.replace(DEFAULT_PLANS["free"], max_stored_bytes=max_stored_bytes)
    return {**DEFAULT_PLANS, "free": free}


def test_over_the_stored_bytes_quota_creating_an_export_is_429(make: ApiFactory, small: Template) -> None:
    api = make(small, plans=_plans(0))  # measure two files first, with no quota
    first = api.created(api.body("sources"))["job"]
    second = api.created(api.body("countries"))["job"]
    exports = api.settings.exports_dir
    sizes = {j["job_id"]: (exports / f"{j['job_id']}.csv").stat().st_size for j in (first, second)}
    assert all(sizes.values())
    api.close()

    # A quota the two files reach (but the first alone does not).
    quota = sum(sizes.values())
    api = make(small, plans=_plans(quota))
    headers = api.headers
    err = assert_error(api.create(api.body("browsers"), headers=headers), 429)
    stored = sum(sizes.values())
    oldest = min(first["download_expires_at"], second["download_expires_at"])
    sizes_told = re.search(r"stores (\S+ \S+) of export files \(([\d,]+) bytes\) and its free plan allows "
                           r"(\S+ \S+) \(([\d,]+) bytes\)", err["detail"])  # fmt: skip
    assert sizes_told, err["detail"]
    assert sizes_told[2] == f"{stored:,}" and sizes_told[4] == f"{quota:,}"
    assert_human_size(sizes_told[1], stored)
    assert_human_size(sizes_told[3], quota)
    assert f"expires at {oldest}" in err["detail"] and "free plan" in err["detail"]
    r = api.create(api.body("browsers"))
    wait = datetime.strptime(oldest, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) - datetime.now(UTC)
    assert abs(int(r.headers["retry-after"]) - wait.total_seconds()) < 60
    assert len(list(exports.glob("*.csv"))) == 2  # nothing was written

    # Deleting an export frees its bytes: under the quota again, one more may be created.
    assert api.delete(second["job_id"]).status_code == 204
    assert api.created(api.body("browsers"))["job"]["status"] == "completed"
    # Files whose link has expired do not count, even before the sweeper removes them.
    with api.conn() as conn:
        conn.execute("UPDATE export_jobs SET download_expires_at = '2000-01-01T00:00:00Z'")
    assert api.created(api.body("devices"))["job"]["status"] == "completed"


def test_the_quota_counts_per_account_and_zero_means_unlimited(make: ApiFactory, small: Template) -> None:
    api = make(small, plans=_plans(1))
    api.created(api.body("sources"))  # 0 bytes stored before: allowed, and now over the quota
    assert_error(api.create(api.body("sources")), 429)
    rival = {"X-API-Key": make.add_site(api, "rival")}  # another account, same plan: its own quota
    assert api.create(api.body("sources"), site_id="rival", headers=rival).status_code == 201
    api.close()
    api = make(small, plans=_plans(0))
    for _ in range(3):
        assert api.created(api.body("sources"))["job"]["status"] == "completed"
