"""What a first-time user of the command line meets: a demo that ends today without events in the
future, help examples with dates that exist, and exports that match nothing saying why."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result

from sealexports import demo
from sealexports.cli import cli
from sealexports.storage.database import connect
from sealexports.storage.visits import Visit
from tests.commands import run

pytestmark = pytest.mark.usefixtures("no_config_from_the_environment")


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


SEED = ["seed", "--days", "5", "--visits", "800", "--end", "2025-03-31", "--silent"]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("first-use") / "seeded.db"
    assert run(db, *SEED).exit_code == 0
    return db


def export(db: Path, *args: str) -> Result:
    return run(db, "export", "--site", "demo", "-o", "-", *args)


def test_dates_without_data_exit_0_and_say_which_dates_have_it(seeded: Path) -> None:
    result = export(seeded, "--type", "sources", "--from", "2025-01-01", "--to", "2025-01-31", "--silent")
    assert result.exit_code == 0
    assert result.stdout.startswith("utm_source,") and len(result.stdout.splitlines()) == 1
    assert result.stderr == (
        "Warning: site 'demo' has no data from 2025-01-01 to 2025-01-31; it has data from "
        "2025-03-27 to 2025-03-31\n"
    )


def test_a_filter_value_that_never_occurs_says_which_do(seeded: Path, tmp_path: Path) -> None:
    conn = connect(seeded)  # the independent truth: the conversions' own types
    types = {r[0] for r in conn.execute("SELECT DISTINCT conversion_type FROM conversions")}
    conn.close()
    args = ["--type", "conversions", "--from", "2025-03-27", "--to", "2025-03-31"]
    result = run(seeded, "export", "--site", "demo", *args, "--filter", "conversion_type=purchse",
                 "-o", str(tmp_path), "--silent")  # fmt: skip
    assert result.exit_code == 0
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "Warning: conversion_type 'purchse' does not occur from 2025-03-27 to 2025-03-31; "
    )
    assert set(line.split("it has: ")[1].split(", ")) == types == {"purchase", "lead", "signup"}
    # Values that occur, in another case than stored: matched, and no warning.
    result = export(seeded, *args, "--filter", "conversion_type=purchase", "--filter", "device_type=Mobile")
    assert result.exit_code == 0 and result.stderr == ""
    assert len(result.stdout.splitlines()) > 1


def test_filters_that_match_nothing_together_say_so(seeded: Path, tmp_path: Path) -> None:
    args = ["--type", "conversions", "--from", "2025-03-27", "--to", "2025-03-31", "-o", str(tmp_path)]
    result = run(seeded, "export", "--site", "demo", *args, "--advanced", "path:eq:/nowhere", "--silent")
    assert result.exit_code == 0
    assert result.stderr == "Warning: no rows match these filters from 2025-03-27 to 2025-03-31\n"


def test_a_demo_cut_at_a_moment_has_nothing_after_it_and_the_same_before() -> None:
    end = datetime(2025, 3, 31).date()
    until = datetime(2025, 3, 31, 11, 30, tzinfo=ZoneInfo("Europe/Madrid"))
    whole = list(demo.generate("Europe/Madrid", end=end, days=2, visits=400, seed=3))
    cut = list(demo.generate("Europe/Madrid", end=end, days=2, visits=400, seed=3, until=until))

    def events(visits: list[Visit]) -> list[tuple[str, datetime]]:
        return sorted(
            (kind, e.ts)
            for v in visits
            for kind, group in (("pv", v.pages), ("c", v.conversions), ("m", v.microconversions))
            for e in group
        )

    assert max(ts for _, ts in events(cut)) <= until
    assert events(cut) == [e for e in events(whole) if e[1] <= until]
    assert 0 < len(cut) < len(whole)
