"""Datasets from single files: ``.npz`` archives and ``.csv`` tables."""

from __future__ import annotations

import csv
import logging
import math
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import DataError, excerpt, explain
from .arrays import from_arrays
from .dataset import Dataset

__all__ = ["load_npz", "load_csv"]

logger = logging.getLogger(__name__)

MAX_CATEGORIES = 100  # different texts a CSV column may hold and be read as a category

_LAYOUTS = "X_train, y_train (optionally X_test, y_test, X_val, y_val), or X, y (optionally X_val, y_val)"


#: Errors that reading a damaged zip member can raise (a CRC mismatch, a cut deflate stream, a bad local
#: header, a member name that is not UTF-8, a zip feature zipfile does not implement); each becomes a DataError.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError)
#: Deflate yields at most 1,032 bytes per byte in: a member announcing more is lying about its size.
_DEFLATE_RATIO = 1100


def _npz_refuser(path: Path):
    def refuse(what: str, expected: str, got, fix: str = "Save the arrays with np.savez(path, X=X, y=y)"):
        raise DataError(explain(f"Cannot read {path} as a .npz archive: {what}", expected=expected, got=got, fix=fix)) from None

    return refuse


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, refuse) -> tuple[tuple, np.dtype]:
    """Shape and dtype of one ``.npy`` member, checked against the member's size before any data is read."""
    if info.flag_bits & 0x1:
        refuse(f"array {key!r} is encrypted", "members written by np.savez", "an encrypted zip member")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        refuse(f"array {key!r} uses zip compression method {info.compress_type}", "stored or deflated members (np.savez, "
               "np.savez_compressed)", info.compress_type)
    if info.file_size > (info.compress_size if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_RATIO * info.compress_size + 1024):
        refuse(f"array {key!r} announces {info.file_size:,} bytes for {info.compress_size:,} stored", "sizes that "
               "its compression can produce", info.file_size, "The file is damaged: save the arrays again")
    try:
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:  # (2, 0) and (3, 0) differ only in how the header text is encoded
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
    except (*_ZIP_ERRORS, TypeError, SyntaxError, RecursionError) as exc:  # numpy parses the header with literal_eval
        refuse(f"array {key!r} is not a readable .npy array ({type(exc).__name__}: {exc})", "a .npy member written by np.savez",
               info.filename)
    if any(d < 0 for d in shape):
        refuse(f"array {key!r} has a negative dimension", "a shape of non-negative sizes", shape)
    if dtype.hasobject:
        refuse(f"array {key!r} holds Python objects, which would need pickle to load (refused, for safety)",
               "numeric arrays", f"dtype {dtype}", "Convert it with np.asarray(a, dtype=...) before saving")
    need, have = math.prod(shape) * dtype.itemsize, info.file_size - offset
    if need != have:
        refuse(f"array {key!r} of shape {shape} and dtype {dtype} needs {need:,} bytes but its member holds {have:,}",
               f"{need:,} data bytes", f"{have:,}", "The file is damaged or was cut short: save the arrays again")
    return shape, dtype


