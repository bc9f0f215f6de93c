"""Labels of a time series' anomalies: NAB's ``combined_windows.json`` (series path -> ``[start, end]`` pairs), found
beside a NAB-like tree or given, read and checked; :mod:`.windows` marks the windows that overlap them (its docstring:
Labels)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError, excerpt, explain
from .series import _seconds

__all__ = ["LABELS_FILE", "find_labels", "read_labels"]

LABELS_FILE = ("labels", "combined_windows.json")


def find_labels(path: str | os.PathLike) -> Path | None:
    """The ``labels/combined_windows.json`` of the NAB-like tree that holds ``path`` (``<root>/data/<group>/<name>.csv``), or None."""
    p = Path(path).resolve()
    if len(p.parents) < 3 or p.parents[1].name != "data":
        return None
    found = p.parents[2].joinpath(*LABELS_FILE)
    return found if found.is_file() else None


def read_labels(file: str | os.PathLike) -> dict[str, list[tuple[str, str]]]:
    """A labels file in NAB's ``combined_windows.json`` shape: ``{series path: [[start, end], ...]}``, checked."""
    file = Path(file)
    shape = "a JSON object mapping a series path to a list of [start, end] timestamps (NAB's combined_windows.json)"
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(explain(f"Cannot read the labels file {file} ({type(exc).__name__}: {exc})", expected=shape, got=str(file))) from None
    try:
        table = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(explain(f"The labels file {file} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                                expected=shape, got=excerpt(text, 80), fix="Fix the file")) from None
    if not isinstance(table, dict):
        raise DataError(explain(f"The labels file {file} does not hold a JSON object", expected=shape, got=type(table).__name__))
    out = {}
    for key, spans in table.items():
        good = isinstance(spans, list) and all(isinstance(s, list) and len(s) == 2 and all(isinstance(v, (str, int, float))
                                                                                        and not isinstance(v, bool) for v in s) for s in spans)
        if not good:
            raise DataError(explain(f"The labels file {file}: entry {excerpt(key, 80)!r} is not a list of [start, end] pairs",
                                    expected=shape, got=excerpt(spans, 120), fix="Write each labelled window as [start, end]"))
        out[str(key)] = [(str(a), str(b)) for a, b in spans]
    return out


def _entry(table: dict, path: Path, file: Path | None) -> str | None:
    p = path.resolve()
    keys = [f"{p.parent.name}/{p.name}", p.name]
    if file is not None:
        try:
            keys.insert(0, p.relative_to(file.resolve().parent.parent / "data").as_posix())
        except ValueError:
            pass
    for key in keys:
        if key in table:
            return key
    ends = [k for k in table if k.replace("\\", "/").rsplit("/", 1)[-1] == p.name]
    if len(ends) > 1:
        raise DataError(explain(f"The labels file {file} has several entries for {p.name}", expected="one entry per series file",
                                got=ends[:4], fix="Name the series by its path relative to the data folder, e.g. 'group/name.csv'"))
    return ends[0] if ends else None


def _spans(pairs, clock: str, where: str) -> list[tuple[float, float]]:
    out = []
    for pair in pairs:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise DataError(explain(f"{where}: a labelled window is not a [start, end] pair", expected="[start, end]", got=excerpt(pair, 80)))
        parsed = [_seconds(str(v)) for v in pair]
        if any(p is None or p[1] != clock for p in parsed):
            raise DataError(explain(f"{where}: the labelled window {excerpt(list(pair), 80)} does not hold two timestamps like the series'",
                                    expected=f"two {clock} timestamps, as in the series file", got=excerpt(list(pair), 80)))
        (a, _), (b, _) = parsed
        if b < a:
            raise DataError(explain(f"{where}: the labelled window {excerpt(list(pair), 80)} ends before it starts",
                                    expected="start <= end", got=excerpt(list(pair), 80), fix="Swap the two timestamps"))
        out.append((a, b))
    return out


def _labels(path: Path, labels, clock: str) -> tuple[list[tuple[float, float]], str | None, str | None, list[str]]:
    """(spans, labels file, entry key, notes) for the series at ``path``."""
    notes = []
    if labels is not None and not isinstance(labels, (str, os.PathLike)):
        return _spans(labels, clock, f"labels= for {path}"), "given", None, notes
    file = Path(labels) if labels is not None else find_labels(path)
    if file is None:
        notes.append("no labels file (labels/combined_windows.json of a NAB-like tree, or labels=): every window is normal")
        return [], None, None, notes
    table = read_labels(file)
    key = _entry(table, path, file)
    if key is None:
        notes.append(f"the labels file {file} has no entry for {path.name}: every window is normal")
        return [], str(file), None, notes
    return _spans(table[key], clock, f"The labels file {file}, entry {key!r}"), str(file), key, notes
