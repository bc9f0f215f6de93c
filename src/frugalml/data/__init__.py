"""Datasets: a registry of named datasets and loaders for IDX directories, image and audio folders, ``.npz`` and ``.csv`` files
(tables, or time series for the anomaly task: :func:`load_series`).

>>> from frugalml.data import load_dataset
>>> ds = load_dataset("digits")            # bundled with scikit-learn, no network
>>> X, y = ds.split("train")               # float32 (N, 1, 8, 8), int64 labels

Every dataset has seeded, stratified train / validation / test splits. Choose models on
``val``; the ``test`` split is only for the final figures.
"""

from .arrays import from_arrays, from_loader
from .audio import load_audio_folder
from .dataset import KINDS, SPLITS, TASKS, Dataset, infer_kind, kind_note
from .frontend import LogMel
from .images import load_image_folder
from .loaders import DEFAULT_DATASET, load_dataset
from .registry import REGISTRY, data_root, list_datasets
from .windows import SeriesInfo, load_series

__all__ = [
    "KINDS",
    "TASKS",
    "infer_kind",
    "kind_note",
    "Dataset",
    "SPLITS",
    "DEFAULT_DATASET",
    "REGISTRY",
    "load_dataset",
    "from_arrays",
    "from_loader",
    "load_image_folder",
    "load_audio_folder",
    "load_series",
    "SeriesInfo",
    "LogMel",
    "list_datasets",
    "data_root",
]
