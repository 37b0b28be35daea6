"""SQL for each kind of export, and for its row-count estimate. Values are bound parameters."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sealexports.exports.filters import OPERATORS, TABLE_COLUMNS, where_clause
from sealexports.exports.request import ExportRequest
from sealexports.storage.schema import CATALOG_DIMENSIONS, GROUP_FIELDS, VISIT_FIELDS

Query = tuple[str, list[object]]

# What each table contributes, as (entrances, engaged, page_views, micro, conversions, revenue).
_METRICS = {
    "visits": "COUNT(*) AS e, SUM(page_views >= 2) AS g, 0 AS pv, 0 AS mc, 0 AS c, 0 AS rev",
    "pageviews": "0, 0, COUNT(*), 0, 0, 0",
    "microconversions": "0, 0, 0, COUNT(*), 0, 0",
    "conversions": "0, 0, 0, 0, COUNT(*), SUM(amount_cents)",
}
_ALL = ("visits", "pageviews", "microconversions", "conversions")
# pages: entrances are visits that landed on the path; no microconversions column.
_PAGE_KEYS = {"visits": "landing_page", "pageviews": "path", "conversions": "path"}


def _range(req: ExportRequest, table: str, *, by_pages: bool = False) -> Query:
    """The range and the conditions on one table (with `by_pages`, as `_where` makes them)."""
    cond, params = _where(req, table) if by_pages else where_clause(req.conditions, table)
    return (
        f"site_id = ? AND day BETWEEN ? AND ?{cond}",
        [req.site_id, req.date_from.isoformat(), req.date_to.isoformat(), *params],
    )


# (table, column) whose every value is a path of the site's `pages`.
_PAGE_COLUMNS = {("pageviews", "path"), *((t, "landing_page") for t in TABLE_COLUMNS)}


def _where(req: ExportRequest, table: str, alias: Callable[[str], str] = str) -> Query:
    """The conditions on one table, as `where_clause` makes them, but a regex on a column whose
    every value is a path of the site's `pages` (a landing page; a page view's path) is run once
    per distinct path, not once per row: `col [NOT] IN (the pages it matches)`. A Python call per
    row is the cost of a regex (2.7M page views: 7.1 s of CPU, 2.0 s this way)."""
    sql, params = "", list[object]()
    for c in req.conditions:
        column = TABLE_COLUMNS[table].get(c.field)
        if column and OPERATORS[c.op].is_regex and (table, column) in _PAGE_COLUMNS:
            negated = "NOT " if c.op == "not_regex" else ""
            pages = "SELECT path FROM pages WHERE site_id = ? AND regexp(?, path)"
            sql += f" AND {alias(column)} {negated}IN ({pages})"
            params += [req.site_id, c.value]
        else:
            s, p = where_clause((c,), table, alias)
            sql += s
            params += p
    return sql, params


def _aggregate(
    req: ExportRequest,
    keys: Mapping[str, str],
    parts: list[str] | None = None,
    params: list[Any] | None = None,
) -> Query:
    """(k, e, g, pv, mc, c, rev) summed per key over `parts` (selects already made, with their
    `params`) and a select of each table in `keys` by its key column."""
    parts, params = list(parts or []), list(params or [])
    for table, key in keys.items():
        where, p = _range(req, table, by_pages=True)
        parts.append(f"SELECT {key} AS k, {_METRICS[table]} FROM {table} WHERE {where} GROUP BY 1")
        params += p
    union = " UNION ALL ".join(parts)
    return (
        "SELECT k, SUM(e) AS e, SUM(g) AS g, SUM(pv) AS pv, SUM(mc) AS mc, SUM(c) AS c, "
        f"SUM(rev) AS rev FROM ({union}) GROUP BY k",
        params,
    )


# Raw events: the SQL behind each output column.
_EVENT_SQL = {"date": "day", "timestamp": "ts", "amount": "amount_cents / 100.0"}
# CSV text made by SQLite: exact 2-decimal amounts from integer cents.
_CSV_AMOUNT = (
    "(CASE WHEN amount_cents < 0 THEN '-' ELSE '' END || (abs(amount_cents) / 100) || '.' "
    "|| substr('0' || (abs(amount_cents) % 100), -2))"
)
# (day, ts) is ts order (the local day only grows with time) and it is the index's order.
_EVENT_ORDER = "ORDER BY day, ts, id"


def _event_columns(req: ExportRequest) -> list[str]:
    return [_EVENT_SQL.get(c.name, c.name) for c in req.type.columns]


def event_row_query(req: ExportRequest) -> str:
    """One raw event's output values, by id."""
    return f"SELECT {', '.join(_event_columns(req))} FROM {req.type.key} WHERE id = ?"


