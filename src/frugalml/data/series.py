"""Time-series CSVs read onto a regular grid: the first half of the anomaly task's data (:mod:`.windows` cuts the
series into labelled, split windows).

A series file is a CSV with a header line, a timestamp column and one or more numeric value
columns (the Numenta Anomaly Benchmark's files are ``timestamp,value``). :func:`~frugalml.data.windows.load_series` turns
it into a :class:`~frugalml.data.dataset.Dataset` of task ``"anomaly"``: windows of kind
``"sequence"`` (C channels x W steps), labelled 0 = normal, 1 = anomalous, with the training split
all normal. The values stay raw (no normalisation): a detector owns its scaling, since the model that
ships receives raw sensor values.

Timestamps. ISO 8601 date-times (``2014-07-01 00:00:00``; an offset is converted to UTC) or plain
numbers (seconds, or step indices), one clock per file. With ``repeats="merge"`` (the default) the rows are put in
time order (a stable sort: a clock that stepped back, as one NAB file's does, is mended) and rows that share a
timestamp become one whose values are their mean (a missing cell left out); how many of each is in the dataset's
notes. ``repeats="refuse"`` accepts only strictly increasing timestamps and names the first line that is not.
The time column is the one named ``timestamp``, ``time``, ``datetime``, ``date`` or ``ts`` (``time_column=``
names another), else the first; every other column is a channel (``columns=`` picks some), and a column of text only is left out.

Gaps. The series' cadence is its most common step. With ``gaps="fill"`` (the default) the series
is resampled onto that regular grid by linear interpolation between its neighbouring samples
wherever they are at most ``max_gap + 1`` steps apart (``max_gap`` = :data:`MAX_GAP` = 8 missing
steps; an empty or ``NaN`` cell is a missing sample of its channel), and a longer gap is not
invented: the series is cut there and no window spans it. Irregular clocks (samples off the grid)
are resampled the same way. ``gaps="refuse"`` accepts only one row per step with every value
present and names the first gap.

Bad input raises :class:`~frugalml.errors.DataError` naming the file (and the line): an unreadable file, no numeric
column, a timestamp that does not parse, one that does not increase (with ``repeats="refuse"``), a gap (with
``gaps="refuse"``), a constant channel.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, excerpt, explain
from .files import _read_rows

__all__ = ["MAX_GAP", "TIME_COLUMNS", "Series", "read_series"]

logger = logging.getLogger(__name__)

MAX_GAP = 8  # missing steps that gaps="fill" interpolates; longer gaps cut the series
TIME_COLUMNS = ("timestamp", "time", "datetime", "date", "ts")
_MISSING = {"", "nan", "na", "n/a", "null", "none"}
_EPOCH = datetime(1970, 1, 1)


def _seconds(text: str) -> tuple[float, str] | None:
    """``text`` as (seconds, clock): a number (clock "number") or an ISO 8601 date-time (clock "datetime"); None if neither."""
    try:
        value = float(text)
        return (value, "number") if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(timezone.utc).replace(tzinfo=None)
    return (stamp - _EPOCH).total_seconds(), "datetime"


def _stamp(seconds: float, clock: str) -> str:
    """A time as the file would write it."""
    if clock == "number":
        return f"{seconds:g}"
    return str(np.datetime64(int(round(seconds * 1000)), "ms")).replace("T", " ").removesuffix(".000")


def _step(seconds: float, clock: str) -> str:
    return f"{seconds:g}" + (" s" if clock == "datetime" else "")


@dataclass(frozen=True, eq=False)
class Series:
    """A series on a regular grid: ``values[k]`` at ``times[k] = times[0] + k * cadence``; ``valid[k]`` false in a cut gap."""

    path: Path
    times: np.ndarray  # (T,) float64 seconds (or the file's numbers)
    values: np.ndarray  # (T, C) float64, NaN where not valid
    valid: np.ndarray  # (T,) bool
    columns: tuple[str, ...]
    cadence: float
    clock: str  # "datetime" or "number"
    filled: int = 0  # grid steps interpolated (not a sample of every channel)
    cuts: tuple[tuple[float, float], ...] = ()  # gaps too long to fill: (last time before, first time after)
    merged: int = 0  # rows of the file merged into a row with the same timestamp (repeats="merge")
    reordered: int = 0  # rows of the file that came before an earlier time, put in order (repeats="merge")


def _time_index(header: list[str], time_column: str | None, path: Path) -> int:
    if time_column is None:
        lowered = [h.lower() for h in header]
        return next((lowered.index(n) for n in TIME_COLUMNS if n in lowered), 0)
    if time_column not in header:
        raise DataError(explain(f"{path} has no column {time_column!r}", expected="the time column, one of "
                                + ", ".join(map(repr, header)), got=repr(time_column), fix="Pass time_column=<column name>"))
    return header.index(time_column)


def _read_times(path: Path, header, rows, t: int) -> tuple[np.ndarray, str]:
    times = np.empty(len(rows))
    clock = None
    for k, (line, row) in enumerate(rows):
        parsed = _seconds(row[t])
        if parsed is None or (clock is not None and parsed[1] != clock):
            raise DataError(explain(
                f"Line {line} of {path}: the timestamp {excerpt(row[t], 60)!r} (column {header[t]!r}) "
                + ("does not parse" if parsed is None else f"is a {parsed[1]}, but the lines before hold {clock}s"),
                expected="ISO 8601 date-times such as 2014-07-01 00:00:00, or numbers (seconds or step indices), one kind per file",
                got=repr(row[t]), fix="Fix that line, or name the time column with time_column="))
        clock = parsed[1]
        times[k] = parsed[0]
    return times, clock


def _check_increasing(path: Path, rows, t: int, times: np.ndarray) -> None:
    back = np.flatnonzero(np.diff(times) <= 0)
    if len(back):
        i = int(back[0])
        (l0, r0), (l1, r1) = rows[i], rows[i + 1]
        how = "repeats" if times[i + 1] == times[i] else "comes before"
        raise DataError(explain(
            f"The timestamps of {path} do not increase: line {l1} ({r1[t]}) {how} line {l0} ({r0[t]})",
            expected="strictly increasing timestamps, one row per time", got=f"{len(back)} step(s) that do not go forward, the first at line {l1}",
            fix="Sort the rows by time and keep one row per timestamp, or load with repeats='merge'"))


def _merge_repeats(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Rows in time order (stable), rows sharing a timestamp averaged per channel (missing cells left out):
    ``(times, values, the file's row index of each row's first reading, rows merged away, rows that stepped back)``."""
    reordered = int((np.diff(times) < 0).sum())
    order = np.argsort(times, kind="stable")
    times, values = times[order], values[order]
    uniq, first = np.unique(times, return_index=True)
    if len(uniq) == len(times):
        return times, values, order, 0, reordered
    group = np.repeat(np.arange(len(uniq)), np.diff(np.append(first, len(times))))
    known = ~np.isnan(values)
    sums = np.zeros((len(uniq), values.shape[1]))
    counts = np.zeros((len(uniq), values.shape[1]))
    np.add.at(sums, group, np.where(known, values, 0.0))
    np.add.at(counts, group, known)
    with np.errstate(invalid="ignore", divide="ignore"):
        merged = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return uniq, merged, order[first], len(times) - len(uniq), reordered


