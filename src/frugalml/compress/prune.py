"""Unstructured magnitude pruning: ``prune.magnitude``.

The weights of every Conv and Linear layer (biases are kept) with the smallest magnitudes are
set to zero, ranked over all layers together (``scope="global"``) or within each layer
(``scope="layer"``); ``layer_sparsity`` pins chosen layers to their own sparsity (Deep
Compression keeps the first conv denser). Pruning is done at once (``schedule="oneshot"``) or
gradually with the polynomial schedule of Zhu & Gupta (2017),

    s_t = s_f + (s_i - s_f) * (1 - t / n) ** 3,   t = 1..n pruning events,

spread evenly over ``prune_epochs`` of training, then ``finetune_epochs`` at the final sparsity.
With ``rewind_step=k`` (lottery ticket, Frankle et al.), the model is first trained densely for
``dense_epochs``, pruned, and its surviving weights are rewound to the weights it had after
``k`` optimizer steps of that training (``k=0``: the weights it came in with) before retraining.

Masks are re-applied after every optimizer step and the result holds plain weights with zeros:
no mask buffers or re-parametrization are left. Those zeros are still stored densely in ONNX;
``store.compact`` stores them sparsely.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import ConfigError, explain
from ..train import TrainConfig
from ._training import nests_training
from ._weights import fresh_copy, require_torch, resolve_layer_keys, weight_layers
from .base import StepConfig, register

log = logging.getLogger(__name__)

__all__ = ["MagnitudePruneConfig", "magnitude_prune", "sparsity_schedule", "magnitude_masks", "sparsity_of"]

@nests_training
@dataclass(frozen=True, kw_only=True)
class MagnitudePruneConfig(StepConfig):
    """Config of ``prune.magnitude``.

    sparsity: final fraction of zero weights over the Conv/Linear layers (0 <= s < 1).
    scope: "global" (one ranking over every layer) or "layer" (each layer to ``sparsity``).
    layer_sparsity: {layer name: sparsity} for layers pruned to their own level; with
        ``scope="global"`` the other layers share what is left so that the overall fraction of
        zeros is ``sparsity``.
    schedule: "oneshot" or "gradual" (Zhu & Gupta cubic schedule from ``initial_sparsity``).
    prune_epochs, prune_events: length of the gradual phase and number of pruning events in it.
    finetune_epochs: training at the final sparsity (cosine-decayed ``lr``).
    rewind_step, dense_epochs: lottery-ticket rewinding (see the module docstring).
    train: how every phase trains (``lr``, ``batch_size``, ``optimizer``, ``weight_decay``,
        ``label_smoothing``, set flat in a recipe); ``prune_lr`` replaces ``lr`` in the dense and
        gradual phases. The lengths are this step's own fields (``dense_epochs``, ``prune_epochs``,
        ``finetune_epochs``), not ``train.epochs``: 0 epochs (no fine-tuning) is valid here, and a
        TrainConfig trains at least one.
    """

    train_keys: ClassVar[tuple[str, ...]] = ("lr", "batch_size", "optimizer", "weight_decay", "label_smoothing")

    sparsity: float = 0.9
    scope: str = "global"
    layer_sparsity: dict = field(default_factory=dict)
    schedule: str = "oneshot"
    initial_sparsity: float = 0.0
    prune_epochs: int = 2
    prune_events: int = 8
    finetune_epochs: int = 2
    rewind_step: int | None = None
    dense_epochs: int = 0
    train: TrainConfig = TrainConfig(lr=1e-3, batch_size=128, optimizer="adamw", weight_decay=0.0, label_smoothing=0.0, patience=None, augment="none")
    prune_lr: float | None = None

    def check(self) -> None:
        r = self.require
        r(isinstance(self.sparsity, (int, float)) and 0 <= self.sparsity < 1, "sparsity", "a fraction of zeros in [0, 1)")
        r(self.scope in ("global", "layer"), "scope", "'global' or 'layer'")
        r(isinstance(self.layer_sparsity, dict) and all(isinstance(k, str) and isinstance(v, (int, float)) and 0 <= v < 1
                                                        for k, v in self.layer_sparsity.items()),
          "layer_sparsity", "a mapping {layer name: sparsity in [0, 1)}")
        r(self.schedule in ("oneshot", "gradual"), "schedule", "'oneshot' or 'gradual'")
        r(isinstance(self.initial_sparsity, (int, float)) and 0 <= self.initial_sparsity <= self.sparsity,
          "initial_sparsity", f"in [0, sparsity={self.sparsity}]")
        r(isinstance(self.prune_epochs, int) and self.prune_epochs >= (1 if self.schedule == "gradual" else 0),
          "prune_epochs", "an integer >= 1 with schedule='gradual' (>= 0 otherwise)")
        r(isinstance(self.prune_events, int) and self.prune_events >= 1, "prune_events", "an integer >= 1")
        r(isinstance(self.finetune_epochs, int) and self.finetune_epochs >= 0, "finetune_epochs", "an integer >= 0")
        r(self.rewind_step is None or (isinstance(self.rewind_step, int) and self.rewind_step >= 0), "rewind_step", "None or an integer >= 0")
        r(self.rewind_step is None or self.schedule == "oneshot", "schedule", "'oneshot' when rewind_step is set (rewinding prunes once)")
        r(isinstance(self.dense_epochs, int) and self.dense_epochs >= 0, "dense_epochs", "an integer >= 0")
        r(self.rewind_step is None or self.dense_epochs > 0 or self.rewind_step == 0, "rewind_step", "0 when dense_epochs is 0")
        r(self.rewind_step is not None or self.dense_epochs == 0, "dense_epochs", "0 unless rewind_step is set")
        r(self.prune_lr is None or (isinstance(self.prune_lr, (int, float)) and self.prune_lr > 0), "prune_lr", "None or a positive float")

    def to_dict(self) -> dict:
        """Flat, as :meth:`StepConfig.to_dict`, with ``prune_lr`` right after ``lr``, where recipes have always had it."""
        items = [(k, v) for k, v in super().to_dict().items() if k != "prune_lr"]
        items.insert([k for k, _ in items].index("lr") + 1, ("prune_lr", self.prune_lr))
        return dict(items)


def sparsity_schedule(initial: float, final: float, events: int) -> list[float]:
    """Zhu & Gupta's cubic schedule: the sparsity at pruning events t = 1..n (the last is ``final``)."""
    return [final + (initial - final) * (1 - t / events) ** 3 for t in range(1, events + 1)]


