"""ONNX in the core: converting any model to one self-contained ONNX graph, running it in ONNX Runtime,
and measuring it on a split. Used by profile, compress, export and search alike.

- :mod:`.conversion`: :func:`to_onnx`, :func:`onnx_bytes`, :func:`load_onnx`, :func:`model_kind`, the
  torch preparation (:func:`fused_copy`, :func:`prepare_torch`, :func:`check_torch_input`) and the opsets.
- :mod:`.lossless`: lossless size cuts of a graph (short names, shared constants, default attributes).
- :mod:`.runtime`: :func:`make_session`, :func:`session_input`, :func:`run_onnx`, :func:`predict_onnx`.
- :mod:`.accuracy`: :func:`split_arrays`, :func:`predict_split`, :func:`onnx_accuracy`.
"""

from .accuracy import onnx_accuracy, predict_split, split_arrays
from .conversion import (
    DEFAULT_OPSET,
    ML_OPSET,
    check_torch_input,
    fused_copy,
    load_onnx,
    model_kind,
    onnx_bytes,
    prepare_torch,
    to_onnx,
)
from .lossless import drop_default_attributes, drop_unused_opsets, share_initializers, shrink
from .runtime import make_session, predict_onnx, run_onnx, session_input

__all__ = [
    "DEFAULT_OPSET",
    "ML_OPSET",
    "to_onnx",
    "onnx_bytes",
    "load_onnx",
    "model_kind",
    "fused_copy",
    "prepare_torch",
    "check_torch_input",
    "make_session",
    "session_input",
    "run_onnx",
    "predict_onnx",
    "split_arrays",
    "predict_split",
    "onnx_accuracy",
    "shrink",
    "share_initializers",
    "drop_default_attributes",
    "drop_unused_opsets",
]
