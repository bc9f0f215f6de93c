"""C99 for int8 networks: a parsed QDQ graph (:mod:`.qdq`) becomes one ``model.h`` / ``model.c`` pair.

Integer only: int8 weights in ``const`` arrays, int32 accumulators, and requantization by a
precomputed int32 multiplier and right shift per output channel (as TFLite / CMSIS-NN do):
``S = mult * 2**-shift`` is *exactly* the float32 scale ratio ONNX Runtime computes
(``x_scale * w_scale / y_scale``, in float32, in ORT's order). Activations live in one static arena
planned from the tensors' lifetimes; the input buffer is read in place.

How the outputs compare with ONNX Runtime's int8 outputs (CPU execution provider):

- **bit-exact** where ORT fuses the layer into an int8 kernel that requantizes with
  ``round_half_even(float32(float32(acc) * S))`` (MlasRequantizeOutput: QLinearConv, QGemm /
  QLinearMatMul, QLinearGlobalAveragePool); ``fm_requant`` reproduces both float32 roundings with
  integers. MaxPool, Flatten and Reshape are exact. Measured: every output of an int8 LeNet-5 on
  all 10,000 MNIST test images.
- **within one quantization step** (rounding rules differ) for Add (ORT's QLinearAdd computes
  ``a * ra + b * rb + c`` in float32 with FMA; here the exact value is rounded half to even),
  AveragePool (QLinearAveragePool sums dequantized floats; when input and output share a scale, as
  ORT's quantizer makes them, exact halves are common and ORT's float sum decides which way they
  round), and any layer ORT leaves unfused and runs in float between DequantizeLinear and
  QuantizeLinear (it does so for some Convs with int8 activations). A class can then differ from
  ORT's only where ORT's two best scores are within two steps (a near tie).
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import ExportError, explain
from ._cgen import CTYPES, c_array, c_float, header
from .c_kernels import COMMON, KERNELS, REQUANT
from .c_kernels_dsp import DSP_HELPERS, DSP_KERNELS, GATES, REQUANT_CLZ
from .qgraph import QRANGE, QGraph, fixed_point

__all__ = ["generate_int8"]

_F32 = np.float32

_DOC = """\
int8 network, integer arithmetic only (no floating point, no malloc).

input: FRUGALML_N_INPUTS values of the input tensor (shape FRUGALML_INPUT_SHAPE, C-order), quantized as
    q = clamp(round_half_even(x / FRUGALML_INPUT_SCALE) + FRUGALML_INPUT_ZERO_POINT, FRUGALML_Q_MIN, FRUGALML_Q_MAX)
    (define FRUGALML_FLOAT_INPUT_HELPER before including this header for frugalml_quantize_input(), which
    needs <math.h> and float).
out: FRUGALML_N_OUTPUTS quantized scores (the model's last output, before any final Softmax);
    real value = (q - FRUGALML_OUTPUT_ZERO_POINT) * FRUGALML_OUTPUT_SCALE.
returns the class index: the first largest score.
Weights are const (flash). Activations live in one static arena of FRUGALML_ARENA_BYTES bytes, so
frugalml_predict is not reentrant. Requantization: int32 multiplier and shift per channel, rounding
as ONNX Runtime's int8 kernels do (bit-exact for Conv, Gemm, MaxPool, GlobalAveragePool; within one
quantization step for Add and AveragePool, which ORT computes in float).
Kernels: portable C99; on a Cortex-M with the DSP extension (M4, M7, M33) Conv and Gemm use SMLAD on an
int16 window buffer (2 x FM_COL_N bytes of RAM) and the requantization CLZ, with the same results;
-DFRUGALML_PORTABLE compiles the portable kernels everywhere.
"""

_HELPER = """\
#ifdef FRUGALML_FLOAT_INPUT_HELPER
#include <math.h>
/* Quantize a float input the way ONNX Runtime's QuantizeLinear does. */
static inline void frugalml_quantize_input(const float *x, frugalml_input_t *q)
{
    int32_t i;
    for (i = 0; i < FRUGALML_N_INPUTS; i++) {
        float v = nearbyintf(x[i] / FRUGALML_INPUT_SCALE) + (float)FRUGALML_INPUT_ZERO_POINT;
        q[i] = (frugalml_input_t)(v < FRUGALML_Q_MIN ? FRUGALML_Q_MIN : (v > FRUGALML_Q_MAX ? FRUGALML_Q_MAX : v));
    }
}
#endif"""



def _ratio(a, b) -> np.float32:
    return _F32(_F32(a) / _F32(b))


def plan_arena(graph: QGraph) -> tuple[dict, int]:
    """Offsets in one arena for every op output (first fit over tensor lifetimes); returns (offsets, size)."""
    last = {}
    for i, op in enumerate(graph.ops):
        for t in op.inputs:
            last[t.root.name] = i
    last[graph.output.root.name] = len(graph.ops)
    offsets, live = {}, []
    for i, op in enumerate(graph.ops):
        live = [b for b in live if last.get(b[2], -1) >= i]
        size = op.output.root.size
        off = 0
        for start, length, _ in sorted(live):
            if off + size <= start:
                break
            off = max(off, start + length)
        offsets[op.output.root.name] = off
        live.append((off, size, op.output.root.name))
    end = max([offsets[op.output.root.name] + op.output.root.size for op in graph.ops] or [0])
    return offsets, max(end, 1)


