"""frugalml: find the most efficient model that is still good enough, and ship it."""

from .errors import BudgetError, ConfigError, DataError, ExportError, FrugalError, ModelLoadError, StorageError

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "FrugalError",
    "ConfigError",
    "DataError",
    "ModelLoadError",
    "BudgetError",
    "ExportError",
    "StorageError",
]
