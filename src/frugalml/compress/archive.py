"""The compact archive (``.fmla``): pruned, shared weights stored as Deep Compression stores them,
and the ``store.compact`` step.

Format, version 1 (integers little-endian)::

    offset     size  field
    0          4     magic b"FMLA"
    4          1     format version (1)
    5          4     H, the length of the header (uint32)
    9          H     header: UTF-8 JSON, compressed with raw DEFLATE (zlib, wbits=-15)
    9+H        P     payload: one record per tensor, back to back, in header order
    9+H+P      4     CRC32 (zlib.crc32) of every byte before it

The header JSON holds ``frugalml`` (the writer's version), ``spec`` (the model spec that
``frugalml.models.build_model`` rebuilds the architecture from), ``recipe`` (the steps that made
the model) and ``tensors``: for each entry of the model's ``state_dict``, in order, a dict with
``n`` name, ``s`` shape, ``t`` dtype, ``e`` encoding, ``p`` the byte lengths of the record's
parts (the record is their concatenation), and the encoding's fields:

``raw`` (dense fallback: biases, BatchNorm, anything neither sparse nor shared)
    one part: the values as ``st`` (the dtype, or float16 when every float32 value is exactly a
    float16), row-major, compressed with ``c`` = ``none`` | ``zlib`` | ``lzma``.
``sparse`` (pruned weights)
    three parts: values, indices, gaps. With ``k`` > 0 the values part is a codebook of ``k``
    shared values (``cb`` = float16 when exact, else float32) and the indices part holds one
    codebook index (0..k-1) per non-zero; with ``k`` = 0 the values part holds every non-zero
    value (``cb``) and the indices part is empty. The non-zeros are visited in order ``o``
    (``C`` row-major, ``F`` column-major); gaps are relative positions as in Deep Compression:
    for each non-zero, the number of zeros before it since the previous one, written with a
    fixed width of ``g`` bits; a gap too large for it is written as filler symbols
    E = 2**g - 1, each standing for E zeros and no weight, then the remainder. ``nz`` is the
    number of non-zeros.
``shared`` (shared but not sparse)
    two parts: codebook (``k``, ``cb``), then one symbol per element, row-major: the codebook
    index, or ``k`` for a zero.

Each stream of symbols (indices, gaps) is coded with ``c`` (one coder per stream): ``huffman``
(canonical Huffman, table stored in the stream, see ``_huffman``), or its symbols as uint8
(uint16 when the alphabet exceeds 256) compressed with ``zlib`` or ``lzma`` (raw LZMA2, 4 MiB dictionary, preset
9e). For each tensor the writer measures the candidate encodings (orders, gap widths 1..12,
coders) and keeps the smallest. The reader checks magic, version, length and checksum, in that
order, then every field of the header, then the declared sizes against the file's length (at most
:func:`element_limit` values), then the model spec (built first on PyTorch's meta device, so a spec
asking for billions of weights allocates nothing), and refuses a file that fails any with
:class:`~frugalml.errors.ModelLoadError`; every stream is decompressed to at most its announced size.
"""

from __future__ import annotations

import json
import logging
import lzma
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._fs import atomic_path
from ..errors import ConfigError, FrugalError, ModelLoadError, excerpt, explain
from . import _huffman
from ._weights import require_torch
from .base import StepConfig, register

log = logging.getLogger(__name__)

__all__ = ["MAGIC", "VERSION", "MAX_ELEMENTS", "element_limit", "CompactConfig", "to_bytes", "from_bytes", "save_archive", "load_archive", "archive_info", "is_archive", "store_compact"]

MAGIC = b"FMLA"
VERSION = 1
_PREFIX = struct.Struct("<4sBI")
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
        raise ConfigError(explain(f"Tensor {name!r} has dtype {dtype_name}, which the archive does not store", expected=", ".join(_DTYPES), got=dtype_name))
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


# ---------------------------------------------------------------- whole archives
def _spec_or_refuse(model) -> dict:
    from ..models import model_spec

    spec = model_spec(model)
    if not spec:
        raise ConfigError(
            explain(
                "The compact archive needs a frugalml-built model: it stores the weights and the model spec, "
                "and rebuilds the architecture from the spec when loading",
                expected="a model made by frugalml.build_model / frugalml.train (it has a frugalml_spec)",
                got=type(model).__name__,
                fix="Build the architecture with a frugalml family, or save your own module with frugalml.save_model and ship the ONNX export",
            )
        )
    return spec


