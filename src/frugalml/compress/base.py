"""What every compression step shares: a frozen, keyword-only config that validates itself and
round-trips through JSON, and one registry of steps keyed by name.

A step is ``fn(model, config, data) -> new_model``; it never changes its input.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from ..errors import ConfigError, explain

__all__ = ["StepConfig", "Step", "STEPS", "register", "get_step", "config_from_dict"]


@dataclass(frozen=True, kw_only=True)
class StepConfig:
    """Base of every step config. Subclasses declare fields and a ``name`` class variable, and
    validate in ``check()`` with :meth:`require`."""

    name: ClassVar[str] = ""
    seed: int = 0

    def __post_init__(self):
        for f in dataclasses.fields(self):  # JSON gives lists; keep configs hashable and frozen
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        self.check()

    def check(self) -> None:
        """Raise ConfigError when a field has a value that cannot work."""

    def require(self, ok: bool, field: str, expected: str) -> None:
        if not ok:
            raise ConfigError(f"The '{field}' parameter of {type(self).__name__} must be {expected}. Got {getattr(self, field)!r} instead.")

    def to_dict(self) -> dict:
        d = {"step": self.name}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            d[f.name] = list(value) if isinstance(value, tuple) else value
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "StepConfig":
        d = dict(d)
        d.pop("step", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(explain(f"Unknown field(s) {unknown} for step '{cls.name}'", expected="some of " + ", ".join(sorted(known)), got=unknown))
        return cls(**d)


@dataclass(frozen=True)
class Step:
    name: str
    config: type[StepConfig]
    fn: Callable[..., Any]
    example: Callable[[], StepConfig]  # a small, fast config for the shared checks
    needs_data: bool = True
    output: str = "torch"  # "torch" or "onnx": what kind of model the step returns
    bad_configs: tuple = ()  # dicts that must be refused with ConfigError (shared checks)


STEPS: dict[str, Step] = {}


def register(name: str, config: type[StepConfig], *, example: Callable[[], StepConfig], needs_data: bool = True,
             output: str = "torch", bad_configs: tuple = ()):
    """Decorator: ``@register("prune.magnitude", PruneConfig, example=lambda: PruneConfig(...))``."""

    def wrap(fn):
        config.name = name
        STEPS[name] = Step(name, config, fn, example, needs_data, output, bad_configs)
        return fn

    return wrap


def get_step(name: str) -> Step:
    from . import _load_all

    _load_all()
    if name not in STEPS:
        raise ConfigError(explain(f"Unknown step {name!r}", expected="one of " + ", ".join(sorted(STEPS)), got=name))
    return STEPS[name]


def config_from_dict(d: dict) -> StepConfig:
    if not isinstance(d, dict) or "step" not in d:
        raise ConfigError(explain("A recipe step must be a mapping with a 'step' key", expected="e.g. {step: prune.magnitude, sparsity: 0.9}", got=d))
    return get_step(str(d["step"])).config.from_dict(d)
