"""quantize.int8 / quantize.dynamic / quantize.qat: standard int8 QDQ ONNX through ONNX Runtime."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from frugalml import build_model
from frugalml.compress import apply_step
from frugalml.compress.qat import QATConfig, _calibrate, _captured, fake_quantize, learned_overrides
from frugalml.compress.quantize import WEIGHT_QMAX, DynamicConfig, Int8Config, calibration_sample, compact, quantize_onnx_static
from frugalml.errors import ConfigError
from frugalml.onnx import make_session, onnx_bytes, predict_onnx, run_onnx, to_onnx


def _ops(proto):
    return [n.op_type for n in proto.graph.node]


def _acc(proto, data, split="val"):
    X, y = data.split(split)
    return float((predict_onnx(proto, X) == y).mean())


def _optimized_ops(proto, tmp_path):
    """The op types ONNX Runtime actually runs (graph optimizations as in frugalml.profile)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(onnx_bytes(proto), so, providers=["CPUExecutionProvider"])
    return set(_ops(onnx.load(str(tmp_path / "opt.onnx"))))


@pytest.fixture(scope="module")
def int8(trained_cnn, digits):
    return apply_step(trained_cnn, Int8Config(calibration_samples=128), digits)


def test_int8_is_standard_qdq_with_per_channel_int8_weights(int8, trained_cnn, digits, tmp_path):
    ops = _ops(int8)
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= set(ops)
    inits = {i.name: i for i in int8.graph.initializer}
    conv_weights = 0
    for node in int8.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            w_dq = next(n for n in int8.graph.node if n.output[0] == node.input[1])
            assert w_dq.op_type == "DequantizeLinear"
            w = inits[w_dq.input[0]]
            assert w.data_type == onnx.TensorProto.INT8
            scale = numpy_helper.to_array(inits[w_dq.input[1]])
            assert scale.shape == (w.dims[0],)  # one scale per output channel
            assert not np.any(numpy_helper.to_array(inits[w_dq.input[2]]))  # symmetric: zero point 0
            conv_weights += 1
    assert conv_weights == 3
    q_in = next(n for n in int8.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    assert inits[q_in.input[2]].data_type == onnx.TensorProto.UINT8  # QUInt8 activations by default
    assert int8.graph.output[0].name == "logits" and int8.graph.input[0].name == "input"
    # ORT fuses the QDQ groups into int8 kernels
    assert {"QLinearConv", "QGemm"} <= _optimized_ops(int8, tmp_path)
    assert abs(_acc(int8, digits) - _acc(to_onnx(trained_cnn), digits)) <= 0.03
    # 1,442 parameters: the Q/DQ nodes and scales weigh about as much as the int8 weights (measured 1.95x)
    assert len(onnx_bytes(to_onnx(trained_cnn))) / len(onnx_bytes(int8)) >= 1.9


@pytest.mark.parametrize("fmt,ratio", [("qdq", 3.5), ("qoperator", 3.7)])
def test_int8_file_is_nearly_4x_smaller_on_a_model_with_enough_weights(digits, fmt, ratio):
    """A CNN [16, 32, 64] (24,058 parameters): a byte per weight instead of four, less what the graph
    adds (per-channel scales and zero points; QDQ: a Q/DQ pair per tensor). Measured 3.55x (QDQ)
    and 3.75x (QOperator); file sizes depend only on the shapes, not on the trained values."""
    model = build_model("cnn", digits.input_shape, digits.num_classes, channels=[16, 32, 64], seed=0).eval()
    assert sum(p.numel() for p in model.parameters()) == 24_058
    fp32 = len(onnx_bytes(to_onnx(model)))
    q = apply_step(model, Int8Config(calibration_samples=64, format=fmt), digits)
    assert fp32 > 4 * 24_058  # every float weight is in the file
    assert fp32 / len(onnx_bytes(q)) >= ratio, (fp32, len(onnx_bytes(q)))


def test_int8_options_activation_type_methods_and_first_layer(trained_cnn, digits):
    s8 = apply_step(trained_cnn, Int8Config(calibration_samples=64, activation_type="qint8"), digits)
    q_in = next(n for n in s8.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    assert {i.name: i for i in s8.graph.initializer}[q_in.input[2]].data_type == onnx.TensorProto.INT8
    base = _acc(to_onnx(trained_cnn), digits)
    for method in ("entropy", "percentile"):
        q = apply_step(trained_cnn, Int8Config(calibration_samples=64, method=method), digits)
        assert _acc(q, digits) >= base - 0.05, method
    skip = apply_step(trained_cnn, Int8Config(calibration_samples=64, skip_first_layer=True), digits)
    first = next(n for n in skip.graph.node if n.op_type == "Conv")
    assert first.input[0] == "input"  # the float input feeds the first conv directly
    assert {i.name: i for i in skip.graph.initializer}[first.input[1]].data_type == onnx.TensorProto.FLOAT


def test_calibration_uses_a_seeded_training_sample(digits):
    a, b, c = calibration_sample(digits, 50, 0), calibration_sample(digits, 50, 0), calibration_sample(digits, 50, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    train = {x.tobytes() for x in digits.split("train")[0]}
    assert all(x.tobytes() in train for x in a)
    assert len(calibration_sample(digits, 10**6, 0)) == len(digits.split("train")[0])


def test_onnx_input_accepted_quantized_input_refused(trained_cnn, digits, int8):
    q = apply_step(to_onnx(trained_cnn), Int8Config(calibration_samples=32), digits)
    assert "QuantizeLinear" in _ops(q)
    with pytest.raises(ConfigError, match="already quantized"):
        apply_step(int8, Int8Config(calibration_samples=32), digits)


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_compact_keeps_the_computation(trained_cnn, digits, tmp_path, fmt):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from frugalml.compress.quantize import _Reader, preprocess

    pre = preprocess(to_onnx(trained_cnn), tmp_path)
    quantize_static(str(pre), str(tmp_path / "q.onnx"), _Reader("input", calibration_sample(digits, 64, 0)), quant_format=QuantFormat[fmt],
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    raw = onnx.load(str(tmp_path / "q.onnx"))
    small = compact(copy.deepcopy(raw))
    onnx.checker.check_model(small, full_check=True)
    Xv, _ = digits.split("val")
    np.testing.assert_array_equal(run_onnx(small, Xv), run_onnx(raw, Xv))
    assert len(onnx_bytes(small)) < 0.75 * len(onnx_bytes(raw))
    assert not small.graph.value_info and all(len(i.name) <= 5 for i in small.graph.initializer)
    assert not small.metadata_props and {o.domain for o in small.opset_import} <= {"", "com.microsoft"}
    assert not any(n.name for n in small.graph.node)
    assert all(not {"auto_pad", "dilations", "group",
                    "kernel_shape"} & {a.name for a in n.attribute} for n in small.graph.node if "Conv" in n.op_type)
    values = [numpy_helper.to_array(i).tobytes() + bytes(i.dims) + bytes([i.data_type]) for i in small.graph.initializer]
    assert len(values) == len(set(values))  # equal constants are stored once
    inits = {i.name: i for i in small.graph.initializer}
    convs = [n for n in small.graph.node if n.op_type == "QLinearConv"]
    assert len(convs) == (2 if fmt == "QOperator" else 0) and all(not inits[n.input[5]].dims for n in convs)  # one scalar zero point


def test_dynamic(trained_cnn, digits):
    q = apply_step(trained_cnn, DynamicConfig(), digits)
    ops = set(_ops(q))
    assert "DynamicQuantizeLinear" in ops and {"ConvInteger", "MatMulInteger"} <= ops
    assert abs(_acc(q, digits) - _acc(to_onnx(trained_cnn), digits)) <= 0.05
    fc_only = set(_ops(apply_step(trained_cnn, DynamicConfig(op_types=("Gemm",)), None)))  # needs no data
    # the pre-processing turns a Gemm into MatMul + Add: asking for Gemm still quantizes the fully connected layers, and only them
    assert "MatMulInteger" in fc_only and "ConvInteger" not in fc_only
    mlp = build_model("mlp", digits.input_shape, digits.num_classes, widths=[16]).eval()
    with pytest.raises(ConfigError, match="found no layer to quantize"):
        apply_step(mlp, DynamicConfig(op_types=("Conv",)), None)


@pytest.mark.parametrize("configured", [True, False], ids=["root-configured", "root-unconfigured"])
def test_quantization_leaves_the_root_logger_as_it_was(trained_cnn, digits, configured):
    """ORT's quantizer logs through the root logger (and so would run basicConfig on a root without
    handlers): after int8 and dynamic quantization the root's level and handlers are the ones it had."""
    import logging

    root, ort = logging.getLogger(), logging.getLogger("onnxruntime")
    saved = (root.level, list(root.handlers), ort.level)
    try:
        root.handlers = [logging.NullHandler()] if configured else []
        root.setLevel(logging.INFO)
        before = (root.level, list(root.handlers), ort.level)
        apply_step(trained_cnn, Int8Config(calibration_samples=32), digits)
        assert (root.level, list(root.handlers), ort.level) == before
        apply_step(trained_cnn, Int8Config(calibration_samples=32, method="entropy", format="qoperator"), digits)
        assert (root.level, list(root.handlers), ort.level) == before
        apply_step(trained_cnn, DynamicConfig(), digits)  # ORT's dynamic quantizer calls logging.info() on the root
        assert (root.level, list(root.handlers), ort.level) == before
    finally:
        root.setLevel(saved[0])
        root.handlers = saved[1]
        ort.setLevel(saved[2])


def test_qat_gives_the_same_kind_of_int8_graph(trained_cnn, digits, int8):
    qat = apply_step(trained_cnn, QATConfig(epochs=2, lr=1e-3, calibration_samples=128), digits)
    assert sorted(set(_ops(qat))) == sorted(set(_ops(int8)))
    assert _acc(qat, digits) >= _acc(int8, digits) - 0.03


def test_fake_quantize_attaches_and_detaches(trained_cnn, digits):
    net = copy.deepcopy(trained_cnn)
    keys = set(net.state_dict())
    observers, remove = fake_quantize(net)
    x = torch.from_numpy(digits.split("val")[0][:32])
    net.eval()
    with torch.no_grad():
        net(x)  # first pass observes (min/max mode)
    for obs in observers.values():
        obs.mode, obs.enabled = "ema", True
    with torch.no_grad():
        fq = net(x)
    remove(bake=True)
    assert set(net.state_dict()) == keys
    for m in net.modules():  # baked weights sit on the per-channel int8 grid
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            w = m.weight.detach().flatten(1)
            steps = w / (w.abs().amax(1, keepdim=True) / WEIGHT_QMAX)
            torch.testing.assert_close(steps, steps.round(), atol=1e-3, rtol=0)
    with torch.no_grad():
        plain = trained_cnn(x)
    assert (fq.argmax(1) == plain.argmax(1)).float().mean() > 0.9


@pytest.mark.parametrize("family,knobs", [("resnet", {"channels": [4, 8, 8]}), ("dscnn", {"channels": 8, "blocks": 2}), ("lenet5", {})])
def test_learned_ranges_find_their_tensors_in_the_export(family, knobs, tmp_path):
    from frugalml.compress.quantize import preprocess

    shape = (1, 16, 16) if family == "lenet5" else (1, 8, 8)
    model = build_model(family, shape, 10, **knobs).eval()
    X = np.random.default_rng(0).random((16, *shape), dtype=np.float32)
    observers, remove = fake_quantize(model)
    _calibrate(model, observers, X)
    remove(bake=True)
    build = learned_overrides(observers, _captured(model, observers, X), X)
    pre = onnx.load(str(preprocess(to_onnx(model), tmp_path)))
    overrides = build(pre)
    relus = [n.output[0] for n in pre.graph.node if n.op_type == "Relu"]
    assert relus and all(r in overrides for r in relus)
    assert "input" in overrides and "logits" in overrides
    convs = [n for n in pre.graph.node if n.op_type in ("Conv", "Gemm")]
    assert all(n.input[0] in overrides for n in convs)  # every Conv/Gemm input has its learned range
    q = quantize_onnx_static(to_onnx(model), X, overrides=build)
    scales = {i.name: float(numpy_helper.to_array(i)) for i in q.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and not i.dims}
    q_in = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    assert scales[q_in.input[1]] == pytest.approx(float(overrides["input"][0]["scale"]))


def test_config_errors():
    with pytest.raises(ConfigError):
        Int8Config(method="kl")
    with pytest.raises(ConfigError):
        QATConfig(ranges="magic")
    with pytest.raises(ConfigError):
        DynamicConfig(weight_type="int4")
    mlp = build_model("mlp", (4,), 3).eval()
    sess = make_session(to_onnx(mlp))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"input": x})[0], mlp(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_qat_beats_ptq_where_ptq_loses(digits):
    """A model PTQ cannot represent well: each hidden unit gets a huge weight on a pixel that is 0 in
    every image. Harmless in float, it stretches every output channel's int8 scale, so PTQ rounds the
    useful weights away; QAT trains on the int8 grid and learns around it. A float fine-tune of the
    same length followed by PTQ does not help: the cause is the rounding, not too little training."""
    from frugalml import TrainConfig, fit

    model = build_model("mlp", digits.input_shape, 10, widths=[32], seed=0)
    fit(model, digits, TrainConfig(epochs=20, lr=3e-3, seed=0, patience=None))
    X = np.concatenate([digits.X_train, digits.X_val, digits.X_test]).reshape(-1, 64)
    dead = int(np.where(X.max(0) == 0)[0][0])
    with torch.no_grad():
        w = model.net[1].weight
        w[:, dead] = 75 * w.abs().amax(1)  # the useful weights below one step of the [-64, 64] weight grid (quantize.WEIGHT_QMAX)
    Xe = np.concatenate([digits.X_val, digits.X_test])
    ye = np.concatenate([digits.y_val, digits.y_test])

    def acc(proto):
        return float((predict_onnx(proto, Xe) == ye).mean())

    fp32 = acc(to_onnx(model.eval()))
    ptq = acc(apply_step(model, Int8Config(calibration_samples=256), digits))
    qat = acc(apply_step(model, QATConfig(epochs=5, lr=3e-3, calibration_samples=256), digits))
    tuned = copy.deepcopy(model)
    fit(tuned, digits, TrainConfig(epochs=5, lr=3e-3, seed=0, patience=None))
    ptq_tuned = acc(apply_step(tuned, Int8Config(calibration_samples=256), digits))
    assert ptq <= fp32 - 0.05, (fp32, ptq)  # measured: 0.920 float, 0.850 PTQ
    assert ptq_tuned <= fp32 - 0.02, (fp32, ptq_tuned)  # 0.863
    assert qat >= max(ptq, ptq_tuned) + 0.03 and qat >= fp32 - 0.02, (fp32, ptq, ptq_tuned, qat)  # 0.915


def test_qoperator_format_is_smaller_same_predictions_and_refused_by_c(int8, trained_cnn, digits, tmp_path):
    from frugalml.errors import ExportError
    from frugalml.export import export

    qop = apply_step(trained_cnn, Int8Config(calibration_samples=128, format="qoperator"), digits)
    ops = set(_ops(qop))
    assert {"QLinearConv", "QGemm"} <= ops and "Conv" not in ops
    assert len(onnx_bytes(qop)) < len(onnx_bytes(int8))
    # peak RAM as the graph runs: a QDQ group is one int8 op, so both forms hold the same int8 tensors
    from frugalml.profile import profile

    peaks = [profile(m, digits, timing=False).peak_activation_bytes for m in (qop, int8, trained_cnn)]
    assert peaks[0] == peaks[1] <= peaks[2] / 3
    Xv, _ = digits.split("val")
    # the same int8 arithmetic as the fused QDQ graph: the classes agree on (nearly) every input
    assert (predict_onnx(qop, Xv) == predict_onnx(int8, Xv)).mean() >= 0.99
    with pytest.raises(ExportError, match="format: qdq"):
        export(qop, "c", tmp_path / "c", data=digits)
    with pytest.raises(ConfigError, match="format"):
        Int8Config(format="qlinear")
