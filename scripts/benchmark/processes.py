"""Child processes, timed: a command with its stdout to a file, and one export in a fresh
interpreter (programs/export_child.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sealexports.exports.request import ExportRequest

BIN = Path(sys.executable).parent  # the environment's bin/: sealexports, sqlite-utils, datasette
SQLITE3 = shutil.which("sqlite3") or "/usr/bin/sqlite3"
EXPORT_CHILD = Path(__file__).with_name("programs") / "export_child.py"
SUBPROCESS_TIMEOUT = 3600


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


def child_export(db: Path, req: ExportRequest, out: Path) -> tuple[float, dict[str, Any]]:
    """engine.write_file in a fresh interpreter: its wall time, and what it reports
    ({"rows", "seconds" spent in write_file, "peak_rss_kib"})."""
    spec = {
        "site": req.site_id, "type": req.type.name, "format": req.format,
        "from": req.date_from.isoformat(), "to": req.date_to.isoformat(), "filters": dict(req.filters),
        "compression": req.compression,
    }  # fmt: skip
    info_path = out.with_name(out.name + ".info.json")
    seconds = run_timed([sys.executable, str(EXPORT_CHILD), str(db), str(out), json.dumps(spec)], info_path)
    info: dict[str, Any] = json.loads(info_path.read_text())
    info_path.unlink()
    return seconds, info
