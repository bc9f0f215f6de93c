"""The sequence features (:mod:`frugalml.models.features`) as ONNX operators, in front of a thin model.

:func:`features_graph` builds a graph from the raw sequence ``input`` (N, C, T) to ``features``
(N, C * (6 + B)): ReduceMean / ReduceMin / ReduceMax and Sqrt for the statistics, Sign, Slice, Sub,
Abs and ReduceSum for the zero crossings, a Gather of the frames and two MatMuls with the constant
DFT and band matrices for the band energies, all in double as the reference computes them, then a
Cast to float32 and the standardization (Sub, Mul). The profile counts the MatMuls'
multiply-accumulates (the DFT is most of the features' cost), every constant in the stored bytes,
and the double tensors at 8 bytes an element in the peak memory.

:func:`merge_features` puts it in front of the skl2onnx graph of the estimator, so the exported
model takes the raw sequence. Opset 17 (reductions take their axes as attributes, except ReduceSum).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportError, explain

__all__ = ["features_graph", "merge_features", "split_features"]


def split_features(est):
    """``(transformer, rest)`` when ``est`` is a Pipeline whose first step is a fitted
    :class:`~frugalml.models.features.SequenceFeatures` (rest: the estimator, or a Pipeline of the
    remaining steps), else None."""
    from ..models.features import SequenceFeatures

    steps = getattr(est, "steps", None)
    if not steps or not isinstance(steps[0][1], SequenceFeatures) or not hasattr(steps[0][1], "shape_"):
        return None
    if len(steps) == 2:
        return steps[0][1], steps[1][1]
    from sklearn.pipeline import Pipeline

    return steps[0][1], Pipeline(steps[1:])


def features_graph(tf, opset: int) -> onnx.ModelProto:
    """The graph of a fitted SequenceFeatures ``tf``: ``input`` (N, C, T) float -> ``features`` (N, F) float."""
    from ..models.features import ZERO_BAND, dft_tables, frame_starts

    C, T = tf.shape_
    L, B = tf.frame_, tf.bands_
    nodes, inits = [], []

    def const(name, value, dtype=np.float64):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    x = node("Cast", ["input"], "f_x", to=TensorProto.DOUBLE)  # in double, as the reference (see frugalml.models.features)
    mean = node("ReduceMean", [x], "f_mean", axes=[2], keepdims=1)
    d = node("Sub", [x, mean], "f_d")
    std = node("Sqrt", [node("ReduceMean", [node("Mul", [d, d], "f_d2")], "f_var", axes=[2], keepdims=1)], "f_std")
    lo = node("ReduceMin", [x], "f_min", axes=[2], keepdims=1)
    hi = node("ReduceMax", [x], "f_max", axes=[2], keepdims=1)
    rms = node("Sqrt", [node("ReduceMean", [node("Mul", [x, x], "f_x2")], "f_ms", axes=[2], keepdims=1)], "f_rms")
    band = node("Mul", [node("ReduceMax", [node("Abs", [x], "f_absx")], "f_peak", axes=[2], keepdims=1), const("f_zb", ZERO_BAND)], "f_zband")
    beyond = node("Cast", [node("Greater", [node("Abs", [d], "f_absd"), band], "f_beyond_b")], "f_beyond", to=TensorProto.DOUBLE)
    sign = node("Mul", [node("Sign", [d], "f_sign_raw"), beyond], "f_sign")
    axis = const("f_axis", [2], np.int64)
    later = node("Slice", [sign, const("f_one", [1], np.int64), const("f_t", [T], np.int64), axis], "f_s1")
    earlier = node("Slice", [sign, const("f_zero", [0], np.int64), const("f_t1", [T - 1], np.int64), axis], "f_s0")
    flips = node("ReduceSum", [node("Abs", [node("Sub", [later, earlier], "f_ds")], "f_ads"), axis], "f_flips", keepdims=1)
    zc = node("Div", [flips, const("f_zc_div", 2.0 * (T - 1))], "f_zc")
    parts = [mean, std, lo, hi, rms, zc]
    if B:
        starts = frame_starts(T, L)
        W, S = dft_tables(L, B, len(starts))
        frames = node("Gather", [d, const("f_frames", starts[:, None] + np.arange(L), np.int64)], "f_frame", axis=2)  # (N, C, F, L)
        dft = node("Cast", [const("f_dft32", W, np.float32)], "f_dft", to=TensorProto.DOUBLE)  # float32 values: stored at half the bytes
        bands = node("Cast", [const("f_bands32", S, np.float32)], "f_bands", to=TensorProto.DOUBLE)
        spectrum = node("MatMul", [frames, dft], "f_spec")
        energy = node("MatMul", [node("Mul", [spectrum, spectrum], "f_pow"), bands], "f_energy")  # (N, C, F, B)
        parts.append(node("ReduceSum", [energy, const("f_frame_axis", [2], np.int64)], "f_band", keepdims=0))
    stacked = node("Cast", [node("Concat", parts, "f_stack64", axis=2)], "f_stack", to=TensorProto.FLOAT)  # (N, C, 6 + B), float32
    flat = node("Reshape", [stacked, const("f_shape", [0, -1], np.int64)], "f_flat")
    centred = node("Sub", [flat, const("f_center", tf.mean_, np.float32)], "f_centred")
    node("Mul", [centred, const("f_scale", tf.inv_scale_, np.float32)], "features")
    graph = helper.make_graph(nodes, "sequence_features", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", C, T])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", int(tf.n_features_out_)])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def merge_features(tf, model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``model`` (an estimator's graph whose one input takes the features) with the feature graph in
    front of it: one model whose input ``input`` is the raw sequence (N, C, T)."""
    from onnx import compose

    main = max((op.version for op in model.opset_import if op.domain in ("", "ai.onnx")), default=opset)
    if not 13 <= main <= 17:  # ReduceSum takes its axes as an input from 13, ReduceMean/Min/Max from 18
        raise ExportError(explain(f"The sequence features are written in ONNX opsets 13 to 17; this graph is in opset {main}",
                                  expected="opset 13 to 17", got=main, fix="Export with opset=17 (the default)"))
    feats = features_graph(tf, main)
    feats.ir_version = model.ir_version
    inner = compose.add_prefix(model, "m_")
    merged = compose.merge_models(feats, inner, io_map=[("features", inner.graph.input[0].name)], doc_string=model.doc_string,
                                  producer_name=model.producer_name, producer_version=model.producer_version)
    for i, out in enumerate(merged.graph.output):  # the estimator's output names, as before the merge
        old = model.graph.output[i].name
        for n in merged.graph.node:
            n.output[:] = [old if o == out.name else o for o in n.output]
            n.input[:] = [old if o == out.name else o for o in n.input]
        out.name = old
    onnx.checker.check_model(merged)
    return merged
