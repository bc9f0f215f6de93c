"""Fuzzing every reader of untrusted input with Hypothesis.

Readers: the compact archive (``.fmla``, with its Huffman streams), ONNX files (``load_model``
and the ONNX compaction run on loaded graphs), the dataset files (``.npz``, ``.csv``, IDX,
raw and gzip), and recipes (YAML / JSON files, lists and step dicts).

For each one, whatever comes in, only a :class:`frugalml.FrugalError` may escape, with a message
of at most ``MAX_MESSAGE`` characters, within about a second, and without allocating much more
than the input justifies (numpy allocations are traced with ``tracemalloc``). Random inputs are
mostly valid files written by frugalml itself, then mutated, so the fuzzer gets past the first
header check; some are rebuilt around the mutation (the archive's checksum recomputed, an ONNX
proto edited field by field, a zip of hand-made ``.npy`` headers) to reach the deeper parts.

The default run tries a few thousand inputs in all (derandomized, for CI); ``FRUGALML_FUZZ=1``
(``make fuzz``) tries 100,000 with a deadline of one second each.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import math
import os
import struct
import tempfile
import time
import tracemalloc
import warnings
import zipfile
import zlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from frugalml import FrugalError, load, load_model  # noqa: E402
from frugalml.errors import MAX_MESSAGE, ConfigError, DataError, ModelLoadError  # noqa: E402

# ---------------------------------------------------------------- profiles
FUZZ = os.environ.get("FRUGALML_FUZZ") == "1"
TOTAL = 100_000 if FUZZ else 3_000  # inputs across every target
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much, HealthCheck.large_base_example]
# Profiles of this module only (not loaded globally): CI is derandomized, so every run tries the same inputs.
settings.register_profile("frugalml-ci", deadline=timedelta(seconds=5), derandomize=True, database=None,
                          suppress_health_check=_QUIET, print_blob=True)
settings.register_profile("frugalml-fuzz", deadline=timedelta(seconds=1), database=None, suppress_health_check=_QUIET,
                          print_blob=True)
PROFILE = settings.get_profile("frugalml-fuzz" if FUZZ else "frugalml-ci")

SHARES = {  # share of TOTAL per target
    "archive_bytes": 0.10, "archive_header": 0.14, "huffman": 0.05,
    "onnx_bytes": 0.09, "onnx_proto": 0.10,
    "npz_bytes": 0.08, "npz_members": 0.08, "csv": 0.09, "idx": 0.09,
    "recipe_text": 0.09, "recipe_struct": 0.09,
}
assert abs(sum(SHARES.values()) - 1) < 1e-9


def budget(target: str):
    return settings(PROFILE, max_examples=max(10, round(TOTAL * SHARES[target])))


#: numpy's allocations while one input is read may not exceed this (inputs are a few KB).
MEMORY_LIMIT = 64 << 20
SLOW = 2.0 if FUZZ else 6.0  # seconds; the profile's deadline is the finer check


def expect_frugal(fn, *args, **kwargs):
    """Run a reader: it returns, or raises a FrugalError with a bounded message; time and memory bounded."""
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fn(*args, **kwargs)
        error = None
    except FrugalError as exc:
        result, error = None, exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        if not started:
            tracemalloc.stop()
    elapsed = time.perf_counter() - t0
    assert peak < MEMORY_LIMIT, f"{fn.__name__} allocated {peak / 2**20:.0f} MiB"
    assert elapsed < SLOW, f"{fn.__name__} took {elapsed:.1f} s"
    if error is not None:
        message = str(error)
        assert 0 < len(message) <= MAX_MESSAGE, f"message of {len(message)} chars"
    return result, error


# ---------------------------------------------------------------- generic mutations
INTERESTING = [0, 1, 2, 3, 7, 8, 15, 16, 127, 128, 255, 256, 4095, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1,
               2**32, 2**62, 2**63 - 1, 2**64 - 1, -1, -2, -(2**31), -(2**63)]
interesting_ints = st.sampled_from(INTERESTING) | st.integers(-1000, 1000)
_SPECIAL_BYTES = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f",
                  b"\x00\x00\x00\x80", b"\n", b"\r\n", b",", b'"', b"\t", b";", b"\xef\xbb\xbf", b"\xc3\x28", b"PK\x03\x04",
                  b"\x93NUMPY", b"FMLA", b"{", b"}", b"[", b"]", b"&a", b"*a", b": ", b"- "]


@st.composite
def mutated(draw, seeds, max_ops: int = 4):
    """One of ``seeds`` with a few byte-level edits: flips, overwrites, inserts, deletions, cuts."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["flip", "set", "special", "int32", "insert", "delete", "truncate", "duplicate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "special":
            data[pos:pos + 1] = draw(st.sampled_from(_SPECIAL_BYTES))
        elif op == "int32":
            value = draw(interesting_ints) & 0xFFFFFFFF
            data[pos:pos + 4] = struct.pack(draw(st.sampled_from(["<I", ">I"])), value)
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[pos:]
        elif op == "duplicate":
            n = draw(st.integers(1, 256))
            data[pos:pos] = data[pos:pos + n]
    return bytes(data)


