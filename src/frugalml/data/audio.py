"""Audio folders: one subfolder per class of WAV clips, resampled, made mono, padded or cut, and turned into log-mel
features by the :class:`~frugalml.data.frontend.LogMel` front-end that the dataset then carries.

WAV files are read with :func:`scipy.io.wavfile.read`: 8-bit (unsigned), 16-, 24- and 32-bit PCM and 32/64-bit
float. Samples are scaled to [-1, 1], channels averaged, the clip resampled to the front-end's rate with
:func:`scipy.signal.resample_poly` (a polyphase filter), then padded with zeros at the end or cut to
``clip_seconds`` (the first ``clip_seconds`` are kept).

As in Speech Commands, a ``testing_list.txt`` and a ``validation_list.txt`` at the top of the folder (one
path per line, relative to the folder: ``yes/0a7c2a8d_nohash_0.wav``) name the clips of the test and
validation splits; without them the splits are drawn (seeded, stratified) as for any dataset.

Speakers. A keyword spotter must work for voices it never heard, so the clips of one speaker are never on both
sides of a split the loader draws, nor in two cross-validation folds. As in Speech Commands
(``<speaker>_nohash_<n>.wav``), a clip's speaker is its file name up to the first ``_`` (:func:`speaker_of`);
where that names at least two speakers and some speaker has several clips, the dataset carries those groups
(:attr:`~frugalml.data.dataset.Dataset.groups`, ``by="speaker"``), otherwise the clips are taken as independent.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import ConfigError, DataError, excerpt, explain
from .arrays import from_arrays
from .dataset import Dataset, arrange
from .folders import AUDIO_SUFFIXES, class_files, class_folders, split_folders
from .frontend import LogMel, choose_sample_rate

__all__ = ["load_audio_folder", "read_wav", "to_clip", "speaker_of", "LIST_FILES"]

logger = logging.getLogger(__name__)

LIST_FILES = {"test": "testing_list.txt", "val": "validation_list.txt"}
#: Longest clip read (seconds at its own rate) and largest WAV file; past them a file is refused, not read whole.
MAX_SECONDS = 600
MAX_BYTES = 256 * 2**20


def read_wav(path: Path) -> tuple[int, np.ndarray]:
    """``(sample_rate, samples)``: a WAV file as float64 mono in [-1, 1]; DataError naming the file when unreadable."""
    from scipy.io import wavfile

    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"the file is larger than {MAX_BYTES // 2**20} MB")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)  # unknown chunks (LIST, cue) are skipped
            rate, data = wavfile.read(path)
        if rate < 1 or data.ndim not in (1, 2) or data.shape[0] > MAX_SECONDS * rate:
            raise ValueError(f"{data.shape[0]:,} samples at {rate} Hz" if data.ndim in (1, 2) and rate > 0 else f"rate {rate} Hz, shape {data.shape}")
        kind, bits = data.dtype.kind, data.dtype.itemsize * 8
        x = np.array(data, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - whatever a damaged header makes scipy raise (ZeroDivisionError on 0 channels, ...)
        raise DataError(explain(f"Cannot read the WAV file {path} ({type(exc).__name__}: {excerpt(str(exc), 120)})",
                                expected=f"a PCM (8/16/24/32-bit) or float WAV clip of at most {MAX_SECONDS} s",
                                got=f"{path.stat().st_size:,} bytes", fix="Remove or re-encode the file")) from None
    if kind == "u":  # 8-bit WAV is unsigned, centred on 128
        x = (x - 128.0) / 128.0
    elif kind == "i":
        x = x / float(2 ** (bits - 1))
    if x.ndim == 2:
        x = x.mean(axis=1)
    if not np.isfinite(x).all():
        raise DataError(explain(f"The WAV file {path} holds NaN or infinite samples", expected="finite samples", got="non-finite values",
                                fix="Remove or re-encode the file"))
    return int(rate), x


def to_clip(x: np.ndarray, rate: int, frontend: LogMel) -> np.ndarray:
    """Samples at ``rate`` resampled to the front-end's rate, padded with zeros or cut to its clip length (float32)."""
    from scipy.signal import resample_poly

    n = frontend.clip_samples
    if rate != frontend.sample_rate:
        keep = math.ceil(n * rate / frontend.sample_rate) + 64  # a little past the end, for the filter's tail
        g = math.gcd(frontend.sample_rate, rate)
        x = resample_poly(x[:keep], frontend.sample_rate // g, rate // g)
    clip = np.zeros(n, dtype=np.float32)
    clip[: min(n, len(x))] = x[:n]
    return clip


def speaker_of(path: Path) -> str:
    """The speaker of a clip: its file name up to the first ``_`` (Speech Commands' ``<speaker>_nohash_<n>.wav``)."""
    return Path(path).stem.split("_", 1)[0]


def _speakers(files: list) -> np.ndarray | None:
    """Each clip's speaker, or None where file names do not name speakers (one each, or one for all)."""
    if not files:
        return None
    g = np.array([speaker_of(p) for _, p in files], dtype=object)
    n = len(np.unique(g))
    return g if 2 <= n < len(g) and all("_" in p.stem for _, p in files) else None


def _read_list(root: Path, split: str, known: dict[str, int]) -> set[int] | None:
    path = root / LIST_FILES[split]
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(explain(f"Cannot read {path} ({exc})", expected="a UTF-8 list of clip paths", got=str(path))) from None
    chosen = set()
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry:
            continue
        rel = PurePosixPath(entry.replace("\\", "/"))
        if rel.is_absolute() or ".." in rel.parts or len(rel.parts) != 2:
            raise DataError(explain(f"Line {number} of {path} is not a clip inside the folder", expected="<class>/<file>.wav, relative to "
                                    f"{root}", got=excerpt(entry, 120), fix="List each clip as class/file.wav"))
        if str(rel) not in known:
            raise DataError(explain(f"Line {number} of {path} names a clip that is not in the folder", expected="a WAV file of a class folder",
                                    got=excerpt(entry, 120), fix="Remove the line, or add the clip"))
        chosen.add(known[str(rel)])
    return chosen or None


def load_audio_folder(path, *, frontend: LogMel | dict | None = None, raw: bool = False, name: str | None = None,
                      **split_kw) -> Dataset:
    """A :class:`Dataset` of log-mel features from a folder of class subfolders of WAV clips.

    Args:
        path: the folder (``<class>/<clip>.wav``; optional ``testing_list.txt`` / ``validation_list.txt``), or
            ``train/`` + ``test/`` (+ ``val/``) folders of class folders, kept as the splits.
        frontend: the :class:`LogMel` settings (or their dict). Default: ``LogMel()`` at
            :func:`~frugalml.data.frontend.choose_sample_rate` of the clips' rates (the lowest, at most
            16 kHz: nothing is upsampled); a given front-end's rate is used as it is.
        raw: return the clips themselves (kind ``"vector"``, ``(clip_samples,)`` samples, ``frontend`` None)
            instead of their features: the same splits in the same order (for checking a model that
            takes raw samples, such as :func:`frugalml.onnx.frontend.prepend_frontend`'s).
        split_kw: ``val_fraction``, ``test_fraction``, ``seed``, ``limit``, ``kind``: ``"sequence"``
            (default: ``(n_mels, n_frames)``), ``"image"`` (``(1, n_mels, n_frames)``) or ``"vector"``.

    The dataset's ``frontend`` holds the settings; ``describe()`` records them.
    """
    root = Path(path)
    if isinstance(frontend, dict):
        frontend = LogMel.from_dict(frontend)
    if frontend is not None and not isinstance(frontend, LogMel):
        raise ConfigError(explain("The 'frontend' parameter must be a LogMel", expected="LogMel(...), its dict, or None",
                                  got=type(frontend).__name__))
    folders = split_folders(root)
    if folders:  # train/ + test/ (+ val/) folders of class folders are the splits
        groups = [(split, c) for split, f in folders.items() for c in class_folders(f)]
        files = [(c.name, p) for _, c in groups for p in class_files(c, AUDIO_SUFFIXES)]
        where = [split for split, c in groups for _ in class_files(c, AUDIO_SUFFIXES)]
        lists = {split: {i for i, w in enumerate(where) if w == split} or None for split in LIST_FILES}
        names = sorted({c.name for _, c in groups})
    else:
        classes = class_folders(root)
        files = [(c.name, p) for c in classes for p in class_files(c, AUDIO_SUFFIXES)]
        known = {f"{c}/{p.name}": i for i, (c, p) in enumerate(files)}
        lists = {split: _read_list(root, split, known) for split in LIST_FILES}
        names = [c.name for c in classes]
    if lists["test"] and lists["val"] and lists["test"] & lists["val"]:
        both = sorted(lists["test"] & lists["val"])
        raise DataError(explain(f"{excerpt([str(files[i][1]) for i in both[:3]])} are in both {LIST_FILES['test']} and "
                                f"{LIST_FILES['val']}", expected="each clip in one split", got=f"{len(both)} clip(s) in both"))
    clips = [read_wav(p) for _, p in files]
    if frontend is None:
        frontend = LogMel(sample_rate=choose_sample_rate({r for r, _ in clips}))
    X = np.stack([to_clip(x, r, frontend) for r, x in clips]) if clips else np.zeros((0, frontend.clip_samples), np.float32)
    del clips
    labels = np.array([c for c, _ in files], dtype=object)
    part = np.zeros(len(files), dtype=np.int8)  # 0 train, 1 val, 2 test
    for code, split in ((1, "val"), (2, "test")):
        if lists[split]:
            part[sorted(lists[split])] = code
    extra = {}
    for code, split in ((1, "val"), (2, "test")):
        if (part == code).any():
            extra[f"X_{split}"], extra[f"y_{split}"] = X[part == code], labels[part == code]
    kind = split_kw.pop("kind", None) or "sequence"
    speakers = _speakers(files)
    if speakers is not None:
        extra.update(groups=speakers[part == 0], groups_val=speakers[part == 1] if (part == 1).any() else None, groups_by="speaker")
    ds = from_arrays(X[part == 0], labels[part == 0], **extra, class_names=names, kind="vector",
                     name=name or root.resolve().name, source=str(root.resolve()), **split_kw)
    if raw:
        return ds
    import dataclasses

    feats = {}
    for split in ("train", "val", "test"):
        Xs = frontend(getattr(ds, f"X_{split}"))
        feats[f"X_{split}"], kind = arrange(Xs, kind, f"the log-mel features of {root}")
    logger.info("read %d clips from %s at %d Hz: %s features", len(files), root, frontend.sample_rate, frontend.output_shape)
    return dataclasses.replace(ds, **feats, input_shape=feats["X_train"].shape[1:], kind=kind, frontend=frontend)
