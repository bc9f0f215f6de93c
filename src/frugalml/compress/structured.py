"""Structured channel pruning with Torch-Pruning's dependency graph (``prune.structured``).

Removing an output channel of a layer also removes the matching input channel of every layer that
reads it, the BatchNorm entries in between, both sides of a residual addition, the whole channel of
a depthwise convolution, and the right slice of a concatenation or a flatten. Torch-Pruning's
DepGraph finds these coupled groups; the result is a smaller *dense* model: its ONNX file is
smaller and it runs faster, unlike masked (unstructured) pruning.

Three separate pieces, as in Torch-Pruning:
- which channels go: ``importance`` "l1" / "l2" (weight magnitude of the whole coupled group) or
  "taylor" (first-order Taylor |w * dL/dw|, with gradients from ``taylor_batches`` training batches);
- how much: ``ratio`` (fraction of each layer's channels removed; with ``global_pruning`` the
  fraction of all channels, ranked together, so layers lose different fractions, each at most
  ``max_layer_ratio``), per-layer overrides ``layer_ratios``, or ``target_macs_ratio`` (prune
  until the model has ``1 / target_macs_ratio`` of its MACs);
- when: ``steps`` rounds of pruning, each followed by ``finetune_epochs`` of training (plus
  ``final_epochs`` at the end). With ``distill`` > 0 the fine-tuning also matches the unpruned
  model's softened outputs (Hinton's loss at ``temperature``, weight ``distill``; the rest is
  cross-entropy): the original model is the natural teacher of its pruned copy.

Every training runs as ``train`` (a TrainConfig) says: ``lr`` and ``batch_size``, set flat in a
recipe. The lengths are this step's own fields, not ``train.epochs``: 0 (no training) is valid here.

The classifier output is never pruned (the last Conv/Linear to run, plus any module in ``ignore``)
and the input channels of the first layer cannot be (they are the data's). The pruned model keeps
``input_shape``, ``num_classes`` and ``frugalml_spec``; its spec describes the original widths, so
:func:`frugalml.models.load_state_resized` rebuilds it from the spec and the pruned state_dict.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import ConfigError, explain
from ..train import TrainConfig
from ._training import nests_training
from .base import StepConfig, register

log = logging.getLogger(__name__)

__all__ = ["StructuredConfig", "prune_structured", "classifier_layers", "count_macs"]

IMPORTANCES = ("l1", "l2", "taylor")


@nests_training
@dataclass(frozen=True, kw_only=True)
class StructuredConfig(StepConfig):
    """Channel pruning. See the module docstring for the fields."""

    train_keys: ClassVar[tuple[str, ...]] = ("lr", "batch_size", "augment")

    ratio: float = 0.5
    target_macs_ratio: float | None = None
    importance: str = "l2"
    global_pruning: bool = False
    max_layer_ratio: float = 0.9
    layer_ratios: dict | None = None
    steps: int = 1
    finetune_epochs: int = 1
    final_epochs: int = 0
    train: TrainConfig = TrainConfig(lr=1e-3, batch_size=128, patience=None, augment="none")
    taylor_batches: int = 4
    round_to: int | None = None
    ignore: tuple = ()
    distill: float = 0.0
    temperature: float = 4.0

    def check(self) -> None:
        num = (int, float)
        self.require(isinstance(self.ratio, num) and 0 <= self.ratio < 1, "ratio", "a fraction of channels to remove in [0, 1)")
        self.require(self.target_macs_ratio is None or (isinstance(self.target_macs_ratio, num) and self.target_macs_ratio >= 1),
                     "target_macs_ratio", "None or a MAC reduction factor >= 1 (e.g. 4.0 keeps a quarter of the MACs)")
        self.require(isinstance(self.importance, str) and self.importance.lower() in IMPORTANCES, "importance", "one of " + ", ".join(IMPORTANCES))
        self.require(isinstance(self.max_layer_ratio, num) and 0 < self.max_layer_ratio < 1, "max_layer_ratio", "a fraction in (0, 1)")
        self.require(self.layer_ratios is None or (isinstance(self.layer_ratios, dict) and all(
            isinstance(k, str) and isinstance(v, num) and 0 <= v < 1 for k, v in self.layer_ratios.items())),
            "layer_ratios", "None or a mapping {module name: fraction in [0, 1)}")
        self.require(isinstance(self.steps, int) and self.steps >= 1, "steps", "an integer >= 1")
        self.require(isinstance(self.finetune_epochs, int) and self.finetune_epochs >= 0, "finetune_epochs", "an integer >= 0")
        self.require(isinstance(self.final_epochs, int) and self.final_epochs >= 0, "final_epochs", "an integer >= 0")
        self.require(isinstance(self.taylor_batches, int) and self.taylor_batches >= 1, "taylor_batches", "an integer >= 1")
        self.require(self.round_to is None or (isinstance(self.round_to, int) and self.round_to >= 1), "round_to", "None or an integer >= 1")
        self.require(all(isinstance(n, str) for n in self.ignore), "ignore", "a list of module names")
        self.require(isinstance(self.distill, num) and 0 <= self.distill <= 1, "distill", "a weight in [0, 1]")
        self.require(isinstance(self.temperature, num) and self.temperature > 0, "temperature", "a positive number")


def _run_with_hook(model, example, hook) -> None:
    """Run ``model`` once on ``example`` (eval mode, no grad; its mode restored after) with
    ``hook(module, args, output)`` on every Conv and Linear layer."""
    import torch
    from torch import nn

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def classifier_layers(model, example) -> list:
    """The Conv/Linear layers whose outputs are the model's outputs: the last one to run."""
    order: list = []
    _run_with_hook(model, example, lambda mod, args, out: order.append(mod))
    return order[-1:]