@dataclass(frozen=True)
class Page:
    """Raw events of the days `first` to `last` (ISO dates), or of one day (first == last) after
    the event (ts, id) `after` and up to the event `upto` (None: from the start, to the end).
    `plain`: the day catalog says no value before the last CSV column needs quoting or a
    formula guard (`day_rows.odd`)."""

    first: str
    last: str
    after: tuple[str, int] | None = None
    upto: tuple[str, int] | None = None
    plain: bool = False


def _page_range(req: ExportRequest, page: Page) -> Query:
    cond, cond_params = where_clause(req.conditions, req.type.key)
    days = "day = ?" if page.first == page.last else "day BETWEEN ? AND ?"
    where = f"site_id = ? AND {days}"
    params: list[object] = [req.site_id, *dict.fromkeys((page.first, page.last))]
    if page.after is not None:  # (ts, id) bounds: an index range inside one day
        where += " AND (ts, id) > (?, ?)"
        params += page.after
    if page.upto is not None:
        where += " AND (ts, id) <= (?, ?)"
        params += page.upto
    return where + cond, params + cond_params


def event_page_query(req: ExportRequest, page: Page) -> Query:
    """One page of raw events formatted by SQLite as one UTF-8 blob: (CSV lines or JSON objects,
    the CSV heads joined by NULs, which no stored text holds, or NULL (JSON, a plain page); how
    many events).

    CSV lines end in CRLF; JSON objects each come after ',\\n'. A CSV head is every field before
    the last, each followed by ',' and not quoted (the caller checks the page's heads at once for
    characters that need quoting or a formula guard); the tail, the last field (properties, JSON
    text), comes already quoted, since it nearly always needs it. SQLite aggregates the page
    inside one step: Python makes three objects a page, not three a row, and the exporting
    thread holds the GIL only between pages. printf ends a value at a NUL: stored text holds
    none (migration m015, `storage.visits.insert_visits`).
    """
    where, params = _page_range(req, page)
    rows = f"FROM {req.type.key} WHERE {where} {_EVENT_ORDER}"
    if req.format == "json":
        select = "CAST(',\n' || group_concat(o, ',\n') AS BLOB), NULL, count(*)"
        return f"SELECT {select} FROM (SELECT {_json_object(req)} AS o {rows})", params
    head, tail = _csv_head_tail(req)
    heads = "NULL" if page.plain else "CAST(group_concat(h, char(0)) AS BLOB)"
    select = f"CAST(group_concat(h || t || char(13, 10), '') AS BLOB), {heads}, count(*)"
    return f"SELECT {select} FROM (SELECT {head} AS h, {tail} AS t {rows})", params


def event_line_query(req: ExportRequest, page: Page) -> Query:
    """A CSV page row by row, (head, tail, id) each, for a page whose heads need quoting."""
    where, params = _page_range(req, page)
    head, tail = _csv_head_tail(req)
    select = f"CAST({head} AS BLOB), CAST({tail} AS BLOB), id"
    return f"SELECT {select} FROM {req.type.key} WHERE {where} {_EVENT_ORDER}", params


def _json_object(req: ExportRequest) -> str:
    pairs = [
        f"'{c.name}', " + (f"json({expr})" if c.kind == "json" else expr)
        for c, expr in zip(req.type.columns, _event_columns(req), strict=True)
    ]
    return f"json_object({', '.join(pairs)})"


