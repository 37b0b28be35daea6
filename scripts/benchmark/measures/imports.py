"""import / import_small / import_cpu / import_memory: `sealexports import FILE --site bench
--silent` against `sqlite-utils insert DB events FILE --nl --alter` (the same lines into one
plain table), on an NDJSON file of demo events, each in a fresh database and a fresh process,
paired and alternated from one repetition to the next.

The file (`<data>/import-{events}.ndjson`, made once and reused) is demo traffic: one visitor
per visit, every visit field given on its landing page, page views, conversions and
microconversions in time order. EVENTS (200,000: about 65,000 visits over 90 days, the size of
a few months of a small shop's history, a 37 MiB file) is what the target is held to: big enough
that the start-up of either command is a few percent of its time, small enough for three
repetitions in a couple of minutes. SMALL_EVENTS (20,000, its first lines) shows what the
start-up costs, and with EVENTS whether the import's peak memory grows with the file.

    import          wall seconds, EVENTS events; the target: ours / sqlite-utils <= 1.0
    import_small    the same on SMALL_EVENTS
    import_cpu      user + sys seconds of the same EVENTS runs (steadier on a shared machine)
    import_memory   our peak RSS on SMALL_EVENTS and EVENTS (target: grows <= 20 MiB)
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from benchmark.console import log
from benchmark.data import IMPORT_OURS, IMPORT_REFERENCE
from benchmark.processes import BIN, SUBPROCESS_TIMEOUT
from benchmark.run import Run, rotate
from sealexports import demo

EVENTS, SMALL_EVENTS = 200_000, 20_000
QUICK_EVENTS, QUICK_SMALL_EVENTS = 400, 100
OURS, REFERENCE = IMPORT_OURS, IMPORT_REFERENCE
COMMAND_CHILD = Path(__file__).resolve().parents[1] / "programs" / "command_child.py"
TIMEZONE = "Europe/Madrid"


def sizes(run: Run) -> tuple[int, int]:
    return (QUICK_EVENTS, QUICK_SMALL_EVENTS) if run.options.quick else (EVENTS, SMALL_EVENTS)


def memory_label(n: int) -> str:
    return f"{n:,} events"


def measure(run: Run, rep: int) -> None:
    big, small = sizes(run)
    files = events_files(run.options.data, big, small)
    for n in (big, small):
        # The pair back to back, in the other order at the next repetition.
        for contender in rotate([OURS, REFERENCE], rep):
            go = functools.partial(once, run, files[n], n, contender, big)
            run.attempt(measure_name(n, big), contender, go)
    run.progress("import", OURS, REFERENCE)
    run.progress("import_small", OURS, REFERENCE)


def measure_name(n: int, big: int) -> str:
    return "import" if n == big else "import_small"


def once(run: Run, file: Path, n: int, contender: str, big: int) -> None:
    """One contender on one file, in a fresh database; checks that every line was taken in."""
    work = run.tmp / "import"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    db = work / "bench.db"
    if contender == OURS:
        se = str(BIN / "sealexports")
        for args in (["init"], ["sites", "create", "bench", "--timezone", TIMEZONE]):
            subprocess.run([se, "--db", str(db), *args], check=True, capture_output=True)
        cmd = [se, "--db", str(db), "import", str(file), "--site", "bench", "--silent"]
        tables: tuple[str, ...] = ("pageviews", "conversions", "microconversions")
    else:
        cmd = [str(BIN / "sqlite-utils"), "insert", str(db), "events", str(file), "--nl", "--alter"]
        tables = ("events",)
    try:
        info = timed(cmd)
        error = f"exited with {info['status']}: {info['stderr'].strip()}" if info["status"] else None
        if error is None and (stored := rows(db, tables)) != n:
            error = f"{stored:,} events stored, expected {n:,}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wall, cpu, rss = info["wall"], info["cpu"], info["peak_rss_kib"] / 1024
    note = f"{n:,} events: {n / wall:,.0f} events/s, CPU {cpu:.2f} s, peak RSS {rss:.1f} MiB"
    reference = contender == REFERENCE
    run.results.add(measure_name(n, big), contender, wall, reference=reference, note=note, error=error)
    if n == big:
        run.results.add("import_cpu", contender, cpu, reference=reference, note=f"{n:,} events, user + sys")
    if contender == OURS:
        run.results.add("import_memory", memory_label(n), rss, unit="MiB", reference=n != big,
                        note="peak RSS (ru_maxrss) of the whole process", error=error)  # fmt: skip


def rows(db: Path, tables: tuple[str, ...]) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables)


def timed(cmd: list[str]) -> dict[str, Any]:
    """The command run by programs/command_child.py: {"wall", "cpu", "peak_rss_kib", "status", "stderr"}."""
    child = [sys.executable, str(COMMAND_CHILD), *cmd]
    out = subprocess.run(child, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, check=True).stdout
    info: dict[str, Any] = json.loads(out)
    return info


def events_files(folder: Path, big: int, small: int) -> dict[int, Path]:
    """`<folder>/import-{n}.ndjson` for both sizes, written once (to a temporary name, renamed
    when whole): `big` events, and the first `small` lines of it."""
    files = {n: folder / f"import-{n}.ndjson" for n in (big, small)}
    if not files[big].exists():
        log(f"data: writing {big:,} demo events to {files[big]}")
        write(files[big], (orjson.dumps(e) + b"\n" for e in itertools.islice(events(big), big)))
    if not files[small].exists():
        with files[big].open("rb") as src:
            write(files[small], itertools.islice(src, small))
    return files


def write(path: Path, lines: Iterable[bytes]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.writelines(lines)
    tmp.replace(path)


def events(n: int) -> Iterator[dict[str, Any]]:
    """Demo traffic as events-format objects, visit after visit (at least n of them)."""
    visits = demo.generate(TIMEZONE, end=date(2025, 3, 31), days=90, visits=max(n // 2, 10), seed=42)
    for number, v in enumerate(visits):
        dims = {
            "referrer": v.referrer, "utm_source": v.utm_source, "utm_medium": v.utm_medium,
            "utm_campaign": v.utm_campaign, "utm_term": v.utm_term, "utm_content": v.utm_content,
            "country": v.country, "device_type": v.device_type, "browser": v.browser, "os": v.os,
        }  # fmt: skip
        visitor = f"{number:012x}"
        out: list[dict[str, Any]] = []
        for i, p in enumerate(v.pages):
            event: dict[str, Any] = {"type": "pageview", "ts": p.ts.isoformat(), "visitor": visitor,
                                     "path": p.path, "content_grouping": p.content_grouping}  # fmt: skip
            if i == 0:
                event.update({k: x for k, x in dims.items() if x is not None})
            out.append(event)
        for kind, items in (("conversion", v.conversions), ("microconversion", v.microconversions)):
            for c in items:
                event = {"type": kind, "ts": c.ts.isoformat(), "visitor": visitor, "path": c.path,
                         "conversion_type": c.conversion_type}  # fmt: skip
                if kind == "conversion":
                    event["amount"] = c.amount_cents / 100
                if c.properties:
                    event["properties"] = orjson.loads(c.properties)
                out.append(event)
        yield from sorted(out, key=lambda e: e["ts"])
