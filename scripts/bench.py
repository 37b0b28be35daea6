"""Benchmark sealexports against the tools it competes with, side by side, in one run.

Run it as `scripts/bench` (sets up .venv with the bench extra if needed). It seeds its own data
into `.bench/bench-{visits}-{days}.db` (reused if it exists), then runs every measure
`--repeat` times, interleaved (rep 1 of every contender, then rep 2...), and reports medians:

    raw_csv / raw_json   microconversions, whole range: ours (engine.write_file, in a fresh
                         process) vs the sqlite3 shell running the same SQL, sqlite-utils, Datasette
    agg_{type}           every aggregate over the last 30 days: ours vs its bare SQL in sqlite3
    estimate_{type}      engine.estimate() and POST /exports/estimate vs the export they estimate
    memory_{fmt}         peak RSS of a ~10,000-row export vs a ~1,000,000-row one
    http                 status polls/s under 32 connections while two big exports run,
                         vs a bare Litestar app on the same uvicorn settings (and, for
                         information, the same polls with no export running: ours-idle)
    seeding              rows/s while seeding (when it seeds)

It prints a table, writes the figures as JSON (`--json`, default `<data>/results.json`), and its
last line sums up every target: `targets: 5/7 met — raw_csv 0.93<=1.0 ok, ...`. Exit status 1
means a contender failed or produced the wrong number of rows, not that a target was missed.

Every contender's output is counted (rows) so that none wins by doing less. Servers listen on
loopback only and are stopped at exit; one run at a time per data folder (a lock waits).
Our server runs with the plan's request rate limit raised out of reach (see BENCH_CONFIG).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import functools
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sealexports import demo
from sealexports.config import Settings
from sealexports.exports import engine
from sealexports.exports.queries import export_query
from sealexports.exports.request import ExportRequest, build_request
from sealexports.storage import accounts
from sealexports.storage.database import connect, transaction
from sealexports.storage.events import InsertCounts, insert_visits

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # .venv/bin: sealexports, sqlite-utils, datasette
SQLITE3 = shutil.which("sqlite3") or "/usr/bin/sqlite3"
SITE = "demo"
TIMEZONE = "Europe/Madrid"
END = date(2025, 6, 30)  # fixed, so that a cached database is the same data
SEED = 42

DEFAULT_VISITS = 3_700_000  # ~2.7 page views and ~0.28 microconversions a visit
DEFAULT_DAYS = 30
QUICK_VISITS, QUICK_DAYS = 2_000, 3
MIN_PAGEVIEWS, MIN_MICRO = 2_000_000, 1_000_000

AGGREGATES = (
    "pages", "sources", "mediums", "campaigns", "terms", "countries", "devices", "browsers", "os",
    "time_series", "landing_pages",
)  # fmt: skip
ESTIMATED = ("conversions", "microconversions", "sources", "pages")
MEASURES = ("raw", "aggregates", "estimate", "memory", "http")
CONNECTIONS = 32
SUBPROCESS_TIMEOUT = 3600
MIB = 1024 * 1024
SMALL, LARGE = "~10k rows", "~1M rows"  # the memory measure's two exports

# Runs one export in a fresh interpreter: argv = db, output file, request as JSON.
EXPORT_CHILD = """
import json, sys, time
from pathlib import Path
from sealexports.exports import engine
from sealexports.exports.request import build_request
from sealexports.storage.database import connect
db, out, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
conn = connect(db, migrate=False)
req = build_request(spec["site"], spec["type"], spec["format"], spec["from"], spec["to"], spec["filters"])
started = time.perf_counter()
info = engine.write_file(conn, req, Path(out))
seconds = time.perf_counter() - started
# VmHWM: this process's peak RSS since exec. Not ru_maxrss: exec carries the parent's over.
with open("/proc/self/status") as f:
    peak_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"rows": info.rows, "seconds": seconds, "peak_rss_kib": peak_kib}))
"""

# Our server's config: the benchmark polls far faster than a plan allows (enterprise: 10,000
# requests a minute), so the limiter still runs on every request but never refuses one.
BENCH_CONFIG = """
[plans.enterprise]
requests_per_minute = 1000000000
"""

# The two web apps, served alike: one uvicorn worker, log level warning, no access log.
# Ours is what `sealexports serve` runs (create_app + uvicorn.run); serve itself hard-codes
# log_level="info" with the access log on, which costs a bare request ~15% here.
SERVE = """
import sys
import uvicorn
port = int(sys.argv[1])
{app}
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""
OURS_APP = SERVE.format(
    app="""
from pathlib import Path
from sealexports.api.app import create_app
from sealexports.config import load_settings
settings = load_settings().replace(database=Path(sys.argv[2]), host="127.0.0.1", port=port)
app = create_app(settings)
"""
)
BARE_APP = SERVE.format(
    app="""
from litestar import Litestar, get

@get("/ping", sync_to_thread=False)
def ping() -> dict:
    return {"ok": True}

app = Litestar(route_handlers=[ping])
"""
)


# --- Results and targets ------------------------------------------------------------------------


