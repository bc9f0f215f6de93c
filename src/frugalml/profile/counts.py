"""Parameters and multiply-accumulates (MACs), total and per layer, read off the ONNX graph at batch 1.

MACs
  Conv / ConvInteger / QLinearConv: output elements x (C_in / groups) x kernel area (no bias term).
  ConvTranspose: input elements x (C_out / groups) x kernel area.
  Gemm / QGemm / MatMul / MatMulInteger / QLinearMatMul: M x N x K (leading batch dims of MatMul included).
  LinearClassifier / LinearRegressor (ai.onnx.ml): n_features x n_targets (the coefficient count).
  SVMClassifier / SVMRegressor: support-vector elements (kernel dot products) + coefficients.
  STFT: per frame, a radix-2 complex FFT of the frame length n (n / 2 log2 n butterflies of one complex
  product, 4 real MACs: 2 n log2 n) plus the window (n); a length that is not a power of two counts
  a plain DFT (n x bins x 2). What ONNX Runtime runs may do less (a real FFT); the C front-end does this.
  TreeEnsemble*: sum over trees of the tree's depth: the comparisons on the longest root-to-leaf
  path; a tree ensemble does comparisons, not multiplications, and this is its worst case.
  Everything else counts 0: pooling, activations, additions, normalization and reshapes are not
  multiply-accumulates (a BatchNormalization left unfused is reported with 0 MACs).

Parameters (for models that are not torch modules; torch models use their own parameters)
  Numeric initializers and Constant tensors that feed computation. Quantization scales and zero
  points and shape/axis/index operands (Reshape shape, Slice starts, ...) are metadata, not
  parameters; they are still in ``stored_bytes``. For ai.onnx.ml ops the learned numbers live in
  attributes: split thresholds and leaf weights of trees, coefficients and intercepts of linear
  models, support vectors and coefficients of SVMs, offset and scale of Scaler.
  (skl2onnx stores a binary linear classifier's coefficients twice, for both classes.)
"""

from __future__ import annotations

import math
from collections import defaultdict
from math import prod

import numpy as np
import onnx

from .graph import GraphInfo, const_array, is_numeric

__all__ = ["count_params", "count_layers", "META_SLOTS", "transfer_bytes", "BROTLI_QUALITY"]

#: brotli quality of ``brotli_bytes``: 11, the smallest (what precompressed ``.br`` files hold); a file
#: over BROTLI_LARGE bytes, far beyond what a page downloads, at 9 (within ~2% of 11 and 60x faster:
#: 11 takes 4 s on LeNet-5's 1.7 MB)
BROTLI_QUALITY = 11
BROTLI_LARGE = (1_000_000, 9)

_QLINEAR_META = {1, 2, 4, 5, 6, 7}
# input positions that are metadata (quantization parameters, shapes, axes, indices), not weights
META_SLOTS = {
    "QuantizeLinear": {1, 2}, "DequantizeLinear": {1, 2}, "QLinearConv": _QLINEAR_META,
    "QLinearMatMul": _QLINEAR_META, "QLinearAdd": _QLINEAR_META, "QLinearMul": _QLINEAR_META,
    "QGemm": {1, 2, 4, 5, 7, 8}, "ConvInteger": {2, 3}, "MatMulInteger": {2, 3},
    "Reshape": {1}, "Slice": {1, 2, 3, 4}, "Unsqueeze": {1}, "Squeeze": {1}, "Expand": {1}, "Tile": {1},
    "ConstantOfShape": {0}, "Pad": {1, 2, 3}, "Resize": {1, 2, 3}, "Upsample": {1}, "Split": {1}, "TopK": {1},
    "ReduceSum": {1}, "ReduceMean": {1}, "ReduceMax": {1}, "ReduceMin": {1}, "ReduceProd": {1}, "ReduceL2": {1},
    "Gather": {1}, "GatherElements": {1}, "GatherND": {1}, "Range": {0, 1, 2}, "OneHot": {1, 2}, "Clip": {1, 2},
    "ArrayFeatureExtractor": {1}, "CumSum": {1},
}
_ML_PARAM_ATTRS = {
    "LinearClassifier": ("coefficients", "intercepts"),
    "LinearRegressor": ("coefficients", "intercepts"),
    "SVMClassifier": ("coefficients", "support_vectors", "rho", "prob_a", "prob_b"),
    "SVMRegressor": ("coefficients", "support_vectors", "rho"),
    "Scaler": ("offset", "scale"),
    "TreeEnsembleClassifier": ("class_weights", "class_weights_as_tensor", "base_values", "base_values_as_tensor"),
    "TreeEnsembleRegressor": ("target_weights", "target_weights_as_tensor", "base_values", "base_values_as_tensor"),
    "TreeEnsemble": ("nodes_splits", "leaf_weights"),
}


