"""The second process of a file import on the command line (never in the server).

In pass 1 it checks five blocks of NDJSON lines in nine into a staging file of its own; in
pass 3 it stitches the sorted events and builds each window's rows while the first process
writes the window before. The first process alone writes to the database.

New visits take ids counted on from the largest id when pass 3 starts. The first process
checks, inside each window's transaction, that no other connection has committed since
(`PRAGMA data_version`): then every row built here is the row the first process would have
built itself. If one has (a server taking in events meanwhile), the first process stops this
one and writes the rest of the windows itself, from the last window it wrote.
"""

from __future__ import annotations

import marshal
import multiprocessing
import signal
import sqlite3
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from multiprocessing.connection import Connection
from typing import Any

from sealexports.errors import Problem
from sealexports.ingest.importer import ErrorLog, staged, unstage
from sealexports.ingest.readers import ndjson_items
from sealexports.ingest.stitcher import Open, Stitcher
from sealexports.storage import imports
from sealexports.storage.accounts import Site
from sealexports.storage.database import connect
from sealexports.storage.visits import RowBuilder, Rows, seen_in


@dataclass(slots=True)
class Parsed:
    """What the second process made of its blocks of pass 1."""

    records: int
    invalid: int
    problems: list[Problem]  # the first bad lines (ErrorLog.first)


@dataclass(slots=True)
class Built:
    """One window of pass 3, ready to write."""

    last: int  # position (rowid in the sorted staging table) of the window's last event
    events: int  # rows read for it (progress), copies included
    copies: int  # later copies of events, dropped
    rows: Rows
    ids: list[bytes]  # of the accepted events, in index order
    keys: list[tuple[str, int, float, float]]  # each key's latest visit (imports.save_visit_keys)
    accepted: int
    rejected: list[Problem]
    carry: tuple[str, Open] | None  # the stitcher's carry after this window


class HelperFailed(RuntimeError):
    """The second process failed (a bug): its traceback."""


class Helper:
    """The first process's handle on the second one: a forked process and a pipe."""

    def __init__(self, db_path: str, site: Site, staging_path: str, part_path: str) -> None:
        self.part = part_path  # where it stages its blocks of pass 1
        ctx = multiprocessing.get_context("fork")  # no re-import; the child never uses our connection
        self.pipe, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(child, db_path, site, staging_path, part_path), daemon=True
        )
        self.process.start()
        child.close()

    def parse(self, first: int, lines: list[bytes]) -> None:
        """Check and stage a block of NDJSON lines, numbered from `first`."""
        self.pipe.send(("parse", first, lines))

    def parsed(self) -> Parsed:
        """Wait for the blocks sent to be staged; what was found in them."""
        self.pipe.send(("parsed",))
        result: Parsed = self._recv()
        return result

    def build(self, first_id: int, window: int) -> None:
        """Start building the sorted events' windows; new visits take ids from `first_id` on."""
        self.pipe.send(("build", first_id, window))

    def ready(self) -> bool:
        """Whether a built window is waiting."""
        return self.pipe.poll()

    def next(self) -> Built | None:
        """The next built window, in order; None after the last."""
        head = self._recv()
        if head is None:
            return None
        *lists, ids, keys = marshal.loads(self.pipe.recv_bytes())
        last, events, copies, counts, accepted, rejected, carry = head
        rows = Rows(**dict(zip(_LISTS, lists, strict=True)), counts=counts)
        return Built(last, events, copies, rows, ids, keys, accepted, rejected, carry)

    def close(self) -> None:
        self.pipe.close()
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=10)

    def _recv(self) -> Any:
        try:
            message = self.pipe.recv()
        except EOFError:
            raise HelperFailed("the import's second process ended unexpectedly") from None
        if isinstance(message, HelperFailed):
            raise message
        return message


def _serve(pipe: Connection, db_path: str, site: Site, staging_path: str, part_path: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the first process, which ends this one
    try:
        part = _Part(part_path)
        while True:
            try:
                message = pipe.recv()
            except EOFError:
                return
            if message[0] == "parse":
                part.parse(message[1], message[2])
            elif message[0] == "parsed":
                pipe.send(part.finish())
            elif message[0] == "build":
                for b in _build(db_path, site, staging_path, message[1], message[2]):
                    # The rows as marshal data: tuples and lists of plain values, which it
                    # writes and reads faster than pickle (0.47 against 0.68 s for 200,000 events).
                    pipe.send((b.last, b.events, b.copies, b.rows.counts, b.accepted, b.rejected, b.carry))
                    pipe.send_bytes(marshal.dumps((*(getattr(b.rows, n) for n in _LISTS), b.ids, b.keys)))
                pipe.send(None)
    except BaseException:
        pipe.send(HelperFailed(traceback.format_exc()))


class _Part:
    """Pass 1's blocks of the second process, staged in a file of its own."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self.log = ErrorLog()
        self.records = 0

    def parse(self, first: int, lines: Sequence[bytes]) -> None:
        rows = []
        for item in ndjson_items(lines, first=first):
            self.records += 1
            if (row := staged(item, self.log)) is not None:
                rows.append(row)
        if self.conn is None:
            self.conn = imports.open_staging(self.path)
        imports.stage(self.conn, rows)

    def finish(self) -> Parsed:
        if self.conn is None:
            self.conn = imports.open_staging(self.path)
        self.conn.close()
        return Parsed(self.records, self.log.count, self.log.first())


def _build(db_path: str, site: Site, staging_path: str, first_id: int, window: int) -> Iterator[Built]:
    conn = connect(db_path, migrate=False)
    staged = sqlite3.connect(f"file:{staging_path}?mode=ro", uri=True)
    try:
        stitcher = Stitcher(lambda keys: imports.stored_visits(conn, site.site_id, keys))
        builder = RowBuilder(site, first_id, seen_in(conn), nul_free=True)  # parse_event refuses NUL
        for page in imports.sorted_pages(staged, "import_sorted", imports.WINDOW_COLUMNS, window):
            stitched = stitcher.window(unstage(page.rows))
            rows = builder.build(stitched.visits)
            carry = stitcher.carry
            builder.forget(carry[1].visit.id if carry else None)
            yield Built(
                page.last,
                page.read,
                page.read - len(page.rows),
                rows,
                sorted(e.event_id for e in stitched.accepted),
                [(key, o.visit.id, o.started, o.last) for key, o in stitched.latest.items()],  # type: ignore[misc]
                len(stitched.accepted),
                stitched.rejected,
                carry,
            )
    finally:
        staged.close()
        conn.close()


_LISTS = tuple(f.name for f in fields(Rows) if f.name != "counts")  # Rows' fields before counts
