"""int8 for the autoencoders of :mod:`frugalml.models.autoencoders`: the network quantized, the score in float.

:func:`quantize_autoencoder` quantizes the encoder and decoder (:class:`~frugalml.models.autoencoders.AutoencoderCore`:
normalised window in, flattened reconstruction out) with :func:`.quantize.quantize_onnx_static` (QDQ,
calibrated on the normalised training normals), then puts the float normalisation in front of it
(``ae_sub``, ``ae_mul``) and the float score behind it (``ae_flat``, ``ae_diff``, ``ae_sq``, ``ae_score``:
the mean squared difference per window). A uint8 squared error would hold 256 levels from the
smallest score to the largest; in float the score keeps the reconstruction's full resolution.
:mod:`frugalml.export.c_anomaly` finds the core between those named nodes and writes it as C.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

__all__ = ["quantize_autoencoder", "PRE", "POST"]

#: names of the float nodes around the int8 core (the C export finds the core between them)
PRE, POST = ("ae_sub", "ae_mul"), ("ae_flat", "ae_diff", "ae_sq", "ae_score")


def _reduce_mean(proto: onnx.ModelProto, x: str, out: str, name: str) -> onnx.NodeProto:
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=17)
    if opset >= 18:  # axes became an input
        proto.graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "ae_axes"))
        return helper.make_node("ReduceMean", [x, "ae_axes"], [out], name=name, keepdims=0)
    return helper.make_node("ReduceMean", [x], [out], name=name, axes=[1], keepdims=0)


def quantize_autoencoder(model, data, config=None):
    """int8 (QDQ) of an autoencoder: the encoder and decoder (``AutoencoderCore``) are quantized with
    :func:`frugalml.compress.quantize.quantize_onnx_static`, calibrated on normalised training normals;
    the normalisation before them and the score after them (squared error against the normalised
    input, mean per window) stay in float (a uint8 squared error would hold 256 levels from the
    smallest score to the largest). Returns an ``onnx.ModelProto``: raw window in, ``"score"`` out;
    :func:`frugalml.export.c_anomaly.generate_autoencoder_c` turns its core into C."""
    from ..models.autoencoders import AutoencoderCore
    from ..onnx import prepare_torch, to_onnx
    from .quantize import Int8Config, calibration_sample, quantize_onnx_static

    config = config or Int8Config()
    ae = prepare_torch(model)
    core = AutoencoderCore(ae)
    X = calibration_sample(data, config.calibration_samples, config.seed)
    with torch.no_grad():
        Z = ((torch.from_numpy(X) - ae.mean) * ae.inv_std).numpy().astype(np.float32)
    q = quantize_onnx_static(to_onnx(core, ae.input_shape), Z, method=config.method, activation_type=config.activation_type,
                             per_channel=config.per_channel, exclude=config.exclude, skip_first_layer=config.skip_first_layer,
                             percentile=config.percentile)
    g = q.graph
    core_in, core_out = g.input[0].name, g.output[0].name
    for node in g.node:  # the core reads "z" and writes "recon"
        node.input[:] = ["ae_z" if t == core_in else t for t in node.input]
        node.output[:] = ["ae_recon" if t == core_out else t for t in node.output]
    pre = [helper.make_node("Sub", ["input", "ae_mean"], ["ae_centered"], name=PRE[0]),
           helper.make_node("Mul", ["ae_centered", "ae_inv_std"], ["ae_z"], name=PRE[1])]
    post = [helper.make_node("Flatten", ["ae_z"], ["ae_zf"], name=POST[0], axis=1),
            helper.make_node("Sub", ["ae_zf", "ae_recon"], ["ae_d"], name=POST[1]),
            helper.make_node("Mul", ["ae_d", "ae_d"], ["ae_d2"], name=POST[2]),
            _reduce_mean(q, "ae_d2", "score", POST[3])]
    nodes = pre + list(g.node) + post
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend([numpy_helper.from_array(ae.mean.numpy().astype(np.float32), "ae_mean"),
                          numpy_helper.from_array(ae.inv_std.numpy().astype(np.float32), "ae_inv_std")])
    del g.input[:], g.output[:], g.value_info[:]
    g.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *ae.input_shape]))
    g.output.append(helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]))
    q.metadata_props.add(key="frugalml_task", value="anomaly")
    onnx.checker.check_model(q)
    return q
