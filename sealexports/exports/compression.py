"""Compressing an export as it is written: each chunk goes through a streaming compressor, so
memory stays flat and the first bytes leave before the last rows are read.

The output is reproducible: the same bytes in give the same bytes out, so the API, its jobs and
the CLI agree to the byte. gzip is one member with no file name and a zero MTIME (RFC 1952:
"no time stamp is available"), at level 6 (gzip's own default); zstd is one frame at level 3
(zstd's default), without a content size (it is not known when the frame starts).
"""

from __future__ import annotations

import zlib
from typing import Protocol

from sealexports.exports.raw import Pieces

GZIP_LEVEL = 6
ZSTD_LEVEL = 3


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


def compressor(name: str) -> _Compressor:
    """A streaming compressor for `name` (gzip or zstd)."""
    if name == "gzip":
        return zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 16+15: a gzip member
    if name == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
    raise ValueError(f"unknown compression {name!r}")


def compressed(name: str, pieces: Pieces) -> Pieces:
    """`pieces` (bytes, rows in them) compressed with `name`, or as they are for none."""
    if name == "none":
        yield from pieces
        return
    comp = compressor(name)
    try:
        for data, n in pieces:
            yield comp.compress(data), n
        yield comp.flush(), 0
    finally:
        pieces.close()
