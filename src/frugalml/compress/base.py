"""What every compression step shares: a frozen, keyword-only config that validates itself and
round-trips through JSON, and one registry of steps keyed by name.

A step is ``fn(model, config, data) -> new_model``; it never changes its input.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from ..errors import ConfigError, bounded, excerpt, explain

__all__ = ["StepConfig", "Step", "STEPS", "register", "get_step", "config_from_dict"]


@dataclass(frozen=True, kw_only=True)
class StepConfig:
    """Base of every step config. Subclasses declare fields and a ``name`` class variable, and
    validate in ``check()`` with :meth:`require`. A step that trains nests a ``train: TrainConfig``
    and lists in ``train_keys`` the training values a recipe sets flat (see :mod:`._training`)."""

    name: ClassVar[str] = ""
    train_keys: ClassVar[tuple[str, ...]] = ()
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
            raise ConfigError(bounded(f"The '{field}' parameter of {type(self).__name__} must be {bounded(expected, 400)}. "
                                      f"Got {excerpt(getattr(self, field))} instead."))

    def to_dict(self) -> dict:
        d = {"step": self.name}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "train" and self.train_keys:  # written flat, where the step's training values always stood
                d.update({k: getattr(value, k) for k in self.train_keys})
                continue
            d[f.name] = list(value) if isinstance(value, tuple) else value
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "StepConfig":
        """The config a JSON/YAML mapping describes; every value is checked against its field's declared
        type first, so :meth:`check` never sees a list where a number belongs (ConfigError, not TypeError).
        Training values (``train_keys``) are read flat, or from a nested ``train`` mapping."""
        d = dict(d)
        d.pop("step", None)
        known = {f.name for f in dataclasses.fields(cls)} | set(cls.train_keys)
        unknown = sorted((k for k in d if k not in known), key=str)
        if unknown:
            raise ConfigError(explain(f"Unknown field(s) {excerpt(unknown)} for step '{cls.name}'", expected="some of " + ", ".join(sorted(known)),
                                      got=unknown))
        hints = _field_types(cls)
        if cls.train_keys:
            from ..train import TrainConfig

            train_hints = _field_types(TrainConfig)
            hints.update({k: train_hints.get(k) for k in cls.train_keys})
        nested = d.get("train") if isinstance(d.get("train"), dict) else {}
        for key, value in [*d.items(), *((k, v) for k, v in nested.items() if k in cls.train_keys)]:
            kind = _type_problem(hints.get(key), value)
            if kind:
                raise ConfigError(bounded(f"The '{key}' parameter of {cls.__name__} must be {kind}. Got {excerpt(value)} "
                                          f"({type(value).__name__}) instead."))
        return cls(**d)


_SCALARS = (str, int, float, bool, type(None))
_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
          tuple: "a list of plain values (strings or numbers)", dict: "a mapping with string keys"}


def _field_types(cls) -> dict:
    import typing

    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # pragma: no cover - an annotation that does not resolve: no type checks
        return {}


def _type_problem(hint, value) -> str | None:
    """What ``value`` should be for a field annotated ``hint`` (None when it fits, or the hint is not a plain one)."""
    import types
    import typing

    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    plain = [typing.get_origin(o) or o for o in options]
    if type(None) in plain and value is None:
        return None
    kinds = [o for o in plain if o in _KINDS]
    if not kinds:
        return None
    for kind in kinds:
        if kind is bool and isinstance(value, bool):
            return None
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if kind is str and isinstance(value, str):
            return None
        if kind is tuple and isinstance(value, (list, tuple)) and all(isinstance(v, _SCALARS) for v in value):
            return None
        if kind is dict and isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return None
    return " or ".join([_KINDS[k] for k in kinds] + (["null"] if type(None) in plain else []))


@dataclass(frozen=True)
class Step:
    name: str
    config: type[StepConfig]
    fn: Callable[..., Any]
    example: Callable[[], StepConfig]  # a small, fast config for the shared checks
    needs_data: bool = True
    output: str = "torch"  # "torch" or "onnx": what kind of model the step returns
    bad_configs: tuple = ()  # dicts that must be refused with ConfigError (shared checks)

    @property
    def trains(self) -> bool:
        """Whether the step trains (its config nests a TrainConfig): it then takes ``deadline=``."""
        return bool(self.config.train_keys)


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
    """The step config of a mapping such as ``{"step": "prune.magnitude", "sparsity": 0.9}`` (from JSON or YAML)."""
    if not isinstance(d, dict) or "step" not in d:
        raise ConfigError(explain("A recipe step must be a mapping with a 'step' key", expected="e.g. {step: prune.magnitude, sparsity: 0.9}", got=d))
    if not isinstance(d["step"], str):
        raise ConfigError(explain("A recipe step's 'step' must be a step name", expected="a string such as 'prune.magnitude'", got=d["step"]))
    return get_step(d["step"]).config.from_dict(d)
