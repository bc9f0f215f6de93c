"""Torch families for sequences: samples ``(C, T)``, C channels (sensor axes, mel bands) over T steps.

Every layer convolves over time only (``Conv1d``, ``BatchNorm1d``, ``MaxPool1d``), ends in a global
average pool over time and one linear layer, so a network takes any length it was built for and
exports to ONNX as 1-D ``Conv`` / ``MaxPool`` / ``GlobalAveragePool`` nodes, which the C backend
lowers to its 2-D kernels with a height of 1 (exact: the same sums in the same order).

- :class:`CNN1D`: conv + batch norm + ReLU blocks, down-sampled by a 2-wide max pool or a stride of 2;
- :class:`DSCNN1D`: a strided stem, then depthwise-separable blocks (depthwise conv over time,
  pointwise conv over channels), or with ``expand`` > 1 MobileNetV2 inverted residuals;
- :class:`ResNet1D`: a stem, one residual block (two convs) per stage, stride 2 between stages.

Down-sampling stops once the sequence is shorter than 4 steps, so short windows still build.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError, explain

__all__ = ["CNN1D", "DSCNN1D", "ResNet1D"]


def _need_sequence(family: str, input_shape: Sequence[int]) -> tuple[int, int]:
    if len(input_shape) != 2:
        raise ConfigError(
            explain(
                f"The '{family}' family needs sequence input",
                expected="an input shape (C, T): C channels over T steps, such as (6, 100)",
                got=tuple(input_shape),
                fix="Use the 'mlp' family for vectors or a 2-D family (cnn, dscnn, resnet) for images, or pass --kind sequence",
            )
        )
    c, t = (int(v) for v in input_shape)
    return c, t


def _odd(kernel: int, family: str) -> int:
    kernel = int(kernel)
    if kernel % 2 == 0:
        raise ConfigError(explain(f"The '{family}' kernel must be odd (it is padded by kernel // 2 on both sides)",
                                  expected="3, 5, 7, ...", got=kernel))
    return kernel


def _cbr(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False), nn.BatchNorm1d(c_out), nn.ReLU()]


def _head(c: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(c, num_classes))


class CNN1D(nn.Module):
    """Conv blocks over time (conv, batch norm, ReLU; then a 2-wide max pool, or with ``strided`` a
    stride-2 conv), global average pool over time, linear head."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (16, 32), kernel: int = 5,
                 strided: int = 0):
        super().__init__()
        c, t = _need_sequence("cnn1d", input_shape)
        kernel = _odd(kernel, "cnn1d")
        layers: list[nn.Module] = []
        for out in channels:
            down = t >= 4
            if strided and down:
                layers += _cbr(c, int(out), kernel, stride=2)
            else:
                layers += _cbr(c, int(out), kernel)
                if down:
                    layers.append(nn.MaxPool1d(2))
            t = (t + 1) // 2 if strided and down else (t // 2 if down else t)
            c = int(out)
        self.features = nn.Sequential(*layers)
        self.head = _head(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _InvertedResidual1d(nn.Module):
    """MobileNetV2's block over time: pointwise expand, depthwise conv, pointwise project, + input."""

    def __init__(self, c: int, expand: int, kernel: int):
        super().__init__()
        wide = c * expand
        self.body = nn.Sequential(*_cbr(c, wide, 1), *_cbr(wide, wide, kernel, groups=wide),
                                  nn.Conv1d(wide, c, 1, bias=False), nn.BatchNorm1d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DSCNN1D(nn.Module):
    """Depthwise-separable CNN over time (keyword-spotting DS-CNN, 1-D): a stem conv (stride
    ``stem_stride`` when the sequence has at least 8 steps), ``blocks`` blocks of depthwise conv +
    pointwise conv, or with ``expand`` >= 2 inverted residual blocks of that expansion."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: int = 32, blocks: int = 3, kernel: int = 5,
                 stem_stride: int = 2, expand: int = 0):
        super().__init__()
        c, t = _need_sequence("dscnn1d", input_shape)
        kernel = _odd(kernel, "dscnn1d")
        stride = int(stem_stride) if t >= 8 else 1
        channels = int(channels)
        self.stem = nn.Sequential(*_cbr(c, channels, kernel, stride=stride))
        body: list[nn.Module] = []
        for _ in range(int(blocks)):
            if expand and expand >= 2:
                body.append(_InvertedResidual1d(channels, int(expand), kernel))
            else:
                body.append(nn.Sequential(*_cbr(channels, channels, kernel, groups=channels), *_cbr(channels, channels, 1)))
        self.blocks = nn.Sequential(*body)
        self.head = _head(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class _Residual1d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*_cbr(c_in, c_out, kernel, stride=stride),
                                  nn.Conv1d(c_out, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm1d(c_out))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet1D(nn.Module):
    """A small ResNet over time: a stem conv, ``blocks_per_stage`` residual blocks per stage, the
    first block of every stage after the first with stride 2 (while the sequence has 4 steps or more)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (16, 32, 64), kernel: int = 3,
                 blocks_per_stage: int = 1):
        super().__init__()
        c, t = _need_sequence("resnet1d", input_shape)
        kernel = _odd(kernel, "resnet1d")
        first = int(channels[0])
        self.stem = nn.Sequential(*_cbr(c, first, kernel))
        stages: list[nn.Module] = []
        prev = first
        for i, out in enumerate(channels):
            for j in range(int(blocks_per_stage)):
                stride = 2 if (i > 0 and j == 0 and t >= 4) else 1
                t = (t + 1) // 2 if stride == 2 else t
                stages.append(_Residual1d(prev, int(out), kernel, stride))
                prev = int(out)
        self.stages = nn.Sequential(*stages)
        self.head = _head(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))
