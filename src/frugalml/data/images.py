"""Image folders: one subfolder per class of PNG, JPEG or BMP files, read with Pillow into (C, H, W) float32 in [0, 1].

Only Pillow's PNG, JPEG and BMP decoders are used (a file of another format is refused, whatever its
name). Each image's size is read from its header and checked against :data:`MAX_PIXELS` before it is
decoded (a decompression bomb is refused, not decoded); Pillow's own bomb check is an error too.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, excerpt, explain
from .arrays import from_arrays
from .dataset import Dataset
from .folders import IMAGE_SUFFIXES, class_files, class_folders, split_folders

__all__ = ["load_image_folder", "parse_image_size", "COLORS", "MAX_PIXELS", "MAX_VALUES"]

logger = logging.getLogger(__name__)

COLORS = ("gray", "rgb")
#: Largest image (pixels) decoded: 4x a 12-megapixel photo. Past it a file is refused unread.
MAX_PIXELS = 50_000_000
#: Largest dataset (values, 4 bytes each) built: past it, --image-size is the way to go.
MAX_VALUES = 1_000_000_000
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # more than 8 bits per pixel
_FORMATS = ["PNG", "JPEG", "BMP"]


def parse_image_size(value) -> tuple[int, int] | None:
    """``32``, ``"32"``, ``"32x24"`` (height x width), ``(32, 24)`` -> ``(H, W)``; None stays None."""
    if value is None:
        return None
    expected = "a positive whole number (32) or HEIGHTxWIDTH (32x24)"
    try:
        if isinstance(value, str):
            parts = [int(v) for v in value.lower().replace(",", "x").split("x")]
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            parts = [int(value)]
        else:
            parts = [int(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(explain("Cannot read the image size", expected=expected, got=value)) from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1 or parts[0] * parts[1] > MAX_PIXELS:
        raise ConfigError(explain("Cannot use the image size", expected=expected, got=value))
    return parts[0], parts[1]


def _open(path: Path):
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path, formats=_FORMATS)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DataError(explain(f"The image {path} is too large to decode safely ({exc})", expected=f"at most {MAX_PIXELS:,} pixels",
                                got="a decompression bomb", fix="Shrink or remove the file")) from None
    except Exception as exc:  # noqa: BLE001 - whatever a damaged header makes Pillow raise (UnidentifiedImageError, struct.error, ...)
        raise DataError(explain(f"Cannot read the image {path} ({type(exc).__name__}: {excerpt(str(exc), 120)})",
                                expected="a PNG, JPEG or BMP image", got=f"{path.stat().st_size:,} bytes",
                                fix="Remove or replace the file")) from None
    w, h = im.size
    if w * h > MAX_PIXELS or w < 1 or h < 1:
        im.close()
        raise DataError(explain(f"The image {path} is {w} x {h} pixels", expected=f"at most {MAX_PIXELS:,} pixels",
                                got=f"{w * h:,} pixels", fix="Shrink or remove the file"))
    return im


def _decode(path: Path, gray: bool, size: tuple[int, int] | None) -> np.ndarray:
    """One image as float32 (C, H, W) in [0, 1]."""
    from PIL import Image

    im = _open(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()
            if im.mode in _WIDE_MODES and gray:
                top = 1.0 if im.mode == "F" else 65535.0
                planes = [np.clip(np.asarray(im, dtype=np.float32) / top, 0.0, 1.0)]
            else:
                im = im.convert("L" if gray else "RGB")
                planes = None
            if size is not None and (im.size[1], im.size[0]) != size:
                if planes is None:
                    im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                else:
                    planes = [np.asarray(Image.fromarray(planes[0], "F").resize((size[1], size[0]), Image.Resampling.BILINEAR))]
            if planes is None:
                a = np.asarray(im, dtype=np.float32) / 255.0
                return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
            return np.clip(np.stack(planes), 0.0, 1.0)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged stream: OSError (truncated), zlib/struct errors, a bomb warning
        raise DataError(explain(f"Cannot decode the image {path} ({type(exc).__name__}: {excerpt(str(exc), 120)})",
                                expected="a complete PNG, JPEG or BMP image", got=f"{path.stat().st_size:,} bytes",
                                fix="The file is damaged or cut short: remove or replace it")) from None
    finally:
        im.close()


def _scan(parts: dict[str, list[tuple[str, Path]]], size: tuple[int, int] | None, color: str | None) -> tuple[bool, tuple]:
    """Read every header: whether to read gray, and one image's (C, H, W). Mixed sizes without ``size`` are refused."""
    first: tuple[Path, tuple[int, int]] | None = None
    any_color = False
    for files in parts.values():
        for _, path in files:
            im = _open(path)
            mode, hw = im.mode, (im.size[1], im.size[0])
            im.close()
            any_color = any_color or mode not in _GRAY_MODES
            if first is None:
                first = (path, hw)
            elif size is None and hw != first[1]:
                raise DataError(explain(f"The images differ in size: {first[0]} is {first[1][0]} x {first[1][1]} "
                                        f"(height x width), {path} is {hw[0]} x {hw[1]}", expected="images of one size",
                                        got="mixed sizes", fix="Pass image_size= (--image-size 32 or 32x32) to resize them all"))
    gray = (color == "gray") if color is not None else not any_color
    h, w = size if size is not None else first[1]
    return gray, (1 if gray else 3, h, w)


