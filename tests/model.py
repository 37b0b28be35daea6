"""An independent model of the export contract (design.md), in plain Python over `Visit` objects.

It never reads the database and never calls the engine's SQL, filters or writers: it flattens the
visits that were inserted into the four kinds of rows, applies the filters with its own parser and
predicates, and aggregates with dicts. The tests compare the engine's files with what this computes.

Values are typed as the contract says: text columns are `str | None`, int columns `int`, 2-decimal
columns exact `Decimal`s (rates rounded half-up from the exact fraction), dates ISO strings and
`properties` the JSON text.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from sealexports.storage.visits import Visit

# --- The contract's columns, written out from design.md (not imported from the package) ---------

M = [
    "entrances",
    "engaged_entrances",
    "bounce_rate",
    "page_views",
    "microconversions",
    "conversions",
    "conversion_rate",
    "revenue",
]
_EVENT_TAIL = [
    "path",
    "landing_page",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "country",
    "device_type",
    "browser",
    "os",
    "content_grouping",
    "properties",
]
DIMENSION_KEYS = {
    "sources": "utm_source",
    "mediums": "utm_medium",
    "campaigns": "utm_campaign",
    "terms": "utm_term",
    "countries": "country",
    "devices": "device_type",
    "browsers": "browser",
    "os": "os",
    "landing_pages": "landing_page",
}
HEADERS: dict[str, list[str]] = {
    "pages": ["path", "views", "entrances", "conversions", "content_grouping"],
    "landing_pages": ["landing_page", "content_grouping", *M],
    "countries": ["country", "country_name", *M],
    "time_series": ["date", *M],
    "conversions": ["date", "timestamp", "conversion_type", "amount", *_EVENT_TAIL],
    "microconversions": ["date", "timestamp", "conversion_type", *_EVENT_TAIL],
    **{name: [key, *M] for name, key in DIMENSION_KEYS.items() if name not in ("countries", "landing_pages")},
}
EXPORT_TYPES = sorted(HEADERS)
INT_COLUMNS = {
    "entrances",
    "engaged_entrances",
    "page_views",
    "views",
    "microconversions",
    "conversions",
}
DEC2_COLUMNS = {"bounce_rate", "conversion_rate", "revenue", "amount"}
JSON_COLUMNS = {"properties"}

# The demo's countries (sealexports.demo.COUNTRIES), by English short name.
COUNTRY_NAMES = {
    "AR": "Argentina", "AT": "Austria", "AU": "Australia", "BE": "Belgium", "BO": "Bolivia",
    "BR": "Brazil", "CA": "Canada", "CH": "Switzerland", "CL": "Chile", "CN": "China",
    "CO": "Colombia", "CR": "Costa Rica", "CU": "Cuba", "CZ": "Czechia", "DE": "Germany",
    "DK": "Denmark", "DO": "Dominican Republic", "EC": "Ecuador", "ES": "Spain", "FI": "Finland",
    "FR": "France", "GB": "United Kingdom", "GR": "Greece", "GT": "Guatemala", "HN": "Honduras",
    "HU": "Hungary", "IE": "Ireland", "IN": "India", "IT": "Italy", "JP": "Japan",
    "KR": "South Korea", "MA": "Morocco", "MX": "Mexico", "NI": "Nicaragua", "NL": "Netherlands",
    "NO": "Norway", "NZ": "New Zealand", "PA": "Panama", "PE": "Peru", "PL": "Poland",
    "PR": "Puerto Rico", "PT": "Portugal", "PY": "Paraguay", "RO": "Romania", "SE": "Sweden",
    "SG": "Singapore", "SV": "El Salvador", "TR": "Türkiye", "US": "United States",
    "UY": "Uruguay", "VE": "Venezuela", "ZA": "South Africa",
}  # fmt: skip

VISIT_DIMS = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "country",
    "device_type",
    "browser",
    "os",
)
ADVANCED_FIELDS = {*VISIT_DIMS, "path", "landing_page", "content_grouping", "conversion_type", "referrer"}
ADVANCED_OPS = {"eq", "ne", "contains", "not_contains", "regex", "not_regex", "in", "not_in"}
Row = tuple[Any, ...]


# --- Flattened events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One row of one kind: 'visit' (an entrance), 'pageview', 'conversion' or 'micro'."""

    kind: str
    seq: int  # insertion order within its kind
    day: date  # local day of the site
    utc: str  # ISO 8601 UTC with Z
    sort_key: float  # POSIX timestamp, for ordering
    path: str  # page path; for a visit: the landing page
    content_grouping: str | None  # own page's group; for a visit: the landing page's group
    landing_page: str
    page_views: int  # the visit's page views
    dims: Mapping[str, str | None]  # the visit's dimensions and referrer
    conversion_type: str | None = None
    amount_cents: int = 0
    properties: str | None = None

    def field(self, name: str) -> str | None:
        if name == "path":
            return self.path
        if name == "content_grouping":
            return self.content_grouping
        if name == "landing_page":
            return self.landing_page
        if name == "conversion_type":
            return self.conversion_type
        return self.dims[name]


