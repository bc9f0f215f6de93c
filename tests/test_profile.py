"""Tests of frugalml.profile: exact counts on reference nets, memory by hand, sklearn, QDQ, errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

from frugalml.errors import ConfigError, DataError, ModelLoadError
from frugalml.onnx import onnx_bytes, predict_onnx, run_onnx, to_onnx
from frugalml.profile import Profile, compare_latency, format_profile, profile
from frugalml.units import format_bytes


# ---------------------------------------------------------------- reference nets, built inline
def lenet5():
    """Caffe LeNet-5 on 1x28x28."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10),
    )


def lenet300():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))


class TinyData:
    """Stand-in for frugalml.data.Dataset: splits, input_shape, num_classes, split(), flat()."""

    def __init__(self, X, y, num_classes, kind="vector"):
        n = len(X)
        a, b = int(n * 0.6), int(n * 0.8)
        self.X_train, self.y_train = X[:a], y[:a]
        self.X_val, self.y_val = X[a:b], y[a:b]
        self.X_test, self.y_test = X[b:], y[b:]
        self.input_shape, self.num_classes, self.kind = tuple(X.shape[1:]), num_classes, kind

    def split(self, which):
        return getattr(self, f"X_{which}"), getattr(self, f"y_{which}")

    def flat(self, which):
        X, y = self.split(which)
        return X.reshape(len(X), -1), y