def _csv_head_tail(req: ExportRequest) -> tuple[str, str]:
    *head, last = _event_columns(req)
    # One printf per row is twice as fast as concatenating; it prints NULL as ''.
    fields = [
        _CSV_AMOUNT if c.name == "amount" else expr for c, expr in zip(req.type.columns, head, strict=False)
    ]
    quote = " OR ".join(f"instr({last}, {ch})" for ch in ("'\"'", "','", "char(10)", "char(13)"))
    tail = f"""CASE WHEN {quote} THEN '"' || replace({last}, '"', '""') || '"' ELSE ifnull({last}, '') END"""
    return f"printf('{'%s,' * len(fields)}', {', '.join(fields)})", tail


# Fields that mean the same on a visit and on each of its events: a condition on them keeps or
# drops whole visits. (`path` is the landing page on a visit but the page on a page view, and
# `content_grouping` the landing page's group on a visit.)
_VISIT_CONDITION_FIELDS = frozenset((*VISIT_FIELDS, "referrer", "landing_page"))


def _visit_filtered(req: ExportRequest, key: str) -> Query:
    """(k, e, g, pv, mc, c, rev) per key under conditions on visit fields only, the page views
    without reading them: each visit's page_views counts on its first day, and `visit_days`
    moves those it made on other days (past midnight) to their own day."""
    where, params = _range(req, "visits", by_pages=True)
    cond, cond_params = _where(req, "visits", lambda c: f"v.{c}")
    days = [req.date_from.isoformat(), req.date_to.isoformat()]
    # visit_days drives the joins (it is small): CROSS JOIN keeps that order.
    moved = "FROM visit_days s CROSS JOIN visits v ON v.id = s.visit_id WHERE s.site_id = ?"
    parts = [
        f"SELECT {key} AS k, COUNT(*) AS e, SUM(page_views >= 2) AS g, SUM(page_views) AS pv, 0 AS mc, "
        f"0 AS c, 0 AS rev FROM visits WHERE {where} GROUP BY 1",
        f"SELECT v.{key}, 0, 0, -SUM(s.page_views), 0, 0, 0 {moved} AND v.day BETWEEN ? AND ?{cond} "
        "GROUP BY 1",
        f"SELECT {'s.day' if key == 'day' else f'v.{key}'}, 0, 0, SUM(s.page_views), 0, 0, 0 {moved} "
        f"AND s.day BETWEEN ? AND ?{cond} GROUP BY 1",
    ]
    params = [
        *params,
        *[req.site_id, *days, *cond_params],
        *[req.site_id, *days, *cond_params],
    ]
    return _aggregate(req, {"microconversions": key, "conversions": key}, parts, params)


def _grouped(req: ExportRequest, key: str) -> Query:
    """(k, e, g, pv, mc, c, rev) per key under conditions on GROUP_FIELDS only, from the daily
    sums per combination of those fields ('' there is a missing value)."""
    cond, params = where_clause(req.conditions, {f: f for f in GROUP_FIELDS}, lambda c: f"NULLIF({c}, '')")
    k = "day" if key == "day" else f"NULLIF({key}, '')"
    return (
        f"SELECT {k} AS k, SUM(entrances) AS e, SUM(engaged) AS g, SUM(page_views) AS pv, "
        "SUM(microconversions) AS mc, SUM(conversions) AS c, SUM(revenue_cents) AS rev "
        f"FROM day_groups WHERE site_id = ? AND day BETWEEN ? AND ?{cond} GROUP BY 1",
        [req.site_id, req.date_from.isoformat(), req.date_to.isoformat(), *params],
    )


def _days_by_path(req: ExportRequest) -> Query:
    """(day, e, g, pv, mc, c, rev) under path conditions only: entrances and engaged ones from the
    daily rollups' landing pages, page views from their paths (each what the condition means on
    its table); conversions and microconversions from the events, whose paths no rollup keeps
    with their revenue (a few rows a visit: 0.2 s instead of 1.4 s on 2.7M page views)."""
    cond, cond_params = where_clause(req.conditions, {"path": "value"})
    rollup = "FROM day_metrics WHERE site_id = ? AND dimension = ? AND day BETWEEN ? AND ?"
    days = [req.date_from.isoformat(), req.date_to.isoformat()]
    parts = [
        "SELECT day AS k, SUM(entrances) AS e, SUM(engaged) AS g, 0 AS pv, 0 AS mc, 0 AS c, 0 AS rev "
        f"{rollup}{cond} GROUP BY 1",
        f"SELECT day, 0, 0, SUM(page_views), 0, 0, 0 {rollup}{cond} GROUP BY 1",
    ]
    params = [req.site_id, "landing_page", *days, *cond_params, req.site_id, "path", *days, *cond_params]
    return _aggregate(req, {"microconversions": "day", "conversions": "day"}, parts, params)


