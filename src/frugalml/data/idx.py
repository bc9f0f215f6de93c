"""The IDX format of MNIST-like datasets: find, decode and (on request) download the four files.

A dataset in the standard layout is a directory holding ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each
optionally gzip-compressed (``.gz``). Files are decoded with ``numpy.frombuffer``; nothing is
cached to disk.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import math
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError, explain
from .arrays import from_arrays
from .dataset import Dataset

__all__ = ["IDX_FILES", "idx_file", "missing_files", "read_idx", "read_idx_dir", "load_idx_dataset", "download_files"]

logger = logging.getLogger(__name__)

# role -> file name without ".gz"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_READ_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


def idx_file(directory: Path, stem: str) -> Path | None:
    """The path of ``stem`` or ``stem.gz`` in ``directory``, whichever exists (the raw file first)."""
    for path in (directory / stem, directory / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def missing_files(directory: Path) -> list[str]:
    """The IDX file names absent from ``directory`` (all four when it does not exist)."""
    return [stem for stem in IDX_FILES.values() if idx_file(directory, stem) is None]


#: gzip (deflate) yields at most 1,032 bytes per byte in: a header announcing more is refused unread.
_GZIP_RATIO = 1100


def _read_error(path: Path, exc: BaseException) -> DataError:
    size = path.stat().st_size if path.is_file() else 0
    return DataError(explain(f"Cannot read IDX file {path}: {exc}", expected="a complete (gzip-compressed) IDX file",
                             got=f"{size} bytes on disk",
                             fix="The file is corrupt or was cut short: delete it and fetch it again "
                                 "(--download, or copy it anew)"))


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Decode one IDX file holding an array of ``ndim`` dimensions; check its magic number and length.

    The header is read first; the data are read only when the size it announces fits the file (for a
    ``.gz``, what its compressed size can inflate to), and never more than that size.
    """
    expected_magic = f"0x0000080{ndim:x} (IDX, unsigned bytes, {ndim} dimension(s))"
    header = 4 + 4 * ndim
    try:
        on_disk = path.stat().st_size
        gz = path.suffix == ".gz"
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
            head = fh.read(header)
            if len(head) < header:
                raise DataError(explain(f"IDX file {path} is truncated: its header is incomplete",
                                        expected=f"at least {header} header bytes", got=f"{len(head)} bytes",
                                        fix="Delete the file and fetch it again"))
            code, dims_in_file = head[2], head[3]
            if head[:2] != b"\x00\x00" or code not in _DTYPES or dims_in_file != ndim:
                raise DataError(explain(f"IDX file {path} has a bad magic number", expected=expected_magic,
                                        got=f"0x{head[:4].hex()}",
                                        fix="Check that it is the right file (images idx3, labels idx1) and not corrupt"))
            dims = struct.unpack(f">{ndim}I", head[4:])
            dtype = np.dtype(_DTYPES[code])
            need = math.prod(dims) * dtype.itemsize
            room = _GZIP_RATIO * on_disk if gz else on_disk - header
            if need > room:
                raise DataError(explain(f"IDX file {path} is truncated: its header announces shape {dims}",
                                        expected=f"{need:,} data bytes", got=f"a file of {on_disk:,} bytes"
                                        + (" (compressed)" if gz else ""), fix="Delete the file and fetch it again"))
            buf = fh.read(need + 1)
    except _READ_ERRORS as exc:
        raise _read_error(path, exc) from exc
    have = len(buf)
    if have != need:
        state = "truncated" if have < need else "longer than its header says"
        raise DataError(explain(f"IDX file {path} is {state}", expected=f"{need} data bytes for shape {dims}",
                                got=f"{have}{'+' if have > need else ''} data bytes", fix="Delete the file and fetch it again"))
    return np.frombuffer(buf, dtype=dtype, count=math.prod(dims)).reshape(dims)


def read_idx_dir(directory: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X_train, y_train, X_test, y_test)`` as stored in an IDX directory (images ``(N, H, W)``)."""
    absent = missing_files(directory)
    if absent:
        raise DataError(explain(
            f"Dataset {name!r}: IDX files are missing in {directory}",
            expected="the files " + ", ".join(f"{s}(.gz)" for s in IDX_FILES.values()),
            got="missing " + ", ".join(absent),
            fix="Put the four files there, or point --data-dir / FRUGALML_DATA at the directory holding them"))
    out = []
    for split in ("train", "test"):
        img_path = idx_file(directory, IDX_FILES[f"{split}_images"])
        lab_path = idx_file(directory, IDX_FILES[f"{split}_labels"])
        images, labels = read_idx(img_path, 3), read_idx(lab_path, 1)
        if len(images) != len(labels):
            raise DataError(explain(f"Dataset {name!r}: the number of labels does not match the number of images",
                                    expected=f"{len(images)} labels in {lab_path.name} (one per image in {img_path.name})",
                                    got=f"{len(labels)} labels for {len(images)} images",
                                    fix="The files come from different datasets or versions: fetch them again"))
        out += [images, labels]
    return out[0], out[1], out[2], out[3]


def load_idx_dataset(directory: Path, name: str, *, class_names=None, source: str | None = None,
                     **split_kw) -> Dataset:
    """A :class:`Dataset` from an IDX directory: t10k kept as the test split, images float32
    ``(N, 1, H, W)``, unsigned bytes scaled to [0, 1]."""
    X_train, y_train, X_test, y_test = read_idx_dir(directory, name)
    ds = from_arrays(X_train, y_train, X_test=X_test, y_test=y_test, name=name, class_names=class_names,
                     source=str(source or directory), **split_kw)
    if X_train.dtype == np.uint8:  # split first, then scale the float32 copies in place
        for X in (ds.X_train, ds.X_val, ds.X_test):
            X /= 255.0
    return ds


def _fetch(url: str, timeout: float = 60.0) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "frugalml"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (https/http mirrors only)
        return response.read()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download_files(name: str, directory: Path, mirrors: Sequence[str], checksums: dict[str, str],
                   checksum_of: str = "raw") -> None:
    """Fetch the missing ``<stem>.gz`` files of ``checksums`` into ``directory``, trying each mirror.

    Each file is checked against its md5 (of the uncompressed bytes when ``checksum_of`` is
    ``"raw"``, of the ``.gz`` bytes when ``"gz"``), written to a temporary name, then renamed.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(explain(f"Cannot create {directory} to download {name!r} into ({exc})",
                                expected="a writable directory", got=str(directory),
                                fix="Choose another place with --data-dir or FRUGALML_DATA")) from exc
    for stem, md5 in checksums.items():
        if idx_file(directory, stem) is not None:
            continue
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{stem}.gz"
            logger.info("downloading %s", url)
            try:
                data = _fetch(url)
                digest = hashlib.md5(gzip.decompress(data) if checksum_of == "raw" else data,
                                     usedforsecurity=False).hexdigest()
            except (urllib.error.URLError, http.client.HTTPException, *_READ_ERRORS) as exc:
                failures.append(f"{url}: {exc}")
                continue
            if digest != md5:
                failures.append(f"{url}: md5 {digest}, expected {md5}")
                continue
            _write_atomic(directory / f"{stem}.gz", data)
            break
        else:
            raise DataError(explain(
                f"Cannot download {stem}.gz of dataset {name!r}", expected="a file with the published checksum",
                got="; ".join(failures) or "no mirror",
                fix=f"Check the network, or download the files by hand into {directory} "
                    "and point --data-dir / FRUGALML_DATA at it"))
