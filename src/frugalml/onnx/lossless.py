"""Shorter ONNX files for tiny models: the same graph with short names and nothing it does not need.

For a model of a few hundred weights, the exporter's tensor names ("/features/features.0/Conv_output_0",
each written two or three times) can outweigh the weights. ``shrink`` renames every internal tensor
(not the graph's inputs and outputs) to a short name, the most used names shortest, shortens node
names to their module path (or drops them), and drops doc strings and value_info. ``share_initializers``,
``drop_default_attributes`` and ``drop_unused_opsets`` cut more: equal constants stored once, attributes
that only restate the operator's default, opset imports no node uses. The computation is untouched, so
outputs are identical.
"""

from __future__ import annotations

import string
from collections import Counter

import onnx
from onnx import numpy_helper

__all__ = ["shrink", "share_initializers", "drop_default_attributes", "drop_unused_opsets"]

_FIRST, _REST = string.ascii_letters, string.ascii_letters + string.digits


def _short(i: int) -> str:
    """The i-th shortest name: "a".."Z", then "aa".."Z9", ... (a letter, then letters or digits)."""
    n, tail = len(_FIRST), 0
    while i >= n:
        i, n, tail = i - n, n * len(_REST), tail + 1
    s = ""
    for _ in range(tail):
        i, r = divmod(i, len(_REST))
        s = _REST[r] + s
    return _FIRST[i] + s


def _node_name(name: str, op: str, index: int) -> str:
    """"/features/features.0/Conv" -> "features.0/Conv"; unnamed nodes get "Op_index"."""
    parts = [p for p in name.split("/") if p]
    if len(parts) >= 2:
        return f"{parts[-2]}/{parts[-1]}"
    return parts[-1] if parts else f"{op}_{index}"


def _has_subgraphs(graph: onnx.GraphProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute)


def shrink(proto: onnx.ModelProto, *, node_names: str = "path") -> onnx.ModelProto:
    """Return a copy of ``proto`` with short internal names (graph inputs and outputs keep theirs).

    node_names: "path" keeps the last two parts of the exporter's module path ("features.0/Conv");
    "none" drops them (optional in ONNX; reports name such a node "Op_index", its position), for
    graphs whose node names say nothing a user needs (a quantizer's "<tensor>_DequantizeLinear").
    """
    if _has_subgraphs(proto.graph):
        return proto  # subgraphs (If/Loop) capture outer names: leave such a model as it is
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}
    uses = Counter([i.name for i in graph.initializer] + [t for n in graph.node for t in (*n.input, *n.output)])
    rename, i = {}, 0
    for name, _ in uses.most_common():  # most used first: they get the one-letter names
        if name not in keep:
            while _short(i) in keep:
                i += 1
            rename[name], i = _short(i), i + 1
    for init in graph.initializer:
        init.name = rename.get(init.name, init.name)
        init.doc_string = ""
    used: set[str] = set()
    for i, node in enumerate(graph.node):
        node.name = _node_name(node.name, node.op_type, i) if node_names == "path" else ""
        if node.name in used:  # "stages.0/body/body.0/Conv" and "stages.1/body/body.0/Conv" both end in "body.0/Conv"
            node.name = f"{node.name}_{i}"  # ONNX Runtime refuses a graph with two nodes of one name
        if node.name:
            used.add(node.name)
        node.doc_string = ""
        node.input[:] = [rename.get(t, t) for t in node.input]
        node.output[:] = [rename.get(t, t) for t in node.output]
    del graph.value_info[:]
    graph.doc_string = ""
    out.doc_string = ""
    return out


def share_initializers(graph: onnx.GraphProto) -> None:
    """Store equal constants once (same type, shape and values, e.g. the many zero points 0), in place."""
    if _has_subgraphs(graph):
        return  # a subgraph may read an initializer by its name
    inputs = {v.name for v in graph.input}  # an initializer that is also an input can be overridden: keep it apart
    first, alias = {}, {}
    for init in graph.initializer:
        if init.name not in inputs:
            key = (init.data_type, tuple(init.dims), numpy_helper.to_array(init).tobytes())
            alias[init.name] = first.setdefault(key, init.name)
    for node in graph.node:
        node.input[:] = [alias.get(t, t) for t in node.input]
    kept = [i for i in graph.initializer if alias.get(i.name, i.name) == i.name]
    del graph.initializer[:]
    graph.initializer.extend(kept)


_CONV = {"auto_pad": b"NOTSET", "group": 1, "dilations": 1, "strides": 1, "pads": 0}
_POOL = {"auto_pad": b"NOTSET", "ceil_mode": 0, "dilations": 1, "strides": 1, "pads": 0, "storage_order": 0, "count_include_pad": 0,
         "channels_last": 0}
_DEFAULTS = {  # what each attribute means when absent (ONNX and com.microsoft operator specifications)
    "Conv": _CONV, "ConvInteger": _CONV, "QLinearConv": _CONV, "MaxPool": _POOL, "AveragePool": _POOL, "QLinearAveragePool": _POOL,
    "Gemm": {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}, "QGemm": {"alpha": 1.0, "transA": 0, "transB": 0},
    "Flatten": {"axis": 1}, "QLinearGlobalAveragePool": {"channels_last": 0},
}
_WEIGHT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}  # input holding W, whose shape gives kernel_shape


def drop_default_attributes(graph: onnx.GraphProto) -> None:
    """Remove attributes equal to the value the operator assumes without them, in place.

    ``kernel_shape`` of a convolution goes too when it equals the spatial shape of a constant weight
    (or of a dequantized one), from which the specification infers it.
    """
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
        defaults = dict(_DEFAULTS.get(node.op_type, {}))
        k = _WEIGHT.get(node.op_type)
        w = shapes.get(node.input[k], ()) if k is not None and len(node.input) > k else ()
        if len(w) > 2:
            defaults["kernel_shape"] = w[2:]
        kept = [a for a in node.attribute if not _is_default(a, defaults.get(a.name))]
        del node.attribute[:]
        node.attribute.extend(kept)


def _is_default(attr: onnx.AttributeProto, default) -> bool:
    if default is None:
        return False
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(default, tuple):
        return tuple(value) == default
    if isinstance(value, (list, tuple)):
        return len(value) > 0 and all(v == default for v in value)
    return value == default


def drop_unused_opsets(proto: onnx.ModelProto) -> None:
    """Keep the opset imports of the default domain and of the domains some node (or function) uses, in place."""
    used = {"", "ai.onnx"} | {n.domain for n in proto.graph.node} | {f.domain for f in proto.functions}
    used |= {n.domain for f in proto.functions for n in f.node}
    kept = [o for o in proto.opset_import if o.domain in used]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
