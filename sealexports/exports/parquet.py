"""Parquet for pipelines (pyarrow): typed columns, written a row group at a time.

Types: dates DATE, timestamps TIMESTAMP (milliseconds, adjusted to UTC), counts INT64, amounts
and rates DOUBLE (the values JSON carries, two decimals), text and `properties` (JSON text)
STRING. Column chunks are compressed with snappy, which every Parquet reader takes.

Each row group of ROW_GROUP_ROWS rows is converted to columns, written and sent on, so memory
holds one group whatever the export's size. The same rows give the same bytes (pyarrow writes
no time into the file; its version is in `created_by`).

pyarrow is large (170 MB installed): it is the `parquet` extra, `pip install
'sealexports[parquet]'`; without it a parquet export is refused at once, saying so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

from sealexports.errors import NotInstalled
from sealexports.exports.raw import Pieces
from sealexports.exports.types import Column

ROW_GROUP_ROWS = 20_000
MISSING = (
    "format parquet needs pyarrow, which this installation lacks: install the extra with "
    "pip install 'sealexports[parquet]' (the single-file executable has no parquet), or choose "
    "csv, ndjson or xlsx"
)


def require() -> None:
    """NotInstalled (501) unless pyarrow can be imported."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise NotInstalled(MISSING) from None


def pieces(columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> Pieces:
    """(bytes, rows): each row group's bytes as it is written, then the footer's."""
    require()
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([pa.field(c.name, _arrow_type(c.kind)) for c in columns])
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema, compression="snappy")
    try:
        it = iter(rows)
        while batch := list(islice(it, ROW_GROUP_ROWS)):
            arrays = [_array(c.kind, [row[i] for row in batch]) for i, c in enumerate(columns)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=ROW_GROUP_ROWS)
            yield sink.take(), len(batch)
    finally:
        writer.close()
    yield sink.take(), 0


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {
        "int": pa.int64(),
        "dec2": pa.float64(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("ms", tz="UTC"),
    }.get(kind, pa.string())  # text, json


def _array(kind: str, values: list[Any]) -> Any:
    """One column of a row group, from the values the engine gives (dates and timestamps as ISO
    text: 2025-01-01, 2025-01-01T07:01:49Z)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind == "date":
        return pa.array(values, pa.string()).cast(pa.date32())
    if kind == "timestamp":
        parsed = pc.strptime(pa.array(values, pa.string()), format="%Y-%m-%dT%H:%M:%SZ", unit="ms")
        return parsed.cast(pa.timestamp("ms", tz="UTC"))
    return pa.array(values, _arrow_type(kind))


class _Sink:
    """A write-only file for ParquetWriter: keeps what it is given until `take`."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pos = 0
        self.closed = False

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data
