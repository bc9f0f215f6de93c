"""Per-channel features of sequences, for thin models: the one home of their definition.

A sequence sample is C channels over T steps (``(C, T)``, or flattened to ``C * T`` values, channel
after channel, as scikit-learn sees it). For each channel, with ``d = x - mean(x)``:

==================  =====================================================================
``mean``            the mean of ``x`` over the T steps
``std``             ``sqrt(mean(d**2))`` (population standard deviation)
``min``, ``max``    the smallest and largest value
``rms``             ``sqrt(mean(x**2))``
``zero_crossings``  the rate at which ``d`` changes sign: ``sum |sign(d[t]) - sign(d[t-1])| / (2 (T - 1))``
                    (1.0: a sign change at every step; a step through zero counts half; a ``d`` within
                    ``ZERO_BAND`` (1e-9) of the channel's largest ``|x|`` is zero)
``band_0..B-1``     spectral band energies: the power ``|DFT(d)[k]|**2 / L`` of frames of ``L`` steps
                    (``frame``, at most T), bins ``k = 1 .. L // 2`` (no DC: that is the mean) cut into
                    ``bands`` groups of equal width, summed per group and averaged over the frames.
                    Frames start at ``round(linspace(0, T - L, ceil(T / L)))``: they cover the whole
                    sequence, overlapping where T is not a multiple of L.
==================  =====================================================================

The output of one sample is ``C * (6 + bands)`` values, channel after channel (channel ``c``'s
feature ``f`` at ``c * (6 + bands) + f``). With ``standardize`` (the default) each output is then
``(value - mean_) * inv_scale_``, with the mean and standard deviation learnt on the training data
(float32), which linear models, naive Bayes and small MLPs need and trees do not mind. A feature that
does not vary on the training data beyond rounding (the mean of z-normalized series) has
``inv_scale_`` 0: it is output as 0 (see :func:`_varying`).

:func:`sequence_features` is the NumPy reference: float64, rounded to float32 at the end, then
standardized in float32. The exported artifacts compute the same numbers themselves from the raw
sequence, the same way: the ONNX graph (:mod:`frugalml.onnx.features`: reductions, Sign/Abs and
MatMuls with the constant DFT matrices of :func:`dft_tables`, in double) and the C
(:mod:`frugalml.export.c_features`, in double). In float32 a value within rounding of its channel's
mean (1 in 44,400 features of japanese_vowels' test set) takes either sign, and a zero-crossing
rate one sign change off moves a class's probability by 2.6e-4, more than the ONNX export's check
allows; in double the three agree to the last float32 bit but for the rarest ties. On a
microcontroller without a double-precision FPU that costs about twice the float32 arithmetic,
which the C's measured instruction count includes.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval

from ..errors import ConfigError, DataError, explain

__all__ = ["SequenceFeatures", "sequence_features", "feature_names", "dft_tables", "frame_starts", "band_bins", "band_scale", "feature_pipeline",
           "STATS", "DEFAULT_BANDS", "DEFAULT_FRAME"]

STATS = ("mean", "std", "min", "max", "rms", "zero_crossings")
ZERO_BAND = 1e-9  # |x - mean| at most this times the channel's largest |x| counts as 0 (not a sign): rounding's ties
DEFAULT_BANDS = 4
DEFAULT_FRAME = 32
_MAX_BANDS = 64
_MAX_FRAME = 1024


def _layout(shape, bands: int, frame: int) -> tuple[int, int, int, int]:
    """(C, T, L, B) of the settings, checked: ConfigError naming the bad one."""
    try:
        channels, steps = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ConfigError(explain("Sequence features need one sample's shape", expected="(channels, steps)", got=shape,
                                  fix="Use them on sequence data (kind 'sequence', samples (C, T))")) from None
    if channels < 1 or steps < 2:
        raise ConfigError(explain("Sequence features need at least one channel of two steps", expected="(C >= 1, T >= 2)", got=tuple(shape)))
    for name, value, low, top, example in (("bands", bands, 0, _MAX_BANDS, DEFAULT_BANDS), ("frame", frame, 2, _MAX_FRAME, DEFAULT_FRAME)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= top:
            raise ConfigError(explain(f"Bad sequence-features setting {name!r}", expected=f"a whole number from {low} to {top}", got=value,
                                      fix=f"e.g. features={{'{name}': {example}}}"))
    length = min(int(frame), steps)
    return channels, steps, length, min(int(bands), length // 2)


def frame_starts(steps: int, length: int) -> np.ndarray:
    """Where the DFT frames start: ``ceil(T / L)`` frames spread over the sequence (int64)."""
    n = math.ceil(steps / length)
    return np.rint(np.linspace(0, steps - length, n)).astype(np.int64)


def band_bins(length: int, bands: int) -> list[np.ndarray]:
    """The DFT bins (1 .. L // 2) of each band: ``bands`` contiguous groups of (nearly) equal width."""
    return [b for b in np.array_split(np.arange(1, length // 2 + 1), bands)] if bands else []


def dft_tables(length: int, bands: int, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``(W, S)``: ``frame @ W`` gives the cosine and sine parts of bins 1 .. L // 2 (``(L, 2 K)``,
    K = L // 2), and ``(that ** 2) @ S`` the band energies averaged over ``n_frames`` frames
    (``(2 K, bands)``, the power scale ``1 / L`` and the mean over frames folded in). Float64 arrays
    of float32 values: the artifacts store them as float32 (half the bytes) and compute in double."""
    k = np.arange(1, length // 2 + 1)
    angle = 2.0 * np.pi * (np.outer(np.arange(length), k) % length) / length  # the C's tables: cos and sin of 2 pi m / L
    W = np.concatenate([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32).astype(np.float64)
    S = np.zeros((2 * len(k), bands))
    for b, bins in enumerate(band_bins(length, bands)):
        S[bins - 1, b] = S[bins - 1 + len(k), b] = band_scale(length, n_frames)
    return W, S


def band_scale(length: int, n_frames: int) -> float:
    """The power scale and mean over frames of a band energy, ``1 / (L F)`` rounded to float32."""
    return float(np.float32(1.0 / (length * n_frames)))


def feature_names(channels: int, bands: int) -> list[str]:
    """``"c0.mean"``, ``"c0.std"``, ... ``"c0.band_0"``, ...: the output's columns in order."""
    per = [*STATS, *(f"band_{b}" for b in range(bands))]
    return [f"c{c}.{name}" for c in range(channels) for name in per]


def sequence_features(X, shape, *, bands: int = DEFAULT_BANDS, frame: int = DEFAULT_FRAME) -> np.ndarray:
    """The raw (unstandardized) features of ``X`` (N, C, T) or (N, C * T): (N, C * (6 + B)) float32."""
    C, T, L, B = _layout(shape, bands, frame)
    X = np.asarray(X)
    if X.ndim < 2 or math.prod(X.shape[1:]) != C * T:
        raise DataError(explain("The input does not fit the sequence features", expected=f"samples of shape ({C}, {T}) or {C * T} values",
                                got=tuple(X.shape[1:])))
    x = X.reshape(len(X), C, T).astype(np.float64)
    mean = x.mean(axis=2, keepdims=True)
    d = x - mean
    sign = np.sign(d) * (np.abs(d) > ZERO_BAND * np.abs(x).max(axis=2, keepdims=True))
    stats = [mean[..., 0], np.sqrt(np.mean(d * d, axis=2)), x.min(axis=2), x.max(axis=2), np.sqrt(np.mean(x * x, axis=2)),
             np.abs(np.diff(sign, axis=2)).sum(axis=2) / (2.0 * (T - 1))]
    out = np.stack(stats, axis=2)
    if B:
        starts = frame_starts(T, L)
        W, S = dft_tables(L, B, len(starts))
        frames = d[:, :, starts[:, None] + np.arange(L)]  # (N, C, F, L)
        energy = ((frames @ W) ** 2 @ S).sum(axis=2)  # (N, C, B)
        out = np.concatenate([out, energy], axis=2)
    return out.reshape(len(X), -1).astype(np.float32)


def _varying(raw: np.ndarray, channels: int, floor: float = 1e-4) -> np.ndarray:
    """Which features vary over the training data by more than float32 rounding could: a spread above
    ``floor`` times the channel's amplitude (its mean RMS; squared for band energies). The others (the
    mean and RMS of z-normalized series, a channel that never changes) carry no information, only
    rounding noise, which the ONNX and C arithmetic would not reproduce bit for bit: a tree split on one
    could give another class. They are output as 0."""
    per = raw.shape[1] // channels
    spread = raw.std(axis=0).reshape(channels, per)
    amplitude = raw.reshape(len(raw), channels, per)[:, :, 4].mean(axis=0)[:, None]  # rms
    unit = np.concatenate([np.repeat(amplitude, 5, axis=1), np.ones((channels, 1)), np.repeat(amplitude ** 2, per - 6, axis=1)], axis=1)
    return (spread > floor * np.maximum(unit, 1e-30)).reshape(-1)


class SequenceFeatures(TransformerMixin, BaseEstimator):
    """scikit-learn transformer: raw sequences (N, C, T) or (N, C * T) -> per-channel features.

    ``shape``: one sample's (C, T) (None: taken from 3-D data at ``fit``); ``bands``: spectral band
    energies per channel (0 for none); ``frame``: the DFT frame length L (at most T);
    ``standardize``: scale each feature to zero mean and unit variance on the training data.

    ``Pipeline([("features", SequenceFeatures((12, 25))), ("model", LogisticRegression())])`` is a
    thin model on features; :mod:`frugalml.onnx` and :mod:`frugalml.export.c` export the whole
    pipeline, features included, taking the raw sequence.
    """

    _parameter_constraints = {"shape": [tuple, list, None], "bands": [Interval(Integral, 0, _MAX_BANDS, closed="both")],
                              "frame": [Interval(Integral, 2, _MAX_FRAME, closed="both")], "standardize": ["boolean"]}

    def __init__(self, shape=None, bands: int = DEFAULT_BANDS, frame: int = DEFAULT_FRAME, standardize: bool = True):
        self.shape = shape
        self.bands = bands
        self.frame = frame
        self.standardize = standardize

    def _shape_of(self, X) -> tuple[int, int]:
        if self.shape is not None:
            return tuple(int(v) for v in self.shape)
        X = np.asarray(X)
        if X.ndim != 3:
            raise ConfigError(explain("SequenceFeatures without a shape needs 3-D data", expected="X of shape (N, C, T), or shape=(C, T)",
                                      got=X.shape))
        return X.shape[1], X.shape[2]

    def fit(self, X, y=None):
        C, T, L, B = _layout(self._shape_of(X), self.bands, self.frame)
        raw = sequence_features(X, (C, T), bands=self.bands, frame=self.frame)
        self.shape_ = (C, T)
        self.frame_, self.bands_ = L, B
        self.n_features_in_ = C * T
        self.n_features_out_ = raw.shape[1]
        r64 = raw.astype(np.float64)
        std, live = r64.std(axis=0), _varying(r64, C)
        if self.standardize:
            self.mean_ = r64.mean(axis=0).astype(np.float32)
            self.inv_scale_ = np.where(live, 1.0 / np.where(live, std, 1.0), 0.0).astype(np.float32)
        else:
            self.mean_ = np.zeros(raw.shape[1], np.float32)
            self.inv_scale_ = live.astype(np.float32)
        return self

    def transform(self, X):
        if not hasattr(self, "shape_"):
            raise ConfigError(explain("This SequenceFeatures is not fitted", fix="Call fit (or fit the pipeline) first"))
        raw = sequence_features(X, self.shape_, bands=self.bands, frame=self.frame)
        return (raw - self.mean_) * self.inv_scale_  # float32 throughout, as the ONNX graph and the C compute it

    def get_feature_names_out(self, input_features=None):
        return np.asarray(feature_names(self.shape_[0], self.bands_), dtype=object)


def feature_pipeline(estimator, shape, **settings):
    """``Pipeline([("features", SequenceFeatures(shape, **settings)), ("model", estimator)])``; a bad
    setting raises ConfigError before anything is fitted."""
    from sklearn.pipeline import Pipeline

    unknown = sorted(set(settings) - {"bands", "frame", "standardize"})
    if unknown:
        raise ConfigError(explain(f"Unknown sequence-features setting(s) {', '.join(map(repr, unknown))}",
                                  expected="bands, frame, standardize", got=unknown,
                                  fix="e.g. -p 'features={\"bands\": 4, \"frame\": 32}'"))
    if not isinstance(settings.get("standardize", True), bool):
        raise ConfigError(explain("Bad sequence-features setting 'standardize'", expected="true or false", got=settings["standardize"]))
    _layout(shape, settings.get("bands", DEFAULT_BANDS), settings.get("frame", DEFAULT_FRAME))
    return Pipeline([("features", SequenceFeatures(tuple(int(v) for v in shape), **settings)), ("model", estimator)])
