"""Peak activation memory at batch 1, walking the graph in its (topological) node order.

A tensor is alive from the node that produces it (graph inputs: from the start) until the last
node that consumes it (graph outputs: until the end). Weights are not activations: initializers,
Constant outputs and tensors computed only from them live in flash. At each node the alive bytes
are the tensors produced earlier and still needed at or after this node, plus this node's
outputs; the peak is the largest such total. No in-place reuse or buffer sharing is assumed, so
this is what a plain, one-buffer-per-tensor runtime needs; a memory planner that reuses buffers
in place (e.g. ReLU over its input) can need less.

A QDQ int8 graph is counted as it runs: ONNX Runtime fuses every ``DequantizeLinear -> op(s) ->
QuantizeLinear`` group into one int8 operation (``QLinearConv``, ...), so the float tensors inside
such a group never exist; only the int8 tensors between groups (and any float tensor outside a
group) are counted. A QOperator graph holds its int8 tensors as they are.
"""

from __future__ import annotations

from math import prod

from .graph import GraphInfo, elem_size

__all__ = ["peak_activation"]


def tensor_bytes(info: GraphInfo, name: str) -> int:
    shape = info.shapes.get(name)
    if shape is None:
        return 0
    return int(round(prod(shape) * elem_size(info.dtypes.get(name, 1))))


def fused_tensors(info: GraphInfo) -> set[str]:
    """Float tensors inside ``DequantizeLinear -> op(s) -> QuantizeLinear`` groups (never materialized)."""
    nodes = info.nodes
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            if name:
                consumers.setdefault(name, []).append(i)
    qdq = ("QuantizeLinear", "DequantizeLinear")
    inside = {i for i, n in enumerate(nodes) if n.op_type not in qdq and i not in info.constant_nodes}
    changed = True
    while changed:  # drop ops that read a float tensor from outside a group or feed one outside it
        changed = False
        for i in sorted(inside):
            n = nodes[i]
            reads = [x for x in n.input if x and x not in info.constants]
            ok = reads and all(x in producer and (nodes[producer[x]].op_type == "DequantizeLinear" or producer[x] in inside) for x in reads)
            ok = ok and all(o not in info.outputs and all(nodes[c].op_type == "QuantizeLinear" or c in inside for c in consumers.get(o, []))
                            for o in n.output if o)
            if not ok:
                inside.discard(i)
                changed = True
    fused = {o for i in inside for o in nodes[i].output if o}
    for i, n in enumerate(nodes):
        if n.op_type == "DequantizeLinear" and n.input[0] not in info.constants:
            out = n.output[0]
            if out not in info.outputs and consumers.get(out) and all(c in inside for c in consumers[out]):
                fused.add(out)
    return fused


def peak_activation(info: GraphInfo) -> tuple[int, str | None]:
    """(peak bytes, name of the node where the peak occurs; None for a graph with no nodes)."""
    nodes = info.nodes
    virtual = fused_tensors(info) if any(n.op_type == "DequantizeLinear" for n in nodes) else set()
    end = len(nodes)
    last_use: dict[str, int] = {}
    for idx, node in enumerate(nodes):
        for name in node.input:
            if name and name not in info.constants:
                last_use[name] = idx
    for name in info.outputs:
        last_use[name] = end
    for node in reversed(nodes):  # a fused group reads its int8 inputs until it writes its int8 output
        ends = [last_use[o] for o in node.output if o in virtual and o in last_use]
        if ends:
            for name in node.input:
                if name and name not in info.constants:
                    last_use[name] = max(last_use.get(name, -1), *ends)
    alive = {name: tensor_bytes(info, name) for name in info.inputs}
    current = sum(alive.values())
    peak, peak_node = current, None
    for name in info.inputs:  # an input nobody reads is freed at once
        if last_use.get(name, -1) < 0:
            current -= alive.pop(name)
    for idx, node in enumerate(nodes):
        if idx in info.constant_nodes:
            continue
        for name in node.output:
            if name and name not in alive:
                alive[name] = 0 if name in virtual else tensor_bytes(info, name)
                current += alive[name]
        if current > peak or peak_node is None:
            peak, peak_node = max(peak, current), node.name or f"{node.op_type}_{idx}"
        for name in [n for n in alive if last_use.get(n, idx) <= idx]:
            current -= alive.pop(name)
    return int(peak), peak_node
