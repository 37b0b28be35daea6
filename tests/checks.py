"""Assertions shared by several test files: the one HTTP error body, the CLI's one `Error:` line,
and the shape of a text log line."""

from __future__ import annotations

import re
from typing import Any

import httpx
from click.testing import Result

# A text log line starts with the time (UTC, milliseconds) and the level, then the logger's name.
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\S+: ")


def assert_error(r: httpx.Response, status: int, *texts: str) -> dict[str, Any]:
    """The response has `status` and the one error body, whose detail contains each of `texts`;
    the body."""
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert_error_body(body, r.headers["x-request-id"], r.text)
    for text in texts:
        assert text in body["detail"], body["detail"]
    return body


def assert_error_body(body: Any, request_id: str, text: str) -> None:
    """{detail, error: {code, message, detail}, request_id}, the id the X-Request-ID header gave;
    `text`, the body as sent, holds no traceback."""
    assert isinstance(body, dict) and set(body) == {"detail", "error", "request_id"}, body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert isinstance(body["error"], dict) and set(body["error"]) == {"code", "message", "detail"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], body
    assert body["error"]["message"] == body["detail"], body
    assert request_id and body["request_id"] == request_id, body
    assert "Traceback" not in text


def assert_cli_error(result: Result, *expected: str) -> str:
    """Exit status not 0, and exactly one `Error:` line on stderr, with no traceback or noise;
    the line, which contains each of `expected`.

    Besides it, only click's own usage hint ("Usage: ...", "Try ...") may appear.
    """
    assert result.exit_code != 0, result.output
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    others = [line for line in lines if line and not line.startswith(("Error:", "Usage:", "Try "))]
    assert others == [], result.stderr
    assert "Traceback" not in result.output
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


SIZE_UNITS = ("B", "KB", "MB", "GB", "TB")


def assert_human_size(text: str, n: int) -> None:
    """`text` reads as `n` bytes, as the spec writes sizes ("850 B", "43.9 KB", "8.1 MB"): whole
    bytes under 1 KB, else one decimal of the largest unit (steps of 1,024) that keeps the shown
    number at 1.0 or more. Checked by reading the text back, not by formatting `n` again."""
    number, unit = text.split(" ")
    if n < 1024:
        assert text == f"{n} B"
        return
    assert unit in SIZE_UNITS[1:] and re.fullmatch(r"\d+\.\d", number), text
    scale = 1024 ** SIZE_UNITS.index(unit)
    assert abs(float(number) * scale - n) <= 0.05 * scale, f"{text} is not {n:,} bytes"
    assert 1.0 <= float(number) < 1024, f"{text}: another unit shows {n:,} bytes better"
    # The unit below would show 1024.0 or more (1,048,575 bytes is 1.0 MB, not 1024.0 KB).
    assert n / (scale / 1024) >= 1023.95, f"{text}: {n:,} bytes fit the unit below"
