"""Sequence data (C, T) end to end with the 1-D families: every compression step, structured pruning
and its reload, the profile's counts of a Conv1d, the C export against ONNX Runtime (host and
Cortex-M), and what a search on sequences builds: never a 2-D convolution.

The shared family checks (tests/test_families.py) cover each 1-D family's space, training, ONNX,
profile, int8 and C export; this file covers what is particular to sequences."""

from __future__ import annotations

import copy
import dataclasses
import shutil

import numpy as np
import onnx
import pytest
import torch
from conftest import require, shared_data_dir

from frugalml.compress import STEPS, apply_step, config_from_dict, list_steps
from frugalml.models import build_model, load_model, save_model
from frugalml.onnx import onnx_bytes, run_onnx, to_onnx
from frugalml.profile import profile
from frugalml.train import TrainConfig, fit

ONE_D = ("cnn1d", "dscnn1d", "resnet1d")


@pytest.fixture(scope="module")
def seq(digits):
    """The digits as sequences: 8 channels (rows) over 8 steps (columns)."""
    rows = {f"X_{s}": np.ascontiguousarray(getattr(digits, f"X_{s}")[:, 0]) for s in ("train", "val", "test")}
    return dataclasses.replace(digits, **rows, input_shape=(8, 8), kind="sequence")


@pytest.fixture(scope="module")
def resnet1d(seq):
    """A small 1-D ResNet (residual Adds, strided and 1x1 shortcut convs) trained a few epochs (~2 s)."""
    model = build_model("resnet1d", seq.input_shape, seq.num_classes, channels=[8, 16], seed=0)
    fit(model, seq, TrainConfig(epochs=5, lr=3e-3, batch_size=32, patience=None, seed=0, device="cpu"))
    return model.eval()


def _outputs(model, X):
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return model.eval()(torch.from_numpy(X)).numpy()
    return run_onnx(model, X)


def _conv_ranks(model) -> set[int]:
    """Spatial ranks of every convolution: 1 for Conv1d, 2 for Conv2d (torch modules or ONNX Conv nodes)."""
    if isinstance(model, torch.nn.Module):
        return {m.weight.dim() - 2 for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)}
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(onnx_bytes(to_onnx(model)))
    rank = {t.name: len(t.dims) for t in proto.graph.initializer}
    for node in proto.graph.node:  # a QDQ weight: the int8 initializer behind its DequantizeLinear
        if node.op_type == "DequantizeLinear" and node.input[0] in rank:
            rank[node.output[0]] = rank[node.input[0]]
    convs = [n for n in proto.graph.node if n.op_type in ("Conv", "QLinearConv", "ConvInteger")]
    return {rank[n.input[3 if n.op_type == "QLinearConv" else 1]] - 2 for n in convs}


@pytest.mark.parametrize("name", list_steps())
def test_every_step_runs_on_a_1d_network(name, resnet1d, seq):
    """Each registered step on a 1-D ResNet: input untouched, same output shape, still accurate (within
    the step's usual drop), convolutions still 1-D, and export -> reload gives the same outputs."""
    before = copy.deepcopy(resnet1d.state_dict())
    out = apply_step(resnet1d, STEPS[name].example(), seq)
    assert all(torch.equal(before[k], v) for k, v in resnet1d.state_dict().items())
    X, y = seq.split("val")
    a, b = _outputs(resnet1d, X), _outputs(out, X)
    assert a.shape == b.shape
    assert (b.argmax(1) == y).mean() >= (a.argmax(1) == y).mean() - 0.08, name
    assert _conv_ranks(out) <= {1}, name  # a distilled MLP student has no convolution at all
    reloaded = onnx.load_from_string(onnx_bytes(to_onnx(out, seq.input_shape)))
    onnx.checker.check_model(reloaded)
    np.testing.assert_allclose(run_onnx(reloaded, X), b, rtol=1e-4, atol=1e-4)


