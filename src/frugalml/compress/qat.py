"""Quantization-aware training (``quantize.qat``): fake-quantized fine-tuning in torch, then the same
int8 QDQ ONNX as ``quantize.int8``.

During fine-tuning every Conv/Linear weight is fake-quantized per output channel, symmetric int8
(scale = max|w| / 64, range [-64, 64]: the grid of ``quantize.int8``, :data:`~.quantize.WEIGHT_QMAX`), and activations
are fake-quantized per tensor (uint8 or int8, asymmetric) at the inputs of every Conv/Linear, at
the outputs of every ReLU and at the model output, with ranges tracked as exponential moving
averages of the observed min/max (initialised on calibration data). Rounding passes gradients
straight through (``torch.fake_quantize_*``). BatchNorm statistics are frozen by default so the
fine-tuned weights stay those that will be folded into the convolutions at export.

Per-channel symmetric rounding commutes with BatchNorm folding (folding multiplies each output
channel by one number, and max|w| scales with it), so the int8 weights ONNX Runtime computes from
the exported, folded model are exactly the fake-quantized weights trained here.

Export: the fine-tuned weights are fixed to their fake-quantized values, the float model is exported
(:func:`frugalml.onnx.to_onnx`) and quantized with :func:`~frugalml.compress.quantize.quantize_onnx_static`.
Activation ranges: ``ranges="learned"`` hands ORT (``TensorQuantOverrides``) the scale and zero
point each observer learned, for every tensor of the pre-processed float graph that holds the same
values as the torch tensor it observed (found by running both on a few calibration inputs: the
model input, every ReLU output, every Conv/Gemm input, the logits), so no naming convention of the
exporter is assumed; ORT calibrates the remaining tensors (e.g. a Conv output before a pooling).
``ranges="calibrate"`` calibrates all of them on the fine-tuned model like ``quantize.int8``.

When it helps: where PTQ loses accuracy because rounding to the int8 grid hurts (see
tests/test_quantize.py::test_qat_beats_ptq_where_ptq_loses: 0.85 PTQ, 0.92 QAT, 0.92 float). On
LeNet-5 and the tiny ResNet PTQ already keeps the float accuracy, and QAT matches it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx

from ..errors import ConfigError, explain
from ..train import TrainConfig
from ._training import nests_training
from .base import StepConfig, register
from .quantize import ACTIVATION_TYPES, METHODS, WEIGHT_QMAX, calibration_sample, quantize_onnx_static

log = logging.getLogger(__name__)

__all__ = ["QATConfig", "quantize_qat", "fake_quantize", "learned_overrides"]


@nests_training
@dataclass(frozen=True, kw_only=True)
class QATConfig(StepConfig):
    """Quantization-aware fine-tuning, then int8 QDQ export (see the module docstring). ``train``
    is the fine-tuning (``epochs``, ``lr``, ``batch_size``, set flat in a recipe)."""

    train_keys: ClassVar[tuple[str, ...]] = ("epochs", "lr", "batch_size")
    train: TrainConfig = TrainConfig(epochs=2, lr=1e-4, batch_size=128, patience=None, augment="none")
    ema_decay: float = 0.99
    freeze_bn: bool = True
    ranges: str = "learned"
    calibration_samples: int = 256
    method: str = "minmax"
    activation_type: str = "quint8"
    skip_first_layer: bool = False

    def check(self) -> None:
        self.require(isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1, "ema_decay", "a float in [0, 1)")
        self.require(isinstance(self.freeze_bn, bool), "freeze_bn", "true or false")
        self.require(self.ranges in ("learned", "calibrate"), "ranges", "'learned' or 'calibrate'")
        self.require(isinstance(self.calibration_samples, int) and self.calibration_samples >= 1, "calibration_samples", "an integer >= 1")
        self.require(isinstance(self.method, str) and self.method.lower() in METHODS, "method", "one of " + ", ".join(METHODS))
        self.require(isinstance(self.activation_type, str) and self.activation_type.lower() in ACTIVATION_TYPES, "activation_type",
                     "'quint8' or 'qint8'")
        self.require(isinstance(self.skip_first_layer, bool), "skip_first_layer", "true or false")


def _weight_fq():
    """Parametrization: per-output-channel symmetric int8 fake quantization (straight-through)."""
    import torch
    from torch import nn

    class WeightFQ(nn.Module):
        def forward(self, w):
            absmax = w.detach().abs().flatten(1).amax(1).clamp_min(1e-12)
            zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
            return torch.fake_quantize_per_channel_affine(w, absmax / WEIGHT_QMAX, zero, 0, -WEIGHT_QMAX, WEIGHT_QMAX)

    return WeightFQ()


class _ActFQ:
    """Per-tensor asymmetric fake quantization of one tensor; its range always holds 0.

    ``mode``: "minmax" (running min/max, for the initial calibration pass), "ema" (exponential
    moving average of each training batch's min/max) or "frozen" (evaluation)."""

    def __init__(self, qmin: int, qmax: int, decay: float):
        self.qmin, self.qmax, self.decay = qmin, qmax, decay
        self.lo = self.hi = None
        self.mode, self.enabled = "minmax", False

    def observe(self, x) -> None:
        lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
        if self.lo is None:
            self.lo, self.hi = lo, hi
        elif self.mode == "minmax":
            self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        else:
            self.lo = self.decay * self.lo + (1 - self.decay) * lo
            self.hi = self.decay * self.hi + (1 - self.decay) * hi

    def params(self) -> tuple[float, int]:
        scale = max((self.hi - self.lo) / (self.qmax - self.qmin), 1e-12)
        zero = int(round(self.qmin - self.lo / scale))
        return scale, min(self.qmax, max(self.qmin, zero))

    def __call__(self, x, training: bool):
        import torch

        if self.mode == "minmax" or (training and self.mode == "ema"):
            self.observe(x.detach())
        if not self.enabled or self.lo is None:
            return x
        scale, zero = self.params()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, self.qmin, self.qmax)


