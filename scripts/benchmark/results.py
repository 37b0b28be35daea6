"""Figures, the targets they are held to, and how they are shown (a table, one summary line)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from benchmark.console import log
from benchmark.data import AGGREGATES, ESTIMATED, IMPORT_OURS, IMPORT_REFERENCE, LARGE, SMALL


@dataclass
class Result:
    measure: str  # a row group of the table, e.g. raw_csv
    contender: str
    unit: str = "s"
    reference: bool = False
    values: list[float] = field(default_factory=list)
    note: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def key(self) -> tuple[str, str]:
        return self.measure, self.contender


@dataclass
class Target:
    name: str
    measure: str  # the table row it is shown on: (measure, contender)
    contender: str
    what: str  # how `value` is computed, e.g. "ours/sqlite3"
    value: float | None  # None: a contender failed
    op: str  # "<=" or ">="
    limit: float
    unit: str = ""
    seconds: float | None = None  # an absolute bound too (estimates): seconds < limit_seconds
    limit_seconds: float | None = None

    @property
    def met(self) -> bool:
        if self.value is None:
            return False
        ok = self.value <= self.limit if self.op == "<=" else self.value >= self.limit
        if self.limit_seconds is not None:
            ok = ok and self.seconds is not None and self.seconds < self.limit_seconds
        return ok

    @property
    def check(self) -> str:
        """e.g. `0.93<=1.0 ok`, `+3.1MiB<=20MiB ok`, `0.012<=0.1 & 4ms<50ms ok`."""
        if self.value is None:
            return "error MISSED"
        value = f"{round(self.value, 1) + 0.0:+.1f}" if self.unit else fmt_ratio(self.value)  # no -0.0
        s = f"{value}{self.unit}{self.op}{self.limit:g}{self.unit}"
        if self.limit_seconds is not None and self.seconds is not None:
            s += f" & {self.seconds * 1000:.0f}ms<{self.limit_seconds * 1000:.0f}ms"
        return f"{s} {'ok' if self.met else 'MISSED'}"

    @property
    def text(self) -> str:
        return f"{self.name} {self.check}"


class Results:
    """Every value measured, by (measure, contender), in the order first seen."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Result] = {}

    def add(
        self,
        measure: str,
        contender: str,
        value: float | None,
        *,
        unit: str = "s",
        reference: bool = False,
        note: str = "",
        error: str | None = None,
    ) -> None:
        r = self.rows.setdefault((measure, contender), Result(measure, contender, unit, reference))
        if value is not None:
            r.values.append(value)
        if note:
            r.note = note
        if error:
            r.errors.append(error)
            log(f"  ERROR {measure}/{contender}: {error}")

    def get(self, measure: str, contender: str) -> Result | None:
        return self.rows.get((measure, contender))

    def median(self, measure: str, contender: str) -> float | None:
        r = self.get(measure, contender)
        return None if r is None or r.errors else r.median

    def reference(self, measure: str) -> Result | None:
        return next((r for r in self.rows.values() if r.measure == measure and r.reference), None)

    def ratio(self, measure: str, a: str, b: str) -> float | None:
        x, y = self.median(measure, a), self.median(measure, b)
        return None if x is None or not y else x / y

    def ratio_to_reference(self, r: Result) -> float | None:
        ref = self.reference(r.measure)
        return r.median / ref.median if ref and r.median is not None and ref.median else None

    @property
    def errors(self) -> list[str]:
        return [f"{r.measure}/{r.contender}: {e}" for r in self.rows.values() for e in r.errors]


