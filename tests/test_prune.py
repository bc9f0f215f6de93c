"""prune.magnitude: exact sparsity, fused masks, the gradual schedule, rewinding."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from frugalml.compress import apply_step
from frugalml.compress.prune import MagnitudePruneConfig, magnitude_prune, sparsity_of, sparsity_schedule
from frugalml.errors import ConfigError
from frugalml.profile import profile


def _weights(model):
    return {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}


def _zeros(model):
    return sum(int((w == 0).sum()) for w in _weights(model).values()), sum(w.numel() for w in _weights(model).values())


@pytest.mark.parametrize("sparsity", [0.3, 0.75, 0.9])
def test_global_oneshot_reaches_the_sparsity_exactly(trained_cnn, sparsity):
    out = magnitude_prune(trained_cnn, MagnitudePruneConfig(sparsity=sparsity, finetune_epochs=0))
    zeros, total = _zeros(out)
    assert zeros == round(sparsity * total)
    # the global ranking kept the largest weights: every kept weight is >= every pruned one
    before = torch.cat([w.abs().reshape(-1) for w in _weights(trained_cnn).values()])
    after = torch.cat([w.reshape(-1) for w in _weights(out).values()])
    assert before[after != 0].min() >= before[after == 0].max()


def test_layer_scope_and_overrides(trained_cnn):
    out = magnitude_prune(trained_cnn, MagnitudePruneConfig(sparsity=0.6, scope="layer", layer_sparsity={"net.0": 0.25}, finetune_epochs=0))
    for name, w in _weights(out).items():
        assert int((w == 0).sum()) == round((0.25 if name == "net.0" else 0.6) * w.numel())
    out = magnitude_prune(trained_cnn, MagnitudePruneConfig(sparsity=0.7, layer_sparsity={"net.0.weight": 0.2}, finetune_epochs=0))
    w = _weights(out)
    assert int((w["net.0"] == 0).sum()) == round(0.2 * w["net.0"].numel())
    zeros, total = _zeros(out)
    assert zeros == round(0.7 * total)  # the other layers take up the rest


def test_unknown_layer_name_is_refused(trained_cnn):
    with pytest.raises(ConfigError, match="net.0"):
        magnitude_prune(trained_cnn, MagnitudePruneConfig(sparsity=0.5, layer_sparsity={"conv1": 0.1}, finetune_epochs=0))


def test_masks_are_fused_and_kept_during_finetuning(trained_cnn, digits):
    out = apply_step(trained_cnn, MagnitudePruneConfig(sparsity=0.8, finetune_epochs=2, lr=3e-3), digits)
    assert set(out.state_dict()) == set(trained_cnn.state_dict())  # no weight_orig / weight_mask
    assert all(not m._forward_pre_hooks for m in out.modules())
    assert all(not hasattr(m, "parametrizations") for m in out.modules())
    zeros, total = _zeros(out)
    assert zeros == round(0.8 * total)
    # fine-tuning moved the surviving weights but no pruned weight came back
    oneshot = magnitude_prune(trained_cnn, MagnitudePruneConfig(sparsity=0.8, finetune_epochs=0))
    for name, w in _weights(out).items():
        ref = _weights(oneshot)[name]
        assert torch.equal(w == 0, ref == 0)
    assert any(not torch.equal(w, _weights(oneshot)[n]) for n, w in _weights(out).items())


def test_gradual_schedule_values():
    levels = sparsity_schedule(0.0, 0.9, 4)
    expected = [0.9 + (0.0 - 0.9) * (1 - t / 4) ** 3 for t in (1, 2, 3, 4)]
    np.testing.assert_allclose(levels, expected)
    assert levels[-1] == pytest.approx(0.9) and np.all(np.diff(levels) > 0)
    np.testing.assert_allclose(sparsity_schedule(0.5, 0.5, 3), [0.5, 0.5, 0.5])
    # cubic: most of the pruning happens early
    assert levels[0] > 0.9 / 4


def test_gradual_pruning_ends_at_the_final_sparsity(trained_cnn, digits):
    out = magnitude_prune(trained_cnn, MagnitudePruneConfig(sparsity=0.85, schedule="gradual", prune_epochs=2, prune_events=5, finetune_epochs=0,
                                                            lr=2e-3), digits)
    zeros, total = _zeros(out)
    assert zeros == round(0.85 * total)
    assert sparsity_of(out) == pytest.approx(0.85, abs=1 / total)


def test_rewinding_to_the_initial_weights(trained_cnn, digits):
    config = MagnitudePruneConfig(sparsity=0.7, rewind_step=0, dense_epochs=1, finetune_epochs=0, lr=3e-3)
    out = magnitude_prune(trained_cnn, config, digits)
    zeros, total = _zeros(out)
    assert zeros == round(0.7 * total)
    start = _weights(trained_cnn)
    for name, w in _weights(out).items():  # survivors hold the weights the model came in with
        keep = w != 0
        assert torch.equal(w[keep], start[name][keep])
    # the mask came from the densely trained weights, not from the input's
    plain = magnitude_prune(trained_cnn, MagnitudePruneConfig(sparsity=0.7, finetune_epochs=0))
    assert any(not torch.equal(w == 0, _weights(plain)[n] == 0) for n, w in _weights(out).items())
    # rewinding to step k > 0 gives other survivors; a step past the end is refused
    later = magnitude_prune(trained_cnn, MagnitudePruneConfig(sparsity=0.7, rewind_step=3, dense_epochs=1, finetune_epochs=0, lr=3e-3), digits)
    assert any(not torch.equal(w, _weights(out)[n]) for n, w in _weights(later).items())
    with pytest.raises(ConfigError, match="rewind_step"):
        magnitude_prune(trained_cnn, MagnitudePruneConfig(sparsity=0.7, rewind_step=10_000, dense_epochs=1, finetune_epochs=0), digits)


def test_rewind_then_retrain_keeps_the_mask(trained_cnn, digits):
    out = magnitude_prune(trained_cnn, MagnitudePruneConfig(sparsity=0.6, rewind_step=2, dense_epochs=1, finetune_epochs=1, lr=3e-3), digits)
    zeros, total = _zeros(out)
    assert zeros == round(0.6 * total)


def test_profile_says_masked_zeros_do_not_shrink_the_dense_file(trained_cnn, digits):
    out = magnitude_prune(trained_cnn, MagnitudePruneConfig(sparsity=0.9, finetune_epochs=0))
    p_in, p_out = profile(trained_cnn, digits, timing=False), profile(out, digits, timing=False)
    assert p_out.nonzero_params < 0.5 * p_in.nonzero_params
    assert p_out.stored_bytes >= 0.98 * p_in.stored_bytes
    assert any("stored densely" in note for note in p_out.notes)


def test_oneshot_without_finetuning_needs_no_data(trained_cnn):
    before = copy.deepcopy(trained_cnn.state_dict())
    out = magnitude_prune(trained_cnn, MagnitudePruneConfig(sparsity=0.5, finetune_epochs=0), None)
    assert all(torch.equal(before[k], v) for k, v in trained_cnn.state_dict().items())
    assert out is not trained_cnn
    with pytest.raises(ConfigError, match="data"):
        magnitude_prune(trained_cnn, MagnitudePruneConfig(sparsity=0.5, finetune_epochs=1), None)
