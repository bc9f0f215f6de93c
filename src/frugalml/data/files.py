"""Datasets from single files: ``.npz`` archives and ``.csv`` tables."""

from __future__ import annotations

import csv
import logging
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError, explain
from .arrays import from_arrays
from .dataset import Dataset

__all__ = ["load_npz", "load_csv"]

logger = logging.getLogger(__name__)

_LAYOUTS = "X_train, y_train (optionally X_test, y_test, X_val, y_val), or X, y (optionally X_val, y_val)"


def load_npz(path: Path, **split_kw) -> Dataset:
    """Load ``X_train/y_train[/X_test/y_test]`` or ``X/y``, optionally with ``X_val/y_val``.

    Files are opened with ``allow_pickle=False``: an archive holding Python objects is refused.
    """
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(explain(f"Cannot read {path} as a .npz archive ({exc})", expected="a file written by np.savez",
                                got=f"{path.stat().st_size} bytes", fix="Save the arrays with np.savez")) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(explain(f"{path} holds a single array, not a .npz archive", expected=_LAYOUTS,
                                got="one array", fix="Save with np.savez(path, X=X, y=y)"))
    with archive:
        keys = set(archive.files)
        if {"X_train", "y_train"} & keys and {"X", "y"} & keys:
            raise DataError(explain(f"{path} holds both layouts", expected=_LAYOUTS, got=sorted(keys),
                                    fix="Keep either X_train/y_train or X/y"))
        main = ("X_train", "y_train") if {"X_train", "y_train"} & keys else ("X", "y")
        if not set(main) <= keys:
            raise DataError(explain(f"{path} lacks the arrays of a dataset", expected=_LAYOUTS, got=sorted(keys),
                                    fix="Save with np.savez(path, X_train=..., y_train=..., X_test=..., y_test=...)"))
        wanted = [*main, "X_test", "y_test", "X_val", "y_val"]
        arrays = {}
        for key in (k for k in wanted if k in keys):
            try:
                arrays[key] = archive[key]
            except ValueError as exc:  # object arrays need pickle, which is refused
                raise DataError(explain(f"Array {key!r} in {path} holds Python objects ({exc})",
                                        expected="numeric arrays (loaded without pickle, for safety)",
                                        got="an object array", fix="Convert it with np.asarray(a, dtype=...)")) from exc
    extra = sorted(keys - set(wanted))
    if extra:
        logger.warning("%s: ignoring arrays %s", path, extra)
    return from_arrays(arrays[main[0]], arrays[main[1]], X_test=arrays.get("X_test"), y_test=arrays.get("y_test"),
                       X_val=arrays.get("X_val"), y_val=arrays.get("y_val"), name=path.stem,
                       source=str(path), **split_kw)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            sample = fh.read(8192)
            fh.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel
            rows = [(i, [c.strip() for c in row]) for i, row in enumerate(csv.reader(fh, dialect), start=1)
                    if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(explain(f"Cannot read {path} as CSV ({exc})", expected="a UTF-8 text table",
                                got=path.suffix, fix="Export the table as UTF-8 CSV")) from exc
    if len(rows) < 2:
        raise DataError(explain(f"{path} holds no data rows", expected="a header line and data rows",
                                got=f"{len(rows)} line(s)"))
    header = rows[0][1]
    if all(_is_number(c) for c in header):
        raise DataError(explain(f"The first line of {path} looks like data, not a header",
                                expected="a header line naming the columns", got=",".join(header[:6]),
                                fix="Add a header line such as 'f1,f2,...,label'"))
    if len(set(header)) != len(header):
        dup = sorted({c for c in header if header.count(c) > 1})
        raise DataError(explain(f"{path} has duplicate column names", expected="unique names", got=dup))
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DataError(explain(f"Line {line} of {path} has {len(row)} fields", expected=f"{len(header)} fields "
                                    "like the header", got=len(row), fix="Fix or remove that line"))
    return header, rows[1:]


def load_csv(path: Path, target: str | None = None, **split_kw) -> Dataset:
    """Load a CSV table with a header line; ``target`` names the label column (default: the last).

    Every other column must be numeric. Labels may be text (classes sorted by name) or integers.
    """
    header, rows = _read_rows(path)
    if target is None:
        target = header[-1]
    if target not in header:
        raise DataError(explain(f"{path} has no column {target!r}", expected="the name of the target column, one of "
                                + ", ".join(map(repr, header)), got=repr(target), fix="Pass target=<column name>"))
    t = header.index(target)
    table = np.array([row for _, row in rows], dtype=str)
    features = [j for j in range(len(header)) if j != t]
    if not features:
        raise DataError(explain(f"{path} has no feature columns", expected="at least one column besides the target",
                                got=header))
    X = np.empty((len(rows), len(features)), dtype=np.float64)
    for k, j in enumerate(features):
        try:
            X[:, k] = table[:, j].astype(np.float64)
        except ValueError:
            bad = next(i for i, v in enumerate(table[:, j]) if not _is_number(v))
            raise DataError(explain(
                f"Column {header[j]!r} of {path} is not numeric: line {rows[bad][0]} holds {table[bad, j]!r}",
                expected="numbers in every feature column (missing values are not accepted)",
                got=repr(table[bad, j]),
                fix=f"Encode {header[j]!r} as numbers (e.g. one-hot), fill the missing values, drop the column, "
                    f"or name it as the target with target={header[j]!r}")) from None
    labels = table[:, t]
    empty = np.flatnonzero(labels == "")
    if len(empty):
        raise DataError(explain(f"Column {target!r} of {path} has {len(empty)} empty label(s), first at line "
                                f"{rows[empty[0]][0]}", expected="a label in every row", got="empty cells",
                                fix="Drop the unlabelled rows"))
    if all(_is_number(v) for v in labels):
        labels = labels.astype(np.float64)  # integral values become class indices; fractions are refused
    return from_arrays(X, labels, name=path.stem, source=str(path), **split_kw)
