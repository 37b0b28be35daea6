"""Writing analytics data: visits with their page views, conversions and microconversions.

Demo data and imported data both go through `insert_visits`, so they land in the same shape.
Each event gets the local day of the site's time zone, and a copy of its visit's dimensions.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import islice, repeat
from operator import attrgetter
from zoneinfo import ZoneInfo

from sealexports.storage.accounts import Site
from sealexports.storage.schema import (
    GROUP_FIELDS,
    GROUPED_VISIT_DIMENSIONS,
    ODD_STARTS,
    ROLLUP_DIMENSIONS,
    VISIT_FIELDS,
)
from sealexports.storage.timestamps import iso

VISIT_DIMENSIONS = ("referrer", *VISIT_FIELDS)


@dataclass(slots=True)
class PageView:
    ts: datetime  # aware
    path: str
    content_grouping: str | None = None


@dataclass(slots=True)
class Conversion:
    ts: datetime
    conversion_type: str
    path: str
    content_grouping: str | None = None
    amount_cents: int = 0
    properties: str | None = None  # JSON text


@dataclass(slots=True)
class Visit:
    """A visit; its first page view is the landing page.

    A visit already stored is continued by giving its `id` and `landing` page (and its
    dimensions): `pages`, `conversions` and `microconversions` are then new events for it.
    """

    pages: list[PageView]
    referrer: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    country: str | None = None
    device_type: str | None = None
    browser: str | None = None
    os: str | None = None
    conversions: list[Conversion] = field(default_factory=list)
    microconversions: list[Conversion] = field(default_factory=list)
    id: int | None = None  # set by insert_visits on a new visit
    landing: PageView | None = None  # set (with id): continue the stored visit with this landing page


@dataclass
class InsertCounts:
    visits: int = 0
    pageviews: int = 0
    conversions: int = 0
    microconversions: int = 0

    @property
    def rows(self) -> int:
        return self.visits + self.pageviews + self.conversions + self.microconversions


_DIMS = ", ".join(VISIT_DIMENSIONS)
_DIM_MARKS = ", ".join("?" * len(VISIT_DIMENSIONS))
_INSERT_VISIT = (
    "INSERT INTO visits (id, site_id, day, started_at, landing_page, content_grouping, page_views, "
    f"{_DIMS}) VALUES (?, ?, ?, ?, ?, ?, ?, {_DIM_MARKS})"
)
_INSERT_PAGEVIEW = (
    "INSERT INTO pageviews (site_id, day, ts, visit_id, path, content_grouping, is_entrance, "
    f"landing_page, {_DIMS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, {_DIM_MARKS})"
)
_INSERT_CONVERSION = (
    "INSERT INTO conversions (site_id, day, ts, visit_id, conversion_type, amount_cents, path, "
    f"content_grouping, properties, landing_page, {_DIMS}) "
    f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {_DIM_MARKS})"
)
_INSERT_MICRO = (
    "INSERT INTO microconversions (site_id, day, ts, visit_id, conversion_type, path, "
    f"content_grouping, properties, landing_page, {_DIMS}) "
    f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, {_DIM_MARKS})"
)
_ROLLUP = (*ROLLUP_DIMENSIONS, "")  # and each visit's landing page fills "landing_page"
_dims_of = attrgetter(*VISIT_DIMENSIONS)
_grouped_of = attrgetter(*GROUPED_VISIT_DIMENSIONS)
_INSERT_KEY = "INSERT OR IGNORE INTO day_keys (site_id, dimension, day, value) VALUES (?, ?, ?, ?)"
_ADD_ROWS = (
    "INSERT INTO day_rows (site_id, kind, day, rows, odd) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (site_id, kind, day) DO UPDATE SET rows = rows + excluded.rows, odd = odd + excluded.odd"
)
_fields_of = attrgetter(*VISIT_FIELDS)
# A value a CSV line quotes, or one that starts with a formula sign (values joined by NULs,
# which stored text never holds): see schema.m016_odd_rows.
_ODD = re.compile(f'[,"\r\n]|(?:^|\0)[{re.escape("".join(ODD_STARTS))}]')


def _odd(*values: str | None) -> bool:
    return _ODD.search("\0".join(filter(None, values))) is not None


_ADD_PAGE_VIEWS = "UPDATE visits SET page_views = page_views + ? WHERE id = ?"
_ADD_VISIT_DAYS = (
    "INSERT INTO visit_days (site_id, day, visit_id, page_views) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (site_id, day, visit_id) DO UPDATE SET page_views = page_views + excluded.page_views"
)
_ADD_METRICS = (
    "INSERT INTO day_metrics (site_id, dimension, day, value, entrances, engaged, page_views, "
    "microconversions, conversions, revenue_cents) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (site_id, dimension, day, value) DO UPDATE SET "
    "entrances = entrances + excluded.entrances, engaged = engaged + excluded.engaged, "
    "page_views = page_views + excluded.page_views, "
    "microconversions = microconversions + excluded.microconversions, "
    "conversions = conversions + excluded.conversions, revenue_cents = revenue_cents + excluded.revenue_cents"
)
_ADD_GROUPS = (
    f"INSERT INTO day_groups (site_id, day, {', '.join(GROUP_FIELDS)}, entrances, engaged, page_views, "
    f"microconversions, conversions, revenue_cents) VALUES (?, ?, {', '.join('?' * len(GROUP_FIELDS))}, "
    f"?, ?, ?, ?, ?, ?) ON CONFLICT (site_id, day, {', '.join(GROUP_FIELDS)}) DO UPDATE SET "
    "entrances = entrances + excluded.entrances, engaged = engaged + excluded.engaged, "
    "page_views = page_views + excluded.page_views, "
    "microconversions = microconversions + excluded.microconversions, "
    "conversions = conversions + excluded.conversions, revenue_cents = revenue_cents + excluded.revenue_cents"
)
_ENTRANCES, _ENGAGED, _PAGE_VIEWS, _MICRO, _CONVERSIONS, _REVENUE = range(6)


def _six() -> list[int]:
    return [0, 0, 0, 0, 0, 0]


def _two() -> list[int]:
    return [0, 0]


Sums = list[int]  # entrances, engaged, page views, microconversions, conversions, revenue (cents)
Metrics = dict[tuple[str, str, str], list[int]]  # (dimension, day, value) -> the six sums
Groups = dict[tuple[str, tuple[str, ...]], list[int]]  # (day, GROUP_FIELDS values) -> the six sums


def _add_visit(
    metrics: Metrics, groups: Groups, values: tuple[str, ...], group: tuple[str, ...], day: str, sums: Sums
) -> None:
    """Add a visit's sums of one day to every rollup dimension (its values, its landing page,
    the total) and to its group."""
    totals = []
    for key in zip(_ROLLUP, repeat(day), values):
        if (t := metrics.get(key)) is None:
            metrics[key] = sums.copy()
        else:
            totals.append(t)
    if (t := groups.get((day, group))) is None:
        groups[(day, group)] = sums.copy()
    else:
        totals.append(t)
    e, g, p, m, c, r = sums
    for t in totals:  # unrolled: twice as fast as map(add, ...)
        t[0] += e
        t[1] += g
        t[2] += p
        t[3] += m
        t[4] += c
        t[5] += r


_UPSERT_PAGE = (
    "INSERT INTO pages (site_id, path, content_grouping, first_day, last_day) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (site_id, path) DO UPDATE SET content_grouping = excluded.content_grouping, "
    "first_day = min(first_day, excluded.first_day), last_day = max(last_day, excluded.last_day)"
)


def insert_visits(
    conn: sqlite3.Connection,
    site: Site,
    visits: Iterable[Visit],
    *,
    batch_size: int = 2000,
    progress: Callable[[InsertCounts], None] | None = None,
    nul_free: bool = False,
) -> InsertCounts:
    """Insert visits and their events in batches, or add events to stored visits (those given
    with `landing`); sets `id` on each new visit. The caller owns the transaction. `nul_free`:
    the caller has refused text with a NUL (ingestion does), so it is not looked for again."""
    next_id = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM visits").fetchone()[0]
    builder = RowBuilder(site, next_id, seen_in(conn), nul_free=nul_free)
    counts = InsertCounts()
    it = iter(visits)
    while batch := list(islice(it, batch_size)):
        rows = builder.build(batch)
        write_rows(conn, rows)
        builder.forget()  # a visit continued in a later batch is read back: memory stays flat
        add_counts(counts, rows.counts)
        if progress:
            progress(counts)
    return counts


def seen_in(conn: sqlite3.Connection) -> Callable[[int], tuple[int, str]]:
    """A stored visit's (page views, day), read from `conn` (for RowBuilder)."""
    return lambda vid: conn.execute("SELECT page_views, day FROM visits WHERE id = ?", [vid]).fetchone()


