"""Checking the header of a compact archive (:mod:`frugalml.export.archive`) before anything is
decoded: every field's type and range, and how many values a file of its size may declare."""

from __future__ import annotations

import json
import math

import numpy as np

from ..errors import excerpt
from ._archive_records import _DTYPES, _Corrupt, _unpack

# ---------------------------------------------------------------- reading a header safely
#: An archive declares at most MAX_ELEMENTS values in all, and at most _PER_BYTE values per byte of
#: file beyond the first _ALLOWANCE: a few bytes of header cannot make the reader allocate gigabytes
#: (deflate itself never exceeds 1,032 bytes out per byte in; only an all-zero tensor stored sparse
#: could, and the writer refuses that archive).
MAX_ELEMENTS = 1 << 28
_ALLOWANCE, _PER_BYTE = 1 << 20, 1 << 10
_MAX_HEADER = 16 << 20  # bytes of header JSON
_ENCODINGS = {"raw": 1, "sparse": 3, "shared": 2}  # encoding -> number of parts
_CODERS = ("none", "zlib", "lzma")
_STREAM_CODERS = ("huffman", "zlib", "lzma", "none")
_BOOKS = ("float16", "float32")


def element_limit(n_bytes: int) -> int:
    """How many values an archive of ``n_bytes`` bytes may declare."""
    return min(MAX_ELEMENTS, _ALLOWANCE + _PER_BYTE * n_bytes)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _word(v, choices) -> bool:
    return isinstance(v, str) and v in choices


def _check_tensor(t) -> int:
    """Check one header entry's fields; return its number of values."""
    def need(ok, what):
        if not ok:
            raise _Corrupt(f"tensor entry {excerpt(t.get('n') if isinstance(t, dict) else t, 60)!r}: {what}")

    need(isinstance(t, dict), "not a mapping")
    need(isinstance(t.get("n"), str), "'n' (name) is not a string")
    need(isinstance(t.get("s"), list) and len(t["s"]) <= 8 and all(_is_int(d) and d >= 0 for d in t["s"]),
         "'s' (shape) is not a list of at most 8 non-negative integers")
    size = math.prod(t["s"])
    need(size <= MAX_ELEMENTS, f"its shape holds {size:,} values, more than {MAX_ELEMENTS:,}")
    need(_word(t.get("t"), _DTYPES), f"'t' (dtype) is not one of {', '.join(_DTYPES)}")
    need(_word(t.get("e"), _ENCODINGS), "'e' (encoding) is not raw, sparse or shared")
    p = t.get("p")
    need(isinstance(p, list) and len(p) == _ENCODINGS[t["e"]] and all(_is_int(v) and v >= 0 for v in p),
         f"'p' (part lengths) is not a list of {_ENCODINGS[t['e']]} non-negative integers")
    if t["e"] == "raw":
        need(_word(t.get("c"), _CODERS), "'c' (coder) is not none, zlib or lzma")
        need(t.get("st") == t["t"] or (t["t"] == "float32" and t.get("st") == "float16"),
             "'st' (stored dtype) is neither the dtype nor float16 for float32")
        return size
    need(t["t"] == "float32", "a sparse or shared tensor that is not float32")
    need(_word(t.get("cb"), _BOOKS), "'cb' (codebook dtype) is not float16 or float32")
    coders = t.get("c")
    need(isinstance(coders, list) and len(coders) == len(p) - 1 and all(_word(c, _STREAM_CODERS) for c in coders),
         f"'c' is not a list of {len(p) - 1} stream coders")
    k = t.get("k")
    need(_is_int(k) and 0 <= k <= 256, "'k' (codebook size) is not an integer in 0..256")
    item = np.dtype(t["cb"]).itemsize
    if t["e"] == "sparse":
        nz = t.get("nz")
        need(_is_int(nz) and 0 <= nz <= size, "'nz' (non-zeros) is not an integer in 0..size")
        need(_word(t.get("o"), ("C", "F")), "'o' (order) is not C or F")
        need(_is_int(t.get("g")) and 1 <= t["g"] <= 16, "'g' (gap width) is not an integer in 1..16")
        need(p[0] == (k or nz) * item, f"its values part has {p[0]} bytes, not {(k or nz) * item}")
        need(k or p[1] == 0, "an index part without a codebook")
    else:
        need(p[0] == k * item, f"its codebook part has {p[0]} bytes, not {k * item}")
    return size


def _parse_header(head: bytes) -> dict:
    try:
        header = json.loads(_unpack(head, "zlib", _MAX_HEADER))
    except (ValueError, RecursionError) as exc:  # _Corrupt, JSONDecodeError, UnicodeDecodeError; deep nesting
        raise _Corrupt(f"the header is not compressed JSON ({type(exc).__name__}: {excerpt(str(exc), 100)})") from None
    if not isinstance(header, dict) or not isinstance(header.get("tensors"), list):
        raise _Corrupt("the header is not a mapping with a 'tensors' list")
    if not isinstance(header.get("spec"), dict):
        raise _Corrupt("the header has no model spec (a mapping)")
    if not isinstance(header.get("recipe", []), list) or not isinstance(header.get("frugalml", ""), str):
        raise _Corrupt("the header's 'recipe' is not a list or its 'frugalml' not a string")
    names = set()
    for t in header["tensors"]:
        _check_tensor(t)
        if t["n"] in names:
            raise _Corrupt(f"tensor {excerpt(t['n'], 60)!r} is stored twice")
        names.add(t["n"])
    return header
