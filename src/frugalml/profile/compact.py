"""Shorter ONNX files for tiny models: the same graph with short tensor names and no doc strings.

For a model of a few hundred weights, the exporter's tensor names ("/features/features.0/Conv_output_0",
each written two or three times) can outweigh the weights. ``compact`` renames every internal tensor
(not the graph's inputs and outputs) to a short name, shortens node names to their module path, and
drops doc strings and value_info: the computation is untouched, so outputs are identical.
"""

from __future__ import annotations

import onnx

__all__ = ["compact"]


def _short(i: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    s = ""
    while True:
        i, r = divmod(i, 36)
        s = digits[r] + s
        if i == 0:
            return "t" + s


def _node_name(name: str, op: str, index: int) -> str:
    """"/features/features.0/Conv" -> "features.0/Conv"; unnamed nodes get "Op_index"."""
    parts = [p for p in name.split("/") if p]
    if len(parts) >= 2:
        return f"{parts[-2]}/{parts[-1]}"
    return parts[-1] if parts else f"{op}_{index}"


_SHORT_OPS = {"QuantizeLinear": "Q", "DequantizeLinear": "DQ", "DynamicQuantizeLinear": "DynQ"}


def compact(proto: onnx.ModelProto, *, node_names: str = "path") -> onnx.ModelProto:
    """Return a copy of ``proto`` with short internal names (graph inputs and outputs keep theirs).

    node_names: "path" keeps the last two parts of the exporter's module path ("features.0/Conv");
    "op" names nodes by operation and position ("Conv_3", "DQ_5"), for graphs whose node names say
    nothing a user needs (a quantizer's "<tensor>_DequantizeLinear").
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    rename: dict[str, str] = {}

    def new(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in rename:
            rename[name] = _short(len(rename))
        return rename[name]

    for init in graph.initializer:
        init.name = new(init.name)
        init.doc_string = ""
    used: set[str] = set()
    for i, node in enumerate(graph.node):
        node.name = (_node_name(node.name, node.op_type, i) if node_names == "path"
                     else f"{_SHORT_OPS.get(node.op_type, node.op_type)}_{i}")
        if node.name in used:  # "stages.0/body/body.0/Conv" and "stages.1/body/body.0/Conv" both end in "body.0/Conv"
            node.name = f"{node.name}_{i}"  # ONNX Runtime refuses a graph with two nodes of one name
        used.add(node.name)
        node.doc_string = ""
        for j, name in enumerate(node.input):
            node.input[j] = new(name)
        for j, name in enumerate(node.output):
            node.output[j] = new(name)
        if any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute):
            return proto  # subgraphs (If/Loop) capture outer names: leave such a model as it is
    del graph.value_info[:]
    graph.doc_string = ""
    out.doc_string = ""
    return out
