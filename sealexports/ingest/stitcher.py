"""Stitching events into visits, one window of events at a time.

A window is sorted by (visit key, time, page views first). Events with a `visit_id` form that
visit, whenever they come. Events with a `visitor` continue the visitor's latest visit while no
more than 30 minutes pass between two of its events; after a longer gap the next page view
starts a new visit. A visit starts with a page view (its landing page, which also gives the
visit's dimensions); conversions and microconversions attach to the visit open at their time.

A key's visit may have started in an earlier window or batch: the stitcher asks `lookup` for
the stored latest visit of the keys it meets, and carries the last key of a window over to the
next one itself (a sorted input splits at most that key), so that a dry run, which stores
nothing, stitches exactly as the real run does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter

from sealexports.errors import Problem
from sealexports.ingest.event_format import Event
from sealexports.storage.imports import StoredVisit
from sealexports.storage.timestamps import iso
from sealexports.storage.visits import VISIT_DIMENSIONS, Conversion, PageView, Visit

GAP_SECONDS = 30 * 60
_dims_of = attrgetter(*VISIT_DIMENSIONS)
Lookup = Callable[[list[str]], dict[str, StoredVisit]]


@dataclass(slots=True)
class Open:
    """A key's current visit: `visit` is this window's part of it (new, or continuing one
    stored), `started` and `last` the times of its first and latest events."""

    visit: Visit
    started: float
    last: float
    explicit: bool  # keyed by visit_id: no inactivity rule


@dataclass
class Stitched:
    visits: list[Visit]  # the parts that have events: new visits, and continuations of stored ones
    accepted: list[Event]
    rejected: list[Problem]  # each with its line
    latest: dict[str, Open] = field(default_factory=dict)  # each key's latest visit, for keys with events


def _iso(ts: float) -> str:
    return iso(datetime.fromtimestamp(ts, UTC))


def _continuation(visit: Visit) -> Visit:
    """An empty part that adds events to `visit` (stored, or stored at the end of its window)."""
    landing = visit.landing if visit.landing is not None else visit.pages[0]
    part = Visit(pages=[], id=visit.id, landing=landing)
    for d in VISIT_DIMENSIONS:
        setattr(part, d, getattr(visit, d))
    return part


def _stored(sv: StoredVisit) -> Open:
    landing = PageView(datetime.fromtimestamp(sv.started_at, UTC), sv.landing_page, sv.content_grouping)
    part = Visit(pages=[], id=sv.visit_id, landing=landing)
    for d, value in zip(VISIT_DIMENSIONS, sv.dims, strict=True):
        setattr(part, d, value)
    return Open(part, sv.started_at, sv.last_ts, sv.key.startswith("v:"))


class Stitcher:
    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.carry: tuple[str, Open] | None = None

    def window(self, events: Sequence[Event]) -> Stitched:
        """Stitch one window, sorted by (key, ts, rank, line)."""
        if not events:  # (every event of a window may be a copy): the carry stays
            return Stitched([], [], [])
        keys = list(dict.fromkeys(e.key for e in events))
        opens: dict[str, Open] = {}
        if self.carry is not None and keys and self.carry[0] == keys[0]:
            key, prev = self.carry
            opens[key] = Open(_continuation(prev.visit), prev.started, prev.last, prev.explicit)
        wanted = [k for k in keys if k not in opens]
        for key, sv in (self.lookup(wanted) if wanted else {}).items():
            opens[key] = _stored(sv)
        parts = [o.visit for o in opens.values()]
        out = Stitched([], [], [])
        for e in events:
            st = opens.get(e.key)
            if st is not None:
                if e.ts < st.started:
                    out.rejected.append(Problem("ts", _early(e.key, st.started, st.explicit), e.line))
                    continue
                if not st.explicit and e.ts - st.last > GAP_SECONDS:
                    st = None  # the visitor's visit has ended
            if st is None:
                if e.kind != "pageview":
                    out.rejected.append(_orphan(e.key, e.kind, e.line))
                    continue
                visit = Visit([], *_dims_of(e))  # Visit's fields after pages: VISIT_DIMENSIONS
                st = opens[e.key] = Open(visit, e.ts, e.ts, e.key.startswith("v:"))
                parts.append(visit)
            self._attach(st, e)
            out.accepted.append(e)
            out.latest[e.key] = st
        self.carry = (events[-1].key, opens[events[-1].key]) if events and events[-1].key in opens else None
        out.visits = [p for p in parts if p.pages or p.conversions or p.microconversions]
        return out

    @staticmethod
    def _attach(st: Open, e: Event) -> None:
        ts = datetime.fromtimestamp(e.ts, UTC)
        if e.kind == "pageview":
            st.visit.pages.append(PageView(ts, e.path, e.content_grouping))
        else:
            c = Conversion(ts, e.conversion_type or "", e.path, e.content_grouping)
            if e.kind == "conversion":
                c.amount_cents = e.amount_cents
            c.properties = e.properties
            (st.visit.conversions if e.kind == "conversion" else st.visit.microconversions).append(c)
        if e.ts > st.last:
            st.last = e.ts


def _early(key: str, started: float, explicit: bool) -> str:
    if explicit:
        return (
            f"before the start of visit {key[2:]!r} ({_iso(started)}), which is stored: "
            "a visit's events cannot come before its landing page"
        )
    return (
        f"before the start of this visitor's latest stored visit ({_iso(started)}): "
        "send each visitor's events in time order"
    )


def _orphan(key: str, kind: str, line: int) -> Problem:
    if key.startswith("v:"):
        message = f"visit {key[2:]!r} has no page view before this {kind}: a visit starts with one"
        return Problem("visit_id", message, line)
    return Problem(
        "visitor",
        f"no visit open for this visitor: a {kind} must follow a page view of the visitor "
        "by at most 30 minutes of inactivity",
        line,
    )


Checked = tuple[int, str, float, str]  # an event as a dry run sees it: (line, key, ts, kind)


class Checker:
    """A dry run of `Stitcher`: the same rejections, from each event's line, key, time and
    kind alone, without building visits. Windows come sorted as the stitcher's do."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.key: str | None = None  # the last key seen, and its visit: started, last, explicit
        self.state: tuple[float, float, bool] | None = None

    def window(self, events: Sequence[Checked]) -> list[Problem]:
        rejected: list[Problem] = []
        wanted = list(dict.fromkeys(e[1] for e in events if e[1] != self.key))
        stored = self.lookup(wanted) if wanted else {}
        key, state = self.key, self.state
        for line, k, ts, kind in events:
            if k != key:
                key = k
                sv = stored.get(k)
                state = None if sv is None else (sv.started_at, sv.last_ts, k.startswith("v:"))
            if state is not None:
                started, last, explicit = state
                if ts < started:
                    rejected.append(Problem("ts", _early(k, started, explicit), line))
                    continue
                if not explicit and ts - last > GAP_SECONDS:
                    state = None  # the visitor's visit has ended
                elif ts > last:
                    state = (started, ts, explicit)
            if state is None:
                if kind != "pageview":
                    rejected.append(_orphan(k, kind, line))
                    continue
                state = (ts, ts, k.startswith("v:"))
        self.key, self.state = key, state
        return rejected
