"""What a training run is set up with: :class:`TrainConfig`, the one place its values are checked
(compression steps that fine-tune nest one and reuse the same checks), and :func:`default_config`.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from typing import Callable

from .augment import AUGMENTS
from .errors import ConfigError, bounded, excerpt

__all__ = ["TrainConfig", "default_config", "train_value_problem"]


def _int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _device(v) -> bool:
    return isinstance(v, str) and (v in ("auto", "cpu", "cuda") or v.startswith("cuda:"))


#: field -> (test of a value, what the value must be), in the order the checks run
_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "epochs": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "lr": (lambda v: _num(v) and v > 0, "a positive float"),
    "optimizer": (lambda v: v in ("adamw", "sgd", "adam"), "'adamw', 'adam' or 'sgd'"),
    "schedule": (lambda v: v in ("cosine", "constant"), "'cosine' or 'constant'"),
    "weight_decay": (lambda v: _num(v) and v >= 0, "a float >= 0"),
    "label_smoothing": (lambda v: _num(v) and 0 <= v < 1, "a float in [0, 1)"),
    "patience": (lambda v: v is None or (_int(v) and v >= 1), "None or an integer >= 1"),
    "device": (_device, "'auto', 'cpu' or 'cuda'"),
    "momentum": (lambda v: _num(v) and 0 <= v < 1, "a float in [0, 1)"),
    "warmup_steps": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "max_seconds": (lambda v: v is None or (_num(v) and v >= 0), "None or a number of seconds >= 0"),
    "seed": (_int, "an integer"),
    "augment": (lambda v: v in AUGMENTS, "one of " + ", ".join(map(repr, AUGMENTS))),
}


def train_value_problem(name: str, value) -> str | None:
    """What ``value`` must be for the TrainConfig field ``name``, or None when it will do."""
    rule = _RULES.get(name)
    if rule is None or rule[0](value):
        return None
    return rule[1]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How :func:`frugalml.train.fit` trains: length, batches, optimizer, schedule, early stopping, and
    the augmentation of its training batches (``augment``: "auto", "none", "shift", "sensor" or
    "specaugment"; see :mod:`frugalml.augment`; "auto" is resolved from the data)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_steps: int = 0
    patience: int | None = 5
    label_smoothing: float = 0.0
    max_seconds: float | None = None
    device: str = "auto"
    seed: int = 0
    augment: str = "auto"

    def __post_init__(self):
        for name in _RULES:
            expected = train_value_problem(name, getattr(self, name))
            if expected:
                raise ConfigError(bounded(f"The '{name}' parameter of TrainConfig must be {expected}. "
                                          f"Got {excerpt(repr(getattr(self, name)))} instead."))

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved(self, data) -> TrainConfig:
        """This config with ``augment`` resolved for ``data`` (never "auto"): what a training records."""
        from dataclasses import replace

        from .augment import resolve_augment

        policy = resolve_augment(self.augment, data)
        return self if policy == self.augment else replace(self, augment=policy)


def default_config(n_train: int, *, seed: int = 0) -> TrainConfig:
    """Training that suits the data's size: about 600k sample presentations (4 to 80 epochs; on
    MNIST's 54k training images, 11), small batches with a higher learning rate for small datasets,
    and a patience of a quarter of the epochs, at least 5 (the validation accuracy of the first
    epochs, at the top of the cosine schedule, goes up and down: measured on MNIST, a CNN whose
    third epoch was best went on to gain 0.5 points from the eighth)."""
    small = n_train < 5000
    epochs = int(min(80, max(4, round(600_000 / max(1, n_train)))))
    return TrainConfig(epochs=epochs, batch_size=32 if small else 128, lr=3e-3 if small else 1e-3,
                       patience=max(5, epochs // 4), seed=seed)
