"""Each stored event's local day: `insert_visits` finds it once per UTC hour when the whole
hour falls on one local day, and converts each time otherwise; both give the day a plain
conversion of the time gives, around every change of offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sealexports.storage.visits import _stamp

ZONES = (  # whole hours with summer time; half and quarter hours; a 30-minute change; a skipped day
    ("Europe/Madrid", 2024), ("Asia/Kolkata", 2024), ("Asia/Kathmandu", 2024), ("Australia/Lord_Howe", 2024),
    ("America/Santiago", 2024), ("Pacific/Apia", 2011),
)  # fmt: skip


@pytest.mark.parametrize(("zone", "year"), ZONES)
def test_the_local_day_is_that_of_each_time(zone: str, year: int) -> None:
    tz = ZoneInfo(zone)
    hour = datetime(year, 1, 1, tzinfo=UTC)
    while hour.year == year:  # every UTC hour of the year: its first and last second, and between
        for second in (0, 1, 1799, 1800, 2699, 3599):
            t = hour + timedelta(seconds=second, microseconds=500_000)
            stamped = (
                t.replace(microsecond=0, tzinfo=None).isoformat() + "Z",
                t.astimezone(tz).date().isoformat(),
            )
            assert _stamp(t, tz) == stamped, t
        hour += timedelta(hours=1)


@pytest.mark.parametrize(("zone", "year"), ZONES)
def test_whole_seconds_are_stamped_as_any_time(zone: str, year: int) -> None:
    """Whole seconds (what imports give) take each hour's text from a table: the same text."""
    tz = ZoneInfo(zone)
    hour = datetime(year, 1, 1, tzinfo=UTC)
    while hour.year == year:
        for second in (0, 1, 59, 60, 1799, 1800, 2699, 3599):
            t = hour + timedelta(seconds=second)
            expected = (t.replace(tzinfo=None).isoformat() + "Z", t.astimezone(tz).date().isoformat())
            assert _stamp(t, tz) == expected, t
        hour += timedelta(hours=1)