def add_counts(total: InsertCounts, more: InsertCounts) -> None:
    """Add `more` to `total`."""
    total.visits += more.visits
    total.pageviews += more.pageviews
    total.conversions += more.conversions
    total.microconversions += more.microconversions


@dataclass(slots=True)
class Rows:
    """What `write_rows` stores for a batch of visits: the parameters of each statement."""

    visits: list[tuple[object, ...]]
    added: list[tuple[int, int]]  # (page views, id) of continued visits
    pageviews: list[tuple[object, ...]]
    conversions: list[tuple[object, ...]]
    microconversions: list[tuple[object, ...]]
    pages: list[tuple[object, ...]]
    keys: list[tuple[object, ...]]
    day_rows: list[tuple[object, ...]]
    visit_days: list[tuple[object, ...]]
    groups: list[tuple[object, ...]]
    metrics: list[tuple[object, ...]]
    counts: InsertCounts


def write_rows(conn: sqlite3.Connection, rows: Rows) -> None:
    """Store a batch built by `RowBuilder.build`. The caller owns the transaction."""
    conn.executemany(_INSERT_VISIT, rows.visits)
    conn.executemany(_ADD_PAGE_VIEWS, rows.added)
    conn.executemany(_INSERT_PAGEVIEW, rows.pageviews)
    conn.executemany(_INSERT_CONVERSION, rows.conversions)
    conn.executemany(_INSERT_MICRO, rows.microconversions)
    conn.executemany(_UPSERT_PAGE, rows.pages)
    conn.executemany(_INSERT_KEY, rows.keys)
    conn.executemany(_ADD_ROWS, rows.day_rows)
    conn.executemany(_ADD_VISIT_DAYS, rows.visit_days)
    conn.executemany(_ADD_GROUPS, rows.groups)
    conn.executemany(_ADD_METRICS, rows.metrics)


