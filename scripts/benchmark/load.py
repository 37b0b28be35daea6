"""HTTP load: CONNECTIONS keep-alive connections polling one URL for a while, with wrk when
installed, else a small asyncio client; requests/s and latency percentiles."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import urllib.parse
from dataclasses import dataclass

CONNECTIONS = 32


@dataclass
class Load:
    tool: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    bad: int  # non-2xx/3xx responses and socket errors


def load_test(url: str, headers: dict[str, str], seconds: float, tool: str) -> Load:
    if tool == "wrk":
        return _wrk(url, headers, seconds)
    return asyncio.run(_python_load(url, headers, seconds))


def _wrk(url: str, headers: dict[str, str], seconds: float) -> Load:
    cmd = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60, check=True).stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise RuntimeError(f"cannot read wrk's {pct}% latency:\n{out}")
        return float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not rps or not total:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = (int(non2xx[1]) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return Load("wrk", float(rps[1]), latency("50"), latency("99"), int(total[1]), bad)


async def _python_load(url: str, headers: dict[str, str], seconds: float) -> Load:
    """Fallback load generator: keep-alive raw sockets, one asyncio task per connection."""
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = u.path + (f"?{u.query}" if u.query else "")
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
    latencies: list[float] = []
    bad = 0
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal bad
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if length is None:
                    raise RuntimeError("response without Content-Length")
                await reader.readexactly(int(length[1]))
                latencies.append(time.perf_counter() - started)
                if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.1 3")):
                    bad += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    elapsed = time.perf_counter() - started
    if not latencies:
        raise RuntimeError("no request completed")
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return Load("python-asyncio", len(latencies) / elapsed, pct(0.50), pct(0.99), len(latencies), bad)
