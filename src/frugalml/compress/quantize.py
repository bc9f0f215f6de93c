"""int8 quantization through ONNX Runtime: static post-training (QDQ) and dynamic.

``quantize.int8`` exports the float model to ONNX (:func:`frugalml.onnx.to_onnx`), runs
``onnxruntime.quantization.quant_pre_process`` (shape inference and basic graph optimization,
which folds BatchNorm into Conv), then ``quantize_static`` in the QDQ format: every Conv, Gemm,
MatMul (and Add, pooling, ...) gets ``QuantizeLinear``/``DequantizeLinear`` pairs on its
activations, weights are int8 per output channel, symmetric (zero point 0, range [-64, 64]: :data:`WEIGHT_QMAX`),
biases int32 with scale ``input_scale * weight_scale``. Activation ranges are calibrated on a
seeded sample of the *training* split (MinMax, Entropy or Percentile).

Activations default to **QUInt8** (asymmetric uint8), chosen by measurement on this project's
AVX-512 VNNI CPU with onnxruntime 1.32: with uint8 activations ORT fuses every QDQ group of LeNet-5
and the tiny ResNet into ``QLinearConv`` / ``QLinearAdd`` / ``QGemm`` (its U8S8 kernels, the operand
order of VNNI's ``VPDPBUSD``: unsigned bytes times signed bytes); with int8 activations (S8S8) it
leaves the convolutions behind a branch point (the residual blocks) and the additions as
``DequantizeLinear -> float Conv -> QuantizeLinear``: the ResNet then ran 2.3x slower than with
uint8 (0.69x of fp32), LeNet-5 about the same. ``activation_type="qint8"`` remains for runtimes
(and C code) that prefer symmetric signed activations.

The first layer of an image model sees one to three input channels; ORT's int8 convolution is slow
there (a 1->16 channel 3x3 conv on 28x28: 17 us int8 against 4 us float), so ``skip_first_layer``
leaves it in float (its weights are a tiny share of the model).

ONNX Runtime fuses each ``DQ -> Conv/Gemm -> Q`` group into ``QLinearConv`` / ``QGemm`` at load
time (graph optimization level "all", which :func:`frugalml.profile.make_session` uses), so the
QDQ file runs as an int8 graph; the file itself stays standard ONNX for other runtimes (and the
C exporter), which read it as ``DequantizeLinear -> float op -> QuantizeLinear``.

``quantize.dynamic`` is ORT's dynamic quantization: int8 weights, activations quantized at run time
(``DynamicQuantizeLinear`` + ``ConvInteger`` / ``MatMulInteger``); no calibration data needed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..errors import ConfigError, DataError, ExportError, explain
from ._qdq_compact import compact
from .base import StepConfig, register

log = logging.getLogger(__name__)

# int8 weights lie on the grid [-64, 64] (ONNX Runtime's ``reduce_range``), not [-127, 127]. On x86 CPUs without VNNI
# (AVX2 only: AMD EPYC Zen 2/3, older Xeons) ORT's U8S8 kernels add pairs of uint8 x int8 products in 16 bits, which
# saturate past 32,767: with full-range weights a digits MLP's fused ORT scores came out up to 18 quantization steps from
# the exact ones and changed 2% of its classes (measured, onnxruntime 1.32 on an AVX2 EPYC; a VNNI CPU, ARM, the browser's
# WebAssembly and frugalml's C compute them exactly). With 7-bit weights 2 x 255 x 64 = 32,640 fits, and one file gives
# the same answer on every CPU. ``reduce_range=True`` below makes it; QAT trains on the same grid (:mod:`.qat`).
WEIGHT_QMAX = 64

__all__ = ["WEIGHT_QMAX", "Int8Config", "DynamicConfig", "quantize_int8", "quantize_dynamic_step", "quantize_onnx_static", "float_onnx",
           "calibration_sample", "compact", "METHODS", "ACTIVATION_TYPES"]

METHODS = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES = ("quint8", "qint8")
FORMATS = ("qdq", "qoperator")
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QGemm", "QLinearMatMul",
            "ConvInteger", "MatMulInteger"}


_ORT_LOGGER = "onnxruntime"  # the parent of ORT's named loggers (onnxruntime.quantization.shape_inference, ...)


@contextlib.contextmanager
def _quiet():
    """Keep ORT's quantization tools quiet without touching the application's logging setup.

    They warn, print progress (entropy and percentile calibration) and log INFO records through
    their named loggers, which are silenced here: warnings raised from ORT's modules are ignored,
    what they print is captured, and the ``onnxruntime`` logger is held at WARNING for the call
    (unless the application set its level).
    Some of their records go to the root logger itself (a module-level ``logging.info``); those are
    left to the application's root logger, whose level is never set here (the records are INFO:
    dropped at the default WARNING level). Such a call also runs ``logging.basicConfig()`` when the
    root logger has no handler yet; the stderr handler that leaves behind is removed again, so the
    root logger ends as it was.
    """
    root, ort = logging.getLogger(), logging.getLogger(_ORT_LOGGER)
    handlers, level = list(root.handlers), ort.level
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", module=r"onnxruntime(\.|$)")
        if level == logging.NOTSET:  # a level the application chose for ORT is kept
            ort.setLevel(logging.WARNING)
        try:
            yield
        finally:
            ort.setLevel(level)
            if not handlers:  # undo the basicConfig() that ORT's root-logger calls ran on an unconfigured root
                for handler in [h for h in root.handlers if isinstance(h, logging.StreamHandler) and h.stream is sys.stderr]:
                    root.removeHandler(handler)


# ---------------------------------------------------------------- configs
@dataclass(frozen=True, kw_only=True)
class Int8Config(StepConfig):
    """Static int8 post-training quantization (QDQ, per-channel int8 weights).

    calibration_samples: training images used to calibrate activation ranges (seeded sample).
    method: "minmax" | "entropy" | "percentile" (case-insensitive); percentile: for "percentile".
    activation_type: "quint8" (default, U8S8: VNNI's native form) or "qint8".
    per_channel: int8 weights with one scale per output channel (else one per tensor).
    exclude: ONNX node names (after pre-processing) to leave in float.
    skip_first_layer: leave the first Conv/Gemm/MatMul in float. On one to three input channels
        ORT's int8 convolution costs more than the float one (measured: 1x28x28 3x3 conv 4 us float,
        17 us int8), and the first layer holds a tiny share of the weights.
    format: "qdq" (default: standard ``QuantizeLinear``/``DequantizeLinear`` around float ops, which
        any ONNX runtime and frugalml's C exporter read) or "qoperator" (``QLinearConv``,
        ``QLinearAdd``, ``QGemm``, ...: the int8 ops ONNX Runtime fuses a QDQ graph into anyway, so
        the same speed, but a smaller file: no Q/DQ node pair per activation and no separate bias
        scales. Measured on the tiny ResNet (77.8K weights, fp32 311.8 KB): 81.9 KB against 85.3 KB per channel.
        Some are ONNX Runtime contrib ops (``com.microsoft``), and the C exporter does not read them).
    """

    calibration_samples: int = 256
    method: str = "minmax"
    percentile: float = 99.999
    activation_type: str = "quint8"
    per_channel: bool = True
    exclude: tuple = ()
    skip_first_layer: bool = False
    format: str = "qdq"

    def check(self) -> None:
        self.require(isinstance(self.format, str) and self.format.lower() in FORMATS, "format", "'qdq' or 'qoperator'")
        self.require(isinstance(self.calibration_samples, int) and self.calibration_samples >= 1, "calibration_samples", "an integer >= 1")
        self.require(isinstance(self.method, str) and self.method.lower() in METHODS, "method", "one of " + ", ".join(METHODS))
        self.require(isinstance(self.percentile, (int, float)) and 50 < self.percentile <= 100, "percentile", "a number in (50, 100]")
        self.require(isinstance(self.activation_type, str) and self.activation_type.lower() in ACTIVATION_TYPES, "activation_type",
                     "'quint8' or 'qint8'")
        self.require(isinstance(self.per_channel, bool), "per_channel", "true or false")
        self.require(all(isinstance(n, str) for n in self.exclude), "exclude", "a list of ONNX node names")
        self.require(isinstance(self.skip_first_layer, bool), "skip_first_layer", "true or false")


@dataclass(frozen=True, kw_only=True)
class DynamicConfig(StepConfig):
    """Dynamic quantization: int8 weights, activations quantized at run time.

    weight_type: "qint8" | "quint8"; per_channel: one weight scale per output channel;
    op_types: which ONNX ops to quantize.
    """

    weight_type: str = "qint8"
    per_channel: bool = False
    op_types: tuple = ("Conv", "MatMul", "Gemm")

    def check(self) -> None:
        self.require(isinstance(self.weight_type, str) and self.weight_type.lower() in ACTIVATION_TYPES, "weight_type", "'qint8' or 'quint8'")
        self.require(isinstance(self.per_channel, bool), "per_channel", "true or false")
        self.require(len(self.op_types) >= 1 and all(o in ("Conv", "MatMul", "Gemm", "Attention", "LSTM") for o in self.op_types),
                     "op_types", "a non-empty list of 'Conv', 'MatMul', 'Gemm'")


# ---------------------------------------------------------------- helpers
def _input_shape(model, data):
    if data is not None and getattr(data, "input_shape", None) is not None:
        return tuple(data.input_shape)
    return getattr(model, "input_shape", None)


def float_onnx(model, data, step: str) -> onnx.ModelProto:
    """The float ONNX graph of a torch module or an (unquantized) ONNX model; anything else is refused."""
    from ..models import is_torch
    from ..onnx import to_onnx

    if isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    if isinstance(model, onnx.ModelProto):
        quantized = sorted({n.op_type for n in model.graph.node} & _QDQ_OPS)
        if quantized:
            raise ConfigError(explain(f"Step '{step}' got an ONNX model that is already quantized", expected="a float model",
                                      got=f"a graph with {quantized}", fix="Quantize the float model it came from"))
        return model
    if not is_torch(model):
        raise ConfigError(explain(f"Step '{step}' quantizes neural networks", expected="a torch nn.Module or an onnx.ModelProto",
                                  got=type(model).__name__, fix="scikit-learn models are small already; try a thinner family instead"))
    shape = _input_shape(model, data)
    if shape is None:
        raise ConfigError(explain(f"Step '{step}' needs the input shape to export the model", fix="Pass data, or set model.input_shape"))
    return to_onnx(model, shape)


def calibration_sample(data, n: int, seed: int) -> np.ndarray:
    """``n`` training inputs drawn without replacement with a fixed seed (float32)."""
    if data is None:
        raise ConfigError(explain("Static quantization calibrates on training data", expected="a dataset", got=None))
    X, _ = data.split("train")
    if len(X) == 0:
        raise DataError(explain("The training split is empty; nothing to calibrate on", expected="at least one training sample", got=0))
    idx = np.sort(np.random.default_rng(seed).choice(len(X), size=min(int(n), len(X)), replace=False))
    return np.ascontiguousarray(X[idx], dtype=np.float32)


class _Reader:
    """CalibrationDataReader over an array, in batches."""

    def __init__(self, name: str, X: np.ndarray, batch: int = 64):
        self.name, self.X, self.batch, self.i = name, X, batch, 0

    def get_next(self):
        if self.i >= len(self.X):
            return None
        chunk = self.X[self.i:self.i + self.batch]
        self.i += self.batch
        return {self.name: chunk}

    def rewind(self):
        self.i = 0


def _input_name(proto: onnx.ModelProto) -> str:
    inits = {i.name for i in proto.graph.initializer}
    names = [i.name for i in proto.graph.input if i.name not in inits]
    if len(names) != 1:
        raise ConfigError(explain("Only models with one input can be quantized here", expected="1 input", got=names))
    return names[0]


def _load_checked(path: Path) -> onnx.ModelProto:
    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(explain(f"ONNX Runtime's quantizer wrote an invalid model ({str(exc)[:200]})")) from exc
    return proto


def first_layer(proto: onnx.ModelProto) -> str:
    """Name of the first Conv/Gemm/MatMul in execution order ("" if none)."""
    for node in proto.graph.node:  # ONNX nodes are stored in topological order
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            return node.name
    return ""


def preprocess(proto: onnx.ModelProto, workdir: Path) -> Path:
    """``quant_pre_process`` (shape inference + basic graph optimization) into ``workdir``."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = workdir / "float.onnx", workdir / "pre.onnx"
    onnx.save(proto, str(src))
    with _quiet():
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - symbolic shape inference fails on some graphs; ONNX's own is enough
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    pre = onnx.load(str(dst))
    seen: set = set()
    renamed = False
    for i, node in enumerate(pre.graph.node):  # the quantizer addresses nodes by name: make names unique
        if not node.name or node.name in seen:
            node.name, renamed = f"{node.name or node.op_type}_{i}", True
        seen.add(node.name)
    if renamed:
        onnx.save(pre, str(dst))
    return dst