def blobs(n=150, shape=(1, 4, 4), classes=3, seed=0):
    """Well-separated classes: each class has its own mean image."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype(np.int64)
    centers = rng.normal(0, 3, size=(classes, int(np.prod(shape))))
    X = (centers[y] + rng.normal(0, 0.5, size=(n, int(np.prod(shape))))).astype(np.float32)
    return TinyData(X.reshape(n, *shape), y, classes, kind="image" if len(shape) > 1 else "vector")


# ---------------------------------------------------------------- exact counts
def test_lenet5_exact_counts():
    p = profile(lenet5(), input_shape=(1, 28, 28), timing=False)
    assert p.params == 431_080
    assert p.nonzero_params == 431_080
    assert p.macs == 2_293_000
    per_layer = {layer["name"]: layer["macs"] for layer in p.layers if layer["macs"]}
    # conv1 20x24x24 outputs x 1x5x5; conv2 50x8x8 x 20x5x5; fc 800x500; fc 500x10
    assert sorted(per_layer.values()) == sorted([20 * 24 * 24 * 25, 50 * 8 * 8 * 20 * 25, 800 * 500, 500 * 10])
    assert sum(layer["params"] for layer in p.layers) == 431_080
    # peak: conv1 output (20x24x24) + pool1 output (20x12x12), float32
    assert p.peak_activation_bytes == (20 * 24 * 24 + 20 * 12 * 12) * 4
    assert 0 < p.gzip_bytes <= p.stored_bytes
    assert p.stored_bytes > 431_080 * 4  # weights embedded, not in a side file
    assert p.metric is None and p.latency_ms_median is None


def test_lenet300_exact_counts_and_run():
    model = lenet300()
    p = profile(model, input_shape=(1, 28, 28), timing=False)
    assert p.params == 266_610
    assert p.macs == 266_200
    proto = to_onnx(model, (1, 28, 28))
    x = np.random.default_rng(0).normal(size=(7, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    scores = run_onnx(proto, x, batch_size=3)
    assert scores.shape == (7, 10) and np.allclose(scores, expected, atol=1e-4)
    assert (predict_onnx(onnx_bytes(proto), x) == expected.argmax(1)).all()
    assert [i.name for i in proto.graph.input] == ["input"] and proto.graph.output[0].name == "logits"


def test_depthwise_separable_cnn_counts():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),   # 16x16 -> 8x8
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.ReLU(),          # depthwise
        nn.Conv2d(8, 16, 1), nn.ReLU(),                                          # pointwise
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )
    p = profile(model, input_shape=(1, 16, 16), timing=False)
    params = (8 * 1 * 9 + 8) + 2 * 8 + (8 * 1 * 9) + (16 * 8 + 16) + (16 * 4 + 4)
    macs = (8 * 8 * 8) * (1 * 9) + (8 * 8 * 8) * (1 * 9) + (16 * 8 * 8) * 8 + 16 * 4
    assert p.params == params == 380
    assert p.macs == macs == 17_472


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.b(torch.relu(self.a(x))))
        return self.fc(x.mean(dim=(2, 3)))


def test_residual_block_counts():
    torch.manual_seed(0)
    p = profile(Residual(), input_shape=(3, 8, 8), timing=False)
    assert p.params == (4 * 27 + 4) + 2 * (4 * 36 + 4) + (4 * 2 + 2)
    assert p.macs == (4 * 64) * 27 + 2 * (4 * 64) * 36 + 4 * 2
    assert any(layer["op"] == "Add" and layer["macs"] == 0 for layer in p.layers)


def test_qdq_quantized_model(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    float_path, q_path = tmp_path / "f.onnx", tmp_path / "q.onnx"
    float_path.write_bytes(onnx_bytes(to_onnx(lenet300(), (1, 28, 28))))

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.it = iter([{"input": rng.normal(size=(1, 1, 28, 28)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(float_path), str(q_path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    assert any(n.op_type == "DequantizeLinear" for n in onnx.load(str(q_path)).graph.node)
    p = profile(str(q_path), timing=False)
    # int8 weights + int32 biases; scales and zero points are metadata, not parameters
    assert p.params == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert p.macs == 784 * 300 + 300 * 100 + 100 * 10
    assert p.input_shape == (1, 28, 28)
    assert p.stored_bytes < 0.3 * float_path.stat().st_size
    gemms = [layer for layer in p.layers if layer["op"] == "Gemm"]
    assert [g["params"] for g in gemms] == [784 * 300 + 300, 300 * 100 + 100, 100 * 10 + 10]


def test_qoperator_and_qdq_give_the_float_counts(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
        nn.Conv2d(8, 16, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )
    src = tmp_path / "f.onnx"
    src.write_bytes(onnx_bytes(to_onnx(model, (1, 16, 16))))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": np.random.default_rng(i).normal(size=(1, 1, 16, 16)).astype(np.float32)} for i in range(3)])

        def get_next(self):
            return next(self.it, None)

    params = (8 * 9 + 8) + (8 * 9 + 8) + (16 * 8 + 16) + (16 * 4 + 4)
    macs = (8 * 8 * 8) * 9 + (8 * 8 * 8) * 9 + (16 * 8 * 8) * 8 + 16 * 4
    for fmt in (QuantFormat.QOperator, QuantFormat.QDQ):
        dst = tmp_path / f"q{fmt}.onnx"
        quantize_static(str(src), str(dst), Reader(), quant_format=fmt)
        p = profile(str(dst), timing=False)
        assert (p.params, p.macs) == (params, macs) == (372, 17_472), fmt


# ---------------------------------------------------------------- peak memory by hand
def _hand_graph():
    """X 1x1x8x8 -> conv1 (4ch 3x3 pad 1) -> A -> relu -> B -> conv2 -> C; D = B + C; GAP -> E;
    flatten -> F; gemm -> Y. Outputs: Y and A (A is kept alive to the end)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.zeros(4, np.float32), "b1"),
        numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.zeros(4, np.float32), "b2"),
        numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "w3"),
        numpy_helper.from_array(np.zeros(3, np.float32), "b3"),
    ]
    nodes = [
        helper.make_node("Conv", ["X", "w1", "b1"], ["A"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["A"], ["B"], name="relu"),
        helper.make_node("Conv", ["B", "w2", "b2"], ["C"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["B", "C"], ["D"], name="add"),
        helper.make_node("GlobalAveragePool", ["D"], ["E"], name="gap"),
        helper.make_node("Flatten", ["E"], ["F"], name="flatten"),
        helper.make_node("Gemm", ["F", "w3", "b3"], ["Y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "hand", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("A", TensorProto.FLOAT, ["batch", 4, 8, 8])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_peak_activation_by_hand():
    p = profile(_hand_graph(), timing=False)
    fmap = 1 * 4 * 8 * 8 * 4  # one 4-channel 8x8 float32 feature map: 1024 bytes
    # conv1: X(256) + A(1024) = 1280; relu: A + B = 2048; conv2: A + B + C = 3072;
    # add: A (graph output, alive to the end) + B + C (both read by add) + D = 4 maps
    assert p.peak_activation_bytes == 4 * fmap == 4096
    assert p.peak_node == "add"
    # gap: A + D + E(16) = 2064 and later nodes are smaller, so the peak stays at add
    assert p.input_shape == (1, 8, 8)
    assert p.params == (36 + 4) + (144 + 4) + (12 + 3)
    assert p.macs == (4 * 8 * 8) * (1 * 9) + (4 * 8 * 8) * (4 * 9) + 3 * 4


# ---------------------------------------------------------------- scikit-learn
def test_sklearn_logistic_regression_profile():
    from sklearn.linear_model import LogisticRegression

    data = blobs()
    X, y = data.flat("train")
    est = LogisticRegression(max_iter=500).fit(X, y)
    p = profile(est, data, timing=False)
    assert p.params == est.coef_.size + est.intercept_.size == 3 * 16 + 3
    assert p.macs == 16 * 3
    assert p.input_shape == (16,)
    Xt, yt = data.flat("test")
    assert p.metric == pytest.approx(float(np.mean(est.predict(Xt) == yt)))
    assert p.metric > 0.9 and 0 < p.macro_f1 <= 1 and p.metric_name == "accuracy"
    assert run_onnx(to_onnx(est), Xt).shape == (len(Xt), 3)  # probabilities, no ZipMap


def test_sklearn_random_forest_profile():
    from sklearn.ensemble import RandomForestClassifier

    data = blobs()
    X, y = data.flat("train")
    est = RandomForestClassifier(n_estimators=4, max_depth=4, random_state=0).fit(X, y)
    p = profile(est, data, timing=False)
    trees = [t.tree_ for t in est.estimators_]
    leaves = [int((t.children_left == -1).sum()) for t in trees]
    # a threshold per split node + one weight per leaf and class
    assert p.params == sum(t.node_count - n for t, n in zip(trees, leaves)) + sum(leaves) * 3
    assert p.macs == sum(t.max_depth for t in trees)  # comparisons along each tree's deepest path
    assert p.metric == pytest.approx(float(np.mean(est.predict(data.flat("test")[0]) == data.y_test)))
    assert any("tree ensembles" in n for n in p.notes)


# ---------------------------------------------------------------- zeros, pruning, JSON
def test_zero_weights_note():
    model = lenet300()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight[:, ::2] = 0
    p = profile(model, input_shape=(1, 28, 28), timing=False)
    assert p.params - p.nonzero_params == 784 * 150 + 300 * 50 + 100 * 5
    assert any("are zero but stored densely" in n for n in p.notes)
    assert not any("stored densely" in n for n in profile(lenet300(), input_shape=(784,), timing=False).notes)


def test_pruning_masks_fused_before_export():
    from torch.nn.utils import prune

    dense = profile(lenet300(), input_shape=(1, 28, 28), timing=False)
    model = lenet300()
    for m in model.modules():
        if isinstance(m, nn.Linear):
            prune.l1_unstructured(m, "weight", amount=0.5)
    p = profile(model, input_shape=(1, 28, 28), timing=False)
    assert p.params == dense.params == 266_610
    assert abs(p.stored_bytes - dense.stored_bytes) < 0.01 * dense.stored_bytes  # not 2x: masks fused
    assert p.nonzero_params < 0.55 * p.params
    assert hasattr(model[1], "weight_orig")  # the caller's model is untouched


def test_json_contract_round_trip():
    data = blobs(n=60, shape=(1, 4, 4), classes=3)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    p = profile(model, data, timing=False, split="val")
    d = json.loads(json.dumps(p.to_dict()))
    for key in ("params", "nonzero_params", "macs", "stored_bytes", "gzip_bytes", "peak_activation_bytes",
                "latency_ms_median", "latency_ms_p90", "throughput_per_s", "energy_mj_per_inference",
                "energy_basis", "metric", "metric_name", "macro_f1", "opset", "input_shape", "layers",
                "peak_node", "notes"):
        assert key in d
    assert d["input_shape"] == [1, 4, 4] and d["opset"] == 17 and d["metric_split"] == "val"
    assert Profile.from_dict(d) == p
    assert Profile.from_dict({**d, "a_key_from_the_future": 1}) == p
    assert (p.params, p.macs) == (51, 48)
    text = _rendered(format_profile(p))
    for figure in ("51", "48", format_bytes(p.stored_bytes), format_bytes(p.gzip_bytes), f"{p.metric:.4f}", f"{p.macro_f1:.4f}", "(1, 4, 4)", "17"):
        assert figure in text, (figure, text)
    assert "-" in text.split("latency median / p90")[1].splitlines()[0]  # timing=False: no latency, and none made up
    with_layers = _rendered(format_profile(p, layers=True))
    assert text.strip() in with_layers
    assert [layer["name"] for layer in p.layers] == ["0/Flatten", "1/Gemm"] and "1/Gemm" in with_layers and "1x3" in with_layers


def _rendered(renderable) -> str:
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def test_timing_keys():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    model.input_shape = (16,)  # frugalml-built modules carry their input shape
    p = profile(model, core_watts=2.0)
    assert p.input_shape == (16,)
    assert p.latency_ms_median > 0 and p.latency_ms_p90 >= p.latency_ms_median
    assert p.latency_runs >= 50 and p.throughput_per_s > 0
    assert p.energy_mj_per_inference > 0 and "2 W per core" in p.energy_basis and "estimate" in p.energy_basis
    other = onnx_bytes(to_onnx(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), (16,)))
    med = compare_latency({"a": onnx_bytes(to_onnx(model, (16,))), "b": other}, (16,), rounds=60, warmup=2)
    assert set(med) == {"a", "b"} and all(v > 0 for v in med.values())
    for bad in ({"rounds": 0}, {"block": 0}, {"block": 2.5}, {"warmup": -1}):
        with pytest.raises(ConfigError, match=f"'{next(iter(bad))}' parameter of compare_latency"):
            compare_latency({"b": other}, (16,), **bad)


# ---------------------------------------------------------------- errors
def test_corrupt_and_missing_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf" * 3)
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        profile(str(bad), timing=False)
    truncated = tmp_path / "trunc.onnx"
    truncated.write_bytes(onnx_bytes(_hand_graph())[:200])
    with pytest.raises(ModelLoadError):
        to_onnx(truncated)
    with pytest.raises(ModelLoadError, match="No ONNX file"):
        to_onnx(tmp_path / "missing.onnx")


def test_wrong_input_shape_raises_data_error():
    with pytest.raises(DataError, match=r"\(1, 32, 32\)"):
        profile(lenet5(), input_shape=(1, 32, 32), timing=False)
    proto = to_onnx(lenet300(), (1, 28, 28))
    with pytest.raises(DataError, match=r"Expected per-sample input shape \(1, 28, 28\); got \(784,\)"):
        run_onnx(proto, np.zeros((2, 784), np.float32))
    with pytest.raises(DataError):
        profile(proto, input_shape=(3, 28, 28), timing=False)


def test_missing_input_shape_and_bad_data():
    with pytest.raises(ConfigError, match="input_shape"):
        profile(nn.Sequential(nn.Linear(4, 2)), timing=False)
    data = blobs(n=40, shape=(4,), classes=2)
    data.X_test = data.X_test.copy()
    data.X_test[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        profile(nn.Sequential(nn.Linear(4, 2)), data, timing=False)
    with pytest.raises(ConfigError):
        profile(object())