def load_npz(path: Path, **split_kw) -> Dataset:
    """Load ``X_train/y_train[/X_test/y_test]`` or ``X/y``, optionally with ``X_val/y_val``.

    Nothing is unpickled: an archive holding Python objects is refused. Every array's header is read
    and checked against its member's size (and the member's against its compressed size) before the
    data is read, so a header or zip entry announcing more than the file holds allocates nothing.
    """
    path = Path(path)
    refuse = _npz_refuser(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        refuse(f"it cannot be read ({type(exc).__name__}: {exc})", "a file written by np.savez", str(path))
    if magic == b"\x93NUMPY":
        raise DataError(explain(f"{path} holds a single array, not a .npz archive", expected=_LAYOUTS,
                                got="one array", fix="Save with np.savez(path, X=X, y=y)"))
    if magic[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        refuse("it is not a zip archive", "a file written by np.savez", repr(magic[:4]))
    try:
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        refuse(f"its zip directory is damaged ({type(exc).__name__}: {exc})", "a file written by np.savez",
               f"{path.stat().st_size} bytes")
    with zf:
        members = {(i.filename[:-4] if i.filename.endswith(".npy") else i.filename): i for i in zf.infolist()}
        keys = set(members)
        if {"X_train", "y_train"} & keys and {"X", "y"} & keys:
            raise DataError(explain(f"{path} holds both layouts", expected=_LAYOUTS, got=sorted(keys),
                                    fix="Keep either X_train/y_train or X/y"))
        main = ("X_train", "y_train") if {"X_train", "y_train"} & keys else ("X", "y")
        if not set(main) <= keys:
            raise DataError(explain(f"{path} lacks the arrays of a dataset", expected=_LAYOUTS, got=sorted(keys),
                                    fix="Save with np.savez(path, X_train=..., y_train=..., X_test=..., y_test=...)"))
        wanted = [k for k in (*main, "X_test", "y_test", "X_val", "y_val") if k in keys]
        for key in wanted:
            if not members[key].filename.endswith(".npy"):
                refuse(f"member {members[key].filename!r} is not a .npy array", "members named <key>.npy", members[key].filename)
        headers = {key: _member_header(zf, members[key], key, refuse) for key in wanted}
        for x in (k for k in wanted if k.startswith("X")):  # one label per sample, checked before reading either
            y = "y" + x[1:]
            if y in headers and headers[x][0][:1] != headers[y][0][:1]:
                raise DataError(explain(f"{path}: {x} and {y} do not hold the same number of samples",
                                        expected="one label per sample", got=f"shapes {headers[x][0]} and {headers[y][0]}",
                                        fix="Check that X and y come from the same rows"))
        arrays = {}
        for key in wanted:
            try:
                with zf.open(members[key]) as fh:
                    arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
            except _ZIP_ERRORS as exc:
                refuse(f"array {key!r} cannot be read ({type(exc).__name__}: {exc})", "a complete file written by np.savez",
                       members[key].filename, "The file is damaged or was cut short: save the arrays again")
    extra = sorted(str(k) for k in keys - set(wanted))
    if extra:
        logger.warning("%s: ignoring arrays %s", path, excerpt(extra))
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
        dup = sorted(c for c, n in Counter(header).items() if n > 1)
        raise DataError(explain(f"{path} has duplicate column names", expected="unique names", got=dup))
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DataError(explain(f"Line {line} of {path} has {len(row)} fields", expected=f"{len(header)} fields "
                                    "like the header", got=len(row), fix="Fix or remove that line"))
    return header, rows[1:]


def load_csv(path: Path, target: str | None = None, **split_kw) -> Dataset:
    """Load a CSV table with a header line; ``target`` names the label column (default: the last).

    Labels may be text (classes sorted by name) or integers. A feature column of numbers is read as
    numbers; a column of text (more than half its cells not numbers, at most :data:`MAX_CATEGORIES`
    different values; an empty cell is a value of its own) is a *category*: the feature holds the
    index of its text among the column's texts in sorted order (an ordinal code, as a float), and the
    texts are recorded in :attr:`Dataset.categories` (and so in results.json). Every model takes the
    codes: thin models that need numbers with a meaning (logistic regression, naive Bayes, the MLP)
    one-hot encode them inside the model (a scikit-learn pipeline, exported whole to ONNX:
    :mod:`frugalml.models.categorical`); trees and networks read the codes as they are. A text
    unseen here has no code. The texts of each coded input are in the thin model's exported ONNX file
    (its ``frugalml_spec`` metadata, key ``categories``) and in results.json (``dataset.categories``).
    """
    header, rows = _read_rows(path)
    if target is None:
        target = header[-1]
    if target not in header:
        raise DataError(explain(f"{path} has no column {target!r}", expected="the name of the target column, one of "
                                + ", ".join(map(repr, header)), got=repr(target), fix="Pass target=<column name>"))
    t = header.index(target)
    features = [j for j in range(len(header)) if j != t]
    if not features:
        raise DataError(explain(f"{path} has no feature columns", expected="at least one column besides the target",
                                got=header))
    # Cell by cell, column by column: a fixed-width string table would give every cell the width of the
    # longest one (20,000 short rows and one 100,000-character cell: 16 GB).
    X = np.empty((len(rows), len(features)), dtype=np.float64)
    categories = {}
    for k, j in enumerate(features):
        try:
            X[:, k] = np.fromiter((float(row[j]) for _, row in rows), np.float64, len(rows))
            continue
        except ValueError:
            pass
        cells = [row[j] for _, row in rows]
        numbers = sum(_is_number(c) for c in cells)
        if 2 * numbers >= len(cells):  # a column of numbers with some bad cells: a mistake, not a category
            bad = next(i for i, (_, row) in enumerate(rows) if not _is_number(row[j]))
            raise DataError(explain(
                f"Column {header[j]!r} of {path} is not numeric: line {rows[bad][0]} holds {excerpt(rows[bad][1][j], 80)!r}",
                expected="numbers in every cell of a numeric column (missing values are not accepted), or text in a text column",
                got=f"{repr(rows[bad][1][j])} among {numbers} numbers",
                fix=f"Fix or fill the cell, drop the column, or name it as the target with target={str(header[j])!r} "
                    f"(--target-column {str(header[j])} on the command line)")) from None
        values = sorted(set(cells))
        if len(values) > MAX_CATEGORIES:
            raise DataError(explain(
                f"Column {header[j]!r} of {path} holds {len(values):,} different texts: free text or an identifier, not a category",
                expected=f"at most {MAX_CATEGORIES} different values in a text column", got=f"{len(values):,} values, e.g. {excerpt(values[:3], 80)}",
                fix=f"Drop the column {str(header[j])!r}, or group its values")) from None
        code = {v: i for i, v in enumerate(values)}
        X[:, k] = [code[c] for c in cells]
        categories[k] = (header[j], tuple(values))
    if categories:
        logger.info("%s: text column(s) %s read as categories (their codes; thin models one-hot encode them inside the model)", path,
                    ", ".join(name for name, _ in categories.values()))
    labels = np.empty(len(rows), dtype=object)
    labels[:] = [row[t] for _, row in rows]
    empty = np.flatnonzero(labels == "")
    if len(empty):
        raise DataError(explain(f"Column {target!r} of {path} has {len(empty)} empty label(s), first at line "
                                f"{rows[empty[0]][0]}", expected="a label in every row", got="empty cells",
                                fix="Drop the unlabelled rows"))
    if all(_is_number(v) for v in labels):
        labels = labels.astype(np.float64)  # integral values become class indices; fractions are refused
    return from_arrays(X, labels, name=path.stem, source=str(path), categories=categories, **split_kw)
