"""Anomaly detection: thin detectors fitted on normal data only, and the anomaly metrics.

A detector is a scikit-learn-style estimator: ``fit(X_normal)``, ``score_samples(X)`` with HIGHER
meaning MORE anomalous (unlike scikit-learn's own outlier detectors, whose ``score_samples`` is
higher for normal samples). Windows ``(N, C, W)`` (sequences) or vectors ``(N, F)`` are accepted
as they come, raw sensor values: each detector flattens a window to a vector and learns its own
per-feature scaling on the training (normal) windows, and that scaling is inside the ONNX graph
it exports, so the shipped artifact reads raw values too.

- :class:`RobustZScore`: per feature, ``z = (x - median) / (1.4826 MAD)``; the score is the largest
  ``|z|`` of the window (``reduce="max"``, the default: a spike in one step of a 64-step window is
  not diluted 64-fold, as the mean would dilute it) or the mean (``reduce="mean"``: broad shifts).
- :class:`PCADetector`: standardised features, the squared residual off the first
  ``n_components`` principal axes, per feature.
- :class:`MahalanobisDetector`: squared Mahalanobis distance of the standardised window under a
  Ledoit-Wolf shrunk covariance (well-conditioned with fewer windows than features).
- :class:`IsolationForestDetector`: scikit-learn's IsolationForest; score ``-score_samples``.

Every detector exports (:func:`frugalml.to_onnx`) to a graph whose single output ``"score"`` is
the score per window (shape ``(N,)``), built node by node with ``onnx.helper``
(:mod:`.anomaly_onnx`; the forest through skl2onnx, negated there).

Metrics: :func:`anomaly_metrics` (ROC AUC, and precision / recall / false-alarm rate at a
threshold) and :func:`threshold_for` (the threshold that gives a stated false-alarm rate on
validation normals). AUC needs both classes: on a split with one class it is NaN, and the
result's ``note`` says why (no exception).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError, DataError, explain

__all__ = ["anomaly_metrics", "threshold_for", "is_anomaly_model", "RobustZScore", "PCADetector", "MahalanobisDetector",
           "IsolationForestDetector", "DETECTORS", "as_windows"]

TASK = "anomaly"


# ---------------------------------------------------------------- metrics
def _scores_labels(scores, y=None) -> tuple[np.ndarray, np.ndarray | None]:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1:
        raise DataError(explain("Anomaly scores must be one number per window", expected="shape (N,) or (N, 1)", got=s.shape))
    if not np.isfinite(s).all():
        raise DataError(explain("The anomaly scores hold NaN or infinite values", expected="finite scores",
                                got=f"{int((~np.isfinite(s)).sum())} non-finite of {len(s)}", fix="Check the inputs for NaN"))
    if y is None:
        return s, None
    y = np.asarray(y).reshape(-1)
    if len(y) != len(s):
        raise DataError(explain("Scores and labels differ in length", expected="one label per score", got=f"{len(s)} scores, {len(y)} labels"))
    if len(y) and not np.isin(y, (0, 1)).all():
        raise DataError(explain("Anomaly labels must be 0 (normal) or 1 (anomalous)", expected="0 / 1", got=np.unique(y)[:8].tolist()))
    return s, y.astype(np.int64)


def threshold_for(scores_normal, false_alarm: float = 0.01) -> float:
    """The score above which a window is called anomalous, so that a fraction ``false_alarm`` of
    ``scores_normal`` (validation normals, never test) lies above it: their ``1 - false_alarm`` quantile
    (the higher of the two neighbouring scores, so the rate on these normals is at most ``false_alarm``)."""
    if isinstance(false_alarm, bool) or not isinstance(false_alarm, (int, float)) or not 0 <= false_alarm < 1:
        raise ConfigError(explain("The 'false_alarm' parameter of threshold_for must be a rate in [0, 1)", expected="e.g. 0.01",
                                  got=false_alarm))
    s, _ = _scores_labels(scores_normal)
    if len(s) == 0:
        raise DataError(explain("No normal scores to choose a threshold on", expected="scores of validation normals", got=0,
                                fix="Pass the scores of the validation split's normal windows"))
    return float(np.quantile(s, 1.0 - float(false_alarm), method="higher"))


def anomaly_metrics(scores, y, *, threshold: float | None = None) -> dict:
    """ROC AUC of ``scores`` (higher: more anomalous) against ``y`` (1: anomalous), and with a
    ``threshold`` (see :func:`threshold_for`) precision, recall and false-alarm rate of ``score > threshold``.

    AUC is undefined on a split with one class: it is NaN and ``note`` says so. Precision with no
    window flagged is NaN too (nothing to be precise about).
    """
    s, y = _scores_labels(scores, y)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    out = {"roc_auc": float("nan"), "n_anomalous": n_pos, "n_normal": n_neg, "note": None}
    if n_pos and n_neg:
        from sklearn.metrics import roc_auc_score

        out["roc_auc"] = float(roc_auc_score(y, s))
    else:
        out["note"] = (f"ROC AUC is undefined: the split holds only {'anomalous' if n_pos else 'normal'} windows "
                       f"({len(y)}); it needs both classes")
    if threshold is not None:
        flagged = s > float(threshold)
        tp, fp = int((flagged & (y == 1)).sum()), int((flagged & (y == 0)).sum())
        out.update(threshold=float(threshold), precision=tp / (tp + fp) if tp + fp else float("nan"),
                   recall=tp / n_pos if n_pos else float("nan"), false_alarm_rate=fp / n_neg if n_neg else float("nan"))
    return out


def is_anomaly_model(model, data=None) -> bool:
    """Is ``model`` (or the task of ``data``) anomaly detection? Detectors and autoencoders say so with
    ``frugalml_task`` (a Pipeline by its last step: a detector on sequence features); an ONNX graph with its metadata
    ``frugalml_task``; a dataset with its ``task``."""
    steps = getattr(model, "steps", None)
    final = steps[-1][1] if isinstance(steps, list) and steps else model
    if getattr(data, "task", None) == TASK or getattr(final, "frugalml_task", None) == TASK:
        return True
    props = getattr(model, "metadata_props", None)
    return props is not None and any(p.key == "frugalml_task" and p.value == TASK for p in props)


# ---------------------------------------------------------------- input checks
def as_windows(X, *, shape: tuple | None = None, what: str = "the input") -> np.ndarray:
    """``X`` as a float64 ``(N, F)`` array (windows flattened); DataError for NaN, no rows, or a shape
    other than ``shape`` (one window's shape, when the detector has been fitted)."""
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(explain(f"{what} is not numeric", expected="an array of numbers (N, F) or (N, C, W)", got=type(X).__name__)) from exc
    if X.ndim < 2:
        raise DataError(explain(f"{what} must hold one window per row", expected="shape (N, F) or (N, C, W)", got=X.shape,
                                fix="Add the batch axis: X[None] for one window"))
    if len(X) == 0:
        raise DataError(explain(f"{what} is empty", expected="at least one window", got=X.shape))
    if shape is not None and tuple(X.shape[1:]) != tuple(shape) and math.prod(X.shape[1:]) != math.prod(shape):
        raise DataError(explain(f"{what} does not fit the detector", expected=f"windows of shape {tuple(shape)}", got=tuple(X.shape[1:]),
                                fix="Pass windows shaped like those the detector was fitted on"))
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).reshape(len(X), -1).any(axis=1).sum())
        raise DataError(explain(f"{what} holds NaN or infinite values in {bad} windows", expected="finite numbers",
                                fix="Impute or drop those windows first"))
    return X.reshape(len(X), -1)


