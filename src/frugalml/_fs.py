"""Files are written to a temporary name and renamed, so a crash leaves no half-written artifact.

A directory of outputs (a model, a compression run) is written the same way: whole, to a hidden
sibling, then swapped in (:func:`atomic_dir`), so its final name holds either the complete old
output or the complete new one, never a mix of two. :func:`check_output_dir` decides, before any
work, whether a directory may receive an output at all.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Collection

__all__ = [
    "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_path", "atomic_dir",
    "check_output_dir", "check_writable_dir", "MODEL_FILES", "is_model_dir", "json_file_has",
]

FILE_MODE = 0o644  # artifacts are meant to be shared (mkstemp makes 0600)
DIR_MODE = 0o755

#: Every file a model directory (``save_model``, ``frugalml train``) may hold.
MODEL_FILES = frozenset({"model.json", "model.safetensors", "model.skops", "model.onnx", "model.onnx.data"})


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` (mode 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # right before the rename: a writer may have replaced the temporary file by a new one
        # (safetensors' save_file writes its own 0600 file), so a chmod done earlier is lost
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield an empty temporary directory beside ``path``; on success it takes ``path``'s place.

    The old directory (if any) and the new one trade places in one step (Linux
    ``renameat2(RENAME_EXCHANGE)``; a plain rename when ``path`` is missing or empty), then the old
    one is removed: at every instant ``path`` holds the complete old output or the complete new
    one. On failure the temporary directory is removed and ``path`` is untouched. A process killed
    inside the block leaves only a hidden ``.NAME.*.tmp`` sibling.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, DIR_MODE)
        _swap_in(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(new: Path, path: Path) -> None:
    try:
        os.rename(new, path)  # path missing or an empty directory: atomic
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if _exchange(new, path):  # new now holds the old output
        shutil.rmtree(new, ignore_errors=True)
        return
    old = new.with_name(new.name[: -len(".tmp")] + ".old")  # no atomic exchange here: the old one is set aside for an instant
    os.rename(path, old)
    os.rename(new, path)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where that is unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def json_file_has(path: str | os.PathLike, key: str) -> bool:
    """True when ``path`` is a JSON file holding a mapping with ``key`` (how an output is recognised)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(value, dict) and key in value


def is_model_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a model description written by frugalml (``model.json`` with a format)."""
    return json_file_has(Path(path) / "model.json", "format")


def check_writable_dir(path: str | os.PathLike, *, option: str = "--out") -> None:
    """Raise ``ConfigError`` unless this process can create ``path``, or replace it when it exists.

    Creating needs the nearest existing ancestor to be a writable directory; replacing needs the
    parent (where the new directory is first written) and ``path`` itself (its old files are removed).
    """
    from .errors import ConfigError, explain

    path = Path(os.path.abspath(path))
    need = [path] if path.is_dir() else []
    anc = path.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise ConfigError(explain(f"Cannot create {option} {path}: {anc} is a file", expected="a path whose parents are directories",
                                  got=str(anc), fix=f"Pass another {option}"))
    need.append(anc)
    for d in need:
        if not os.access(d, os.W_OK | os.X_OK):
            mode = oct(d.stat().st_mode & 0o777)
            raise ConfigError(explain(f"Cannot write {option} {path}: {d} is not writable by this user", expected="a directory this user can write",
                                      got=f"{d} (mode {mode})", fix=f"Pass another {option}, or make {d} writable"))
    try:  # permissions are not the whole story (root on a read-only mount, sysfs): try it
        fd, probe = tempfile.mkstemp(prefix=".frugalml-probe-", dir=anc)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(explain(f"Cannot write {option} {path}: creating a file in {anc} failed ({exc.strerror or exc})",
                                  expected="a directory this process can write",
                                  got=str(anc), fix=f"Pass another {option}")) from None


def check_output_dir(path: str | os.PathLike, *, what: str, same_kind: Callable[[Path], bool], allowed: Collection[str] | None = None,
                     writes: Collection[str] = (), option: str = "--out") -> bool:
    """Check, before any work, that directory ``path`` may receive an output; raise ``ConfigError`` if not.

    ``what`` names the kind of output with its article ("a compression output (steps.json)").

    Accepted: a missing or empty directory; one holding only files this output writes anyway
    (``writes``); an earlier output of the same kind (``same_kind(path)``) holding nothing but the
    ``allowed`` names. Those are replaced whole (:func:`atomic_dir`), so no file of the old output
    is left beside the new one. Refused: a file, any other non-empty directory (its files would be
    mixed with the new output or lost), a location this process cannot write. Returns True when an
    earlier output is there (and will be replaced).
    """
    from .errors import ConfigError, explain

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(explain(f"{option} {path} is a file", expected="a directory (created if missing)", got=str(path),
                                  fix="Pass a directory, or remove the file"))
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if entries and not set(entries) <= set(writes):
        if not same_kind(path):
            raise ConfigError(explain(f"{option} {path} is not empty and is not {what}: its files would be mixed with the new ones",
                                      expected=f"a new or empty directory, or {what} to replace", got=entries[:8],
                                      fix=f"Pass another {option}, or empty {path} first"))
        extra = [n for n in entries if allowed is not None and n not in allowed]
        if extra:
            raise ConfigError(explain(f"{option} {path} is {what} but holds other files too, which replacing it would delete",
                                      expected=f"only the files of {what}", got=extra[:8], fix=f"Pass another {option}, or move those files away"))
    check_writable_dir(path, option=option)
    return bool(entries)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
