"""Normal forms of event values: what ingest stores, and how filter values are matched.

Ingest stores countries upper case, device types lower case and referrers as a host name
(docs/events.md). A filter value goes through the same functions, so that `country=es` finds
the events stored as `ES`, and `device_type=Mobile` those stored as `mobile`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sealexports.countries import UNKNOWN, is_country

DEVICE_TYPES = ("desktop", "mobile", "tablet")
# Operators that compare whole values: a referrer URL given to them means its host.
_WHOLE_VALUE_OPS = ("eq", "ne", "in", "not_in")


def country(value: str) -> str | None:
    """An ISO 3166-1 alpha-2 code, upper case; None for XX or ZZ (unknown); else ValueError."""
    code = value.upper()
    if code in UNKNOWN:
        return None
    if len(code) != 2 or not code.isascii() or not is_country(code):
        raise ValueError(f"{value[:20]!r} is not an ISO 3166-1 alpha-2 country code like 'ES' (XX: unknown)")
    return code


def device_type(value: str) -> str:
    """desktop, mobile or tablet, whatever the case; else ValueError."""
    lowered = value.lower()
    if lowered not in DEVICE_TYPES:
        raise ValueError(f"{value[:20]!r} is not one of {', '.join(DEVICE_TYPES)}")
    return lowered


def referrer(value: str) -> str | None:
    """The referring host: 'https://www.google.com/search?q=x' and 'google.com' are google.com."""
    try:
        host = urlsplit(value).hostname if "://" in value else value.split("/", 1)[0].lower()
    except ValueError:
        raise ValueError(f"{value[:80]!r} is not a URL or a host name") from None
    if host and host.startswith("www."):
        host = host[4:]
    return host or None


def filter_value(field: str, op: str, value: str) -> str:
    """A filter's value as ingest would have stored it. Case is folded for every operator but
    the regexes (a pattern is the user's own); a referrer URL becomes its host for operators that
    compare whole values. A value ingest would refuse is kept as given: it matches nothing."""
    if op in ("regex", "not_regex"):
        return value
    if field == "country":
        return value.upper()
    if field == "device_type":
        return value.lower()
    if field == "referrer" and op in _WHOLE_VALUE_OPS:
        try:
            return referrer(value) or value
        except ValueError:
            return value
    return value
