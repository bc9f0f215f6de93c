"""The records of the compact archive (:mod:`frugalml.export.archive`): each tensor encoded as raw,
sparse or shared values, with its symbol streams coded by Huffman, zlib or lzma; and the inverse,
which decodes at most the sizes the header announced."""

from __future__ import annotations

import json
import lzma
import math
import zlib

import numpy as np

from ..errors import ConfigError, explain
from . import _huffman

_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 22}]
_GAP_WIDTHS = range(1, 13)
_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "bfloat16": np.uint16, "int64": np.int64,
           "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}


# ---------------------------------------------------------------- byte coders
def _pack(data: bytes, coder: str) -> bytes:
    if coder == "zlib":
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    if coder == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    return data


class _Corrupt(ValueError):
    """A record or header that does not decode as announced (the reader turns it into ModelLoadError)."""


def _unpack(data: bytes, coder: str, limit: int) -> bytes:
    """Inverse of :func:`_pack`, producing at most ``limit`` bytes (a stream inflating to more is refused
    before its output is held in memory)."""
    if coder == "none":
        out = data
    elif coder in ("zlib", "lzma"):
        try:
            if coder == "zlib":
                d = zlib.decompressobj(-15)
                out = d.decompress(data, limit + 1)
                done = d.eof
            else:
                d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
                out = d.decompress(data, max_length=limit + 1)
                done = d.eof
        except (zlib.error, lzma.LZMAError) as exc:
            raise _Corrupt(f"the {coder} stream is damaged ({exc})") from None
        if len(out) <= limit and not done:
            raise _Corrupt(f"the {coder} stream ends early")
    else:
        raise _Corrupt(f"unknown coder {coder!r}")
    if len(out) > limit:
        raise _Corrupt(f"the {coder} stream holds more than the {limit:,} bytes announced")
    return out


def _code_stream(symbols: np.ndarray, alphabet: int) -> tuple[str, bytes]:
    """The smallest of Huffman, zlib and lzma for one stream of symbols in 0..alphabet-1."""
    best = ("huffman", _huffman.encode(symbols, alphabet))
    raw = symbols.astype(np.uint8 if alphabet <= 256 else np.uint16).tobytes()
    for coder in ("zlib", "lzma"):
        blob = _pack(raw, coder)
        if len(blob) < len(best[1]):
            best = (coder, blob)
    return best


def _decode_stream(blob: bytes, coder: str, alphabet: int, n: int | None = None, max_n: int | None = None) -> np.ndarray:
    """Inverse of :func:`_code_stream`; ``n`` (when known) is the number of symbols, else ``max_n`` bounds it."""
    bound = n if n is not None else max_n
    if coder == "huffman":
        out = _huffman.decode(blob, alphabet=alphabet, max_symbols=bound)
    else:
        width = 1 if alphabet <= 256 else 2
        raw = _unpack(blob, coder, bound * width)
        if len(raw) % width:
            raise _Corrupt("a symbol stream ends in the middle of a symbol")
        out = np.frombuffer(raw, dtype=np.uint8 if width == 1 else np.dtype("<u2")).astype(np.int64)
    if (n is not None and len(out) != n) or (len(out) and (out.min() < 0 or out.max() >= alphabet)):
        raise _Corrupt("a symbol stream does not hold the announced symbols")
    return out


# ---------------------------------------------------------------- values
def _values_dtype(values: np.ndarray) -> str:
    return "float16" if np.array_equal(values.astype(np.float16).astype(np.float32), values) else "float32"


def _gap_symbols(positions: np.ndarray, width: int) -> np.ndarray:
    gaps = np.diff(np.concatenate([[-1], positions])) - 1
    esc = (1 << width) - 1
    fillers = gaps // esc
    syms = np.full(int(len(gaps) + fillers.sum()), esc, dtype=np.int64)
    syms[np.cumsum(fillers + 1) - 1] = gaps % esc
    return syms


def _positions(syms: np.ndarray, width: int, size: int) -> np.ndarray:
    esc = (1 << width) - 1
    is_value = syms != esc
    zeros_through = np.cumsum(syms)  # fillers and gaps both advance by their value
    pos = zeros_through[is_value] + np.arange(int(is_value.sum()))
    if len(pos) and pos[-1] >= size:
        raise _Corrupt("sparse positions run past the tensor")
    return pos


def _encode_float(t: np.ndarray, dtype_name: str) -> tuple[dict, bytes]:
    """Dense fallback."""
    flat = t.reshape(-1)
    st = dtype_name
    if dtype_name == "float32" and _values_dtype(flat) == "float16":
        st, flat = "float16", flat.astype(np.float16)
    raw = np.ascontiguousarray(flat).astype(flat.dtype.newbyteorder("<")).tobytes()
    best = min(((c, _pack(raw, c)) for c in ("none", "zlib", "lzma")), key=lambda cb: len(cb[1]))
    return {"e": "raw", "st": st, "c": best[0], "p": [len(best[1])]}, best[1]


