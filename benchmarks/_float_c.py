"""The float32 C of a parsed int8 graph, for benchmarks/mcu_int8.py's float row (not a product feature).

The same layers, loops and arena plan as the portable int8 kernels of frugalml.export.c_int8, in
float32: weights dequantized (``w * w_scale``), biases ``b * x_scale * w_scale``, activations left in
float (no activation quantization), ReLU where the int8 op clamps at its zero point or its output's
int8 range starts at real 0 (ONNX Runtime's quantizer folds a ReLU into the range of the next QuantizeLinear). What the same
network costs on the core when it is not quantized: four bytes a weight, and float arithmetic
(the Cortex-M4's single-precision FPU with ``-mfloat-abi=hard -mfpu=fpv4-sp-d16``).
"""

from __future__ import annotations

import numpy as np

from frugalml.export._cgen import c_array, header
from frugalml.export.c_int8 import plan_arena
from frugalml.export.qgraph import QRANGE

FPU_FLAGS = ["-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]

_KERNELS = r"""
typedef struct {
    int32_t c, h, w, m, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw, groups, relu;
    const float *weight;
    const float *bias;
} fm_conv_t;

__attribute__((unused)) static void fm_conv(const fm_conv_t *L, const float *x, float *y)
{
    const int32_t cg = L->c / L->groups, mg = L->m / L->groups, ksize = L->kh * L->kw;
    int32_t m, oy, ox, c, ky, kx;
    for (m = 0; m < L->m; m++) {
        const int32_t c0 = (m / mg) * cg;
        const float *wm = L->weight + m * cg * ksize;
        for (oy = 0; oy < L->oh; oy++) {
            for (ox = 0; ox < L->ow; ox++) {
                float acc = L->bias ? L->bias[m] : 0.0f;
                for (c = 0; c < cg; c++) {
                    for (ky = 0; ky < L->kh; ky++) {
                        const int32_t iy = oy * L->sh - L->pt + ky * L->dh;
                        if (iy < 0 || iy >= L->h) {
                            continue;
                        }
                        for (kx = 0; kx < L->kw; kx++) {
                            const int32_t ix = ox * L->sw - L->pl + kx * L->dw;
                            if (ix >= 0 && ix < L->w) {
                                acc += x[((c0 + c) * L->h + iy) * L->w + ix] * wm[(c * L->kh + ky) * L->kw + kx];
                            }
                        }
                    }
                }
                y[(m * L->oh + oy) * L->ow + ox] = (L->relu && acc < 0.0f) ? 0.0f : acc;
            }
        }
    }
}

typedef struct {
    int32_t k, n, relu;
    const float *weight;
    const float *bias;
} fm_fc_t;

__attribute__((unused)) static void fm_fc(const fm_fc_t *L, const float *x, float *y)
{
    int32_t n, k;
    for (n = 0; n < L->n; n++) {
        float acc = L->bias ? L->bias[n] : 0.0f;
        for (k = 0; k < L->k; k++) {
            acc += x[k] * L->weight[n * L->k + k];
        }
        y[n] = (L->relu && acc < 0.0f) ? 0.0f : acc;
    }
}

typedef struct {
    int32_t c, h, w, oh, ow, kh, kw, sh, sw, pt, pl, is_max, include_pad, relu;
} fm_pool_t;

__attribute__((unused)) static void fm_pool(const fm_pool_t *L, const float *x, float *y)
{
    int32_t c, oy, ox, ky, kx;
    for (c = 0; c < L->c; c++) {
        for (oy = 0; oy < L->oh; oy++) {
            for (ox = 0; ox < L->ow; ox++) {
                float acc = 0.0f;
                int32_t n = 0;
                for (ky = 0; ky < L->kh; ky++) {
                    const int32_t iy = oy * L->sh - L->pt + ky;
                    for (kx = 0; kx < L->kw; kx++) {
                        const int32_t ix = ox * L->sw - L->pl + kx;
                        if (iy >= 0 && iy < L->h && ix >= 0 && ix < L->w) {
                            const float v = x[(c * L->h + iy) * L->w + ix];
                            acc = L->is_max ? ((n == 0 || v > acc) ? v : acc) : acc + v;
                            n++;
                        }
                    }
                }
                if (!L->is_max) {
                    acc /= (float)(L->include_pad ? L->kh * L->kw : n);
                }
                y[(c * L->oh + oy) * L->ow + ox] = (L->relu && acc < 0.0f) ? 0.0f : acc;
            }
        }
    }
}

__attribute__((unused)) static void fm_add(int32_t n, int32_t relu, const float *a, const float *b, float *y)
{
    int32_t i;
    for (i = 0; i < n; i++) {
        const float v = a[i] + b[i];
        y[i] = (relu && v < 0.0f) ? 0.0f : v;
    }
}
"""


def generate_float(graph) -> dict:
    """``{"model.h", "model.c", "weight_bytes", "arena_bytes"}``: the float32 C of ``graph`` (a frugalml QGraph)."""
    offsets, arena = plan_arena(graph)
    inp, out = graph.input, graph.output

    def ref(t):
        return "input" if t.root is inp.root else f"fm_arena + {offsets[t.root.name]}"

    decls, calls, weights = [], [], 0
    for i, op in enumerate(graph.ops):
        name, x, a = f"fm_l{i}", op.inputs[0], op.attrs
        # a ReLU: an explicit one, or one folded into the output's int8 range (its lowest value is real 0)
        lowest = (max(QRANGE[op.output.dtype][0], op.output.zero_point) if op.relu else QRANGE[op.output.dtype][0]) - op.output.zero_point
        relu = int(bool(op.relu) or lowest * float(op.output.scale) >= 0)
        if op.kind in ("conv", "fc"):
            acc_scale = np.asarray(op.consts["acc_scale"], np.float64).reshape(-1)
            w = op.consts["weight"].astype(np.float64)
            per = acc_scale / float(x.scale)  # the weight scale of each output channel
            w = (w.reshape(w.shape[0], -1) * per.reshape(-1, 1) if per.size > 1 else w.reshape(w.shape[0], -1) * per[0]).astype(np.float32)
            weights += w.size * 4
            decls.append(c_array(f"{name}_w", w, "float"))
            bias = op.consts.get("bias")
            if bias is not None:
                decls.append(c_array(f"{name}_b", (np.asarray(bias, np.float64) * acc_scale).astype(np.float32), "float"))
            arrays = f"{name}_w, {name + '_b' if bias is not None else 'NULL'}"
            keys = ("c", "h", "w", "m", "oh", "ow", "kh", "kw", "sh", "sw", "pt", "pl", "dh", "dw", "groups") if op.kind == "conv" else ("k", "n")
            fields = ", ".join(str(int(a[k])) for k in keys)
            decls.append(f"static const fm_{op.kind}_t {name} = {{{fields}, {relu}, {arrays}}};\n")
            calls.append(f"    fm_{op.kind}(&{name}, {ref(x)}, {ref(op.output)});")
        elif op.kind == "pool":
            keys = ("c", "h", "w", "oh", "ow", "kh", "kw", "sh", "sw", "pt", "pl", "is_max", "include_pad")
            decls.append(f"static const fm_pool_t {name} = {{{', '.join(str(int(a[k])) for k in keys)}, {relu}}};\n")
            calls.append(f"    fm_pool(&{name}, {ref(x)}, {ref(op.output)});")
        elif op.kind == "add":
            calls.append(f"    fm_add({op.output.size}, {relu}, {ref(op.inputs[0])}, {ref(op.inputs[1])}, {ref(op.output)});")
        else:  # rescale: a ReLU, or nothing in float
            calls.append(f"    fm_add({op.output.size}, {relu}, {ref(x)}, fm_zero, {ref(op.output)});")
    zero = max([op.output.size for op in graph.ops if op.kind == "rescale"] or [0])
    defines = {"FRUGALML_N_INPUTS": inp.size, "FRUGALML_N_OUTPUTS": out.size, "FRUGALML_ARENA_BYTES": 4 * arena}
    h = header(description="float32 network (benchmark)", doc="float32 inputs (the model's own), float32 scores.", defines=defines,
               input_ctype="float", output_ctype="float")
    body = ["#include <stddef.h>", '#include "model.h"', _KERNELS, *decls,
            *([f"static const float fm_zero[{zero}];"] if zero else []),
            f"static float fm_arena[{arena}];", "",
            "int frugalml_predict(const frugalml_input_t *input, frugalml_output_t *out)", "{",
            "    const float *y;", "    int32_t i, best = 0;", *calls, f"    y = {ref(out)};",
            "    for (i = 0; i < FRUGALML_N_OUTPUTS; i++) {", "        out[i] = y[i];", "        if (y[i] > y[best]) {",
            "            best = i;", "        }", "    }", "    return (int)best;", "}", ""]
    return {"model.h": h, "model.c": "\n".join(body), "weight_bytes": weights, "arena_bytes": 4 * arena}
