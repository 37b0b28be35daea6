"""The `X-Sealexports-Signature` header: `t=<unix time>,v1=<hex HMAC-SHA256 of "{t}.{body}">`,
one v1 per secret that signs (two while a rotated-out secret keeps its grace time)."""

from __future__ import annotations

import hashlib
import hmac


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def header(secrets: list[str], timestamp: int, body: bytes) -> str:
    return ",".join([f"t={timestamp}", *(f"v1={signature(s, timestamp, body)}" for s in secrets)])


def verify(secret: str, value: str, body: bytes, now: float, tolerance: float = 300) -> bool:
    """What a receiver does (and the tests): some v1 matches, and t is within `tolerance` s of now."""
    parts = [p.partition("=") for p in value.split(",")]
    stamps = [v for k, _, v in parts if k == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now - int(stamps[0])) > tolerance:
        return False
    expected = signature(secret, int(stamps[0]), body)
    return any(k == "v1" and hmac.compare_digest(v, expected) for k, _, v in parts)
