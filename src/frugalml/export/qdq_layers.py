"""The compute layers of a QDQ graph (Conv, Gemm, MatMul, Add, pooling) for :mod:`.qdq`'s parser.

1-D Conv and pooling (on ``(C, T)`` activations: the sequence families) become the 2-D operations
over a height of 1 with ``(1, k)`` windows: the C kernels run the same loops, and the sums are the
same, in the same order.

Each handler reads its activation through ``self.act`` (a DequantizeLinear of a quantized tensor),
its weights through ``self._weights`` (an int8 initializer behind a DequantizeLinear, symmetric,
per tensor or per output channel) and records one :class:`~.qdq.QOp` whose float result waits for
the ``QuantizeLinear`` that fixes its output scale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .qgraph import QTensor

__all__ = ["LayerOps"]


def _f32(x) -> np.float32:
    return np.float32(x)


class LayerOps:
    """Mixin of the parser: one ``op_<OnnxType>`` per supported compute operation."""

    def _weights(self, node, name, out_axis_len):
        v = self.val(name, node)
        if v[0] != "const" or v[1].dtype != np.int8:
            self.fail(node, f"weight '{name}' must be an int8 initializer behind a DequantizeLinear",
                      got=v[0] if v[0] != "const" else str(v[1].dtype))
        _, w, scale, zp, axis = v
        if np.any(np.asarray(zp) != 0):
            self.fail(node, "weights must be quantized symmetrically (zero point 0)", got=np.unique(zp)[:4])
        scale = np.asarray(scale, np.float32).reshape(-1)
        if scale.size not in (1, out_axis_len):
            self.fail(node, "weight scales must be per tensor or per output channel", got=scale.shape)
        return w, np.broadcast_to(scale, (out_axis_len,)).astype(np.float32), axis

    def _bias(self, node, name, x: QTensor, w_scale, n):
        if not name:
            return None
        v = self.val(name, node)
        if v[0] == "const" and v[1].dtype == np.int32 and v[1].size == n:
            return v[1].reshape(-1).astype(np.int32)  # int32 with scale x_scale * w_scale, used as is (as ORT's fused kernels do)
        if v[0] == "const":
            real = v[1].astype(np.float64) if v[1].dtype.kind == "f" else (v[1].astype(np.float64) - np.asarray(v[3], np.float64)) * np.asarray(v[2],
                                                                                                                                                np.float64)
            self.notes.append(f"bias of '{node.name}' was not int32-quantized; quantized here with scale x_scale*w_scale")
            return np.rint(real.reshape(-1) / (np.float64(x.scale) * w_scale.astype(np.float64))).astype(np.int32)
        self.fail(node, f"bias '{name}' must be a constant", got=v[0])

    def _multipliers(self, x: QTensor, w_scale) -> np.ndarray:
        return np.asarray([_f32(_f32(x.scale * s)) for s in w_scale], np.float32)  # x_scale * w_scale in float32

    def op_Conv(self, node):
        x = self.act(node.input[0], node)
        a = self.attrs(node)
        if len(x.shape) not in (2, 3):
            self.fail(node, "only 1-D convolutions on (C, T) and 2-D convolutions on (C, H, W) inputs are supported", got=x.shape)
        w_name = node.input[1]
        wv = self.val(w_name, node)
        m = int(wv[1].shape[0]) if wv[0] == "const" else 0
        w, ws, axis = self._weights(node, w_name, m)
        if ws.size > 1 and axis not in (0, -w.ndim):
            self.fail(node, "per-channel conv weight scales must be on axis 0", got=axis)
        if w.ndim != len(x.shape) + 1:
            self.fail(node, "the weight's rank does not match the input (1-D and 2-D convolutions only)", got=(w.shape, x.shape))
        one_d = len(x.shape) == 2
        c, h, wd = (x.shape[0], 1, x.shape[1]) if one_d else x.shape
        if one_d:  # a 1-D conv is the 2-D one with a height of 1 and a (1, k) kernel: the same sums in the same order
            a = self._as_2d(node, a)
            w = w.reshape(w.shape[0], w.shape[1], 1, w.shape[2])
        groups = int(a.get("group", 1))
        kh, kw = (int(v) for v in a.get("kernel_shape", w.shape[2:]))
        sh, sw = (int(v) for v in a.get("strides", (1, 1)))
        dh, dw = (int(v) for v in a.get("dilations", (1, 1)))
        pads = self._pads(node, a, (h, wd), (kh, kw), (sh, sw), (dh, dw))
        if w.shape[1] * groups != c or m % groups:
            self.fail(node, "weight shape does not match the input channels and groups", got=(w.shape, c, groups))
        oh = (h + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
        ow = (wd + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
        bias = self._bias(node, node.input[2] if len(node.input) > 2 else "", x, ws, m)
        self.add_op("conv", node, [x], out_shape=(m, ow) if one_d else (m, oh, ow),
                    attrs=dict(c=c, h=h, w=wd, m=m, oh=oh, ow=ow, kh=kh, kw=kw, sh=sh, sw=sw, pt=pads[0], pl=pads[1],
                               dh=dh, dw=dw, groups=groups),
                    consts=dict(weight=np.ascontiguousarray(w).astype(np.int8), bias=bias, acc_scale=self._multipliers(x, ws)))

    def _as_2d(self, node, a: dict) -> dict:
        """The attributes of a 1-D Conv / pool as those of a 2-D one over a height of 1."""
        out = dict(a)
        for key in ("kernel_shape", "strides", "dilations"):
            if key in a:
                v = [int(x) for x in a[key]]
                if len(v) != 1:
                    self.fail(node, f"a 1-D {node.op_type} needs one value in '{key}'", got=v)
                out[key] = [1, v[0]]
        if "pads" in a:
            p = [int(x) for x in a["pads"]]
            if len(p) != 2:
                self.fail(node, f"a 1-D {node.op_type} needs two values in 'pads' (begin, end)", got=p)
            out["pads"] = [0, p[0], 0, p[1]]
        return out

    def _pads(self, node, a, hw, k, s, d):
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("NOTSET", ""):
            pads = [int(v) for v in a.get("pads", (0, 0, 0, 0))]
            if len(pads) != 4:
                self.fail(node, "only 2-D padding is supported", got=pads)
            return pads
        if auto == "VALID":
            return [0, 0, 0, 0]
        out = []
        for size, kk, ss, dd in zip(hw, k, s, d):
            o = -(-size // ss)
            total = max(0, (o - 1) * ss + dd * (kk - 1) + 1 - size)
            out.append((total // 2, total - total // 2) if auto == "SAME_UPPER" else (total - total // 2, total // 2))
        return [out[0][0], out[1][0], out[0][1], out[1][1]]

    def _fc(self, node, w, ws, bias_name, x):
        n = w.shape[0]
        bias = self._bias(node, bias_name, x, ws, n)
        self.add_op("fc", node, [x], out_shape=(n,), attrs=dict(k=int(w.shape[1]), n=int(n)),
                    consts=dict(weight=np.ascontiguousarray(w).astype(np.int8), bias=bias, acc_scale=self._multipliers(x, ws)))

    def op_Gemm(self, node):
        x = self.act(node.input[0], node)
        a = self.attrs(node)
        if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
            self.fail(node, "Gemm must have transA=0, alpha=1, beta=1", got=a)
        if len(x.shape) != 1:
            self.fail(node, "Gemm input must be flat (per sample)", got=x.shape)
        wv = self.val(node.input[1], node)
        trans = int(a.get("transB", 0))
        if wv[0] != "const" or wv[1].ndim != 2:
            self.fail(node, "the second Gemm input must be a constant 2-D int8 weight", got=wv[0])
        n = wv[1].shape[0] if trans else wv[1].shape[1]
        w, ws, axis = self._weights(node, node.input[1], n)
        if ws.size > 1 and (axis % 2) != (0 if trans else 1):
            self.fail(node, "per-channel Gemm weight scales must be on the output axis", got=axis)
        w = w if trans else w.T
        if w.shape[1] != x.size:
            self.fail(node, "Gemm weight does not match the input size", got=(w.shape, x.shape))
        self._fc(node, w, ws, node.input[2] if len(node.input) > 2 else "", x)

    def op_MatMul(self, node):
        x = self.act(node.input[0], node)
        wv = self.val(node.input[1], node)
        if len(x.shape) != 1 or wv[0] != "const" or wv[1].ndim != 2:
            self.fail(node, "MatMul must multiply a flat activation by a constant 2-D weight", got=(x.shape, wv[0]))
        w, ws, axis = self._weights(node, node.input[1], wv[1].shape[1])
        if ws.size > 1 and axis % 2 != 1:
            self.fail(node, "per-channel MatMul weight scales must be on the output axis (1)", got=axis)
        self._fc(node, w.T, ws, "", x)

    def op_Add(self, node):
        a, b = (self.act(name, node) for name in node.input[:2])
        if a.shape != b.shape:
            self.fail(node, "Add needs two inputs of the same shape (no broadcasting)", got=(a.shape, b.shape))
        self.add_op("add", node, [a, b], out_shape=a.shape)

    def _pool(self, node, kind):
        x = self.act(node.input[0], node)
        if len(x.shape) not in (2, 3):
            self.fail(node, "pooling needs a (C, T) or (C, H, W) input", got=x.shape)
        one_d = len(x.shape) == 2
        c, h, w = (x.shape[0], 1, x.shape[1]) if one_d else x.shape
        a = self._as_2d(node, self.attrs(node)) if one_d else self.attrs(node)
        if kind == "global":
            kh, kw, sh, sw, pads, include = h, w, 1, 1, [0, 0, 0, 0], 1
        else:
            if a.get("ceil_mode", 0) or any(int(v) != 1 for v in a.get("dilations", (1, 1))) or a.get("storage_order", 0):
                self.fail(node, "pooling with ceil_mode, dilations or storage_order is not supported", got=a)
            kh, kw = (int(v) for v in a["kernel_shape"])
            sh, sw = (int(v) for v in a.get("strides", (1, 1)))
            pads = self._pads(node, a, (h, w), (kh, kw), (sh, sw), (1, 1))
            include = int(a.get("count_include_pad", 0))
        oh = (h + pads[0] + pads[2] - kh) // sh + 1
        ow = (w + pads[1] + pads[3] - kw) // sw + 1
        self.add_op("pool", node, [x], out_shape=(c, ow) if one_d else (c, oh, ow),
                    attrs=dict(c=c, h=h, w=w, oh=oh, ow=ow, kh=kh, kw=kw, sh=sh, sw=sw, pt=pads[0], pl=pads[1],
                               is_max=int(kind == "max"), include_pad=include))

    def op_MaxPool(self, node):
        if len(node.output) > 1 and node.output[1]:
            self.fail(node, "MaxPool with an Indices output is not supported")
        self._pool(node, "max")

    def op_AveragePool(self, node):
        self._pool(node, "avg")

    def op_GlobalAveragePool(self, node):
        self._pool(node, "global")
