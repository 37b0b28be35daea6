"""Log lines for operators: every line has a time and a level, in text or JSON (`log_format`).

Context travels in context variables, not in messages: an HTTP request's `request_id` (set by
the access log around the whole request) and a job's `job_id`, `site` and `type` (set by the
runner while it runs the job) are added to every line logged meanwhile, ours or a library's.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

_context: ContextVar[dict[str, str]] = ContextVar("log_context", default={})  # noqa: B039 (never mutated)


@contextmanager
def context(**fields: str) -> Iterator[None]:
    """Add `fields` to every line logged inside the block (this thread or task only)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def set_context(**fields: str) -> Any:
    """`context()` for callers that cannot use a `with` (ASGI); returns the token for `reset_context`."""
    return _context.set({**_context.get(), **fields})


def reset_context(token: Any) -> None:
    _context.reset(token)


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _timestamp(record: logging.LogRecord) -> str:
    seconds = int(record.created)
    return f"{_second(seconds)}.{int((record.created - seconds) * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """`2026-11-29T22:45:01.123Z INFO    sealexports.jobs: export completed rows=10 job_id=...`"""

    def format(self, record: logging.LogRecord) -> str:
        head = f"{_timestamp(record)} {record.levelname:<7} {record.name}:"
        line = f"{head} {record.getMessage()}"
        fields = _context.get()
        if fields:
            line += "".join(f" {k}={v}" for k, v in fields.items())
        if record.exc_info:  # each line of the traceback keeps the time and level too
            line += "".join(f"\n{head} | {t}" for t in self.formatException(record.exc_info).splitlines())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, then the context's fields and the
    record's own (`log.info(..., extra={"fields": {...}})`, which text lines leave to the message)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_context.get(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """One handler on the root logger, for our lines and every library's (uvicorn, huey)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = getattr(logging, level.upper())
    root.setLevel(numeric)
    # huey tells of every task and every minute's periodic sweep at info: only at debug here
    # (our runner logs each job with its context; the sweep logs when it expired something).
    logging.getLogger("huey").setLevel(numeric if numeric <= logging.DEBUG else logging.WARNING)
    logging.captureWarnings(True)
