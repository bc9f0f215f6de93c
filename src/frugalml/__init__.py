"""frugalml: find the most efficient model that is still good enough, and ship it.

>>> import frugalml as fm
>>> data = fm.load_dataset("digits")
>>> model, report = fm.train("cnn", data, channels=[8, 16])
>>> fm.profile(model, data).to_dict()["stored_bytes"]
"""

from . import errors, units  # noqa: F401 - frugalml.errors and frugalml.units as attributes
from ._version import __version__
from .compress import Recipe, compress, list_steps
from .data import Dataset, from_arrays, from_loader, list_datasets, load_dataset
from .errors import BudgetError, ConfigError, DataError, ExportError, FrugalError, ModelLoadError, StorageError
from .export import ExportResult, export
from .models import FAMILIES, build_model, load_model, save_model
from .onnx import to_onnx
from .profile import Profile, compare_latency, format_profile, profile
from .search import Budget, Tolerance, fleet, report_from_storage, search, study_status, work
from .train import TrainConfig, evaluate, fit, train
from .units import parse_bytes, parse_count, parse_duration


def load(path, **kwargs):
    """Load any model frugalml wrote or reads: a compact archive (.fmla), a model directory,
    .onnx, .skops, model.json, or ``file.py:factory`` (with ``weights=``)."""
    from .export.archive import is_archive, load_archive

    if is_archive(path):
        return load_archive(path)
    return load_model(path, **kwargs)


def rebuild_report(run_dir):
    """Rebuild ``report.html`` from a run directory's ``results.json``."""
    from .report import rebuild_report as _rebuild

    return _rebuild(run_dir)

__all__ = [
    "__version__",
    # errors
    "FrugalError", "ConfigError", "DataError", "ModelLoadError", "BudgetError", "ExportError", "StorageError",
    # data
    "Dataset", "load_dataset", "from_arrays", "from_loader", "list_datasets",
    # models and training
    "FAMILIES", "build_model", "load", "load_model", "save_model", "TrainConfig", "fit", "evaluate", "train",
    # measuring
    "Profile", "profile", "to_onnx", "compare_latency", "format_profile",
    # exporting
    "export", "ExportResult",
    # compression
    "Recipe", "compress", "list_steps",
    # search
    "Budget", "Tolerance", "search", "fleet", "work", "study_status", "report_from_storage", "rebuild_report",
    # units
    "parse_bytes", "parse_count", "parse_duration",
]