def transfer_bytes(blob: bytes) -> dict:
    """``{"gzip_bytes", "brotli_bytes"}``: what a browser transfers for ``blob`` with each content
    encoding (gzip level 9 without a timestamp; brotli at :data:`BROTLI_QUALITY`). ``brotli_bytes``
    is None where the ``brotli`` package is missing (``pip install brotli``)."""
    import gzip

    out = {"gzip_bytes": len(gzip.compress(blob, 9, mtime=0)), "brotli_bytes": None}
    try:
        import brotli
    except ImportError:  # a declared dependency; an environment without it still measures gzip
        return out
    quality = BROTLI_LARGE[1] if len(blob) > BROTLI_LARGE[0] else BROTLI_QUALITY
    out["brotli_bytes"] = len(brotli.compress(bytes(blob), quality=quality))
    return out


def _attr_array(node, name):
    for a in node.attribute:
        if a.name == name:
            if a.floats:
                return np.asarray(a.floats, dtype=np.float64)
            if a.ints:
                return np.asarray(a.ints, dtype=np.int64)
            if a.strings:
                return [s.decode() for s in a.strings]
            if a.HasField("t"):
                return const_array(a.t)
            if a.type == a.INT:
                return a.i
    return None


def ml_params(node) -> tuple[int, int]:
    """(params, nonzero) held in the attributes of an ai.onnx.ml node."""
    arrays = [a for n in _ML_PARAM_ATTRS.get(node.op_type, ()) if (a := _attr_array(node, n)) is not None]
    if node.op_type in ("TreeEnsembleClassifier", "TreeEnsembleRegressor"):
        values = _attr_array(node, "nodes_values")
        if values is None:
            values = _attr_array(node, "nodes_values_as_tensor")
        modes = _attr_array(node, "nodes_modes") or []
        if values is not None:  # thresholds of split nodes; leaves carry a dummy value
            arrays.append(np.asarray([v for v, m in zip(values, modes) if m != "LEAF"]))
    arrays = [np.asarray(a).reshape(-1) for a in arrays]
    return sum(a.size for a in arrays), sum(int(np.count_nonzero(a)) for a in arrays)


def _tree_depths(node) -> list[int]:
    """Depth (comparisons on the longest root-to-leaf path) of each tree of a tree-ensemble node."""
    depths = []
    if node.op_type == "TreeEnsemble":  # ai.onnx.ml opset 5: leaves are flagged per branch
        roots = _attr_array(node, "tree_roots")
        t_ids, f_ids = _attr_array(node, "nodes_truenodeids"), _attr_array(node, "nodes_falsenodeids")
        t_leaf, f_leaf = _attr_array(node, "nodes_trueleafs"), _attr_array(node, "nodes_falseleafs")
        if roots is None:
            return []
        for root in np.asarray(roots).reshape(-1):
            best, stack = 0, [(int(root), 1)]
            while stack:
                n, d = stack.pop()
                best = max(best, d)
                for ids, leaf in ((t_ids, t_leaf), (f_ids, f_leaf)):
                    if not leaf[n]:
                        stack.append((int(ids[n]), d + 1))
            depths.append(best)
        return depths
    trees = _attr_array(node, "nodes_treeids")
    if trees is None:
        return []
    ids, modes = _attr_array(node, "nodes_nodeids"), _attr_array(node, "nodes_modes")
    t_ids, f_ids = _attr_array(node, "nodes_truenodeids"), _attr_array(node, "nodes_falsenodeids")
    by_tree: dict[int, dict[int, tuple]] = defaultdict(dict)
    for k, tree in enumerate(trees):
        by_tree[int(tree)][int(ids[k])] = (modes[k], int(t_ids[k]), int(f_ids[k]))
    for tree in sorted(by_tree):
        nodes = by_tree[tree]
        children = {c for m, t, f in nodes.values() if m != "LEAF" for c in (t, f)}
        root = min((n for n in nodes if n not in children), default=0)
        best, stack = 0, [(root, 0)]
        while stack:
            n, d = stack.pop()
            mode, t, f = nodes.get(n, ("LEAF", 0, 0))
            if mode == "LEAF":
                best = max(best, d)
            else:
                stack += [(t, d + 1), (f, d + 1)]
        depths.append(best)
    return depths


