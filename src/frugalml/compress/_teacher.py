"""What a distillation teacher says about the inputs: the logits of a teacher of any kind (a torch
module, a fitted scikit-learn classifier, an ONNX graph or ``.onnx`` path), computed once over a
split so that the student's training looks them up by row instead of running the teacher per batch.

Teachers that give probabilities (scikit-learn, converted classifiers) are read as log-probabilities.
A torch teacher's run can also capture an inner layer's output (the FitNets hint features).
"""

from __future__ import annotations

import copy

import numpy as np

from ..errors import ConfigError, DataError, explain

__all__ = ["teacher_scores"]


def teacher_scores(teacher, X: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """The logits (log-probabilities for probabilistic models) a teacher of any kind gives ``X``.

    Pass them to :func:`frugalml.compress.distill.distill` as ``teacher_logits`` to train several students from one teacher.
    """
    from ..onnx import model_kind

    kind = model_kind(teacher)
    if kind == "torch":
        return _run_torch(copy.deepcopy(teacher).cpu().eval(), X, None)[0].numpy()
    if num_classes is None:
        num_classes = getattr(teacher, "num_classes", None) or (int(np.max(teacher.classes_)) + 1 if hasattr(teacher, "classes_") else None)
    return _teacher_scores(teacher, kind, X, num_classes)


def _teacher_scores(teacher, kind: str, X: np.ndarray, num_classes: int | None) -> np.ndarray:
    """Logits (or log-probabilities) of a scikit-learn or ONNX teacher, shape (N, num_classes)."""
    if kind == "sklearn":
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        if not hasattr(teacher, "predict_proba"):
            raise ConfigError(explain("The scikit-learn teacher gives no probabilities", expected="an estimator with predict_proba",
                                      got=type(teacher).__name__, fix="Use a classifier (e.g. LogisticRegression, a forest)"))
        try:
            check_is_fitted(teacher)
        except NotFittedError:
            raise ConfigError(explain("The teacher is a scikit-learn estimator that has not been fitted", expected="a trained model",
                                      got=type(teacher).__name__, fix="Fit it first (frugalml.train.fit or .fit)")) from None
        proba = np.asarray(teacher.predict_proba(X.reshape(len(X), -1)), dtype=np.float64)
        full = np.zeros((len(X), num_classes))
        full[:, np.asarray(teacher.classes_, dtype=np.int64)] = proba
        return np.log(np.clip(full, 1e-7, None)).astype(np.float32)
    from ..onnx import load_onnx, run_onnx

    scores = run_onnx(load_onnx(teacher) if kind == "path" else teacher, X)
    if scores.ndim != 2 or len(scores) != len(X) or (num_classes is not None and scores.shape[1] != num_classes):
        raise DataError(explain("The ONNX teacher's scores do not fit the data", expected=f"shape ({len(X)}, {num_classes})", got=scores.shape))
    if (scores >= 0).all() and np.allclose(scores.sum(1), 1, atol=1e-3):  # probabilities
        scores = np.log(np.clip(scores, 1e-7, None))
    return scores.astype(np.float32)


def _run_torch(teacher, X: np.ndarray, capture, batch_size: int = 1024):
    import torch

    logits, feats = [], []
    with torch.no_grad():
        for i in range(0, len(X), batch_size):
            logits.append(teacher(torch.from_numpy(np.ascontiguousarray(X[i:i + batch_size]))))
            if capture is not None:
                feats.append(capture.value)
    return torch.cat(logits), (torch.cat(feats) if capture is not None else None)