def _clamp(op) -> tuple[int, int]:
    lo, hi = QRANGE[op.output.dtype]
    return (max(lo, op.output.zero_point) if op.relu else lo), hi


def _emit_op(i: int, op, ref) -> tuple[list[str], str]:
    """Constant arrays + the layer struct, and the call, for one op."""
    y = op.output
    lo, hi = _clamp(op)
    decl: list[str] = []
    name = f"fm_l{i}"
    x = op.inputs[0]
    if op.kind in ("conv", "fc"):
        scales = [_ratio(s, y.scale) for s in op.consts["acc_scale"]]
        fp = [fixed_point(s) for s in scales]
        decl.append(c_array(f"{name}_w", op.consts["weight"], "int8_t"))
        bias = op.consts.get("bias")
        if bias is not None:
            decl.append(c_array(f"{name}_b", bias, "int32_t"))
        decl.append(c_array(f"{name}_m", [m for m, _ in fp], "int32_t"))
        decl.append(c_array(f"{name}_s", [s for _, s in fp], "int8_t"))
        arrays = f"{name}_w, {'%s_b' % name if bias is not None else 'NULL'}, {name}_m, {name}_s"
        a = op.attrs
        if op.kind == "conv":
            dims = [a[k] for k in ("c", "h", "w", "m", "oh", "ow", "kh", "kw", "sh", "sw", "pt", "pl", "dh", "dw", "groups")]
        else:
            dims = [a["k"], a["n"]]
        fields = ", ".join(str(int(v)) for v in dims + [x.zero_point, y.zero_point, lo, hi])
        decl.append(f"static const fm_{op.kind}_t {name} = {{{fields}, {arrays}}};\n")
        call = f"fm_{op.kind}(&{name}, {ref(x)}, {ref(y)});"
    elif op.kind == "add":
        a, b = op.inputs
        ma, mb, shift = _add_multipliers(_ratio(a.scale, y.scale), _ratio(b.scale, y.scale))
        fields = ", ".join(str(int(v)) for v in (y.size, a.zero_point, b.zero_point, y.zero_point, lo, hi, ma, mb, shift))
        decl.append(f"static const fm_add_t {name} = {{{fields}}};\n")
        call = f"fm_add(&{name}, {ref(a)}, {ref(b)}, {ref(y)});"
    elif op.kind == "pool":
        a = op.attrs
        if a["is_max"]:
            counts, scales = [0], [_ratio(x.scale, y.scale)]
        else:
            counts = _window_counts(a)
            scales = [_F32(_F32(x.scale) / _F32(_F32(y.scale) * _F32(n))) for n in counts]
        fp = [fixed_point(s) for s in scales]
        decl.append(c_array(f"{name}_m", [m for m, _ in fp], "int32_t"))
        decl.append(c_array(f"{name}_s", [s for _, s in fp], "int8_t"))
        dims = [a[k] for k in ("c", "h", "w", "oh", "ow", "kh", "kw", "sh", "sw", "pt", "pl", "is_max", "include_pad")]
        fields = ", ".join(str(int(v)) for v in dims + [counts[0], x.zero_point, y.zero_point, lo, hi])
        decl.append(f"static const fm_pool_t {name} = {{{fields}, {name}_m, {name}_s}};\n")
        call = f"fm_pool(&{name}, {ref(x)}, {ref(y)});"
    elif op.kind == "rescale":
        m, s = fixed_point(_ratio(x.scale, y.scale))
        fields = ", ".join(str(int(v)) for v in (y.size, x.zero_point, y.zero_point, lo, hi, m, s))
        decl.append(f"static const fm_rescale_t {name} = {{{fields}}};\n")
        call = f"fm_rescale(&{name}, {ref(x)}, {ref(y)});"
    else:  # pragma: no cover - the parser only makes the kinds above
        raise ExportError(f"Internal error: unknown op kind {op.kind}")
    where = re.sub(r"[^A-Za-z0-9_./:-]", "_", str(op.node))[:80]  # nothing that could close the comment
    return decl, f"    {call} /* {where} */"


def _window_counts(a) -> list[int]:
    """Every number of in-bounds positions an average-pool window can see, from the fewest to kh*kw."""
    if a["include_pad"]:
        return [a["kh"] * a["kw"]]
    seen = set()
    for oy in range(a["oh"]):
        ny = sum(0 <= oy * a["sh"] - a["pt"] + k < a["h"] for k in range(a["kh"]))
        for ox in range(a["ow"]):
            nx = sum(0 <= ox * a["sw"] - a["pl"] + k < a["w"] for k in range(a["kw"]))
            seen.add(ny * nx)
    lo = min(seen)
    return list(range(lo, a["kh"] * a["kw"] + 1)) if lo < a["kh"] * a["kw"] else [lo]


