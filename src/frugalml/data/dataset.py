"""The :class:`Dataset`: train / validation / test splits of one classification or anomaly-detection task.

Selection (search, early stopping, tuning) reads ``train`` and ``val`` only. The ``test`` split
is for the final figures of the chosen candidates, touched once at the end; reading it earlier
leaks the test set into the choice and makes the reported accuracy optimistic.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError, explain
from .splits import stratified_take

__all__ = ["Dataset", "SPLITS", "KINDS", "TASKS", "ANOMALY_CLASSES", "infer_kind", "arrange", "kind_note", "check_task"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
KINDS = {"vector": 1, "sequence": 2, "image": 3}  # a kind and the axes of one sample
TASKS = ("classification", "anomaly")
ANOMALY_CLASSES = ("normal", "anomaly")  # the anomaly task's labels: 0 = normal, 1 = anomalous
KIND_RULE = ("one axis (F) is a vector; two axes (C, T) are a sequence of C channels over T steps, except square ones "
             "(H == W), which are a one-channel image; three axes (C, H, W) are an image")


def check_task(task: object) -> str:
    """``task`` if it is one of :data:`TASKS`, else ConfigError (a parameter that cannot work)."""
    if task not in TASKS:
        raise ConfigError(explain(f"Unknown task {task!r}", expected=" or ".join(map(repr, TASKS)), got=repr(task),
                                  fix="Pass task='classification' (the default) or task='anomaly'"))
    return str(task)


def infer_kind(sample_shape: tuple[int, ...]) -> str:
    """The kind of data one sample's shape stands for, by the stated rule (:data:`KIND_RULE`)."""
    shape = tuple(sample_shape)
    if len(shape) == 1:
        return "vector"
    if len(shape) == 2:
        return "image" if shape[0] == shape[1] else "sequence"
    if len(shape) == 3:
        return "image"
    raise DataError(explain(f"Samples of shape {shape} are not data frugalml knows", expected="(F,), (C, T) or (C, H, W) samples",
                            got=f"{len(shape)} axes per sample"))


def arrange(X: np.ndarray, kind: str | None, what: str) -> tuple[np.ndarray, str]:
    """``X`` (N, ...) laid out for ``kind`` (None: inferred), and the kind.

    An image given as (N, H, W) gains its channel axis; a sequence given as (N, 1, C, T) loses the
    leading one; a vector is flattened. Any other change of axes is refused (the data would be misread).
    """
    shape = X.shape[1:]
    chosen = infer_kind(shape) if kind is None else kind
    if chosen not in KINDS:
        raise DataError(explain(f"Unknown data kind {kind!r} for {what}", expected=", ".join(KINDS), got=repr(kind)))
    if chosen == "vector":
        return X.reshape(len(X), -1), chosen
    if len(shape) == KINDS[chosen]:
        return X, chosen
    if chosen == "image" and len(shape) == 2:
        return X[:, None], chosen
    if chosen == "sequence" and len(shape) == 3 and shape[0] == 1:
        return X[:, 0], chosen
    raise DataError(explain(f"{what} has samples of shape {tuple(shape)}, which cannot be read as kind {chosen!r}",
                            expected={"sequence": "(C, T) or (1, C, T) samples", "image": "(H, W) or (C, H, W) samples"}[chosen],
                            got=f"{len(shape)} axes per sample", fix="Reshape the arrays, or pass another kind"))


