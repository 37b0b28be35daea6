"""Relative date ranges, as local days of the site at the moment a run starts."""

from __future__ import annotations

from datetime import date, timedelta

from sealexports.errors import InvalidRequest

RANGES = ("yesterday", "last_7_days", "last_30_days", "previous_week", "previous_month", "month_to_date")


def check(name: str) -> str:
    if name not in RANGES:
        raise InvalidRequest(f"range must be one of {', '.join(RANGES)}, got {name!r}", field="range")
    return name


def dates(name: str, today: date) -> tuple[date, date]:
    """(first day, last day), both included. Weeks start on Monday; month_to_date includes today."""
    yesterday = today - timedelta(days=1)
    if name == "yesterday":
        return yesterday, yesterday
    if name == "last_7_days":
        return today - timedelta(days=7), yesterday
    if name == "last_30_days":
        return today - timedelta(days=30), yesterday
    if name == "previous_week":
        monday = today - timedelta(days=today.weekday() + 7)
        return monday, monday + timedelta(days=6)
    if name == "previous_month":
        last = today.replace(day=1) - timedelta(days=1)
        return last.replace(day=1), last
    if name == "month_to_date":
        return today.replace(day=1), today
    raise InvalidRequest(f"unknown range {name!r}", field="range")