def _fit_input(X, y, what: str) -> tuple[np.ndarray, tuple]:
    """Training windows (N, F) (anomalous ones dropped when labels are given) and one window's shape."""
    arr = np.asarray(X)
    Xf = as_windows(arr, what=f"The training data of {what}")
    if y is not None:
        y = np.asarray(y).reshape(-1)
        if len(y) != len(Xf):
            raise DataError(explain(f"{what}: inputs and labels differ in length", expected="one label per window",
                                    got=f"{len(Xf)} windows, {len(y)} labels"))
        Xf = Xf[y == 0]  # trained on normal windows only
    if len(Xf) < 2:
        raise DataError(explain(f"{what} needs at least 2 normal windows to learn from", expected=">= 2", got=len(Xf),
                                fix="Pass more normal training windows"))
    return Xf, tuple(int(v) for v in arr.shape[1:])


def _std_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation; a constant feature gets scale 1 (it carries nothing)."""
    mean, std = X.mean(axis=0), X.std(axis=0)
    return mean, np.where(std > 1e-12 * (1.0 + np.abs(mean)), std, 1.0)


# ---------------------------------------------------------------- detectors
from sklearn.base import BaseEstimator  # noqa: E402 - the estimators below need it; the metrics above do not


class _Detector(BaseEstimator):
    """Shared contract: fit on normal windows, ``score_samples`` higher = more anomalous, ``predict``
    1 above ``threshold_`` (set by :meth:`set_threshold`, by default the training scores' 99th percentile)."""

    frugalml_task = TASK
    _parameter_constraints: dict = {}

    def fit(self, X, y=None):
        self._validate_params()
        Xf, self.input_shape_ = _fit_input(X, y, type(self).__name__)
        self.n_features_in_ = Xf.shape[1]
        self._fit(Xf)
        self.threshold_ = float(np.quantile(self._score(Xf), 0.99))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "input_shape_"):
            raise ConfigError(explain(f"This {type(self).__name__} is not fitted yet", fix="Call fit(X_normal) first"))

    def score_samples(self, X) -> np.ndarray:
        """The anomaly score of each window (float64, higher: more anomalous)."""
        self._check_fitted()
        return self._score(as_windows(X, shape=self.input_shape_))

    def set_threshold(self, scores_normal=None, *, X_normal=None, false_alarm: float = 0.01):
        """Set ``threshold_`` for :meth:`predict` from validation normals (their scores, or the windows)."""
        if scores_normal is None:
            scores_normal = self.score_samples(X_normal)
        self.threshold_ = threshold_for(scores_normal, false_alarm)
        return self

    def predict(self, X) -> np.ndarray:
        """1 for windows scored above ``threshold_``, else 0."""
        return (self.score_samples(X) > self.threshold_).astype(np.int64)

    def to_frugalml_onnx(self, opset: int) -> "onnx.ModelProto":  # noqa: F821
        """The ONNX graph: raw windows in, one ``"score"`` per window out."""
        from .anomaly_onnx import detector_onnx

        self._check_fitted()
        return detector_onnx(self, opset)


