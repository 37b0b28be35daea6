"""What a first-time user of the command line meets: a demo that ends today without events in the
future, help examples with dates that exist, and exports that match nothing saying why."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result

from sealexports.cli import cli
from sealexports.storage.database import connect


@pytest.fixture(autouse=True)
def _no_config_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SEALEXPORTS_"):
            monkeypatch.delenv(name)


def run(db: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", str(db), *args], catch_exceptions=False)


def test_seed_ends_today_in_the_sites_time_zone_with_nothing_in_the_future(db_path: Path) -> None:
    before = datetime.now(UTC)
    result = run(db_path, "seed", "--days", "2", "--visits", "2000")
    after = datetime.now(UTC)
    assert result.exit_code == 0, result.output
    today = after.astimezone(ZoneInfo("Europe/Madrid")).date()
    conn = connect(db_path)
    latest = max(
        conn.execute(f"SELECT max(ts) FROM {table}").fetchone()[0]
        for table in ("pageviews", "conversions", "microconversions")
    )
    days = conn.execute("SELECT min(day), max(day) FROM visits").fetchone()
    conn.close()
    assert datetime.fromisoformat(latest) <= after, f"an event at {latest}, after {after:%H:%M:%S}"
    assert days[1] <= str(today)
    assert days[0] == str(today.fromordinal(today.toordinal() - 1))
    # The summary says which dates the demo covers.
    start = before.astimezone(ZoneInfo("Europe/Madrid")).date()
    assert f"its dates: {start.fromordinal(start.toordinal() - 1)} to {start}" in result.stderr


def test_seed_refuses_an_end_in_the_future(db_path: Path) -> None:
    result = run(db_path, "seed", "--end", "2999-01-01", "--silent")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: --end 2999-01-01 is in the future")
    conn = connect(db_path)
    assert conn.execute("SELECT count(*) FROM sites").fetchone()[0] == 0  # nothing half-made
    conn.close()


def _example(command: list[str], starts: str) -> list[str]:
    """The example in a command's help that starts with `starts`: its two lines, as arguments."""
    lines = CliRunner().invoke(cli, [*command, "--help"]).output.splitlines()
    i = next(i for i, line in enumerate(lines) if line.strip().startswith(starts))
    return " ".join(line.strip().rstrip("\\") for line in lines[i : i + 2]).split()


def test_help_examples_use_dates_of_the_demo_they_seed(db_path: Path) -> None:
    """The group's example: seed as it says, run its export as written, and get rows."""
    words = _example([], "sealexports seed")
    cut = words.index("&&")
    seed_args, export_args = words[1:cut], words[cut + 2 :]
    assert run(db_path, *seed_args, "--visits", "3000", "--silent").exit_code == 0
    result = run(db_path, *export_args, "-o", "-")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) > 1, result.stderr  # a header and rows
    # export's own example: the same demo, its filters as written.
    result = run(db_path, *_example(["export"], "sealexports export")[1:], "-o", "-")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) > 1, result.stderr
    assert "seed --end 2025-03-31" in CliRunner().invoke(cli, ["export", "--help"]).output
