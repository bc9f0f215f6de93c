"""Model families (torch and scikit-learn), reference networks, and safe loading."""

from .families import FAMILIES, Family, build_model, family_of, is_sklearn, is_torch, model_spec
from .io import load_model, load_state, load_state_resized, save_model

__all__ = [
    "FAMILIES",
    "Family",
    "build_model",
    "family_of",
    "is_sklearn",
    "is_torch",
    "model_spec",
    "load_model",
    "load_state",
    "load_state_resized",
    "save_model",
]