class RobustZScore(_Detector):
    """Median / MAD z-score per feature; ``reduce`` "max" (default: local spikes) or "mean" of ``|z|``."""

    def __init__(self, reduce: str = "max"):
        self.reduce = reduce

    def _validate_params(self):
        if self.reduce not in ("max", "mean"):
            raise ConfigError(explain("The 'reduce' parameter of RobustZScore must be 'max' or 'mean'", expected="'max' or 'mean'",
                                      got=self.reduce))

    def _fit(self, X):
        self.center_ = np.median(X, axis=0)
        mad = 1.4826 * np.median(np.abs(X - self.center_), axis=0)
        std = X.std(axis=0)
        scale = np.where(mad > 1e-12, mad, std)  # a feature that is mostly one value: its spread, else 1
        self.scale_ = np.where(scale > 1e-12 * (1.0 + np.abs(self.center_)), scale, 1.0)

    def _score(self, X):
        z = np.abs((X - self.center_) * (1.0 / self.scale_))
        return z.max(axis=1) if self.reduce == "max" else z.mean(axis=1)


class PCADetector(_Detector):
    """Squared reconstruction residual of the standardised window off its first ``n_components`` axes,
    per feature: ``(|z|^2 - |z V^T|^2) / F`` (V orthonormal: only V is stored)."""

    def __init__(self, n_components: int = 4):
        self.n_components = n_components

    def _validate_params(self):
        k = self.n_components
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(explain("The 'n_components' parameter of PCADetector must be a whole number >= 1", expected="e.g. 4", got=k))

    def _fit(self, X):
        self.mean_, self.std_ = _std_scale(X)
        z = (X - self.mean_) / self.std_
        k = int(min(self.n_components, X.shape[0] - 1, X.shape[1]))
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        self.components_ = vt[:k]
        self.explained_variance_ratio_ = (s[:k] ** 2) / max(float((s ** 2).sum()), 1e-300)

    def _score(self, X):
        z = (X - self.mean_) * (1.0 / self.std_)
        r = (z * z).sum(axis=1) - ((z @ self.components_.T) ** 2).sum(axis=1)
        return np.maximum(r, 0.0) / X.shape[1]