def _shortcut(req: ExportRequest, keys: Mapping[str, str], dimension: str) -> Query | None:
    """(k, e, g, pv, mc, c, rev) per key without reading every event of the range: from the daily
    rollups when unfiltered, and for pages and days under path conditions (days in part); from
    the daily sums per visit-field combination when the conditions and the key are among those
    fields; from the visits when every condition is on a visit field and the key is the visit's.
    None: no shortcut applies, the sums read the events."""
    if req.conditions and dimension == "path" and all(c.field == "path" for c in req.conditions):
        # pages under path conditions: the rollup's value is the landing page for entrances and
        # the page for page views and conversions, as the condition means on each table.
        cond, params = where_clause(req.conditions, {"path": "value"})
        return (
            "SELECT value AS k, SUM(entrances) AS e, SUM(engaged) AS g, SUM(page_views) AS pv, "
            "SUM(microconversions) AS mc, SUM(conversions) AS c, SUM(revenue_cents) AS rev "
            f"FROM day_metrics WHERE site_id = ? AND dimension = 'path' AND day BETWEEN ? AND ?{cond} "
            "GROUP BY 1",
            [req.site_id, req.date_from.isoformat(), req.date_to.isoformat(), *params],
        )
    if req.conditions and dimension == "" and all(c.field == "path" for c in req.conditions):
        return _days_by_path(req)
    if (
        req.conditions
        and dimension in ("", "landing_page")
        and all(c.field == "landing_page" for c in req.conditions)
    ):
        # every metric of the rollup's landing page rows is its visits': the condition's own
        cond, params = where_clause(req.conditions, {"landing_page": "value"})
        return (
            f"SELECT {'value' if dimension else 'day'} AS k, SUM(entrances) AS e, SUM(engaged) AS g, "
            "SUM(page_views) AS pv, SUM(microconversions) AS mc, SUM(conversions) AS c, "
            "SUM(revenue_cents) AS rev FROM day_metrics WHERE site_id = ? AND dimension = 'landing_page' "
            f"AND day BETWEEN ? AND ?{cond} GROUP BY 1",
            [req.site_id, req.date_from.isoformat(), req.date_to.isoformat(), *params],
        )
    if req.conditions:
        key = keys["pageviews"]
        if key in ("day", *GROUP_FIELDS) and all(c.field in GROUP_FIELDS for c in req.conditions):
            return _grouped(req, key)
        if key == keys["visits"] and all(c.field in _VISIT_CONDITION_FIELDS for c in req.conditions):
            return _visit_filtered(req, key)
        return None
    key = "day" if dimension == "" else "NULLIF(value, '')"  # '' is a missing value there
    return (
        f"SELECT {key} AS k, SUM(entrances) AS e, SUM(engaged) AS g, SUM(page_views) AS pv, "
        "SUM(microconversions) AS mc, SUM(conversions) AS c, SUM(revenue_cents) AS rev "
        "FROM day_metrics WHERE site_id = ? AND dimension = ? AND day BETWEEN ? AND ? GROUP BY 1",
        [req.site_id, dimension, req.date_from.isoformat(), req.date_to.isoformat()],
    )


_SUMS = ("k", "e", "g", "pv", "mc", "c", "rev")


def _keys(req: ExportRequest) -> tuple[dict[str, str], str]:
    """Each table's key column for the export's sums, and the rollups' dimension."""
    t = req.type
    if t.kind == "time_series":
        return dict.fromkeys(_ALL, "day"), ""
    if t.kind == "pages":
        return dict(_PAGE_KEYS), "path"
    return dict.fromkeys(_ALL, t.key), t.key


