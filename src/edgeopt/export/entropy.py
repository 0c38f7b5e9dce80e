"""Bit packing and canonical Huffman coding of small-alphabet symbol streams.

Huffman (1952), "A Method for the Construction of Minimum-Redundancy Codes", as Deep
Compression applies it to the quantized weights and sparse indices (Han et al. 2016, arXiv
1510.00149, section 4). Codes are canonical (assigned in order of length, then symbol), so a
table is just one code length per symbol, stored as 4-bit nibbles; lengths are limited to
``MAX_CODE_LENGTH`` bits so that table fits and decoding can use one lookup per symbol.
"""

from __future__ import annotations

import heapq
import struct

import numpy as np

MAX_CODE_LENGTH = 15


class DecodeError(ValueError):
    """A stream does not decode: truncated or corrupt bytes."""


def pack_bits(values: np.ndarray, lengths: np.ndarray) -> bytes:
    """Concatenate ``values[i]`` written in ``lengths[i]`` bits, most significant bit first."""
    values = np.asarray(values, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if values.size == 0:
        return b""
    total = int(lengths.sum())
    owner = np.repeat(np.arange(values.size), lengths)
    starts = np.cumsum(lengths) - lengths
    offset = np.arange(total) - starts[owner]
    bits = (values[owner] >> (lengths[owner] - 1 - offset)) & 1
    return np.packbits(bits.astype(np.uint8)).tobytes()


def unpack_fixed(data: bytes, count: int, width: int) -> np.ndarray:
    """Read ``count`` unsigned values of ``width`` bits each (the inverse of fixed packing)."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    needed = (count * width + 7) // 8
    if len(data) < needed:
        raise DecodeError(f"{len(data)} bytes hold fewer than {count} values of {width} bits")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * width]
    weights = 1 << np.arange(width - 1, -1, -1, dtype=np.int64)
    return bits.reshape(count, width).astype(np.int64) @ weights


def pack_fixed(symbols: np.ndarray, width: int) -> bytes:
    """Write every symbol in ``width`` bits."""
    return pack_bits(symbols, np.full(len(symbols), width, dtype=np.int64))


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code length per symbol (0 for unused ones), at most ``MAX_CODE_LENGTH``."""
    counts = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    weights = counts.copy()
    while True:
        heap = [(int(weights[s]), int(s), (int(s),)) for s in used]
        heapq.heapify(heap)
        depth = dict.fromkeys((int(s) for s in used), 0)
        while len(heap) > 1:
            w1, t1, a = heapq.heappop(heap)
            w2, t2, b = heapq.heappop(heap)
            for symbol in a + b:
                depth[symbol] += 1
            heapq.heappush(heap, (w1 + w2, min(t1, t2), a + b))
        if max(depth.values()) <= MAX_CODE_LENGTH:
            for symbol, value in depth.items():
                lengths[symbol] = value
            return lengths
        # Too deep for the table: flatten the distribution and build again (rare, and only
        # for very skewed streams; the code stays a valid prefix code, slightly longer).
        weights[used] = np.maximum(1, weights[used] // 2)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of every symbol from its length (DEFLATE's rule, RFC 1951 3.2.2)."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code = 0
    previous = 0
    for symbol in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[symbol]) - previous
        previous = int(lengths[symbol])
        codes[symbol] = code
        code += 1
    return codes


def _table_bytes(lengths: np.ndarray) -> bytes:
    size = int(np.flatnonzero(lengths).max()) + 1 if lengths.any() else 0
    nibbles = np.zeros(size + (size % 2), dtype=np.uint8)
    nibbles[:size] = lengths[:size]
    packed = (nibbles[0::2] << 4) | nibbles[1::2]
    return struct.pack("<H", size) + packed.astype(np.uint8).tobytes()


def huffman_encode(symbols: np.ndarray, alphabet: int) -> bytes:
    """A code-length table followed by the coded symbols (their count is stored elsewhere)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.size == 0:
        return struct.pack("<H", 0)
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet))
    codes = canonical_codes(lengths)
    return _table_bytes(lengths) + pack_bits(codes[symbols], lengths[symbols])


def huffman_decode(data: bytes, count: int) -> np.ndarray:
    """Decode ``count`` symbols written by :func:`huffman_encode`."""
    if len(data) < 2:
        raise DecodeError("the Huffman table is truncated")
    (size,) = struct.unpack_from("<H", data)
    table_end = 2 + (size + 1) // 2
    if len(data) < table_end:
        raise DecodeError("the Huffman table is truncated")
    packed = np.frombuffer(data, dtype=np.uint8, count=(size + 1) // 2, offset=2)
    lengths = np.stack([packed >> 4, packed & 15], axis=1).reshape(-1)[:size].astype(np.int64)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if not lengths.any():
        raise DecodeError("the Huffman table is empty")
    codes = canonical_codes(lengths)
    width = int(lengths.max())
    lookup_symbol = np.full(1 << width, -1, dtype=np.int64)
    lookup_length = np.zeros(1 << width, dtype=np.int64)
    for symbol in np.flatnonzero(lengths):
        shift = width - int(lengths[symbol])
        begin = int(codes[symbol]) << shift
        lookup_symbol[begin : begin + (1 << shift)] = symbol
        lookup_length[begin : begin + (1 << shift)] = lengths[symbol]
    table_symbol = lookup_symbol.tolist()
    table_length = lookup_length.tolist()
    body = data[table_end:]
    out = [0] * count
    buffer = 0
    held = 0
    position = 0
    mask = (1 << width) - 1
    for index in range(count):
        while held < width:
            buffer = (buffer << 8) | (body[position] if position < len(body) else 0)
            position += 1
            held += 8
        peek = (buffer >> (held - width)) & mask
        symbol = table_symbol[peek]
        if symbol < 0:
            raise DecodeError("a Huffman code is not in the table")
        held -= table_length[peek]
        buffer &= (1 << held) - 1
        out[index] = symbol
    if position * 8 - held > len(body) * 8:
        raise DecodeError("the Huffman stream is truncated")
    return np.asarray(out, dtype=np.int64)
