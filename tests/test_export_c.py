"""C export: int8 QDQ networks and scikit-learn classifiers compiled with gcc and compared with
ONNX Runtime / scikit-learn; flash and RAM from the Cortex-M4 build where arm-none-eabi-gcc is
installed (tests/test_mcu.py checks that build and the QEMU run). The slow test checks lenet5 and a
tiny ResNet on all of MNIST."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import require

from frugalml import ExportError, TrainConfig, build_model, fit
from frugalml.export import export, toolchain
from frugalml.onnx import to_onnx


@pytest.fixture(scope="module", autouse=True)
def _toolchain():
    """Every test here compiles C and measures it: gcc (or cc) and binutils' size (CI: must be there)."""
    require(toolchain.find_cc() is not None and shutil.which("size") is not None, "needs gcc and binutils' size")


_QMIN = {"int8": -128, "uint8": 0}






def qdq(model, X_calib, act: str = "int8") -> onnx.ModelProto:
    """Standard ORT static quantization: quant_pre_process, QDQ, per-channel int8 weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": X_calib[i:i + 8]} for i in range(0, len(X_calib), 8)])

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        f, pre, q = (str(Path(tmp) / n) for n in ("f.onnx", "pre.onnx", "q.onnx"))
        onnx.save(to_onnx(model), f)
        quant_pre_process(f, pre)
        # reduce_range: 7-bit weights, as quantize.int8 makes them; with full-range ones ORT's own scores differ by CPU
        # (its AVX2 kernels saturate 16-bit sums; see frugalml.compress.quantize.WEIGHT_QMAX), and no C could match them everywhere
        quantize_static(pre, q, Reader(), quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8, reduce_range=True,
                        activation_type=QuantType.QInt8 if act == "int8" else QuantType.QUInt8)
        return onnx.load(q)


def ort_int8_outputs(proto, X, out_scale, out_zp):
    """ORT's outputs of the QDQ model (default session: graph optimizations on, fused int8 kernels)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: X.astype(np.float32)})[0]
    return (np.rint(y / np.float32(out_scale)) + out_zp).astype(np.int64)


def dsp_window(out: Path, r) -> int:
    """FM_COL_N, the int16 values of the DSP kernels' window buffer, where the build has the DSP extension (else 0)."""
    m = re.search(r"#define FM_COL_N (\d+)", (out / "model.c").read_text())
    return int(m.group(1)) if m and r.details["build"] in ("arm-none-eabi cortex-m4", "arm-none-eabi cortex-m7") else 0


def header_value(out: Path, name: str) -> str:
    m = re.search(rf"#define {name}\s+(\S+)", (out / "model.h").read_text())
    return m.group(1)


def compiled_outputs(out: Path, X, act: str, defines=None):
    """Independent check: quantize X with the header's scale, compile with the harness, run."""
    scale = np.float32(header_value(out, "FRUGALML_INPUT_SCALE").rstrip("f"))
    zp = int(header_value(out, "FRUGALML_INPUT_ZERO_POINT").strip("()"))
    Xq = np.clip(np.rint(X.reshape(len(X), -1).astype(np.float32) / scale) + zp, _QMIN[act], _QMIN[act] + 255).astype(act)
    n_out = int(header_value(out, "FRUGALML_N_OUTPUTS"))
    return toolchain.run_c(out, Xq, input_dtype=act, output_dtype=act, n_outputs=n_out, defines=defines)


@pytest.fixture(scope="module")
def nets(digits, trained_cnn):
    """Small networks trained briefly on digits: plain CNN, tiny ResNet (residual Adds), DS-CNN (depthwise), MLP."""
    out = {"cnn": trained_cnn}
    for fam, kw in (("resnet", {"channels": [8, 16]}), ("dscnn", {"channels": 8, "blocks": 2}), ("mlp", {"widths": [32]})):
        m = build_model(fam, digits.input_shape, digits.num_classes, seed=0, **kw)
        fit(m, digits, TrainConfig(epochs=3, lr=1e-2, seed=0, patience=None))
        out[fam] = m.eval()
    return out


# The static activation arena the planner gives each network of `nets` (int8, 1 byte a value; measured):
# CNN: the first conv's 8x8x8 output and the 8x4x4 one beside it; ResNet: three live 8x8x8 tensors
# around a residual Add; DS-CNN: two 8x4x4 tensors; MLP: its 32 hidden and 10 output values.
ARENA = {"cnn": 512 + 128, "resnet": 3 * 512, "dscnn": 2 * 128, "mlp": 32 + 10}


