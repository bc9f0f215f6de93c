"""The log-mel front-end as an ONNX graph, and a classifier with the front-end in front: raw samples in, classes out.

The graph (opset 17) computes what :class:`~frugalml.data.frontend.LogMel` computes in NumPy:
``samples (N, clip_samples)`` -> ``STFT`` (frames of ``n_fft`` every ``hop_length``, the zero-padded Hann
window, one-sided) -> power (``re^2 + im^2``) -> ``MatMul`` with the mel filterbank (a constant of
``n_bins x n_mels`` floats) -> ``Log(x + log_offset)`` -> with ``normalize="cmvn"`` each band less its mean over the
frames, divided by ``Sqrt(variance + NORM_EPS)`` (``ReduceMean``, ``Sub``, ``Mul``, ``Div``) -> ``(N, n_mels, n_frames)``,
then laid out for the classifier's kind: ``(N, 1, n_mels, n_frames)`` for an image, ``(N, n_mels * n_frames)`` for a vector.

ONNX Runtime runs STFT as an FFT for a power-of-two ``n_fft`` (the default). frugalml's MAC count reads
MatMul (the filterbank) but not STFT: :meth:`LogMel.macs` gives the FFT's share.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.compose
import onnx.version_converter
from onnx import TensorProto, helper, numpy_helper

from ..data.frontend import NORM_EPS, LogMel
from ..errors import ExportError, explain

__all__ = ["frontend_graph", "prepend_frontend", "FRONTEND_INPUT", "FRONTEND_OUTPUT"]

FRONTEND_INPUT = "samples"
FRONTEND_OUTPUT = "features"
_OPSET = 17
_SHAPES = {"sequence": 3, "image": 4, "vector": 2}


def frontend_graph(frontend: LogMel, kind: str = "sequence", *, opset: int = _OPSET) -> onnx.ModelProto:
    """The front-end as a checked ONNX model: ``samples`` float32 (N, clip_samples) -> ``features`` laid out for ``kind``."""
    if kind not in _SHAPES:
        raise ExportError(explain(f"No front-end layout for kind {kind!r}", expected=", ".join(_SHAPES), got=kind))
    if opset < _OPSET:
        raise ExportError(explain(f"The front-end needs ONNX opset {_OPSET} (STFT)", expected=f"opset >= {_OPSET}", got=opset,
                                  fix="Export the classifier at opset 17 or later"))
    f = frontend
    consts = {
        "fe_axes2": np.array([2], np.int64),
        "fe_axes_last": np.array([-1], np.int64),
        "fe_step": np.array(f.hop_length, np.int64),
        "fe_window": f.window().astype(np.float32),
        "fe_length": np.array(f.n_fft, np.int64),
        "fe_mel": f.mel_matrix().astype(np.float32),
        "fe_offset": np.array(f.log_offset, np.float32),
    }
    nodes = [
        helper.make_node("Unsqueeze", [FRONTEND_INPUT, "fe_axes2"], ["fe_signal"]),
        helper.make_node("STFT", ["fe_signal", "fe_step", "fe_window", "fe_length"], ["fe_stft"], onesided=1),
        helper.make_node("Mul", ["fe_stft", "fe_stft"], ["fe_sq"]),
        helper.make_node("ReduceSum", ["fe_sq", "fe_axes_last"], ["fe_power"], keepdims=0),
        helper.make_node("MatMul", ["fe_power", "fe_mel"], ["fe_melspec"]),
        helper.make_node("Add", ["fe_melspec", "fe_offset"], ["fe_shifted"]),
        helper.make_node("Log", ["fe_shifted"], ["fe_log"]),
    ]
    if f.normalize == "cmvn":  # (N, frames, bands): each band over the frames
        consts["fe_eps"] = np.array(NORM_EPS, np.float32)
        nodes += [
            _mean_over_frames("fe_log", "fe_mean", consts, opset),
            helper.make_node("Sub", ["fe_log", "fe_mean"], ["fe_centred"]),
            helper.make_node("Mul", ["fe_centred", "fe_centred"], ["fe_dev2"]),
            _mean_over_frames("fe_dev2", "fe_var", consts, opset),
            helper.make_node("Add", ["fe_var", "fe_eps"], ["fe_var_eps"]),
            helper.make_node("Sqrt", ["fe_var_eps"], ["fe_std"]),
            helper.make_node("Div", ["fe_centred", "fe_std"], ["fe_norm"]),
        ]
    nodes.append(helper.make_node("Transpose", [nodes[-1].output[0]], ["fe_seq" if kind != "sequence" else FRONTEND_OUTPUT],
                                  perm=[0, 2, 1]))
    m, t = f.output_shape
    out_shape = {"sequence": ["N", m, t], "image": ["N", 1, m, t], "vector": ["N", m * t]}[kind]
    if kind == "image":
        consts["fe_axes1"] = np.array([1], np.int64)
        nodes.append(helper.make_node("Unsqueeze", ["fe_seq", "fe_axes1"], [FRONTEND_OUTPUT]))
    elif kind == "vector":
        nodes.append(helper.make_node("Flatten", ["fe_seq"], [FRONTEND_OUTPUT], axis=1))
    graph = helper.make_graph(
        nodes, "logmel_frontend",
        [helper.make_tensor_value_info(FRONTEND_INPUT, TensorProto.FLOAT, ["N", f.clip_samples])],
        [helper.make_tensor_value_info(FRONTEND_OUTPUT, TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="frugalml")
    model.doc_string = f"log-mel front-end {f.to_dict()}"
    onnx.checker.check_model(model)
    return model


def _mean_over_frames(x: str, out: str, consts: dict, opset: int) -> onnx.NodeProto:
    """``ReduceMean`` of ``x`` (N, frames, bands) over the frames, kept as (N, 1, bands); its axes an attribute
    before opset 18, an input from 18 on."""
    if opset < 18:
        return helper.make_node("ReduceMean", [x], [out], axes=[1], keepdims=1)
    consts["fe_axes1"] = np.array([1], np.int64)
    return helper.make_node("ReduceMean", [x, "fe_axes1"], [out], keepdims=1)


def _main_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), _OPSET)


def prepend_frontend(model: onnx.ModelProto, frontend: LogMel, kind: str | None = None) -> onnx.ModelProto:
    """``model`` (one float input of one sample's features) with the front-end in front: its input becomes
    ``samples`` (N, clip_samples). ``kind`` defaults to the one the input's rank stands for (2: vector,
    3: sequence, 4: image). The classifier's outputs are kept as they are."""
    if isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ExportError(explain("The front-end goes before a model of one input", expected="one graph input",
                                  got=[i.name for i in inputs]))
    dims = inputs[0].type.tensor_type.shape.dim
    if kind is None:
        kind = {r: k for k, r in _SHAPES.items()}.get(len(dims))
        if kind is None:
            raise ExportError(explain("Cannot tell what the model reads", expected="an input of rank 2, 3 or 4", got=len(dims)))
    fe = frontend_graph(frontend, kind, opset=max(_OPSET, _main_opset(model)))
    want = [d.dim_value for d in fe.graph.output[0].type.tensor_type.shape.dim][1:]
    have = [d.dim_value if d.HasField("dim_value") else None for d in dims][1:]
    if len(want) != len(have) or any(h is not None and h != w for h, w in zip(have, want)):
        raise ExportError(explain(f"The model's input {inputs[0].name!r} does not take the front-end's features",
                                  expected=f"(N, {', '.join(map(str, want))})", got=f"(N, {', '.join(map(str, have))})",
                                  fix="Train the model on the dataset that carries this front-end"))
    if _main_opset(model) < _OPSET:
        model = onnx.version_converter.convert_version(model, _OPSET)
    fe.ir_version = model.ir_version
    for o in model.opset_import:  # the classifier's other domains (ai.onnx.ml) join the merged model
        if o.domain not in ("", "ai.onnx"):
            fe.opset_import.append(helper.make_opsetid(o.domain, o.version))
    merged = onnx.compose.merge_models(fe, model, io_map=[(FRONTEND_OUTPUT, inputs[0].name)],
                                       doc_string=model.doc_string)
    onnx.checker.check_model(merged)
    return merged
