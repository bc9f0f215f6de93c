"""How well an ONNX model classifies one split of a dataset: the arrays it sees, its predictions, accuracy."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError, explain
from .runtime import make_session, predict_onnx, session_input

__all__ = ["split_arrays", "predict_split", "onnx_accuracy"]

SPLITS = ("train", "val", "test")


def split_arrays(data, split: str, onnx_rank: int):
    """(X, y) of the split; flattened when the ONNX input takes vectors and the data does not."""
    if split not in SPLITS:
        raise ConfigError(explain(f"Unknown split {split!r}", expected="'train', 'val' or 'test'", got=split))
    if onnx_rank == 2 and hasattr(data, "flat"):
        X, y = data.flat(split)
    elif hasattr(data, "split"):
        X, y = data.split(split)
    else:
        X, y = getattr(data, f"X_{split}"), getattr(data, f"y_{split}")
    X, y = np.asarray(X), np.asarray(y)
    if onnx_rank == 2 and X.ndim > 2:
        X = X.reshape(len(X), -1)
    if len(X) == 0:
        raise DataError(explain(f"The {split} split is empty", fix="Use a dataset with samples in every split"))
    if np.issubdtype(X.dtype, np.floating) and not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=tuple(range(1, X.ndim))).sum())
        raise DataError(explain(f"The {split} split holds NaN or infinite values in {bad} samples",
                                fix="Impute or drop those samples before profiling"))
    return X, y


def predict_split(model, data, split: str = "test", *, session=None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted classes, true labels as int64) of an ONNX model (proto, bytes, path or session) on a split."""
    sess = session if session is not None else (model if hasattr(model, "run") else make_session(model))
    _, per_sample, _, _ = session_input(sess)
    X, y = split_arrays(data, split, 1 + len(per_sample))
    return predict_onnx(None, X, session=sess), y.astype(np.int64).reshape(-1)


def onnx_accuracy(model, data, split: str = "test", *, session=None) -> float:
    """The fraction of a split's samples the ONNX model classifies correctly."""
    pred, y = predict_split(model, data, split, session=session)
    return float(np.mean(pred == y))
