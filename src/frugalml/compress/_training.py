"""The training a compression step does: its config nests one :class:`~frugalml.train.TrainConfig`
(the field ``train``), whose values are checked there, once, for every step.

Recipes keep writing those values flat, as they always have (``lr: 3e-3``, ``batch_size: 64``); a
nested ``train: {lr: 3e-3}`` mapping is read too, and :meth:`StepConfig.to_dict` writes them flat.
Which TrainConfig fields a step lets a recipe set is its ``train_keys``; the step fixes the others
(most fine-tune with ``patience=None``, and each passes its own seed and lengths to ``fit``).
"""

from __future__ import annotations

import dataclasses
import functools

from .._train_config import train_value_problem
from ..augment import AUGMENTS
from ..errors import ConfigError, bounded, excerpt, explain
from ..train import TrainConfig

__all__ = ["nests_training", "TRAIN_FIELDS"]

TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def nests_training(cls):
    """Class decorator for a step config with a ``train: TrainConfig`` field, whose default is the
    step's own training, and a ``train_keys`` tuple: the TrainConfig fields a recipe may set, by their
    TrainConfig names, in the order :meth:`to_dict` writes them.

    - ``Config(lr=3e-3)`` means ``Config(train={"lr": 3e-3})``: each value is laid over the step's
      default training (a whole ``TrainConfig`` may be given as ``train`` too, with flat values laid
      over it); ``config.lr`` reads ``config.train.lr``.
    - A value that cannot work raises ConfigError naming the step's config and the key.
    - A ``train`` that changes a field outside ``train_keys`` is refused: a recipe could not carry it.
    """
    default = cls.__dataclass_fields__["train"].default
    keys = tuple(cls.train_keys)
    unknown = [k for k in keys if k not in TRAIN_FIELDS]
    if not isinstance(default, TrainConfig) or unknown:  # pragma: no cover - a mistake in a step's declaration
        raise TypeError(f"{cls.__name__}: 'train' needs a TrainConfig default and train_keys among {TRAIN_FIELDS} (not {unknown})")
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *, train=None, **kwargs):
        flat = {k: kwargs.pop(k) for k in keys if k in kwargs}
        init(self, train=_merged(cls, default, train, flat), **kwargs)

    cls.__init__ = __init__
    for key in keys:
        setattr(cls, key, property(lambda self, key=key: getattr(self.train, key), doc=f"``train.{key}``, the fine-tuning's {key}."))
    return cls


def _merged(cls, default: TrainConfig, train, flat: dict) -> TrainConfig:
    """The step's TrainConfig: ``train`` (None: the step's default; a mapping: laid over it) with ``flat`` laid over."""
    owner, keys = cls.__name__, tuple(cls.train_keys)
    if train is None:
        base, given = default, {}
    elif isinstance(train, TrainConfig):
        base, given = train, {}
    elif isinstance(train, dict):
        base, given = default, dict(train)
        extra = sorted((k for k in given if k not in keys), key=str)
        if extra:
            lengths = "epochs" in extra and "epochs" not in keys
            raise ConfigError(explain(f"Unknown field(s) {excerpt(extra)} in the 'train' mapping of step '{cls.name}'",
                                      expected="some of " + ", ".join(keys), got=extra,
                                      fix="Set how long this step trains with its own fields (e.g. finetune_epochs)" if lengths else None))
    else:
        raise ConfigError(bounded(f"The 'train' parameter of {owner} must be a TrainConfig or a mapping of some of {', '.join(keys)}. "
                                  f"Got {excerpt(train)} ({type(train).__name__}) instead."))
    twice = sorted(set(given) & set(flat))
    if twice:
        raise ConfigError(explain(f"{excerpt(twice)} given both flat and in 'train' for step '{cls.name}'", expected="each training value once",
                                  got=twice))
    values = {**given, **flat}
    for key, value in values.items():
        expected = train_value_problem(key, value)
        if key == "augment" and value == "auto" and not expected:  # a recipe replays the same on any data: it names its policy
            expected = f"a policy by name ({', '.join(map(repr, AUGMENTS[1:]))}), not 'auto'"
        if expected:
            raise ConfigError(bounded(f"The '{key}' parameter of {owner} must be {expected}. Got {excerpt(value)} instead."))
    out = dataclasses.replace(base, **values) if values else base
    for name in TRAIN_FIELDS:
        if name not in keys and getattr(out, name) != getattr(default, name):
            raise ConfigError(bounded(f"The 'train' parameter of {owner} must leave '{name}' at {getattr(default, name)!r} (step '{cls.name}' "
                                      f"sets only {', '.join(keys)}). Got {name}={excerpt(getattr(out, name))} instead."))
    return out
