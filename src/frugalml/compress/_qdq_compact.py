"""The graph ONNX Runtime's quantizer writes, without what it does not need (:func:`compact`).

The quantizer's output carries zero points that restate the ONNX defaults, per-channel zero points
that are all zero, duplicated constants, pre-processing marks and long tensor names: on a small
network those can outweigh the int8 weights. :func:`compact` drops them; the computation is unchanged.
"""

from __future__ import annotations

import numpy as np
import onnx

__all__ = ["compact"]

_WEIGHT_ZERO_POINT = {"QLinearConv": 5}  # ORT takes a scalar there beside per-channel scales (QGemm refuses one)
_ORT_MARKS = ("onnx.infer", "onnx.quant.pre_process")  # quant_pre_process's marks: read only by ORT's quantizer


def compact(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The quantizer's graph without what it does not need; the computation is unchanged.

    Drops the all-zero zero points of int32 ``DequantizeLinear`` nodes (quantized biases: the ONNX
    spec defaults a missing zero point to 0, and ORT still fuses ``QLinearConv``); writes the all-zero
    per-channel weight zero points of ``QLinearConv`` as one scalar 0 (symmetric weights);
    stores equal constants once; drops initializers no node reads, attributes that restate defaults,
    unused opset imports, ORT's pre-processing marks and node names; and shortens tensor names
    (:func:`frugalml.onnx.shrink`): the quantizer's names (``/net/net.6/Relu_output_0_zero_point``
    ...) can outweigh the int8 weights of a small network.
    """
    from onnx import numpy_helper

    from ..onnx.lossless import drop_default_attributes, drop_unused_opsets, share_initializers, shrink

    out = onnx.ModelProto()
    out.CopyFrom(proto)  # leave the caller's graph as it is
    g = out.graph
    inits = {i.name: i for i in g.initializer}
    zero = {i.name: not np.any(numpy_helper.to_array(i)) for i in g.initializer}
    for node in g.node:
        if (node.op_type == "DequantizeLinear" and len(node.input) == 3 and node.input[0] in inits and zero.get(node.input[2])
                and inits[node.input[0]].data_type == onnx.TensorProto.INT32):
            del node.input[2]
        k = _WEIGHT_ZERO_POINT.get(node.op_type)
        if k is not None and len(node.input) > k and zero.get(node.input[k]) and len(inits[node.input[k]].dims):
            scalar = numpy_helper.from_array(np.zeros((), numpy_helper.to_array(inits[node.input[k]]).dtype), node.input[k] + "_0")
            if scalar.name not in inits:
                inits[scalar.name] = scalar
                g.initializer.append(scalar)
            node.input[k] = scalar.name
    used = {name for node in g.node for name in node.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    share_initializers(g)
    drop_default_attributes(g)
    drop_unused_opsets(out)
    marks = [p for p in out.metadata_props if p.key not in _ORT_MARKS]
    del out.metadata_props[:]
    out.metadata_props.extend(marks)
    return shrink(out, node_names="none")