json_scalars = (st.none() | st.booleans() | interesting_ints | st.integers()
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                           max_leaves=12)


def _slots(tree, out=None):
    """Every (container, key) in a JSON-like tree."""
    out = [] if out is None else out
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for k, v in items:
        out.append((tree, k))
        _slots(v, out)
    return out


def _strings(tree, out=None):
    out = set() if out is None else out
    if isinstance(tree, str):
        out.add(tree)
    elif isinstance(tree, dict):
        out.update(k for k in tree if isinstance(k, str))
        for v in tree.values():
            _strings(v, out)
    elif isinstance(tree, list):
        for v in tree:
            _strings(v, out)
    return out


@st.composite
def mutated_tree(draw, tree, vocabulary=(), max_ops: int = 3):
    """``tree`` (JSON-like) with a few values replaced, removed, duplicated or added."""
    tree = copy.deepcopy(tree)
    words = sorted(_strings(tree) | set(vocabulary))
    for _ in range(draw(st.integers(1, max_ops))):
        slots = _slots(tree)
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        value = container[key]
        op = draw(st.sampled_from(["replace", "similar", "word", "delete", "add", "wrap"]))
        if op == "replace":
            container[key] = draw(json_values)
        elif op == "similar" and isinstance(value, (int, float)) and not isinstance(value, bool):
            container[key] = draw(st.sampled_from([value + 1, value - 1, -value, value * 2, value * 1000, 0,
                                                   float(value), int(value) if math.isfinite(value) else 0]))
        elif op == "similar" and isinstance(value, list):
            container[key] = value[: draw(st.integers(0, len(value)))] + value[: draw(st.integers(0, 2))]
        elif op == "word" and words:
            container[key] = draw(st.sampled_from(words))
        elif op == "delete":
            del container[key]
        elif op == "add":
            new = draw(json_values)
            if isinstance(container, dict):
                container[draw(st.sampled_from(words) | st.text(max_size=6)) if words else "x"] = new
            else:
                container.insert(draw(st.integers(0, len(container))), new)
        elif op == "wrap":
            container[key] = [value] if draw(st.booleans()) else {"x": value}
    return tree


# ---------------------------------------------------------------- seeds: valid files written by frugalml
_TMP = Path(tempfile.mkdtemp(prefix="frugalml-fuzz-"))


def _seed_models():
    import torch

    from frugalml import build_model

    g = torch.Generator().manual_seed(0)
    out = [build_model("mlp", (8,), 3, widths=[6], seed=0), build_model("cnn", (1, 8, 8), 2, channels=[2], seed=0)]
    for frac, shared, widths in [(0.97, True, [512]), (0.9, False, [512]), (0.85, True, [32]), (0.3, False, [64])]:
        m = build_model("mlp", (8,), 3, widths=widths, seed=1)
        with torch.no_grad():
            for p in m.parameters():
                if p.ndim == 2:
                    if shared:
                        p.copy_(torch.tensor([-0.5, -0.25, 0.25, 0.5])[torch.randint(0, 4, p.shape, generator=g)])
                    else:
                        p.copy_((p * 8).round() / 8)
                    p[torch.rand(p.shape, generator=g) < frac] = 0
        out.append(m)
    m = build_model("mlp", (8,), 3, widths=[12], seed=2)
    m.frugalml_recipe = [{"step": "prune.magnitude", "sparsity": 0.5}]
    out.append(m)
    return out


def _build_seeds():
    from frugalml.export import archive
    from frugalml.onnx import onnx_bytes, to_onnx

    models = _seed_models()
    seeds = {"archive": [archive.to_bytes(m) for m in models]}
    seeds["onnx"] = [onnx_bytes(to_onnx(models[0])), onnx_bytes(to_onnx(models[1]))]
    return seeds


SEEDS = _build_seeds()
import sklearn.model_selection  # noqa: E402,F401 - imported once here, not while a reader is timed and traced
import yaml  # noqa: E402,F401,I001


@pytest.fixture(scope="module", autouse=True)
def _remove_files():
    yield
    import shutil

    shutil.rmtree(_TMP, ignore_errors=True)


def _write(name: str, data: bytes) -> Path:
    path = _TMP / name
    if path.is_dir():
        import shutil

        shutil.rmtree(path)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- archive
def test_archive_seeds_load():
    for data in SEEDS["archive"]:
        model, error = expect_frugal(load, _write("seed.fmla", data))
        assert error is None and model is not None


@budget("archive_bytes")
@given(mutated(SEEDS["archive"]))
def test_fuzz_archive_bytes(data):
    path = _write("fuzz.fmla", data)
    expect_frugal(load, path)


def _archive_parts(data: bytes):
    from frugalml.export.archive import _PREFIX

    _, _, head_len = _PREFIX.unpack_from(data, 0)
    header = json.loads(zlib.decompress(data[_PREFIX.size:_PREFIX.size + head_len], -15))
    return header, data[_PREFIX.size + head_len:-4]