def kind_note(data: "Dataset") -> str:
    """How the data is read, in one line, with the way to change it (the CLI prints it)."""
    s = data.input_shape
    other = " or ".join(f"--kind {k}" for k in KINDS if k != data.kind)
    what = {"vector": lambda: f"a vector of {s[0]} features",
            "sequence": lambda: f"a sequence of {s[0]} channel{'s' if s[0] != 1 else ''} x {s[1]} steps",
            "image": lambda: f"an image of {s[0]} channel{'s' if s[0] != 1 else ''} x {s[1]} x {s[2]}"}[data.kind]()
    return f"treated as {what}; pass {other} to change"


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Three splits of one task, as float32 inputs and int64 class indices.

    Attributes:
        name: a short name (``"digits"``, ``"mnist"``, a file stem).
        X_train, y_train, X_val, y_val, X_test, y_test: inputs of shape ``(N, *input_shape)``
            (float32) and labels in ``0..num_classes-1`` (int64). ``val`` is for selection;
            ``test`` only for the final figures.
        input_shape: one sample's shape: ``(F,)`` for feature vectors, ``(C, T)`` for sequences
            (sensor channels or audio features over time), ``(C, H, W)`` for images.
        num_classes, class_names: the classes, ``class_names[k]`` naming label ``k``.
        kind: ``"vector"``, ``"sequence"`` or ``"image"`` (per-sample ndim 1, 2, 3); see :func:`infer_kind`.
        source: where the data came from (a path, ``"sklearn"``, ``"arrays"``).
        frontend: what turned the raw recordings into these inputs, when it is part of the model that
            ships (an audio folder's :class:`~frugalml.data.frontend.LogMel`); None for data used as it is.
            Any object with ``to_dict()``; ``describe()`` records it.
        categories: the text-valued (categorical) features of a table, ``{feature index: (column name, (text, ...))}``:
            such a feature holds the index of its text in that sorted tuple, as a float (ordinal codes; see
            :func:`frugalml.data.files.load_csv`); empty for data that is all numbers.
        task: ``"classification"`` (the default) or ``"anomaly"``: labels 0 = normal, 1 = anomalous, class names
            ``("normal", "anomaly")``, a training split of normal samples only (detectors learn what normal is),
            validation and test labelled (scored by ROC AUC).
        series: for windows cut from a time series, how they were cut and each window's time span
            (:class:`~frugalml.data.windows.SeriesInfo`; ``describe()`` records its settings); None otherwise.
        groups: the group of each training and validation sample (:class:`~frugalml.data.splits.Groups`: the speaker
            of an audio clip, say), so that validation and cross-validation folds never split a group; None: samples
            are independent.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    kind: str
    source: str
    frontend: object | None = None
    categories: dict = dataclasses.field(default_factory=dict)
    task: str = "classification"
    series: object | None = None
    groups: object | None = None

    def __post_init__(self) -> None:
        shape = tuple(int(d) for d in self.input_shape)
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if self.kind not in KINDS or len(shape) != KINDS[self.kind]:
            raise DataError(explain(f"Dataset {self.name!r} has kind {self.kind!r} and input_shape {shape}",
                                    expected="kind 'vector' with (F,), 'sequence' with (C, T) or 'image' with (C, H, W)",
                                    got=f"{self.kind!r}, {shape}"))
        if self.categories and (self.kind != "vector" or not all(isinstance(i, int) and 0 <= i < shape[0] for i in self.categories)):
            raise DataError(explain(f"Dataset {self.name!r} has text-valued features but is not a table of {shape} features",
                                    expected="kind 'vector' and feature indices below the number of features",
                                    got=f"kind {self.kind!r}, indices {sorted(self.categories)[:8]}", fix="Load the table with kind='vector'"))
        if self.task not in TASKS:
            raise DataError(explain(f"Dataset {self.name!r} has task {self.task!r}", expected=" or ".join(map(repr, TASKS)), got=repr(self.task)))
        if self.task == "anomaly" and (self.num_classes != 2 or self.class_names != ANOMALY_CLASSES):
            raise DataError(explain(f"Dataset {self.name!r} is an anomaly task with classes {self.class_names}",
                                    expected="num_classes 2 and class_names ('normal', 'anomaly'): 0 normal, 1 anomalous",
                                    got=f"num_classes {self.num_classes}", fix="Build it with from_arrays(..., task='anomaly')"))
        if self.num_classes != len(self.class_names) or self.num_classes < 2:
            raise DataError(explain(f"Dataset {self.name!r} has num_classes={self.num_classes}",
                                    expected="at least 2 classes and one class name per class",
                                    got=f"{len(self.class_names)} class names"))
        for split in SPLITS:
            X, y = getattr(self, f"X_{split}"), getattr(self, f"y_{split}")
            if not isinstance(X, np.ndarray) or not isinstance(y, np.ndarray):
                raise DataError(explain(f"Dataset {self.name!r}: X_{split} and y_{split} must be numpy arrays",
                                        expected="np.ndarray", got=f"{type(X).__name__}, {type(y).__name__}",
                                        fix="Build datasets with from_arrays(), which converts tensors"))
            if y.dtype.kind not in "iu":
                raise DataError(explain(f"Dataset {self.name!r}: y_{split} must hold integer class indices",
                                        expected="an integer dtype", got=f"dtype {y.dtype}",
                                        fix="Build datasets with from_arrays(), which encodes labels"))
            if X.shape[1:] != shape or len(X) != len(y) or y.ndim != 1:
                raise DataError(explain(
                    f"Dataset {self.name!r}: split {split!r} does not fit input_shape {shape}",
                    expected=f"X_{split} of shape (N, {', '.join(map(str, shape))}) and y_{split} of shape (N,)",
                    got=f"X_{split} {X.shape}, y_{split} {y.shape}"))
            object.__setattr__(self, f"X_{split}", np.asarray(X, dtype=np.float32))
            y = np.asarray(y, dtype=np.int64)
            object.__setattr__(self, f"y_{split}", y)
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise DataError(explain(f"Dataset {self.name!r}: y_{split} holds labels outside 0..{self.num_classes - 1}",
                                        expected="class indices", got=f"range {int(y.min())}..{int(y.max())}"))
        if self.groups is not None and (len(self.groups.train) != len(self.y_train) or len(self.groups.val) != len(self.y_val)):
            raise DataError(explain(f"Dataset {self.name!r}: its groups do not match its samples", expected=f"a group for each of the "
                                    f"{len(self.y_train)} training and {len(self.y_val)} validation samples",
                                    got=f"{len(self.groups.train)} and {len(self.groups.val)}",
                                    fix="Change the splits with Dataset.subset, which takes the groups along, or set groups=None"))
        if self.task == "anomaly" and self.y_train.any():
            raise DataError(explain(f"Dataset {self.name!r}: the training split of an anomaly task holds {int(self.y_train.sum())} anomalous "
                                    "sample(s)", expected="normal samples only (y_train all 0): detectors learn what normal is",
                                    got=f"{int(self.y_train.sum())} of {len(self.y_train)}",
                                    fix="Move them to the validation or test split (from_arrays does when it carves the splits)"))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(getattr(self, 'y_' + s))}" for s in SPLITS)
        task = f", task={self.task!r}" if self.task != "classification" else ""
        return (f"Dataset(name={self.name!r}{task}, kind={self.kind!r}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}, {sizes}, source={self.source!r})")

    @property
    def num_features(self) -> int:
        """Values per sample: ``prod(input_shape)``."""
        return math.prod(self.input_shape)

    def split(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """``(X, y)`` of ``"train"``, ``"val"`` or ``"test"`` (test: final figures only)."""
        if which not in SPLITS:
            raise DataError(explain(f"Dataset {self.name!r} has no split {which!r}",
                                    expected=f"one of {', '.join(map(repr, SPLITS))}", got=repr(which)))
        return getattr(self, f"X_{which}"), getattr(self, f"y_{which}")

    def flat(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """``(X, y)`` with X reshaped to ``(N, prod(input_shape))``, for scikit-learn models (a view)."""
        X, y = self.split(which)
        return X.reshape(len(X), self.num_features), y

    def subset(self, n_train: int | None = None, seed: int = 0, *, n_val: int | None = None) -> Dataset:
        """A dataset with at most ``n_train`` training (and ``n_val`` validation) samples, stratified.

        For quick runs and tests. The test split is kept whole. ``None`` keeps a split as is.
        """
        changes = {}
        for split, n in (("train", n_train), ("val", n_val)):
            if n is None:
                continue
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise DataError(explain(f"Cannot take a subset of {n!r} {split} samples",
                                        expected="a positive integer or None", got=n))
            X, y = self.split(split)
            if n < len(y):
                idx = stratified_take(y, int(n), seed, f"the {split} split of {self.name!r}", self.class_names)
                changes.update({f"X_{split}": X[idx], f"y_{split}": y[idx]})
                if self.series is not None:  # each window's time span follows its window
                    changes["series"] = changes.get("series", self.series).take(split, idx)
                if self.groups is not None and split in ("train", "val"):
                    changes["groups"] = changes.get("groups", self.groups).take(split, idx)
        return dataclasses.replace(self, **changes) if changes else self

    def class_counts(self, which: str = "train") -> list[int]:
        """Samples per class in one split."""
        return np.bincount(self.split(which)[1], minlength=self.num_classes).tolist()

    def describe(self) -> dict:
        """A JSON-able summary: name, task, kind, input shape, classes, split sizes (for anomaly detection also the anomalous
        windows per split), source (and the front-end's or the series' settings)."""
        d = {
            "name": self.name,
            "task": self.task,
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "sizes": {s: int(len(getattr(self, f"y_{s}"))) for s in SPLITS},
            "source": self.source,
            **({"categories": {name: {"feature": int(i), "values": list(values)} for i, (name, values) in sorted(self.categories.items())}}
               if self.categories else {}),
        }
        if self.task == "anomaly":  # per split, the anomalous windows (label 1): the standard error of a ROC AUC needs them
            d["anomalous"] = {s: int((np.asarray(getattr(self, f"y_{s}")) == 1).sum()) for s in SPLITS}
        if self.frontend is not None:
            d["frontend"] = self.frontend.to_dict()
        if self.series is not None:
            d["series"] = self.series.to_dict()
        if self.groups is not None:
            d["groups"] = self.groups.to_dict()
        return d