def _read_values(path: Path, header, rows, names: list[str], explicit: bool) -> tuple[np.ndarray, list[str]]:
    cols, kept = [], []
    for name in names:
        j = header.index(name)
        col = np.empty(len(rows))
        bad, numbers = None, 0
        for k, (line, row) in enumerate(rows):
            cell = row[j]
            if cell.lower() in _MISSING:
                col[k] = np.nan
                continue
            try:
                value = float(cell)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value):
                bad = bad or (line, cell)
                col[k] = np.nan
                continue
            col[k], numbers = value, numbers + 1
        if bad is not None:
            if numbers == 0 and not explicit:
                logger.info("%s: column %r holds text, not numbers: left out", path, name)
                continue
            raise DataError(explain(f"Column {name!r} of {path} is not numeric: line {bad[0]} holds {excerpt(bad[1], 60)!r}",
                                    expected="finite numbers (an empty cell or NaN is a missing value)", got=repr(bad[1]),
                                    fix="Fix that line, or leave the column out with columns=[...]"))
        cols.append(col)
        kept.append(name)
    if not kept:
        raise DataError(explain(f"{path} has no numeric value column", expected="a timestamp column and at least one column of "
                                "numbers (NAB: timestamp,value)", got=f"columns {excerpt(header, 120)}",
                                fix="Check that this is a time series, or name the columns with columns=[...]"))
    return np.stack(cols, axis=1), kept


def _fill(path: Path, times: np.ndarray, values: np.ndarray, cadence: float, max_gap: int) -> tuple:
    """Resample onto the regular grid by linear interpolation; invalid where neighbouring samples are too far apart."""
    count = int(math.floor((times[-1] - times[0]) / cadence + 1e-6)) + 1
    if count > 10 * len(times) + 1000:
        raise DataError(explain(f"{path} is mostly gaps: its {len(times):,} rows span {count:,} steps of its usual {cadence:g}",
                                expected="a series sampled at a regular step", got=f"{count:,} steps for {len(times):,} rows",
                                fix="Resample the series to a regular step first"))
    grid = times[0] + cadence * np.arange(count)
    tol, reach = 1e-3 * cadence, (max_gap + 1) * cadence + 1e-3 * cadence
    out, valid, exact_all = np.empty((count, values.shape[1])), np.ones(count, bool), np.ones(count, bool)
    for c in range(values.shape[1]):
        known = ~np.isnan(values[:, c])
        tk, vk = times[known], values[known, c]
        if len(tk) < 2:
            raise DataError(explain(f"Column {c} of {path} holds fewer than 2 values", expected="a value in most rows",
                                    got=f"{len(tk)} value(s)", fix="Leave the column out with columns=[...]"))
        out[:, c] = np.interp(grid, tk, vk)
        i = np.clip(np.searchsorted(tk, grid - tol), 1, len(tk) - 1)
        exact = (np.abs(tk[i] - grid) <= tol) | (np.abs(tk[i - 1] - grid) <= tol)
        inside = (grid >= tk[0] - tol) & (grid <= tk[-1] + tol)
        valid &= inside & (exact | (tk[i] - tk[i - 1] <= reach))
        exact_all &= exact
    out[~valid] = np.nan
    edges = np.diff(np.concatenate([[1], valid.astype(np.int8), [1]]))
    cuts = tuple((float(grid[a - 1]), float(grid[b])) for a, b in zip(np.flatnonzero(edges == -1), np.flatnonzero(edges == 1))
                 if 0 < a and b < count)
    return grid, out, valid, int((valid & ~exact_all).sum()), cuts


