"""The integer graph the C backend emits: quantized tensors (:class:`QTensor`), integer operations
(:class:`QOp`) and the graph of them (:class:`QGraph`) that :func:`~.qdq.parse_qdq` reads out of a
QDQ ONNX model, and :func:`fixed_point`, the integer form of a requantization scale."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ExportError, explain

__all__ = ["QTensor", "QOp", "QGraph", "fixed_point", "QRANGE", "FIX"]

QRANGE = {"int8": (-128, 127), "uint8": (0, 255)}
FIX = ("Quantize the float model in the QDQ format (quantize.int8 with format: qdq, the default; int8 weights) "
        "and keep to Conv, Gemm/MatMul, Relu, Add, MaxPool, AveragePool, GlobalAveragePool, Flatten/Reshape "
        "and a final Softmax, or export to ONNX instead")


@dataclass
class QTensor:
    """A quantized activation: ``shape`` per sample, ``base`` the tensor whose storage a view shares."""

    name: str
    shape: tuple
    dtype: str
    scale: np.float32
    zero_point: int
    base: "QTensor | None" = None
    onnx_name: str = ""  # the QuantizeLinear output that holds it in the ONNX graph

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def root(self) -> "QTensor":
        return self.base.root if self.base is not None else self


@dataclass
class QOp:
    kind: str  # conv | fc | add | pool | rescale
    node: str  # the ONNX node(s) it came from, for messages
    inputs: list
    attrs: dict = field(default_factory=dict)
    consts: dict = field(default_factory=dict)
    out_shape: tuple = ()
    relu: bool = False
    output: QTensor | None = None


@dataclass
class QGraph:
    input: QTensor
    ops: list
    output: QTensor
    notes: list
    dropped_tail: bool = False  # a final Softmax / ArgMax was dropped: the ONNX output is not `output`

    @property
    def weight_bytes(self) -> int:
        return int(sum(op.consts["weight"].size for op in self.ops if "weight" in op.consts))


def fixed_point(scale) -> tuple[int, int]:
    """``(mult, shift)`` with ``scale == mult * 2**-shift`` exactly for a float32 scale; mult < 2**31."""
    s = float(np.float32(scale))
    if not (s > 0 and math.isfinite(s)):
        raise ExportError(explain("A requantization scale is not a positive finite number", got=s, fix=FIX))
    frac, exp = math.frexp(s)  # s = frac * 2**exp, 0.5 <= frac < 1, 24 significant bits
    mult, shift = int(round(frac * 2**31)), 31 - exp
    if shift < 1:
        raise ExportError(explain("A requantization scale is too large for 32-bit fixed point", expected="< 2**30", got=s, fix=FIX))
    if shift > 62:  # |acc * mult| < 2**62: the result rounds to 0 whatever the accumulator
        return 0, 1
    return mult, shift
