"""Where a webhook may go: http(s) URLs to public addresses only (SSRF), checked when added and
again at each delivery against what the name resolves to then; the connection goes to the very
address checked, so a name that changes its answer in between (DNS rebinding) gains nothing."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from sealexports.errors import InvalidRequest

MAX_URL_CHARS = 2048


class Unresolvable(InvalidRequest):
    """The host name does not resolve (now): a delivery tries again later."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as in the URL (the Host header, TLS name)
    port: int
    path: str  # with the query
    address: str  # the IP address to connect to


def check_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an http(s) URL; InvalidRequest for anything else."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidRequest(f"a webhook URL has at most {MAX_URL_CHARS} characters", field="url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest(f"a webhook URL must start with http:// or https://, got {url!r}", field="url")
    if not parts.hostname:
        raise InvalidRequest(f"webhook URL {url!r} has no host", field="url")
    if parts.username or parts.password:
        raise InvalidRequest("a webhook URL may not carry a user name or password", field="url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidRequest(f"webhook URL {url!r} has a bad port", field="url") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, path


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(url: str, *, allow_private: bool) -> Target:
    """The URL's target: the first address its host resolves to, which must be public unless
    `allow_private`. InvalidRequest if it does not resolve or resolves to a private address."""
    scheme, host, port, path = check_url(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise Unresolvable(f"webhook host {host!r} does not resolve: {e}", field="url") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        blocked = [a for a in addresses if not is_public(a)]
        if blocked:
            raise InvalidRequest(
                f"webhook host {host!r} resolves to a private, loopback or link-local address "
                f"({blocked[0]}); only public addresses are allowed (the operator can set "
                "webhooks_allow_private = true)",
                field="url",
            )
    return Target(scheme, host, port, path, addresses[0])
