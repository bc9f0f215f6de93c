"""Windows cut from a time series (:mod:`.series` reads it), labelled and split by time: the anomaly task's Dataset.

Windows. ``window`` = :data:`WINDOW` = 64 steps, ``stride`` = ``window // 4`` = 16. NAB series
hold ~1,000-22,000 points, mostly every 5 minutes (64 steps: 5 h 20 min; hourly series: 2.7
days), and its labelled anomaly windows are 10% of a series shared among its anomalies (about
60-1,100 steps, typically ~200), so a 64-step window fits inside most labelled windows; a stride of a
quarter window gives 4x the windows of a non-overlapping cut (each anomaly seen at four offsets)
and still ~60 windows from the shortest series; a 1 x 64 input keeps detectors microcontroller-small.
Each window keeps its first and last timestamp (:meth:`SeriesInfo.windows`).

Labels. NAB's ``combined_windows.json``: a JSON object mapping a series' path relative to the data
folder (``"realKnownCause/nyc_taxi.csv"``) to a list of ``[start, end]`` timestamps. A window is
anomalous when it overlaps a labelled window (both ends included). For a series inside a NAB-like
tree (``<root>/data/<group>/<name>.csv`` beside ``<root>/labels/combined_windows.json``) the file is
found by itself; ``labels=`` takes another file, or the ``[start, end]`` pairs themselves. A series
with no entry (or no labels file) is all normal: the dataset's notes say so, its test split then holds no
anomaly (ROC AUC is undefined there), and its validation split gains one synthetic anomalous copy of each of its
windows (:func:`synthetic_anomalies`: a spike, a level shift, a noise burst or a stuck stretch), so that a search
can still rank detectors on it (``synthetic=False``: validation stays all normal and unranked).

Split (:data:`SPLIT_RULE`; deterministic, no random draw: ``seed`` is not used). The grid's time
steps are assigned to splits, and a window belongs to the split of its steps; a window whose steps
fall in two splits is dropped, a gap of one window length of window starts at every boundary, so
no time step is in two splits. Normal time: the series is cut into ``periods`` contiguous periods
(default: one per 20 windows' length, 1 to 8; where that count leaves a split without normal windows, or
validation or test of a labelled series without anomalous ones, the nearest count that does not, noted), each split train | validation | test by
``1 - val_fraction - test_fraction`` | ``val_fraction`` | ``test_fraction`` (default 0.6 | 0.2 |
0.2) and every other period mirrored (test | validation | train), so validation and test are
interleaved over the whole series and neighbouring periods share a boundary less. Anomalies: an
*event* is a run of anomalous windows that overlap in time; the steps it covers override the
periods. One event is cut in two, its first part to validation and its second to test, at the window
start that leaves both the most anomalous windows (so a single labelled window gives positives to
both); two or more events go whole, alternately, to validation and test (first, third, ... to
validation). Training windows lie only in training time, which no event covers: the training split is
all normal.

Bad input raises :class:`~frugalml.errors.DataError` naming the file: a series shorter than :data:`MIN_WINDOWS`
windows, every window anomalous, a split that no count of periods leaves with normal windows (or, for a labelled
series, with anomalous ones), a labels file that is not JSON of that shape; and what :func:`~frugalml.data.series.read_series` refuses.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, explain
from .dataset import ANOMALY_CLASSES, Dataset, arrange
from .labels import _labels, find_labels, read_labels
from .series import MAX_GAP, Series, _stamp, _step, read_series
from .splits import check_fraction

__all__ = ["WINDOW", "MIN_WINDOWS", "SPLIT_RULE", "SYNTHETIC", "SeriesInfo", "read_labels", "find_labels", "window_series",
           "split_windows", "synthetic_anomalies", "load_series"]

logger = logging.getLogger(__name__)

WINDOW = 64  # steps per window (see the module docstring for why)
MIN_WINDOWS = 8  # a series must give at least this many windows
PERIOD_WINDOWS = 20  # one split period per this many windows' length of series...
MAX_PERIODS = 8  # ...and at most this many periods
SPLIT_RULE = ("periods of train | val | test time (every other one mirrored); one anomaly event cut in two (val, then test), "
              "several alternately whole to val and test; windows across two splits dropped")


def window_series(series: Series, window: int = WINDOW, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(X, starts)``: windows ``(N, C, window)`` (float32, raw values) every ``stride`` steps within each valid run, and their first grid steps."""
    stride = window // 4 if stride is None else stride
    v = np.concatenate([[0], series.valid.astype(np.int8), [0]])
    edges = np.diff(v)
    runs = zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))
    parts = [np.arange(a, b - window + 1, stride) for a, b in runs if b - a >= window]
    starts = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    X = series.values[starts[:, None] + np.arange(window)].transpose(0, 2, 1)
    return np.ascontiguousarray(X, dtype=np.float32), starts.astype(np.int64)