# --- Filters ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cond:
    field: str
    op: str
    value: str | tuple[str, ...]


def split_advanced(expression: str) -> list[Cond]:
    """Split on commas, gluing back pieces that do not start a `field:op:` expression."""
    parts: list[str] = []
    for piece in expression.split(","):
        head = piece.strip().split(":")
        starts = len(head) >= 3 and head[0] in ADVANCED_FIELDS and head[1] in ADVANCED_OPS
        if starts or not parts:
            parts.append(piece.lstrip())
        else:
            parts[-1] += "," + piece
    conds = []
    for part in parts:
        name, op, value = part.split(":", 2)
        assert name in ADVANCED_FIELDS and op in ADVANCED_OPS, part
        conds.append(Cond(name, op, tuple(value.split("|")) if op in ("in", "not_in") else value))
    return conds


def conditions(filters: Mapping[str, Any] | None) -> list[Cond]:
    out: list[Cond] = []
    for key, value in (filters or {}).items():
        if value is None:
            continue
        if key == "advanced_filters":
            out.extend(split_advanced(value))
        elif isinstance(value, str):
            out.append(Cond(key, "eq", value))
        else:
            out.append(Cond(key, "in", tuple(value)))
    return out


def _holds(cond: Cond, event: Event) -> bool:
    if cond.field == "conversion_type" and event.kind in ("visit", "pageview"):
        return True  # does not apply to page views and entrances
    v = event.field(cond.field)
    x = cond.value
    match cond.op:
        case "eq":
            return v is not None and v == x
        case "ne":
            return v is None or v != x
        case "contains":
            return v is not None and str(x) in v
        case "not_contains":
            return v is None or str(x) not in v
        case "regex":
            return v is not None and re.search(str(x), v) is not None
        case "not_regex":
            return v is None or re.search(str(x), v) is None
        case "in":
            return v is not None and v in x
        case "not_in":
            return v is None or v not in x
    raise AssertionError(cond.op)


# --- The model -------------------------------------------------------------------------------------


def _money(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))


def _pct(num: int, den: int, cap: bool = False) -> Decimal:
    if not den:
        return Decimal("0.00")
    value = Fraction(num * 100, den)
    if cap:
        value = min(value, Fraction(100))
    return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_UP
    )


