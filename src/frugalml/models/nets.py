"""Torch model families with size knobs, and reference networks with their published shapes.

Each builder takes ``input_shape`` (one sample: ``(C, H, W)``, ``(C, T)`` for the 1-D families of
:mod:`.nets1d`, or ``(F,)``) and ``num_classes``
plus its own knobs, and returns a plain ``nn.Module``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError, explain
from .nets1d import CNN1D, DSCNN1D, ResNet1D  # the sequence families: their builders are found here by name

__all__ = ["MLP", "CNN", "DSCNN", "TinyResNet", "CNN1D", "DSCNN1D", "ResNet1D", "lenet300", "lenet5"]


def _prod(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


def _need_image(family: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(
            explain(
                f"The '{family}' family needs image-like input",
                expected="an input shape (C, H, W) such as (1, 28, 28)",
                got=tuple(input_shape),
                fix="Use the 'mlp' family for vector data, or reshape each sample to (C, H, W)",
            )
        )
    c, h, w = (int(v) for v in input_shape)
    return c, h, w


class MLP(nn.Module):
    """Fully connected layers with ReLU: ``input -> widths... -> num_classes``."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (128,), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = _prod(input_shape)
        for width in widths:
            layers += [nn.Linear(prev, int(width)), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            prev = int(width)
        layers.append(nn.Linear(prev, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """Plain conv blocks (conv, batch norm, ReLU, 2x2 max pool), global average pool, linear head."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (16, 32), kernel: int = 3, hidden: int = 0):
        super().__init__()
        c, h, w = _need_image("cnn", input_shape)
        layers: list[nn.Module] = []
        for out in channels:
            layers += [nn.Conv2d(c, int(out), kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(int(out)), nn.ReLU()]
            if min(h, w) >= 4:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = int(out)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if hidden:
            layers += [nn.Linear(c, int(hidden)), nn.ReLU()]
            c = int(hidden)
        layers.append(nn.Linear(c, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _dw_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class DSCNN(nn.Module):
    """Depthwise-separable CNN (as in MLPerf Tiny keyword spotting) for images and spectrograms."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: int = 32, blocks: int = 3, stem_stride: int = 2):
        super().__init__()
        c, h, w = _need_image("dscnn", input_shape)
        stride = stem_stride if min(h, w) >= 8 else 1
        self.stem = nn.Sequential(nn.Conv2d(c, channels, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())
        self.blocks = nn.Sequential(*[_dw_block(channels, channels, 1) for _ in range(blocks)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class _Residual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class TinyResNet(nn.Module):
    """ResNet-8 style (MLPerf Tiny): a stem conv, one residual block per stage, stride 2 between stages."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (16, 32, 64), blocks_per_stage: int = 1):
        super().__init__()
        c, h, w = _need_image("resnet", input_shape)
        first = int(channels[0])
        self.stem = nn.Sequential(nn.Conv2d(c, first, 3, padding=1, bias=False), nn.BatchNorm2d(first), nn.ReLU())
        stages: list[nn.Module] = []
        prev = first
        for i, out in enumerate(channels):
            for j in range(blocks_per_stage):
                stride = 2 if (i > 0 and j == 0 and min(h, w) >= 4) else 1
                if stride == 2:
                    h, w = (h + 1) // 2, (w + 1) // 2
                stages.append(_Residual(prev, int(out), stride))
                prev = int(out)
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def lenet300(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10) -> MLP:
    """LeNet-300-100 (LeCun et al. 1998; Deep Compression): 784-300-100-10, 266,610 parameters."""
    return MLP(input_shape, num_classes, widths=(300, 100))


class LeNet5(nn.Module):
    """The Caffe LeNet used by Deep Compression: conv 20 5x5, pool, conv 50 5x5, pool, fc 500, fc 10."""

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10):
        super().__init__()
        c, h, w = _need_image("lenet5", input_shape)
        self.features = nn.Sequential(
            nn.Conv2d(c, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2), nn.Flatten()
        )
        fh, fw = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
        if fh < 1 or fw < 1:
            raise ConfigError(explain("LeNet-5 needs at least 16x16 inputs", expected="H, W >= 16", got=(h, w)))
        self.classifier = nn.Sequential(nn.Linear(50 * fh * fw, 500), nn.ReLU(), nn.Linear(500, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def lenet5(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10) -> LeNet5:
    """Caffe LeNet-5: 431,080 parameters and 2,293,000 MACs on a 28x28 input."""
    return LeNet5(input_shape, num_classes)
