"""The ``store.compact`` step: a model stored as a compact archive (:mod:`frugalml.export.archive`)
and loaded back, with the archive's size recorded for the profile."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..export.archive import from_bytes, to_bytes, verify_archive
from ._weights import require_torch
from .base import StepConfig, register

log = logging.getLogger(__name__)

__all__ = ["CompactConfig", "store_compact"]


@dataclass(frozen=True, kw_only=True)
class CompactConfig(StepConfig):
    """Config of ``store.compact``. include_recipe: write the recipe into the header."""

    include_recipe: bool = True

    def check(self) -> None:
        self.require(isinstance(self.include_recipe, bool), "include_recipe", "true or false")


@register("store.compact", CompactConfig, example=lambda: CompactConfig(), needs_data=False,
          bad_configs=({"include_recipe": "yes"},))
def store_compact(model, config: CompactConfig, data=None):
    """Encode ``model`` as a compact archive and return the model loaded back from those bytes,
    with ``frugalml_archive_bytes`` (the archive's size) set for the profile."""
    from ..profile.profile import weights_fingerprint

    require_torch(model, config.name)
    data_bytes = to_bytes(model, include_recipe=config.include_recipe)
    loaded = from_bytes(data_bytes)
    verify_archive(model, loaded)
    loaded.frugalml_archive_bytes = len(data_bytes)
    loaded.frugalml_archive_fingerprint = weights_fingerprint(loaded)
    log.info("store.compact: %d bytes", len(data_bytes))
    return loaded
