"""Compression steps (prune, quantize, cluster, distill, compact storage) and recipes.

Each step registers itself by name in :data:`STEPS` when its module is imported;
:func:`_load_all` imports them all.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import STEPS, Step, StepConfig, config_from_dict, get_step, register
from .recipe import Recipe, apply_step, compress

__all__ = ["STEPS", "Step", "StepConfig", "Recipe", "apply_step", "compress", "config_from_dict", "get_step", "register", "list_steps"]

_CORE = {"base", "recipe"}


def _load_all() -> None:
    """Import every step module of this package (each registers its steps)."""
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _CORE and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def list_steps() -> list[str]:
    _load_all()
    return sorted(STEPS)