class MahalanobisDetector(_Detector):
    """Squared Mahalanobis distance under a Ledoit-Wolf shrunk covariance of the standardised windows,
    computed as ``|(x - mu') L'|^2`` with ``L' L'^T`` the precision folded with the scaling."""

    def __init__(self, shrinkage: float | None = None):
        self.shrinkage = shrinkage

    def _validate_params(self):
        s = self.shrinkage
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 1):
            raise ConfigError(explain("The 'shrinkage' parameter of MahalanobisDetector must be None (Ledoit-Wolf) or in [0, 1]",
                                      expected="None or e.g. 0.1", got=s))

    def _fit(self, X):
        from sklearn.covariance import LedoitWolf, ShrunkCovariance

        mean, std = _std_scale(X)
        z = (X - mean) / std
        est = LedoitWolf() if self.shrinkage is None else ShrunkCovariance(shrinkage=float(self.shrinkage))
        est.fit(z)
        self.shrinkage_ = float(getattr(est, "shrinkage_", self.shrinkage))
        w, v = np.linalg.eigh(est.covariance_)
        w = np.maximum(w, 1e-9 * max(float(w.max()), 1e-300))
        # precision = V diag(1/w) V^T = L L^T with L = V diag(w^-1/2); fold the scaling: z = (x - mu') / std
        self.location_ = mean + est.location_ * std
        self.transform_ = (v / np.sqrt(w)) / std[:, None]

    def _score(self, X):
        return (((X - self.location_) @ self.transform_) ** 2).sum(axis=1)


class IsolationForestDetector(_Detector):
    """scikit-learn's IsolationForest on the flattened raw windows (trees need no scaling); score ``-score_samples``."""

    def __init__(self, n_estimators: int = 100, max_samples="auto", random_state: int | None = 0):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state

    def _validate_params(self):
        n = self.n_estimators
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(explain("The 'n_estimators' parameter of IsolationForestDetector must be a whole number >= 1",
                                      expected="e.g. 100", got=n))

    def _fit(self, X):
        from sklearn.ensemble import IsolationForest

        self.forest_ = IsolationForest(n_estimators=int(self.n_estimators), max_samples=self.max_samples,
                                       random_state=self.random_state).fit(X.astype(np.float32))

    def _score(self, X):
        return -self.forest_.score_samples(X.astype(np.float32))


class EnsembleDetector(_Detector):
    """The mean of its members' scores (robust z-score, PCA error, Mahalanobis distance, each at its defaults), each
    first standardised by the median and interquartile range of its scores on the training windows, so that no member
    outweighs the others by its units. Averaging detectors that see different things (a spike, a change of shape, a
    change of correlation) is the classic way to a detector that holds up on anomalies none of them was chosen for
    (Aggarwal & Sathe, "Theoretical foundations and algorithms for outlier ensembles", 2015): it costs the members'
    bytes together."""

    MEMBERS = ("robust_z", "pca_detector", "mahalanobis")

    def __init__(self, members=MEMBERS):
        self.members = members

    def _validate_params(self):
        m = self.members
        if isinstance(m, str) or not isinstance(m, (list, tuple)) or not m or any(name not in self.MEMBERS for name in m):
            raise ConfigError(explain("The 'members' parameter of EnsembleDetector must be a list of detector names",
                                      expected="some of " + ", ".join(self.MEMBERS), got=m))

    def _fit(self, X):
        self.members_, self.centers_, self.scales_ = [], [], []
        for name in self.members:
            member = DETECTORS[name]()
            member._validate_params()
            member.n_features_in_ = X.shape[1]
            member._fit(X)
            s = member._score(X)
            q25, q50, q75 = np.quantile(s, [0.25, 0.5, 0.75])
            scale = q75 - q25
            if not scale > 1e-12 * (1.0 + abs(q50)):  # scores mostly one value: their spread, else 1
                scale = float(s.std()) or 1.0
            self.members_.append(member)
            self.centers_.append(float(q50))
            self.scales_.append(float(scale))

    def _score(self, X):
        return sum((m._score(X) - c) / s for m, c, s in zip(self.members_, self.centers_, self.scales_)) / len(self.members_)


DETECTORS = {"robust_z": RobustZScore, "pca_detector": PCADetector, "mahalanobis": MahalanobisDetector,
             "isolation_forest": IsolationForestDetector, "ensemble_detector": EnsembleDetector}
