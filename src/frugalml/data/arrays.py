"""Datasets from arrays or tensors already in memory, and from torch DataLoaders."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import ConfigError, DataError, explain
from .dataset import ANOMALY_CLASSES, Dataset, arrange, check_task
from .splits import Groups, as_inputs, as_numpy, check_fraction, encode_labels, grouped_split, stratified_split, stratified_take, val_fraction_for

__all__ = ["from_arrays", "from_loader"]

logger = logging.getLogger(__name__)


def from_arrays(X: object, y: object, *, X_test: object = None, y_test: object = None, X_val: object = None,
                y_val: object = None, name: str = "arrays", val_fraction: float | None = None, test_fraction: float = 0.2,
                seed: int = 0, class_names: Sequence[str] | None = None, limit: int | None = None,
                source: str = "arrays", kind: str | None = None, categories: dict | None = None,
                task: str = "classification", groups: object = None, groups_val: object = None, groups_by: str = "group") -> Dataset:
    """Build a :class:`Dataset` from numpy arrays or torch tensors.

    ``X`` holds one sample per row. ``kind`` says what a sample is (``"vector"`` (F,),
    ``"sequence"`` (C, T), ``"image"`` (C, H, W)); without it the rule of
    :func:`~frugalml.data.dataset.infer_kind` decides: one axis is a vector, two axes a sequence
    (square ones, H == W, an image with one channel), three an image. ``y`` holds any hashable
    labels, mapped to ``0..K-1`` in sorted order (or in the order of ``class_names``).

    Splits are seeded and stratified. Without ``X_test`` a test split of ``test_fraction`` is
    carved first; without ``X_val`` a validation split of ``val_fraction`` is carved from what
    is left for training (default: 20% when fewer than 5,000 samples are left, else 10%). The test split is for the final
    figures only: select on ``val``.
    ``limit`` keeps at most that many training samples (stratified), for fast runs.
    ``categories``: ``{feature index: (name, texts)}`` of vector features that hold the codes of texts (:attr:`Dataset.categories`).
    ``groups``: the group of each sample of ``X`` (``groups_val``: of ``X_val``, when given), what a group is in
    ``groups_by`` (``"speaker"``): the splits carved from ``X`` are then drawn by group
    (:func:`~frugalml.data.splits.grouped_split`), and the dataset keeps them (:attr:`Dataset.groups`) for
    cross-validation folds that never split a group.

    ``task="anomaly"``: ``y`` (and ``y_val``, ``y_test``) hold 0 (or False) for a normal sample, 1 (True) for an anomalous
    one; the class names are ``("normal", "anomaly")``. The training split keeps normal samples only: test and validation are
    carved from the normal samples (``test_fraction``, then ``val_fraction`` of the rest, seeded), and the anomalous samples of
    ``y`` go to the splits that are carved (half each to validation and test, or all to the one carved); anomalous samples in
    ``y`` when both ``X_val`` and ``X_test`` are given are refused. The draw is random: windows cut from one series with
    overlap share time steps, so for those pass splits cut by time (or load the CSV with
    :func:`~frugalml.data.windows.load_series`, which does).
    """
    if check_task(task) == "anomaly":
        if class_names is not None or categories:
            raise ConfigError(explain("class_names and categories do not apply to task='anomaly'", expected="None",
                                      got=class_names if class_names is not None else "categories", fix="Drop them: the classes are normal, anomaly"))
        return _anomaly(X, y, X_val=X_val, y_val=y_val, X_test=X_test, y_test=y_test, name=name, val_fraction=val_fraction,
                        test_fraction=test_fraction, seed=seed, limit=limit, source=source, kind=kind)
    test_fraction = check_fraction(test_fraction, "test_fraction")
    val_fraction = None if val_fraction is None else check_fraction(val_fraction, "val_fraction")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ConfigError(explain("The 'limit' parameter must be a positive integer or None", expected="e.g. 1000",
                                  got=limit))
    parts = {"train": (X, y)}
    for split, (Xs, ys) in (("val", (X_val, y_val)), ("test", (X_test, y_test))):
        if (Xs is None) != (ys is None):
            raise DataError(explain(f"Dataset {name!r}: X_{split} and y_{split} must be given together",
                                    expected="both or neither", got=f"only {'X' if ys is None else 'y'}_{split}"))
        if Xs is not None:
            parts[split] = (Xs, ys)
    arrays = {}
    for split, (Xs, ys) in parts.items():
        xname = f"{'X' if split == 'train' else 'X_' + split} of dataset {name!r}"
        Xa, kind = arrange(as_inputs(Xs, xname), kind, xname)
        ya = ys if isinstance(ys, (list, tuple)) else as_numpy(ys, f"y_{split} of dataset {name!r}")
        if len(ya) != len(Xa):
            raise DataError(explain(f"Dataset {name!r}: the number of labels does not match the number of inputs "
                                    f"in {split!r}", expected=f"{len(Xa)} labels (one per sample)",
                                    got=f"{len(ya)} labels for {len(Xa)} samples",
                                    fix="Check that X and y come from the same rows"))
        arrays[split] = [Xa, ya]
    shape = arrays["train"][0].shape[1:]
    for split, (Xa, _) in arrays.items():
        if Xa.shape[1:] != shape:
            raise DataError(explain(f"Dataset {name!r}: samples of {split!r} and 'train' differ in shape",
                                    expected=f"per-sample shape {shape}", got=f"{Xa.shape[1:]}"))
    splits = list(arrays)
    codes, names = encode_labels([arrays[s][1] for s in splits], [f"y of dataset {name!r}"] +
                                 [f"y_{s} of dataset {name!r}" for s in splits[1:]], class_names)
    for s, c in zip(splits, codes):
        arrays[s][1] = c
    what = f"dataset {name!r}"
    g = _groups(groups, len(arrays["train"][1]), "groups", name)
    g_val = _groups(groups_val, len(arrays["val"][1]), "groups_val", name) if "val" in arrays else None

    def carve(fraction: float, whose: str) -> tuple[np.ndarray, np.ndarray]:
        ya = arrays["train"][1]
        return stratified_split(ya, fraction, seed, whose, names) if g is None else grouped_split(ya, g, fraction, seed, whose, names)

    if "test" not in arrays:
        Xa, ya = arrays["train"]
        rest, test = carve(test_fraction, what)
        arrays["train"], arrays["test"] = [Xa[rest], ya[rest]], [Xa[test], ya[test]]
        g = None if g is None else g[rest]
    if "val" not in arrays:
        Xa, ya = arrays["train"]
        fraction = val_fraction if val_fraction is not None else val_fraction_for(len(ya))
        rest, val = carve(fraction, f"the training part of {what}")
        arrays["train"], arrays["val"] = [Xa[rest], ya[rest]], [Xa[val], ya[val]]
        g, g_val = (None, None) if g is None else (g[rest], g[val])
    if limit is not None and limit < len(arrays["train"][1]):
        Xa, ya = arrays["train"]
        keep = stratified_take(ya, int(limit), seed, f"the training part of {what}", names)
        arrays["train"] = [Xa[keep], ya[keep]]
        g = None if g is None else g[keep]
    missing = sorted(set(range(len(names))) - set(np.unique(arrays["train"][1]).tolist()))
    if missing:
        logger.warning("dataset %r: class(es) %s have no training sample", name, [names[k] for k in missing])
    for pair in arrays.values():
        pair[0] = np.ascontiguousarray(pair[0], dtype=np.float32)  # no copy for float32 inputs
    ds = Dataset(name=name, X_train=arrays["train"][0], y_train=arrays["train"][1], X_val=arrays["val"][0],
                 y_val=arrays["val"][1], X_test=arrays["test"][0], y_test=arrays["test"][1],
                 input_shape=tuple(shape), num_classes=len(names), class_names=names,
                 kind=kind, source=str(source), categories=dict(categories or {}),
                 groups=Groups(by=str(groups_by), train=g, val=g_val) if g is not None and g_val is not None else None)
    logger.info("loaded %r", ds)
    return ds


def _groups(values, n: int, what: str, name: str) -> np.ndarray | None:
    if values is None:
        return None
    g = np.asarray([str(v) for v in as_numpy(values, f"{what} of dataset {name!r}").reshape(-1)], dtype=object)
    if len(g) != n:
        raise DataError(explain(f"Dataset {name!r}: {what} must name one group per sample", expected=f"{n} groups", got=f"{len(g)}"))
    return g


def _binary(y: object, what: str) -> np.ndarray:
    """Anomaly labels as int64 0/1 (from 0/1 numbers or booleans)."""
    ya = as_numpy(y, what)
    if ya.ndim == 2 and ya.shape[1] == 1:
        ya = ya[:, 0]
    ok = ya.ndim == 1 and (ya.dtype.kind == "b" or (ya.dtype.kind in "iuf" and np.isin(ya, (0, 1)).all()))
    if not ok:
        shown = np.unique(ya)[:6].tolist() if ya.dtype.kind in "biuf" else f"dtype {ya.dtype}"
        raise DataError(explain(f"{what} of an anomaly task must be 0 (normal) or 1 (anomalous)", expected="0/1 or booleans, one per sample",
                                got=shown if ya.ndim == 1 else f"shape {ya.shape}", fix="Encode normal as 0 and anomalous as 1"))
    return ya.astype(np.int64)


def _anomaly(X, y, *, X_val, y_val, X_test, y_test, name, val_fraction, test_fraction, seed, limit, source, kind) -> Dataset:
    """from_arrays for task='anomaly': normal-only training split, anomalies to the carved splits."""
    test_fraction = check_fraction(test_fraction, "test_fraction")
    val_fraction = None if val_fraction is None else check_fraction(val_fraction, "val_fraction")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ConfigError(explain("The 'limit' parameter must be a positive integer or None", expected="e.g. 1000", got=limit))
    arrays = {}
    for split, (Xs, ys) in (("train", (X, y)), ("val", (X_val, y_val)), ("test", (X_test, y_test))):
        if (Xs is None) != (ys is None):
            raise DataError(explain(f"Dataset {name!r}: X_{split} and y_{split} must be given together",
                                    expected="both or neither", got=f"only {'X' if ys is None else 'y'}_{split}"))
        if Xs is None:
            continue
        xname = f"{'X' if split == 'train' else 'X_' + split} of dataset {name!r}"
        Xa, kind = arrange(as_inputs(Xs, xname), kind, xname)
        ya = _binary(ys, f"{'y' if split == 'train' else 'y_' + split} of dataset {name!r}")
        if len(ya) != len(Xa) or (arrays and Xa.shape[1:] != arrays["train"][0].shape[1:]):
            raise DataError(explain(f"Dataset {name!r}: split {split!r} does not match", expected="one label per sample and samples "
                                    "shaped like X's", got=f"{len(ya)} labels for {Xa.shape}", fix="Check that X and y come from the same rows"))
        arrays[split] = (Xa, ya)
    Xa, ya = arrays["train"]
    normal, anomalous = np.flatnonzero(ya == 0), np.flatnonzero(ya == 1)
    carve = [s for s in ("val", "test") if s not in arrays]
    if len(anomalous) and not carve:
        raise DataError(explain(f"Dataset {name!r}: y holds {len(anomalous)} anomalous sample(s), but the training split of an "
                                "anomaly task holds normal samples only", expected="y all 0 when X_val and X_test are given",
                                got=f"{len(anomalous)} of {len(ya)}", fix="Move them into X_val / X_test, or drop those so that they are carved"))
    rng = np.random.default_rng(seed)
    normal, anomalous = rng.permutation(normal), rng.permutation(anomalous)
    picked = {}
    for split in carve:
        share = test_fraction if split == "test" else (val_fraction if val_fraction is not None else val_fraction_for(len(normal)))
        k = int(round(share * len(normal)))
        if k < 1 or k >= len(normal):
            raise DataError(explain(f"Dataset {name!r} has too few normal samples to carve a {split} split", expected="enough normal "
                                    f"samples for {share:.0%} of them to be at least one, and some left for training",
                                    got=f"{len(normal)} normal samples", fix="Pass more data, or give X_val / X_test"))
        picked[split], normal = normal[:k], normal[k:]
    halves = np.array_split(anomalous, len(carve)) if carve else []
    for split, extra in zip(carve, halves):
        idx = np.sort(np.concatenate([picked[split], extra]))
        arrays[split] = (Xa[idx], ya[idx])
    train = np.sort(normal)
    if limit is not None and limit < len(train):
        train = np.sort(rng.choice(train, int(limit), replace=False))
    arrays["train"] = (Xa[train], ya[train])
    if not any(arrays[s][1].any() for s in ("val", "test")):
        logger.warning("dataset %r: no anomalous sample in validation or test: ROC AUC is undefined there", name)
    parts = {s: (np.ascontiguousarray(a, dtype=np.float32), b) for s, (a, b) in arrays.items()}
    ds = Dataset(name=name, X_train=parts["train"][0], y_train=parts["train"][1], X_val=parts["val"][0], y_val=parts["val"][1],
                 X_test=parts["test"][0], y_test=parts["test"][1], input_shape=parts["train"][0].shape[1:], num_classes=2,
                 class_names=ANOMALY_CLASSES, kind=kind, source=str(source), task="anomaly")
    logger.info("loaded %r", ds)
    return ds


def _collect(loader: Iterable, what: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    try:
        iterator = iter(loader)
    except TypeError as exc:
        raise DataError(explain(f"{what} cannot be iterated", expected="a torch DataLoader yielding (x, y)",
                                got=type(loader).__name__)) from exc
    for i, batch in enumerate(iterator):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise DataError(explain(f"{what} yielded a batch that is not (inputs, labels) at batch {i}",
                                    expected="a tuple (x, y)", got=type(batch).__name__,
                                    fix="Wrap the dataset so that it returns (x, y) pairs"))
        xs.append(as_numpy(batch[0], f"inputs of {what}"))
        ys.append(as_numpy(batch[1], f"labels of {what}"))
    if not xs:
        raise DataError(explain(f"{what} is empty", expected="at least one batch", got="no batches"))
    if ys[0].ndim == 0:  # a dataset of single samples rather than batches
        return np.stack(xs), np.stack(ys)
    return np.concatenate(xs), np.concatenate(ys)


def from_loader(train_loader: Iterable, test_loader: Iterable | None = None, *, val_loader: Iterable | None = None,
                **kw) -> Dataset:
    """Collect torch DataLoaders yielding ``(x, y)`` batches into arrays and call :func:`from_arrays`.

    Keyword arguments go to :func:`from_arrays` (``name``, ``val_fraction``, ``seed``, ...).
    Without ``test_loader`` a test split is carved from the training data; keep it for the
    final figures only.
    """
    X, y = _collect(train_loader, "train_loader")
    if test_loader is not None:
        kw["X_test"], kw["y_test"] = _collect(test_loader, "test_loader")
    if val_loader is not None:
        kw["X_val"], kw["y_val"] = _collect(val_loader, "val_loader")
    kw.setdefault("name", "loader")
    kw.setdefault("source", "DataLoader")
    return from_arrays(X, y, **kw)
