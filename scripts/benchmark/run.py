"""One benchmark run: its options and what every measure shares (the data, the servers, the
figures so far, a temporary folder)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmark.console import log
from benchmark.data import Data
from benchmark.results import Results, fmt_value
from benchmark.servers import Servers

T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    visits: int
    days: int
    repeat: int
    data: Path  # the data folder
    json: Path  # the results file
    only: list[str]  # measures to run, in order
    reseed: bool
    http_seconds: float
    loadgen: str  # "wrk" or "python"
    quick: bool = False  # tiny data: measures that make their own use tiny sizes too


@dataclass
class Run:
    options: Options
    data: Data
    servers: Servers
    tmp: Path
    results: Results = field(default_factory=Results)
    meta: dict[str, Any] = field(default_factory=dict)  # written to the results file

    def attempt(self, measure: str, contender: str, fn: Callable[[], None]) -> None:
        """Run one contender; an exception is recorded as its error and the run goes on."""
        try:
            fn()
        except Exception as e:
            self.results.add(measure, contender, None, error=f"{type(e).__name__}: {e}"[:500])

    def progress(self, measure: str, *contenders: str) -> None:
        """Log the last value of each contender."""
        parts = []
        for c in contenders:
            r = self.results.get(measure, c)
            if r is not None and r.values:
                parts.append(f"{c} {fmt_value(r.values[-1], r.unit)}")
        log(f"  {measure}: " + ", ".join(parts))


def rotate(items: list[T], n: int) -> list[T]:
    """Start each repetition with a different contender so that none always goes first."""
    k = n % len(items) if items else 0
    return items[k:] + items[:k]
