"""The dry run of an import (`stitcher.Checker`) rejects exactly the events the stitcher itself
rejects, whatever the windows: it sees only each event's line, key, time and kind."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from sealexports.errors import Problem
from sealexports.ingest.event_format import Event
from sealexports.ingest.stitcher import GAP_SECONDS, Checker, Stitcher
from sealexports.storage.imports import StoredVisit

KINDS = ("pageview", "conversion", "microconversion")
T0 = 1_735_689_600.0


def stream(rng: random.Random) -> tuple[list[Event], dict[str, StoredVisit]]:
    """Events of a few keys (visitors and visit ids) with gaps around 30 minutes, sorted as an
    import sorts them, and stored visits for some keys (some starting after their events)."""
    keys = [f"u:{n}" for n in range(rng.randint(1, 4))] + [f"v:{n}" for n in range(rng.randint(0, 3))]
    events = []
    for line in range(1, rng.randint(1, 60)):
        ts = T0 + rng.choice([0, 1, 60, GAP_SECONDS, GAP_SECONDS + 1, 3 * GAP_SECONDS]) * rng.randint(0, 6)
        kind = rng.choices(KINDS, weights=[5, 2, 2])[0]
        events.append(Event(line, kind, ts, rng.choice(keys), line.to_bytes(16, "big"), "/"))
    events.sort(key=lambda e: (e.key, e.ts, e.rank, e.line))
    stored = {}
    for key in keys:
        if rng.random() < 0.4:
            started = T0 + rng.choice([-2 * GAP_SECONDS, -60, 0, 120, 4 * GAP_SECONDS])
            last = started + rng.choice([0, 60, GAP_SECONDS])
            stored[key] = StoredVisit(key, 1, started, last, "/", None, (None,) * 10)
    return events, stored


def splits(events: Sequence[Event], rng: random.Random) -> list[Sequence[Event]]:
    out, i = [], 0
    while i < len(events):
        n = rng.randint(1, 8)
        out.append(events[i : i + n])
        i += n
    return out


def described(problems: list[Problem]) -> list[tuple[int | None, str | None, str]]:
    return [(p.line, p.field, p.message) for p in problems]


@pytest.mark.parametrize("seed", range(300))
def test_the_checker_rejects_what_the_stitcher_rejects(seed: int) -> None:
    rng = random.Random(seed)
    events, stored = stream(rng)

    def lookup(keys: list[str]) -> dict[str, StoredVisit]:
        return {k: stored[k] for k in keys if k in stored}

    stitcher = Stitcher(lookup)
    expected = [p for window in splits(events, rng) for p in stitcher.window(window).rejected]
    checker = Checker(lookup)
    got = [
        p
        for window in splits(events, rng)
        for p in checker.window([(e.line, e.key, e.ts, e.kind) for e in window])
    ]
    assert described(got) == described(expected)
