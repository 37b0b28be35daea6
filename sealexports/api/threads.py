"""Queries that serve a request run off the event loop: short indexed reads on reader threads
(`read`), anything that can scan on a worker thread under a deadline that also stops it when
the client hangs up or the server shuts down (`in_thread`).

A worker thread cannot be cancelled: anyio waits for it even when the request's task is
cancelled. So a watcher task sets the deadline's `stop` event the moment the client disconnects
(`http.disconnect` on the ASGI receive channel) or the task is cancelled (uvicorn's shutdown,
Litestar's own disconnect listener during a stream), and SQLite's progress handler ends the query.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anyio
from litestar.types import Receive

from sealexports.jobs.service import ExportStream
from sealexports.services import Services
from sealexports.storage.deadline import Deadline

T = TypeVar("T")

# Short indexed reads (a key, a site, a job) on threads of their own, handed over by asyncio's
# executor: a third of the event loop's time per hop that anyio's worker threads take (its
# capacity limiter and cancel scopes), which decides how many status polls a second one loop serves.
_READERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sealexports-read")


async def read(fn: Callable[[], T]) -> T:
    """`fn()`, a short indexed read, on a reader thread (a checkpoint or a lock never holds the
    event loop). No deadline: use `in_thread` for anything that scans."""
    return await asyncio.get_running_loop().run_in_executor(_READERS, fn)


def request_deadline(services: Services) -> Deadline:
    """`query_timeout_seconds` for this request's queries; they also stop when the service does."""
    limit = services.settings.query_timeout_seconds
    return Deadline(
        limit,
        f"the export's queries took longer than {limit:g} s (query_timeout_seconds) and were stopped; "
        "narrow the date range or the filters, or create a background export",
        shutdown=services.queue.stopping,
    )


async def in_thread(fn: Callable[[], T], deadline: Deadline, receive: Receive | None = None) -> T:
    """`fn()` on a worker thread (it runs its queries under `deadline.running`). A disconnect seen
    on `receive` (pass it only while nothing else reads it), or a cancellation, sets `deadline.stop`."""
    done = False

    async def watch() -> None:
        try:
            if receive is not None:
                # The body has been read: the next message is the client's disconnect.
                while (await receive())["type"] != "http.disconnect":
                    pass
                deadline.stop.set()
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            if not done:  # a shutdown, or Litestar's disconnect listener during a stream
                deadline.stop.set()
            raise

    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        try:
            result = await anyio.to_thread.run_sync(fn)
        except Exception as e:  # raised as itself below, not wrapped in an ExceptionGroup
            error = e
        finally:
            done = True
            tg.cancel_scope.cancel()
    if error is not None:
        raise error
    return result


async def bridge(stream: ExportStream, deadline: Deadline) -> AsyncIterator[bytes]:
    """Pass on the chunks already made, then pull the rest on a worker thread one at a time, each
    under the deadline; the stream (and its own connection) is closed at the end."""

    def pull() -> bytes | None:
        with deadline.running(stream.conn):
            return next(stream.chunks, None)

    try:
        for chunk in stream.first:
            yield chunk
        while (more := await in_thread(pull, deadline)) is not None:
            yield more
    finally:
        stream.close()
