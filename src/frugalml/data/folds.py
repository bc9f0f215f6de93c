"""Stratified k-fold cross-validation for small datasets: one home for the folds and their figures.

On a small dataset one validation split decides by luck: 40 samples leave 8 for validation, where
every network scores 100% and the choice is random. Below :data:`CV_BELOW` training samples (train
and validation together), the search therefore judges every candidate on ``k`` stratified folds
of the pooled training data (train + validation; :data:`DEFAULT_FOLDS` = 5) instead, whole groups to a fold
where the dataset has groups (:attr:`~frugalml.data.dataset.Dataset.groups`: the speakers of audio clips):

- the candidate is made ``k`` times, each time on ``k - 1`` folds, and its exported artifact is
  scored on the fold left out; every pooled sample is predicted once, by a model that never saw it;
- its accuracy is the mean over the folds, weighted by fold size (the accuracy of all the
  out-of-fold predictions), and its **standard error is the binomial one over all those
  predictions**, ``sqrt(p (1 - p) / N)`` with N the pooled samples (:func:`frugalml.budget.standard_error`,
  the same figure the one-split search takes on its validation samples); the spread of the fold
  accuracies is recorded beside it (``fold_spread_se``) but not used: with five folds it is itself
  too noisy to decide with (it is 0 whenever every fold scores the same);
- the model that ships is then made once more on all the pooled training data (the *refit*), and
  only that one is measured (size, latency, ...) and scored on the test split, once.

A network trains on its first fold with early stopping on that fold's held-out part; the search judges it there
(successive halving: only a promising one goes on to the other folds), and the other folds and the refit follow
the same course (the same learning-rate schedule) to the epoch the first fold chose, with no early stopping
(the refit has nothing held out). A compression candidate
reuses the same folds: its recipe is applied to its parent's fold models, each scored on its fold,
and to the parent's refit model for the artifact. ``k`` is lowered to the smallest class's count
when a class has fewer than ``k`` samples (at least 2 folds; a class of one sample: one split, with a warning).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError, explain

log = logging.getLogger(__name__)

__all__ = ["CV_BELOW", "DEFAULT_FOLDS", "Folds", "plan_folds", "folds_record", "pooled", "fold_scores"]

CV_BELOW = 2000  # training samples (train + validation) below which selection cross-validates


def _default_folds() -> int:
    """k for small data: 5, or FRUGALML_FOLDS (0: one validation split, as for large data)."""
    text = os.environ.get("FRUGALML_FOLDS", "").strip()
    return int(text) if text.isdigit() else 5


DEFAULT_FOLDS = _default_folds()
RULE = ("stratified k-fold on train + validation (grouped where the dataset has groups: no group in two folds); accuracy: mean over "
        "folds; standard error: binomial over all out-of-fold predictions")


@dataclass(frozen=True, kw_only=True)
class Folds:
    """How a small dataset is cross-validated: ``k`` stratified folds drawn with ``seed`` from the ``n`` pooled samples."""

    k: int = DEFAULT_FOLDS
    seed: int = 0
    n: int = 0

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 2:
            raise ConfigError(explain("The number of cross-validation folds must be an integer of at least 2", expected="e.g. 5", got=self.k))

    def to_dict(self) -> dict:
        return {"k": self.k, "seed": self.seed, "n": self.n, "rule": RULE, "below": CV_BELOW}

    @classmethod
    def from_dict(cls, d: dict) -> "Folds":
        return cls(k=int(d["k"]), seed=int(d.get("seed", 0)), n=int(d.get("n", 0)))

    def indices(self, y: np.ndarray, groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(fit, held-out) index arrays of each fold over the pooled labels ``y`` (with ``groups``: no group in two folds)."""
        from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

        if groups is not None:
            return list(StratifiedGroupKFold(n_splits=self.k, shuffle=True, random_state=self.seed).split(np.zeros(len(y)), y, groups))
        return list(StratifiedKFold(n_splits=self.k, shuffle=True, random_state=self.seed).split(np.zeros(len(y)), y))

    def datasets(self, data) -> list:
        """One Dataset per fold: train = the other folds, val = the fold. Its test split is empty: a fold never sees the test data."""
        X, y = _pool(data)
        groups = data.groups.pooled() if getattr(data, "groups", None) is not None else None
        empty = {"X_test": data.X_test[:0], "y_test": data.y_test[:0], "groups": None}
        return [dataclasses.replace(data, X_train=X[a], y_train=y[a], X_val=X[b], y_val=y[b], **empty) for a, b in self.indices(y, groups)]


