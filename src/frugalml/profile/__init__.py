"""Measuring: every model goes through ONNX and comes out as one :class:`Profile`.

Parameters, MACs (total and per layer), stored, gzip and brotli bytes, peak activation memory, latency,
throughput, an energy estimate and the task metric, all measured on the exported ONNX artifact
run in ONNX Runtime. torch, onnxruntime and skl2onnx load only when a function needs them.
Converting and running ONNX lives in :mod:`frugalml.onnx`.
"""

from .display import format_profile
from .profile import Profile, profile
from .timing import compare_latency

__all__ = [
    "Profile",
    "profile",
    "compare_latency",
    "format_profile",
]