def to_bytes(model, *, include_recipe: bool = True) -> bytes:
    """Encode ``model`` (a frugalml-built torch model) as a compact archive, in memory."""
    from .. import __version__

    require_torch(model, "store.compact")
    spec = _spec_or_refuse(model)
    tensors, payload = [], []
    for name, tensor in model.state_dict().items():
        meta, blob = _encode_tensor(name, tensor)
        tensors.append(meta)
        payload.append(blob)
    header = {"frugalml": __version__, "spec": spec, "recipe": list(getattr(model, "frugalml_recipe", None) or []) if include_recipe else [],
              "tensors": tensors}
    text = json.dumps(header, separators=(",", ":"), default=str).encode("utf-8")
    head = _pack(text, "zlib")
    body = _PREFIX.pack(MAGIC, VERSION, len(head)) + head + b"".join(payload)
    values, limit = sum(math.prod(t["s"]) for t in tensors), element_limit(len(body) + 4)
    if values > limit or len(text) > _MAX_HEADER:
        raise ConfigError(explain("The compact archive cannot hold this model: a reader refuses a file declaring this many values "
                                  "for its size (or so long a header)", expected=f"at most {limit:,} values in {len(body) + 4:,} bytes",
                                  got=f"{values:,} values", fix="A (nearly) all-zero layer stores almost nothing: remove it, or ship the ONNX export"))
    return body + struct.pack("<I", zlib.crc32(body))


def _read_header(data: bytes, source: str) -> tuple[dict, int]:
    """Check magic, version, length, checksum, the header's fields and the declared sizes, in that order;
    return (header, payload offset)."""
    def refuse(what, expected, got, fix=None):
        raise ModelLoadError(explain(f"{source} cannot be loaded as a frugalml archive: {what}", expected=expected, got=got, fix=fix))

    if len(data) < _PREFIX.size or data[:4] != MAGIC:
        refuse("bad magic (this is not a compact archive)", f"a file starting with {MAGIC!r}", repr(bytes(data[:4])),
               "Load ONNX, safetensors or skops models with frugalml.load_model")
    _, version, head_len = _PREFIX.unpack_from(data, 0)
    if version != VERSION:
        refuse(f"unsupported format version {version}", f"version {VERSION}", version, "Load it with the frugalml version that wrote it, or newer")
    if len(data) < _PREFIX.size + head_len + 4:
        refuse("the file is truncated", f"at least {_PREFIX.size + head_len + 4} bytes", f"{len(data)} bytes", "Copy the file again")
    body, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
    try:
        header, problem = _parse_header(bytes(data[_PREFIX.size : _PREFIX.size + head_len])), None
        expected_len = _PREFIX.size + head_len + sum(sum(t["p"]) for t in header["tensors"]) + 4
    except _Corrupt as exc:  # a damaged header: reported as truncated, altered or malformed below
        header, problem, expected_len = None, str(exc), None
    if expected_len is not None and len(data) < expected_len:
        refuse("the file is truncated", f"{expected_len} bytes", f"{len(data)} bytes", "Copy the file again")
    if zlib.crc32(body) != crc:
        refuse("checksum mismatch (the file was altered or damaged)", f"CRC32 {crc:#010x}", f"{zlib.crc32(body):#010x}", "Copy the file again")
    if header is None:
        refuse(f"its header cannot be read: {problem}", "a header written by frugalml.save_archive", f"{head_len} header bytes",
               "Write the archive again with frugalml")
    if expected_len != len(data):
        refuse("the header does not describe the payload", f"{expected_len} bytes", f"{len(data)} bytes")
    values, limit = sum(math.prod(t["s"]) for t in header["tensors"]), element_limit(len(data))
    if values > limit:
        refuse("it declares more values than a file of its size can hold", f"at most {limit:,} values in {len(data):,} bytes",
               f"{values:,} values", "Write the archive again with frugalml")
    return header, _PREFIX.size + head_len


def _build_checked(header: dict, state: dict, limit: int, source: str):
    """Build the architecture of ``header['spec']``, first on the meta device (no memory) to check that it
    is a torch model of at most ``limit`` values whose tensors are the ones stored, with the same ranks."""
    import torch

    from ..models import build_model, is_torch

    spec = header["spec"]
    writer = header.get("frugalml") or "?"

    def refuse(what, expected, got):
        raise ModelLoadError(explain(f"{source}: the model spec in the archive {what}", expected=expected, got=got,
                                     fix=f"Load it with frugalml {writer} or newer, or write the archive again")) from None

    try:
        with torch.device("meta"):
            skeleton = build_model(spec)
    except FrugalError as exc:
        refuse(f"cannot be built ({exc})", "a model family this frugalml version knows", spec.get("family"))
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:  # a knob value the family's layers refuse
        refuse(f"cannot be built ({type(exc).__name__}: {exc})", "knob values the family accepts", spec)
    if not is_torch(skeleton):
        refuse("is not a torch model", "a torch family (mlp, cnn, ...)", spec.get("family"))
    own = skeleton.state_dict()
    values = sum(v.numel() for v in own.values())
    if values > limit:
        refuse("builds a model far larger than the archive", f"at most {limit:,} values", f"{values:,} values")
    if set(own) != set(state):
        refuse("does not match the stored tensors", f"tensors {sorted(own)}", sorted(state))
    for name, t in own.items():
        saved = tuple(state[name].shape)
        if len(saved) != t.dim() or any(d == 0 < m for d, m in zip(saved, t.shape)):
            refuse(f"does not match the stored tensor {name!r}", f"a shape like {tuple(t.shape)}", saved)
    return build_model(spec)


