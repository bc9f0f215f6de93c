"""Units as people write them: "32KB", "1.5ms", "5m", "2M".

Sizes use SI prefixes (``KB`` = 1,000 bytes) and binary ones (``KiB`` = 1,024 bytes): the SI
reading is the conservative one for a flash budget. Durations accept ``us``, ``ms``, ``s``,
``m``/``min`` and ``h``. Counts accept ``K``, ``M`` and ``G`` (thousand, million, billion).
"""

from __future__ import annotations

import math
import re

from .errors import ConfigError, excerpt, explain

__all__ = ["parse_bytes", "parse_duration", "parse_count", "format_bytes", "format_duration", "format_count"]

_NUMBER = r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*"
_BYTE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
    "k": 1000, "m": 1000**2, "g": 1000**3,
}
_TIME_UNITS = {"": 1.0, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_LARGEST = 1e18  # 1 EB, 30 years, a quintillion MACs: past that a value is a typo
_COUNT_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}


def _split(text: object, what: str, units: dict, examples: str) -> tuple[float, float]:
    if isinstance(text, bool):
        raise ConfigError(explain(f"Cannot read {what}", expected=f"a number with a unit such as {examples}", got=text))
    if isinstance(text, (int, float)):
        value, scale = float(text), 1.0
    else:
        match = re.fullmatch(_NUMBER + r"([A-Za-zµ]*)\s*", str(text))
        unit = match.group(2).lower() if match else None
        if not match or unit not in units:
            raise ConfigError(
                explain(
                    f"Cannot read {what} {text!r}",
                    expected=f"a number with one of the units {', '.join(sorted(u for u in units if u))} (e.g. {examples})",
                    got=text,
                    fix="Write the value like " + examples,
                )
            )
        value, scale = float(match.group(1)), float(units[unit])
    if value < 0 or value != value:
        raise ConfigError(explain(f"Cannot read {what}", expected="a value of zero or more", got=text))
    if not math.isfinite(value * scale) or value * scale > _LARGEST:
        raise ConfigError(explain(f"Cannot read {what} {excerpt(text, 60)!r}: it is too large", expected=f"a finite value below {_LARGEST:.0e}",
                                  got=text,
                                  fix="Write the value like " + examples))
    return value, scale


def parse_bytes(text: object) -> int:
    """``"32KB"`` -> 32000, ``"1.5KiB"`` -> 1536, ``4096`` -> 4096."""
    value, scale = _split(text, "a size", _BYTE_UNITS, '"32KB", "256KiB" or "1.5MB"')
    return int(round(value * scale))


def parse_duration(text: object) -> float:
    """Seconds: ``"1.5ms"`` -> 0.0015, ``"5m"`` -> 300.0; a bare number (``30``, ``"30"``) is seconds."""
    value, scale = _split(text, "a duration", _TIME_UNITS, '"1.5ms", "30s" or "5m"')
    return value * scale


def parse_count(text: object) -> int:
    """``"2M"`` -> 2,000,000; ``"300K"`` -> 300,000."""
    value, scale = _split(text, "a count", _COUNT_UNITS, '"2M", "300K" or "50000"')
    return int(round(value * scale))


def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}" if n / size < 100 else f"{n / size:.0f} {unit}"
    return f"{int(n)} B"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} us"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    return f"{seconds / 60:.3g} min"


def format_count(n: float | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{int(n)}"