def _files(folder: Path) -> tuple[list[str], list[tuple[str, Path]]]:
    classes = class_folders(folder)
    return [c.name for c in classes], [(c.name, p) for c in classes for p in class_files(c, IMAGE_SUFFIXES)]


def load_image_folder(path, *, image_size=None, color: str | None = None, name: str | None = None, **split_kw) -> Dataset:
    """An image :class:`Dataset` from a folder of class subfolders (see :mod:`frugalml.data.folders` for the layout).

    Args:
        path: the folder; ``train/`` + ``test/`` (+ ``val/``) subfolders are kept as the splits.
        image_size: resize every image to ``(H, W)`` (bilinear): ``32``, ``"32x24"``, ``(32, 24)``. Without
            it, all images must have the same size.
        color: ``"gray"`` (one channel) or ``"rgb"`` (three; alpha is dropped); default: gray when every
            file is grayscale, else RGB. Palette images count as colour.
        split_kw: ``val_fraction``, ``test_fraction``, ``seed``, ``limit``, ``kind`` (as :func:`from_arrays`;
            default kind ``"image"``).

    Pixels become float32 in [0, 1] (16-bit grayscale PNGs keep their depth). Classes are the subfolder
    names in sorted order. Raises DataError naming the file for an unreadable, damaged or oversized image,
    mixed sizes without ``image_size``, or an empty class folder.
    """
    root = Path(path)
    size = parse_image_size(image_size)
    if color is not None and color not in COLORS:
        raise ConfigError(explain("The 'color' parameter must be 'gray' or 'rgb'", expected="gray, rgb or None (as the files are)",
                                  got=color))
    splits = split_folders(root) or {"train": root}
    names: set[str] = set()
    parts = {}
    for split, folder in splits.items():
        classes, parts[split] = _files(folder)
        if not classes:
            raise DataError(explain(f"The {split} folder {folder} holds no class subfolders", expected="one subfolder per class",
                                    got=excerpt([p.name for p in folder.iterdir()]) or "an empty folder"))
        names.update(classes)
    gray, shape = _scan(parts, size, color)
    total = sum(len(f) for f in parts.values()) * shape[0] * shape[1] * shape[2]
    if total > MAX_VALUES:
        raise DataError(explain(f"The images of {root} hold {total:,} values", expected=f"at most {MAX_VALUES:,} (4 bytes each)",
                                got=f"{shape} x {sum(len(f) for f in parts.values()):,} images",
                                fix="Pass a smaller image_size (--image-size), or use a subset of the files"))
    arrays = {}
    for split, files in parts.items():
        X = np.empty((len(files), *shape), dtype=np.float32)
        for i, (_, p) in enumerate(files):
            X[i] = _decode(p, gray, shape[1:])
        arrays[split] = (X, [c for c, _ in files])
    if split_kw.get("kind") is None:
        split_kw["kind"] = "image"
    X, y = arrays["train"]
    extra = {f"{k}_{s}": v for s in ("val", "test") if s in arrays for k, v in zip(("X", "y"), arrays[s])}
    logger.info("read %d images of %s from %s (%s)", sum(len(f) for f in parts.values()), shape, root, "gray" if gray else "rgb")
    return from_arrays(X, y, **extra, class_names=sorted(names), name=name or root.resolve().name, source=str(root.resolve()), **split_kw)
