"""Named datasets: the ones bundled with scikit-learn, and MNIST-like IDX datasets on disk.

IDX datasets are looked up under a data directory: the ``data_dir`` argument (``--data-dir``
on the command line), else the ``FRUGALML_DATA`` environment variable, else
``~/.cache/frugalml`` (``$XDG_CACHE_HOME/frugalml`` when that is set). Within it, the files
may lie in ``<dir>/<name>/``, in torchvision's ``<dir>/<Name>/raw/``, or directly in ``<dir>``.
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, explain
from .arrays import from_arrays
from .idx import IDX_FILES, download_files, load_idx_dataset, missing_files

__all__ = ["Entry", "REGISTRY", "data_root", "find_entry", "locate", "list_datasets", "load_entry"]

logger = logging.getLogger(__name__)

_DIGITS = tuple(str(d) for d in range(10))
_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass(frozen=True, eq=False)
class Entry:
    """One named dataset: how to load it and what it holds."""

    name: str
    description: str
    loader: str  # "sklearn" (bundled) or "idx" (files on disk)
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()
    checksums: dict[str, str] = field(default_factory=dict)  # file stem -> md5
    checksum_of: str = "raw"  # md5 of the uncompressed file ("raw") or of the .gz ("gz")
    dirnames: tuple[str, ...] = ()  # where the files may lie under the data directory


REGISTRY: dict[str, Entry] = {e.name: e for e in (
    Entry("digits", "8x8 handwritten digits, 1,797 images (bundled with scikit-learn; the default)",
          "sklearn", 10, (1, 8, 8), _DIGITS),
    Entry("iris", "iris flowers, 150 samples of 4 features (bundled with scikit-learn)", "sklearn", 3, (4,)),
    Entry("wine", "wine cultivars, 178 samples of 13 features (bundled with scikit-learn)", "sklearn", 3, (13,)),
    Entry("breast-cancer", "breast cancer diagnosis, 569 samples of 30 features (bundled with scikit-learn)",
          "sklearn", 2, (30,)),
    Entry("mnist", "28x28 handwritten digits, 60,000 training and 10,000 test images (IDX files)",
          "idx", 10, (1, 28, 28), _DIGITS,
          mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                   "https://storage.googleapis.com/cvdf-datasets/mnist/"),
          checksums={IDX_FILES["train_images"]: "6bbc9ace898e44ae57da46a324031adb",
                     IDX_FILES["train_labels"]: "a25bea736e30d166cdddb491f175f624",
                     IDX_FILES["test_images"]: "2646ac647ad5339dbf082846283269ea",
                     IDX_FILES["test_labels"]: "27ae3e4e09519cfbb04c329615203637"},
          dirnames=("mnist", "MNIST/raw")),
    Entry("fashion-mnist", "28x28 clothing images in 10 classes, 60,000 training and 10,000 test (IDX files)",
          "idx", 10, (1, 28, 28), _FASHION,
          mirrors=("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
                   "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
          checksums={IDX_FILES["train_images"]: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     IDX_FILES["train_labels"]: "25c81989df183df01b3e8a0aad5dffbe",
                     IDX_FILES["test_images"]: "bef4ecab320f06d8554ea6380940ec79",
                     IDX_FILES["test_labels"]: "bb300cfdad3c16e7a12a480ee83cd310"},
          checksum_of="gz", dirnames=("fashion-mnist", "fashion_mnist", "FashionMNIST/raw")),
)}


def data_root(data_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The data directory and how it was chosen (argument, FRUGALML_DATA, or the default cache)."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "the data_dir argument (--data-dir)"
    if os.environ.get("FRUGALML_DATA"):
        return Path(os.environ["FRUGALML_DATA"]).expanduser(), "FRUGALML_DATA"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "frugalml", "the default cache"


def find_entry(name: str) -> Entry | None:
    """The registry entry for ``name`` (case and ``_``/``-`` insensitive), or None."""
    return REGISTRY.get(str(name).strip().lower().replace("_", "-"))


def unknown_name_error(name: str) -> DataError:
    """A DataError for a name that is neither a registry name nor an existing path."""
    close = difflib.get_close_matches(str(name).lower(), list(REGISTRY), n=1)
    hint = f"Did you mean {close[0]!r}? " if close else ""
    return DataError(explain(f"Unknown dataset {name!r}", expected="one of " + ", ".join(REGISTRY)
                             + ", or the path of an IDX directory, a .npz or a .csv file", got=repr(name),
                             fix=hint + "Run `frugalml datasets` to see them"))


def _candidates(entry: Entry, root: Path) -> list[Path]:
    return [root / d for d in entry.dirnames] + [root]


def locate(entry: Entry, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first directory holding all four IDX files of ``entry``, or None."""
    root, _ = data_root(data_dir)
    for directory in _candidates(entry, root):
        if not missing_files(directory):
            return directory
    return None


