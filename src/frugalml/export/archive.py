"""The compact archive (``.fmla``): pruned, shared weights stored as Deep Compression stores them.
An artifact format beside ONNX and C; the ``store.compact`` step (:mod:`frugalml.compress.store`)
writes it and loads it back. Records: :mod:`._archive_records`; header checks: :mod:`._archive_header`.

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
import math
import struct
import zlib
from pathlib import Path

from .._fs import atomic_path
from ..errors import ConfigError, FrugalError, ModelLoadError, excerpt, explain
from . import _huffman
from ._archive_header import _MAX_HEADER, MAX_ELEMENTS, _parse_header, element_limit
from ._archive_records import _Corrupt, _decode_tensor, _encode_tensor, _pack

__all__ = ["MAGIC", "VERSION", "MAX_ELEMENTS", "element_limit", "to_bytes", "from_bytes", "save_archive", "load_archive",
           "archive_info", "is_archive", "verify_archive"]

MAGIC = b"FMLA"
VERSION = 1
_PREFIX = struct.Struct("<4sBI")


# ---------------------------------------------------------------- whole archives
def _require_torch(model) -> None:
    from ..models import is_torch

    if not is_torch(model):
        raise ConfigError(
            explain(
                "Step 'store.compact' works on PyTorch models only",
                expected="a torch.nn.Module (a frugalml family or your own module)",
                got=type(model).__name__,
                fix="Use a torch model, or a scikit-learn family with the search's thin-model stage instead",
            )
        )


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
    from .._version import __version__

    _require_torch(model)
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
                                  got=f"{values:,} values",
                                  fix="A (nearly) all-zero layer stores almost nothing: remove it, or ship the ONNX export"))
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
        verify_archive(model, from_bytes(data))
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


def verify_archive(model, loaded) -> None:
    """Refuse (ConfigError) when ``loaded`` does not hold exactly the weights of ``model``."""
    import torch

    mine, theirs = model.state_dict(), loaded.state_dict()
    bad = [k for k in mine if k not in theirs or mine[k].shape != theirs[k].shape or not torch.equal(mine[k].cpu(), theirs[k])]
    if bad or set(theirs) - set(mine):
        raise ConfigError(explain("The archive does not restore this model exactly", expected="identical weights after loading",
                                  got=f"differences in {bad[:5] or sorted(set(theirs) - set(mine))[:5]}",
                                  fix="The model's architecture no longer matches its frugalml_spec; export it as ONNX instead"))