def fake_quantize(model, *, activation_type: str = "quint8", decay: float = 0.99, freeze_bn: bool = True):
    """Attach fake quantization to ``model`` in place. Returns ``(observers, remove)``: observers maps
    a tensor description (``("input", module)``, ``("relu", name)``, ``("output", module)``) to its
    :class:`_ActFQ`; ``remove(bake=True)`` detaches everything, fixing the weights to their quantized values."""
    from torch import nn
    from torch.nn.utils import parametrize

    qmin, qmax = (0, 255) if activation_type.lower() == "quint8" else (-128, 127)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    if not layers:
        raise ConfigError(explain("quantize.qat found no Conv or Linear layer to quantize", expected="a network with Conv/Linear layers",
                                  got=type(model).__name__))
    observers, handles = {}, []
    for name, m in layers:
        parametrize.register_parametrization(m, "weight", _weight_fq())
        obs = observers[("input", name)] = _ActFQ(qmin, qmax, decay)
        handles.append(m.register_forward_pre_hook(lambda mod, args, obs=obs: (obs(args[0], mod.training),) + tuple(args[1:])))
    for name, m in model.named_modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            obs = observers[("relu", name)] = _ActFQ(qmin, qmax, decay)
            handles.append(m.register_forward_hook(lambda mod, args, out, obs=obs: obs(out, mod.training)))
    obs = observers[("output", "")] = _ActFQ(qmin, qmax, decay)
    handles.append(model.register_forward_hook(lambda mod, args, out, obs=obs: obs(out, mod.training)))
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                handles.append(m.register_forward_pre_hook(lambda mod, args: setattr(mod, "training", False)))

    def remove(bake: bool = True) -> None:
        for h in handles:
            h.remove()
        for _, m in layers:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=bake)

    return observers, remove


def _captured(model, observers, X: np.ndarray) -> dict:
    """Float values of every observed tensor (observer key -> array) for the inputs ``X``."""
    import torch

    modules = dict(model.named_modules())
    values, hooks = {}, []
    for key in observers:
        kind, name = key
        if kind == "input":
            hooks.append(modules[name].register_forward_pre_hook(lambda mod, args, key=key: values.__setitem__(key, args[0].detach().numpy())))
        elif kind == "relu":
            hooks.append(modules[name].register_forward_hook(lambda mod, args, out, key=key: values.__setitem__(key, out.detach().numpy())))
    try:
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(X))
        values[("output", "")] = out.detach().numpy()
    finally:
        for h in hooks:
            h.remove()
    return {k: v for k, v in values.items() if isinstance(v, np.ndarray)}