def build_targets(res: Results) -> list[Target]:
    """Every target whose contenders ran (a failed contender gives value None: MISSED)."""
    targets: list[Target] = []

    def ratio(
        name: str, measure: str, a: str, b: str, op: str, limit: float, *,
        seconds: float | None = None, limit_seconds: float | None = None,
    ) -> None:  # fmt: skip
        if res.get(measure, a) and res.get(measure, b):
            value = res.ratio(measure, a, b)
            targets.append(Target(name, measure, a, f"{a}/{b}", value, op, limit,
                                  seconds=seconds, limit_seconds=limit_seconds))  # fmt: skip

    ratio("raw_csv", "raw_csv", "ours", "sqlite3", "<=", 1.0)
    ratio("raw_json", "raw_json", "ours", "sqlite3", "<=", 1.2)
    ratio("raw_csv_cli", "raw_csv", "sealexports export", "sqlite3", "<=", 1.0)
    ratio("raw_json_cli", "raw_json", "sealexports export", "sqlite3", "<=", 1.0)
    for name, limit in (("filtered_visit", 1.0), ("filtered_path", 3.0)):
        if (seconds := res.median(name, "ours")) is not None:
            targets.append(Target(name, name, "ours", "seconds", seconds, "<=", limit))
    ratio("raw_csv_sqlite_utils", "raw_csv", "sqlite-utils", "ours", ">=", 2.0)
    ratio("raw_csv_datasette", "raw_csv", "datasette", "ours", ">=", 2.0)
    for t in AGGREGATES:
        ratio(f"agg_{t}", f"agg_{t}", "ours", "sqlite3", "<=", 1.1)
    for t in ESTIMATED:
        for contender, suffix in (("estimate", ""), ("http_estimate", "_http")):
            seconds = res.median(f"estimate_{t}", contender)
            ratio(f"estimate_{t}{suffix}", f"estimate_{t}", contender, "export", "<=", 0.1,
                  seconds=seconds, limit_seconds=0.05)  # fmt: skip
    for fmt in ("csv", "json"):
        measure = f"memory_{fmt}"
        if res.get(measure, LARGE) and res.get(measure, SMALL):
            small, large = res.median(measure, SMALL), res.median(measure, LARGE)
            diff = None if small is None or large is None else large - small
            targets.append(Target(measure, measure, LARGE, "1M-10k", diff, "<=", 20, unit="MiB"))
    ratio("http", "http", "ours", "bare", ">=", 0.6)
    ratio("import", "import", IMPORT_OURS, IMPORT_REFERENCE, "<=", 1.0)
    sizes = [r for r in res.rows.values() if r.measure == "import_memory"]
    if len(sizes) == 2 and (first := res.reference("import_memory")) is not None:
        last = next(r for r in sizes if r is not first)  # the bigger file
        grew = None if first.median is None or last.median is None else last.median - first.median
        name = "import_memory"
        targets.append(Target(name, name, last.contender, "large-small", grew, "<=", 20, unit="MiB"))
    return targets


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.4f} s" if value < 0.1 else f"{value:.3f} s"
    if unit in ("rows/s", "req/s"):
        return f"{value:,.0f} {unit}"
    return f"{value:,.1f} {unit}"


def fmt_ratio(value: float) -> str:
    return "<0.001" if 0 <= value < 0.001 else f"{value:.3g}"


def print_table(res: Results, targets: list[Target], *, seeded_data: bool = True) -> None:
    """The table; `seeded_data`: the seeded file was used (else no seeding line: --only import)."""
    header = ("measure", "contender", "median", "ratio", "target", "note")
    lines = [header]
    if res.get("seeding", "ours") is None and seeded_data:
        lines.append(("seeding", "ours", "cached", "", "", "data file reused (--reseed to measure)"))
    for r in res.rows.values():
        ref = res.reference(r.measure)
        ratio = res.ratio_to_reference(r)
        shown = "" if ratio is None else "ref" if r is ref else fmt_ratio(ratio)
        marks = "; ".join(f"{t.what} {t.check}" for t in targets if (t.measure, t.contender) == r.key)
        note = "; ".join([*(f"ERROR {e}" for e in r.errors), *([r.note] if r.note else [])])
        lines.append((r.measure, r.contender, fmt_value(r.median, r.unit), shown, marks, note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for n, line in enumerate(lines):
        print("  ".join([*(c.ljust(w) for c, w in zip(line, widths, strict=False)), line[-1]]).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in [*widths, 4]))


def summary_line(targets: list[Target]) -> str:
    met = sum(t.met for t in targets)
    return f"targets: {met}/{len(targets)} met — " + ", ".join(t.text for t in targets)