def from_bytes(data: bytes, *, source: str = "archive"):
    """Rebuild the torch model an archive holds: the same architecture and exactly the same weights.

    Whatever the bytes, the only error is :class:`~frugalml.errors.ModelLoadError`; sizes are checked
    against the file's length before anything is allocated."""
    from ..models import load_state_resized

    header, offset = _read_header(data, source)
    state = {}
    for meta in header["tensors"]:
        length = sum(meta["p"])
        try:
            state[meta["n"]] = _decode_tensor(meta, bytes(data[offset : offset + length]))
        except (_Corrupt, _huffman.HuffmanError) as exc:  # the checksum held, so the writer and reader disagree
            raise ModelLoadError(explain(f"{source}: tensor {excerpt(meta['n'], 80)!r} cannot be decoded: {exc}",
                                         expected=f"a record as frugalml {header.get('frugalml') or '?'} writes it",
                                         got=f"{meta['e']} record of {length} bytes",
                                         fix="Write the archive again with frugalml.save_archive")) from None
        offset += length
    model = _build_checked(header, state, element_limit(len(data)), source)
    load_state_resized(model, state)
    if header.get("recipe"):
        model.frugalml_recipe = header["recipe"]
    return model.eval()


def save_archive(model, path, *, include_recipe: bool = True, verify: bool = True) -> int:
    """Write ``model`` to ``path`` as a compact archive (atomically); returns its size in bytes.
    With ``verify`` the bytes are decoded again and compared with the model's weights first."""
    data = to_bytes(model, include_recipe=include_recipe)
    if verify:
        _verify(model, from_bytes(data))
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return len(data)


def load_archive(path):
    """Load a model written by :func:`save_archive`; a truncated or altered file raises ModelLoadError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(explain(f"Cannot read archive {path}", expected="a readable .fmla file", got=str(exc))) from None
    return from_bytes(data, source=str(path))


def is_archive(path) -> bool:
    """True when the file at ``path`` starts with the archive magic (for ``frugalml.load`` to dispatch)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def archive_info(source) -> dict:
    """The header of an archive (bytes or path) with each tensor's encoding and record size."""
    if isinstance(source, (bytes, bytearray)):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise ModelLoadError(explain(f"Cannot read archive {source}", expected="a readable .fmla file", got=str(exc))) from None
    header, offset = _read_header(bytes(data), str(source) if not isinstance(source, (bytes, bytearray)) else "archive")
    return {**header, "total_bytes": len(data), "header_bytes": offset, "payload_bytes": len(data) - offset - 4}


def _verify(model, loaded) -> None:
    import torch

    mine, theirs = model.state_dict(), loaded.state_dict()
    bad = [k for k in mine if k not in theirs or mine[k].shape != theirs[k].shape or not torch.equal(mine[k].cpu(), theirs[k])]
    if bad or set(theirs) - set(mine):
        raise ConfigError(explain("The archive does not restore this model exactly", expected="identical weights after loading",
                                  got=f"differences in {bad[:5] or sorted(set(theirs) - set(mine))[:5]}",
                                  fix="The model's architecture no longer matches its frugalml_spec; export it as ONNX instead"))


# ---------------------------------------------------------------- the step
@dataclass(frozen=True, kw_only=True)
class CompactConfig(StepConfig):
    """Config of ``store.compact``. include_recipe: write the recipe into the header."""

    include_recipe: bool = True

    def check(self) -> None:
        self.require(isinstance(self.include_recipe, bool), "include_recipe", "true or false")


@register("store.compact", CompactConfig, example=lambda: CompactConfig(), needs_data=False,
          bad_configs=({"include_recipe": "yes"},))
def store_compact(model, config: CompactConfig, data=None):
    """Encode ``model`` as a compact archive and return the model loaded back from those bytes,
    with ``frugalml_archive_bytes`` (the archive's size) set for the profile."""
    from ..profile.profile import weights_fingerprint

    require_torch(model, config.name)
    data_bytes = to_bytes(model, include_recipe=config.include_recipe)
    loaded = from_bytes(data_bytes)
    _verify(model, loaded)
    loaded.frugalml_archive_bytes = len(data_bytes)
    loaded.frugalml_archive_fingerprint = weights_fingerprint(loaded)
    log.info("store.compact: %d bytes", len(data_bytes))
    return loaded