class Model:
    def __init__(self, visits: Sequence[Visit], timezone: str) -> None:
        tz = ZoneInfo(timezone)
        self._cache: dict[str, list[Event]] = {}
        self.events: dict[str, list[Event]] = {"visit": [], "pageview": [], "conversion": [], "micro": []}
        self.page_group: dict[str, str | None] = {}
        seq: dict[str, int] = defaultdict(int)

        def add(kind: str, **kw: Any) -> None:
            ts = kw.pop("ts")
            utc = ts.astimezone(UTC)
            seq[kind] += 1
            self.events[kind].append(
                Event(
                    kind=kind,
                    seq=seq[kind],
                    day=ts.astimezone(tz).date(),
                    utc=utc.isoformat().replace("+00:00", "Z"),
                    sort_key=utc.timestamp(),
                    **kw,
                )
            )

        for v in visits:
            dims = {d: getattr(v, d) for d in (*VISIT_DIMS, "referrer")}
            landing = v.pages[0]
            common = {"landing_page": landing.path, "page_views": len(v.pages), "dims": dims}
            add(
                "visit", ts=landing.ts, path=landing.path, content_grouping=landing.content_grouping, **common
            )
            for p in v.pages:
                add("pageview", ts=p.ts, path=p.path, content_grouping=p.content_grouping, **common)
                self.page_group[p.path] = p.content_grouping
            for kind, items in (("conversion", v.conversions), ("micro", v.microconversions)):
                for c in items:
                    add(
                        kind,
                        ts=c.ts,
                        path=c.path,
                        content_grouping=c.content_grouping,
                        conversion_type=c.conversion_type,
                        amount_cents=c.amount_cents,
                        properties=c.properties,
                        **common,
                    )

    def selected(
        self, kind: str, date_from: date, date_to: date, filters: Mapping[str, Any] | None = None
    ) -> list[Event]:
        cache_key = json.dumps([kind, str(date_from), str(date_to), filters], sort_keys=True)
        if cache_key not in self._cache:
            conds = conditions(filters)
            self._cache[cache_key] = [
                e
                for e in self.events[kind]
                if date_from <= e.day <= date_to and all(_holds(c, e) for c in conds)
            ]
        return self._cache[cache_key]

    def rows(
        self, export_type: str, date_from: date, date_to: date, filters: Mapping[str, Any] | None = None
    ) -> list[Row]:
        sel = {k: self.selected(k, date_from, date_to, filters) for k in self.events}
        if export_type in ("conversions", "microconversions"):
            return self._events(sel["conversion" if export_type == "conversions" else "micro"], export_type)
        if export_type == "pages":
            return self._pages(sel)
        if export_type == "time_series":
            days = [date_from + timedelta(days=i) for i in range((date_to - date_from).days + 1)]
            acc = self._accumulate(sel, lambda e: e.day)
            return [(d.isoformat(), *self._metrics(acc.get(d))) for d in days]
        key = DIMENSION_KEYS[export_type]
        acc = self._accumulate(sel, lambda e: e.field(key))
        ordered = sorted(acc, key=lambda k: (-acc[k][0], k is not None, k or ""))
        out: list[Row] = []
        for k in ordered:
            extra: tuple[Any, ...] = ()
            if export_type == "countries":
                extra = (COUNTRY_NAMES.get(k) if k else None,)
            elif export_type == "landing_pages":
                extra = (self.page_group.get(k) if k else None,)
            out.append((k, *extra, *self._metrics(acc[k])))
        return out

    @staticmethod
    def _accumulate(sel: Mapping[str, list[Event]], key: Any) -> dict[Any, list[int]]:
        """key -> [entrances, engaged, page_views, micro, conversions, revenue_cents]."""
        acc: dict[Any, list[int]] = defaultdict(lambda: [0] * 6)
        for e in sel["visit"]:
            a = acc[key(e)]
            a[0] += 1
            a[1] += e.page_views >= 2
        for e in sel["pageview"]:
            acc[key(e)][2] += 1
        for e in sel["micro"]:
            acc[key(e)][3] += 1
        for e in sel["conversion"]:
            a = acc[key(e)]
            a[4] += 1
            a[5] += e.amount_cents
        return acc

    @staticmethod
    def _metrics(a: list[int] | None) -> tuple[Any, ...]:
        e, g, pv, mc, c, rev = a or [0] * 6
        return (e, g, _pct(e - g, e), pv, mc, c, _pct(c, e, cap=True), _money(rev))

    def _pages(self, sel: Mapping[str, list[Event]]) -> list[Row]:
        acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # views, entrances, conversions
        for e in sel["pageview"]:
            acc[e.path][0] += 1
        for e in sel["visit"]:
            acc[e.landing_page][1] += 1
        for e in sel["conversion"]:
            acc[e.path][2] += 1
        ordered = sorted(acc, key=lambda p: (-acc[p][0], p))
        return [(p, *acc[p], self.page_group.get(p)) for p in ordered]

    @staticmethod
    def _events(events: Iterable[Event], export_type: str) -> list[Row]:
        out: list[Row] = []
        for e in sorted(events, key=lambda e: (e.sort_key, e.seq)):
            amount = (_money(e.amount_cents),) if export_type == "conversions" else ()
            tail = (
                e.path,
                e.landing_page,
                *(e.dims[d] for d in VISIT_DIMS),
                e.content_grouping,
                e.properties,
            )
            out.append((e.day.isoformat(), e.utc, e.conversion_type, *amount, *tail))
        return out


FORMULA_SIGNS = "=+-@\t\r"  # OWASP's list of what starts a spreadsheet formula


def formula_guarded(row: Row) -> Row:
    """A model row as CSV shows it with the formula guard: text values (never numbers) starting
    with a formula sign get a leading apostrophe."""
    return tuple("'" + v if isinstance(v, str) and v[:1] and v[0] in FORMULA_SIGNS else v for v in row)