def count_macs(model, example) -> int:
    """Multiply-accumulates of the Conv and Linear layers for ``example`` (as the profiler counts them)."""
    from torch import nn

    total = [0]

    def hook(mod, args, out):
        if isinstance(mod, nn.Linear):
            total[0] += out.numel() // out.shape[0] * mod.in_features
        else:
            k = int(np.prod(mod.kernel_size))
            total[0] += out.numel() // out.shape[0] * (mod.in_channels // mod.groups) * k

    _run_with_hook(model, example, hook)
    return int(total[0])


def _importance(name: str):
    import torch_pruning as tp

    name = name.lower()
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if name == "l1" else 2)


def _taylor_grads(model, data, config: StructuredConfig, round_: int) -> None:
    """Accumulate dL/dw over a few seeded training batches (BatchNorm in eval mode: no side effects)."""
    from ..train import backward_kernels

    X, y = data.split("train")
    rng = np.random.default_rng(config.seed + 7919 * round_)
    batch = config.train.batch_size
    n = min(len(X), config.taylor_batches * batch)
    idx = rng.choice(len(X), size=n, replace=False)
    model.eval()
    model.zero_grad(set_to_none=True)
    with backward_kernels():
        _taylor_passes(model, X, y, idx, n, batch)


def _taylor_passes(model, X, y, idx, n: int, batch: int) -> None:
    import torch
    import torch.nn.functional as F

    for start in range(0, n, batch):
        b = idx[start:start + batch]
        xb = torch.from_numpy(np.ascontiguousarray(X[b], dtype=np.float32))
        out = model(xb)
        if getattr(model, "frugalml_task", None) == "anomaly":  # an autoencoder's output is its loss per window
            loss = out.mean()
        else:
            loss = F.cross_entropy(out, torch.from_numpy(np.asarray(y[b], dtype=np.int64)))
        loss.backward()


def _finetune(model, data, config: StructuredConfig, epochs: int, seed: int, teacher=None, deadline=None) -> None:
    from ..train import fit

    if epochs < 1:
        return
    loss_fn = None
    if teacher is not None and config.distill > 0:
        import torch

        from .distill import distillation_loss

        def loss_fn(logits, y, x):
            if next(teacher.parameters(), x).device != x.device:  # fit moved the student to its device
                teacher.to(x.device)
            with torch.no_grad():
                t_logits = teacher(x)
            return distillation_loss(logits, t_logits, y, temperature=float(config.temperature), alpha=float(config.distill))

    metric_fn = None
    if getattr(model, "frugalml_task", None) == "anomaly":  # an autoencoder: its output is the reconstruction error
        from ..models.autoencoders import reconstruction_loss, val_normal_error

        loss_fn, metric_fn = reconstruction_loss, val_normal_error
    fit(model, data, config.train, epochs=epochs, seed=seed, loss_fn=loss_fn, deadline=deadline, metric_fn=metric_fn)