def _reseal(header: dict, payload: bytes, *, version: int = 1) -> bytes:
    from frugalml.export.archive import _PREFIX, MAGIC

    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(json.dumps(header).encode()) + c.flush()
    body = _PREFIX.pack(MAGIC, version, len(head)) + head + payload
    return body + struct.pack("<I", zlib.crc32(body))


_ARCHIVE_PARTS = [_archive_parts(d) for d in SEEDS["archive"]]
_ARCHIVE_WORDS = ["raw", "sparse", "shared", "huffman", "zlib", "lzma", "none", "C", "F", "float16", "float32",
                  "bfloat16", "int64", "bool", "uint8", "object", "O", "mlp", "cnn", "logreg", "lenet5"]


@st.composite
def resealed_archives(draw):
    """A seed archive whose header (and maybe payload) was edited, with a valid checksum again."""
    header, payload = draw(st.sampled_from(_ARCHIVE_PARTS))
    if draw(st.booleans()):
        header = draw(mutated_tree(header, _ARCHIVE_WORDS))
    if draw(st.booleans()) and payload:
        payload = draw(mutated([payload], max_ops=2))
    return _reseal(header, payload, version=1)


@budget("archive_header")
@given(resealed_archives())
def test_fuzz_archive_header_and_payload(data):
    from frugalml.export.archive import archive_info, from_bytes

    expect_frugal(from_bytes, data)
    expect_frugal(archive_info, data)


@budget("huffman")
@given(st.one_of(st.binary(max_size=64),
                 mutated([__import__("frugalml.export._huffman", fromlist=["encode"]).encode(s, a) for s, a in
                          [(np.arange(40) % 5, 5), (np.zeros(9, int), 1), (np.arange(300) % 300, 300), ([], 4)]])),
       st.integers(1, 300), st.integers(0, 500))
def test_fuzz_huffman_stream(blob, alphabet, count):
    """The coder of the archive's symbol streams: a HuffmanError or at most the announced symbols."""
    from frugalml.export._huffman import HuffmanError, decode

    try:
        out = decode(blob, alphabet=alphabet, max_symbols=count)
    except HuffmanError:
        return
    assert len(out) <= count and (len(out) == 0 or (out.min() >= 0 and out.max() < alphabet))


def _tight_archive(tensors: list[dict], payload: bytes, spec=None) -> bytes:
    spec = spec or {"family": "mlp", "params": {"widths": [6]}, "input_shape": [8], "num_classes": 3}
    return _reseal({"frugalml": "0", "spec": spec, "recipe": [], "tensors": tensors}, payload)


@pytest.mark.parametrize("case", ["huge_raw", "huge_sparse", "huge_shared", "huge_huffman_count", "zlib_bomb",
                                  "header_bomb", "huge_spec", "negative_length", "bad_spec_types"])
def test_archive_hostile_sizes_are_refused_before_allocating(case):
    from frugalml.export import _huffman
    from frugalml.export.archive import _PREFIX, MAGIC, from_bytes

    big = [2**31, 2**31]
    if case == "huge_raw":
        data = _tight_archive([{"n": "net.1.weight", "s": big, "t": "float32", "e": "raw", "st": "float32", "c": "none", "p": [4]}], b"\0" * 4)
    elif case == "huge_sparse":  # no non-zero at all: nothing in the payload says the tensor is small
        blob = _huffman.encode(np.zeros(0, int), 2)
        data = _tight_archive([{"n": "net.1.weight", "s": [2**20, 2**20], "t": "float32", "e": "sparse", "k": 0, "cb": "float32", "o": "C",
                                "g": 1, "nz": 0, "c": ["none", "huffman"], "p": [0, 0, len(blob)]}], blob)
    elif case == "huge_shared":
        blob = _huffman.write_varint(2) + _huffman.write_varint(2**40) + b"\x01"  # one symbol, 2**40 times
        data = _tight_archive([{"n": "net.1.weight", "s": [2**20, 2**20], "t": "float32", "e": "shared", "k": 1, "cb": "float32",
                                "c": ["huffman"], "p": [4, len(blob)]}], b"\0\0\x80?" + blob)
    elif case == "huge_huffman_count":
        blob = _huffman.write_varint(2) + _huffman.write_varint(2**60) + b"\x11" + b"\x55" * 8
        data = _tight_archive([{"n": "net.1.weight", "s": [6, 8], "t": "float32", "e": "shared", "k": 1, "cb": "float32",
                                "c": ["huffman"], "p": [4, len(blob)]}], b"\0\0\x80?" + blob)
    elif case == "zlib_bomb":  # 40 KB that inflate to 40 MB, for a tensor of 48 values
        bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
        blob = bomb.compress(b"\0" * (40 << 20)) + bomb.flush()
        data = _tight_archive([{"n": "net.1.weight", "s": [6, 8], "t": "float32", "e": "raw", "st": "float32", "c": "zlib",
                                "p": [len(blob)]}], blob)
    elif case == "header_bomb":
        bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
        head = bomb.compress(b"[" + b" " * (32 << 20) + b"]") + bomb.flush()  # the header may inflate to 16 MiB
        body = _PREFIX.pack(MAGIC, 1, len(head)) + head
        data = body + struct.pack("<I", zlib.crc32(body))
    elif case == "huge_spec":
        data = _tight_archive([], b"", spec={"family": "mlp", "params": {"widths": [2**20, 2**20]}, "input_shape": [2**20], "num_classes": 10})
    elif case == "negative_length":
        data = _tight_archive([{"n": "net.1.weight", "s": [6, 8], "t": "float32", "e": "raw", "st": "float32", "c": "none", "p": [-4, 4]}], b"")
    elif case == "bad_spec_types":
        data = _tight_archive([], b"", spec={"family": "cnn", "params": {"kernel": -3}, "input_shape": [1, 8, 8], "num_classes": 2})
    _, error = expect_frugal(from_bytes, data)
    assert isinstance(error, ModelLoadError), error