class RowBuilder:
    """The rows of batches of visits, without touching the database: new visits take ids from
    `next_id` on; `seen(id)` gives a stored visit's (page views, day) the first time it is
    continued, later batches use what the builder counted (a visit continued again)."""

    def __init__(
        self,
        site: Site,
        next_id: int,
        seen: Callable[[int], tuple[int, str]],
        *,
        nul_free: bool = False,
    ) -> None:
        self.site_id = site.site_id
        self.tz = ZoneInfo(site.timezone)
        self.next_id = next_id
        self.seen = seen
        self.nul_free = nul_free
        self.stored: dict[int, tuple[int, str]] = {}  # continued visits: (page views so far, day)

    def forget(self, keep: int | None = None) -> None:
        """Drop what was counted of continued visits but visit `keep` (memory stays bounded)."""
        kept = self.stored.get(keep) if keep is not None else None
        self.stored = {keep: kept} if keep is not None and kept is not None else {}

    def build(self, batch: Iterable[Visit]) -> Rows:
        """The rows of these visits; sets `id` on each new one."""
        site_id, tz, stored = self.site_id, self.tz, self.stored
        next_id = self.next_id
        rows_v: list[tuple[object, ...]] = []
        rows_p: list[tuple[object, ...]] = []
        rows_c: list[tuple[object, ...]] = []
        rows_m: list[tuple[object, ...]] = []
        pages: dict[str, list[str | None]] = {}
        keys: set[tuple[str, str, str]] = set()  # (dimension, day, value) for the estimate catalog
        day_rows: dict[tuple[str, str], list[int]] = defaultdict(_two)  # (kind, day): events, odd ones
        visit_days: Counter[tuple[str, int]] = Counter()  # page views off their visit's first day
        added: list[tuple[int, int]] = []  # (page views, id) of continued visits
        metrics: Metrics = {}  # by visit dimension (their keys never name "path")
        paths: Metrics = defaultdict(_six)  # ("path", day, path): entrances, page views, conversions
        groups: Groups = {}
        for visit in batch:
            if not self.nul_free:
                _drop_nul(visit)
            dims = _dims_of(visit)
            per_day: dict[str, list[int]] = defaultdict(_six)  # day -> this visit's sums that day
            group = tuple(v or "" for v in dims[1:])  # GROUP_FIELDS: the dimensions but the referrer
            if visit.landing is not None:  # a stored visit, continued
                if visit.id is None:
                    raise ValueError("a stored visit needs its id")
                landing, vid, first = visit.landing, visit.id, -1
                values = (*(x or "" for x in _grouped_of(visit)), landing.path, "")
                visit_day = ""
                if visit.pages:
                    added.append((len(visit.pages), vid))
                    seen, visit_day = stored.get(vid) or self.seen(vid)
                    if seen == 1:  # its second page view makes the visit engaged
                        per_day[visit_day] = [0, 1, 0, 0, 0, 0]
                    stored[vid] = (seen + len(visit.pages), visit_day)
            else:
                if not visit.pages:
                    raise ValueError("a visit needs at least one page view")
                landing, vid, first = visit.pages[0], next_id, 0
                visit.id = vid
                next_id += 1
                ts, day = _stamp(landing.ts, tz)
                visit_day = day
                stored[vid] = (len(visit.pages), day)
                values = (*(x or "" for x in _grouped_of(visit)), landing.path, "")
                keys.update(zip(GROUPED_VISIT_DIMENSIONS, repeat(day), values))
                keys.add(("landing_page", day, landing.path))
                per_day[day] = [1, int(len(visit.pages) >= 2), 0, 0, 0, 0]  # entrances, engaged
                paths[("path", day, landing.path)][_ENTRANCES] += 1
                rows_v.append(
                    (vid, site_id, day, ts, landing.path, landing.content_grouping,
                     len(visit.pages), *dims)
                )  # fmt: skip
            for i, pv in enumerate(visit.pages):
                ts, day = _stamp(pv.ts, tz)
                rows_p.append(
                    (site_id, day, ts, vid, pv.path, pv.content_grouping, int(i == first),
                     landing.path, *dims)
                )  # fmt: skip
                if (info := pages.get(pv.path)) is None:
                    pages[pv.path] = [pv.content_grouping, day, day]
                else:
                    info[0] = pv.content_grouping
                    if day < info[1]:  # type: ignore[operator]
                        info[1] = day
                    if day > info[2]:  # type: ignore[operator]
                        info[2] = day
                if day != visit_day:
                    visit_days[(day, vid)] += 1
                per_day[day][_PAGE_VIEWS] += 1
                paths[("path", day, pv.path)][_PAGE_VIEWS] += 1
            events = visit.conversions or visit.microconversions
            visit_odd = bool(events) and _odd(landing.path, *_fields_of(visit))
            for c in visit.conversions:
                ts, day = _stamp(c.ts, tz)
                counted = day_rows[("conversions", day)]
                counted[0] += 1
                counted[1] += (
                    visit_odd or c.amount_cents < 0 or _odd(c.conversion_type, c.path, c.content_grouping)
                )
                sums = per_day[day]
                sums[_CONVERSIONS] += 1
                sums[_REVENUE] += c.amount_cents
                paths[("path", day, c.path)][_CONVERSIONS] += 1
                rows_c.append(
                    (site_id, day, ts, vid, c.conversion_type, c.amount_cents, c.path,
                     c.content_grouping, c.properties, landing.path, *dims)
                )  # fmt: skip
            for m in visit.microconversions:
                ts, day = _stamp(m.ts, tz)
                counted = day_rows[("microconversions", day)]
                counted[0] += 1
                counted[1] += visit_odd or _odd(m.conversion_type, m.path, m.content_grouping)
                per_day[day][_MICRO] += 1
                rows_m.append(
                    (site_id, day, ts, vid, m.conversion_type, m.path,
                     m.content_grouping, m.properties, landing.path, *dims)
                )  # fmt: skip
            # Summed per visit and day, then added once into each dimension and the group.
            for day, sums in per_day.items():
                _add_visit(metrics, groups, values, group, day, sums)
        self.next_id = next_id
        keys.update(paths)  # every page's path by day: its page views' and conversions'
        metrics.update(paths)
        counts = InsertCounts(len(rows_v), len(rows_p), len(rows_c), len(rows_m))
        return Rows(
            rows_v, added, rows_p, rows_c, rows_m,
            [(site_id, path, *info) for path, info in pages.items()],
            [(site_id, *key) for key in keys],
            [(site_id, kind, day, *n) for (kind, day), n in day_rows.items()],
            [(site_id, *key, n) for key, n in visit_days.items()],
            [(site_id, day, *g, *sums) for (day, g), sums in groups.items()],
            [(site_id, *key, *sums) for key, sums in metrics.items()],
            counts,
        )  # fmt: skip