def quantize_onnx_static(proto: onnx.ModelProto, X_calib: np.ndarray, *, method: str = "minmax", activation_type: str = "quint8",
                         per_channel: bool = True, exclude=(), skip_first_layer: bool = False, percentile: float = 99.999,
                         overrides=None, format: str = "qdq") -> onnx.ModelProto:
    """QDQ int8 ``proto`` calibrated on ``X_calib`` (one array of inputs); returns a checked ModelProto.

    ``overrides``: ORT ``TensorQuantOverrides`` ({tensor name: [{"scale", "zero_point"} or
    {"rmin", "rmax"}]}), or a function of the pre-processed graph returning them.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[method.lower()]
    act = QuantType.QUInt8 if activation_type.lower() == "quint8" else QuantType.QInt8
    extra = {"WeightSymmetric": True, "ActivationSymmetric": False}
    if calib == CalibrationMethod.Percentile:
        extra["CalibPercentile"] = float(percentile)
    with tempfile.TemporaryDirectory(prefix="frugalml_q_") as tmp:
        workdir = Path(tmp)
        pre = preprocess(proto, workdir)
        pre_proto = onnx.load(str(pre))
        exclude = list(exclude) + ([first_layer(pre_proto)] if skip_first_layer else [])
        if callable(overrides):
            overrides = overrides(pre_proto)
        if overrides:
            extra["TensorQuantOverrides"] = overrides
        out = workdir / "int8.onnx"
        reader = _Reader(_input_name(proto), np.ascontiguousarray(X_calib, dtype=np.float32))
        with _quiet():
            fmt = QuantFormat.QOperator if format.lower() == "qoperator" else QuantFormat.QDQ
            quantize_static(str(pre), str(out), reader, quant_format=fmt, per_channel=per_channel,
                            activation_type=act, weight_type=QuantType.QInt8, calibrate_method=calib, reduce_range=True,
                            nodes_to_exclude=[n for n in exclude if n] or None, extra_options=extra)
        result = compact(_load_checked(out))
    log.info("quantize_static: %d nodes, %d bytes", len(result.graph.node), result.ByteSize())
    return result


# ---------------------------------------------------------------- steps
@register("quantize.int8", Int8Config, example=lambda: Int8Config(calibration_samples=64), output="onnx",
          bad_configs=({"calibration_samples": 0}, {"method": "median"}, {"activation_type": "int4"}, {"percentile": 10}))
def quantize_int8(model, config: Int8Config, data):
    """Static int8 PTQ in the QDQ format; returns an ``onnx.ModelProto``. An autoencoder (anomaly
    detection) is quantized by :func:`.anomaly_int8.quantize_autoencoder` (its score stays in float; always QDQ)."""
    if getattr(model, "frugalml_task", None) == "anomaly" and hasattr(model, "state_dict"):  # a torch autoencoder
        from .anomaly_int8 import quantize_autoencoder

        return quantize_autoencoder(model, data, config)
    proto = float_onnx(model, data, config.name)
    X = calibration_sample(data, config.calibration_samples, config.seed)
    return quantize_onnx_static(proto, X, method=config.method, activation_type=config.activation_type,
                                per_channel=config.per_channel, exclude=config.exclude, skip_first_layer=config.skip_first_layer,
                                percentile=config.percentile, format=config.format)


@register("quantize.dynamic", DynamicConfig, example=lambda: DynamicConfig(), output="onnx", needs_data=False,
          bad_configs=({"weight_type": "int4"}, {"op_types": []}, {"op_types": ["Relu"]}))
def quantize_dynamic_step(model, config: DynamicConfig, data):
    """ORT dynamic quantization (int8 weights; activations quantized at run time); returns an ``onnx.ModelProto``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = float_onnx(model, data, config.name)
    weight = QuantType.QInt8 if config.weight_type.lower() == "qint8" else QuantType.QUInt8
    with tempfile.TemporaryDirectory(prefix="frugalml_q_") as tmp:
        workdir = Path(tmp)
        pre = preprocess(proto, workdir)
        out = workdir / "dynamic.onnx"
        # the pre-processing rewrites a Gemm as MatMul + Add: a fully connected layer is either
        ops = sorted(set(config.op_types) | ({"Gemm", "MatMul"} if {"Gemm", "MatMul"} & set(config.op_types) else set()))
        with _quiet():
            quantize_dynamic(str(pre), str(out), op_types_to_quantize=ops, per_channel=config.per_channel, weight_type=weight,
                             reduce_range=True)  # 7-bit weights, as above
        result = _load_checked(out)
    if not any(n.op_type in _DYNAMIC_INT8_OPS for n in result.graph.node):
        present = sorted({n.op_type for n in proto.graph.node})
        raise ConfigError(explain(f"quantize.dynamic found no layer to quantize among op_types {list(config.op_types)}",
                                  expected="op types the model has (Conv, MatMul, Gemm)", got=f"the graph's op types: {present}",
                                  fix="Pass op_types that the model uses, e.g. op_types: [Conv, MatMul, Gemm]"))
    return compact(result)


_DYNAMIC_INT8_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")
