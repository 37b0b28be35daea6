"""Filters as data: simple keys and `advanced_filters` become Conditions; each operator is a row.

Values are only ever bound parameters; column names come from each table's whitelist.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from sealexports.errors import InvalidRequest
from sealexports.normal import filter_value
from sealexports.storage.database import REGEX_TIMEOUT_SECONDS, take_slow_regex
from sealexports.storage.schema import VISIT_FIELDS

FILTER_KEYS = (*VISIT_FIELDS, "content_grouping", "conversion_type", "advanced_filters")
ADVANCED_FIELDS = (
    *VISIT_FIELDS,
    "path",
    "landing_page",
    "content_grouping",
    "conversion_type",
    "referrer",
)
MAX_VALUES = 1000
# Far above what a person writes, far below what hurts: each condition is evaluated on every row
# (490 regexes took 31 s of CPU on one estimate; 1,001 conditions overflowed SQLite's expression tree).
MAX_CONDITIONS = 20
MAX_REGEX_CONDITIONS = 5


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: str | tuple[str, ...]


@dataclass(frozen=True)
class Operator:
    sql: str  # {col} is the column, {marks} the placeholders of a list value
    is_list: bool = False
    is_regex: bool = False


# A missing value equals nothing: the negative operators keep rows where the field is missing.
OPERATORS: Mapping[str, Operator] = {
    "eq": Operator("{col} = ?"),
    "ne": Operator("{col} IS NOT ?"),
    "contains": Operator("instr({col}, ?) > 0"),
    "not_contains": Operator("({col} IS NULL OR instr({col}, ?) = 0)"),
    "regex": Operator("regexp(?, {col})", is_regex=True),
    "not_regex": Operator("NOT regexp(?, {col})", is_regex=True),
    "in": Operator("{col} IN ({marks})", is_list=True),
    "not_in": Operator("({col} IS NULL OR {col} NOT IN ({marks}))", is_list=True),
}

# Each table: which column a field means there. None: the field does not apply (no condition);
# e.g. conversion_type never restricts page views or entrances.
_EVENT_COLUMNS = {f: f for f in (*VISIT_FIELDS, "referrer", "landing_page", "path", "content_grouping")}
TABLE_COLUMNS: Mapping[str, Mapping[str, str | None]] = {
    "visits": {**_EVENT_COLUMNS, "path": "landing_page", "conversion_type": None},
    "pageviews": {**_EVENT_COLUMNS, "conversion_type": None},
    "conversions": {**_EVENT_COLUMNS, "conversion_type": "conversion_type"},
    "microconversions": {**_EVENT_COLUMNS, "conversion_type": "conversion_type"},
}

# A comma starts a new expression only where `field:op:` follows, so values may hold commas.
_SPLIT = re.compile(r",(?=\s*[A-Za-z_]\w*:[A-Za-z_]\w*:)")


def parse_filters(raw: object) -> tuple[Condition, ...]:
    """Validate a `filters` object: each key a string or a non-empty list of strings."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise InvalidRequest("filters must be an object", field="filters")
    conditions: list[Condition] = []
    for key, value in raw.items():
        where = f"filters.{key}"
        if key not in FILTER_KEYS:
            raise InvalidRequest(
                f"unknown filter key {key!r} (expected one of {', '.join(FILTER_KEYS)})",
                field=where,
            )
        if value is None:
            continue
        if key == "advanced_filters":
            if not isinstance(value, str):
                raise InvalidRequest("advanced_filters must be a string", field=where)
            conditions.extend(parse_advanced(value))
        elif isinstance(value, str):
            conditions.append(_condition(key, "eq", _non_empty(value, where)))
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            if len(value) > MAX_VALUES:
                raise InvalidRequest(f"{where} has more than {MAX_VALUES} values", field=where)
            conditions.append(_condition(key, "in", tuple(_non_empty(v, where) for v in value)))
        else:
            raise InvalidRequest(f"{where} must be a string or a non-empty list of strings", field=where)
    return tuple(conditions)