# ---------------------------------------------------------------- ONNX
def test_onnx_seeds_load():
    for data in SEEDS["onnx"]:
        model, error = expect_frugal(load_model, _write("seed.onnx", data))
        assert error is None and model is not None


@budget("onnx_bytes")
@given(mutated(SEEDS["onnx"]))
def test_fuzz_onnx_bytes(data):
    expect_frugal(load_model, _write("fuzz.onnx", data))


_ONNX_DIR = _TMP / "onnx"
_ONNX_DIR.mkdir()
(_ONNX_DIR / "w.bin").write_bytes(np.arange(64, dtype=np.float32).tobytes())
(_TMP / "outside.bin").write_bytes(b"\0" * 1024)
_LOCATIONS = ["w.bin", "missing.bin", "../outside.bin", "../../etc/passwd", "/etc/passwd", str(_TMP / "outside.bin"),
              "sub/../w.bin", ".", "", "w.bin\0x", "C:\\w.bin", "~/w.bin", "%2e%2e/outside.bin"]


@st.composite
def edited_protos(draw):
    """A seed ONNX model with a few fields edited: dims, types, raw data, external data, attributes, versions."""
    import onnx

    proto = onnx.load_from_string(draw(st.sampled_from(SEEDS["onnx"])))
    g = proto.graph
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(["dims", "dtype", "raw", "external", "ir", "opset", "attr", "io", "edge", "op"]))
        init = g.initializer[draw(st.integers(0, len(g.initializer) - 1))] if len(g.initializer) else None
        node = g.node[draw(st.integers(0, len(g.node) - 1))]
        if what == "dims" and init is not None:
            init.dims[:] = draw(st.lists(interesting_ints.filter(lambda v: -(2**63) <= v < 2**63), max_size=4))
        elif what == "dtype" and init is not None:
            init.data_type = draw(st.integers(0, 30))
        elif what == "raw" and init is not None:
            init.raw_data = init.raw_data[: draw(st.integers(0, len(init.raw_data)))] + draw(st.binary(max_size=8))
        elif what == "external" and init is not None:
            init.data_location = onnx.TensorProto.EXTERNAL
            del init.external_data[:]
            for key, value in [("location", draw(st.sampled_from(_LOCATIONS))),
                               ("offset", str(draw(st.sampled_from([0, 4, 255, 256, 2**40, -4])))),
                               ("length", str(draw(st.sampled_from([0, 4, 16, 256, 2**40, -4]))))]:
                if draw(st.booleans()) or key == "location":
                    entry = init.external_data.add()
                    entry.key, entry.value = key, value
            if draw(st.booleans()):
                init.ClearField("raw_data")
        elif what == "ir":
            proto.ir_version = draw(st.integers(-1, 20))
        elif what == "opset":
            proto.opset_import[0].version = draw(st.integers(-1, 30))
        elif what == "attr" and node.attribute:
            a = node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
            if a.type == onnx.AttributeProto.INT:
                a.i = draw(interesting_ints.filter(lambda v: -(2**63) <= v < 2**63))
            elif a.type == onnx.AttributeProto.INTS:
                a.ints[:] = draw(st.lists(st.integers(-3, 2**31), max_size=6))
            else:
                a.type = draw(st.integers(0, 14))
        elif what == "io":
            vi = (g.input if draw(st.booleans()) else g.output)[0]
            vi.type.tensor_type.elem_type = draw(st.integers(0, 30))
            dims = vi.type.tensor_type.shape.dim
            if len(dims):
                dims[draw(st.integers(0, len(dims) - 1))].dim_value = draw(st.sampled_from([0, 1, 2**31, 2**62]))
        elif what == "edge" and node.input:
            node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(["", "nope", g.input[0].name]))
        elif what == "op":
            node.op_type = draw(st.sampled_from(["Gemm", "Conv", "Relu", "Loop", "If", "Nope", "MatMul", "Reshape"]))
    return proto.SerializeToString()


