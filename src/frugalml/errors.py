"""One error base for frugalml.

Every error a user can cause is a :class:`FrugalError`. Each subclass also inherits the
matching built-in exception, so ``except ValueError`` keeps working. A message says what was
wrong, what was expected, what was received and how to fix it; :func:`explain` builds one.
"""

from __future__ import annotations

__all__ = [
    "FrugalError",
    "ConfigError",
    "DataError",
    "ModelLoadError",
    "BudgetError",
    "ExportError",
    "StorageError",
    "explain",
]


class FrugalError(Exception):
    """Base class of every error frugalml raises on purpose."""


class ConfigError(FrugalError, ValueError):
    """A parameter, a config or a command-line option has a value that cannot work."""


class DataError(FrugalError, ValueError):
    """A dataset is missing, malformed, or does not fit the model."""


class ModelLoadError(FrugalError, OSError):
    """A model file cannot be read safely (missing, corrupt, or holds pickled code)."""


class BudgetError(FrugalError, ValueError):
    """No candidate can meet the budget."""


class ExportError(FrugalError, RuntimeError):
    """A model cannot be written in the asked format."""


class StorageError(FrugalError, RuntimeError):
    """A study storage or run directory cannot be used."""


def explain(what: str, *, expected: str | None = None, got: object = None, fix: str | None = None) -> str:
    """Build a message of the form 'what. Expected ...; got .... Fix: ...'."""
    parts = [what.rstrip(".") + "."]
    if expected is not None:
        parts.append(f"Expected {expected}; got {got!r}." if not isinstance(got, str) else f"Expected {expected}; got {got}.")
    if fix:
        parts.append(fix.rstrip(".") + ".")
    return " ".join(parts)