def reads_events(req: ExportRequest) -> bool:
    """Whether an aggregate's sums read every event of the range (no rollup or visit shortcut)."""
    return req.type.kind != "events" and _shortcut(req, *_keys(req)) is None


def regex_per_value(req: ExportRequest) -> bool:
    """Whether a regex condition runs on every value of a field that may have many (a referrer,
    a campaign...): a path's or a landing page's runs once per page."""
    return any(OPERATORS[c.op].is_regex and c.field not in ("path", "landing_page") for c in req.conditions)


def sums_query(req: ExportRequest) -> Query:
    """An aggregate's (k, e, g, pv, mc, c, rev) per key, in no order. Every metric is a sum over
    the days of the range: the sums of two ranges add up to those of both."""
    keys, dimension = _keys(req)
    return _shortcut(req, keys, dimension) or _aggregate(req, keys)


def given_sums(sums: list[list[object]]) -> Query:
    """The sums as `sums_query` gives them, from rows already summed (JSON: one parameter)."""
    columns = ", ".join(f"json_extract(value, '$[{i}]') AS {c}" for i, c in enumerate(_SUMS))
    return f"SELECT {columns} FROM json_each(?)", [json.dumps(sums)]


def export_query(req: ExportRequest, sums: Query | None = None) -> Query:
    """Rows in output order. Aggregates: (key, [content_grouping,] e, g, pv, mc, c, rev_cents),
    from `sums` (default: `sums_query`); pages: (path, views, entrances, conversions,
    content_grouping)."""
    t = req.type
    if t.kind == "events":
        where, params = _range(req, t.key)
        return f"SELECT {', '.join(_event_columns(req))} FROM {t.key} WHERE {where} {_EVENT_ORDER}", params
    sql, params = sums or sums_query(req)
    if t.kind == "time_series":
        return sql + " ORDER BY k", params
    if t.kind == "pages":
        return (
            f"SELECT a.k, a.pv, a.e, a.c, p.content_grouping FROM ({sql}) a "
            "LEFT JOIN pages p ON p.site_id = ? AND p.path = a.k ORDER BY a.pv DESC, a.k",
            [*params, req.site_id],
        )
    if t.name == "landing_pages":
        return (
            f"SELECT a.k, p.content_grouping, a.e, a.g, a.pv, a.mc, a.c, a.rev FROM ({sql}) a "
            "LEFT JOIN pages p ON p.site_id = ? AND p.path = a.k ORDER BY a.e DESC, a.k",
            [*params, req.site_id],
        )
    return sql + " ORDER BY e DESC, k", params


def estimate_query(req: ExportRequest) -> Query:
    """A cheap count of the rows the export will have.

    Raw events: exact (the day catalog's counts when unfiltered, else a count over the index).
    Aggregates: the values the day catalog saw in the range, narrowed by the conditions on the
    export's own dimension, and 0 if a condition matches no value of its dimension at all:
    exact when unfiltered, otherwise at least the real count.
    """
    t = req.type
    days = [req.date_from.isoformat(), req.date_to.isoformat()]
    if t.kind == "events":
        if not req.conditions:
            return (
                "SELECT SUM(rows) FROM day_rows WHERE site_id = ? AND kind = ? AND day BETWEEN ? AND ?",
                [req.site_id, t.key, *days],
            )
        where, where_params = _range(req, t.key)
        return f"SELECT COUNT(*) FROM {t.key} WHERE {where}", where_params
    catalog = "FROM day_keys WHERE site_id = ? AND dimension = ? AND day BETWEEN ? AND ?"
    own, own_params = where_clause(req.conditions, {t.key: "value"})
    sql = f"SELECT COUNT(DISTINCT value) {catalog}{own}"
    params: list[object] = [req.site_id, t.key, *days, *own_params]
    for c in req.conditions:
        if c.field in CATALOG_DIMENSIONS:
            cond, cond_params = where_clause((c,), {c.field: "value"})
            sql += f" AND EXISTS (SELECT 1 {catalog}{cond})"
            params += [req.site_id, c.field, *days, *cond_params]
    return sql, params