def parse_advanced(expression: str) -> list[Condition]:
    """`field:op:value[,field:op:value...]`, ANDed; each split on its first two colons only."""
    where = "filters.advanced_filters"
    if not expression.strip():
        return []
    parts = _SPLIT.split(expression)
    if len(parts) > MAX_CONDITIONS:
        raise InvalidRequest(
            f"advanced_filters has {len(parts)} conditions; at most {MAX_CONDITIONS} are allowed",
            field=where,
        )
    conditions = []
    regexes = 0
    for part in parts:
        part = part.lstrip()  # spaces after a comma; a value keeps its trailing spaces
        pieces = part.split(":", 2)
        if len(pieces) != 3:
            raise InvalidRequest(f"malformed advanced filter {part!r}: expected field:op:value", field=where)
        name, op, value = pieces
        if name not in ADVANCED_FIELDS:
            raise InvalidRequest(
                f"unknown field {name!r} in advanced filter {part!r} "
                f"(expected one of {', '.join(ADVANCED_FIELDS)})",
                field=where,
            )
        operator = OPERATORS.get(op)
        if operator is None:
            raise InvalidRequest(
                f"unknown operator {op!r} in advanced filter {part!r} "
                f"(expected one of {', '.join(OPERATORS)})",
                field=where,
            )
        if not value:
            raise InvalidRequest(f"empty value in advanced filter {part!r}", field=where)
        if operator.is_regex:
            regexes += 1
            if regexes > MAX_REGEX_CONDITIONS:
                raise InvalidRequest(
                    f"advanced_filters has more than {MAX_REGEX_CONDITIONS} regex or not_regex "
                    f"conditions; at most {MAX_REGEX_CONDITIONS} are allowed",
                    field=where,
                )
            import regex  # imported when a filter uses it (a command starts faster without it)

            try:
                regex.compile(value)  # the engine SQLite's regexp() uses
            except (regex.error, OverflowError, RecursionError) as e:  # a{99999999999}; deep nesting
                raise InvalidRequest(f"invalid regex in advanced filter {part!r}: {e}", field=where) from None
        if operator.is_list:
            items = tuple(value.split("|"))
            if "" in items or len(items) > MAX_VALUES:
                raise InvalidRequest(
                    f"bad list in advanced filter {part!r}: 1-{MAX_VALUES} non-empty values separated by '|'",
                    field=where,
                )
            conditions.append(_condition(name, op, items))
        else:
            conditions.append(_condition(name, op, value))
    return conditions


def where_clause(
    conditions: tuple[Condition, ...],
    table: str | Mapping[str, str | None],
    alias: Callable[[str], str] = str,
) -> tuple[str, list[str]]:
    """SQL (ANDed, starting with ' AND', or '') and parameters for the conditions on one table
    (or on the columns a mapping names: fields it does not name add no condition)."""
    columns = TABLE_COLUMNS[table] if isinstance(table, str) else table
    sql: list[str] = []
    params: list[str] = []
    for c in conditions:
        column = columns.get(c.field)
        if column is None:
            continue
        operator = OPERATORS[c.op]
        values = list(c.value) if isinstance(c.value, tuple) else [c.value]
        marks = ", ".join("?" * len(values))
        sql.append(operator.sql.format(col=alias(column), marks=marks))
        params.extend(values)
    return "".join(f" AND {s}" for s in sql), params


def _condition(name: str, op: str, value: str | tuple[str, ...]) -> Condition:
    """A condition with its values as ingest stores them (`country=es` means ES)."""
    if isinstance(value, tuple):
        return Condition(name, op, tuple(filter_value(name, op, v) for v in value))
    return Condition(name, op, filter_value(name, op, value))


def _non_empty(value: str, where: str) -> str:
    if not value:
        raise InvalidRequest(f"{where} must not be empty", field=where)
    return value


@contextmanager
def slow_regex_is_bad_input() -> Iterator[None]:
    """A regex that times out on a value is the caller's error: say which, as a 422."""
    try:
        yield
    except sqlite3.OperationalError:
        pattern = take_slow_regex()
        if pattern is None:
            raise
        raise InvalidRequest(
            f"regex {pattern!r} is too slow: it took over {REGEX_TIMEOUT_SECONDS * 1000:.0f} ms on "
            "one value; simplify it",
            field="filters.advanced_filters",
        ) from None
