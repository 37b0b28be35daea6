"""Benchmark `sealexports import`: throughput and peak memory, against `sqlite-utils insert --nl`.

    .venv/bin/python scripts/bench_import.py [--events 1000000] [--small 100000] [--dir .bench/import]

Writes an NDJSON file of `--events` events made from the demo generator (one visitor per visit,
every visit dimension given, page views, conversions and microconversions in time order), and
its first `--small` lines as a second file. For each file it runs, in fresh databases and in
child processes, `sealexports import FILE --site bench --silent` and the reference,
`sqlite-utils insert DB events FILE --nl --alter` (the same rows into one plain table), and
reports events/s and the peak RSS of each child. The import's memory must not grow with the
file: compare its peak on the small and the large file. `--json FILE` also saves the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from sealexports import demo

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def events(n: int) -> Iterator[dict[str, Any]]:
    """n events of demo traffic, as events-format dicts, visit after visit."""
    made = 0
    visits = demo.generate("Europe/Madrid", end=date(2025, 3, 31), days=90, visits=max(n // 2, 10), seed=42)
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
                    event["properties"] = json.loads(c.properties)
                out.append(event)
        for event in sorted(out, key=lambda e: e["ts"]):
            yield event
            made += 1
            if made == n:
                return


def write_file(path: Path, n: int) -> None:
    if path.exists() and sum(1 for _ in path.open("rb")) == n:
        return
    with path.open("wb") as fh:
        for event in events(n):
            fh.write(orjson.dumps(event) + b"\n")


def run(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of a child process; fails loudly if it fails."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err}")
    return elapsed, usage.ru_maxrss * 1024


def measure(file: Path, n: int, work: Path) -> dict[str, Any]:
    ours_db, ref_db = work / f"ours-{n}.db", work / f"ref-{n}.db"
    for db in (ours_db, ref_db):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    se = str(BIN / "sealexports")
    subprocess.run([se, "--db", str(ours_db), "init"], check=True, capture_output=True)
    subprocess.run([se, "--db", str(ours_db), "sites", "create", "bench", "--timezone", "Europe/Madrid"],
                   check=True, capture_output=True)  # fmt: skip
    ours = run([se, "--db", str(ours_db), "import", str(file), "--site", "bench", "--silent"])
    ref = run([str(BIN / "sqlite-utils"), "insert", str(ref_db), "events", str(file), "--nl", "--alter"])
    return {
        "events": n,
        "ours_seconds": round(ours[0], 2),
        "ours_events_per_s": round(n / ours[0]),
        "ours_peak_rss_mib": round(ours[1] / 2**20, 1),
        "ref_seconds": round(ref[0], 2),
        "ref_events_per_s": round(n / ref[0]),
        "ref_peak_rss_mib": round(ref[1] / 2**20, 1),
        "ratio": round(ours[0] / ref[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=ROOT / ".bench" / "import")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    big, small = args.dir / f"events-{args.events}.ndjson", args.dir / f"events-{args.small}.ndjson"
    write_file(big, args.events)
    with big.open("rb") as src, small.open("wb") as dst:
        dst.writelines(islice(src, args.small))
    rows = [measure(small, args.small, args.dir), measure(big, args.events, args.dir)]
    print(f"{'events':>10} {'ours s':>8} {'ours ev/s':>10} {'ours RSS':>9} {'ref s':>7} {'ref ev/s':>9} "
          f"{'ref RSS':>8} {'ours/ref':>8}")  # fmt: skip
    for r in rows:
        print(f"{r['events']:>10,} {r['ours_seconds']:>8} {r['ours_events_per_s']:>10,} "
              f"{r['ours_peak_rss_mib']:>7}Mi {r['ref_seconds']:>7} {r['ref_events_per_s']:>9,} "
              f"{r['ref_peak_rss_mib']:>6}Mi {r['ratio']:>8}")  # fmt: skip
    growth = rows[1]["ours_peak_rss_mib"] / rows[0]["ours_peak_rss_mib"]
    print(f"peak memory, {args.events:,} vs {args.small:,} events: x{growth:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "memory_growth": round(growth, 2)}, indent=2))


if __name__ == "__main__":
    main()
