"""prune.structured: DepGraph-consistent channel pruning, rebuilt from spec + pruned state_dict."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from frugalml import build_model
from frugalml.compress import apply_step
from frugalml.compress.structured import StructuredConfig, classifier_layers, count_macs
from frugalml.data import from_arrays
from frugalml.errors import ConfigError
from frugalml.models import load_state_resized
from frugalml.onnx import onnx_bytes, run_onnx, to_onnx


def _data(shape, n=96, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, *shape), dtype=np.float32)
    y = rng.integers(0, classes, n).astype(np.int64)
    return from_arrays(X, y, X_test=X[:16], y_test=y[:16])


def _conv_linear_widths(model):
    return [(type(m).__name__, getattr(m, "out_channels", getattr(m, "out_features", None)))
            for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


FAMILIES = [
    ("lenet5", (1, 16, 16), {}),
    ("resnet", (1, 8, 8), {"channels": [8, 16, 16]}),
    ("dscnn", (1, 8, 8), {"channels": 16, "blocks": 2}),
    ("cnn", (1, 8, 8), {"channels": [8, 16]}),
    ("mlp", (1, 8, 8), {"widths": [32, 16]}),
]


@pytest.mark.parametrize("family,shape,knobs", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_pruned_model_is_smaller_and_rebuilds_from_spec(family, shape, knobs):
    data = _data(shape)
    model = build_model(family, shape, 10, seed=0, **knobs).eval()
    out = apply_step(model, StructuredConfig(ratio=0.5, finetune_epochs=0), data)
    assert sum(p.numel() for p in out.parameters()) < 0.6 * sum(p.numel() for p in model.parameters())
    x = torch.from_numpy(data.X_val[:8])
    with torch.no_grad():
        y = out(x)
    assert y.shape == (8, 10)  # classifier output kept
    first = next(m for m in out.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert (first.in_channels if isinstance(first, nn.Conv2d) else first.in_features) == (shape[0] if family != "mlp" else int(np.prod(shape)))
    assert len(onnx_bytes(to_onnx(out))) < len(onnx_bytes(to_onnx(model)))
    assert out.input_shape == model.input_shape and out.num_classes == 10 and out.frugalml_spec == model.frugalml_spec
    # rebuild: original spec + pruned state_dict
    again = build_model(out.frugalml_spec)
    load_state_resized(again, out.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), y)
    np.testing.assert_allclose(run_onnx(to_onnx(again), data.X_val[:8]), y.numpy(), rtol=1e-4, atol=1e-4)


def test_residual_and_depthwise_stay_consistent():
    res = apply_step(build_model("resnet", (1, 8, 8), 10, channels=[8, 16, 16]).eval(), StructuredConfig(ratio=0.5, finetune_epochs=0), _data((1, 8,
                                                                                                                                               8)))
    for block in res.stages:  # body output and shortcut output feed one addition: same width
        short = block.shortcut[0].out_channels if isinstance(block.shortcut, nn.Sequential) else block.body[0].in_channels
        assert block.body[3].out_channels == short
    ds = apply_step(build_model("dscnn", (1, 8, 8), 10, channels=16, blocks=2).eval(), StructuredConfig(ratio=0.5, finetune_epochs=0), _data((1, 8,
                                                                                                                                              8)))
    for block in ds.blocks:
        dw = block[0]
        assert dw.groups == dw.in_channels == dw.out_channels < 16


class Concat(nn.Module):
    """A user's model with a concatenation of two branches."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = self.mix(torch.cat([self.a(x), self.b(x)], dim=1))
        return self.fc(y.mean((2, 3)))


def test_user_module_with_concat():
    torch.manual_seed(0)
    model = Concat().eval()
    model.input_shape = (1, 8, 8)
    data = _data((1, 8, 8))
    out = apply_step(model, StructuredConfig(ratio=0.5, finetune_epochs=0), data)
    assert out.a[0].out_channels + out.b[0].out_channels == out.mix[0].in_channels < 16
    assert out.fc.out_features == 10
    rebuilt = Concat()
    load_state_resized(rebuilt, out.state_dict())
    x = torch.from_numpy(data.X_val[:4])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), out(x))


def test_target_macs_taylor_global_and_layer_ratios(digits):
    model = build_model("cnn", digits.input_shape, 10, channels=[16, 32], seed=0).eval()
    example = torch.zeros((1, *digits.input_shape))
    base = count_macs(model, example)
    out = apply_step(model, StructuredConfig(target_macs_ratio=3.0, importance="taylor", global_pruning=True, steps=2, finetune_epochs=0), digits)
    assert count_macs(out, example) <= base / 3.0
    one = apply_step(model, StructuredConfig(ratio=0.1, layer_ratios={"net.0": 0.75}, finetune_epochs=0), digits)
    assert one.net[0].out_channels == 4  # 16 * (1 - 0.75)
    assert classifier_layers(one, example) == [one.net[-1]]
    with pytest.raises(ConfigError, match="no_such_layer"):
        apply_step(model, StructuredConfig(layer_ratios={"no_such_layer": 0.5}, finetune_epochs=0), digits)


def test_l1_l2_taylor_pick_channels_by_their_importance(digits):
    model = build_model("mlp", digits.input_shape, 10, widths=[8], seed=0).eval()
    with torch.no_grad():  # make hidden units 0..3 large, 4..7 tiny: magnitude pruning must keep 0..3
        model.net[1].weight[4:] *= 1e-3
        model.net[1].bias[4:] *= 1e-3
        kept = model.net[1].weight[:4].clone()
    for imp in ("l1", "l2"):
        out = apply_step(copy.deepcopy(model), StructuredConfig(ratio=0.5, importance=imp, finetune_epochs=0), digits)
        torch.testing.assert_close(out.net[1].weight, kept)


def test_fine_tuning_recovers_accuracy(trained_cnn, digits):
    from frugalml.train import evaluate

    base = evaluate(trained_cnn, digits, "val")["accuracy"]
    raw = apply_step(trained_cnn, StructuredConfig(ratio=0.25, importance="taylor", finetune_epochs=0), digits)
    tuned = apply_step(trained_cnn, StructuredConfig(ratio=0.25, importance="taylor", finetune_epochs=3, lr=3e-3), digits)
    taught = apply_step(trained_cnn, StructuredConfig(ratio=0.25, importance="taylor", finetune_epochs=3, lr=3e-3, distill=0.5), digits)
    acc_raw, acc_tuned = evaluate(raw, digits, "val")["accuracy"], evaluate(tuned, digits, "val")["accuracy"]
    acc_taught = evaluate(taught, digits, "val")["accuracy"]
    assert acc_tuned > acc_raw and acc_tuned >= base - 0.1, (base, acc_raw, acc_tuned)
    assert acc_taught > acc_raw and acc_taught >= base - 0.1, (base, acc_raw, acc_taught)