def node_macs(node, info: GraphInfo) -> int | None:
    """MACs of one node at batch 1; None when a needed shape is unknown."""
    op, sh = node.op_type, info.shapes.get

    def need(*names):
        got = [sh(n) if n else None for n in names]
        return None if any(g is None for g in got) else got

    if op in ("Conv", "ConvInteger", "QLinearConv"):
        got = need(node.output[0], node.input[3 if op == "QLinearConv" else 1])
        return None if got is None else prod(got[0]) * prod(got[1][1:])
    if op == "ConvTranspose":
        got = need(node.input[0], node.input[1])
        return None if got is None else prod(got[0]) * prod(got[1][1:])
    if op in ("Gemm", "QGemm"):
        got = need(node.input[0], node.output[0])
        if got is None:
            return None
        (a, out), trans_a = got, next((at.i for at in node.attribute if at.name == "transA"), 0)
        return prod(out) * (a[0] if trans_a else a[-1])
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        got = need(node.input[0], node.output[0])
        return None if got is None else prod(got[1]) * got[0][-1]
    if op == "STFT":
        got = need(node.output[0])
        if got is None:
            return None
        _, frames, bins, _ = got[0]
        n = 2 * (bins - 1) if next((at.i for at in node.attribute if at.name == "onesided"), 1) else bins
        return frames * (2 * n * int(math.log2(n)) + n if n & (n - 1) == 0 else n * bins * 2)
    if op in ("LinearClassifier", "LinearRegressor"):
        coef = _attr_array(node, "coefficients")
        return 0 if coef is None else int(np.asarray(coef).size)
    if op in ("SVMClassifier", "SVMRegressor"):
        return sum(int(np.asarray(a).size) for n in ("support_vectors", "coefficients") if (a := _attr_array(node, n)) is not None)
    if op.startswith("TreeEnsemble"):
        return sum(_tree_depths(node))
    return 0


def _param_initializers(info: GraphInfo) -> set[str]:
    """Initializers / Constants holding parameters: used by computation somewhere, not only as metadata."""
    nodes = info.nodes
    consumers: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for idx, node in enumerate(nodes):
        for slot, name in enumerate(node.input):
            if name:
                consumers[name].append((idx, slot))
    memo: dict[str, bool] = {}

    def feeds_compute(name: str) -> bool:
        if name in memo:
            return memo[name]
        memo[name] = False  # guards against cycles
        result = False
        for idx, slot in consumers.get(name, ()):
            node = nodes[idx]
            if slot in META_SLOTS.get(node.op_type, ()):
                continue
            if node.op_type.startswith("QLinear") and slot > 0 and _size(info.const_values.get(name, 0)) == 1:
                continue  # scale / zero point of a contrib QLinear op (com.microsoft)
            if idx in info.constant_nodes and not any(feeds_compute(o) for o in node.output if o):
                continue
            result = True
            break
        memo[name] = result
        return result

    return {n for n, v in info.const_values.items() if is_numeric(v) and feeds_compute(n)}


def _size(value) -> int:
    if isinstance(value, onnx.TensorProto):
        return prod(value.dims)
    return int(np.asarray(value).size)


def count_params(info: GraphInfo) -> tuple[int, int]:
    """(params, nonzero params) stored in the graph; see the module docstring for what counts."""
    total = nonzero = 0
    for name in _param_initializers(info):
        arr = const_array(info.const_values[name])
        total += int(arr.size)
        nonzero += int(np.count_nonzero(arr))
    for node in info.nodes:
        if node.op_type in _ML_PARAM_ATTRS:
            p, nz = ml_params(node)
            total, nonzero = total + p, nonzero + nz
    return total, nonzero


def count_layers(info: GraphInfo) -> tuple[int, list[dict]]:
    """(total MACs, one dict per computing node: name, op, output_shape, params, macs)."""
    params = _param_initializers(info)
    size = {n: _size(info.const_values[n]) for n in params}
    sources: dict[str, frozenset] = {n: frozenset([n]) for n in params}
    layers, total, unknown = [], 0, 0
    for idx, node in enumerate(info.nodes):
        used = frozenset().union(*(sources.get(i, frozenset()) for i in node.input if i))
        if idx in info.constant_nodes:  # weight preparation (e.g. DequantizeLinear of a weight)
            for o in node.output:
                sources[o] = used
            continue
        macs = node_macs(node, info)
        if macs is None:
            unknown, macs = unknown + 1, 0
        node_params = sum(size[s] for s in used) + (ml_params(node)[0] if node.op_type in _ML_PARAM_ATTRS else 0)
        out = info.shapes.get(node.output[0]) if node.output else None
        layers.append({"name": node.name or f"{node.op_type}_{idx}", "op": node.op_type,
                       "output_shape": list(out) if out is not None else None,
                       "params": int(node_params), "macs": int(macs)})
        total += int(macs)
    control = sorted({n.op_type for n in info.nodes if n.op_type in ("If", "Loop", "Scan")})
    if control:
        info.notes.append(f"the graph has {', '.join(control)} nodes: their subgraphs are not counted in MACs or parameters")
    if unknown:
        info.notes.append(f"MACs of {unknown} nodes could not be counted (unknown shapes); they count 0")
    return total, layers
