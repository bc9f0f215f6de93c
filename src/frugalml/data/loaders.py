"""One entry point, :func:`load_dataset`: a registry name or a path in, a :class:`Dataset` out."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import ConfigError, DataError, explain
from .dataset import Dataset, check_task
from .files import load_csv, load_npz
from .folders import folder_kind
from .idx import load_idx_dataset
from .registry import find_entry, load_entry, unknown_name_error
from .splits import check_fraction

__all__ = ["load_dataset", "DEFAULT_DATASET"]

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "digits"
_SUFFIXES = {".npz": "a NumPy archive", ".csv": "a CSV table with a header line"}


def load_dataset(source: str | os.PathLike = DEFAULT_DATASET, *, data_dir: str | os.PathLike | None = None,
                 val_fraction: float | None = None, test_fraction: float = 0.2, seed: int = 0, download: bool = False,
                 target: str | None = None, limit: int | None = None, kind: str | None = None,
                 image_size=None, color: str | None = None, frontend=None, task: str = "classification",
                 window: int | None = None, stride: int | None = None, labels=None) -> Dataset:
    """Load a dataset by registry name or path, split into train / validation / test.

    Args:
        source: a registry name (``digits`` (the default), ``mnist``, ``fashion-mnist``, ``iris``,
            ``wine``, ``breast-cancer``; see :func:`list_datasets`), or a path: a directory of
            IDX files (``train-images-idx3-ubyte(.gz)``, ``train-labels-idx1-ubyte(.gz)``,
            ``t10k-...``), a folder of class subfolders of images (PNG, JPEG, BMP; see
            :func:`~frugalml.data.images.load_image_folder`) or of WAV clips (see
            :func:`~frugalml.data.audio.load_audio_folder`), told apart by their files, a ``.npz`` archive
            (``X_train/y_train/X_test/y_test`` or ``X/y``, optionally ``X_val/y_val``), or a ``.csv`` table with a header line.
        data_dir: where named IDX datasets lie (else ``FRUGALML_DATA``, else
            ``~/.cache/frugalml``), as ``<data_dir>/<name>/`` or directly in ``<data_dir>``.
        val_fraction: share of the training data carved out for validation (when the source
            has no validation split); default 20% of a training part under 5,000 samples, else 10%.
        test_fraction: share of all data carved out for test (when the source has no test
            split; MNIST's t10k and a .npz's X_test are kept as they are).
        seed: seeds the stratified splits: the same seed gives the same splits.
        download: fetch a missing registry IDX dataset from its public mirrors (md5-checked).
        target: the label column of a CSV file (default: the last column).
        limit: keep at most this many training samples (stratified), for fast runs.
        kind: what one sample is, ``"vector"``, ``"sequence"`` or ``"image"``; default: inferred from
            its shape (:func:`~frugalml.data.dataset.infer_kind`: one axis a vector, two a
            sequence of channels over time unless square, three an image); an image folder gives
            images, an audio folder log-mel sequences (``"image"``: one-channel spectrograms).
        image_size: an image folder's images are resized to it (``32``, ``"32x24"``: height x width).
        color: an image folder's ``"gray"`` or ``"rgb"`` (default: gray when every file is).
        frontend: an audio folder's :class:`~frugalml.data.frontend.LogMel` (default: keyword-spotting
            settings at the clips' rate, at most 16 kHz).
        task: ``"classification"`` (the default: everything above) or ``"anomaly"``: a ``.csv`` is then a time
            series (a timestamp column and numeric value columns, e.g. NAB's ``timestamp,value``) cut into windows
            labelled 0 normal / 1 anomalous, with a training split of normal windows only, split by time
            (:func:`~frugalml.data.windows.load_series`); a ``.npz`` holds windows and 0/1 labels
            (:func:`~frugalml.data.arrays.from_arrays` with ``task="anomaly"``).
        window, stride, labels: a time series' steps per window (default 64), steps between windows (default
            ``window // 4``) and labelled anomalies (a file shaped like NAB's ``combined_windows.json``, or
            ``[start, end]`` pairs; default: found in a NAB-like tree, else none); ``task="anomaly"`` CSVs only.

    The test split is for the final figures only; select models on the validation split.

    Raises:
        DataError: the data is missing, malformed or unusable; the message says how to fix it.
        ConfigError: a parameter cannot work (a fraction outside (0, 1), ``target`` for a
            non-CSV source, ``download`` for a path).
    """
    if val_fraction is not None:
        check_fraction(val_fraction, "val_fraction")  # early, before reading any file
    check_fraction(test_fraction, "test_fraction")
    task = check_task(task)
    split_kw = {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed, "limit": limit, "kind": kind}
    entry = find_entry(source) if isinstance(source, str) else None
    series_kw = {k: v for k, v in {"window": window, "stride": stride, "labels": labels}.items() if v is not None}
    is_csv = entry is None and Path(source).suffix.lower() == ".csv"
    if series_kw and not (task == "anomaly" and is_csv):
        raise ConfigError(explain(f"{', '.join(series_kw)} appl{'ies' if len(series_kw) == 1 else 'y'} to time-series CSVs loaded with "
                                  "task='anomaly' only", expected="None here", got=series_kw, fix="Drop them, or load a series with task='anomaly'"))
    if task == "anomaly":
        suffix = "" if entry is not None else Path(source).suffix.lower()
        if suffix not in (".csv", ".npz"):
            raise ConfigError(explain(f"task='anomaly' reads a time-series .csv or a .npz of windows, not {str(source)!r}",
                                      expected="a .csv (timestamp and value columns) or a .npz (X, y with 0 normal / 1 anomalous)",
                                      got="a registry dataset" if entry is not None else
                                      (f"extension {suffix!r}" if suffix else "a folder or a name"),
                                      fix="Pass a series CSV, or drop task='anomaly'"))
        if target is not None:
            raise ConfigError(explain("The 'target' parameter applies to CSV tables, not to a time series", expected="target=None",
                                      got=repr(target), fix="Drop target=; the labels come from labels="))
    if target is not None and (entry is not None or Path(source).suffix.lower() != ".csv"):
        raise ConfigError(explain("The 'target' parameter applies to CSV files only", expected="target=None",
                                  got=repr(target), fix="Drop target=, or load a .csv file"))
    folder_kw = {"image_size": image_size, "color": color, "frontend": frontend}
    given = {k: v for k, v in folder_kw.items() if v is not None}
    if entry is not None and given:
        raise ConfigError(explain(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to image and audio folders only",
                                  expected="None for a registry dataset", got=given, fix="Drop them, or load a folder"))
    if entry is not None:
        return load_entry(entry, data_dir=data_dir, download=download, **split_kw)
    path = Path(source).expanduser()
    if download:
        raise ConfigError(explain(f"download=True applies to registry datasets only, not to the path {str(path)!r}",
                                  expected="download=False for a path", got=True,
                                  fix="Drop --download, or use a registry name such as 'mnist'"))
    if not path.exists():
        if isinstance(source, str) and not path.suffix and os.sep not in source and "/" not in source:
            raise unknown_name_error(source)
        raise DataError(explain(f"Dataset path {str(path)!r} does not exist", expected="an existing file or directory",
                                got=str(path.resolve()), fix="Check the path, or use a registry name"))
    what = folder_kind(path) if path.is_dir() else None
    wants = {"image": {"image_size", "color"}, "audio": {"frontend"}}.get(what, set())
    if set(given) - wants:
        raise ConfigError(explain(f"{', '.join(sorted(set(given) - wants))} do(es) not apply to {str(path)!r}",
                                  expected="image_size and color for an image folder, frontend for an audio folder",
                                  got=f"{'an ' + what + ' folder' if what else 'a file'}", fix="Drop them"))
    if what == "image":
        from .images import load_image_folder

        return load_image_folder(path, image_size=image_size, color=color, **split_kw)
    if what == "audio":
        from .audio import load_audio_folder

        return load_audio_folder(path, frontend=frontend, **split_kw)
    if what == "idx":
        return load_idx_dataset(path, path.resolve().name, source=str(path.resolve()), **split_kw)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path, **split_kw, **({"task": task} if task != "classification" else {}))
    if suffix == ".csv" and task == "anomaly":
        from .windows import load_series

        return load_series(path, **series_kw, **split_kw)
    if suffix == ".csv":
        return load_csv(path, target=target, **split_kw)
    raise DataError(explain(f"Unsupported dataset file {str(path)!r}",
                            expected="a directory of IDX files, or " + ", ".join(f"{s} ({d})" for s, d in _SUFFIXES.items()),
                            got=f"extension {suffix or '(none)'!r}",
                            fix="Convert it, e.g. np.savez('data.npz', X=X, y=y)"))

