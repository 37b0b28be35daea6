"""Domain errors. They know nothing of HTTP: `api/errors.py` maps each class to a status."""

from __future__ import annotations

from typing import Any


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

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, detail=[{"field": field, "message": message}] if field else None)
        self.field = field


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
    """A plan's concurrency limit is reached; retry after `retry_after` seconds."""

    code = "limit_reached"

    def __init__(self, message: str, *, retry_after: int) -> None:
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
    """An import with bad events: nothing of it was written. `errors` holds the first few
    (line, field, message) found, in line order; `count` how many there were in all."""

    code = "invalid_events"

    def __init__(self, message: str, *, errors: list[tuple[int, str | None, str]], count: int) -> None:
        super().__init__(message)
        self.errors = errors
        self.count = count
        self.detail = [{"line": line, "field": f, "message": m} for line, f, m in errors]


class SchemaOutdated(SealExportsError):
    """The database was made by an older version: `sealexports migrate` brings it up to date."""

    code = "schema_outdated"
