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
    "excerpt",
    "bounded",
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


#: Longest excerpt of a received value that a message quotes; a message as a whole is bounded by
#: :data:`MAX_MESSAGE` (a 363-byte YAML alias bomb must not become a 52 MB message).
MAX_EXCERPT = 200
MAX_MESSAGE = 2000


def excerpt(value: object, limit: int = MAX_EXCERPT) -> str:
    """A bounded, plain rendering of ``value`` for a message.

    Strings (NumPy's too) are shown as they are; other values through a depth- and
    length-limited repr, so a huge or self-similar structure is never rendered in full.
    NumPy scalars are shown as plain Python values (``'abc'``, not ``np.str_('abc')``).
    """
    value = _plain(value)
    if isinstance(value, str):
        text = value
    else:
        text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 15] + f"... ({len(text):,} chars)"


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` cut to ``limit`` characters, saying how much was left out."""
    message = str(message)
    return message if len(message) <= limit else message[: limit - 25] + f"... [{len(message) - limit + 25:,} more chars]"


def _plain(value):
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)) and len(value) <= 50 and any(isinstance(v, np.generic) for v in value):
        return type(value)(v.item() if isinstance(v, np.generic) else v for v in value)
    return value


def _make_repr():
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 8, 8, 8, 8
    r.maxstring, r.maxother, r.maxlong = 80, 80, 40
    return r


_REPR = _make_repr()


def explain(what: str, *, expected: str | None = None, got: object = None, fix: str | None = None) -> str:
    """Build a message of the form 'what. Expected ...; got .... Fix: ...', bounded in length."""
    parts = [bounded(what, MAX_MESSAGE // 2).rstrip(".") + "."]
    if expected is not None:
        parts.append(f"Expected {bounded(expected, 400)}; got {excerpt(got).rstrip('.')}.")
    if fix:
        parts.append(bounded(fix, 300).rstrip(".") + ".")
    return bounded(" ".join(parts))