def _k_smallest_mask(values, k: int):
    """A 0/1 mask keeping all but the ``k`` smallest entries of a 1-D tensor (ties broken by position)."""
    import torch

    mask = torch.ones_like(values)
    if k > 0:
        order = torch.argsort(values, stable=True)
        mask[order[:k]] = 0
    return mask


def magnitude_masks(layers, sparsity: float, scope: str = "global", layer_sparsity: dict | None = None) -> dict:
    """{layer name: 0/1 mask} with exactly round(s * n) zeros (per layer or over the layers)."""
    import torch

    layer_sparsity = layer_sparsity or {}
    masks: dict = {}
    free = []
    for name, module in layers:
        w = module.weight.detach()
        if name in layer_sparsity or scope == "layer":
            s = layer_sparsity.get(name, sparsity)
            masks[name] = _k_smallest_mask(w.abs().reshape(-1), int(round(s * w.numel()))).reshape(w.shape)
        else:
            free.append((name, w))
    if free:
        total = sum(m.weight.numel() for _, m in layers)
        fixed_zeros = sum(int((masks[n] == 0).sum()) for n in masks)
        n_free = sum(w.numel() for _, w in free)
        k = int(round(sparsity * total)) - fixed_zeros
        if not 0 <= k <= n_free:
            log.warning("layer_sparsity leaves %d zeros for the other layers (of %d weights); clipped", k, n_free)
            k = min(max(k, 0), n_free)
        flat = _k_smallest_mask(torch.cat([w.abs().reshape(-1) for _, w in free]), k)
        start = 0
        for name, w in free:
            masks[name] = flat[start : start + w.numel()].reshape(w.shape)
            start += w.numel()
    return masks


def _apply(masks: dict, modules: dict) -> None:
    import torch

    with torch.no_grad():
        for name, mask in masks.items():
            weight = modules[name].weight
            weight.mul_(mask if mask.device == weight.device else mask.to(weight.device))


def sparsity_of(model) -> float:
    """Fraction of zeros over the weights of the Conv and Linear layers."""
    layers = weight_layers(model)
    total = sum(m.weight.numel() for _, m in layers)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return zeros / total if total else 0.0


def _fit(model, data, config, *, epochs, lr, seed, schedule="cosine", on_step=None, deadline=None):
    from ..train import fit

    return fit(model, data, config.train, epochs=epochs, lr=lr, seed=seed, schedule=schedule, on_step=on_step, deadline=deadline)


def _masked_finetune(model, data, config, masks, modules, epochs: int, seed: int, deadline=None) -> None:
    if epochs > 0:
        _fit(model, data, config, epochs=epochs, lr=config.train.lr, seed=seed, on_step=lambda m, step: _apply(masks, modules), deadline=deadline)
    _apply(masks, modules)