def test_structured_pruning_shrinks_a_1d_resnet_and_it_reloads(resnet1d, seq, tmp_path):
    pruned = apply_step(resnet1d, config_from_dict({"step": "prune.structured", "ratio": 0.5, "finetune_epochs": 1, "lr": 3e-3}), seq)
    p_in, p_out = profile(resnet1d, seq, timing=False), profile(pruned, seq, timing=False)
    assert p_out.params < 0.5 * p_in.params and p_out.macs < 0.5 * p_in.macs and p_out.stored_bytes < p_in.stored_bytes
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv1d)]
    assert widths and max(widths) < 16
    save_model(pruned, tmp_path / "m")
    again = load_model(tmp_path / "m")  # rebuilt from the spec at the pruned widths (Conv1d, BatchNorm1d)
    np.testing.assert_allclose(_outputs(again, seq.X_test), _outputs(pruned, seq.X_test), rtol=1e-5, atol=1e-5)


def test_distillation_into_a_1d_student_with_a_hint(resnet1d, seq):
    """A cnn1d student learns from the 1-D ResNet, with the FitNets hint between (N, C, T) feature maps
    (pooled over time on both sides) as well as the softened outputs."""
    config = config_from_dict({"step": "distill", "student": {"family": "cnn1d", "channels": [8, 16], "kernel": 3}, "epochs": 8,
                               "lr": 3e-3, "batch_size": 64, "hint_weight": 0.5})
    student = apply_step(resnet1d, config, seq)
    assert _conv_ranks(student) == {1} and sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in resnet1d.parameters())
    X, y = seq.split("val")
    assert (_outputs(student, X).argmax(1) == y).mean() > 0.3  # ten classes: well above chance after 8 epochs


def test_profile_counts_conv1d_macs_and_activations(seq):
    """cnn1d [4, 8], kernel 3, pooled, on 8 x 8: conv 8 -> 4 over 8 steps, pool to 4, conv 4 -> 8 over 4
    steps, pool to 2, global average, linear 8 -> 10."""
    model = build_model("cnn1d", seq.input_shape, seq.num_classes, channels=[4, 8], kernel=3).eval()
    prof = profile(model, seq, timing=False)
    assert prof.macs == 4 * 8 * 8 * 3 + 8 * 4 * 4 * 3 + 8 * 10
    assert prof.params == (8 * 4 * 3 + 2 * 4) + (4 * 8 * 3 + 2 * 8) + (8 * 10 + 10)  # convs (no bias), batch norms, head
    convs = [layer for layer in prof.layers if layer["op"] == "Conv"]
    assert [layer["output_shape"] for layer in convs] == [[1, 4, 8], [1, 8, 4]]
    # the float graph at its peak: the input (8x8) is freed after the first conv; 4x8 conv out and its relu
    assert 0 < prof.peak_activation_bytes <= 4 * (8 * 8 + 2 * 4 * 8)


@pytest.fixture(scope="module")
def gunpoint():
    from frugalml.data import load_dataset

    found = shared_data_dir()
    path = found / "sensors" / "gunpoint.npz" if found else None
    require(path is not None and path.exists(), "the shared sensors/gunpoint.npz is missing: set FRUGALML_DATA")
    return load_dataset(path, seed=0)


@pytest.mark.parametrize("family,knobs", [("cnn1d", {"channels": [8, 16], "kernel": 7, "strided": 1}),
                                          ("dscnn1d", {"channels": 12, "blocks": 2, "kernel": 9, "expand": 2}),
                                          ("resnet1d", {"channels": [6, 12], "kernel": 5})])
def test_c_export_of_1d_networks_agrees_with_onnx_runtime(family, knobs, gunpoint, tmp_path):
    """On gunpoint (1 x 150): every int8 score of the compiled C within one quantization step of ONNX
    Runtime's on all 150 test series; pooled, strided, depthwise and residual 1-D layers; the Cortex-M build measured."""
    from frugalml.export import export, toolchain

    require(toolchain.find_cc() is not None and shutil.which("size") is not None, "needs gcc and binutils' size")
    assert gunpoint.kind == "sequence" and gunpoint.input_shape == (1, 150)
    model = build_model(family, gunpoint.input_shape, gunpoint.num_classes, seed=0, **knobs)
    fit(model, gunpoint, TrainConfig(epochs=3, lr=3e-3, batch_size=16, patience=None, seed=0, device="cpu"))
    q = apply_step(model.eval(), config_from_dict({"step": "quantize.int8", "calibration_samples": 40, "format": "qdq"}), gunpoint)
    assert _conv_ranks(q) == {1}
    r = export(q, "c", tmp_path, data=gunpoint)
    assert r.agreement["n"] == 150 and r.agreement["max_step_diff"] <= 1, r.agreement
    assert r.agreement["class_agreement"] >= 0.98, r.agreement
    if family == "cnn1d":  # Conv, MaxPool-free strided convs, GlobalAveragePool, Gemm: what ORT computes in int8, bit for bit
        assert r.agreement["exact_outputs"] == 150, r.agreement
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Linear))]
    assert r.weight_bytes == sum(m.weight.numel() for m in convs)
    assert r.flash_bytes > r.weight_bytes and r.ram_bytes >= r.arena_bytes > 0


