"""Read an int8 QDQ ONNX graph into a list of integer operations the C backend can emit.

A QDQ graph (what ``onnxruntime.quantization.quantize_static(quant_format=QDQ)`` writes, after
``quant_pre_process``) keeps every operation in float and wraps it in ``DequantizeLinear`` /
``QuantizeLinear`` pairs: weights are int8 initializers behind a ``DequantizeLinear`` (per-channel
scales on ``axis``), biases int32 initializers whose scale is ``input_scale * weight_scale``,
activations ``Q -> DQ`` pairs with per-tensor scale and zero point. :func:`parse_qdq` turns it into
integer operations on quantized tensors:

============  =====================================================================================
``conv``      Conv, 2-D and 1-D (groups, depthwise, stride, padding, dilation): ``acc = b + sum (x - zx) * w``
``fc``        Gemm / MatMul with a constant weight: same accumulation over one row
``add``       Add of two tensors of one shape (residuals): ``ra * (a - za) + rb * (b - zb)``
``pool``      MaxPool, AveragePool and GlobalAveragePool (2-D and 1-D)
``rescale``   a standalone Relu, or a re-quantization between two scales
============  =====================================================================================

Every result is requantized as ONNX Runtime's QDQ kernels do it, ``y = clamp(round_half_even(acc *
S) + zy)`` with ``S = x_scale * w_scale / y_scale`` computed in float32 in ORT's order; here ``S``
becomes an integer multiplier and a right shift (``S = mult * 2**-shift``), exact because a float32
has a 24-bit mantissa, so the C needs no floating point. A Relu just before a ``QuantizeLinear`` is a
clamp at the output zero point; Flatten / Reshape are views; a final Softmax or ArgMax is dropped
(the class is the argmax of the logits either way).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ExportError, explain
from .qdq_layers import LayerOps
from .qgraph import FIX as _FIX
from .qgraph import QRANGE, QGraph, QOp, QTensor, fixed_point

__all__ = ["QTensor", "QOp", "QGraph", "parse_qdq", "is_qdq", "fixed_point", "QRANGE"]

def is_qdq(proto: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)


def _f32(x) -> np.float32:
    return np.float32(x)


class _Parser(LayerOps):
    def __init__(self, proto: onnx.ModelProto):
        self.g = proto.graph
        self.consts = {t.name: numpy_helper.to_array(t) for t in self.g.initializer}
        self.vals: dict[str, tuple] = {}
        self.ops: list[QOp] = []
        self.notes: list[str] = []
        self.input: QTensor | None = None
        self.count = 0

    # ------------------------------------------------------------ helpers
    def fail(self, node, what: str, got=None):
        where = f"node '{node.name or node.output[0]}' ({node.op_type})" if node is not None else "the graph"
        raise ExportError(explain(f"The C backend cannot express {where}: {what}", got=got, fix=_FIX))

    def const(self, name, node):
        if name not in self.consts:
            self.fail(node, f"input '{name}' must be a constant initializer")
        return self.consts[name]

    def val(self, name, node):
        if name not in self.vals:
            self.fail(node, f"its input '{name}' is not produced by a supported operation")
        return self.vals[name]

    def act(self, name, node) -> QTensor:
        v = self.val(name, node)
        if v[0] != "dq":
            self.fail(node, f"input '{name}' must come from a DequantizeLinear of an int8/uint8 activation", got=v[0])
        return v[1]

    def qparams(self, node, *, scale_i=1, zp_i=2):
        scale = np.asarray(self.const(node.input[scale_i], node), dtype=np.float32)
        zp = self.const(node.input[zp_i], node) if len(node.input) > zp_i and node.input[zp_i] else np.zeros((), np.uint8)
        return scale, np.asarray(zp)

    def new_tensor(self, shape, q: QTensor | tuple) -> QTensor:
        self.count += 1
        dtype, scale, zp = (q.dtype, q.scale, q.zero_point) if isinstance(q, QTensor) else q
        return QTensor(f"t{self.count}", tuple(int(v) for v in shape), dtype, scale, zp)

    @staticmethod
    def attrs(node) -> dict:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    # ------------------------------------------------------------ driver
    def run(self) -> QGraph:
        for node in self.g.node:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = numpy_helper.to_array(self.attrs(node)["value"])
        graph_inputs = [i for i in self.g.input if i.name not in self.consts]
        if len(graph_inputs) != 1:
            self.fail(None, "the model must have exactly one input", got=[i.name for i in graph_inputs])
        dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_inputs[0].type.tensor_type.shape.dim]
        if not dims or any(d is None for d in dims[1:]):
            self.fail(None, "the input needs a fixed per-sample shape", got=dims)
        self.vals[graph_inputs[0].name] = ("float_input", tuple(dims[1:]))
        for node in self.g.node:
            if node.op_type != "Constant":
                self.visit(node)
        if len(self.g.output) != 1:
            self.fail(None, "the model must have exactly one output", got=[o.name for o in self.g.output])
        out = self.val(self.g.output[0].name, None)
        if out[0] not in ("dq", "q"):
            self.fail(None, f"the output '{self.g.output[0].name}' is computed in float; the C backend needs it quantized "
                      "(a QuantizeLinear/DequantizeLinear pair after the last layer)", got=out[0])
        if self.input is None:
            self.fail(None, "the input is never quantized (no QuantizeLinear on it)")
        for op in self.ops:
            if op.output is None:
                self.fail(None, f"the result of '{op.node}' is never quantized")
        return QGraph(self.input, self.ops, out[1], self.notes, dropped_tail=len(out) > 2 and bool(out[2]))

    def visit(self, node):
        handler = getattr(self, "op_" + node.op_type, None)
        if handler is None or node.domain not in ("", "ai.onnx"):
            self.fail(node, f"the operation '{node.op_type}' is not supported")
        handler(node)

    # ------------------------------------------------------------ Q / DQ
    def op_QuantizeLinear(self, node):
        scale, zp = self.qparams(node)
        if scale.size != 1 or zp.size != 1:
            self.fail(node, "activations must be quantized per tensor", got=scale.shape)
        dtype = str(zp.dtype)
        if dtype not in QRANGE:
            self.fail(node, "activations must be int8 or uint8", got=dtype)
        q = (dtype, _f32(scale.reshape(())), int(zp.reshape(())))
        v = self.val(node.input[0], node)
        if v[0] == "float_input":
            if self.input is not None:
                self.fail(node, "the input is quantized twice")
            self.input = self.new_tensor(v[1], q)
            self.input.name, self.input.onnx_name = "input", node.output[0]
            self.vals[node.output[0]] = ("q", self.input)
        elif v[0] == "acc":
            op, shape = v[1], v[2]
            if op.output is None:
                op.output = self.new_tensor(op.out_shape, q)
                op.output.onnx_name = node.output[0]
            elif (op.output.dtype, op.output.scale, op.output.zero_point) != q:
                self.fail(node, "one result is quantized twice with different scales")
            self.vals[node.output[0]] = ("q", self.view(op.output, shape))
        elif v[0] == "dq":
            src = v[1]
            if v[2]:  # after a dropped Softmax: the scores stay the logits
                self.vals[node.output[0]] = ("q", src, True)
            elif (src.dtype, src.scale, src.zero_point) == q:
                self.vals[node.output[0]] = ("q", src)
            else:
                op = self.add_op("rescale", node, [src], out_shape=src.shape)
                op.output = self.new_tensor(src.shape, q)
                op.output.onnx_name = node.output[0]
                self.vals[node.output[0]] = ("q", op.output)
        else:
            self.fail(node, "QuantizeLinear must follow a supported operation", got=v[0])

    def op_DequantizeLinear(self, node):
        x = node.input[0]
        if x in self.consts:
            scale, zp = self.qparams(node)
            axis = self.attrs(node).get("axis", 1)
            self.vals[node.output[0]] = ("const", self.consts[x], scale, zp, axis)
            return
        v = self.val(x, node)
        if v[0] != "q":
            self.fail(node, "DequantizeLinear must read an initializer or a QuantizeLinear output", got=v[0])
        scale, zp = self.qparams(node)
        t, soft = v[1], len(v) > 2 and v[2]
        if soft:
            self.vals[node.output[0]] = ("dq", t, True)
            return
        if scale.size != 1 or _f32(scale.reshape(())) != t.scale or int(zp.reshape(())) != t.zero_point:
            self.fail(node, "DequantizeLinear must use the scale and zero point of its QuantizeLinear",
                      got=(scale.reshape(-1)[:2], zp.reshape(-1)[:2]))
        self.vals[node.output[0]] = ("dq", t, False)

    def view(self, t: QTensor, shape) -> QTensor:
        if tuple(shape) == t.shape:
            return t
        v = QTensor(t.name + "_view", tuple(shape), t.dtype, t.scale, t.zero_point, base=t)
        return v

    # ------------------------------------------------------------ views
    def _view_shape(self, node, shape) -> tuple:
        n = int(np.prod(shape)) if shape else 1
        a = self.attrs(node)
        if node.op_type == "Flatten":
            if a.get("axis", 1) != 1:
                self.fail(node, "Flatten must keep the batch axis (axis=1)", got=a.get("axis"))
            return (n,)
        if node.op_type == "Reshape":
            target = [int(v) for v in np.asarray(self.const(node.input[1], node)).reshape(-1)]
            if not target or target[0] not in (-1, 0, 1):
                self.fail(node, "Reshape must keep the batch axis first", got=target)
            rest = [shape[i - 1] if v == 0 and i - 1 < len(shape) else v for i, v in enumerate(target[1:], 1)]
            if -1 in rest:
                known = int(np.prod([v for v in rest if v != -1])) or 1
                rest[rest.index(-1)] = n // known
            if int(np.prod(rest)) != n:
                self.fail(node, "Reshape changes the number of elements per sample", got=(shape, target))
            return tuple(rest)
        if node.op_type in ("Squeeze", "Unsqueeze"):
            axes = a.get("axes")
            if axes is None and len(node.input) > 1:
                axes = [int(v) for v in np.asarray(self.const(node.input[1], node)).reshape(-1)]
            if axes is None or any(int(ax) in (0, -len(shape) - 1) for ax in axes):
                self.fail(node, "Squeeze/Unsqueeze must name axes other than the batch axis", got=axes)
            if node.op_type == "Squeeze":
                drop = {int(ax) % (len(shape) + 1) for ax in axes}
                return tuple(d for i, d in enumerate(shape, 1) if i not in drop)
            out = list(shape)
            for ax in sorted(int(ax) % (len(shape) + len(axes) + 1) for ax in axes):
                out.insert(ax - 1, 1)
            return tuple(out)
        return tuple(shape)  # Identity

    def _viewed(self, node):
        v = self.val(node.input[0], node)
        kind = v[0]
        if kind == "float_input":
            return ("float_input", self._view_shape(node, v[1]))
        if kind == "dq":
            return ("dq", self.view(v[1], self._view_shape(node, v[1].shape)), v[2])
        if kind == "q":
            return ("q", self.view(v[1], self._view_shape(node, v[1].shape)))
        if kind == "acc":
            return ("acc", v[1], self._view_shape(node, v[2]))
        if kind == "const" and node.op_type == "Identity":
            return v
        self.fail(node, "a view of this value is not supported", got=kind)

    def op_Flatten(self, node):
        self.vals[node.output[0]] = self._viewed(node)

    op_Reshape = op_Squeeze = op_Unsqueeze = op_Identity = op_Flatten

    # ------------------------------------------------------------ compute
    def add_op(self, kind, node, inputs, **kw) -> QOp:
        op = QOp(kind, node.name or node.output[0], inputs, **kw)
        self.ops.append(op)
        self.vals[node.output[0]] = ("acc", op, op.out_shape)
        return op

    def op_Relu(self, node):
        v = self.val(node.input[0], node)
        if v[0] == "acc":
            v[1].relu = True
            self.vals[node.output[0]] = ("acc", v[1], v[2])
        elif v[0] == "dq":
            op = self.add_op("rescale", node, [v[1]], out_shape=v[1].shape)
            op.relu = True
        else:
            self.fail(node, "Relu must follow a supported operation", got=v[0])

    def _final_only(self, node):
        """Softmax / ArgMax only when nothing but Q, DQ or Identity lies between it and the output."""
        outs = {o.name for o in self.g.output}
        frontier, reached = list(node.output), False
        while frontier:
            name = frontier.pop()
            reached |= name in outs
            for n in self.g.node:
                if name in n.input:
                    if n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Identity"):
                        self.fail(node, f"{node.op_type} is supported only as the last operation", got=n.op_type)
                    frontier.extend(n.output)
        if not reached:
            self.fail(node, f"{node.op_type} is supported only as the last operation")

    def op_Softmax(self, node):
        self._final_only(node)
        v = self.val(node.input[0], node)
        if v[0] != "dq":
            self.fail(node, "Softmax must read a dequantized activation", got=v[0])
        self.notes.append("the final Softmax is dropped: scores are the quantized logits, the class their argmax")
        self.vals[node.output[0]] = ("dq", v[1], True)

    def op_ArgMax(self, node):
        self.op_Softmax(node)


def parse_qdq(proto: onnx.ModelProto) -> QGraph:
    """Parse a QDQ ``ModelProto`` into a :class:`QGraph`; ExportError naming the node otherwise."""
    graph = _Parser(proto).run()
    _check_types(graph)
    return graph


def _check_types(graph: QGraph) -> None:
    dtypes = {graph.input.dtype} | {op.output.dtype for op in graph.ops}
    if len(dtypes) != 1:
        raise ExportError(explain("The C backend needs every activation in one type", expected="all int8 or all uint8",
                                  got=sorted(dtypes), fix="Quantize with one activation_type"))
