"""When a schedule runs: daily, weekly on a day, or monthly on a day, at HH:MM in the site's time
zone. DST-correct: a wall time that does not exist that day (the spring-forward gap) runs at the
first instant after the gap; one that happens twice (fall back) runs once, at the first."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sealexports.errors import InvalidRequest

EVERY = ("daily", "weekly", "monthly")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_AT = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True)
class Cadence:
    every: str  # daily, weekly, monthly
    at: str  # HH:MM, local
    day: int | None = None  # weekly: 0 (Monday) .. 6; monthly: 1 .. 31 (past a month's end: its last day)

    def describe(self) -> str:
        if self.every == "weekly" and self.day is not None:
            return f"weekly on {WEEKDAYS[self.day]} at {self.at}"
        if self.every == "monthly":
            return f"monthly on day {self.day} at {self.at}"
        return f"daily at {self.at}"

    def runs_on(self, d: date) -> bool:
        if self.every == "weekly":
            return d.weekday() == self.day
        if self.every == "monthly":
            assert self.day is not None
            return d.day == min(self.day, calendar.monthrange(d.year, d.month)[1])
        return True

    def next_run(self, after: datetime, tz: ZoneInfo) -> datetime:
        """The first run strictly after `after` (aware), in UTC."""
        day = after.astimezone(tz).date() - timedelta(days=1)
        for _ in range(400):
            if self.runs_on(day):
                instant = wall_instant(day, self.at, tz)
                if instant > after:
                    return instant
            day += timedelta(days=1)
        raise AssertionError("no run within 400 days")  # every cadence runs at least monthly


def wall_instant(day: date, at: str, tz: ZoneInfo) -> datetime:
    """The UTC instant of local wall time `at` on `day`: its first occurrence if it happens twice,
    the end of the gap if it does not happen at all."""
    hour, minute = (int(p) for p in at.split(":"))
    naive = datetime.combine(day, time(hour, minute))
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first
    # In a gap: fold=1 reads it with the offset after the change, which lands before the gap.
    # The first minute from there whose wall time has reached `naive` is the gap's end.
    probe = naive.replace(tzinfo=tz, fold=1).astimezone(UTC).replace(second=0, microsecond=0)
    while probe.astimezone(tz).replace(tzinfo=None) < naive:
        probe += timedelta(minutes=1)
    return probe


def parse(every: str, at: str, day: str | int | None) -> Cadence:
    """A cadence from the shells' values; InvalidRequest names the bad one."""
    if every not in EVERY:
        raise InvalidRequest(f"every must be one of {', '.join(EVERY)}, got {every!r}", field="every")
    if not isinstance(at, str) or not _AT.fullmatch(at):
        raise InvalidRequest(f"at must be a time HH:MM (00:00 to 23:59), got {at!r}", field="at")
    if every == "daily":
        if day is not None:
            raise InvalidRequest("a daily schedule takes no day", field="day")
        return Cadence(every, at)
    if every == "weekly":
        text = str(day).lower()[:3] if day is not None else ""
        if text not in WEEKDAYS:
            raise InvalidRequest(
                f"a weekly schedule needs a day: one of {', '.join(WEEKDAYS)}, got {day!r}", field="day"
            )
        return Cadence(every, at, WEEKDAYS.index(text))
    number = int(day) if isinstance(day, int) or (isinstance(day, str) and day.isdigit()) else 0
    if not 1 <= number <= 31:
        raise InvalidRequest(
            f"a monthly schedule needs a day of the month, 1 to 31, got {day!r}", field="day"
        )
    return Cadence(every, at, number)
