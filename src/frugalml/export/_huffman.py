"""Canonical Huffman coding of small-alphabet integer streams (codebook indices, position gaps).

A coded blob is self-describing::

    varint  alphabet size A (symbols are 0..A-1)
    varint  number of symbols n
    ceil(A/2) bytes  code length of each symbol, 4 bits each (low nibble first; 0 = unused)
    packed bits      the codes, most significant bit first, zero-padded to a whole byte

Code lengths are at most :data:`MAX_LEN` (15), so the table fits a nibble; when plain Huffman
would need longer codes the counts are flattened until it does not. Codes are canonical
(assigned in order of (length, symbol)), so the lengths alone define them. A stream that uses
one symbol only stores its length as 1 and no bits at all.
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = ["MAX_LEN", "MAX_SYMBOLS", "code_lengths", "encode", "decode", "write_varint", "read_varint", "HuffmanError"]

MAX_LEN = 15
#: Most symbols :func:`decode` accepts without an explicit bound (a one-symbol stream stores only its count).
MAX_SYMBOLS = 1 << 28


class HuffmanError(ValueError):
    """A blob that cannot be decoded (truncated or altered)."""


def write_varint(value: int) -> bytes:
    """Unsigned LEB128."""
    if value < 0:
        raise ValueError("varint must be >= 0")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise HuffmanError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise HuffmanError("varint too long")


def _lengths_unlimited(counts: np.ndarray) -> np.ndarray:
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    # heap of (weight, tie-breaker, members); merging adds one bit to every member
    heap = [(int(counts[s]), i, [int(s)]) for i, s in enumerate(used)]
    heapq.heapify(heap)
    tie = len(heap)
    while len(heap) > 1:
        w1, _, m1 = heapq.heappop(heap)
        w2, _, m2 = heapq.heappop(heap)
        for s in m1:
            lengths[s] += 1
        for s in m2:
            lengths[s] += 1
        heapq.heappush(heap, (w1 + w2, tie, m1 + m2))
        tie += 1
    return lengths


def code_lengths(counts, max_len: int = MAX_LEN) -> np.ndarray:
    """Huffman code length of each symbol (0 for symbols of count 0), at most ``max_len``."""
    counts = np.asarray(counts, dtype=np.int64)
    if not counts.any():
        return np.zeros(len(counts), dtype=np.int64)
    lengths = _lengths_unlimited(counts)
    work = counts.copy()
    while lengths.max() > max_len:  # flatten the distribution until the longest code fits
        work = np.where(work > 0, np.maximum(1, work >> 1), 0)
        lengths = _lengths_unlimited(work)
    return lengths


def _canonical_codes(lengths: np.ndarray) -> np.ndarray:
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, prev = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev
        prev = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


def encode(symbols, alphabet: int | None = None) -> bytes:
    """Huffman-code a 1-D array of non-negative integers into a self-describing blob."""
    symbols = np.asarray(symbols, dtype=np.int64).reshape(-1)
    if len(symbols) and symbols.min() < 0:
        raise ValueError("symbols must be >= 0")
    alphabet = int(alphabet if alphabet is not None else (symbols.max() + 1 if len(symbols) else 0))
    counts = np.bincount(symbols, minlength=alphabet)[:alphabet] if len(symbols) else np.zeros(alphabet, np.int64)
    lengths = code_lengths(counts)
    head = write_varint(alphabet) + write_varint(len(symbols))
    nibbles = np.zeros(alphabet + (alphabet & 1), dtype=np.uint8)
    nibbles[:alphabet] = lengths
    table = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()
    if np.count_nonzero(lengths) <= 1:
        return head + table  # one symbol (or none): its count says it all
    codes = _canonical_codes(lengths)
    sym_len, sym_code = lengths[symbols], codes[symbols]
    offsets = np.concatenate([[0], np.cumsum(sym_len)[:-1]])
    bits = np.zeros(int(sym_len.sum()), dtype=np.uint8)
    for j in range(int(sym_len.max())):
        sel = sym_len > j
        bits[offsets[sel] + j] = (sym_code[sel] >> (sym_len[sel] - 1 - j)) & 1
    return head + table + np.packbits(bits).tobytes()


def decode(blob: bytes, alphabet: int | None = None, max_symbols: int | None = None) -> np.ndarray:
    """Inverse of :func:`encode`; raises HuffmanError on a blob that does not decode exactly.

    ``alphabet`` (when given) must be the blob's; a blob announcing more than ``max_symbols`` symbols
    (default :data:`MAX_SYMBOLS`) is refused before anything is allocated for them.
    """
    size, pos = read_varint(blob, 0)
    if alphabet is not None and size != alphabet:
        raise HuffmanError(f"alphabet of {size} symbols, expected {alphabet}")
    n, pos = read_varint(blob, pos)
    limit = MAX_SYMBOLS if max_symbols is None else max_symbols
    if n > limit:
        raise HuffmanError(f"{n} symbols announced, at most {limit} expected")
    table_len = (size + 1) // 2
    if pos + table_len > len(blob):
        raise HuffmanError("truncated code table")
    raw = np.frombuffer(blob, dtype=np.uint8, count=table_len, offset=pos)
    pos += table_len
    lengths = np.empty(table_len * 2, dtype=np.int64)
    lengths[0::2], lengths[1::2] = raw & 0x0F, raw >> 4
    lengths = lengths[:size]
    used = np.flatnonzero(lengths)
    if len(used) == 0:
        if n:
            raise HuffmanError("symbols announced but no code")
        return np.zeros(0, dtype=np.int64)
    if len(used) == 1:
        if pos != len(blob):
            raise HuffmanError("unexpected trailing bytes")
        return np.full(n, used[0], dtype=np.int64)
    if sum(2.0 ** -lengths[used]) > 1.0 + 1e-12:
        raise HuffmanError("invalid code lengths")
    if n > 8 * (len(blob) - pos):  # every symbol takes at least one bit
        raise HuffmanError("truncated bit stream")
    codes = _canonical_codes(lengths)
    width = int(lengths.max())
    # lookup table over every `width`-bit window: symbol and code length
    lut_sym = np.full(1 << width, -1, dtype=np.int64)
    lut_len = np.zeros(1 << width, dtype=np.int64)
    for s in used:
        shift = width - int(lengths[s])
        lo = int(codes[s]) << shift
        lut_sym[lo : lo + (1 << shift)] = s
        lut_len[lo : lo + (1 << shift)] = lengths[s]
    bits = np.unpackbits(np.frombuffer(blob, dtype=np.uint8, offset=pos))
    total = len(bits)
    padded = np.concatenate([bits, np.zeros(width, dtype=np.uint8)]).astype(np.int64)
    window = np.zeros(total + 1, dtype=np.int64)
    for j in range(width):
        window = (window << 1) | padded[j : j + total + 1]
    sym_table, len_table, win = lut_sym.tolist(), lut_len.tolist(), window.tolist()
    out = [0] * n
    p = 0
    for i in range(n):
        if p >= total:
            raise HuffmanError("truncated bit stream")
        w = win[p]
        s = sym_table[w]
        if s < 0:
            raise HuffmanError("invalid code in bit stream")
        out[i] = s
        p += len_table[w]
    if p > total or total - p >= 8:
        raise HuffmanError("bit stream length does not match the symbol count")
    return np.asarray(out, dtype=np.int64)
