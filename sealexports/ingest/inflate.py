"""Request bodies as chunks: gzip inflated a piece at a time, with a limit on the inflated size.

A reader takes the chunks as they come and stops as soon as it has what it needs, so a small
body that inflates to gigabytes is never inflated, let alone held, beyond the limit.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from sealexports.errors import InvalidRequest, TooLarge, UnsupportedMediaType

CHUNK = 64 * 1024  # inflated bytes at a time
GZIP_MAGIC = b"\x1f\x8b"


def body_chunks(body: bytes, encoding: str | None, *, limit: int) -> Iterator[bytes]:
    """The body decoded from its Content-Encoding (gzip or none), `CHUNK` bytes at a time.
    TooLarge past `limit` inflated bytes; InvalidRequest for broken gzip or bytes after it. A
    body of several gzip members is read whole, as one stream."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        if len(body) > limit:
            raise TooLarge(f"the body is over {limit // 2**20} MiB")
        return (body[i : i + CHUNK] for i in range(0, len(body), CHUNK))
    if encoding not in ("gzip", "x-gzip"):
        raise UnsupportedMediaType(f"Content-Encoding must be gzip (or none), got {encoding!r}")
    return _gunzip(body, limit)


def _gunzip(body: bytes, limit: int) -> Iterator[bytes]:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    data, total = body, 0
    while True:
        try:
            out = inflater.decompress(data, CHUNK)
        except zlib.error as e:
            raise InvalidRequest(f"the body is not valid gzip ({e})") from None
        data = inflater.unconsumed_tail
        total += len(out)
        if total > limit:
            raise TooLarge(f"the body is over {limit // 2**20} MiB once decompressed")
        if out:
            yield out
        if inflater.eof:
            rest = inflater.unused_data
            if not rest:
                return
            if not rest.startswith(GZIP_MAGIC):
                raise InvalidRequest(f"the body has {len(rest):,} bytes after the end of its gzip stream")
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # the next member
            data = rest
        elif not data and len(out) < CHUNK:
            raise InvalidRequest("the body is not valid gzip (truncated)")


def lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a body given in chunks (without their line ends)."""
    pieces: list[bytes] = []  # of the line still arriving
    for chunk in chunks:
        first, *whole = chunk.split(b"\n")
        if not whole:
            pieces.append(first)
            continue
        yield b"".join([*pieces, first])
        *middle, last = whole
        yield from middle
        pieces = [last]
    if any(pieces):
        yield b"".join(pieces)
