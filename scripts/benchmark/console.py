"""Progress lines: on stderr, so that stdout has the table and the summary line only."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