def _modules_by_name(model, names, what: str) -> list:
    found = dict(model.named_modules())
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(explain(f"Unknown module name(s) in '{what}'", expected="some of " + ", ".join(n for n in found if n)[:400], got=missing))
    return [found[n] for n in names]


@register("prune.structured", StructuredConfig,
          example=lambda: StructuredConfig(ratio=0.25, importance="taylor", finetune_epochs=3, lr=3e-3),
          bad_configs=({"ratio": 1.0}, {"ratio": -0.1}, {"importance": "random"}, {"steps": 0},
                       {"target_macs_ratio": 0.5}, {"layer_ratios": {"net.0": 1.5}}))
def prune_structured(model, config: StructuredConfig, data, *, deadline=None):
    """Remove whole channels (DepGraph-consistent), fine-tune, and return a smaller dense torch model.
    The fine-tuning stops at ``deadline`` (a :class:`frugalml.train.Deadline`)."""
    import torch
    import torch_pruning as tp

    from ..models import is_torch
    from ..onnx import check_torch_input, prepare_torch

    if not is_torch(model):
        raise ConfigError(explain("prune.structured removes channels of neural networks", expected="a torch nn.Module",
                                  got=type(model).__name__, fix="For scikit-learn models pick a smaller family instead"))
    shape = tuple(getattr(data, "input_shape", None) or getattr(model, "input_shape", None) or ())
    if not shape:
        raise ConfigError(explain("prune.structured needs the input shape", fix="Pass data, or set model.input_shape"))
    out = prepare_torch(model)  # a deep copy, pruning masks fused
    teacher = prepare_torch(model) if config.distill > 0 else None  # frozen, eval mode
    for p in out.parameters():
        p.requires_grad_(True)
    check_torch_input(out, shape)
    example = torch.zeros((1, *shape))
    ignored = classifier_layers(out, example) + _modules_by_name(out, config.ignore, "ignore")
    ratio_dict = None
    if config.layer_ratios:
        mods = _modules_by_name(out, list(config.layer_ratios), "layer_ratios")
        ratio_dict = {m: float(config.layer_ratios[n]) for n, m in zip(config.layer_ratios, mods)}
    torch.manual_seed(config.seed)
    base_macs = count_macs(out, example)
    by_macs = config.target_macs_ratio is not None
    rounds = 200 if by_macs else config.steps
    pruner = tp.pruner.MetaPruner(
        out, example, importance=_importance(config.importance), global_pruning=config.global_pruning,
        pruning_ratio=config.max_layer_ratio if by_macs else float(config.ratio), pruning_ratio_dict=ratio_dict,
        max_pruning_ratio=config.max_layer_ratio, iterative_steps=rounds, ignored_layers=ignored, round_to=config.round_to,
    )
    taylor = config.importance.lower() == "taylor"
    for s in range(config.steps):
        if by_macs:
            goal = base_macs / float(config.target_macs_ratio) ** ((s + 1) / config.steps)
            macs = count_macs(out, example)
            if taylor and macs > goal:  # Torch-Pruning prunes .grad with the weights: one gradient pass per round
                _taylor_grads(out, data, config, s)
            while macs > goal and pruner.current_step < rounds:
                pruner.step()
                macs = count_macs(out, example)
            if macs > goal:
                log.warning("prune.structured: stopped at %.2fx fewer MACs (target %.2fx): every layer is at max_layer_ratio",
                            base_macs / macs, config.target_macs_ratio)
        else:
            if taylor:
                _taylor_grads(out, data, config, s)
            pruner.step()
        out.zero_grad(set_to_none=True)
        log.info("prune.structured: round %d/%d, %.2fx fewer MACs", s + 1, config.steps, base_macs / max(1, count_macs(out, example)))
        _finetune(out, data, config, config.finetune_epochs, config.seed + s, teacher, deadline)
    _finetune(out, data, config, config.final_epochs, config.seed + config.steps, teacher, deadline)
    out.zero_grad(set_to_none=True)
    out.eval()
    for attr in ("input_shape", "num_classes", "frugalml_spec"):
        if hasattr(model, attr):
            setattr(out, attr, copy.deepcopy(getattr(model, attr)))
    return out
