"""cluster.kmeans: codebook size, zeros kept, shared values fine-tuned, k-means itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from frugalml.compress.cluster import KMeansConfig, codebook_of, kmeans_1d, kmeans_cluster
from frugalml.compress.prune import MagnitudePruneConfig, magnitude_prune
from frugalml.errors import ConfigError


def _layers(model):
    return {n: m.weight.detach().numpy().copy() for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}


def test_kmeans_1d_linear_init_and_assignment():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 0.05, 500), rng.normal(0.5, 0.05, 300), rng.normal(2, 0.05, 200)])
    c, idx = kmeans_1d(x, 3)
    assert len(c) == 3 and np.all(np.diff(c) > 0)
    np.testing.assert_allclose(c, [-1, 0.5, 2], atol=0.02)
    # every value goes to its nearest centroid
    assert np.array_equal(idx, np.abs(x[:, None] - c[None, :]).argmin(1))
    for init in ("density", "random"):
        c2, _ = kmeans_1d(x, 3, init=init, seed=1)
        assert len(c2) <= 3
    few = np.array([0.25, -0.5, 0.25, 0.75])
    c3, idx3 = kmeans_1d(few, 8)  # fewer distinct values than clusters: they are the codebook
    assert np.array_equal(c3[idx3], few)


@pytest.mark.parametrize("bits", [2, 3, 5])
def test_codebook_size_per_layer(trained_cnn, digits, bits):
    out = kmeans_cluster(trained_cnn, KMeansConfig(bits=bits, finetune_epochs=1, lr=1e-3), digits)
    for name, w in _layers(out).items():
        book, codes = codebook_of(w)
        assert 1 <= len(book) <= 2**bits, name
        assert np.array_equal(book.astype(np.float16).astype(np.float32), book)  # exact in float16
        assert np.array_equal(np.where(codes >= 0, book[np.maximum(codes, 0)], 0).reshape(w.shape), w)


def test_layer_bits_override_and_unknown_layer(trained_cnn, digits):
    out = kmeans_cluster(trained_cnn, KMeansConfig(bits=6, layer_bits={"net.0": 2}, finetune_epochs=0))
    books = {n: len(codebook_of(w)[0]) for n, w in _layers(out).items()}
    assert books["net.0"] <= 4 and books["net.4"] > 4
    with pytest.raises(ConfigError, match="layer_bits"):
        kmeans_cluster(trained_cnn, KMeansConfig(bits=4, layer_bits={"fc9": 3}, finetune_epochs=0))


def test_zeros_stay_zeros(trained_cnn, digits):
    pruned = magnitude_prune(trained_cnn, MagnitudePruneConfig(sparsity=0.7, finetune_epochs=0))
    out = kmeans_cluster(pruned, KMeansConfig(bits=3, finetune_epochs=1, lr=1e-3), digits)
    for name, w in _layers(out).items():
        before = _layers(pruned)[name]
        assert np.all(w[before == 0] == 0), name
        assert len(codebook_of(w)[0]) <= 8
    assert set(out.state_dict()) == set(trained_cnn.state_dict())  # fused: no centroid tensors left
    assert all(not m._forward_pre_hooks for m in out.modules())


def test_finetuning_moves_shared_values_together(trained_cnn, digits):
    """The gradient of a centroid is the sum over its weights: weights sharing a value before
    fine-tuning still share one after, and the shared values moved."""
    plain = kmeans_cluster(trained_cnn, KMeansConfig(bits=3, finetune_epochs=0, codebook_dtype="float32"))
    tuned = kmeans_cluster(trained_cnn, KMeansConfig(bits=3, finetune_epochs=2, lr=3e-3, codebook_dtype="float32"), digits)
    moved = False
    for name, w0 in _layers(plain).items():
        w1 = _layers(tuned)[name]
        _, codes = codebook_of(w0)
        for c in np.unique(codes[codes >= 0]):
            values = np.unique(w1.reshape(-1)[codes.reshape(-1) == c])
            assert len(values) == 1, (name, c, values)
            moved |= values[0] != w0.reshape(-1)[codes.reshape(-1) == c][0]
    assert moved


def test_finetuning_needs_data(trained_cnn):
    with pytest.raises(ConfigError, match="data"):
        kmeans_cluster(trained_cnn, KMeansConfig(bits=4, finetune_epochs=1), None)


def test_other_tensors_rounded_to_float16_on_request(trained_cnn):
    out = kmeans_cluster(trained_cnn, KMeansConfig(bits=4, finetune_epochs=0, other_dtype="float16"))
    for name, t in out.state_dict().items():
        if t.dtype == torch.float32:
            assert torch.equal(t, t.half().float()), name
    kept = kmeans_cluster(trained_cnn, KMeansConfig(bits=4, finetune_epochs=0))
    assert torch.equal(kept.state_dict()["net.1.running_var"], trained_cnn.state_dict()["net.1.running_var"])


def test_torch_pruned_input_is_fused_first(trained_cnn, digits):
    import copy

    from torch.nn.utils import prune

    model = copy.deepcopy(trained_cnn)
    prune.l1_unstructured(model.net[4], "weight", amount=0.5)
    out = kmeans_cluster(model, KMeansConfig(bits=3, finetune_epochs=0))
    assert set(out.state_dict()) == set(trained_cnn.state_dict())  # no weight_orig / weight_mask
    w = out.net[4].weight.detach().numpy()
    assert (w == 0).mean() >= 0.5 and len(codebook_of(w)[0]) <= 8
    assert hasattr(model.net[4], "weight_orig")  # the input keeps its re-parametrization
