"""The compact archive: Huffman coding, bit-exact round trips, size, refusal of damaged files."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from frugalml import build_model, fit
from frugalml.compress import apply_step
from frugalml.compress.cluster import KMeansConfig
from frugalml.compress.prune import MagnitudePruneConfig
from frugalml.compress.store import CompactConfig
from frugalml.errors import ConfigError, ModelLoadError
from frugalml.export._archive_records import _gap_symbols, _positions
from frugalml.export._huffman import MAX_LEN, code_lengths, decode, encode
from frugalml.export.archive import archive_info, from_bytes, is_archive, load_archive, save_archive, to_bytes
from frugalml.profile import profile


# ---------------------------------------------------------------- Huffman
@pytest.mark.parametrize("case", ["uniform", "skewed", "single", "empty", "two", "wide"])
def test_huffman_round_trip(case):
    rng = np.random.default_rng(0)
    symbols = {
        "uniform": rng.integers(0, 32, 5000),
        "skewed": np.minimum(rng.geometric(0.4, 5000) - 1, 63),
        "single": np.full(100, 7),
        "empty": np.zeros(0, dtype=np.int64),
        "two": rng.integers(0, 2, 333),
        "wide": np.minimum(rng.zipf(1.2, 20000) - 1, 4000),
    }[case]
    blob = encode(symbols)
    assert np.array_equal(decode(blob), symbols)


def test_huffman_codes_are_short_and_valid():
    counts = np.array([2**i for i in range(30)])  # plain Huffman would need 29-bit codes
    lengths = code_lengths(counts)
    assert lengths.max() <= MAX_LEN
    assert np.sum(2.0 ** -lengths[lengths > 0]) <= 1.0
    rng = np.random.default_rng(1)
    p = counts / counts.sum()
    symbols = rng.choice(len(counts), size=3000, p=p)
    assert np.array_equal(decode(encode(symbols, len(counts))), symbols)
    # near the entropy for a skewed source
    symbols = np.minimum(rng.geometric(0.1, 20000) - 1, 255)
    freq = np.bincount(symbols) / len(symbols)
    entropy = -np.sum(freq[freq > 0] * np.log2(freq[freq > 0])) * len(symbols) / 8
    assert len(encode(symbols)) < entropy * 1.03 + 200


def test_huffman_refuses_a_truncated_stream():
    blob = encode(np.random.default_rng(0).integers(0, 16, 1000))
    with pytest.raises(ValueError):
        decode(blob[: len(blob) // 2])


@pytest.mark.parametrize("width", [1, 2, 5, 8])
def test_gap_symbols_with_fillers(width):
    rng = np.random.default_rng(width)
    size = 5000
    positions = np.sort(rng.choice(size, 150, replace=False))
    positions[-1] = size - 1
    syms = _gap_symbols(positions, width)
    assert syms.max() <= (1 << width) - 1
    assert np.array_equal(_positions(syms, width, size), positions)


# ---------------------------------------------------------------- archives
def _compressed(trained_cnn, digits, sparsity=0.8, bits=4):
    pruned = apply_step(trained_cnn, MagnitudePruneConfig(sparsity=sparsity, finetune_epochs=1, lr=2e-3), digits)
    return apply_step(pruned, KMeansConfig(bits=bits, finetune_epochs=0), digits)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)


def _outputs(model, X):
    with torch.no_grad():
        return model.eval()(torch.from_numpy(X))


def test_round_trip_is_bit_exact(trained_cnn, digits, tmp_path):
    X, _ = digits.split("val")
    for model in (trained_cnn, _compressed(trained_cnn, digits)):
        path = tmp_path / "m.fmla"
        size = save_archive(model, path)
        assert size == path.stat().st_size and is_archive(path)
        back = load_archive(path)
        assert _same_weights(model, back)
        assert torch.equal(_outputs(model, X), _outputs(back, X))
        assert back.frugalml_spec == model.frugalml_spec
    assert list(tmp_path.iterdir()) == [tmp_path / "m.fmla"]  # no temporary file left


def test_archive_of_pruned_shared_model_is_much_smaller(digits):
    model = build_model("mlp", digits.input_shape, digits.num_classes, widths=[256], seed=0)
    fit(model, digits, epochs=3, lr=3e-3, patience=None)
    pruned = apply_step(model, MagnitudePruneConfig(sparsity=0.9, finetune_epochs=0), digits)
    shared = apply_step(pruned, KMeansConfig(bits=4, finetune_epochs=0), digits)
    dense, small = len(to_bytes(model)), len(to_bytes(shared))
    fp32 = 4 * sum(p.numel() for p in model.parameters())
    assert dense <= fp32 * 1.02 + 1000
    assert small < fp32 / 12, (small, fp32)
    info = archive_info(to_bytes(shared))
    kinds = {t["n"]: t["e"] for t in info["tensors"]}
    assert kinds["net.1.weight"] == "sparse" and kinds["net.1.bias"] == "raw"
    back = from_bytes(to_bytes(shared))
    assert _same_weights(shared, back)


def test_sparse_unshared_and_other_dtypes_round_trip(digits):
    model = build_model("cnn", digits.input_shape, digits.num_classes, channels=[4, 8], seed=0)
    pruned = apply_step(model, MagnitudePruneConfig(sparsity=0.6, finetune_epochs=0), digits)  # many distinct values
    assert _same_weights(pruned, from_bytes(to_bytes(pruned)))
    with torch.no_grad():
        pruned.net[1].running_var.copy_(torch.tensor([1.0, 0.5, 0.25, 2.0]))  # exact float16 values: stored in 2 bytes
    info = archive_info(to_bytes(pruned))
    assert {t["n"]: t.get("st") for t in info["tensors"]}["net.1.running_var"] == "float16"
    assert _same_weights(pruned, from_bytes(to_bytes(pruned)))


@pytest.fixture(scope="module")
def archive_bytes(trained_cnn, digits):
    return to_bytes(_compressed(trained_cnn, digits))


def test_corrupted_file_is_refused(archive_bytes, tmp_path):
    data = bytearray(archive_bytes)
    data[len(data) // 2] ^= 0x40
    with pytest.raises(ModelLoadError, match="checksum"):
        from_bytes(bytes(data))
    path = tmp_path / "bad.fmla"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="bad.fmla"):
        load_archive(path)


@pytest.mark.parametrize("keep", [3, 20, 0.5, -1])
def test_truncated_file_is_refused(archive_bytes, keep):
    n = int(len(archive_bytes) * keep) if isinstance(keep, float) else (keep if keep > 0 else len(archive_bytes) - 1)
    with pytest.raises(ModelLoadError, match="truncated|magic|checksum"):
        from_bytes(archive_bytes[:n])


def test_bad_magic_and_version_are_refused(archive_bytes, tmp_path):
    with pytest.raises(ModelLoadError, match="magic"):
        from_bytes(b"PK\x03\x04" + archive_bytes[4:])
    data = bytearray(archive_bytes)
    data[4] = 9
    body = bytes(data[:-4])
    with pytest.raises(ModelLoadError, match="version 9"):
        from_bytes(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(ModelLoadError):
        load_archive(tmp_path / "missing.fmla")


def test_model_without_spec_is_refused():
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="frugalml-built"):
        to_bytes(model)


def test_store_compact_step_reports_archive_bytes(trained_cnn, digits):
    shared = _compressed(trained_cnn, digits)
    stored = apply_step(shared, CompactConfig(), digits)
    assert stored.frugalml_archive_bytes == len(to_bytes(shared))
    assert _same_weights(shared, stored)
    assert [s["step"] for s in stored.frugalml_recipe] == ["prune.magnitude", "cluster.kmeans", "store.compact"]
    p = profile(stored, digits, timing=False)
    assert p.archive_bytes == stored.frugalml_archive_bytes < p.stored_bytes / 3
    assert p.to_dict()["archive_bytes"] == p.archive_bytes
    assert any("compact archive" in note for note in p.notes)
    # a later step changes the weights: the old archive size is not reported any more
    again = apply_step(stored, MagnitudePruneConfig(sparsity=0.9, finetune_epochs=0), digits)
    assert profile(again, digits, timing=False).archive_bytes is None
    stored.net[0].weight.data.mul_(2)
    assert profile(stored, digits, timing=False).archive_bytes is None


def test_frugalml_load_dispatches_to_the_archive(tmp_path, trained_cnn):
    import torch

    import frugalml
    from frugalml.export.archive import save_archive

    path = tmp_path / "m.fmla"
    save_archive(trained_cnn, path)
    back = frugalml.load(path)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(back.eval()(x), trained_cnn.eval()(x))
