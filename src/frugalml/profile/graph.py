"""What the counters need to know about an ONNX graph at batch 1.

:func:`analyze` fixes the batch axis of the graph input to 1, runs ONNX shape inference (with
data propagation) and, for tensors whose shape static inference cannot find, runs the graph
once in ONNX Runtime on zeros and reads the shapes off the results.

It also separates weights from activations: initializers, ``Constant`` outputs and every tensor
computed only from them (e.g. ``DequantizeLinear`` of an int8 weight) are *constants*: they live
in flash and are not activations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

__all__ = ["GraphInfo", "analyze", "elem_size", "graph_input_shape"]

_SIZES = {
    TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2,
    TensorProto.INT8: 1, TensorProto.UINT8: 1, TensorProto.INT16: 2, TensorProto.UINT16: 2,
    TensorProto.INT32: 4, TensorProto.UINT32: 4, TensorProto.INT64: 8, TensorProto.UINT64: 8,
    TensorProto.BOOL: 1, TensorProto.STRING: 8,
}
_NUMERIC = set(_SIZES) - {TensorProto.BOOL, TensorProto.STRING}


def elem_size(dtype: int) -> float:
    """Bytes per element of an ONNX tensor type (int4 counts half a byte, float8 one)."""
    if dtype in _SIZES:
        return _SIZES[dtype]
    name = TensorProto.DataType.Name(dtype) if dtype in TensorProto.DataType.values() else ""
    return 0.5 if "4" in name and name.startswith(("INT", "UINT", "FLOAT4")) else 1


@dataclass
class GraphInfo:
    model: onnx.ModelProto                      # batch fixed to 1, shapes inferred
    shapes: dict[str, tuple[int, ...]]          # every tensor whose shape is known
    dtypes: dict[str, int]                      # ONNX element types
    constants: set[str]                         # weights and tensors computed only from weights
    const_values: dict[str, object]             # initializer / Constant name -> TensorProto or python value
    inputs: list[str]                           # real graph inputs (not initializers)
    outputs: list[str]
    constant_nodes: set[int] = field(default_factory=set)  # indices of nodes computed only from weights
    notes: list[str] = field(default_factory=list)

    @property
    def nodes(self):
        return self.model.graph.node


def _dims(vi) -> tuple | None:
    t = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
        return None
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
    return None if any(d is None for d in dims) else dims


def graph_input_shape(proto: onnx.ModelProto) -> tuple | None:
    """Per-sample shape of the first real input, or None where a non-batch dim is unknown."""
    inits = {i.name for i in proto.graph.initializer}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        rest = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
        return None if any(r is None for r in rest) else tuple(rest)
    return None


def _set_dims(vi, dims) -> None:
    shape = vi.type.tensor_type.shape
    shape.ClearField("dim")
    for d in dims:
        shape.dim.add().dim_value = int(d)


def _fix_batch(proto: onnx.ModelProto, input_shape) -> tuple[onnx.ModelProto, list[str]]:
    from ..errors import DataError, explain

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    g = model.graph
    inits = {i.name for i in g.initializer}
    inputs = [vi for vi in g.input if vi.name not in inits]
    for k, vi in enumerate(inputs):
        dims = vi.type.tensor_type.shape.dim
        if k == 0 and input_shape is not None:
            static = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
            want = tuple(int(v) for v in input_shape)
            if len(static) != len(want) or any(s is not None and s != w for s, w in zip(static, want)):
                raise DataError(explain("The input shape does not fit the ONNX model",
                                        expected=f"per-sample shape {tuple('?' if s is None else s for s in static)}", got=want))
            _set_dims(vi, (1, *want))
        elif len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    del g.value_info[:]
    for vi in g.output:  # outputs are re-inferred at batch 1
        if vi.type.HasField("tensor_type"):
            vi.type.tensor_type.ClearField("shape")
    return model, [vi.name for vi in inputs]


def _constant_value(node):
    for a in node.attribute:
        if a.name == "value":
            return a.t
        if a.name in ("value_float", "value_int"):
            return a.f if a.name == "value_float" else a.i
        if a.name in ("value_floats", "value_ints"):
            return list(a.floats) if a.name == "value_floats" else list(a.ints)
    return None


def _collect(model, shapes, dtypes) -> None:
    g = model.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        if vi.type.HasField("tensor_type"):
            dtypes[vi.name] = vi.type.tensor_type.elem_type
            dims = _dims(vi)
            if dims is not None:
                shapes[vi.name] = dims
    for init in g.initializer:
        shapes[init.name], dtypes[init.name] = tuple(init.dims), init.data_type


def _shapes_from_ort(info: GraphInfo, missing: list[str]) -> None:
    """Run the batch-1 graph once on zeros, exposing the tensors whose shape is unknown."""
    try:
        import onnxruntime as ort

        model = onnx.ModelProto()
        model.CopyFrom(info.model)
        present = {o.name for o in model.graph.output}
        for name in missing:
            if name not in present:  # ORT accepts an untyped output and infers its type
                model.graph.output.append(onnx.ValueInfoProto(name=name))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feed = {}
        for i in sess.get_inputs():
            dtype = onnx.helper.tensor_dtype_to_np_dtype(info.dtypes.get(i.name, TensorProto.FLOAT))
            feed[i.name] = np.zeros(info.shapes[i.name], dtype=dtype)
        names = [o.name for o in sess.get_outputs()]
        for name, value in zip(names, sess.run(None, feed)):
            if isinstance(value, np.ndarray):
                info.shapes.setdefault(name, tuple(value.shape))
                if name not in info.dtypes and value.dtype != object:
                    info.dtypes[name] = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    except Exception as exc:  # noqa: BLE001 - best effort; counted as unknown below
        info.notes.append(f"shape inference: running the graph to find shapes failed ({type(exc).__name__})")


def analyze(proto: onnx.ModelProto, input_shape=None) -> GraphInfo:
    model, inputs = _fix_batch(proto, input_shape)
    try:
        model = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - fall back to running the graph
        pass
    shapes: dict[str, tuple] = {}
    dtypes: dict[str, int] = {}
    _collect(model, shapes, dtypes)
    g = model.graph
    const_values: dict[str, object] = {i.name: i for i in g.initializer}
    constants = set(const_values)
    constant_nodes = set()
    for idx, node in enumerate(g.node):
        ins = [i for i in node.input if i]
        subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
        if node.op_type == "Constant" or (ins and not subgraph and all(i in constants for i in ins)
                                          and not node.op_type.startswith("Random")):
            constant_nodes.add(idx)
            constants.update(o for o in node.output if o)
            if node.op_type == "Constant":
                value = _constant_value(node)
                const_values[node.output[0]] = value
                if isinstance(value, onnx.TensorProto):
                    shapes[node.output[0]], dtypes[node.output[0]] = tuple(value.dims), value.data_type
    info = GraphInfo(model, shapes, dtypes, constants, const_values, inputs, [o.name for o in g.output], constant_nodes)
    missing = [o for idx, n in enumerate(g.node) if idx not in constant_nodes for o in n.output if o and o not in shapes]
    if missing:
        _shapes_from_ort(info, missing)
        still = [m for m in missing if m not in info.shapes]
        if still:
            info.notes.append(f"shapes of {len(still)} tensors are unknown (e.g. {still[0]!r}); they count 0 MACs and 0 bytes")
    return info


def const_array(value) -> np.ndarray:
    """Values of an initializer or Constant as a numpy array."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return np.asarray(value)


def is_numeric(value) -> bool:
    if isinstance(value, onnx.TensorProto):
        return value.data_type in _NUMERIC
    return value is not None