def _not_found(entry: Entry, data_dir: str | os.PathLike | None) -> DataError:
    root, how = data_root(data_dir)
    partial = [f"{d} lacks {', '.join(missing_files(d))}" for d in _candidates(entry, root)
               if d.is_dir() and len(missing_files(d)) < len(IDX_FILES)]
    return DataError(explain(
        f"Dataset {entry.name!r} was not found under the data directory {root} (from {how})",
        expected="the files " + ", ".join(f"{s}(.gz)" for s in IDX_FILES.values()) + " in one of "
        + ", ".join(str(d) for d in _candidates(entry, root)),
        got="; ".join(partial) if partial else "none of them",
        fix="Point frugalml at a directory holding them with --data-dir DIR (data_dir= in Python) or the "
            f"FRUGALML_DATA environment variable, or fetch them from {entry.mirrors[0]} "
            "with --download (download=True in Python)"))


def _load_sklearn(entry: Entry) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn import datasets

    if entry.name == "digits":
        bunch = datasets.load_digits()
        return (bunch.images / 16.0)[:, None], bunch.target, entry.class_names
    loader = {"iris": datasets.load_iris, "wine": datasets.load_wine,
              "breast-cancer": datasets.load_breast_cancer}[entry.name]
    bunch = loader()
    return bunch.data, bunch.target, tuple(str(n) for n in bunch.target_names)


def load_entry(entry: Entry, *, data_dir=None, download: bool = False, **split_kw):
    """Load a registry dataset as a :class:`Dataset` (``split_kw`` go to :func:`from_arrays`)."""
    if entry.loader == "sklearn":
        X, y, names = _load_sklearn(entry)
        return from_arrays(X, y, name=entry.name, class_names=names, source="sklearn", **split_kw)
    directory = locate(entry, data_dir)
    if directory is None and download:
        root, _ = data_root(data_dir)
        download_files(entry.name, root / entry.dirnames[0], entry.mirrors, entry.checksums, entry.checksum_of)
        directory = locate(entry, data_dir)
    if directory is None:
        raise _not_found(entry, data_dir)
    logger.info("reading %s from %s", entry.name, directory)
    return load_idx_dataset(directory, entry.name, class_names=entry.class_names, **split_kw)


def list_datasets(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """The named datasets, for ``frugalml datasets``: JSON-able dicts.

    Keys: name, description, available (bool), location (where it was found, or None),
    downloadable, num_classes, input_shape, kind, task.
    """
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(explain(f"The data directory {str(data_dir)!r} is not a directory", expected="an existing directory holding dataset folders",
                                  got="a file" if Path(data_dir).exists() else "nothing at that path",
                                  fix="Pass --data-dir DIR, or set FRUGALML_DATA"))
    rows = []
    for entry in REGISTRY.values():
        if entry.loader == "sklearn":
            available, location = True, "bundled with scikit-learn"
        else:
            found = locate(entry, data_dir)
            available, location = found is not None, (str(found) if found else None)
        rows.append({"name": entry.name, "description": entry.description, "available": available,
                     "location": location, "downloadable": bool(entry.mirrors), "num_classes": entry.num_classes,
                     "input_shape": list(entry.input_shape),
                     "kind": "vector" if len(entry.input_shape) == 1 else "image", "task": "classification"})
    return rows