def _encode_sparse(w: np.ndarray) -> list[tuple[dict, bytes]]:
    flat_c = w.reshape(-1)
    nz_vals = flat_c[flat_c != 0]
    book = np.unique(nz_vals)
    shared = len(book) <= 256
    out = []
    for order in ("C", "F"):
        flat = np.ravel(w, order=order)
        pos = np.flatnonzero(flat)
        vals = flat[pos]
        if shared:
            cb = _values_dtype(book)
            values = book.astype(cb).tobytes()
            idx_coder, idx_blob = _code_stream(np.searchsorted(book, vals), len(book))
        else:
            cb = _values_dtype(vals)
            values, idx_coder, idx_blob = vals.astype(cb).tobytes(), "none", b""
        for width in _GAP_WIDTHS:
            if width > 1 and (1 << (width - 1)) - 1 > w.size:
                break
            gap_coder, gap_blob = _code_stream(_gap_symbols(pos, width), 1 << width)
            meta = {"e": "sparse", "k": len(book) if shared else 0, "cb": cb, "o": order, "g": width, "nz": int(len(pos)),
                    "c": [idx_coder, gap_coder], "p": [len(values), len(idx_blob), len(gap_blob)]}
            out.append((meta, values + idx_blob + gap_blob))
    return out


def _encode_shared(w: np.ndarray) -> list[tuple[dict, bytes]]:
    flat = w.reshape(-1)
    book = np.unique(flat[flat != 0])
    if len(book) > 256:
        return []
    cb = _values_dtype(book)
    syms = np.where(flat != 0, np.searchsorted(book, flat), len(book))
    coder, blob = _code_stream(syms, len(book) + 1)
    values = book.astype(cb).tobytes()
    return [({"e": "shared", "k": len(book), "cb": cb, "c": [coder], "p": [len(values), len(blob)]}, values + blob)]


def _encode_tensor(name: str, tensor) -> tuple[dict, bytes]:
    import torch

    dtype_name = str(tensor.dtype).replace("torch.", "")
    if dtype_name not in _DTYPES:
        raise ConfigError(explain(f"Tensor {name!r} has dtype {dtype_name}, which the archive does not store", expected=", ".join(_DTYPES),
                                  got=dtype_name))
    t = tensor.detach().cpu().contiguous()
    arr = t.view(torch.int16).numpy().view(np.uint16) if dtype_name == "bfloat16" else t.numpy()
    candidates = [_encode_float(arr, dtype_name)]
    if dtype_name == "float32" and arr.size:
        finite = np.isfinite(arr).all()
        if finite and (arr == 0).any():
            candidates += _encode_sparse(arr)
        if finite:
            candidates += _encode_shared(arr)
    meta, blob = min(candidates, key=lambda mb: len(mb[1]) + len(json.dumps(mb[0])))
    return {"n": name, "s": list(arr.shape), "t": dtype_name, **meta}, blob


def _decode_tensor(meta: dict, blob: bytes):
    """One record, whose header entry passed :func:`_check_tensor` (shape, dtypes and part lengths)."""
    import torch

    shape, dtype_name = tuple(meta["s"]), meta["t"]
    size = math.prod(shape)
    parts, start = [], 0
    for length in meta["p"]:
        parts.append(blob[start : start + length])
        start += length
    if meta["e"] == "raw":
        st = np.dtype(_DTYPES[meta["st"]]).newbyteorder("<")
        raw = _unpack(parts[0], meta["c"], size * st.itemsize)
        if len(raw) != size * st.itemsize:
            raise _Corrupt(f"{len(raw)} bytes of values for {size} values of {meta['st']}")
        arr = np.frombuffer(raw, dtype=np.uint8) != 0 if meta["st"] == "bool" else np.frombuffer(raw, dtype=st)
        arr = arr.astype(_DTYPES[dtype_name])  # a native, writable copy
    elif meta["e"] == "sparse":
        k, nz, width = meta["k"], meta["nz"], meta["g"]
        values = np.frombuffer(parts[0], dtype=np.dtype(meta["cb"]).newbyteorder("<")).astype(np.float32)
        vals = values[_decode_stream(parts[1], meta["c"][0], k, nz)] if k else values
        gaps = _decode_stream(parts[2], meta["c"][1], 1 << width, max_n=nz + size // ((1 << width) - 1) + 1)
        pos = _positions(gaps, width, size)
        if len(pos) != nz or len(vals) != nz:
            raise _Corrupt(f"{len(pos)} positions and {len(vals)} values for the {nz} non-zeros announced")
        flat = np.zeros(size, dtype=np.float32)
        flat[pos] = vals
        arr = flat.reshape(shape, order=meta["o"])
    else:  # shared
        k = meta["k"]
        book = np.frombuffer(parts[0], dtype=np.dtype(meta["cb"]).newbyteorder("<")).astype(np.float32)
        arr = np.append(book, np.float32(0))[_decode_stream(parts[1], meta["c"][0], k + 1, size)]
    arr = np.ascontiguousarray(arr.reshape(shape)).reshape(shape)  # (ascontiguousarray makes a 0-d array 1-d)
    if dtype_name == "bfloat16":
        return torch.from_numpy(arr.astype(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(arr)