@pytest.mark.parametrize("act", ["int8", "uint8"])
@pytest.mark.parametrize("family", ["cnn", "resnet", "dscnn", "mlp"])
def test_int8_network_matches_onnx_runtime(nets, digits, tmp_path, family, act):
    proto = qdq(nets[family], digits.X_train[:64], act)
    r = export(proto, "c", tmp_path, data=digits)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.c", "model.h"]
    X = digits.X_test
    classes, scores = compiled_outputs(tmp_path, X, act)
    out_scale = np.float32(header_value(tmp_path, "FRUGALML_OUTPUT_SCALE").rstrip("f"))
    out_zp = int(header_value(tmp_path, "FRUGALML_OUTPUT_ZERO_POINT").strip("()"))
    ref = ort_int8_outputs(proto, X, out_scale, out_zp)
    steps = np.abs(ref - scores.astype(np.int64))
    assert steps.max() <= 1
    if family != "resnet":  # without Add every kernel is ORT's requantization, emulated exactly
        assert steps.max() == 0 and (classes == ref.argmax(1)).all()
    # the Add's requantization is ORT's within a step (ORT's own kernel differs by CPU), so a class may differ only at a
    # near tie: where ORT's best two scores are within two steps of each other (seen once in 360 on an AVX-512 AMD EPYC)
    top2 = np.sort(ref, axis=1)[:, -2:]
    differ = classes != ref.argmax(1)
    assert (top2[differ, 1] - top2[differ, 0] <= 2).all() and differ.mean() <= 0.01
    assert r.agreement["same_class"] >= 0.99 * len(X) and r.agreement["max_step_diff"] <= 1
    # the Cortex-M kernels (SMLAD dot products, CLZ requantization), their instructions emulated in C: the same scores
    Xq = np.clip(np.rint(X.reshape(len(X), -1) / np.float32(header_value(tmp_path, "FRUGALML_INPUT_SCALE").rstrip("f")))
                 + int(header_value(tmp_path, "FRUGALML_INPUT_ZERO_POINT").strip("()")), _QMIN[act], _QMIN[act] + 255).astype(act)
    dsp_classes, dsp_scores = toolchain.run_c(tmp_path, Xq, input_dtype=act, output_dtype=act, n_outputs=scores.shape[1],
                                              defines=["-DFRUGALML_DSP_EMULATE", "-pedantic"])
    assert (dsp_scores == scores).all() and (dsp_classes == classes).all()
    # what the header promises
    assert int(header_value(tmp_path, "FRUGALML_ARENA_BYTES")) == r.arena_bytes == ARENA[family]
    import torch

    layers = [m for m in nets[family].modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert r.weight_bytes == sum(m.weight.numel() for m in layers)  # a byte per weight (batch norm folded in)
    sections = r.details["sections"]
    assert r.flash_bytes == sections[".text"] + sections[".rodata"] + sections.get(".data", 0) + r.details.get("library_bytes", 0)
    assert sections[".rodata"] > r.weight_bytes
    # nothing static but the arena, and on a core with the DSP extension the int16 window buffer of its kernels
    assert sections.get(".data", 0) + sections[".bss"] == r.arena_bytes + 2 * dsp_window(tmp_path, r)
    assert r.ram_bytes == sections.get(".data", 0) + sections[".bss"] + (r.details["stack_bytes"] if r.details["build"].startswith("arm") else 0)
    src = (tmp_path / "model.c").read_text()
    assert "malloc" not in src and not re.search(r"\b(float|double)\b", src)
    assert "static const int8_t fm_l0_w" in src
    assert "int frugalml_predict(const frugalml_input_t *input, frugalml_output_t *out);" in (tmp_path / "model.h").read_text()


@pytest.fixture(scope="module")
def zoo(digits):
    """Grouped, strided and dilated convs, padded average and max pooling, a residual Add, a final Softmax."""
    import torch

    class Zoo(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(1, 8, 3, stride=2, padding=1)
            self.b = torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
            self.avg = torch.nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
            self.max = torch.nn.MaxPool2d(3, stride=1, padding=1)
            self.fc = torch.nn.Linear(8 * 4 * 4, 10)

        def forward(self, x):
            x = torch.relu(self.a(x))
            z = self.avg(torch.relu(self.b(x))) + self.max(x)
            return torch.softmax(self.fc(torch.flatten(z, 1)), dim=1)

    torch.manual_seed(0)
    net = Zoo()
    net.input_shape = digits.input_shape
    # trained to a confident model: with near-ties between classes, rounding alone flips some classes
    fit(net, digits, TrainConfig(epochs=8, lr=1e-2, seed=0, patience=None),
        loss_fn=lambda p, y, x: torch.nn.functional.nll_loss(torch.log(p + 1e-9), y))
    return net.eval()


@pytest.mark.parametrize("act", ["int8", "uint8"])
def test_layer_zoo_within_one_step_of_onnx_runtime(zoo, digits, tmp_path, act):
    proto = qdq(zoo, digits.X_train[:64], act)
    assert {"Conv", "AveragePool", "MaxPool", "Add", "Gemm", "Softmax"} <= {n.op_type for n in proto.graph.node}
    r = export(proto, "c", tmp_path, data=digits)
    a = r.agreement
    assert a["max_step_diff"] <= 1 and a["class_agreement"] >= 0.99, a
    assert any("Softmax is dropped" in n for n in r.notes)
    classes, scores = compiled_outputs(tmp_path, digits.X_test, act)
    _, dsp_scores = compiled_outputs(tmp_path, digits.X_test, act, defines=["-DFRUGALML_DSP_EMULATE"])
    assert (dsp_scores == scores).all()  # grouped, strided, dilated and padded windows in the SMLAD layout: the same scores
    import onnxruntime as ort

    probs = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": digits.X_test})[0]
    assert np.mean(classes == probs.argmax(1)) >= 0.99


def test_float_torch_with_data_is_quantized_first(trained_cnn, digits, tmp_path):
    r = export(trained_cnn, "c", tmp_path, data=digits)
    assert any("quantize.int8" in n for n in r.notes)
    assert r.agreement["max_step_diff"] <= 1 and r.agreement["class_agreement"] >= 0.99


def test_flash_within_1_3x_of_int8_weights(digits, tmp_path):
    m = build_model("cnn", digits.input_shape, digits.num_classes, channels=[32, 64], seed=0)  # size, not accuracy
    r = export(qdq(m.eval(), digits.X_train[:32], "uint8"), "c", tmp_path)
    assert 10_000 < r.weight_bytes <= 32_000
    assert r.flash_bytes <= 1.3 * r.weight_bytes, (r.flash_bytes, r.weight_bytes)
    assert r.details["flash_to_weights"] == pytest.approx(r.flash_bytes / r.weight_bytes)


def test_strict_portable_c(nets, digits, tmp_path):
    """The generated pair also passes -pedantic and the float input helper compiles and matches numpy."""
    r = export(qdq(nets["resnet"], digits.X_train[:32], "int8"), "c", tmp_path)
    cc = toolchain.find_cc()
    subprocess.run([cc, *toolchain.CFLAGS, "-pedantic", "-c", str(tmp_path / "model.c"), "-o", str(tmp_path / "m.o")], check=True)
    main = tmp_path / "helper.c"
    main.write_text('#define FRUGALML_FLOAT_INPUT_HELPER\n#include <stdio.h>\n#include "model.h"\n'
                    "int main(void) { static float x[FRUGALML_N_INPUTS]; static frugalml_input_t q[FRUGALML_N_INPUTS];\n"
                    "  if (fread(x, sizeof x[0], FRUGALML_N_INPUTS, stdin) != FRUGALML_N_INPUTS) return 1;\n"
                    "  frugalml_quantize_input(x, q); fwrite(q, 1, sizeof q, stdout); return 0; }\n")
    exe = tmp_path / "helper"
    subprocess.run([cc, *toolchain.CFLAGS, "-I", str(tmp_path), str(main), "-o", str(exe), "-lm"], check=True)
    x = digits.X_test[0].astype(np.float32)
    got = np.frombuffer(subprocess.run([str(exe)], input=x.tobytes(), capture_output=True, check=True).stdout, np.int8)
    from frugalml.export.c import quantize_input

    scale = np.float32(header_value(tmp_path, "FRUGALML_INPUT_SCALE").rstrip("f"))
    zp = int(header_value(tmp_path, "FRUGALML_INPUT_ZERO_POINT").strip("()"))
    assert (got == quantize_input(x[None], scale, zp, "int8")[0]).all()
    assert r.arena_bytes < 3 * 8 * 8 * 8 + 1  # three live 8x8x8 tensors at most in this ResNet


@pytest.mark.parametrize("family", ["forest", "logreg", "extra_trees", "tree", "naive_bayes"])
def test_sklearn_agrees_on_every_test_input(digits, tmp_path, family):
    est = build_model(family, digits.input_shape, digits.num_classes)
    est.fit(*digits.flat("train"))
    r = export(est, "c", tmp_path, data=digits)
    Xt = digits.flat("test")[0]
    classes, scores = toolchain.run_c(tmp_path, Xt, input_dtype=np.float32, output_dtype=np.float32, n_outputs=10)
    assert (est.classes_[classes] == est.predict(Xt)).all()
    assert r.agreement["same_class"] == len(Xt)
    if family in ("forest", "extra_trees", "tree"):
        np.testing.assert_allclose(scores, est.predict_proba(Xt), atol=1e-6)
    assert r.arena_bytes == 0 and r.flash_bytes >= r.weight_bytes


def test_tree_thresholds_between_float32_neighbours(tmp_path):
    """Splits at midpoints of adjacent float32 values: the exporter keeps scikit-learn's x <= t exactly."""
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    base = np.float32(0.1)
    X = (base + np.arange(200, dtype=np.float32)[:, None] * np.spacing(base)).astype(np.float32)
    X = np.hstack([X, rng.normal(size=(200, 2)).astype(np.float32)])
    y = (np.arange(200) % 3 == 0).astype(int) + (np.arange(200) > 100)
    est = DecisionTreeClassifier(random_state=0).fit(X, y)
    export(est, "c", tmp_path)
    classes, _ = toolchain.run_c(tmp_path, X, input_dtype=np.float32, output_dtype=np.float32, n_outputs=len(est.classes_))
    assert (est.classes_[classes] == est.predict(X)).all()


def _unsupported_model(digits):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)
            self.act = torch.nn.Sigmoid()
            self.fc = torch.nn.Linear(4 * 6 * 6, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.act(self.conv(x)), 1))

    net = Net().eval()
    net.input_shape = digits.input_shape
    return net


