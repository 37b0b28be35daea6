"""ISO 3166-1 alpha-2 country codes: which exist, and their English names (from pycountry, which
follows the ISO standard, so no hand-kept table goes stale)."""

from __future__ import annotations

from functools import cache

# User-assigned codes that trackers and GeoIP databases send for "country unknown": ingest
# stores them as a missing country (docs/events.md).
UNKNOWN = frozenset({"XX", "ZZ"})


@cache
def country_name(code: str | None) -> str | None:
    """The common English name ('South Korea', 'Iran'), else the ISO name; None for a missing
    code or one that is not a country."""
    import pycountry  # imported on first use: a command that needs no country starts faster

    country = pycountry.countries.get(alpha_2=code) if code and len(code) == 2 else None
    if country is None:
        return None
    return str(getattr(country, "common_name", None) or country.name)


def is_country(code: str) -> bool:
    """Whether `code` (upper case) is an assigned ISO 3166-1 alpha-2 code."""
    return country_name(code) is not None