@dataclass
class Result:
    measure: str  # a row group of the table, e.g. raw_csv
    contender: str
    unit: str = "s"
    reference: bool = False
    values: list[float] = field(default_factory=list)
    note: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def key(self) -> tuple[str, str]:
        return self.measure, self.contender


@dataclass
class Target:
    name: str
    measure: str  # the table row it is shown on: (measure, contender)
    contender: str
    what: str  # how `value` is computed, e.g. "ours/sqlite3"
    value: float | None  # None: a contender failed
    op: str  # "<=" or ">="
    limit: float
    unit: str = ""
    seconds: float | None = None  # an absolute bound too (estimates): seconds < limit_seconds
    limit_seconds: float | None = None

    @property
    def met(self) -> bool:
        if self.value is None:
            return False
        ok = self.value <= self.limit if self.op == "<=" else self.value >= self.limit
        if self.limit_seconds is not None:
            ok = ok and self.seconds is not None and self.seconds < self.limit_seconds
        return ok

    @property
    def check(self) -> str:
        """e.g. `0.93<=1.0 ok`, `+3.1MiB<=20MiB ok`, `0.012<=0.1 & 4ms<50ms ok`."""
        if self.value is None:
            return "error MISSED"
        value = f"{round(self.value, 1) + 0.0:+.1f}" if self.unit else fmt_ratio(self.value)  # no -0.0
        s = f"{value}{self.unit}{self.op}{self.limit:g}{self.unit}"
        if self.limit_seconds is not None and self.seconds is not None:
            s += f" & {self.seconds * 1000:.0f}ms<{self.limit_seconds * 1000:.0f}ms"
        return f"{s} {'ok' if self.met else 'MISSED'}"

    @property
    def text(self) -> str:
        return f"{self.name} {self.check}"


class Results:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Result] = {}

    def add(
        self,
        measure: str,
        contender: str,
        value: float | None,
        *,
        unit: str = "s",
        reference: bool = False,
        note: str = "",
        error: str | None = None,
    ) -> None:
        r = self.rows.setdefault((measure, contender), Result(measure, contender, unit, reference))
        if value is not None:
            r.values.append(value)
        if note:
            r.note = note
        if error:
            r.errors.append(error)
            log(f"  ERROR {measure}/{contender}: {error}")

    def get(self, measure: str, contender: str) -> Result | None:
        return self.rows.get((measure, contender))

    def median(self, measure: str, contender: str) -> float | None:
        r = self.get(measure, contender)
        return None if r is None or r.errors else r.median

    def reference(self, measure: str) -> Result | None:
        return next((r for r in self.rows.values() if r.measure == measure and r.reference), None)

    def ratio(self, measure: str, a: str, b: str) -> float | None:
        x, y = self.median(measure, a), self.median(measure, b)
        return None if x is None or not y else x / y

    @property
    def errors(self) -> list[str]:
        return [f"{r.measure}/{r.contender}: {e}" for r in self.rows.values() for e in r.errors]


def build_targets(res: Results) -> list[Target]:
    """Every target whose contenders ran (a failed contender gives value None: MISSED)."""
    targets: list[Target] = []

    def ratio(name: str, measure: str, a: str, b: str, op: str, limit: float, **kw: Any) -> None:
        if res.get(measure, a) and res.get(measure, b):
            targets.append(Target(name, measure, a, f"{a}/{b}", res.ratio(measure, a, b), op, limit, **kw))

    ratio("raw_csv", "raw_csv", "ours", "sqlite3", "<=", 1.0)
    ratio("raw_json", "raw_json", "ours", "sqlite3", "<=", 1.2)
    ratio("raw_csv_sqlite_utils", "raw_csv", "sqlite-utils", "ours", ">=", 2.0)
    ratio("raw_csv_datasette", "raw_csv", "datasette", "ours", ">=", 2.0)
    for t in AGGREGATES:
        ratio(f"agg_{t}", f"agg_{t}", "ours", "sqlite3", "<=", 1.1)
    for t in ESTIMATED:
        for contender, suffix in (("estimate", ""), ("http_estimate", "_http")):
            seconds = res.median(f"estimate_{t}", contender)
            ratio(f"estimate_{t}{suffix}", f"estimate_{t}", contender, "export", "<=", 0.1,
                  seconds=seconds, limit_seconds=0.05)  # fmt: skip
    for fmt in ("csv", "json"):
        measure = f"memory_{fmt}"
        if res.get(measure, LARGE) and res.get(measure, SMALL):
            small, large = res.median(measure, SMALL), res.median(measure, LARGE)
            diff = None if small is None or large is None else large - small
            targets.append(Target(measure, measure, LARGE, "1M-10k", diff, "<=", 20, unit="MiB"))
    ratio("http", "http", "ours", "bare", ">=", 0.6)
    return targets


# --- Output -------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.4f} s" if value < 0.1 else f"{value:.3f} s"
    if unit in ("rows/s", "req/s"):
        return f"{value:,.0f} {unit}"
    return f"{value:,.1f} {unit}"


def fmt_ratio(value: float) -> str:
    return "<0.001" if 0 <= value < 0.001 else f"{value:.3g}"