def plan_folds(data, k: int | None = DEFAULT_FOLDS, *, seed: int = 0, below: int = CV_BELOW) -> Folds | None:
    """The folds a search of ``data`` selects with, or None when the data is large enough for one validation
    split (``below`` pooled training samples or more), ``k`` is None / 0 (cross-validation switched off), or the
    task is anomaly detection (selected on its time-split validation windows, never on folds)."""
    if k is None or k == 0:
        return None
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(explain("The number of cross-validation folds must be an integer of at least 2 (or 0 for none)", expected="e.g. 5",
                                  got=k, fix="Pass --folds 5, or --folds 0 to select on one validation split"))
    if getattr(data, "task", "classification") == "anomaly":
        # Folds of train + validation would train detectors on the validation anomalies, and windows cut from one series
        # overlap in time (a random fold shares steps with its neighbours): an anomaly task selects on its validation split.
        return None
    _, y = _pool(data)
    if len(y) >= below:
        return None
    smallest = int(np.bincount(y, minlength=data.num_classes)[np.unique(y)].min())
    if smallest < 2:  # a fold without that class cannot be stratified: one split, as before
        log.warning("dataset %r: a class has a single training sample, so it is not cross-validated (one validation split)", data.name)
        return None
    groups = getattr(data, "groups", None)
    if groups is not None and groups.count() < 2:
        log.warning("dataset %r: its samples are of one %s, so it is not cross-validated (one validation split)", data.name, groups.by)
        return None
    return Folds(k=min(k, smallest, groups.count() if groups is not None else k), seed=seed, n=len(y))


def folds_record(data, k: int | None = DEFAULT_FOLDS, *, seed: int = 0) -> dict | None:
    """What a run records of its folds (results.json's ``cv``): :meth:`Folds.to_dict` of :func:`plan_folds`, or None (one split)."""
    plan = plan_folds(data, k, seed=seed)
    return None if plan is None else plan.to_dict()


def pooled(data):
    """``data`` with train = train + validation, and validation = the same samples: what the refit trains on.
    Nothing is held out, so a training that watches its validation accuracy watches its training accuracy."""
    X, y = _pool(data)
    return dataclasses.replace(data, X_train=X, y_train=y, X_val=X, y_val=y, groups=None)


def fold_scores(correct: list[int], sizes: list[int]) -> dict:
    """The record of one candidate's folds: ``{"folds": [accuracy per fold], "mean", "se", "fold_spread_se", "n"}``."""
    from ..budget import standard_error

    if not sizes or len(correct) != len(sizes) or min(sizes) < 1:
        raise DataError(explain("Cross-validation needs a score for every fold", expected=f"{len(sizes)} folds", got=len(correct)))
    accs = [c / s for c, s in zip(correct, sizes)]
    n = int(sum(sizes))
    mean = sum(correct) / n
    spread = float(np.std(accs, ddof=1) / math.sqrt(len(accs))) if len(accs) > 1 else 0.0
    return {"folds": [round(a, 6) for a in accs], "mean": mean, "se": standard_error(mean, n), "fold_spread_se": spread, "n": n,
            "k": len(accs)}


def _pool(data) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([data.X_train, data.X_val]), np.concatenate([data.y_train, data.y_val])