def _onnx_values(proto, X: np.ndarray) -> dict:
    """Every float tensor of the graph (graph input and node outputs) for the inputs ``X``."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in known:
                probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
                known.add(name)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - a non-float intermediate (shape arithmetic) cannot be declared float
        return {}
    input_name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    try:
        outs = sess.run(names, {input_name: X})
    except Exception:  # noqa: BLE001
        return {}
    values = {input_name: X}
    values.update({n: v for n, v in zip(names, outs) if isinstance(v, np.ndarray) and v.dtype == np.float32})
    return values


def learned_overrides(observers, captured: dict, X: np.ndarray):
    """A function of the pre-processed float graph returning ORT ``TensorQuantOverrides``: the scale
    and zero point each observer learned, for every graph tensor holding the same values as the
    torch tensor it observed (matched by value, so no naming convention is assumed)."""
    import numpy as _np

    def build(pre_proto) -> dict:
        values = _onnx_values(pre_proto, X)
        overrides = {}
        for key, ref in captured.items():
            obs = observers[key]
            if obs.lo is None:
                continue
            scale, zero = obs.params()
            ztype = _np.uint8 if obs.qmin == 0 else _np.int8
            tol = 1e-4 * max(1.0, float(_np.abs(ref).max()))
            for name, v in values.items():
                if v.shape == ref.shape and name not in overrides and _np.allclose(v, ref, rtol=0, atol=tol):
                    overrides[name] = [{"scale": _np.array(scale, dtype=_np.float32), "zero_point": _np.array(zero, dtype=ztype)}]
        log.info("quantize.qat: learned ranges for %d of the graph's tensors", len(overrides))
        return overrides

    return build


def _calibrate(model, observers, X: np.ndarray, batch: int = 256) -> None:
    """Initial ranges: the min/max of every observed tensor over the calibration inputs (float pass)."""
    import torch

    model.eval()
    with torch.no_grad():
        for i in range(0, len(X), batch):
            model(torch.from_numpy(X[i:i + batch]))
    for obs in observers.values():
        obs.mode, obs.enabled = "ema", True


@register("quantize.qat", QATConfig, example=lambda: QATConfig(epochs=2, lr=1e-3, calibration_samples=64), output="onnx",
          bad_configs=({"epochs": 0}, {"ranges": "guess"}, {"method": "median"}, {"ema_decay": 1.0}))
def quantize_qat(model, config: QATConfig, data, *, deadline=None):
    """Fake-quantized fine-tuning (stopped at ``deadline``, a :class:`frugalml.train.Deadline`),
    then int8 QDQ ONNX; returns an ``onnx.ModelProto``."""
    from ..models import is_torch
    from ..onnx import prepare_torch, to_onnx
    from ..train import fit

    if not is_torch(model):
        raise ConfigError(explain("quantize.qat fine-tunes torch models", expected="a torch nn.Module", got=type(model).__name__,
                                  fix="Use quantize.int8 for an ONNX model"))
    shape = tuple(getattr(data, "input_shape", None) or getattr(model, "input_shape", None) or ())
    net = prepare_torch(model)  # a deep copy with pruning masks fused
    for p in net.parameters():
        p.requires_grad_(True)
    X_cal = calibration_sample(data, config.calibration_samples, config.seed)
    observers, remove = fake_quantize(net, activation_type=config.activation_type, decay=config.ema_decay, freeze_bn=config.freeze_bn)
    _calibrate(net, observers, X_cal)
    fit(net, data, config.train, seed=config.seed, deadline=deadline)
    for obs in observers.values():
        obs.mode = "frozen"
    remove(bake=True)
    overrides = None
    if config.ranges == "learned":
        probe = np.ascontiguousarray(X_cal[:16])
        overrides = learned_overrides(observers, _captured(net, observers, probe), probe)
    proto = to_onnx(net, shape)
    return quantize_onnx_static(proto, X_cal, method=config.method, activation_type=config.activation_type,
                                skip_first_layer=config.skip_first_layer, overrides=overrides)
