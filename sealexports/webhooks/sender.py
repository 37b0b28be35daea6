"""One POST to a checked address (http.client, no redirects followed), with a timeout."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass

from sealexports.webhooks.addresses import Target

USER_AGENT = "sealexports-webhooks/1"


@dataclass(frozen=True)
class Response:
    status_code: int | None  # None: no answer (refused, timed out, TLS failed)
    error: str | None
    duration_ms: float


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """TLS to the checked address, with the certificate verified for the URL's host name."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def post(target: Target, headers: dict[str, str], body: bytes, timeout: float) -> Response:
    """POST `body`; the answer's status (its body is read, up to 64 KiB, and dropped)."""
    conn = (_PinnedHTTPS if target.scheme == "https" else _PinnedHTTP)(target, timeout)
    started = time.monotonic()
    try:
        conn.request(
            "POST", target.path, body=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
        )  # fmt: skip
        response = conn.getresponse()
        response.read(65536)
        return Response(response.status, None, (time.monotonic() - started) * 1000)
    except TimeoutError:
        return Response(None, f"no answer within {timeout:g} s", (time.monotonic() - started) * 1000)
    except (OSError, http.client.HTTPException) as e:
        return Response(None, f"{type(e).__name__}: {e}", (time.monotonic() - started) * 1000)
    finally:
        conn.close()
