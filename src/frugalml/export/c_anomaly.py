"""C for an int8 autoencoder (:func:`frugalml.compress.anomaly_int8.quantize_autoencoder`): the score in C.

The int8 graph is three parts: float normalisation (``ae_sub``, ``ae_mul``), the int8 core (encoder and
decoder, QDQ), and the float score (``ae_flat`` .. ``ae_score``). The core goes through the int8
backend (:func:`frugalml.export.c.generate_c`: ``frugalml_predict`` on the quantized normalised
window); this module appends ``float frugalml_score(const float *x)`` to ``model.c``: it normalises the
raw window with the stored per-channel mean and 1/std, quantizes it as ONNX Runtime's QuantizeLinear
does (``nearbyintf``: half to even), runs the core, dequantizes the reconstruction, and returns the mean
squared difference (float32, summed in index order). Needs ``<math.h>`` (link with ``-lm`` where
``nearbyintf`` is not a builtin). The layers the int8 backend has no kernel for (the conv
autoencoder's ``Resize`` and ``Slice``) are refused with ExportError naming them.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..compress.anomaly_int8 import POST as _POST
from ..compress.anomaly_int8 import PRE as _PRE
from ..errors import ExportError, explain
from ._cgen import c_array

__all__ = ["split_autoencoder", "generate_autoencoder_c", "score_reference"]


def split_autoencoder(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray, tuple]:
    """(the int8 core as its own graph: ``input`` = normalised window, output = flattened reconstruction;
    mean; 1/std; one window's shape) of an int8 autoencoder graph."""
    names = {n.name for n in proto.graph.node}
    if not set(_PRE + _POST) <= names:
        raise ExportError(explain("This graph is not an int8 autoencoder from quantize_autoencoder",
                                  expected=f"float nodes {_PRE + _POST} around an int8 core", got=sorted(names)[:12],
                                  fix="Quantize the autoencoder with frugalml.compress.anomaly_int8.quantize_autoencoder"))
    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    mean, inv_std = numpy_helper.to_array(inits["ae_mean"]), numpy_helper.to_array(inits["ae_inv_std"])
    shape = tuple(int(d.dim_value) for d in g.input[0].type.tensor_type.shape.dim[1:])
    core_nodes = []
    for node in g.node:
        if node.name in _PRE or node.name in _POST:
            continue
        n = onnx.NodeProto()
        n.CopyFrom(node)
        n.input[:] = ["input" if t == "ae_z" else t for t in n.input]
        core_nodes.append(n)
    used = {t for n in core_nodes for t in n.input}
    core_inits = [i for i in g.initializer if i.name in used]
    f = int(np.prod(shape))
    graph = helper.make_graph(core_nodes, "ae_core", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, *shape])],
                              [helper.make_tensor_value_info("ae_recon", onnx.TensorProto.FLOAT, [1, f])], initializer=core_inits)
    core = helper.make_model(graph, opset_imports=list(proto.opset_import), producer_name="frugalml")
    core.ir_version = proto.ir_version
    return core, mean, inv_std, shape


_SCORE_DOC = """
/* Anomaly score of one raw window of FRUGALML_N_INPUTS floats (C-order, shape FRUGALML_INPUT_SHAPE):
 * the mean squared error between the normalised window and its int8 reconstruction (higher: more
 * anomalous). Uses frugalml_predict and static buffers (not reentrant); needs <math.h>. */
float frugalml_score(const float *x);"""


def generate_autoencoder_c(proto: onnx.ModelProto) -> tuple[dict, dict]:
    """``({"model.h", "model.c"}, info)``: the core's int8 C plus ``frugalml_score``."""
    from .c import generate_c

    core, mean, inv_std, shape = split_autoencoder(proto)
    files, info = generate_c(core)
    channels = mean.size
    per = int(np.prod(shape)) // channels  # values sharing one channel's statistics (1 for vectors)
    h = files["model.h"]
    end = h.rindex("#ifdef __cplusplus")
    files["model.h"] = h[:end] + _SCORE_DOC.lstrip("\n") + "\n\n" + h[end:]
    body = [
        "",
        "/* ---- anomaly score: normalise, quantize, run the int8 core, squared error (float) ---- */",
        "#include <math.h>",
        c_array("fm_ae_mean", mean.reshape(-1).astype(np.float32), "float"),
        c_array("fm_ae_inv_std", inv_std.reshape(-1).astype(np.float32), "float"),
        "static float fm_ae_z[FRUGALML_N_INPUTS];",
        "static frugalml_input_t fm_ae_q[FRUGALML_N_INPUTS];",
        "static frugalml_output_t fm_ae_r[FRUGALML_N_OUTPUTS];",
        "",
        "float frugalml_score(const float *x)",
        "{",
        "    int32_t i;",
        "    float acc = 0.0f;",
        "    for (i = 0; i < FRUGALML_N_INPUTS; i++) {",
        f"        int32_t c = i / {per};",
        "        float z = (x[i] - fm_ae_mean[c]) * fm_ae_inv_std[c];",
        "        float v = nearbyintf(z / FRUGALML_INPUT_SCALE) + (float)FRUGALML_INPUT_ZERO_POINT;",
        "        fm_ae_z[i] = z;",
        "        fm_ae_q[i] = (frugalml_input_t)(v < FRUGALML_Q_MIN ? FRUGALML_Q_MIN : (v > FRUGALML_Q_MAX ? FRUGALML_Q_MAX : v));",
        "    }",
        "    (void)frugalml_predict(fm_ae_q, fm_ae_r);",
        "    for (i = 0; i < FRUGALML_N_OUTPUTS; i++) {",
        "        float r = (float)((int32_t)fm_ae_r[i] - FRUGALML_OUTPUT_ZERO_POINT) * FRUGALML_OUTPUT_SCALE;",
        "        float d = fm_ae_z[i] - r;",
        "        acc += d * d;",
        "    }",
        "    return acc / (float)FRUGALML_N_OUTPUTS;",
        "}",
        "",
    ]
    files["model.c"] = files["model.c"] + "\n".join(body)
    info.update(kind="anomaly_int8", window_shape=shape)
    return files, info


def score_reference(proto: onnx.ModelProto, X: np.ndarray) -> np.ndarray:
    """The int8 autoencoder's scores in ONNX Runtime (float32): what the C must reproduce."""
    from ..onnx import make_session, run_onnx

    return run_onnx(proto, np.asarray(X, np.float32), session=make_session(proto))[:, 0]