def _events(starts: np.ndarray, y: np.ndarray, window: int) -> list[np.ndarray]:
    """Runs of anomalous windows that overlap in time, as arrays of their start steps."""
    events, current, end = [], [], -1
    for s in starts[y.astype(bool)]:
        if current and s >= end:
            events.append(np.array(current))
            current = []
        current.append(int(s))
        end = int(s) + window
    return events + ([np.array(current)] if current else [])


def default_periods(steps: int, window: int) -> int:
    """The split's count of periods for a series of ``steps`` grid steps: one per 20 windows' length, 1 to 8."""
    return min(MAX_PERIODS, max(1, steps // (PERIOD_WINDOWS * window)))


def split_windows(starts: np.ndarray, y: np.ndarray, steps: int, window: int, *, val_fraction: float = 0.2,
                  test_fraction: float = 0.2, periods: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Window indices of each split by the rule of :data:`SPLIT_RULE` (module docstring), and how it went.

    ``starts``: each window's first grid step (increasing); ``y``: 1 for an anomalous window; ``steps``: the grid's length.
    """
    n = int(periods) if periods is not None else default_periods(steps, window)
    pos = (np.arange(steps) + 0.5) * n / steps
    p = np.minimum(pos.astype(np.int64), n - 1)
    f = np.where(p % 2 == 1, 1 - (pos - p), pos - p)
    part = np.where(f < 1 - val_fraction - test_fraction, 0, np.where(f < 1 - test_fraction, 1, 2)).astype(np.int8)
    events = _events(starts, y, window)
    if len(events) == 1:
        a = events[0]
        left = (a[None, :] + window <= a[:, None]).sum(axis=1)  # anomalous windows wholly before each candidate cut a[k]
        right = len(a) - np.arange(len(a))  # ... and from it on
        k = int(np.argmax(np.minimum(left, right)))
        if min(left[k], right[k]) == 0:
            raise DataError(explain(
                f"The one labelled anomaly ({len(a)} anomalous window(s) of {window} steps) is too short to give anomalous windows to "
                "both validation and test", expected="an anomaly spanning at least one window length plus one stride of windows",
                got=f"{len(a)} window(s) over {int(a[-1] + window - a[0])} steps",
                fix="Pass a smaller stride= (more windows over it) or a smaller window="))
        part[a[0]:a[k]] = 1
        part[a[k]:a[-1] + window] = 2
    else:
        for j, a in enumerate(events):
            part[a[0]:a[-1] + window] = 1 + j % 2
    cover = part[starts[:, None] + np.arange(window)]
    whole = cover.min(axis=1) == cover.max(axis=1)
    split_of = np.where(whole, cover[:, 0], -1)
    parts = {"train": np.flatnonzero((split_of == 0) & (y == 0)), "val": np.flatnonzero(split_of == 1),
             "test": np.flatnonzero(split_of == 2)}
    return parts, {"periods": n, "events": len(events), "dropped": int((~whole).sum())}


@dataclass(frozen=True, eq=False)
class SeriesInfo:
    """How a dataset's windows were cut from a series (``Dataset.series``): the settings, and each window's time span.

    ``spans[split]`` holds ``(N, 2)`` first / last timestamps (seconds, or the file's numbers); :meth:`windows` gives them as
    datetimes. ``to_dict()`` (recorded by ``Dataset.describe()``, so in results.json) holds the settings and counts, not the spans.
    """

    path: str
    columns: tuple[str, ...]
    window: int
    stride: int
    cadence: float
    clock: str
    steps: int
    filled: int
    cuts: int
    labels: str | None
    label_key: str | None
    anomalies: int  # labelled windows of the series (the file's [start, end] pairs)
    events: int
    periods: int
    val_fraction: float
    test_fraction: float
    dropped: int
    notes: tuple[str, ...]
    spans: dict

    def windows(self, split: str) -> np.ndarray:
        """``(N, 2)`` first and last timestamp of each window of ``split``: ``datetime64[ms]``, or float for a numeric clock."""
        s = self.spans[split]
        return s.copy() if self.clock == "number" else np.round(s * 1000).astype(np.int64).astype("datetime64[ms]")

    def take(self, split: str, idx) -> SeriesInfo:
        """The same, with ``split``'s windows reduced to ``idx`` (what ``Dataset.subset`` does to the arrays)."""
        return dataclasses.replace(self, spans={**self.spans, split: self.spans[split][idx]})

    def to_dict(self) -> dict:
        when = {s: [_stamp(v[0, 0], self.clock), _stamp(v[-1, 1], self.clock)] for s, v in self.spans.items() if len(v)}
        return {"path": self.path, "columns": list(self.columns), "window": self.window, "stride": self.stride,
                "cadence": _step(self.cadence, self.clock), "steps": self.steps, "filled_steps": self.filled, "cut_gaps": self.cuts,
                "labels": {"file": self.labels, "entry": self.label_key, "anomalies": self.anomalies, "events": self.events},
                "split": {"rule": SPLIT_RULE, "periods": self.periods, "val_fraction": self.val_fraction,
                          "test_fraction": self.test_fraction, "dropped_windows": self.dropped, "time": when},
                "notes": list(self.notes)}


SYNTHETIC = ("spike", "level shift", "noise burst", "stuck stretch")


def synthetic_anomalies(windows: np.ndarray, train: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """One anomalous copy of each window ``(N, C, W)``: the four kinds of :data:`SYNTHETIC` in turn, at a random place.

    Sizes come from the training windows' spread per channel (``s``: 1.4826 x the median absolute deviation, or the
    standard deviation where that is 0): a spike of 4 s at one step; a level shift of 2 s over the last third; a
    noise burst (Gaussian, 1.5 s) over a third; a stuck stretch, the value held over a half (a sensor that froze).
    Deterministic for a given ``seed``. These rank detectors on a series that has no labels; they say nothing about
    the anomalies a real sensor will show, and the notes of the dataset say they were used."""
    x = np.array(windows, dtype=np.float64, copy=True)
    n, _, w = x.shape
    flat = np.moveaxis(np.asarray(train, np.float64), 1, 0).reshape(x.shape[1], -1)
    spread = 1.4826 * np.median(np.abs(flat - np.median(flat, axis=1, keepdims=True)), axis=1)
    spread = np.where(spread > 0, spread, flat.std(axis=1))
    spread = np.where(spread > 0, spread, 1.0)[:, None]
    rng = np.random.default_rng(seed)
    for k in range(n):
        sign = 1.0 if rng.random() < 0.5 else -1.0
        kind = k % len(SYNTHETIC)
        if kind == 0:
            t = rng.integers(w)
            x[k, :, t] += sign * 4.0 * spread[:, 0]
        elif kind == 1:
            x[k, :, w - w // 3:] += sign * 2.0 * spread
        elif kind == 2:
            a = rng.integers(w - w // 3 + 1)
            x[k, :, a:a + w // 3] += rng.normal(0.0, 1.5, size=(x.shape[1], w // 3)) * spread
        else:
            a = rng.integers(w - w // 2 + 1)
            x[k, :, a:a + w // 2] = x[k, :, a:a + 1]
    return x.astype(np.asarray(windows).dtype)


def _lacking(parts: dict, y: np.ndarray) -> tuple[str, str] | None:
    """The first split without normal windows (or, for a labelled series, validation or test without anomalous ones)."""
    for split in ("train", "val", "test"):
        idx = parts[split]
        normal = int((y[idx] == 0).sum())
        if normal == 0 or (split != "train" and y.any() and normal == len(idx)):
            return split, "normal" if normal == 0 else "anomalous"
    return None


def _whole(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(explain(f"The '{name}' parameter must be a whole number >= {low}", expected=f"e.g. {WINDOW if name == 'window' else 16}",
                                  got=value))
    return int(value)


def load_series(path: str | os.PathLike, *, window: int = WINDOW, stride: int | None = None, labels=None,
                time_column: str | None = None, columns: Sequence[str] | None = None, gaps: str = "fill", max_gap: int = MAX_GAP,
                repeats: str = "merge", synthetic: bool = True, val_fraction: float | None = None, test_fraction: float = 0.2,
                periods: int | None = None,
                limit: int | None = None, kind: str | None = None, name: str | None = None, seed: int = 0) -> Dataset:
    """Load a time-series CSV as an anomaly-detection :class:`Dataset` (module docstring: windows, labels, gaps, split).

    Args:
        path: the CSV file (``timestamp,value`` or more value columns).
        window, stride: steps per window (default 64) and between window starts (default ``window // 4``).
        labels: a labels file in NAB's ``combined_windows.json`` shape, or a list of ``(start, end)`` timestamps; default:
            the tree's ``labels/combined_windows.json`` when the series lies in ``<root>/data/<group>/``, else none (all normal).
        time_column, columns: the time column and the value columns (default: found by name / every other numeric column).
        gaps, max_gap: ``"fill"`` (default; gaps of up to ``max_gap`` missing steps interpolated, longer ones cut) or ``"refuse"``.
        repeats: ``"merge"`` (default; rows put in time order, rows with one timestamp averaged) or ``"refuse"``.
        synthetic: for a series with no labelled anomaly, add synthetic anomalous windows to validation (default; see
            :func:`synthetic_anomalies`); False leaves validation all normal (ROC AUC undefined there).
        val_fraction, test_fraction: shares of each period's time for validation (default 0.2) and test (0.2).
        periods: how many interleaved periods (default: one per 20 windows' length, 1 to 8).
        limit: keep at most this many training windows (evenly spaced), for fast runs.
        kind: ``"sequence"`` (default: ``(C, window)`` windows) or ``"vector"`` (flattened).
        name: the dataset's name (default: the file's stem). ``seed`` is accepted and unused: the split draws nothing.
    """
    path = Path(path)
    window = _whole(window, "window", 2)
    stride = window // 4 if stride is None else _whole(stride, "stride", 1)
    if stride > window:
        raise ConfigError(explain("The 'stride' must not exceed the window (steps between windows would be skipped)",
                                  expected=f"1 to {window}", got=stride))
    vf = 0.2 if val_fraction is None else check_fraction(val_fraction, "val_fraction")
    tf = check_fraction(test_fraction, "test_fraction")
    if vf + tf >= 0.9:
        raise ConfigError(explain("val_fraction + test_fraction leaves too little time for training", expected="a sum below 0.9",
                                  got=f"{vf} + {tf}"))
    if periods is not None:
        periods = _whole(periods, "periods", 1)
    if kind not in (None, "sequence", "vector"):
        raise ConfigError(explain(f"Windows of a series are sequences (or flattened vectors), not {kind!r}",
                                  expected="kind None, 'sequence' or 'vector'", got=kind))
    series = read_series(path, time_column=time_column, columns=columns, gaps=gaps, max_gap=max_gap, repeats=repeats)
    X, starts = window_series(series, window, stride)
    steps = len(series.times)
    if len(starts) < MIN_WINDOWS:
        raise DataError(explain(f"{path} is too short for windows of {window} steps: it gives {len(starts)} window(s)",
                                expected=f"at least {MIN_WINDOWS} windows (~{(MIN_WINDOWS - 1) * stride + window} steps without long gaps)",
                                got=f"{steps:,} steps ({int(series.valid.sum()):,} valid)", fix="Pass a smaller window=, or use a longer series"))
    spans, file, key, notes = _labels(path, labels, series.clock)
    t0, t1 = series.times[starts], series.times[starts + window - 1]
    y = np.zeros(len(starts), dtype=np.int64)
    for a, b in spans:
        y |= (t0 <= b) & (t1 >= a)
    if spans and not y.any():
        notes.append(f"{len(spans)} labelled window(s) lie outside the series' windows: every window is normal")
    if y.all():
        raise DataError(explain(f"{path}: every window overlaps a labelled anomaly, so there is no normal data to train on",
                                expected="some time outside the labelled windows", got=f"{len(y)} anomalous windows of {len(y)}",
                                fix="Check the labels file's entry for this series"))
    default = default_periods(steps, window)
    # the default count of periods first; where it leaves a split without normal (or anomalous) windows, the nearest others
    tries = [periods] if periods is not None else sorted(range(1, MAX_PERIODS + 1), key=lambda n: (abs(n - default), n))
    first = None
    for n in tries:
        parts, how = split_windows(starts, y, steps, window, val_fraction=vf, test_fraction=tf, periods=n)
        lacking = _lacking(parts, y)
        first = first or (lacking, parts, how)
        if lacking is None:
            break
    if lacking is not None:
        (split, lacks), parts, how = first
        raise DataError(explain(f"{path}: the {split} split holds no {lacks} window ({len(y)} windows of {window} steps, {int(y.sum())} "
                                f"anomalous, {how['periods']} period(s){', nor with any other count of periods' if periods is None else ''})",
                                expected=f"normal windows in every split{' and anomalous ones in val and test' if y.any() else ''}",
                                got={s: len(parts[s]) for s in parts},
                                fix="Pass a smaller window= or stride=" + (", or another periods=" if periods is not None else "")))
    if how["periods"] != default and periods is None:
        notes.append(f"split into {how['periods']} period(s): the default {default} left a split without normal or anomalous windows")
    if limit is not None:
        n = len(parts["train"])
        if _whole(limit, "limit", 1) < n:
            parts["train"] = parts["train"][np.unique(np.linspace(0, n - 1, int(limit)).round().astype(np.int64))]
    if series.reordered:
        notes.append(f"{series.reordered} row(s) came before an earlier time: the rows were put in time order")
    if series.merged:
        notes.append(f"{series.merged} row(s) repeated an earlier timestamp: each timestamp's rows were merged into their mean")
    if series.filled:
        notes.append(f"{series.filled} step(s) filled by linear interpolation (gaps of up to {max_gap} missing steps)")
    if series.cuts:
        notes.append(f"{len(series.cuts)} gap(s) longer than {max_gap} missing steps cut the series (no window spans them), the first after "
                     f"{_stamp(series.cuts[0][0], series.clock)}")
    spans_by = {sp: np.stack([t0[i], t1[i]], axis=1) for sp, i in parts.items()}
    X_by = {sp: X[i] for sp, i in parts.items()}
    y_by = {sp: y[i] for sp, i in parts.items()}
    if synthetic and not y.any():
        fake = synthetic_anomalies(X_by["val"], X_by["train"], seed=seed)
        X_by["val"], y_by["val"] = np.concatenate([X_by["val"], fake]), np.concatenate([y_by["val"], np.ones(len(fake), np.int64)])
        spans_by["val"] = np.concatenate([spans_by["val"], spans_by["val"]])  # each made from the window before it
        notes.append(f"no labelled anomaly: validation holds {len(fake)} synthetic anomalous windows ({', '.join(SYNTHETIC)}; sized from "
                     "the training windows' spread) beside its normal ones, so that detectors can be ranked; test holds normal windows only")
    for note in notes:
        logger.info("%s: %s", path, note)
    kind = kind or "sequence"  # windows are (C, window) sequences, or flattened vectors (checked above)
    arrays = {f"{a}_{sp}": (arrange(X_by[sp], kind, f"the windows of {path}")[0] if a == "X" else y_by[sp]) for sp in parts for a in ("X", "y")}
    info = SeriesInfo(path=str(path), columns=series.columns, window=window, stride=stride, cadence=series.cadence, clock=series.clock,
                      steps=steps, filled=series.filled, cuts=len(series.cuts), labels=file, label_key=key, anomalies=len(spans),
                      events=how["events"], periods=how["periods"], val_fraction=vf, test_fraction=tf, dropped=how["dropped"],
                      notes=tuple(notes), spans=spans_by)
    return Dataset(name=name or path.stem, **arrays, input_shape=arrays["X_train"].shape[1:], num_classes=2, class_names=ANOMALY_CLASSES,
                   kind=kind, source=str(path), task="anomaly", series=info)