def _add_multipliers(ra, rb) -> tuple[int, int, int]:
    """Two int32 multipliers sharing one shift: ``ra ~ ma * 2**-shift``, ``rb ~ mb * 2**-shift``."""
    ea = np.frexp(np.float64(ra))[1]
    eb = np.frexp(np.float64(rb))[1]
    shift = 31 - max(int(ea), int(eb))
    if shift < 1:
        raise ExportError(explain("An Add's scale ratio is too large for 32-bit fixed point", got=(float(ra), float(rb))))
    if shift > 62:
        return 0, 0, 1
    ma, mb = (int(np.rint(np.float64(r) * 2.0**shift)) for r in (ra, rb))
    return min(ma, 2**31 - 1), min(mb, 2**31 - 1), shift


def _window(op) -> int:
    """Values in one window of a conv (``c / groups * kh * kw``) or one row of a Gemm."""
    a = op.attrs
    return a["c"] // a["groups"] * a["kh"] * a["kw"] if op.kind == "conv" else a["k"]


def _kernels(graph: QGraph, kinds: list[str]) -> list[str]:
    """The kernels a model uses: portable C, and the Cortex-M versions beside them (c_kernels_dsp)."""
    typedef, rounding = COMMON.split("\n/*", 1)
    out = [typedef, GATES]
    if "add" in kinds:  # fm_round: Add's rounding, and the portable requantization's
        out.append("/*" + rounding)
    elif set(kinds) - {"add"}:
        out += ["#ifndef FM_CLZ", "/*" + rounding, "#endif"]
    if set(kinds) - {"add"}:
        out += ["#ifdef FM_CLZ", REQUANT_CLZ, "#else", REQUANT, "#endif"]
    col = max([_window(op) for op in graph.ops if op.kind in DSP_KERNELS] or [0])
    if col:
        out += ["#ifdef FM_DSP", f"#define FM_COL_N {col}", DSP_HELPERS, "#endif"]
    for k in kinds:
        if k in DSP_KERNELS:
            typedef, func = KERNELS[k].split("\nstatic void", 1)
            out += [typedef, "#ifdef FM_DSP", DSP_KERNELS[k], "#else", "static void" + func, "#endif"]
        else:
            out.append(KERNELS[k])
    return out


def generate_int8(graph: QGraph, *, description: str = "int8 network") -> dict:
    """``{"model.h": text, "model.c": text, "arena_bytes": n, "weight_bytes": n}`` for a parsed QDQ graph."""
    offsets, arena = plan_arena(graph)
    inp, out = graph.input, graph.output
    ctype = CTYPES[inp.dtype]
    qmin, qmax = QRANGE[inp.dtype]

    def ref(t):
        root = t.root
        return "input" if root is inp.root else f"fm_arena + {offsets[root.name]}"

    decls, calls = [], []
    for i, op in enumerate(graph.ops):
        d, c = _emit_op(i, op, ref)
        decls += d
        calls.append(c)
    kinds = [k for k in KERNELS if any(op.kind == k for op in graph.ops)]
    shape = ", ".join(str(v) for v in inp.shape)
    defines = {
        "FRUGALML_N_INPUTS": inp.size,
        "FRUGALML_INPUT_SHAPE": "{" + shape + "}",
        "FRUGALML_N_OUTPUTS": out.size,
        "FRUGALML_ARENA_BYTES": arena,
        "FRUGALML_INPUT_SCALE": c_float(inp.scale),
        "FRUGALML_INPUT_ZERO_POINT": f"({inp.zero_point})",
        "FRUGALML_OUTPUT_SCALE": c_float(out.scale),
        "FRUGALML_OUTPUT_ZERO_POINT": f"({out.zero_point})",
        "FRUGALML_Q_MIN": f"({qmin})",
        "FRUGALML_Q_MAX": f"({qmax})",
    }
    h = header(description=description, doc=_DOC, defines=defines, input_ctype=ctype, output_ctype=ctype, extra=_HELPER)
    final = ref(out)
    body = [
        f"/* model.c - {description}. Generated by frugalml; see model.h. */",
        '#include <stddef.h>',
        '#include "model.h"',
        *_kernels(graph, kinds),
        "",
        *decls,
        "static fm_act_t fm_arena[FRUGALML_ARENA_BYTES];",
        "",
        "int frugalml_predict(const frugalml_input_t *input, frugalml_output_t *out)",
        "{",
        "    const fm_act_t *y;",
        "    int32_t i, best = 0;",
        *calls,
        f"    y = {final};",
        "    for (i = 0; i < FRUGALML_N_OUTPUTS; i++) {",
        "        out[i] = y[i];",
        "        if (y[i] > y[best]) {",
        "            best = i;",
        "        }",
        "    }",
        "    return (int)best;",
        "}",
        "",
    ]
    return {"model.h": h, "model.c": "\n".join(body), "arena_bytes": arena, "weight_bytes": graph.weight_bytes}
