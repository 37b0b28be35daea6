"""Run one command and report what it cost: argv = the command.

Prints {"wall", "cpu" (user + sys), "peak_rss_kib", "status", "stderr"} as one JSON line; the
command's stdout goes to /dev/null. A small launcher, so that the peak RSS is the command's:
a child's ru_maxrss starts from its parent's RSS at fork (exec keeps it), and the benchmark's
own process is far bigger than this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main(cmd: list[str]) -> None:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    print(json.dumps({
        "wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "peak_rss_kib": usage.ru_maxrss,
        "status": os.waitstatus_to_exitcode(status), "stderr": stderr.decode(errors="replace")[-500:],
    }))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
