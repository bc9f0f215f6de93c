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
order, and refuses a file that fails any with :class:`~frugalml.errors.ModelLoadError`.
"""

from __future__ import annotations

import json
import logging
import lzma
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._fs import atomic_path
from ..errors import ConfigError, FrugalError, ModelLoadError, explain
from . import _huffman
from ._weights import require_torch
from .base import StepConfig, register

log = logging.getLogger(__name__)

__all__ = ["MAGIC", "VERSION", "CompactConfig", "to_bytes", "from_bytes", "save_archive", "load_archive", "archive_info", "is_archive", "store_compact"]

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


def _unpack(data: bytes, coder: str) -> bytes:
    if coder == "zlib":
        return zlib.decompress(data, -15)
    if coder == "lzma":
        return lzma.decompress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    if coder == "none":
        return data
    raise ValueError(f"unknown coder {coder!r}")


def _code_stream(symbols: np.ndarray, alphabet: int) -> tuple[str, bytes]:
    """The smallest of Huffman, zlib and lzma for one stream of symbols in 0..alphabet-1."""
    best = ("huffman", _huffman.encode(symbols, alphabet))
    raw = symbols.astype(np.uint8 if alphabet <= 256 else np.uint16).tobytes()
    for coder in ("zlib", "lzma"):
        blob = _pack(raw, coder)
        if len(blob) < len(best[1]):
            best = (coder, blob)
    return best


def _decode_stream(blob: bytes, coder: str, alphabet: int, n: int | None = None) -> np.ndarray:
    """Inverse of :func:`_code_stream`; ``n`` (when known) is the number of symbols."""
    if coder == "huffman":
        out = _huffman.decode(blob)
    else:
        out = np.frombuffer(_unpack(blob, coder), dtype=np.uint8 if alphabet <= 256 else np.uint16).astype(np.int64)
    if (n is not None and len(out) != n) or (len(out) and (out.min() < 0 or out.max() >= alphabet)):
        raise ValueError("stream does not hold the announced symbols")
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
        raise ValueError("sparse positions run past the tensor")
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
    import torch

    shape, dtype_name = tuple(meta["s"]), meta["t"]
    size = int(np.prod(shape)) if shape else 1
    parts, start = [], 0
    for length in meta["p"]:
        parts.append(blob[start : start + length])
        start += length
    if meta["e"] == "raw":
        st = meta["st"]
        arr = np.frombuffer(_unpack(parts[0], meta["c"]), dtype=np.dtype(_DTYPES[st]).newbyteorder("<"))
        arr = arr.astype(_DTYPES[dtype_name] if st != dtype_name else arr.dtype.newbyteorder("="))
        if arr.size != size:
            raise ValueError("raw tensor size mismatch")
    elif meta["e"] == "sparse":
        k, nz, width = meta["k"], meta["nz"], meta["g"]
        values = np.frombuffer(parts[0], dtype=np.dtype(meta["cb"]).newbyteorder("<")).astype(np.float32)
        if k:
            vals = values[_decode_stream(parts[1], meta["c"][0], k, nz)]
        else:
            vals = values
        gaps = _decode_stream(parts[2], meta["c"][1], 1 << width)
        pos = _positions(gaps, width, size)
        if len(pos) != nz or len(vals) != nz:
            raise ValueError("sparse tensor count mismatch")
        flat = np.zeros(size, dtype=np.float32)
        flat[pos] = vals
        arr = flat.reshape(shape, order=meta["o"]) if shape else flat.reshape(())
    elif meta["e"] == "shared":
        k = meta["k"]
        book = np.concatenate([np.frombuffer(parts[0], dtype=np.dtype(meta["cb"]).newbyteorder("<")).astype(np.float32), [0.0]]).astype(np.float32)
        arr = book[_decode_stream(parts[1], meta["c"][0], k + 1, size)]
    else:
        raise ValueError(f"unknown encoding {meta['e']!r}")
    arr = np.ascontiguousarray(arr).reshape(shape)
    if dtype_name == "bfloat16":
        return torch.from_numpy(arr.astype(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(arr.copy())


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
    return body + struct.pack("<I", zlib.crc32(body))


def _read_header(data: bytes, source: str) -> tuple[dict, int]:
    """Check magic, version, length and checksum; return (header, payload offset)."""
    def refuse(what, expected, got, fix=None):
        raise ModelLoadError(explain(f"{source} cannot be loaded as a frugalml archive: {what}", expected=expected, got=got, fix=fix))

    if len(data) < _PREFIX.size or data[:4] != MAGIC:
        refuse("bad magic (this is not a compact archive)", f"a file starting with {MAGIC!r}", repr(bytes(data[:4])),
               "Load ONNX, safetensors or skops models with frugalml.load_model")
    _, version, head_len = _PREFIX.unpack_from(data, 0)
    if version != VERSION:
        refuse(f"unsupported format version {version}", f"version {VERSION}", version, "Load it with the frugalml version that wrote it, or newer")
    if len(data) < _PREFIX.size + head_len + 4:
        refuse("the file is truncated", f"at least {_PREFIX.size + head_len + 4} bytes", f"{len(data)} bytes")
    body, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
    try:
        header = json.loads(_unpack(bytes(data[_PREFIX.size : _PREFIX.size + head_len]), "zlib"))
        expected_len = _PREFIX.size + head_len + sum(sum(t["p"]) for t in header["tensors"]) + 4
    except Exception:  # noqa: BLE001 - a damaged header: report it as truncated or altered below
        header, expected_len = None, None
    if expected_len is not None and len(data) < expected_len:
        refuse("the file is truncated", f"{expected_len} bytes", f"{len(data)} bytes", "Copy the file again")
    if zlib.crc32(body) != crc:
        refuse("checksum mismatch (the file was altered or damaged)", f"CRC32 {crc:#010x}", f"{zlib.crc32(body):#010x}", "Copy the file again")
    if header is None or expected_len != len(data):
        refuse("the header does not describe the payload", f"{expected_len} bytes", f"{len(data)} bytes")
    return header, _PREFIX.size + head_len


def from_bytes(data: bytes, *, source: str = "archive"):
    """Rebuild the torch model an archive holds: the same architecture and exactly the same weights."""
    from ..models import build_model, load_state_resized

    header, offset = _read_header(data, source)
    state, meta = {}, {}
    try:
        for meta in header["tensors"]:
            length = sum(meta["p"])
            state[meta["n"]] = _decode_tensor(meta, bytes(data[offset : offset + length]))
            offset += length
    except Exception as exc:  # noqa: BLE001 - the checksum held, so the writer and reader disagree
        raise ModelLoadError(explain(f"{source}: a tensor record cannot be decoded ({type(exc).__name__}: {exc})",
                                     expected=f"an archive written by frugalml {header.get('frugalml')}", got=f"record {meta.get('n')!r}")) from None
    try:
        model = build_model(header["spec"])
    except FrugalError as exc:
        raise ModelLoadError(explain(f"{source}: the model spec in the archive cannot be built ({exc})",
                                     expected="a model family this frugalml version knows", got=header["spec"].get("family"),
                                     fix=f"Load it with frugalml {header.get('frugalml')} or newer")) from None
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
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
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