def _drop_nul(visit: Visit) -> None:
    """Remove NUL characters from the visit's text (as the CSV writer does): stored text never
    holds one, so a value SQLite formats (printf ends a value at a NUL) is never cut short.
    Ingestion refuses them before this; demo data and direct callers get them removed."""
    for name in VISIT_DIMENSIONS:
        value = getattr(visit, name)
        if value and "\0" in value:
            setattr(visit, name, value.replace("\0", ""))
    events: list[PageView | Conversion] = [*visit.pages, *visit.conversions, *visit.microconversions]
    if visit.landing is not None:
        events.append(visit.landing)
    for event in events:
        for name in _EVENT_TEXT[type(event)]:
            value = getattr(event, name)
            if value and "\0" in value:
                setattr(event, name, value.replace("\0", ""))


_EVENT_TEXT = {
    PageView: ("path", "content_grouping"),
    Conversion: ("conversion_type", "path", "content_grouping", "properties"),
}


def _stamp(ts: datetime, tz: ZoneInfo) -> tuple[str, str]:
    """(UTC timestamp with Z, local day of the site)."""
    seconds = ts.timestamp()
    if seconds.is_integer():  # the usual case: the text from a table of each hour's
        hour, second = divmod(int(seconds), 3600)
        prefix, day = _hour_of(tz, hour)
        if day is not None:
            return prefix + _MINUTES_SECONDS[second], day
    utc = ts.astimezone(UTC)
    text = iso(utc)
    day = _hour_day(tz, text[:13])
    return text, day if day is not None else utc.astimezone(tz).date().isoformat()


