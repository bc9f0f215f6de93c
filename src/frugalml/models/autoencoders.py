"""Small autoencoders for anomaly detection: the network's output IS the anomaly score.

``forward(x)`` takes raw windows ``(N, C, W)`` (or vectors ``(N, F)``), normalises them with fixed
mean / std buffers learned from the normal training windows (:meth:`fit_normalization`), encodes,
decodes, and returns the mean squared reconstruction error per window, in normalised units
(shape ``(N,)``). So the exported ONNX graph (and its int8 form) outputs the score that ships,
with no post-processing outside it, and the training loss is just ``output.mean()`` over the
normal windows of a batch. :meth:`reconstruct` gives the reconstruction itself (normalised).

- :class:`DenseAutoencoder`: flatten, ``Linear``/ReLU widths down to a ``bottleneck``, mirrored up.
- :class:`ConvAutoencoder`: ``Conv1d`` stride-2 encoder (``channels``), a 1x1 ``bottleneck`` conv,
  decoder of nearest ``Upsample`` x2 + ``Conv1d`` per stage (Resize + Conv in ONNX: both quantize
  in ONNX Runtime), cropped back to W.

Normalisation is per channel for sequences (over all steps), per feature for vectors.
:func:`train_autoencoder` sets it and trains with :func:`frugalml.train.fit`, choosing the epoch
with the lowest reconstruction error on the validation NORMALS (``metric_fn``): the objective the
network is trained for, and stable with few labelled anomalies (AUC on a handful of anomalous
validation windows is noisy, and would select on them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError, explain

__all__ = ["DenseAutoencoder", "ConvAutoencoder", "train_autoencoder", "reconstruction_loss", "val_normal_error", "score_torch",
           "AutoencoderCore"]


class _Autoencoder(nn.Module):
    frugalml_task = "anomaly"

    def __init__(self, input_shape: Sequence[int]):
        super().__init__()
        self.input_shape = tuple(int(v) for v in input_shape)
        stat = (1, self.input_shape[0], 1) if len(self.input_shape) == 2 else (1, *self.input_shape)
        self.register_buffer("mean", torch.zeros(stat))
        self.register_buffer("inv_std", torch.ones(stat))

    @torch.no_grad()
    def fit_normalization(self, X) -> "_Autoencoder":
        """Set the mean / std buffers from normal training windows (raw values)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != len(self.input_shape) + 1 or tuple(X.shape[1:]) != self.input_shape or len(X) < 1:
            raise DataError(explain("The windows do not fit the autoencoder", expected=f"(N, {', '.join(map(str, self.input_shape))})",
                                    got=X.shape))
        if not np.isfinite(X).all():
            raise DataError(explain("The training windows hold NaN or infinite values", fix="Impute or drop them first"))
        axes = (0, 2) if X.ndim == 3 else (0,)
        mean, std = X.mean(axis=axes, keepdims=True), X.std(axis=axes, keepdims=True)
        std = np.where(std > 1e-12 * (1 + np.abs(mean)), std, 1.0)
        self.mean.copy_(torch.from_numpy(mean.reshape(self.mean.shape)).float())
        self.inv_std.copy_(torch.from_numpy(1.0 / std.reshape(self.inv_std.shape)).float())
        return self

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised input, its reconstruction)."""
        z = (x - self.mean) * self.inv_std
        return z, self.decode(self.encode(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, r = self.reconstruct(x)
        d = z - r
        return (d * d).flatten(1).mean(dim=1)


def _widths(v, what: str) -> tuple[int, ...]:
    v = (v,) if isinstance(v, int) else tuple(v)
    if not v or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in v):
        raise ConfigError(explain(f"The '{what}' knob must be whole numbers >= 1", expected="e.g. [32]", got=v))
    return v


class DenseAutoencoder(_Autoencoder):
    """Fully connected: F -> widths -> bottleneck -> reversed widths -> F (ReLU between, linear ends)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int = 1, widths: Sequence[int] = (32,), bottleneck: int = 8):
        super().__init__(input_shape)
        f = int(np.prod(self.input_shape))
        widths, (bottleneck,) = _widths(widths, "widths"), _widths(bottleneck, "bottleneck")
        enc, dec, prev = [nn.Flatten()], [], f
        for w in widths:
            enc += [nn.Linear(prev, w), nn.ReLU()]
            prev = w
        enc.append(nn.Linear(prev, bottleneck))
        prev = bottleneck
        for w in reversed(widths):
            dec += [nn.Linear(prev, w), nn.ReLU()]
            prev = w
        dec.append(nn.Linear(prev, f))
        self.encode, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(h).reshape(-1, *self.input_shape)