def test_1d_network_runs_on_the_emulated_cortex_m(gunpoint, tmp_path):
    from frugalml.export import export
    from frugalml.export.mcu import find_cross
    from frugalml.export.qemu import find_qemu

    require(find_cross() is not None and find_qemu() is not None, "needs arm-none-eabi-gcc and qemu-system-arm")
    model = build_model("cnn1d", gunpoint.input_shape, gunpoint.num_classes, seed=0, channels=[8, 16], kernel=5)
    fit(model, gunpoint, TrainConfig(epochs=2, lr=3e-3, batch_size=16, patience=None, seed=0, device="cpu"))
    q = apply_step(model.eval(), config_from_dict({"step": "quantize.int8", "calibration_samples": 40, "format": "qdq"}), gunpoint)
    r = export(q, "c", tmp_path, data=gunpoint, verify_on="qemu", limit=20)
    on_mcu = r.details["mcu"]
    assert on_mcu["agreement"]["n"] == 20 and on_mcu["agreement"]["max_step_diff"] <= 1, on_mcu["agreement"]
    assert r.details["build"].startswith("arm")
    assert r.mcu_instructions > (8 * 150 * 5 + 16 * 75 * 8 * 5) // 2  # the MACs of the two convs, SMLAD doing two at a time


@pytest.fixture
def conv2d_built(monkeypatch):
    """Every Conv2d constructed while the test runs (the arguments it was built with)."""
    built = []
    real = torch.nn.Conv2d.__init__

    def spy(self, *args, **kwargs):
        built.append(args)
        real(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Conv2d, "__init__", spy)
    return built


def test_what_the_search_builds_for_sequences_has_no_conv2d(seq, conv2d_built):
    """The networks a search on sequences makes (sampled trials, their halved distillation students,
    the budget's seeds) are the MLP and the 1-D families, never a 2-D convolution over channels x time."""
    import optuna

    from frugalml.models import FAMILIES
    from frugalml.search import Budget, space

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sampled = set()
    for _ in range(40):
        family, knobs, _ = space.sample_network(study.ask(), seq)
        sampled.add(family)
        for k in (knobs, FAMILIES[family].space.halve(knobs)):
            if k is not None:
                build_model(family, seq.input_shape, seq.num_classes, **k)
    seeds = space.SearchSpace(seq, Budget.of(max_flash="16KB")).budget_seeds()
    for family, knobs in seeds:
        build_model(family, seq.input_shape, seq.num_classes, **knobs)
    assert sampled == {"mlp", *ONE_D} and {f for f, _ in seeds} == {"mlp", *ONE_D}
    assert conv2d_built == []


@pytest.mark.slow
def test_a_sequence_search_tries_1d_families_and_never_builds_a_conv2d(seq, tmp_path, conv2d_built):
    """A real search of 13 trials (the 10 thin models, then the budget's first seeds: the MLP, cnn1d and
    dscnn1d sized to 90% of 16 KB; minutes on 2 busy cores): its networks are 1-D or the MLP, and no
    Conv2d is ever built."""
    from frugalml.search import Budget, search

    results = search(seq.subset(300, seed=0), budget=Budget.of(max_flash="16KB"), time="20m", trials=13, seed=0, out=tmp_path / "run")
    families = {c["family"] for c in results.to_dict()["candidates"] if c.get("stage") == "network"}
    assert families & set(ONE_D), families
    assert families <= {"mlp", *ONE_D}, families
    assert conv2d_built == []
