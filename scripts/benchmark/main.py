"""The command line: options, the run (every measure, `--repeat` times, interleaved), the
table, the results file and the summary line."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmark.console import log
from benchmark.data import DEFAULT_DAYS, DEFAULT_VISITS, END, QUICK_DAYS, QUICK_VISITS, Data
from benchmark.load import CONNECTIONS
from benchmark.measures import MEASURES, OWN_DATA
from benchmark.processes import SQLITE3
from benchmark.results import Target, build_targets, print_table, summary_line
from benchmark.run import Options, Run
from benchmark.servers import Servers

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None) -> Options:
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
    only = [m.strip() for m in args.only.split(",")] if args.only else list(MEASURES)
    if unknown := set(only) - set(MEASURES):
        p.error(f"unknown measure(s) {', '.join(sorted(unknown))}; choose from {', '.join(MEASURES)}")
    if args.loadgen == "wrk" and not shutil.which("wrk"):
        p.error("--loadgen wrk: wrk is not installed")
    data = args.data.resolve()
    return Options(
        visits=args.visits or (QUICK_VISITS if args.quick else DEFAULT_VISITS),
        days=args.days or (QUICK_DAYS if args.quick else DEFAULT_DAYS),
        repeat=args.repeat or (1 if args.quick else 3),
        data=data,
        json=(args.json or data / "results.json").resolve(),
        only=only,
        reseed=args.reseed,
        http_seconds=args.http_seconds or (1.0 if args.quick else 10.0),
        loadgen=("wrk" if shutil.which("wrk") else "python") if args.loadgen == "auto" else args.loadgen,
        quick=args.quick,
    )


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
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the servers
    lock_data_folder(options.data)
    data = Data(options.data, options.visits, options.days)
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=options.data))
    run = Run(options, data, Servers(data, tmp), tmp)
    started = time.perf_counter()
    load = run.meta["load_average_at_start"] = os.getloadavg()
    if load[0] > 0.5:
        log(f"warning: load average {load[0]:.2f}: other processes use the CPU, figures will be noisy")
    try:
        if set(options.only) - OWN_DATA:
            prepare(run, options.reseed)
        log(f"load generator: {options.loadgen}")
        for rep in range(options.repeat):
            log(f"rep {rep + 1}/{options.repeat}")
            for name in options.only:
                MEASURES[name](run, rep)
    finally:
        run.servers.close()
        shutil.rmtree(tmp, ignore_errors=True)
    run.meta["load_average_at_end"] = os.getloadavg()
    targets = build_targets(run.results)
    write_json(run, targets, time.perf_counter() - started)
    print_table(run.results, targets, seeded_data="data" in run.meta)
    errors = run.results.errors
    if errors:
        print(f"{len(errors)} error(s): " + " | ".join(errors))
    print(summary_line(targets))
    return 1 if errors else 0


def prepare(run: Run, reseed: bool) -> None:
    """The seeded data file, which every measure but those in OWN_DATA reads."""
    if seeding := run.data.prepare(reseed):
        note = (f"{seeding.counts.rows:,} rows in {seeding.seconds:.0f} s "
                "(demo.generate + insert_visits, one transaction)")  # fmt: skip
        run.results.add("seeding", "ours", seeding.rows_per_second, unit="rows/s", note=note)
        run.meta["seeded"] = seeding.meta
    run.meta["data"] = run.data.describe()


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the engine had uncommitted changes (it is being worked on)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "uncommitted": git("status", "--porcelain", "sealexports")}


def write_json(run: Run, targets: list[Target], seconds: float) -> None:
    options, data, res = run.options, run.data, run.results
    results: list[dict[str, Any]] = []
    if res.get("seeding", "ours") is None and "data" in run.meta:  # the data file was reused
        results.append({"measure": "seeding", "contender": "ours", "unit": "rows/s", "cached": True})
    for r in res.rows.values():
        results.append({**asdict(r), "median": r.median, "ratio_to_reference": res.ratio_to_reference(r)})
    shell = subprocess.run([SQLITE3, "--version"], capture_output=True, text=True).stdout.split()
    doc = {
        "meta": {
            **run.meta,
            "db": str(data.db),
            "visits": options.visits,
            "days": options.days,
            "range": [data.date_from.isoformat(), data.date_to.isoformat()],
            "last_30_days": [data.last30_from.isoformat(), data.date_to.isoformat()],
            "repeat": options.repeat,
            "http_seconds": options.http_seconds,
            "http_connections": CONNECTIONS,
            "load_generator": options.loadgen,
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
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(doc, indent=2) + "\n")
    log(f"results: {options.json}")
