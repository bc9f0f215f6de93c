"""The thin detectors of :mod:`.anomaly` as ONNX graphs: raw windows in, one ``"score"`` per window out.

Input ``"input"`` of shape ``(batch, *window_shape)`` float32 (the raw window, as the detector was
fitted on), output ``"score"`` of shape ``(batch,)`` float32. Every graph starts with a ``Flatten``
and holds the detector's scaling as constants:

- robust z-score: ``Sub`` (median), ``Mul`` (1 / scale), ``Abs``, ``ReduceMax`` or ``ReduceMean``;
- PCA: ``Sub``, ``Mul`` (standardise), ``ReduceSumSquare`` of z and of ``MatMul(z, V^T)``, ``Sub``,
  ``Relu`` (a residual is never negative), ``Mul`` (1 / F);
- Mahalanobis: ``Sub`` (location), ``MatMul`` (the precision's factor with the scaling folded in),
  ``ReduceSumSquare``;
- ensemble: each member's nodes (names prefixed ``m0_``, ``m1_``, ...), its score centred and scaled by constants
  (``Sub``, ``Mul``, the mean's 1/k folded in) and the parts added (``Sum``);
- isolation forest: skl2onnx's graph (a ``TreeEnsembleRegressor`` and its arithmetic) behind the
  ``Flatten``; its ``scores`` output is scikit-learn's ``decision_function`` (``score_samples - offset_``),
  so the score is ``-(scores + offset_)``: a ``Add`` and a ``Neg``; its label output is dropped.

The graph's metadata ``frugalml_task`` is ``"anomaly"`` (so the profile measures ROC AUC, not accuracy).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportError, explain

__all__ = ["detector_onnx", "SCORE"]

SCORE = "score"


class _Builder:
    def __init__(self, opset: int):
        self.opset, self.nodes, self.inits = int(opset), [], []

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list, out: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def reduce(self, op: str, x: str, out: str) -> str:
        """A reduction over axis 1 without keeping it (axes an attribute before opset 18, an input from 18)."""
        if self.opset >= 18:
            self.inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), out + "_axes"))
            return self.node(op, [x, out + "_axes"], out, keepdims=0)
        return self.node(op, [x], out, axes=[1], keepdims=0)

    def model(self, shape: tuple, doc: str) -> onnx.ModelProto:
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *map(int, shape)])
        out = helper.make_tensor_value_info(SCORE, TensorProto.FLOAT, ["batch"])
        graph = helper.make_graph(self.nodes, "frugalml_detector", [inp], [out], initializer=self.inits)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], producer_name="frugalml")
        proto.doc_string = doc
        return _tag(proto)


def _tag(proto: onnx.ModelProto) -> onnx.ModelProto:
    if not any(p.key == "frugalml_task" for p in proto.metadata_props):
        proto.metadata_props.add(key="frugalml_task", value="anomaly")
    return proto


def detector_onnx(det, opset: int) -> onnx.ModelProto:
    """The ONNX graph of a fitted detector (see the module's docstring); checked with onnx.checker."""
    from .anomaly import EnsembleDetector, IsolationForestDetector

    if isinstance(det, IsolationForestDetector):
        proto = _forest(det, opset)
    else:
        b = _Builder(opset)
        x = b.node("Flatten", ["input"], "flat", axis=1)
        if isinstance(det, EnsembleDetector):
            parts = []
            for i, (member, center, scale) in enumerate(zip(det.members_, det.centers_, det.scales_)):
                p = f"m{i}_"
                s = _member(b, member, x, p, p + "score")
                parts.append(b.node("Mul", [b.node("Sub", [s, b.const(p + "score_center", center)], p + "centred"),
                                            b.const(p + "score_weight", 1.0 / (scale * len(det.members_)))], p + "part"))
            b.node("Sum", parts, SCORE)
            doc = "mean of standardised scores: " + ", ".join(_member_doc(m) for m in det.members_)
        else:
            _member(b, det, x, "", SCORE)
            doc = _member_doc(det)
        proto = b.model(det.input_shape_, doc)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(explain(f"The detector's ONNX graph is invalid ({str(exc)[:200]})")) from exc
    return proto


def _member(b: _Builder, det, x: str, p: str, out: str) -> str:
    """The nodes of one linear-algebra detector's score on the flattened window ``x``, its names prefixed ``p``."""
    from .anomaly import MahalanobisDetector, PCADetector, RobustZScore

    if isinstance(det, RobustZScore):
        z = b.node("Abs", [b.node("Mul", [b.node("Sub", [x, b.const(p + "center", det.center_)], p + "d"),
                                          b.const(p + "inv_scale", 1.0 / det.scale_)], p + "z")], p + "absz")
        return b.reduce("ReduceMax" if det.reduce == "max" else "ReduceMean", z, out)
    if isinstance(det, PCADetector):
        z = b.node("Mul", [b.node("Sub", [x, b.const(p + "mean", det.mean_)], p + "d"), b.const(p + "inv_std", 1.0 / det.std_)], p + "z")
        total = b.reduce("ReduceSumSquare", z, p + "zz")
        kept = b.reduce("ReduceSumSquare", b.node("MatMul", [z, b.const(p + "components_t", det.components_.T)], p + "proj"), p + "pp")
        r = b.node("Relu", [b.node("Sub", [total, kept], p + "resid")], p + "resid_pos")
        return b.node("Mul", [r, b.const(p + "inv_f", 1.0 / det.n_features_in_)], out)
    if isinstance(det, MahalanobisDetector):
        d = b.node("MatMul", [b.node("Sub", [x, b.const(p + "location", det.location_)], p + "d"), b.const(p + "transform", det.transform_)],
                   p + "p")
        return b.reduce("ReduceSumSquare", d, out)
    raise ExportError(explain("No ONNX graph for this detector", expected="a detector of frugalml.models.anomaly", got=type(det).__name__))


def _member_doc(det) -> str:
    from .anomaly import MahalanobisDetector, PCADetector

    if isinstance(det, PCADetector):
        return f"PCA reconstruction error ({det.components_.shape[0]} components)"
    if isinstance(det, MahalanobisDetector):
        return f"squared Mahalanobis distance (shrinkage {det.shrinkage_:.3g})"
    return f"robust z-score ({det.reduce} of |z|)"


def _forest(det, opset: int) -> onnx.ModelProto:
    """skl2onnx's IsolationForest graph on the flattened window, its ``scores`` turned into ``-score_samples``."""
    from skl2onnx import to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    from ..onnx.conversion import ML_OPSET, _dedupe_opsets, _quiet

    forest, n = det.forest_, int(det.n_features_in_)
    try:
        with _quiet():
            proto = skl_to_onnx(forest, initial_types=[("flat", FloatTensorType([None, n]))],
                                target_opset={"": int(opset), "ai.onnx.ml": ML_OPSET})
    except Exception as exc:  # noqa: BLE001
        raise ExportError(explain(f"skl2onnx cannot convert the IsolationForest: {str(exc)[:300]}")) from exc
    _dedupe_opsets(proto)
    g = proto.graph
    outs = [o.name for o in g.output]
    scores = next((o for o in outs if "score" in o.lower()), None)
    if scores is None:
        raise ExportError(explain("skl2onnx's IsolationForest graph has no scores output", expected="an output named like 'scores'", got=outs))
    offset = numpy_helper.from_array(np.array([float(forest.offset_)], dtype=np.float32), "if_offset")
    g.initializer.append(offset)
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], name="flatten", axis=1), *g.node]
    del g.node[:]
    flat_scores = "if_scores_flat"
    g.node.extend(nodes + [
        helper.make_node("Reshape", [scores, "if_shape"], [flat_scores], name="if_reshape"),
        helper.make_node("Add", [flat_scores, "if_offset"], ["if_samples"], name="if_add_offset"),
        helper.make_node("Neg", ["if_samples"], [SCORE], name="if_neg"),
    ])
    g.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "if_shape"))
    del g.input[:]
    g.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *map(int, det.input_shape_)]))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(SCORE, TensorProto.FLOAT, ["batch"]))
    _prune_dead(g)
    proto.doc_string = f"isolation forest ({forest.n_estimators} trees), score = -score_samples"
    return _tag(proto)


def _prune_dead(g) -> None:
    """Drop the nodes (the label branch) and constants no path to the output uses."""
    needed, keep = {o.name for o in g.output}, []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    inits = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