def print_table(res: Results, targets: list[Target]) -> None:
    header = ("measure", "contender", "median", "ratio", "target", "note")
    lines = [header]
    if res.get("seeding", "ours") is None:
        lines.append(("seeding", "ours", "cached", "", "", "data file reused (--reseed to measure)"))
    for r in res.rows.values():
        ref = res.reference(r.measure)
        ratio = ""
        if ref is not None and r.median is not None and ref.median:
            ratio = "ref" if r is ref else fmt_ratio(r.median / ref.median)
        marks = "; ".join(f"{t.what} {t.check}" for t in targets if (t.measure, t.contender) == r.key)
        note = "; ".join([*(f"ERROR {e}" for e in r.errors), *([r.note] if r.note else [])])
        lines.append((r.measure, r.contender, fmt_value(r.median, r.unit), ratio, marks, note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for n, line in enumerate(lines):
        print("  ".join([*(c.ljust(w) for c, w in zip(line, widths, strict=False)), line[-1]]).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in [*widths, 4]))


def summary_line(targets: list[Target]) -> str:
    met = sum(t.met for t in targets)
    return f"targets: {met}/{len(targets)} met — " + ", ".join(t.text for t in targets)


# --- Processes, servers, HTTP -------------------------------------------------------------------


def run_timed(cmd: Sequence[str], stdout_path: Path) -> float:
    """Run `cmd` with stdout to a file; its wall time in seconds."""
    err_path = stdout_path.with_name(stdout_path.name + ".stderr")
    with open(stdout_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        try:
            proc.wait(SUBPROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        elapsed = time.perf_counter() - started
    stderr = err_path.read_text(errors="replace")
    err_path.unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} exited with {proc.returncode}: {stderr.strip()[-500:]}")
    return elapsed


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str, url: str, *, body: object = None, headers: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    hdrs = {**(headers or {}), **({"Content-Type": "application/json"} if data else {})}
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Server:
    """A server subprocess on loopback, ready when `ready_path` answers 200; stop() ends it."""

    def __init__(
        self, name: str, cmd: list[str], port: str, ready_path: str, log_dir: Path, env: dict[str, str]
    ):
        self.name, self.port = name, int(port)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(
                cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start: {self.log_tail()}")
            try:
                if http("GET", self.base + ready_path, timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} not ready after 90 s: {self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-800:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(20)


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


# --- Data helpers -------------------------------------------------------------------------------


def sql_literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def inline_sql(sql: str, params: Sequence[object]) -> str:
    """The query with its parameters as literals (our SQL has no '?' other than placeholders)."""
    parts = sql.split("?")
    if len(parts) != len(params) + 1:
        raise ValueError(f"{len(parts) - 1} placeholders for {len(params)} parameters")
    out = [parts[0]]
    for value, rest in zip(params, parts[1:], strict=True):
        out += [sql_literal(value), rest]
    return "".join(out)


def count_rows(path: Path, fmt: str) -> int:
    r"""Data rows of a CSV file (lines but the header) or of a JSON array with one object a line
    (ours writes `[\n{..},\n{..}\n]`, the sqlite3 shell `[{..},\n{..}]`). No field has a newline."""
    newlines = objects = 0
    first = last = b""
    with open(path, "rb") as f:
        while chunk := f.read(16 * MIB):
            first = first or chunk[:2]
            newlines += chunk.count(b"\n")
            objects += (last + chunk[:1]).count(b"\n{") + chunk.count(b"\n{")
            last = chunk[-1:]
    if fmt == "csv":
        return max(0, newlines + (last not in (b"", b"\n")) - 1)
    return objects + (first == b"[{")


def size(path: Path) -> str:
    return f"{path.stat().st_size / MIB:,.1f} MiB"


def rotate(items: list[T], n: int) -> list[T]:
    """Start each repetition with a different contender so that none always goes first."""
    k = n % len(items) if items else 0
    return items[k:] + items[:k]


# --- The benchmark ------------------------------------------------------------------------------

MemorySpec = tuple[str, str, dict[str, str], int]  # date_from, date_to, filters, rows


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data: Path = args.data
        self.data.mkdir(parents=True, exist_ok=True)
        self.db = self.data / f"bench-{args.visits}-{args.days}.db"
        self.tmp = Path(tempfile.mkdtemp(prefix="run-", dir=self.data))
        self.date_to = END
        self.date_from = END - timedelta(days=args.days - 1)
        self.last30_from = END - timedelta(days=min(30, args.days) - 1)
        self.results = Results()
        self.meta: dict[str, Any] = {}
        self.servers: dict[str, Server] = {}
        self._key: str | None = None
        self._expected: dict[str, int] = {}
        self._memory_specs: dict[str, MemorySpec] | None = None
        if args.loadgen == "auto":
            self.loadgen = "wrk" if shutil.which("wrk") else "python"
        else:
            self.loadgen = args.loadgen

    # Data ---------------------------------------------------------------------------------------

    def prepare(self) -> None:
        if self.db.exists() and not self.args.reseed:
            log(f"data: reusing {self.db} (--reseed to seed it again)")
            self.migrate()
        else:
            self.seed()
        self.check_data()

    def migrate(self) -> None:
        """Bring a cached data file up to the current schema (the engine may have changed)."""
        count = "SELECT COUNT(*) FROM _sqlite_migrations"
        before = self.query(count)[0][0]
        started = time.perf_counter()
        with contextlib.closing(connect(self.db)) as conn:
            if (applied := conn.execute(count).fetchone()[0] - before) > 0:
                elapsed = time.perf_counter() - started
                log(f"data: applied {applied} new migration(s) in {elapsed:.1f} s; running ANALYZE")
                conn.execute("ANALYZE")

    def query(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """All rows of one statement, on a connection of its own (autocommit)."""
        with contextlib.closing(sqlite3.connect(self.db, isolation_level=None)) as conn:
            return conn.execute(sql, params).fetchall()

    def seed(self) -> None:
        """generate() + insert_visits() in one transaction, into a temporary file renamed when done."""
        tmp = self.db.with_name(self.db.name + ".tmp")
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        visits, days = self.args.visits, self.args.days
        log(f"data: seeding {visits:,} visits over {days} days into {self.db} ...")
        conn = connect(tmp)
        site = accounts.create_site(conn, SITE, name="Bench site", timezone=TIMEZONE, plan="enterprise")
        step = max(1, visits // 10)
        shown = [0]

        def progress(c: InsertCounts) -> None:
            if c.visits - shown[0] >= step:
                shown[0] = c.visits
                log(f"  seeding: {c.visits:,}/{visits:,} visits")

        visit_iter = demo.generate(TIMEZONE, end=END, days=days, visits=visits, seed=SEED)
        started = time.perf_counter()
        with transaction(conn):
            counts = insert_visits(conn, site, visit_iter, progress=progress)
        elapsed = time.perf_counter() - started
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        os.replace(tmp, self.db)
        rate = counts.rows / elapsed
        note = f"{counts.rows:,} rows in {elapsed:.0f} s (demo.generate + insert_visits, one transaction)"
        self.results.add("seeding", "ours", rate, unit="rows/s", note=note)
        self.meta["seeded"] = {**asdict(counts), "seconds": elapsed}
        log(f"data: seeded {counts.rows:,} rows in {elapsed:.1f} s ({rate:,.0f} rows/s)")

    def check_data(self) -> None:
        self.query("UPDATE accounts SET plan = 'enterprise'")  # two background jobs at once
        # Within the range: a few late visits spill past midnight of its last day.
        window = [SITE, self.date_from.isoformat(), self.date_to.isoformat()]
        count = "SELECT COUNT(*) FROM {} WHERE site_id = ? AND day BETWEEN ? AND ?"
        visits, pageviews = (
            self.query(count.format(table), window)[0][0] for table in ("visits", "pageviews")
        )
        micro = self.expected_rows(self.request("microconversions", "csv"))
        days = self.args.days
        ok = pageviews >= MIN_PAGEVIEWS and days >= 30 and micro >= MIN_MICRO
        self.meta["data"] = {
            "visits": visits, "pageviews": pageviews, "days": days, "microconversions": micro,
            "meets_spec_size": ok,
        }  # fmt: skip
        log(
            f"data: {visits:,} visits, {pageviews:,} page views over {days} days, {micro:,} microconversions "
            f"({'meets' if ok else 'is BELOW'} the spec's >= {MIN_PAGEVIEWS:,} page views over >= 30 days "
            f"and >= {MIN_MICRO:,} microconversions)"
        )

    def request(
        self, export_type: str, fmt: str, date_from: date | None = None, filters: dict[str, str] | None = None
    ) -> ExportRequest:
        start = (date_from or self.date_from).isoformat()
        return build_request(SITE, export_type, fmt, start, self.date_to.isoformat(), filters or {})

    def expected_rows(self, req: ExportRequest) -> int:
        """Rows of the request's own SQL, counted by SQLite (independently of any writer)."""
        sql = inline_sql(*export_query(req))
        if sql not in self._expected:
            self._expected[sql] = self.query(f"SELECT COUNT(*) FROM ({sql})")[0][0]
        return self._expected[sql]

    # Contenders, servers ------------------------------------------------------------------------

    def child_export(self, req: ExportRequest, out: Path) -> tuple[float, dict[str, Any]]:
        """engine.write_file in a fresh interpreter: its wall time, and what it reports
        ({"rows", "seconds" spent in write_file, "peak_rss_kib"})."""
        spec = {
            "site": req.site_id, "type": req.type.name, "format": req.format,
            "from": req.date_from.isoformat(), "to": req.date_to.isoformat(), "filters": dict(req.filters),
        }  # fmt: skip
        info_path = self.tmp / "child.json"
        cmd = [sys.executable, "-c", EXPORT_CHILD, str(self.db), str(out), json.dumps(spec)]
        seconds = run_timed(cmd, info_path)
        info = json.loads(info_path.read_text())
        info_path.unlink()
        return seconds, info

    def attempt(self, measure: str, contender: str, fn: Callable[[], None]) -> None:
        """Run one contender; an exception is recorded as its error and the run goes on."""
        try:
            fn()
        except Exception as e:
            self.results.add(measure, contender, None, error=f"{type(e).__name__}: {e}"[:500])

    @property
    def api_key(self) -> str:
        if self._key is None:
            cmd = self.cli("keys", "create", "--site", SITE, "--name", "bench")
            self._key = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
        return self._key

    def cli(self, *args: str) -> list[str]:
        return [str(BIN / "sealexports"), "--db", str(self.db), *args]

    def server(self, name: str) -> Server:
        """Start a server on first use (it runs until close())."""
        if name in self.servers:
            return self.servers[name]
        port = str(free_port())
        env = dict(os.environ)
        if name == "ours":
            self.clear_jobs()
            self.api_key  # noqa: B018 (created before the server starts)
            config = self.tmp / "bench.toml"
            config.write_text(BENCH_CONFIG)
            env["SEALEXPORTS_CONFIG"] = str(config)
            env["SEALEXPORTS_EXPORTS_DIR"] = str(self.tmp / "exports")
            env["SEALEXPORTS_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
            cmd, ready = [sys.executable, "-c", OURS_APP, port, str(self.db)], "/healthz"
        elif name == "bare":
            cmd, ready = [sys.executable, "-c", BARE_APP, port], "/ping"
        elif name == "datasette":
            cmd = [
                str(BIN / "datasette"), "serve", str(self.db), "--host", "127.0.0.1", "--port", port,
                "--setting", "sql_time_limit_ms", "3600000", "--setting", "max_returned_rows", "100000000",
                "--setting", "max_csv_mb", "0",
            ]  # fmt: skip
            ready = "/-/versions.json"
        else:
            raise ValueError(name)
        log(f"  starting {name} on port {port}")
        self.servers[name] = Server(name, cmd, port, ready, self.tmp, env)
        return self.servers[name]

    def clear_jobs(self) -> None:
        """Jobs and queued tasks left by an earlier run would run again when ours starts."""
        self.query("DELETE FROM export_jobs")
        self.remove_queue()

    def remove_queue(self) -> None:
        """huey's queue file, which our server keeps beside the database."""
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.db}.queue{suffix}").unlink(missing_ok=True)

    def api(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        url = self.server("ours").base + path
        status, data = http(method, url, body=body, headers={"X-API-Key": self.api_key})
        return status, json.loads(data) if data else None

    def close(self) -> None:
        for s in self.servers.values():
            s.stop()
        if "ours" in self.servers:
            self.remove_queue()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def progress(self, measure: str, *contenders: str) -> None:
        parts = []
        for c in contenders:
            r = self.results.get(measure, c)
            if r is not None and r.values:
                parts.append(f"{c} {fmt_value(r.values[-1], r.unit)}")
        log(f"  {measure}: " + ", ".join(parts))

    # Measures: each runs one repetition of every contender ---------------------------------------

    def measure_raw(self, rep: int) -> None:
        """All microconversions, CSV and JSON: ours in a fresh process vs the same SQL elsewhere."""
        csv_req, json_req = self.request("microconversions", "csv"), self.request("microconversions", "json")
        csv_sql, json_sql = inline_sql(*export_query(csv_req)), inline_sql(*export_query(json_req))
        expected = self.expected_rows(csv_req)
        db, out = str(self.db), self.tmp / "raw.out"

        def check(fmt: str) -> str | None:
            n = count_rows(out, fmt)
            return None if n == expected else f"{n:,} rows, expected {expected:,}"

        def ours(req: ExportRequest) -> Callable[[], None]:
            def run() -> None:
                seconds, info = self.child_export(req, out)
                note = f"{expected:,} rows, {size(out)}; last rep {info['seconds']:.2f} s in write_file"
                self.results.add(f"raw_{req.format}", "ours", seconds, note=note, error=check(req.format))

            return run

        def command(contender: str, fmt: str, cmd: list[str]) -> Callable[[], None]:
            def run() -> None:
                seconds = run_timed(cmd, out)
                ref = contender == "sqlite3"
                self.results.add(
                    f"raw_{fmt}", contender, seconds, reference=ref, note=size(out), error=check(fmt)
                )

            return run

        def datasette() -> None:
            ds = self.server("datasette")
            name = json.loads(http("GET", ds.base + "/-/databases.json")[1])[0]["route"]
            query = urllib.parse.urlencode({"sql": csv_sql, "_stream": "on", "_size": "max"})
            started = time.perf_counter()
            url = f"{ds.base}/{name}.csv?{query}"
            with urllib.request.urlopen(url, timeout=SUBPROCESS_TIMEOUT) as resp, open(out, "wb") as f:
                shutil.copyfileobj(resp, f, MIB)
            elapsed = time.perf_counter() - started
            note = f"{size(out)}, streamed over loopback"
            self.results.add("raw_csv", "datasette", elapsed, note=note, error=check("csv"))

        contenders: list[tuple[str, str, Callable[[], None]]] = [
            ("raw_csv", "ours", ours(csv_req)),
            ("raw_csv", "sqlite3", command("sqlite3", "csv", [SQLITE3, "-csv", "-header", db, csv_sql])),
            ("raw_csv", "sqlite-utils",
             command("sqlite-utils", "csv", [str(BIN / "sqlite-utils"), "query", db, csv_sql, "--csv"])),
            ("raw_csv", "datasette", datasette),
            ("raw_json", "ours", ours(json_req)),
            ("raw_json", "sqlite3", command("sqlite3", "json", [SQLITE3, "-json", db, json_sql])),
        ]  # fmt: skip
        for measure, contender, fn in rotate(contenders, rep):
            self.attempt(measure, contender, fn)
            out.unlink(missing_ok=True)
            self.progress(measure, contender)

    def measure_aggregates(self, rep: int) -> None:
        for t in rotate(list(AGGREGATES), rep):
            self.aggregate(t, rep)

    def aggregate(self, export_type: str, rep: int) -> None:
        """One aggregate over the last 30 days: ours in-process (fresh connection) vs its bare SQL."""
        req = self.request(export_type, "csv", self.last30_from)
        sql = inline_sql(*export_query(req))
        measure, out = f"agg_{export_type}", self.tmp / "agg.csv"
        rows: dict[str, int] = {}

        def ours() -> None:
            conn = connect(self.db, migrate=False)
            try:
                seconds, info = timed(lambda: engine.write_file(conn, req, out))
            finally:
                conn.close()
            rows["ours"] = info.rows
            self.results.add(measure, "ours", seconds, note=f"{info.rows:,} rows")

        def bare() -> None:
            seconds = run_timed([SQLITE3, "-csv", "-header", str(self.db), sql], out)
            rows["sqlite3"] = count_rows(out, "csv")
            self.results.add(measure, "sqlite3", seconds, reference=True)

        for contender, fn in rotate([("ours", ours), ("sqlite3", bare)], rep):
            self.attempt(measure, contender, fn)
        out.unlink(missing_ok=True)
        # time_series has every day of the range, its bare SQL only the days with data.
        n, m = rows.get("ours"), rows.get("sqlite3")
        if n is not None and m is not None and n != m and not (export_type == "time_series" and n >= m):
            self.results.add(measure, "ours", None, error=f"{n:,} rows where its SQL gives {m:,}")
        self.progress(measure, "ours", "sqlite3")

    def measure_estimate(self, rep: int) -> None:
        for t in rotate(list(ESTIMATED), rep):
            self.estimate(t, rep)

    def estimate(self, export_type: str, rep: int) -> None:
        """engine.estimate() and POST /exports/estimate vs the CSV export they estimate."""
        req = self.request(export_type, "csv")
        measure, out = f"estimate_{export_type}", self.tmp / "estimated.csv"
        limit = Settings().sync_row_limit

        def in_process() -> None:
            conn = connect(self.db, migrate=False)
            try:
                seconds, est = timed(lambda: engine.estimate(conn, req, limit))
            finally:
                conn.close()
            self.results.add(measure, "estimate", seconds, note=f"{est.estimated_rows:,} rows estimated")

        def over_http() -> None:
            body = {"export_type": export_type, "format": "csv",
                    "date_from": req.date_from.isoformat(), "date_to": req.date_to.isoformat()}  # fmt: skip
            path = f"/api/v1/exports/estimate?site_id={SITE}"
            self.server("ours")
            seconds, (status, data) = timed(lambda: self.api("POST", path, body))
            err = None if status == 200 else f"HTTP {status}: {data}"
            self.results.add(measure, "http_estimate", seconds, note=f"POST {path}", error=err)

        def export() -> None:
            conn = connect(self.db, migrate=False)
            try:
                seconds, info = timed(lambda: engine.write_file(conn, req, out))
            finally:
                conn.close()
            self.results.add(measure, "export", seconds, reference=True, note=f"{info.rows:,} rows")

        contenders = [("estimate", in_process), ("http_estimate", over_http), ("export", export)]
        for contender, fn in rotate(contenders, rep):
            self.attempt(measure, contender, fn)
        out.unlink(missing_ok=True)
        self.progress(measure, "estimate", "http_estimate", "export")

    def memory_specs(self) -> dict[str, MemorySpec]:
        """Microconversion exports of ~10,000 and ~1,000,000 rows.

        Whole-day ranges; when none comes within 2x of 10,000 (a day of the default data has
        ~35,000), one day with one conversion_type."""
        if self._memory_specs is None:
            cells = self.query(
                "SELECT day, conversion_type, COUNT(*) FROM microconversions WHERE site_id = ? GROUP BY 1, 2",
                [SITE],
            )
            per_day: dict[str, int] = {}
            for day, _, n in cells:
                per_day[day] = per_day.get(day, 0) + n
            days = sorted(per_day)
            ranges: list[MemorySpec] = [
                (days[i], days[j], {}, sum(per_day[d] for d in days[i : j + 1]))
                for i in range(len(days)) for j in range(i, len(days))
            ]  # fmt: skip

            def closest(aim: int, options: list[MemorySpec]) -> MemorySpec:
                return min(options, key=lambda o: (abs(o[3] - aim), o[0], o[1]))

            small = closest(10_000, ranges)
            if not 5_000 <= small[3] <= 20_000:
                small = closest(10_000, [*ranges, *((d, d, {"conversion_type": c}, n) for d, c, n in cells)])
            self._memory_specs = {SMALL: small, LARGE: closest(1_000_000, ranges)}
        return self._memory_specs

    def measure_memory(self, rep: int) -> None:
        """Peak RSS of a whole fresh process exporting ~10k vs ~1M rows, CSV and JSON."""
        runs = [(fmt, label, spec) for fmt in ("csv", "json") for label, spec in self.memory_specs().items()]
        for fmt, label, spec in rotate(runs, rep):
            self.attempt(f"memory_{fmt}", label, functools.partial(self.memory_run, fmt, label, spec))
        for fmt in ("csv", "json"):
            self.progress(f"memory_{fmt}", *self.memory_specs())

    def memory_run(self, fmt: str, label: str, spec: MemorySpec) -> None:
        start, end, filters, n = spec
        out = self.tmp / "memory.out"
        try:
            _, info = self.child_export(
                build_request(SITE, "microconversions", fmt, start, end, filters), out
            )
        finally:
            out.unlink(missing_ok=True)
        where = f"{start}..{end}" + "".join(f" {k}={v}" for k, v in filters.items())
        self.results.add(
            f"memory_{fmt}", label, info["peak_rss_kib"] / 1024, unit="MiB", reference=label == SMALL,
            note=f"{n:,} rows ({where}); peak RSS (VmHWM) of the whole process",
            error=None if info["rows"] == n else f"{info['rows']:,} rows, expected {n:,}",
        )  # fmt: skip

    def measure_http(self, rep: int) -> None:
        """Status polls/s while two big exports run vs a bare Litestar route, same uvicorn setup;
        and, for information, the same polls while no export runs (ours-idle)."""
        contenders = [("ours", self.http_ours), ("ours-idle", self.http_ours_idle), ("bare", self.http_bare)]
        for contender, fn in rotate(contenders, rep):
            self.attempt("http", contender, fn)
        self.progress("http", "ours", "ours-idle", "bare")

    def http_ours(self) -> None:
        body = {"export_type": "microconversions", "format": "csv",
                "date_from": self.date_from.isoformat(), "date_to": self.date_to.isoformat()}  # fmt: skip
        jobs = []
        try:
            for _ in range(2):
                status, data = self.api("POST", f"/api/v1/exports?site_id={SITE}", body)
                if status != 201:
                    raise RuntimeError(f"POST /exports: HTTP {status}: {data}")
                jobs.append(data["job"]["job_id"])
            before = self.wait_started(jobs)
            url = f"{self.server('ours').base}/api/v1/exports/{jobs[0]}?site_id={SITE}"
            result = load_test(url, {"X-API-Key": self.api_key}, self.args.http_seconds, self.loadgen)
            after = self.job_statuses(jobs)
        finally:
            for job in jobs:  # cancels a running export
                self.api("DELETE", f"/api/v1/exports/{job}?site_id={SITE}")
        n_before, n_after = before.count("generating"), after.count("generating")
        running = f"exports generating before/after: {n_before}/{n_after} of 2"
        self.record_load("ours", result, f"GET /api/v1/exports/{{job_id}}; {running}")

    def http_ours_idle(self) -> None:
        """Polls of a small job's status (one day of time_series: done during the POST)."""
        day = self.date_to.isoformat()
        body = {"export_type": "time_series", "format": "csv", "date_from": day, "date_to": day}
        status, data = self.api("POST", f"/api/v1/exports?site_id={SITE}", body)
        if status != 201:
            raise RuntimeError(f"POST /exports: HTTP {status}: {data}")
        job = data["job"]["job_id"]
        try:
            url = f"{self.server('ours').base}/api/v1/exports/{job}?site_id={SITE}"
            result = load_test(url, {"X-API-Key": self.api_key}, self.args.http_seconds, self.loadgen)
        finally:
            self.api("DELETE", f"/api/v1/exports/{job}?site_id={SITE}")
        self.record_load("ours-idle", result, "GET /api/v1/exports/{job_id} with no export running")

    def http_bare(self) -> None:
        result = load_test(self.server("bare").base + "/ping", {}, self.args.http_seconds, self.loadgen)
        self.record_load("bare", result, "GET /ping", reference=True)

    def job_statuses(self, jobs: list[str]) -> list[str]:
        return [self.api("GET", f"/api/v1/exports/{j}?site_id={SITE}")[1]["status"] for j in jobs]

    def wait_started(self, jobs: list[str]) -> list[str]:
        """Wait (up to 60 s) until no job is pending or estimating; their statuses."""
        deadline = time.monotonic() + 60
        while True:
            statuses = self.job_statuses(jobs)
            if not {"pending", "estimating"} & set(statuses) or time.monotonic() > deadline:
                return statuses
            time.sleep(0.1)

    def record_load(self, contender: str, r: Load, what: str, *, reference: bool = False) -> None:
        note = f"{what}; p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms; {r.requests:,} requests ({r.tool})"
        err = f"{r.bad} bad responses or socket errors" if r.bad else None
        rps = r.requests_per_second
        self.results.add("http", contender, rps, unit="req/s", reference=reference, note=note, error=err)
        latency = {"p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "requests": r.requests, "rps": rps}
        self.meta.setdefault("http_latency", {}).setdefault(contender, []).append(latency)


# --- Main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark sealexports side by side with sqlite3, sqlite-utils, Datasette and a bare "
        "Litestar app. Prints a table; its last line sums up the targets.",
    )
    p.add_argument("--visits", type=int, help=f"visits to seed (default {DEFAULT_VISITS:,})")
    p.add_argument("--days", type=int, help=f"days to seed, ending {END} (default {DEFAULT_DAYS})")
    p.add_argument("--repeat", type=int, help="repetitions of each contender (default 3)")
    p.add_argument("--data", type=Path, default=ROOT / ".bench", help="data folder (default .bench/)")
    p.add_argument("--json", type=Path, help="results file (default <data>/results.json)")
    p.add_argument("--quick", action="store_true", help="tiny data, 1 repetition, 1 s HTTP phases")
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(MEASURES)}")
    p.add_argument("--reseed", action="store_true", help="seed again even if the data file exists")
    p.add_argument("--http-seconds", type=float, help="length of each HTTP load phase (default 10)")
    p.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                   help="HTTP load generator (auto: wrk if installed, else Python asyncio)")  # fmt: skip
    args = p.parse_args(argv)
    args.visits = args.visits or (QUICK_VISITS if args.quick else DEFAULT_VISITS)
    args.days = args.days or (QUICK_DAYS if args.quick else DEFAULT_DAYS)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.http_seconds = args.http_seconds or (1.0 if args.quick else 10.0)
    args.data = args.data.resolve()
    args.json = (args.json or args.data / "results.json").resolve()
    args.only = [m.strip() for m in args.only.split(",")] if args.only else list(MEASURES)
    if unknown := set(args.only) - set(MEASURES):
        p.error(f"unknown measure(s) {', '.join(sorted(unknown))}; choose from {', '.join(MEASURES)}")
    if args.loadgen == "wrk" and not shutil.which("wrk"):
        p.error("--loadgen wrk: wrk is not installed")
    return args


def lock_data_folder(data: Path) -> None:
    """One run at a time per data folder: two would share its data file, and a run clears the
    export jobs and the job queue there before starting our server. Held until exit."""
    data.mkdir(parents=True, exist_ok=True)
    fd = os.open(data, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"waiting: another scripts/bench run is using {data}")
        fcntl.flock(fd, fcntl.LOCK_EX)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the servers
    lock_data_folder(args.data)
    bench = Bench(args)
    measures = {
        "raw": bench.measure_raw, "aggregates": bench.measure_aggregates, "estimate": bench.measure_estimate,
        "memory": bench.measure_memory, "http": bench.measure_http,
    }  # fmt: skip
    started = time.perf_counter()
    load = bench.meta["load_average_at_start"] = os.getloadavg()
    if load[0] > 0.5:
        log(f"warning: load average {load[0]:.2f}: other processes use the CPU, figures will be noisy")
    try:
        bench.prepare()
        log(f"load generator: {bench.loadgen}")
        for rep in range(args.repeat):
            log(f"rep {rep + 1}/{args.repeat}")
            for name in args.only:
                measures[name](rep)
    finally:
        bench.close()
    bench.meta["load_average_at_end"] = os.getloadavg()
    targets = build_targets(bench.results)
    write_json(args, bench, targets, time.perf_counter() - started)
    print_table(bench.results, targets)
    errors = bench.results.errors
    if errors:
        print(f"{len(errors)} error(s): " + " | ".join(errors))
    print(summary_line(targets))
    return 1 if errors else 0


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the engine had uncommitted changes (it is being worked on)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "uncommitted": git("status", "--porcelain", "sealexports")}


def write_json(args: argparse.Namespace, bench: Bench, targets: list[Target], seconds: float) -> None:
    res = bench.results
    results: list[dict[str, Any]] = []
    if res.get("seeding", "ours") is None:
        results.append({"measure": "seeding", "contender": "ours", "unit": "rows/s", "cached": True})
    for r in res.rows.values():
        ref = res.reference(r.measure)
        ratio = r.median / ref.median if ref and r.median is not None and ref.median else None
        results.append({**asdict(r), "median": r.median, "ratio_to_reference": ratio})
    shell = subprocess.run([SQLITE3, "--version"], capture_output=True, text=True).stdout.split()
    doc = {
        "meta": {
            **bench.meta,
            "db": str(bench.db),
            "visits": args.visits,
            "days": args.days,
            "range": [bench.date_from.isoformat(), bench.date_to.isoformat()],
            "last_30_days": [bench.last30_from.isoformat(), bench.date_to.isoformat()],
            "repeat": args.repeat,
            "http_seconds": args.http_seconds,
            "http_connections": CONNECTIONS,
            "load_generator": bench.loadgen,
            "python": platform.python_version(),
            "sqlite_library": sqlite3.sqlite_version,
            "sqlite3_shell": shell[0] if shell else None,
            "git": git_state(),
            "cpus": os.cpu_count(),
            "seconds": seconds,
        },
        "results": results,
        "targets": [{**asdict(t), "met": t.met, "text": t.text} for t in targets],
        "summary": summary_line(targets),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    log(f"results: {args.json}")


if __name__ == "__main__":
    sys.exit(main())
