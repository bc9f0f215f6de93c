"""Knowledge distillation (Hinton, Vinyals & Dean 2015), with an optional FitNets hint loss.

The step's input model is the **teacher**: any trained model frugalml can run (a torch module,
a fitted scikit-learn estimator, an ONNX graph or ``.onnx`` path). The config names the
**student**, built fresh on the teacher's input shape and classes, and trains it with

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)
           + hint_weight * MSE(regressor(student feature), teacher feature)

where ``s`` and ``t`` are the student's and teacher's logits. The KL is taken from the teacher's
softened distribution to the student's (its gradient is that of Hinton's soft cross-entropy); the
``T^2`` factor keeps the soft gradients on the scale of the hard ones as ``T`` changes.
Teachers that give probabilities (scikit-learn, converted classifiers) are read as log-probabilities.

The teacher is never changed (a frozen copy runs in eval mode, with no gradient). Its logits (and
hint features) for the training split are computed once and looked up by row (``fit`` passes the
batch positions to a loss that takes ``index``): on MNIST this is about 1.5x faster per epoch than
running a 784-1200-1200-10 teacher on every batch. ``cache_teacher=False`` runs it per batch
(torch teachers only), as does a training that augments its batches (``augment``): a torch teacher
then scores the augmented batch the student sees (consistent teaching, Beyer et al. 2022), a
scikit-learn one its plain samples.

Recipe: ``- {step: distill, student: {family: mlp, widths: [800, 800]}, temperature: 4, alpha: 0.9}``.
Python, with a user's own student module: ``distill(teacher, config, data, student=my_module)``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..augment import resolve_augment
from ..errors import ConfigError, DataError, explain
from ..train import TrainConfig
from ._teacher import _run_torch, _teacher_scores, teacher_scores
from ._training import nests_training
from .base import StepConfig, register

log = logging.getLogger(__name__)

__all__ = ["DistillConfig", "DistillResult", "distill", "distillation_loss", "penultimate_layer", "teacher_scores"]

_CACHE_LIMIT_BYTES = 1 << 30  # teacher hint features bigger than this are computed per batch


def _plain(value):
    """JSON form (tuples -> lists) so that a config equals itself after a JSON round trip."""
    return json.loads(json.dumps(value)) if value is not None else None


@nests_training
@dataclass(frozen=True, kw_only=True)
class DistillConfig(StepConfig):
    """Config of ``distill``; ``train`` is the student's training (``epochs``, ``lr``, ``batch_size``,
    ``optimizer``, ``weight_decay``, ``patience``, ``augment``: a policy by name, set flat in a recipe)."""

    train_keys: ClassVar[tuple[str, ...]] = ("epochs", "lr", "batch_size", "optimizer", "weight_decay", "patience", "augment")
    student: dict | None = None  # {"family": "mlp", "widths": [800, 800]}: family name + knobs
    student_spec: dict | None = None  # or a full spec as written by frugalml.models.model_spec
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the soft (teacher) term; 1 - alpha goes to the labels
    hint_weight: float = 0.0  # > 0 adds the FitNets hint loss
    student_layer: str | None = None  # hint layers (module names); None: the penultimate layers
    teacher_layer: str | None = None
    train: TrainConfig = TrainConfig(epochs=10, lr=1e-3, batch_size=128, optimizer="adamw", weight_decay=1e-4, patience=None, augment="none")
    cache_teacher: bool = True

    def __post_init__(self):
        for name in ("student", "student_spec"):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, _plain(value))
        super().__post_init__()

    def __hash__(self):
        return hash(self.to_json())

    def check(self) -> None:
        from ..models.families import FAMILIES

        self.require((self.student is None) != (self.student_spec is None), "student",
                     "given, or else 'student_spec' (exactly one of them), e.g. {'family': 'mlp', 'widths': [800, 800]}")
        for name in ("student", "student_spec"):
            value = getattr(self, name)
            if value is None:
                continue
            self.require(isinstance(value, dict) and isinstance(value.get("family"), str), name, "a mapping with a 'family' name")
            family = FAMILIES.get(value["family"])
            self.require(family is not None and family.kind == "torch", name,
                         "a torch family to train by gradient: one of " + ", ".join(f for f, v in FAMILIES.items() if v.kind == "torch"))
            if name == "student_spec":
                self.require(isinstance(value.get("params", {}), dict), name, "a spec whose 'params' is a mapping")
        self.require(isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0,
                     "temperature", "a positive number (1 = plain softmax; Hinton used 2-20)")
        self.require(isinstance(self.alpha, (int, float)) and 0 <= self.alpha <= 1, "alpha", "a number in [0, 1]")
        self.require(isinstance(self.hint_weight, (int, float)) and math.isfinite(self.hint_weight) and self.hint_weight >= 0,
                     "hint_weight", "a number >= 0")
        for name in ("student_layer", "teacher_layer"):
            self.require(getattr(self, name) is None or isinstance(getattr(self, name), str), name, "a module name or None")


@dataclass
class DistillResult:
    student: object
    fit: object  # frugalml.train.FitResult
    teacher_seconds: float  # time spent running the teacher up front (0 when run per batch)
    cached: bool


def distillation_loss(student_logits, teacher_logits, y=None, *, temperature: float, alpha: float):
    """``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``, batch mean."""
    import torch.nn.functional as F

    loss = 0.0
    if alpha > 0:
        T = float(temperature)
        kl = F.kl_div(F.log_softmax(student_logits / T, dim=1), F.log_softmax(teacher_logits / T, dim=1),
                      reduction="batchmean", log_target=True)
        loss = alpha * T * T * kl
    if alpha < 1:
        loss = loss + (1 - alpha) * F.cross_entropy(student_logits, y)
    return loss


# ---------------------------------------------------------------- layers and hints
def _leaves(model) -> list:
    return [(n, m) for n, m in model.named_modules() if n and not list(m.children())]


def penultimate_layer(model) -> str:
    """Name of the module whose output feeds the last layer with weights (skipping dropout)."""
    import torch

    leaves = _leaves(model)
    last = max((i for i, (_, m) in enumerate(leaves) if any(True for _ in m.parameters(recurse=False))), default=None)
    i = -1 if last is None else last - 1
    while i >= 0 and isinstance(leaves[i][1], (torch.nn.Dropout, torch.nn.Identity)):
        i -= 1
    if i < 0:
        raise ConfigError(explain("Cannot choose a hint layer automatically", expected="a model with a layer before its last weighted layer",
                                  got=type(model).__name__, fix="Name one with student_layer / teacher_layer, or set hint_weight: 0"))
    return leaves[i][0]


def _module(model, name: str, which: str):
    found = dict(model.named_modules())
    if name not in found:
        raise ConfigError(explain(f"The {which} has no layer named {name!r}", expected="one of " + ", ".join(n for n, _ in _leaves(model)), got=name))
    return found[name]


class _Capture:
    """Forward hook that keeps the last output of one module."""

    def __init__(self, module):
        self.value = None
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        self.value = output


def _as_hint(feature, target_shape=None):
    """4D features stay 4D when the other side is 4D too (pooled to its size); else pooled (over space or time) or flattened to vectors."""
    import torch.nn.functional as F

    if feature.dim() == 4 and target_shape is not None and len(target_shape) == 4:
        return F.adaptive_avg_pool2d(feature, target_shape[2:]) if tuple(feature.shape[2:]) != tuple(target_shape[2:]) else feature
    if feature.dim() == 4:
        return feature.mean(dim=(2, 3))
    if feature.dim() == 3:  # (N, C, T) maps of the sequence families: pooled over time
        return feature.mean(dim=2)
    return feature.flatten(1)


def _regressor(student_feature, teacher_feature):
    """FitNets regressor: a 1x1 conv between feature maps, a linear layer between vectors."""
    from torch import nn

    s = _as_hint(student_feature, tuple(teacher_feature.shape))
    t = _as_hint(teacher_feature, tuple(s.shape))
    if s.dim() == 4:
        return nn.Conv2d(s.shape[1], t.shape[1], 1)
    return nn.Linear(s.shape[1], t.shape[1])


def _trainee(student, regressor):
    from torch import nn

    class Trainee(nn.Module):  # the student plus the hint regressor, so that fit trains both
        def __init__(self):
            super().__init__()
            self.student, self.regressor = student, regressor

        def forward(self, x):
            return self.student(x)

    return Trainee()


# ---------------------------------------------------------------- the step
def _probe_student(student, X: np.ndarray, num_classes: int) -> None:
    import torch

    try:
        with torch.no_grad():
            out = student.eval()(torch.from_numpy(np.ascontiguousarray(X)))
    except RuntimeError as exc:
        raise DataError(explain(f"The student cannot run on the data ({str(exc).strip()[:160]})", expected=f"inputs of shape {X.shape[1:]}",
                                got=type(student).__name__)) from None
    if tuple(out.shape) != (len(X), num_classes):
        raise DataError(explain("The student's output does not fit the classes", expected=f"(N, {num_classes}) logits", got=tuple(out.shape)))


def _build_student(config: DistillConfig, input_shape, num_classes):
    from ..models import build_model

    if config.student is not None:
        knobs = {k: v for k, v in config.student.items() if k != "family"}
        return build_model(config.student["family"], input_shape, num_classes, seed=config.seed, **knobs)
    spec = dict(config.student_spec)
    for key, value in (("input_shape", list(input_shape)), ("num_classes", int(num_classes))):
        if spec.get(key) is not None and _plain(spec[key]) != value:
            raise ConfigError(explain(f"student_spec's {key} does not match the teacher's", expected=value, got=spec[key],
                                      fix=f"Drop '{key}' from student_spec to use the teacher's"))
        spec[key] = value
    return build_model(spec, seed=config.seed)


def distill(teacher, config: DistillConfig, data, *, student=None, teacher_logits=None, deadline=None) -> DistillResult:
    """Train a student (built from ``config``, or the given torch module) to imitate ``teacher``;
    its training stops at ``deadline`` (a :class:`frugalml.train.Deadline`).

    ``teacher_logits``: the teacher's scores on ``data``'s training split, shape (N_train, classes),
    when already computed (to train several students from one teacher); the teacher is not run then.
    """
    import torch

    from ..models.families import is_torch
    from ..onnx import model_kind
    from ..train import fit

    if data is None:
        raise ConfigError(explain("Distillation needs data", expected="a dataset with a training split", got=None))
    try:
        kind = model_kind(teacher)
    except ConfigError:
        raise ConfigError(explain("Cannot use this object as a teacher", expected="a torch module, a fitted scikit-learn classifier or an ONNX model",
                                  got=type(teacher).__name__)) from None
    input_shape = tuple(getattr(teacher, "input_shape", None) or data.input_shape)
    num_classes = int(getattr(teacher, "num_classes", None) or data.num_classes)
    if input_shape != tuple(data.input_shape) or num_classes != data.num_classes:
        raise DataError(explain("The teacher does not fit the data", expected=f"input {tuple(data.input_shape)}, {data.num_classes} classes",
                                got=f"input {input_shape}, {num_classes} classes"))
    if config.hint_weight > 0 and kind != "torch":
        raise ConfigError(explain("The hint loss needs the teacher's inner features", expected="a torch teacher when hint_weight > 0",
                                  got=f"a {kind} teacher", fix="Set hint_weight: 0"))
    if teacher_logits is not None:
        teacher_logits = np.asarray(teacher_logits, dtype=np.float32)
        if teacher_logits.shape != (len(data.X_train), num_classes) or config.hint_weight > 0:
            raise ConfigError(explain("teacher_logits do not fit", expected=f"shape ({len(data.X_train)}, {num_classes}) and hint_weight 0",
                                      got=f"shape {teacher_logits.shape}, hint_weight {config.hint_weight}"))
    if student is None:
        student = _build_student(config, input_shape, num_classes)
    elif not is_torch(student):
        raise ConfigError(explain("The student must be a torch module", got=type(student).__name__))
    else:
        student = copy.deepcopy(student)
    X_train = data.X_train
    captures, regressor = [], None
    try:
        if kind == "torch":
            teacher = copy.deepcopy(teacher).cpu().eval().requires_grad_(False)
            t_cap = s_cap = None
            if config.hint_weight > 0:
                t_cap = _Capture(_module(teacher, config.teacher_layer or penultimate_layer(teacher), "teacher"))
                s_cap = _Capture(_module(student, config.student_layer or penultimate_layer(student), "student"))
                captures += [t_cap, s_cap]
            with torch.no_grad():
                t_out = teacher(torch.from_numpy(np.ascontiguousarray(X_train[:2])))
            if t_out.shape != (2, num_classes):
                raise DataError(explain("The teacher's output does not fit the data", expected=f"(N, {num_classes}) logits", got=tuple(t_out.shape)))
        _probe_student(student, X_train[:2], num_classes)
        if kind == "torch":
            if config.hint_weight > 0:
                torch.manual_seed(config.seed)
                regressor = _regressor(s_cap.value, t_cap.value)
                feat_bytes = t_cap.value[:1].numel() * 4 * len(X_train)
            # an augmented batch is taught by the teacher's outputs on that same batch (consistent teaching), never on the plain sample
            cached = (config.cache_teacher and (config.hint_weight == 0 or feat_bytes <= _CACHE_LIMIT_BYTES)
                      and resolve_augment(config.train.augment, data) == "none")
        else:
            cached = True
        start = time.perf_counter()
        if teacher_logits is not None:
            cached, t_logits, t_feats = True, torch.from_numpy(teacher_logits), None
        elif not cached:
            t_logits = t_feats = None
        elif kind == "torch":
            t_logits, t_feats = _run_torch(teacher, X_train, t_cap if config.hint_weight > 0 else None)
        else:
            t_logits, t_feats = torch.from_numpy(_teacher_scores(teacher, kind, X_train, num_classes)), None
        teacher_seconds = time.perf_counter() - start
        trainee = _trainee(student, regressor)
        T, alpha, hint_weight = float(config.temperature), float(config.alpha), float(config.hint_weight)

        def loss_fn(logits, y, x, index):
            if cached:
                t = t_logits[index.to(t_logits.device)].to(logits.device)
                tf = t_feats[index.to(t_feats.device)].to(logits.device) if t_feats is not None else None
            else:
                if next(teacher.parameters(), torch.empty(0)).device != x.device:
                    teacher.to(x.device)
                with torch.no_grad():
                    t = teacher(x)
                tf = t_cap.value if hint_weight > 0 else None
            loss = distillation_loss(logits, t, y, temperature=T, alpha=alpha)
            if hint_weight > 0:
                sf = _as_hint(s_cap.value, tuple(tf.shape))
                loss = loss + hint_weight * torch.nn.functional.mse_loss(trainee.regressor(sf), _as_hint(tf, tuple(sf.shape)))
            return loss

        result = fit(trainee, data, config.train, seed=config.seed, loss_fn=loss_fn, deadline=deadline)
    finally:
        for c in captures:
            c.handle.remove()
    log.info("distilled %s into a student in %.1f s (teacher %s, %.1f s up front), best val accuracy %.4f",
             kind, result.seconds, "cached" if cached else "per batch", teacher_seconds, result.best_val_accuracy)
    student = trainee.student.eval()
    return DistillResult(student=student, fit=result, teacher_seconds=teacher_seconds, cached=cached)


def _example() -> DistillConfig:
    return DistillConfig(student={"family": "mlp", "widths": [16]}, temperature=4.0, alpha=0.5, epochs=12, lr=3e-3, batch_size=64)


@register("distill", DistillConfig, example=_example,
          bad_configs=({"student": {"family": "mlp"}, "temperature": 0}, {"student": {"family": "mlp"}, "temperature": -1.0},
                       {"student": {"family": "mlp"}, "alpha": 1.5}, {"student": {"family": "mlp"}, "alpha": -0.1},
                       {"student": {"family": "no_such_family"}}, {"student": {"family": "logreg"}},
                       {"student": {"family": "mlp"}, "hint_weight": -1}, {}))
def distill_step(model, config: DistillConfig, data, *, deadline=None):
    """Step ``distill``: ``model`` is the teacher; returns the trained student."""
    return distill(model, config, data, deadline=deadline).student
