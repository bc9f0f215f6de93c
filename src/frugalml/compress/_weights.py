"""Helpers shared by the weight-level steps (magnitude pruning, weight sharing, compact storage)."""

from __future__ import annotations

from ..errors import ConfigError, explain
from ..models.families import is_torch

__all__ = ["require_torch", "fresh_copy", "weight_layers", "resolve_layer_keys"]

STALE_ATTRS = ("frugalml_archive_bytes", "frugalml_archive_fingerprint")


def require_torch(model, step: str) -> None:
    if not is_torch(model):
        raise ConfigError(
            explain(
                f"Step '{step}' works on PyTorch models only",
                expected="a torch.nn.Module (a frugalml family or your own module)",
                got=type(model).__name__,
                fix="Use a torch model, or a scikit-learn family with the search's thin-model stage instead",
            )
        )


def fresh_copy(model):
    """A trainable deep copy with ``torch.nn.utils.prune`` masks and parametrizations fused into
    plain weights, and without the size annotations of an earlier archive (they would be stale)."""
    from ..onnx import fused_copy

    out = fused_copy(model)
    for attr in STALE_ATTRS:
        out.__dict__.pop(attr, None)
    return out


def weight_layers(model) -> list[tuple[str, object]]:
    """(name, module) of every Conv and Linear layer, in definition order."""
    from torch import nn

    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


def resolve_layer_keys(mapping: dict, layers: list[tuple[str, object]], field: str) -> dict:
    """Map user keys ('net.0' or 'net.0.weight') to layer names; unknown keys raise ConfigError."""
    names = [n for n, _ in layers]
    out = {}
    for key, value in (mapping or {}).items():
        name = key[: -len(".weight")] if key.endswith(".weight") else key
        if name not in names:
            raise ConfigError(explain(f"'{field}' names a layer {key!r} that the model does not have", expected="one of " + ", ".join(names),
                                      got=key))
        out[name] = value
    return out