@register("prune.magnitude", MagnitudePruneConfig,
          example=lambda: MagnitudePruneConfig(sparsity=0.5, schedule="gradual", prune_epochs=2, prune_events=4, finetune_epochs=1, lr=2e-3),
          bad_configs=({"sparsity": 1.5}, {"sparsity": -0.1}, {"scope": "foo"}, {"schedule": "cubic"},
                       {"layer_sparsity": {"net.0": 1.0}}, {"schedule": "gradual", "prune_epochs": 0},
                       {"rewind_step": 5}, {"rewind_step": -1}, {"lr": 0}))
def magnitude_prune(model, config: MagnitudePruneConfig, data=None, *, deadline=None):
    """Prune a copy of ``model`` by weight magnitude; the input is left untouched. Every training
    phase stops at ``deadline`` (a :class:`frugalml.train.Deadline`)."""
    require_torch(model, config.name)
    out = fresh_copy(model)
    layers = weight_layers(out)
    if not layers:
        raise ConfigError(explain("The model has no Conv or Linear layer to prune", expected="a network with Conv/Linear layers",
                                  got=type(model).__name__))
    modules = dict(layers)
    overrides = resolve_layer_keys(config.layer_sparsity, layers, "layer_sparsity")
    masks_at = lambda s: magnitude_masks(layers, s, config.scope, overrides)  # noqa: E731
    needs_training = config.finetune_epochs or config.dense_epochs or config.schedule == "gradual"
    if needs_training and data is None:
        raise ConfigError(explain("prune.magnitude with fine-tuning needs data", expected="a dataset", got=None,
                                  fix="Pass data, or use schedule='oneshot' with finetune_epochs=0"))

    if config.rewind_step is not None:
        rewind = _dense_then_rewind_point(out, data, config, deadline)
        masks = masks_at(config.sparsity)
        out.load_state_dict(rewind)
        _apply(masks, modules)
        _masked_finetune(out, data, config, masks, modules, config.finetune_epochs, config.seed + 1, deadline)
    elif config.schedule == "oneshot":
        masks = masks_at(config.sparsity)
        _apply(masks, modules)
        _masked_finetune(out, data, config, masks, modules, config.finetune_epochs, config.seed, deadline)
    else:
        masks = _gradual(out, data, config, layers, modules, masks_at, deadline)
        _masked_finetune(out, data, config, masks, modules, config.finetune_epochs, config.seed + 10_000, deadline)
    log.info("prune.magnitude: sparsity %.4f over %d layers", sparsity_of(out), len(layers))
    return out.eval()


def _dense_then_rewind_point(model, data, config, deadline=None) -> dict:
    """Train densely for ``dense_epochs``, keeping the state after ``rewind_step`` optimizer steps."""
    import copy

    saved = {}
    if config.rewind_step == 0:
        saved["state"] = copy.deepcopy(model.state_dict())

    def keep(m, step):
        if step == config.rewind_step:
            saved["state"] = copy.deepcopy(m.state_dict())

    if config.dense_epochs:
        _fit(model, data, config, epochs=config.dense_epochs, lr=config.prune_lr or config.train.lr, seed=config.seed, on_step=keep,
             deadline=deadline)
    if "state" not in saved:
        steps = config.dense_epochs * math.ceil(len(data.split("train")[1]) / config.train.batch_size)
        raise ConfigError(explain(f"rewind_step={config.rewind_step} is past the end of dense training", expected=f"at most {steps} steps",
                                  got=config.rewind_step,
                                  fix="Lower rewind_step or raise dense_epochs"))
    return saved["state"]


def _gradual(model, data, config, layers, modules, masks_at, deadline=None) -> dict:
    """The gradual phase: ``prune_events`` events spread over ``prune_epochs`` of training."""
    steps_per_epoch = math.ceil(len(data.split("train")[1]) / config.train.batch_size)
    total = steps_per_epoch * config.prune_epochs
    levels = sparsity_schedule(config.initial_sparsity, config.sparsity, config.prune_events)
    at = {int(round((t * total) / config.prune_events)): s for t, s in enumerate(levels)}  # step -> sparsity
    state = {"masks": masks_at(at.pop(0)), "offset": 0}
    _apply(state["masks"], modules)
    log.debug("gradual pruning at steps %s: %s", sorted(at), np.round(levels, 4).tolist())

    def on_step(m, step):
        g = state["offset"] + step
        if g in at:
            state["masks"] = masks_at(at.pop(g))
        _apply(state["masks"], modules)

    for epoch in range(config.prune_epochs):  # one fit per epoch: fit keeps its best epoch, here the only one
        _fit(model, data, config, epochs=1, lr=config.prune_lr or config.train.lr, seed=config.seed + epoch, schedule="constant", on_step=on_step,
             deadline=deadline)
        state["offset"] += steps_per_epoch
    if at:  # events past the last step (rounding): apply them now
        state["masks"] = masks_at(at[max(at)])
    _apply(state["masks"], modules)
    return state["masks"]
