"""Where clients reach the service: forwarded headers from trusted proxies, and the path prefix.

`ProxyHeaders` runs before routing, so the rest of the app sees each request as the client sent it
to the proxy: its scheme, its Host, its address, and the prefix it was served under (root_path).
Forwarded headers are honoured only when the peer is in `trusted_proxies`; from anyone else they
are ignored, or any client could choose the host its download links point at.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import urlsplit

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from sealexports.config import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# A host name or an IPv4 address or a bracketed IPv6 address, with an optional port.
_HOST = re.compile(r"([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")
_SCHEMES = ("http", "https")
_ALL_INTERFACES = ("0.0.0.0", "::", "")


class ProxyHeaders:
    """ASGI wrapper: root_path on every request; scheme, Host and client from a trusted proxy.

    With a root_path, requests work whether the proxy strips the prefix or keeps it.
    """

    def __init__(self, app: ASGIApp, trusted_proxies: Iterable[str], root_path: str = "") -> None:
        self.app = app
        self.trusted: list[Network] = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]
        self.root_path = root_path
        # Parsing the peer's address is a twentieth of a status poll's time; peers repeat.
        self.trusts = functools.lru_cache(maxsize=4096)(self._trusts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            if self.root_path:
                _mount(scope, self.root_path)
            client = scope.get("client")
            if client and self.trusts(client[0]) and _forwarded_in(scope["headers"]):
                _apply_forwarded(scope, self.trusts)
        await self.app(scope, receive, send)

    def _trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)


def _mount(scope: Scope, root_path: str) -> None:
    """Set root_path; a path without the prefix (a proxy that strips it) gets it put back, as
    Litestar's router removes the prefix's first occurrence, wherever it is."""
    scope["root_path"] = root_path
    path = scope["path"]
    if path != root_path and not path.startswith(root_path + "/"):
        scope["path"] = root_path + path
        scope["raw_path"] = root_path.encode() + (scope.get("raw_path") or path.encode())


def _forwarded_in(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a proxy's headers are there (a peer on the trusted list also calls directly)."""
    return any(name.lower().startswith((b"forwarded", b"x-forwarded-")) for name, _ in headers)


def _apply_forwarded(scope: Scope, trusts: Callable[[str], bool]) -> None:
    headers = {name: value.decode("latin-1") for name, value in _joined(scope["headers"])}
    if "forwarded" in headers:
        fields = _forwarded(headers["forwarded"])
        proto, host, addresses = fields.get("proto"), fields.get("host"), _split(fields.get("for"))
    else:
        proto = _last(headers.get("x-forwarded-proto"))
        host = _last(headers.get("x-forwarded-host"))
        addresses = _split(headers.get("x-forwarded-for"))
    if proto and proto.lower() in _SCHEMES:
        scope["scheme"] = proto.lower()
    if host and _HOST.fullmatch(host):
        scope["headers"] = [(n, v) for n, v in scope["headers"] if n != b"host"] + [
            (b"host", host.encode("latin-1"))
        ]
    client = _client(addresses, trusts)
    if client:
        scope["client"] = (client, 0)


def _joined(headers: Iterable[tuple[bytes, bytes]]) -> Iterable[tuple[str, bytes]]:
    """Repeated header lines joined with commas, as HTTP allows."""
    out: dict[str, bytes] = {}
    for raw_name, value in headers:
        name = raw_name.decode("latin-1").lower()
        out[name] = out[name] + b"," + value if name in out else value
    return out.items()


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _last(value: str | None) -> str | None:
    """The value the nearest proxy wrote (the last one)."""
    values = _split(value)
    return values[-1] if values else None


def _forwarded(value: str) -> dict[str, str]:
    """RFC 7239, simple forms: the last element's proto and host, and every element's `for`.
    A malformed pair makes the whole header count as absent."""
    fields: dict[str, str] = {}
    addresses: list[str] = []
    for element in value.split(","):
        current: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in element.split(";"))):
            key, sep, val = pair.partition("=")
            if not sep:
                return {}
            current[key.strip().lower()] = val.strip().strip('"')
        if "for" in current:
            addresses.append(_unbracket(current["for"]))
        fields = current
    fields["for"] = ",".join(addresses)
    return fields


def _unbracket(node: str) -> str:
    """`192.0.2.1:4711` or `[2001:db8::1]:4711` -> the address alone."""
    if node.startswith("["):
        return node[1:].partition("]")[0]
    return node.partition(":")[0] if node.count(":") == 1 else node


def _client(addresses: Sequence[str], trusts: Callable[[str], bool]) -> str | None:
    """The nearest address that is not one of our proxies: the client, as far as we can tell."""
    for address in reversed(addresses):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return None
        if not trusts(address):
            return address
    return addresses[0] if addresses else None


def base_url(settings: Settings, request_base: str) -> str:
    """Where download links point: public_url when set, else the request's own base URL
    (scheme, host and root_path as the client used them)."""
    return settings.public_url or request_base.rstrip("/")


def link_warnings(settings: Settings) -> list[str]:
    """What could make download links wrong with these settings, for `serve` to say at start-up."""
    warnings = []
    public = urlsplit(settings.public_url)
    if not settings.public_url and settings.host in _ALL_INTERFACES:
        warnings.append(
            f"public_url is unset and serve listens on all interfaces ({settings.host or '*'}): download "
            "links follow each request's Host header (X-Forwarded-* only from trusted_proxies); set "
            "public_url to the address clients use if that is not it"
        )
    if settings.public_url and _is_loopback(public.hostname or "") and not _is_loopback(settings.host):
        warnings.append(
            f"public_url {settings.public_url} is a loopback address but serve listens on {settings.host}: "
            "clients elsewhere would get download links to their own machine"
        )
    prefixed = public.path.rstrip("/").endswith(settings.root_path)
    if settings.public_url and settings.root_path and not prefixed:
        warnings.append(
            f"root_path is {settings.root_path} but public_url {settings.public_url} does not end with it: "
            "download links would miss the prefix"
        )
    if not settings.public_url and not settings.trusted_proxies and _is_loopback(settings.host):
        warnings.append(
            "serve listens on a loopback address (behind a proxy?) with public_url unset and no "
            "trusted_proxies: download links carry whatever Host the proxy sends"
        )
    return warnings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
