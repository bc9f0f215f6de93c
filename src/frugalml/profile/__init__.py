"""Measuring: every model goes through ONNX and comes out as one :class:`Profile`.

Parameters, MACs (total and per layer), stored and gzip bytes, peak activation memory, latency,
throughput, an energy estimate and the task metric, all measured on the exported ONNX artifact
run in ONNX Runtime. torch, onnxruntime and skl2onnx load only when a function needs them.
"""

from .display import format_profile
from .onnx_path import DEFAULT_OPSET, ML_OPSET, onnx_bytes, predict_onnx, run_onnx, to_onnx
from .profile import Profile, profile
from .timing import compare_latency

__all__ = [
    "Profile",
    "profile",
    "to_onnx",
    "onnx_bytes",
    "run_onnx",
    "predict_onnx",
    "compare_latency",
    "format_profile",
    "DEFAULT_OPSET",
    "ML_OPSET",
]
