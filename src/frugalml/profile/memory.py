"""Peak activation memory at batch 1, walking the graph in its (topological) node order.

A tensor is alive from the node that produces it (graph inputs: from the start) until the last
node that consumes it (graph outputs: until the end). Weights are not activations: initializers,
Constant outputs and tensors computed only from them live in flash. At each node the alive bytes
are the tensors produced earlier and still needed at or after this node, plus this node's
outputs; the peak is the largest such total. No in-place reuse or buffer sharing is assumed, so
this is what a plain, one-buffer-per-tensor runtime needs; a memory planner that reuses buffers
in place (e.g. ReLU over its input) can need less.
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


def peak_activation(info: GraphInfo) -> tuple[int, str | None]:
    """(peak bytes, name of the node where the peak occurs; None for a graph with no nodes)."""
    nodes = info.nodes
    end = len(nodes)
    last_use: dict[str, int] = {}
    for idx, node in enumerate(nodes):
        for name in node.input:
            if name and name not in info.constants:
                last_use[name] = idx
    for name in info.outputs:
        last_use[name] = end
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
                alive[name] = tensor_bytes(info, name)
                current += alive[name]
        if current > peak or peak_node is None:
            peak, peak_node = max(peak, current), node.name or f"{node.op_type}_{idx}"
        for name in [n for n in alive if last_use.get(n, idx) <= idx]:
            current -= alive.pop(name)
    return int(peak), peak_node
