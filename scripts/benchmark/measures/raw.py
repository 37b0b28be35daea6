"""raw_csv / raw_json: all microconversions, ours in a fresh process (engine.write_file, and the
whole `sealexports export` command) vs the same SQL run by the sqlite3 shell, sqlite-utils and
Datasette (CSV), and the sqlite3 shell (JSON)."""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable

from benchmark.data import MIB, count_rows, inline_sql, size
from benchmark.processes import BIN, SQLITE3, SUBPROCESS_TIMEOUT, child_export, run_timed
from benchmark.run import Run, rotate
from benchmark.servers import http
from sealexports.exports.queries import export_query
from sealexports.exports.request import ExportRequest


def measure(run: Run, rep: int) -> None:
    csv_req = run.data.request("microconversions", "csv")
    json_req = run.data.request("microconversions", "json")
    csv_sql, json_sql = inline_sql(*export_query(csv_req)), inline_sql(*export_query(json_req))
    expected = run.data.expected_rows(csv_req)
    db, out = str(run.data.db), run.tmp / "raw.out"

    def check(fmt: str) -> str | None:
        n = count_rows(out, fmt)
        return None if n == expected else f"{n:,} rows, expected {expected:,}"

    def ours(req: ExportRequest) -> Callable[[], None]:
        def go() -> None:
            seconds, info = child_export(run.data.db, req, out)
            note = f"{expected:,} rows, {size(out)}; last rep {info['seconds']:.2f} s in write_file"
            run.results.add(f"raw_{req.format}", "ours", seconds, note=note, error=check(req.format))

        return go

    def cli(req: ExportRequest) -> Callable[[], None]:
        def go() -> None:
            cmd = [str(BIN / "sealexports"), "--db", db, "export", "--site", req.site_id,
                   "--type", req.type.name, "--format", req.format, "--from", req.date_from.isoformat(),
                   "--to", req.date_to.isoformat(), "-o", str(out), "--silent"]  # fmt: skip
            seconds = run_timed(cmd, run.tmp / "cli.stdout")
            note = f"{size(out)}, the whole process"
            run.results.add(
                f"raw_{req.format}", "sealexports export", seconds, note=note, error=check(req.format)
            )

        return go

    def command(contender: str, fmt: str, cmd: list[str]) -> Callable[[], None]:
        def go() -> None:
            seconds = run_timed(cmd, out)
            ref = contender == "sqlite3"
            run.results.add(f"raw_{fmt}", contender, seconds, reference=ref, note=size(out), error=check(fmt))

        return go

    def datasette() -> None:
        ds = run.servers.get("datasette")
        name = json.loads(http("GET", ds.base + "/-/databases.json")[1])[0]["route"]
        query = urllib.parse.urlencode({"sql": csv_sql, "_stream": "on", "_size": "max"})
        started = time.perf_counter()
        url = f"{ds.base}/{name}.csv?{query}"
        with urllib.request.urlopen(url, timeout=SUBPROCESS_TIMEOUT) as resp, open(out, "wb") as f:
            shutil.copyfileobj(resp, f, MIB)
        elapsed = time.perf_counter() - started
        note = f"{size(out)}, streamed over loopback"
        run.results.add("raw_csv", "datasette", elapsed, note=note, error=check("csv"))

    contenders: list[tuple[str, str, Callable[[], None]]] = [
        ("raw_csv", "ours", ours(csv_req)),
        ("raw_csv", "sealexports export", cli(csv_req)),
        ("raw_csv", "sqlite3", command("sqlite3", "csv", [SQLITE3, "-csv", "-header", db, csv_sql])),
        ("raw_csv", "sqlite-utils",
         command("sqlite-utils", "csv", [str(BIN / "sqlite-utils"), "query", db, csv_sql, "--csv"])),
        ("raw_csv", "datasette", datasette),
        ("raw_json", "ours", ours(json_req)),
        ("raw_json", "sealexports export", cli(json_req)),
        ("raw_json", "sqlite3", command("sqlite3", "json", [SQLITE3, "-json", db, json_sql])),
    ]  # fmt: skip
    for measure_name, contender, fn in rotate(contenders, rep):
        run.attempt(measure_name, contender, fn)
        out.unlink(missing_ok=True)
        run.progress(measure_name, contender)
