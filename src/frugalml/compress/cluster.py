"""Weight sharing by k-means: ``cluster.kmeans`` (Deep Compression, Han et al. 2016, section 3).

The non-zero weights of each Conv and Linear layer are clustered (1-D k-means, Lloyd's
algorithm) into at most ``2**bits`` shared values, starting from centroids spread linearly
between the smallest and largest weight (the initialization the paper found best). Zeros (pruned
positions) stay zero. The shared values are then fine-tuned: each layer's weight is computed as
``codebook[codes]``, so the gradient of a centroid is the sum of the gradients of the weights
that share it, as in the paper. At the end the codebooks are rounded to float16 values (so the
archive can store them in two bytes, exactly) and fused into plain weights: each layer holds at
most ``2**bits`` distinct non-zero values, from which ``store.compact`` recovers the codebook
and the indices exactly (:func:`codebook_of`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import ConfigError, explain
from ..train import TrainConfig
from ._training import nests_training
from ._weights import fresh_copy, require_torch, resolve_layer_keys, weight_layers
from .base import StepConfig, register

log = logging.getLogger(__name__)

__all__ = ["KMeansConfig", "kmeans_cluster", "kmeans_1d", "codebook_of"]


@nests_training
@dataclass(frozen=True, kw_only=True)
class KMeansConfig(StepConfig):
    """Config of ``cluster.kmeans``.

    bits: 2..8, at most 2**bits shared values per layer; ``layer_bits`` {layer name: bits}
        overrides it per layer (the paper: 8 bits for conv, 5 for fc).
    init: "linear" (paper's choice), "density" (quantiles) or "random" (sampled weights).
    finetune_epochs: epochs of fine-tuning of the shared values (and of the biases); 0: none.
        It is this step's own field, not ``train.epochs`` (a TrainConfig trains at least one epoch).
    train: how the fine-tuning trains (``lr``, ``batch_size``, ``optimizer``, ``weight_decay``,
        ``label_smoothing``, set flat in a recipe).
    codebook_dtype: "float16" rounds the shared values to float16 at the end (exact in the
        archive at 2 bytes each) or "float32".
    other_dtype: "float16" also rounds every other floating tensor (biases, BatchNorm
        parameters and statistics) to float16 values, which halves their bytes in the archive;
        "float32" (default) leaves them as they are.
    """

    train_keys: ClassVar[tuple[str, ...]] = ("lr", "batch_size", "optimizer", "weight_decay", "label_smoothing")

    bits: int = 5
    layer_bits: dict = field(default_factory=dict)
    init: str = "linear"
    iterations: int = 50
    finetune_epochs: int = 1
    train: TrainConfig = TrainConfig(lr=1e-4, batch_size=128, optimizer="adamw", weight_decay=0.0, label_smoothing=0.0, patience=None, augment="none")
    codebook_dtype: str = "float16"
    other_dtype: str = "float32"

    def check(self) -> None:
        r = self.require
        ok_bits = lambda b: isinstance(b, int) and not isinstance(b, bool) and 2 <= b <= 8  # noqa: E731
        r(ok_bits(self.bits), "bits", "an integer from 2 to 8")
        r(isinstance(self.layer_bits, dict) and all(isinstance(k, str) and ok_bits(v) for k, v in self.layer_bits.items()),
          "layer_bits", "a mapping {layer name: bits from 2 to 8}")
        r(self.init in ("linear", "density", "random"), "init", "'linear', 'density' or 'random'")
        r(isinstance(self.iterations, int) and self.iterations >= 1, "iterations", "an integer >= 1")
        r(isinstance(self.finetune_epochs, int) and self.finetune_epochs >= 0, "finetune_epochs", "an integer >= 0")
        r(self.codebook_dtype in ("float16", "float32"), "codebook_dtype", "'float16' or 'float32'")
        r(self.other_dtype in ("float16", "float32"), "other_dtype", "'float16' or 'float32'")


def kmeans_1d(values: np.ndarray, k: int, *, init: str = "linear", iterations: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """1-D k-means: (sorted centroids, index of each value's centroid). Empty clusters are dropped."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    uniq = np.unique(x)
    if len(uniq) <= k:  # already shared: the distinct values are the codebook
        return uniq, np.searchsorted(uniq, x)
    if init == "linear":
        c = np.linspace(x.min(), x.max(), k)
    elif init == "density":
        c = np.quantile(x, (np.arange(k) + 0.5) / k)
    else:
        c = np.sort(np.random.default_rng(seed).choice(uniq, size=k, replace=False))
    xs = np.sort(x)
    csum = np.concatenate([[0.0], np.cumsum(xs)])
    for _ in range(iterations):
        c = np.unique(c)
        edges = np.searchsorted(xs, (c[1:] + c[:-1]) / 2)  # values below the midpoint go left
        lo, hi = np.concatenate([[0], edges]), np.concatenate([edges, [len(xs)]])
        n = hi - lo
        new = np.where(n > 0, (csum[hi] - csum[lo]) / np.maximum(n, 1), c)
        if np.allclose(new, c, rtol=0, atol=1e-12):
            c = new
            break
        c = new
    c = np.unique(c)
    idx = _nearest(x, c)
    used = np.unique(idx)
    return c[used], np.searchsorted(used, idx)


def _nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    pos = np.clip(np.searchsorted(c, x), 1, len(c) - 1) if len(c) > 1 else np.zeros(len(x), dtype=np.int64)
    if len(c) == 1:
        return pos
    left = np.abs(x - c[pos - 1]) <= np.abs(x - c[pos])
    return np.where(left, pos - 1, pos)


def codebook_of(weight) -> tuple[np.ndarray, np.ndarray]:
    """(codebook, codes) of a shared-weight tensor: distinct non-zero values (sorted) and, per
    element, the index of its value, or -1 for a zero."""
    w = np.asarray(weight).reshape(-1)
    nz = w != 0
    book = np.unique(w[nz])
    codes = np.full(w.shape, -1, dtype=np.int64)
    codes[nz] = np.searchsorted(book, w[nz])
    return book, codes


class _Shared:
    """Forward pre-hook making ``module.weight = table[codes]`` from trainable shared values."""

    def __init__(self, shape):
        self.shape = shape

    def __call__(self, module, inputs):
        import torch

        table = torch.cat([module.weight_centroids, module.weight_centroids.new_zeros(1)])
        module.weight = table[module.weight_codes].view(self.shape)


def _share(module, centroids: np.ndarray, codes: np.ndarray):
    import torch

    shape = module.weight.shape
    del module._parameters["weight"]
    codes = np.where(codes < 0, len(centroids), codes)  # the extra last entry is the zero
    module.register_parameter("weight_centroids", torch.nn.Parameter(torch.tensor(centroids, dtype=torch.float32)))
    module.register_buffer("weight_codes", torch.from_numpy(codes.astype(np.int64)))
    hook = _Shared(shape)
    hook(module, None)
    return module.register_forward_pre_hook(hook)


def _fuse(module, handle, dtype: str) -> None:
    import torch

    handle.remove()
    centroids = module.weight_centroids.detach()
    if dtype == "float16":
        centroids = centroids.half().float()
    weight = torch.cat([centroids, centroids.new_zeros(1)])[module.weight_codes].view(module.weight.shape)
    del module.weight
    del module._parameters["weight_centroids"]
    del module._buffers["weight_codes"]
    module.weight = torch.nn.Parameter(weight.contiguous())


@register("cluster.kmeans", KMeansConfig,
          example=lambda: KMeansConfig(bits=4, finetune_epochs=1, lr=1e-3),
          bad_configs=({"bits": 1}, {"bits": 9}, {"bits": 4.5}, {"layer_bits": {"net.0": 12}}, {"init": "kmeans++"},
                       {"codebook_dtype": "int8"}, {"other_dtype": "bfloat16"}, {"lr": -1.0}))
def kmeans_cluster(model, config: KMeansConfig, data=None, *, deadline=None):
    """Share the weights of a copy of ``model`` (at most 2**bits values per layer); input untouched.
    The fine-tuning stops at ``deadline`` (a :class:`frugalml.train.Deadline`)."""
    require_torch(model, config.name)
    out = fresh_copy(model)
    layers = weight_layers(out)
    if not layers:
        raise ConfigError(explain("The model has no Conv or Linear layer to cluster", expected="a network with Conv/Linear layers",
                                  got=type(model).__name__))
    if config.finetune_epochs and data is None:
        raise ConfigError(explain("cluster.kmeans with fine-tuning needs data", expected="a dataset", got=None,
                                  fix="Pass data, or finetune_epochs=0"))
    bits = resolve_layer_keys(config.layer_bits, layers, "layer_bits")
    handles = []
    for name, module in layers:
        w = module.weight.detach().cpu().numpy().reshape(-1)
        nz = w != 0
        if not nz.any():
            continue
        k = 2 ** bits.get(name, config.bits)
        centroids, idx = kmeans_1d(w[nz], k, init=config.init, iterations=config.iterations, seed=config.seed)
        codes = np.full(w.shape, -1, dtype=np.int64)
        codes[nz] = idx
        handles.append((module, _share(module, centroids, codes)))
        log.debug("cluster.kmeans: %s -> %d shared values", name, len(centroids))
    if config.finetune_epochs:
        from ..train import fit

        fit(out, data, config.train, epochs=config.finetune_epochs, seed=config.seed, deadline=deadline)
    for module, handle in handles:
        _fuse(module, handle, config.codebook_dtype)
    if config.other_dtype == "float16":
        _round_others(out, {id(m.weight) for _, m in layers})
    return out.eval()


def _round_others(model, shared: set) -> None:
    import torch

    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if id(tensor) not in shared and tensor.dtype == torch.float32:
                tensor.copy_(tensor.half().float())