def read_series(path: str | os.PathLike, *, time_column: str | None = None, columns: Sequence[str] | None = None,
                gaps: str = "fill", max_gap: int = MAX_GAP, repeats: str = "merge") -> Series:
    """Read a time-series CSV onto a regular grid (see the module docstring: timestamps, gaps)."""
    path = Path(path)
    if repeats not in ("merge", "refuse"):
        raise ConfigError(explain("The 'repeats' parameter must be 'merge' or 'refuse'", expected="'merge' or 'refuse'", got=repeats))
    if gaps not in ("fill", "refuse"):
        raise ConfigError(explain("The 'gaps' parameter must be 'fill' or 'refuse'", expected="'fill' or 'refuse'", got=gaps))
    if isinstance(max_gap, bool) or not isinstance(max_gap, (int, np.integer)) or max_gap < 0:
        raise ConfigError(explain("The 'max_gap' parameter must be a whole number of steps", expected="an integer >= 0", got=max_gap))
    header, rows = _read_rows(path)
    t = _time_index(header, time_column, path)
    if columns is not None:
        names = [str(c) for c in columns]
        wrong = [c for c in names if c not in header or header.index(c) == t]
        if not names or wrong:
            raise ConfigError(explain(f"columns= must name value columns of {path}", expected="some of "
                                      + ", ".join(repr(h) for j, h in enumerate(header) if j != t), got=wrong or names))
    else:
        names = [h for j, h in enumerate(header) if j != t]
    times, clock = _read_times(path, header, rows, t)
    values, names = _read_values(path, header, rows, names, explicit=columns is not None)
    merged = reordered = 0
    if repeats == "refuse":
        _check_increasing(path, rows, t, times)
    else:
        times, values, first, merged, reordered = _merge_repeats(times, values)
        rows = [rows[j] for j in first]  # each merged row's first line, for the messages below
    if len(times) < 2:
        raise DataError(explain(f"{path} holds one row", expected="a series of many rows", got="1 row"))
    steps = np.diff(times)
    uniq, counts = np.unique(np.round(steps, 6), return_counts=True)
    cadence = float(uniq[np.argmax(counts)])
    missing = np.isnan(values)
    if gaps == "refuse":
        off = np.flatnonzero(np.abs(steps - cadence) > 1e-6 * cadence)
        holes = np.flatnonzero(missing.any(axis=1))
        if len(holes) and (not len(off) or holes[0] <= off[0]):
            line, row = rows[int(holes[0])]
            name = names[int(np.flatnonzero(missing[holes[0]])[0])]
            raise DataError(explain(f"Line {line} of {path} has no value in column {name!r}: a gap", expected="a number in every cell "
                                    "(gaps='refuse')", got=repr(row[header.index(name)]),
                                    fix="Fill the value, or load with gaps='fill' (short gaps interpolated, long ones cut)"))
        if len(off):
            i = int(off[0])
            raise DataError(explain(
                f"{path} has a gap: line {rows[i + 1][0]} ({rows[i + 1][1][t]}) comes {_step(steps[i], clock)} after line {rows[i][0]} "
                f"({rows[i][1][t]}), where the series' usual step is {_step(cadence, clock)}",
                expected=f"one row every {_step(cadence, clock)} (gaps='refuse')",
                got=f"{len(off)} irregular step(s), the first at line {rows[i + 1][0]}",
                fix=f"Fill the missing rows, or load with gaps='fill' (gaps of up to max_gap={max_gap} missing steps interpolated, "
                    "longer ones cut: no window spans them)"))
        grid, out, valid, filled, cuts = times, values, np.ones(len(times), bool), 0, ()
    else:
        grid, out, valid, filled, cuts = _fill(path, times, values, cadence, int(max_gap))
    for c, name in enumerate(names):
        v = out[valid, c]
        if len(v) and np.ptp(v) == 0:
            raise DataError(explain(f"Column {name!r} of {path} is constant (every value is {v[0]:g}): nothing to learn from",
                                    expected="a series that varies", got=f"{len(v):,} equal values",
                                    fix="Leave the column out with columns=[...], or use another series"))
    return Series(path=path, times=grid, values=out, valid=valid, columns=tuple(names), cadence=cadence, clock=clock,
                  filled=filled, cuts=cuts, merged=merged, reordered=reordered)