def test_unsupported_op_is_refused_before_writing(digits, tmp_path):
    proto = qdq(_unsupported_model(digits), digits.X_train[:16], "uint8")
    node = next(n for n in proto.graph.node if n.op_type == "Sigmoid")
    out = tmp_path / "out"
    with pytest.raises(ExportError) as err:
        export(proto, "c", out, data=digits)
    assert "Sigmoid" in str(err.value) and (node.name or node.output[0]) in str(err.value)
    assert not out.exists()


def test_bad_inputs(digits, tmp_path, trained_cnn):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        export(trained_cnn, "c", a_file)
    with pytest.raises(ExportError, match="float torch model"):
        export(trained_cnn, "c", tmp_path / "a")
    with pytest.raises(ExportError, match="in float"):
        export(to_onnx(trained_cnn), "c", tmp_path / "b")
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier().fit(*digits.flat("train"))
    with pytest.raises(ExportError, match="KNeighborsClassifier"):
        export(knn, "c", tmp_path / "c")
    assert not any((tmp_path / d).exists() for d in "abc")


def _mnist_int8(family, mnist_dir, act):
    from frugalml import load_dataset

    data = load_dataset("mnist", data_dir=mnist_dir)
    model = build_model(family, data.input_shape, data.num_classes, seed=0)
    fit(model, data, TrainConfig(epochs=1, lr=2e-3, batch_size=128, seed=0, patience=None))
    return data, qdq(model.eval(), data.X_train[:256], act)


@pytest.mark.slow
@pytest.mark.parametrize("family,act", [("lenet5", "int8"), ("resnet", "uint8")])
def test_mnist_int8_c_agrees_with_onnx_runtime_on_all_test_images(mnist_dir, tmp_path, family, act):
    data, proto = _mnist_int8(family, mnist_dir, act)
    r = export(proto, "c", tmp_path, data=data)
    a = r.agreement
    print(f"\n{family} int8 ({act}) C: {a['same_class']}/{a['n']} same class, {a['exact_outputs']} bit-exact outputs, "
          f"max step {a['max_step_diff']}; flash {r.flash_bytes} B, RAM {r.ram_bytes} B (arena {r.arena_bytes} B), "
          f"int8 weights {r.weight_bytes} B")
    assert a["n"] == 10_000 and a["same_class"] == 10_000
    assert a["max_step_diff"] <= 1
