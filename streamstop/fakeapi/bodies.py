"""Encoding a good answer's body: plain or gzip, optionally padded to a huge size.

Padding is items for a uuid nobody asked for, placed before the real items, MiB by MiB.
The padded head (and its gzip form) is built once per size and reused, so the simulator
answers a 1 GiB gzip bomb without holding 1 GiB: its compressed padding is one deflate
block of 1 MiB of items, repeated (each block compressed alone, so copies can follow each
other), and the gzip trailer's CRC of the head is computed once from that MiB.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Sequence

import orjson

MIB = 1024 * 1024
_PAD_ITEM = b'{"messageUuid":"ffffffff-ffff-4fff-bfff-ffffffffffff","code":200}'
# At least 1 MiB, so N units are at least N MiB.
_PAD_UNIT = (_PAD_ITEM + b",") * -(-MIB // (len(_PAD_ITEM) + 1))
# Header of a gzip member: magic, deflate, no flags, no mtime, no extra flags, unknown OS.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def encode_answer(
    errors: bool, items: Sequence[dict[str, object]], *, pad_mb: int, gzip: bool
) -> bytes:
    """`{"errors": errors, "items": [padding..., items...]}`, gzip-compressed if asked."""
    inner = orjson.dumps(items)[1:-1]
    if pad_mb and not inner:
        inner = _PAD_ITEM  # the padding ends in a comma: an item must follow it
    tail = inner + b"]}"
    if not gzip:
        return _head(errors, pad_mb) + tail
    compressed_head, crc = _gzip_head(errors, pad_mb)
    size = len(_prefix(errors)) + len(_PAD_UNIT) * pad_mb + len(tail)
    trailer = struct.pack("<II", zlib.crc32(tail, crc), size & 0xFFFFFFFF)
    return compressed_head + _deflate(tail, zlib.Z_FINISH) + trailer


def _prefix(errors: bool) -> bytes:
    return b'{"errors":%s,"items":[' % (b"true" if errors else b"false")


@functools.lru_cache(maxsize=4)
def _head(errors: bool, pad_mb: int) -> bytes:
    return _prefix(errors) + _PAD_UNIT * pad_mb


@functools.lru_cache(maxsize=4)
def _gzip_head(errors: bool, pad_mb: int) -> tuple[bytes, int]:
    """The gzip header and deflate blocks of the head, and the CRC-32 of the head."""
    prefix = _prefix(errors)
    crc = zlib.crc32(prefix)
    for _ in range(pad_mb):
        crc = zlib.crc32(_PAD_UNIT, crc)
    blocks = _deflate(prefix, zlib.Z_SYNC_FLUSH) + _deflate(_PAD_UNIT, zlib.Z_SYNC_FLUSH) * pad_mb
    return _GZIP_HEADER + blocks, crc


def _deflate(data: bytes, flush: int) -> bytes:
    """`data` as raw deflate blocks from a fresh compressor: they refer to nothing before
    them, so such runs can be concatenated (all but the last ending in a sync flush)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(flush)
