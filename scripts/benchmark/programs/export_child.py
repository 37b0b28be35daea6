"""One export in a fresh interpreter: argv = database, output file, request as JSON.

Prints {"rows", "seconds" spent in engine.write_file, "peak_rss_kib"} as one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from sealexports.exports import engine
from sealexports.exports.request import build_request
from sealexports.storage.database import connect


def peak_rss_kib() -> int:
    """VmHWM: this process's peak RSS since exec. Not ru_maxrss: exec carries the parent's over."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def main(db: str, out: str, spec_json: str) -> None:
    spec = json.loads(spec_json)
    conn = connect(db, migrate=False)
    req = build_request(
        spec["site"], spec["type"], spec["format"], spec["from"], spec["to"], spec["filters"],
        compression=spec.get("compression", "none"),
    )  # fmt: skip
    started = time.perf_counter()
    info = engine.write_file(conn, req, Path(out))
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": info.rows, "seconds": seconds, "peak_rss_kib": peak_rss_kib()}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
