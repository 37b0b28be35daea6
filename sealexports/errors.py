"""Domain errors. They know nothing of HTTP: `api/errors.py` maps each class to a status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the input: the field at fault (None: the item as a whole), why, and,
    in input of many items, where: the line of a file or the index in a batch (from 0)."""

    field: str | None
    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def detail(self) -> dict[str, Any]:
        """The one shape of every `error.detail` item."""
        return {"field": self.field, "line": self.line, "message": self.message}


class SealExportsError(Exception):
    """Base class. `code` is a stable machine-readable name; `detail` holds structured context."""

    code = "error"

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class ConfigError(SealExportsError):
    code = "invalid_config"


class InvalidRequest(SealExportsError):
    """Bad input: an unknown type or filter, a bad date, a malformed expression."""

    code = "invalid_request"

    def __init__(
        self, message: str, *, field: str | None = None, problems: list[Problem] | None = None
    ) -> None:
        if problems is None:
            problems = [Problem(field, message)] if field else []
        super().__init__(message, detail=[p.detail() for p in problems] or None)
        self.field = field
        self.problems = problems


class NotFound(SealExportsError):
    code = "not_found"


class Unauthorized(SealExportsError):
    code = "unauthorized"


class Forbidden(SealExportsError):
    code = "forbidden"


class Expired(SealExportsError):
    code = "expired"


class TooLarge(SealExportsError):
    code = "too_large"


class LimitReached(SealExportsError):
    """A plan's limit is reached; retry after `retry_after` seconds (None: when the caller
    likes, e.g. once a running export has finished)."""

    code = "limit_reached"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnsupportedMediaType(SealExportsError):
    code = "unsupported_media_type"


class NotInstalled(SealExportsError):
    """What the request asks for needs an optional part this installation lacks (an extra)."""

    code = "not_installed"


class Conflict(SealExportsError):
    code = "conflict"


class PreconditionFailed(SealExportsError):
    """A conditional request's precondition (If-Match) does not hold."""

    code = "precondition_failed"


class RangeNotSatisfiable(SealExportsError):
    """A byte range that lies past the end of a `size`-byte file."""

    code = "range_not_satisfiable"

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        self.size = size


class Unavailable(SealExportsError):
    """The service cannot answer now (e.g. its database is unreachable)."""

    code = "unavailable"


class QueryTimeout(SealExportsError):
    """A query ran past its deadline (`query_timeout_seconds`, `job_timeout_seconds`) and was stopped."""

    code = "query_timeout"


class Interrupted(SealExportsError):
    """A query was stopped because its client hung up or the service is stopping."""

    code = "interrupted"


class Cancelled(SealExportsError):
    """An export was cancelled while it was being written."""

    code = "cancelled"


class InvalidEvents(InvalidRequest):
    """An import with bad events: nothing of it was written. `problems` holds the first few
    found, in line order (none: the input as a whole is unreadable); `count` how many in all."""

    code = "invalid_events"

    def __init__(self, message: str, *, problems: list[Problem], count: int) -> None:
        super().__init__(message, problems=problems)
        self.count = count


class SchemaOutdated(SealExportsError):
    """The database was made by an older version: `sealexports migrate` brings it up to date."""

    code = "schema_outdated"