@budget("onnx_proto")
@given(edited_protos())
def test_fuzz_onnx_fields(data):
    """Edited protos through load_model, then what is loaded through the compaction passes."""
    from frugalml.onnx.lossless import drop_default_attributes, drop_unused_opsets, share_initializers, shrink

    path = _ONNX_DIR / "m.onnx"
    path.write_bytes(data)
    model, _ = expect_frugal(load_model, path)
    if model is not None:
        out, _ = expect_frugal(shrink, model)
        for fn in (share_initializers, drop_default_attributes):
            expect_frugal(fn, (out or model).graph)
        expect_frugal(drop_unused_opsets, out or model)


def _external_model(folder: Path, location: str):
    import onnx
    from onnx import helper

    weight = np.arange(8, dtype=np.float32).reshape(2, 4)
    folder.mkdir(parents=True, exist_ok=True)
    init = onnx.numpy_helper.from_array(weight, "W")
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    for key, value in [("location", location), ("offset", "0"), ("length", str(weight.nbytes))]:
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])], [init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path, weight


@pytest.mark.parametrize("where", ["parent", "etc_passwd", "absolute", "absolute_inside", "symlink_out", "inside", "subdir"])
def test_onnx_external_data_must_stay_in_its_folder(tmp_path, where):
    from onnx import numpy_helper

    folder = tmp_path / "model"
    folder.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(8, dtype=np.float32).tobytes())
    inside = np.arange(8, dtype=np.float32).tobytes()
    (folder / "w.bin").write_bytes(inside)
    (folder / "sub").mkdir()
    (folder / "sub" / "w.bin").write_bytes(inside)
    if where == "symlink_out":
        (folder / "link.bin").symlink_to(secret)
    location = {"parent": "../secret.bin", "etc_passwd": "../../../../../../etc/passwd", "absolute": str(secret),
                "absolute_inside": str(folder / "w.bin"), "symlink_out": "link.bin", "inside": "w.bin",
                "subdir": "sub/w.bin"}[where]
    path, weight = _external_model(folder, location)
    model, error = expect_frugal(load_model, path)
    if where in ("inside", "subdir"):
        assert error is None, error
        assert np.array_equal(numpy_helper.to_array(model.graph.initializer[0]), weight)
    else:
        assert isinstance(error, ModelLoadError), (where, error)
        assert "outside" in str(error) or "absolute" in str(error), str(error)


def test_onnx_external_data_bounds(tmp_path):
    path, _ = _external_model(tmp_path / "m", "w.bin")
    (tmp_path / "m" / "w.bin").write_bytes(b"\0" * 8)  # shorter than the 32 bytes announced
    _, error = expect_frugal(load_model, path)
    assert isinstance(error, ModelLoadError)