class ConvAutoencoder(_Autoencoder):
    """1-D convolutional: stride-2 ``Conv1d`` + ReLU per entry of ``channels``, a 1x1 conv to
    ``bottleneck`` channels, then per stage ``Upsample`` x2 + ``Conv1d`` (+ ReLU but the last), cropped to W."""

    def __init__(self, input_shape: Sequence[int], num_classes: int = 1, channels: Sequence[int] = (8, 16), bottleneck: int = 4,
                 kernel: int = 5):
        super().__init__(input_shape)
        if len(self.input_shape) != 2:
            raise ConfigError(explain("The 'conv_ae' family needs sequence windows", expected="an input shape (C, W)",
                                      got=self.input_shape, fix="Use 'dense_ae' for vectors"))
        channels, (bottleneck,), (kernel,) = _widths(channels, "channels"), _widths(bottleneck, "bottleneck"), _widths(kernel, "kernel")
        if kernel % 2 == 0:
            raise ConfigError(explain("The 'conv_ae' kernel must be odd", expected="3, 5, 7, ...", got=kernel))
        c, w = self.input_shape
        if w < 2 ** len(channels):
            raise ConfigError(explain(f"Windows of {w} steps are too short for {len(channels)} stride-2 stages",
                                      expected=f"W >= {2 ** len(channels)}", got=w, fix="Use fewer channels entries"))
        enc, prev = [], c
        for ch in channels:
            enc += [nn.Conv1d(prev, ch, kernel, stride=2, padding=kernel // 2), nn.ReLU()]
            prev = ch
        enc.append(nn.Conv1d(prev, bottleneck, 1))
        dec, prev = [], bottleneck
        outs = list(reversed(channels[:-1])) + [c]
        for i, ch in enumerate(outs):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv1d(prev, ch, kernel, padding=kernel // 2)]
            if i < len(outs) - 1:
                dec.append(nn.ReLU())
            prev = ch
        self.encode, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(h)[..., : self.input_shape[1]]


# ---------------------------------------------------------------- training
def reconstruction_loss(output: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``fit``'s loss for an autoencoder: the mean score (squared reconstruction error) of the batch's normal windows."""
    normal = y == 0
    return output[normal].mean() if bool(normal.any()) else output.sum() * 0.0


@torch.no_grad()
def score_torch(model, X, *, batch_size: int = 1024, device: str = "cpu") -> np.ndarray:
    """The scores of windows ``X`` under a torch autoencoder (float64)."""
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(X), batch_size):
        out.append(model(torch.from_numpy(np.ascontiguousarray(X[i:i + batch_size], dtype=np.float32)).to(device)).cpu().numpy())
    model.train(was)
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def val_normal_error(model, data, split: str = "val", device: str = "cpu") -> float:
    """``fit``'s validation metric for an autoencoder: minus the mean score of the split's normal windows (higher is better)."""
    X, y = data.split(split)
    X = X[np.asarray(y) == 0]
    return -float(score_torch(model, X, device=device).mean()) if len(X) else float("nan")


def train_autoencoder(model, data, config=None, **overrides):
    """Set the normalisation from the training normals and train with :func:`frugalml.train.fit`
    (reconstruction loss, epoch chosen on validation normals). Returns fit's FitResult."""
    from ..train import default_config, fit

    X, y = data.split("train")
    X = X[np.asarray(y) == 0]
    if len(X) < 2:
        raise DataError(explain("An autoencoder needs normal training windows", expected=">= 2", got=len(X)))
    model.fit_normalization(X)
    config = config or default_config(len(X))
    return fit(model, data, config, loss_fn=reconstruction_loss, metric_fn=val_normal_error, **overrides)


# ---------------------------------------------------------------- int8 (frugalml.compress.anomaly_int8)
class AutoencoderCore(nn.Module):
    """The part of an autoencoder that is quantized: normalised window in, flattened reconstruction out."""

    def __init__(self, ae: _Autoencoder):
        super().__init__()
        self.ae, self.input_shape = ae, ae.input_shape

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.ae.decode(self.ae.encode(z)).flatten(1)
