"""The measures, by the name `--only` takes: each runs one repetition of every contender."""

from __future__ import annotations

from collections.abc import Callable

from benchmark.measures import aggregates, estimate, filtered, formats, http, imports, memory, raw
from benchmark.run import Run

MEASURES: dict[str, Callable[[Run, int], None]] = {
    "raw": raw.measure,
    "aggregates": aggregates.measure,
    "filtered": filtered.measure,
    "estimate": estimate.measure,
    "memory": memory.measure,
    "formats": formats.measure,
    "http": http.measure,
    "import": imports.measure,
}
OWN_DATA = {"import"}  # measures that make their own data: `--only import` seeds nothing