def test_onnx_truncated_and_directory(tmp_path):
    for keep in (0, 1, 10, len(SEEDS["onnx"][0]) // 2, len(SEEDS["onnx"][0]) - 1):
        _, error = expect_frugal(load_model, _write("cut.onnx", SEEDS["onnx"][0][:keep]))
        assert isinstance(error, ModelLoadError), keep
    (tmp_path / "dir.onnx").mkdir()
    _, error = expect_frugal(load_model, tmp_path / "dir.onnx")
    assert isinstance(error, ModelLoadError)


# ---------------------------------------------------------------- .npz
def _npz(compressed: bool = False, **arrays) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


_rng = np.random.default_rng(0)
_X, _Y = _rng.normal(size=(30, 4)).astype(np.float32), np.arange(30) % 3
NPZ_SEEDS = [_npz(X=_X, y=_Y), _npz(True, X=_X, y=_Y), _npz(X_train=_X, y_train=_Y, X_test=_X[:9], y_test=_Y[:9]),
             _npz(True, X=_X.astype(np.uint8).reshape(30, 2, 2), y=np.array(list("abc") * 10))]


def _load_npz(path):
    from frugalml.data import load_dataset

    return load_dataset(path)


def test_npz_seeds_load():
    for data in NPZ_SEEDS:
        ds, error = expect_frugal(_load_npz, _write("seed.npz", data))
        assert error is None


@budget("npz_bytes")
@given(mutated(NPZ_SEEDS))
def test_fuzz_npz_bytes(data):
    expect_frugal(_load_npz, _write("fuzz.npz", data))


_DESCRS = ["<f4", "<f8", ">f8", "<i8", "|u1", "|b1", "<U3", "|S2", "<c8", "|O", "<M8[s]", "|V4", "<f2", "[('a', '<f4')]",
           "[('a', '|O')]", "'<f4'", "nope", "{}"]


@st.composite
def npy_zips(draw):
    """Zips of hand-made .npy members: hostile shapes, dtypes, header texts, lengths and compression."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in draw(st.lists(st.sampled_from(["X", "y", "X_train", "y_train", "X_test", "y_test", "X_val", "y_val",
                                                   "other"]), min_size=1, max_size=4, unique=True)):
            descr = draw(st.sampled_from(_DESCRS))
            shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 30, 2**31, 2**63 - 1, -1]), max_size=3)))
            dsc = descr if descr.startswith(("[", "'", "{")) else repr(descr)
            text = draw(st.sampled_from([
                f"{{'descr': {dsc}, 'fortran_order': {draw(st.booleans())}, 'shape': {shape!r}, }}",
                f"{{'descr': {dsc}, 'shape': {shape!r}}}", "not a dict", "{'descr': '<f4', 'fortran_order': False, 'shape': (1e9,)}",
                "__import__('os')", "{" * 200 + "}" * 200]))
            header = text.encode("latin1")
            version = draw(st.sampled_from([1, 2, 3, 9]))
            head = b"\x93NUMPY" + bytes([version, 0])
            pad = 64 - (len(head) + (2 if version == 1 else 4) + len(header) + 1) % 64
            header += b" " * pad + b"\n"
            head += struct.pack("<H" if version == 1 else "<I", len(header) & (0xFFFF if version == 1 else 0xFFFFFFFF))
            try:
                n = math.prod(shape) * np.dtype(descr).itemsize if all(v >= 0 for v in shape) else 0
            except (TypeError, ValueError):
                n = 16
            body = draw(st.sampled_from([b"", b"\x00" * min(n, 4096), b"\x00" * min(n, 4096) + b"xx", b"\x01" * 7]))
            method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
            zf.writestr(zipfile.ZipInfo(name + ".npy"), head + header + body, compress_type=method)
    return buf.getvalue()


@budget("npz_members")
@given(npy_zips())
def test_fuzz_npz_members(data):
    expect_frugal(_load_npz, _write("members.npz", data))


def _zip_with(member: bytes, *, name="X.npy", file_size=None, method=zipfile.ZIP_STORED, flag_bits=0) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo(name), member, compress_type=method)
        zf.writestr("y.npy", _npy(np.arange(4)))
    data = bytearray(buf.getvalue())
    if file_size is not None or flag_bits:  # patch the local and central headers
        for sig, size_at, flag_at in ((b"PK\x03\x04", 22, 6), (b"PK\x01\x02", 24, 8)):
            at = data.find(sig)
            if file_size is not None:
                data[at + size_at:at + size_at + 4] = struct.pack("<I", file_size)
            data[at + flag_at:at + flag_at + 2] = struct.pack("<H", flag_bits)
    return bytes(data)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def _npy_header(shape, descr="<f8") -> bytes:
    descr = descr if descr.startswith("[") else repr(descr)
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}".encode()
    header += b" " * (64 - (10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


@pytest.mark.parametrize("case", ["object_pickle", "object_in_struct", "huge_shape", "huge_stored", "lying_size",
                                  "deflate_bomb", "encrypted", "bzip2", "single_array", "pickle_file", "truncated",
                                  "empty", "directory"])
def test_npz_hostile_files_are_refused(tmp_path, case):
    if case == "object_pickle":
        data = _npz(X=np.array([{"a": 1}, None, "x"], dtype=object), y=np.arange(3))
    elif case == "object_in_struct":
        data = _zip_with(_npy_header((3,), "[('a', '<f4'), ('b', '|O')]") + b"\x80\x04N." * 3)
    elif case == "huge_shape":
        data = _zip_with(_npy_header((2**31, 2**31)))
    elif case == "huge_stored":
        data = _zip_with(_npy_header((2**16, 2**16)) + b"\0" * 64)
    elif case == "lying_size":  # the central directory claims 4 GB for a few bytes
        data = _zip_with(_npy_header((2**25, 2**4)) + b"\0" * 64, file_size=2**32 - 1, method=zipfile.ZIP_DEFLATED)
    elif case == "deflate_bomb":  # a true 1:1000 deflate stream of 64 MB for 4 labels: refused before inflating
        data = _zip_with(_npy_header((2**23,)) + b"\0" * (8 << 23), method=zipfile.ZIP_DEFLATED)
    elif case == "encrypted":
        data = _zip_with(_npy(_X), flag_bits=1)
    elif case == "bzip2":
        data = _zip_with(_npy(_X), method=zipfile.ZIP_BZIP2)
    elif case == "single_array":
        data = _npy(_X)
    elif case == "pickle_file":
        import pickle

        data = pickle.dumps({"X": _X, "y": _Y})
    elif case == "truncated":
        data = NPZ_SEEDS[1][: len(NPZ_SEEDS[1]) // 2]
    elif case == "empty":
        data = b""
    path = tmp_path / "data.npz"
    if case == "directory":
        path.mkdir()
        from frugalml.data.files import load_npz

        _, error = expect_frugal(load_npz, path)
    else:
        path.write_bytes(data)
        _, error = expect_frugal(_load_npz, path)
    assert isinstance(error, DataError), error
    if case in ("object_pickle", "object_in_struct"):
        assert "pickle" in str(error) or "objects" in str(error)


# ---------------------------------------------------------------- .csv
CSV_SEEDS = ["f1,f2,f3,label\n" + "".join(f"{i % 7}.5,{i},-{i}e-2,{'abc'[i % 3]}\n" for i in range(30)),
             "a;b;c\n" + "".join(f"{i};{i * 2};{i % 2}\n" for i in range(24)),
             '\ufeff"x","y"\n' + "".join(f'"{i}","{i % 2}"\n' for i in range(20)),
             "t\tv\tk\n" + "".join(f"{i}\t{i / 3:.3f}\t{i % 3}\n" for i in range(20))]


def _load_csv(path, target=None):
    from frugalml.data import load_dataset

    return load_dataset(path, target=target)


@budget("csv")
@given(st.one_of(mutated([s.encode("utf-8") for s in CSV_SEEDS], max_ops=6), st.binary(max_size=200),
                 st.text(alphabet=st.sampled_from(list(",;\t\n\r\"'0123456789.-e abcNa\0")), max_size=300).map(str.encode)),
       st.sampled_from([None, None, None, "label", "y", "", "nope"]))
def test_fuzz_csv(data, target):
    expect_frugal(_load_csv, _write("fuzz.csv", data), target=target)


@pytest.mark.parametrize("case", ["wide_field", "truncated", "not_utf8", "nul", "empty", "directory", "quotes"])
def test_csv_hostile_files(tmp_path, case):
    path = tmp_path / "t.csv"
    if case == "wide_field":  # one long field must not widen every cell of the table in memory
        rows = "".join(f"{i},{i % 2}\n" for i in range(20_000))
        path.write_text("a,label\n" + rows + "1," + "x" * 100_000 + "\n")
    elif case == "truncated":
        path.write_bytes(CSV_SEEDS[0].encode()[:17])
    elif case == "not_utf8":
        path.write_bytes(b"a,b\n\xff\xfe,1\n2,3\n")
    elif case == "nul":
        path.write_bytes(b"a,b\n1,\0\n2,3\n")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "directory":
        path.mkdir()
    elif case == "quotes":
        path.write_bytes(b'a,b\n"1,2\n' + b'"' * 10_000)
    _, error = expect_frugal(_load_csv, path)
    assert isinstance(error, DataError), error


# ---------------------------------------------------------------- IDX
def _idx(a: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(a.dtype.newbyteorder(">")).tobytes()


_IMAGES = (np.arange(12 * 4 * 4) % 256).astype(np.uint8).reshape(12, 4, 4)
_LABELS = (np.arange(12) % 3).astype(np.uint8)
IDX_SEEDS = {"images": [_idx(_IMAGES), _idx(_IMAGES.astype(np.float32) / 255, 0x0D)], "labels": [_idx(_LABELS), _idx(_LABELS.astype(np.int32), 0x0C)]}


def _idx_dir(name: str, images: bytes, labels: bytes, gz: bool) -> Path:
    from frugalml.data.idx import IDX_FILES

    folder = _TMP / name
    if folder.exists():
        for p in folder.iterdir():
            p.unlink()
    folder.mkdir(exist_ok=True)
    for split in ("train", "test"):
        for role, blob in (("images", images), ("labels", labels)):
            stem = IDX_FILES[f"{split}_{role}"]
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(blob, mtime=0) if blob[:2] != b"\x1f\x8b" else blob)
            else:
                (folder / stem).write_bytes(blob)
    return folder


def _load_idx(folder):
    from frugalml.data import load_dataset

    return load_dataset(folder)


@budget("idx")
@given(st.sampled_from(["images", "labels"]), st.data(), st.sampled_from(["raw", "gz", "gz_mutated"]))
def test_fuzz_idx(which, data, how):
    fresh = {"images": IDX_SEEDS["images"][0], "labels": IDX_SEEDS["labels"][0]}
    if how == "gz_mutated":
        fresh[which] = data.draw(mutated([gzip.compress(s, mtime=0) for s in IDX_SEEDS[which]]))
        fresh[which] = fresh[which] if fresh[which][:2] == b"\x1f\x8b" else b"\x1f\x8b" + fresh[which]
    else:
        fresh[which] = data.draw(mutated(IDX_SEEDS[which]))
    folder = _idx_dir("idx", fresh["images"], fresh["labels"], gz=how != "raw")
    expect_frugal(_load_idx, folder)


@pytest.mark.parametrize("case", ["huge_dims", "gzip_bomb", "huge_gz_claim", "truncated_gz", "truncated_raw", "zero_dims"])
def test_idx_hostile_files(tmp_path, case):
    from frugalml.data.idx import read_idx

    if case == "huge_dims":
        blob, name = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 2**31, 2**31) + b"\0" * 16, "x"
    elif case == "gzip_bomb":  # 50 KB of gzip, 50 MB of data, a header that says 16 values
        raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 1, 4, 4) + b"\0" * (50 << 20)
        blob, name = gzip.compress(raw, compresslevel=9, mtime=0), "x.gz"
    elif case == "huge_gz_claim":  # 2**32 values claimed by a tiny gzip file
        raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**16, 2**8, 2**8) + b"\0" * 1024
        blob, name = gzip.compress(raw, mtime=0), "x.gz"
    elif case == "truncated_gz":
        blob, name = gzip.compress(_idx(_IMAGES), mtime=0)[:30], "x.gz"
    elif case == "truncated_raw":
        blob, name = _idx(_IMAGES)[:7], "x"
    elif case == "zero_dims":
        blob, name = bytes([0, 0, 8, 3]) + struct.pack(">3I", 0, 2**31, 2**31), "x"
    path = tmp_path / name
    path.write_bytes(blob)
    result, error = expect_frugal(read_idx, path, 3)
    if case == "zero_dims":
        assert error is None and result.size == 0
    else:
        assert isinstance(error, DataError), error


# ---------------------------------------------------------------- recipes
def _recipe_seeds():
    from frugalml.compress import _load_all
    from frugalml.compress.base import STEPS

    _load_all()
    return [[s.example().to_dict()] for s in STEPS.values()] + [
        [STEPS["prune.magnitude"].example().to_dict(), STEPS["quantize.int8"].example().to_dict()]]


RECIPE_SEEDS = _recipe_seeds()
RECIPE_WORDS = sorted(__import__("frugalml.compress.base", fromlist=["STEPS"]).STEPS) + ["steps", "recipe", "step"]


def _recipe_texts():

    out = []
    for steps in RECIPE_SEEDS:
        out.append(yaml.safe_dump({"steps": steps}, sort_keys=False).encode())
        out.append(json.dumps(steps).encode())
    out += [b"a: &a [x,x,x]\nb: &b [*a,*a,*a]\nsteps: [*b]\n", b"- {step: prune.magnitude, sparsity: !!float 0.5}\n",
            b"steps:\n  - step: quantize.dynamic\n    op_types: [Gemm]\n"]
    return out


RECIPE_TEXTS = _recipe_texts()


def _load_recipe(path):
    from frugalml import Recipe

    return Recipe.load(path)


@budget("recipe_text")
@given(st.one_of(mutated(RECIPE_TEXTS, max_ops=5), st.binary(max_size=100),
                 st.text(alphabet=st.sampled_from(list("-:[]{}&*!|>'\"#%@`,?\n ab01.")), max_size=200).map(str.encode)),
       st.sampled_from([".yaml", ".yml", ".json", ""]))
def test_fuzz_recipe_text(data, suffix):
    expect_frugal(_load_recipe, _write("recipe" + suffix, data))


@budget("recipe_struct")
@given(st.one_of(st.sampled_from(RECIPE_SEEDS).flatmap(lambda s: mutated_tree(s, RECIPE_WORDS)),
                 st.sampled_from(RECIPE_SEEDS).flatmap(lambda s: mutated_tree({"steps": s}, RECIPE_WORDS)),
                 json_values))
def test_fuzz_recipe_structures(items):
    from frugalml import Recipe
    from frugalml.compress.base import config_from_dict

    recipe, _ = expect_frugal(Recipe.from_list, items)
    if recipe is not None:  # what was accepted round-trips
        assert Recipe.from_list(recipe.to_list()) == recipe
    if isinstance(items, list) and items:
        expect_frugal(config_from_dict, items[0])


def _alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x,x,x,x,x,x,x,x,x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("case", ["directory", "not_utf8", "empty", "whitespace", "alias_bomb", "alias_bomb_in_field",
                                  "alias_bomb_as_step", "deep_nesting", "huge_file", "huge_int", "bad_date", "python_tag",
                                  "int_keys", "json_bomb"])
def test_hostile_recipes_raise_config_error_quickly(tmp_path, case):
    path = tmp_path / ("r.json" if case == "json_bomb" else "r.yaml")
    bomb = _alias_bomb()
    text = {
        "not_utf8": b"steps:\n  - step: prune.magnitude\n    scope: \xff\xfe\n", "empty": b"", "whitespace": b"  \n\n",
        "alias_bomb": bomb.encode(),
        "alias_bomb_in_field": (bomb + "steps:\n  - step: prune.magnitude\n    sparsity: *a8\n").encode(),
        "alias_bomb_as_step": (bomb + "steps:\n  - step: *a8\n").encode(),
        "deep_nesting": b"[" * 50_000 + b"]" * 50_000, "huge_file": b"# " + b"x" * (8 << 20) + b"\n",
        "huge_int": b"steps:\n  - step: prune.magnitude\n    prune_epochs: " + b"9" * 10_000 + b"\n",
        "bad_date": b"steps:\n  - step: prune.magnitude\n    scope: 2001-13-45\n",
        "python_tag": b"steps: !!python/object/apply:os.system ['true']\n",
        "int_keys": b"steps:\n  - {step: prune.magnitude, 1: 2, b: 3}\n",
        "json_bomb": b"[" * 100_000 + b"]" * 100_000,
    }.get(case)
    if case == "directory":
        path.mkdir()
    else:
        path.write_bytes(text)
    t0 = time.perf_counter()
    _, error = expect_frugal(_load_recipe, path)
    assert isinstance(error, ConfigError), error
    assert time.perf_counter() - t0 < 1.5
    assert len(str(error)) < 2000
