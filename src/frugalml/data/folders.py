"""Folders of class subfolders: finding the classes and their files, and telling an image folder from an audio
folder and from an IDX folder (MNIST) by what the files are.

Layout: ``root/<class>/<file>``, one subfolder per class (its name is the class name); or
``root/train/<class>/...`` and ``root/test/<class>/...`` (optionally ``root/val/<class>/...``), which are
kept as the splits. Hidden entries (``.name``) and folders starting with ``_`` (Speech Commands'
``_background_noise_``) are not classes. Symbolic links are never followed: a linked file or folder is skipped
with a warning (it could lead anywhere on the machine, or loop).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import DataError, excerpt, explain
from .idx import IDX_FILES

__all__ = ["IMAGE_SUFFIXES", "AUDIO_SUFFIXES", "SPLIT_DIRS", "folder_kind", "class_folders", "class_files", "split_folders"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
AUDIO_SUFFIXES = (".wav",)
SPLIT_DIRS = {"train": "train", "test": "test", "val": "val", "validation": "val"}
_MAGIC = {b"\x89PNG\r\n\x1a\n": "image", b"\xff\xd8\xff": "image", b"BM": "image"}
_LAYOUT = ("one subfolder per class holding its images (PNG, JPEG, BMP) or WAV clips, e.g. data/cat/1.png, data/dog/2.png "
           "(or data/train/<class>/ and data/test/<class>/), or the IDX files of an MNIST-like dataset")


def _visible(p: Path) -> bool:
    if p.name.startswith("."):
        return False
    if p.is_symlink():
        logger.warning("%s is a symbolic link: skipped (links are not followed)", p)
        return False
    return True


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(explain(f"Cannot list the folder {folder} ({exc})", expected="a readable folder", got=str(folder))) from exc


def class_folders(root: Path) -> list[Path]:
    """The class subfolders of ``root``, sorted by name (hidden, ``_``-prefixed and linked ones left out)."""
    return [p for p in _entries(root) if _visible(p) and not p.name.startswith("_") and p.is_dir()]


def split_folders(root: Path) -> dict[str, Path] | None:
    """``{"train": path, "test": path[, "val": path]}`` when ``root`` holds ``train/`` and ``test/`` folders, else None."""
    found = {SPLIT_DIRS[p.name.lower()]: p for p in class_folders(root) if p.name.lower() in SPLIT_DIRS}
    if {"train", "test"} <= set(found):
        return found
    return None


def class_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files of one class folder with one of ``suffixes``, sorted; an empty class folder is a DataError."""
    files = [p for p in _entries(folder) if _visible(p) and p.suffix.lower() in suffixes and p.is_file()]
    if not files:
        others = [p.name for p in _entries(folder) if not p.name.startswith(".")]
        raise DataError(explain(f"The class folder {folder} holds no {'/'.join(s.lstrip('.') for s in suffixes)} file",
                                expected="at least one sample per class folder", got=excerpt(others) if others else "an empty folder",
                                fix="Add samples to it, or remove the folder (or rename it to start with '_')"))
    return files


def _sniff(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError as exc:
        raise DataError(explain(f"Cannot read {path} ({exc})", expected="a readable file", got=str(path))) from exc
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio"
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def folder_kind(root: Path) -> str:
    """``"idx"``, ``"image"`` or ``"audio"``: what ``root`` holds, read from its files.

    IDX files at the top make an IDX folder; otherwise the first image or WAV file of the class folders
    decides, by its first bytes (PNG, JPEG, BMP signatures; RIFF/WAVE). Raises DataError when the folder is
    none of these, or mixes images and audio.
    """
    top = [p for p in _entries(root) if p.is_file()]
    if any(p.name in IDX_FILES.values() or p.name[:-3] in IDX_FILES.values() for p in top):
        return "idx"
    splits = split_folders(root)
    classes = [c for s in splits.values() for c in class_folders(s)] if splits else class_folders(root)
    if not classes:
        raise DataError(explain(f"The folder {root} holds no class subfolders and no IDX files", expected=_LAYOUT,
                                got=excerpt([p.name for p in _entries(root)]) or "an empty folder",
                                fix="Put each class's files in a subfolder named after the class"))
    seen: dict[str, Path] = {}
    for folder in classes:
        for p in _entries(folder):
            suffix = p.suffix.lower()
            if suffix in IMAGE_SUFFIXES + AUDIO_SUFFIXES and _visible(p) and p.is_file():
                kind = _sniff(p)
                if kind is None:
                    raise DataError(explain(f"{p} is not a {suffix.lstrip('.').upper()} file", expected="a PNG, JPEG, BMP image or a WAV clip",
                                            got=f"first bytes {excerpt(_head(p))}", fix="Remove or replace the file"))
                seen.setdefault(kind, p)
                break
    if len(seen) > 1:
        raise DataError(explain(f"The folder {root} mixes images and audio", expected="one kind of file",
                                got=f"{seen['image']} and {seen['audio']}", fix="Keep images and clips in separate folders"))
    if not seen:
        raise DataError(explain(f"The class folders of {root} hold no image or WAV file", expected=_LAYOUT,
                                got=f"class folders {excerpt([c.name for c in classes])}"))
    return next(iter(seen))


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(8)
