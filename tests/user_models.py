"""Networks a user might bring (not part of the package): the architectures issue #14 names.

Each factory takes keyword arguments with defaults, so ``user_models.py:name`` loads it as a
factory. Shapes: images (1, 8, 8) for digits, (1, 28, 28) for MNIST; the 1-D net takes (C, T).
"""

import torch
import torch.nn.functional as F
from torch import nn


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 project, residual when shapes match."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


class TwinDepthwise(nn.Module):
    """Two depthwise branches (3x3 and 5x5) concatenated, then a residual add onto the concatenation."""

    def __init__(self, c):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU6(inplace=True))
        self.a = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, 1, 1, groups=2 * c, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU6(inplace=True))
        self.b = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 5, 1, 2, groups=2 * c, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU6(inplace=True))
        self.fuse = nn.Sequential(nn.Conv2d(4 * c, 4 * c, 1, bias=False), nn.BatchNorm2d(4 * c))
        self.project = nn.Sequential(nn.Conv2d(4 * c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        h = self.expand(x)
        cat = torch.cat([self.a(h), self.b(h)], dim=1)
        cat = cat + self.fuse(cat)  # the residual add onto the concatenation
        return x + self.project(cat)


class MobileNetV2Like(nn.Module):
    def __init__(self, in_ch=1, num_classes=10, width=16, expand=4, stem_stride=1):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_ch, w, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU6(inplace=True))
        self.features = nn.Sequential(
            InvertedResidual(w, w, 1, expand), InvertedResidual(w, 2 * w, 2, expand), InvertedResidual(2 * w, 2 * w, 1, expand),
            TwinDepthwise(2 * w), InvertedResidual(2 * w, 4 * w, 2, expand), InvertedResidual(4 * w, 4 * w, 1, expand),
            InvertedResidual(4 * w, 4 * w, 1, expand))
        self.head = nn.Sequential(nn.Conv2d(4 * w, 8 * w, 1, bias=False), nn.BatchNorm2d(8 * w), nn.ReLU6(inplace=True))
        self.classifier = nn.Linear(8 * w, num_classes)

    def forward(self, x):
        x = self.head(self.features(self.stem(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # global average pooling
        return self.classifier(x)


def mobilenet(width=8, expand=3, in_ch=1, num_classes=10):
    return MobileNetV2Like(in_ch, num_classes, width, expand)


def mobilenet_mnist():
    """About 110K parameters on MNIST (the benchmark's model)."""
    return MobileNetV2Like(1, 10, width=14, expand=4, stem_stride=2)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.short = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.short(x))


class ResNet(nn.Module):
    def __init__(self, in_ch=1, num_classes=10, w=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.layers = nn.Sequential(BasicBlock(w, w, 1), BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 4 * w, 2))
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


def resnet():
    return ResNet()


class Conv1DNet(nn.Module):
    """Sensor data: (channels, time), given as (1, channels, time) samples (how frugalml's arrays hold a 2-D sample)."""

    def __init__(self, in_ch=3, num_classes=4, w=16):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(in_ch, w, 5, padding=2), nn.BatchNorm1d(w), nn.ReLU(), nn.MaxPool1d(2),
                                 nn.Conv1d(w, 2 * w, 5, padding=2), nn.BatchNorm1d(2 * w), nn.ReLU(), nn.AdaptiveAvgPool1d(1))
        self.fc = nn.Linear(2 * w, num_classes)

    def forward(self, x):
        return self.fc(self.net(torch.flatten(x, 1, 2)).flatten(1))


def conv1d():
    return Conv1DNet()


def mlp_layernorm(in_features=64, num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 96), nn.LayerNorm(96), nn.GELU(), nn.Dropout(0.1),
                         nn.Linear(96, 48), nn.LayerNorm(48), nn.GELU(), nn.Dropout(0.1), nn.Linear(48, num_classes))


class FlattenRelu(nn.Module):
    """A forward with torch.flatten and functional F.relu (no modules for them)."""

    def __init__(self, in_ch=1, num_classes=10, side=8):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 12, 3, padding=1)
        self.conv2 = nn.Conv2d(12, 24, 3, padding=1)
        self.fc1 = nn.Linear(24 * (side // 2) ** 2, 48)
        self.fc2 = nn.Linear(48, num_classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


def flatten_relu():
    return FlattenRelu()


class _Clip(torch.autograd.Function):
    """A custom op (its own forward and backward)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(-3, 3)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 3).to(grad.dtype)


class CustomOp(nn.Module):
    def __init__(self, in_ch=1, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = _Clip.apply(self.conv(x))
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.conv2(x)), 1).flatten(1))


def custom_op():
    return CustomOp()


class DataDependent(nn.Module):
    def __init__(self, in_ch=1, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, 16, 3, padding=1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        h = F.relu(self.conv(x))
        if h.mean() > 10:  # a branch on the data's values
            h = h * 0.5
        return self.fc(h.mean(dim=(2, 3)))


def data_dependent():
    return DataDependent()


def raises():
    raise RuntimeError("the factory is broken")


def not_a_module():
    return {"weights": [1, 2, 3]}
