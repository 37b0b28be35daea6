"""The operator's commands: `accounts list`, `accounts set-plan`, `sites update`, `sites delete`."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sealexports.cli import cli
from sealexports.storage.database import connect
from sealexports.storage.visits import ANALYTICS_TABLES, INGEST_TABLES


@pytest.fixture(autouse=True)
def _no_config_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("SEALEXPORTS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SEALEXPORTS_EXPORTS_DIR", str(tmp_path / "exports"))


def run(db: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--db", str(db), *args], input=input, catch_exceptions=False)


def ok(db: Path, *args: str, input: str | None = None) -> str:
    result = run(db, *args, input=input)
    assert result.exit_code == 0, result.output
    return result.stdout


def one_error(result: Result, *expected: str) -> None:
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]


def table(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_accounts_list_and_set_plan(db_path: Path) -> None:
    ok(db_path, "init")
    ok(db_path, "sites", "create", "shop", "--account", "acme", "--plan", "pro")
    ok(db_path, "sites", "create", "blog", "--account", "acme")
    ok(db_path, "sites", "create", "solo")
    ok(db_path, "keys", "create", "--site", "shop")
    assert table(ok(db_path, "accounts", "list"))[0] == ["account", "plan", "sites", "keys", "created_at"]
    assert [r[:4] for r in table(ok(db_path, "accounts", "list"))[1:]] == [
        ["acme", "pro", "2", "1"],
        ["solo", "free", "1", "0"],
    ]
    assert "enterprise" in ok(db_path, "accounts", "set-plan", "acme", "enterprise")
    assert [r[3] for r in table(ok(db_path, "sites", "list"))[1:]] == ["enterprise", "enterprise", "free"]
    one_error(run(db_path, "accounts", "set-plan", "nobody", "pro"), "account 'nobody' not found")
    assert run(db_path, "accounts", "set-plan", "acme", "gold").exit_code == 2  # click's choice


def test_sites_update_renames_and_changes_the_zone_of_a_site_without_data(db_path: Path) -> None:
    ok(db_path, "init")
    ok(db_path, "sites", "create", "shop")
    ok(db_path, "sites", "update", "shop", "--name", "Shop EU", "--timezone", "Europe/Paris")
    assert table(ok(db_path, "sites", "list"))[1] == ["shop", "Shop", "EU", "shop", "free", "Europe/Paris"]
    one_error(run(db_path, "sites", "update", "shop", "--timezone", "Mars/Base"), "unknown time zone")
    one_error(run(db_path, "sites", "update", "nope", "--name", "x"), "site 'nope' not found")


def test_sites_update_refuses_a_new_zone_once_the_site_has_events(db_path: Path) -> None:
    ok(db_path, "seed", "--days", "2", "--visits", "50", "--end", "2025-03-31", "--silent")
    one_error(run(db_path, "sites", "update", "demo", "--timezone", "UTC"), "Europe/Madrid", "new site")
    assert table(ok(db_path, "sites", "list"))[1][-1] == "Europe/Madrid"
    ok(db_path, "sites", "update", "demo", "--name", "Renamed")  # a name is fine


def _site_rows(db: Path, site_id: str) -> dict[str, int]:
    conn = connect(db)
    counts = {
        table: conn.execute(f"SELECT count(*) FROM {table} WHERE site_id = ?", [site_id]).fetchone()[0]
        for table in (*ANALYTICS_TABLES, *INGEST_TABLES, "export_jobs", "api_keys", "sites")
    }
    conn.close()
    return counts


def _add_job(db: Path, exports: Path, site_id: str, job_id: str) -> Path:
    """A completed export job with its file, as the server leaves one."""
    exports.mkdir(exist_ok=True)
    file = exports / f"{job_id}.csv"
    file.write_text("a\n")
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO export_jobs (job_id, account_id, site_id, export_type, format, date_from, date_to, "
        "filters, status, estimated_rows, file_name, created_at) SELECT ?, account_id, site_id, 'sources', "
        "'csv', '2025-03-30', '2025-03-31', '{}', 'completed', 1, ?, '2025-04-01T00:00:00Z' FROM sites "
        "WHERE site_id = ?",
        [job_id, file.name, site_id],
    )
    conn.commit()
    conn.close()
    return file


def test_sites_delete_asks_then_deletes_events_jobs_files_and_keys(db_path: Path, tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    for site in ("demo", "other"):
        ok(
            db_path,
            "seed",
            "--site",
            site,
            "--days",
            "2",
            "--visits",
            "50",
            "--end",
            "2025-03-31",
            "--silent",
        )
        ok(db_path, "keys", "create", "--site", site)
    mine, theirs = _add_job(db_path, exports, "demo", "job-1"), _add_job(db_path, exports, "other", "job-2")
    before = _site_rows(db_path, "other")
    assert all(before[t] for t in ("visits", "pageviews", "day_metrics", "export_jobs", "api_keys"))

    one_error(run(db_path, "sites", "delete", "demo", input="n\n"), "not deleted")
    assert _site_rows(db_path, "demo")["visits"] > 0 and mine.exists()

    result = run(db_path, "sites", "delete", "demo", input="y\n")
    assert result.exit_code == 0, result.output
    assert "Delete site demo" in result.stderr
    assert set(_site_rows(db_path, "demo").values()) == {0}
    assert not mine.exists()
    # The other site is untouched, and the account stays.
    assert _site_rows(db_path, "other") == before and theirs.exists()
    assert [r[0] for r in table(ok(db_path, "accounts", "list"))[1:]] == ["demo", "other"]

    ok(db_path, "sites", "delete", "other", "--yes")
    assert set(_site_rows(db_path, "other").values()) == {0}
    one_error(run(db_path, "sites", "delete", "other", "--yes"), "site 'other' not found")