_MINUTES_SECONDS = tuple(f":{s // 60:02d}:{s % 60:02d}Z" for s in range(3600))


@lru_cache(maxsize=16384)
def _hour_of(tz: ZoneInfo, hour: int) -> tuple[str, str | None]:
    """UTC hour `hour` (hours since the epoch) as text ('2025-01-10T14') and its local day."""
    text = datetime.fromtimestamp(hour * 3600, UTC).replace(tzinfo=None).isoformat()[:13]
    return text, _hour_day(tz, text)


@lru_cache(maxsize=16384)
def _hour_day(tz: ZoneInfo, hour: str) -> str | None:
    """The site's local day all through one UTC hour ('2025-01-10T14'), or None when it changes
    within the hour (an offset that is not whole hours, a change of offset in the hour): every
    event of the hour then converts its own time. Converting each time costs more than the
    rest of its stamp, and an import's events fall in a few thousand hours."""
    start = datetime.fromisoformat(f"{hour}:00:00+00:00")
    first, last = start.astimezone(tz), (start + timedelta(seconds=3599)).astimezone(tz)
    if first.utcoffset() != last.utcoffset() or first.date() != last.date():
        return None
    return first.date().isoformat()


ANALYTICS_TABLES = (
    "visits", "pageviews", "conversions", "microconversions", "pages", "day_keys", "day_rows", "day_metrics",
    "visit_days", "day_groups",
)  # fmt: skip
INGEST_TABLES = ("import_ids", "visit_keys")  # what imports remember: it goes with the data


def site_has_data(conn: sqlite3.Connection, site_id: str) -> bool:
    return conn.execute("SELECT 1 FROM visits WHERE site_id = ? LIMIT 1", [site_id]).fetchone() is not None


def delete_site_data(conn: sqlite3.Connection, site_id: str) -> None:
    """Remove a site's analytics rows (not the site). The caller owns the transaction."""
    for table in (*ANALYTICS_TABLES, *INGEST_TABLES):
        conn.execute(f"DELETE FROM {table} WHERE site_id = ?", [site_id])


def latest_event_at(conn: sqlite3.Connection, site_id: str, day_from: str, day_to: str) -> str | None:
    """The time (UTC, ISO) of the site's newest page view, conversion or microconversion on the
    days day_from..day_to (the site's days), or None. Cheap: the last day with events comes from
    each table's (site_id, day) index, then only that day's rows are read (a later local day
    always holds later times)."""
    latest: str | None = None
    for table in ("pageviews", "conversions", "microconversions"):
        row = conn.execute(
            f"SELECT MAX(ts) FROM {table} WHERE site_id = ? AND day = "
            f"(SELECT MAX(day) FROM {table} WHERE site_id = ? AND day BETWEEN ? AND ?)",
            [site_id, site_id, day_from, day_to],
        ).fetchone()
        if row[0] is not None and (latest is None or row[0] > latest):
            latest = str(row[0])
    return latest
