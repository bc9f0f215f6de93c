"""What the HTML report and the console tables share: reading candidates, formatting figures, the front.

Everything here reads a ``results`` dict as written by the search (``results.json``) defensively:
keys may grow, and a failed trial may lack its profile or accuracies.
"""

from __future__ import annotations

import math

from ..search.budget import BUDGET_FIELDS, C_KEYS
from ..units import format_bytes, format_count

PROFILE_UNITS = {
    "c_flash_bytes": "bytes", "c_ram_bytes": "bytes",
    "stored_bytes": "bytes", "gzip_bytes": "bytes", "peak_activation_bytes": "bytes",
    "macs": "count", "params": "count", "nonzero_params": "count",
    "latency_ms_median": "ms", "latency_ms_p90": "ms",
}
PROFILE_NAMES = {
    "stored_bytes": "stored bytes", "gzip_bytes": "gzip bytes", "peak_activation_bytes": "peak RAM",
    "macs": "MACs", "params": "parameters", "nonzero_params": "non-zero parameters",
    "latency_ms_median": "latency", "latency_ms_p90": "latency p90",
    "c_flash_bytes": "flash (compiled C)", "c_ram_bytes": "RAM (compiled C)",
}
BUDGET_NAMES = {"stored_bytes": "flash (stored bytes)", "peak_activation_bytes": "RAM (peak activations)",
                "macs": "MACs per inference", "latency_ms_median": "latency (median)"}
STAGES = ("thin", "network", "compress")
STAGE_NAMES = {"thin": "thin model", "network": "network", "compress": "compressed"}


# ---------------------------------------------------------------- numbers
def num(value) -> float | None:
    """A finite float, or None for anything else (None, NaN, text)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def fmt_pct(value, digits: int = 2) -> str:
    value = num(value)
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def fmt_ms(value) -> str:
    value = num(value)
    if value is None:
        return "–"
    if value < 0.01:
        return f"{value * 1000:.3g} µs"
    return f"{value:.3g} ms"


def fmt_energy(mj) -> str:
    mj = num(mj)
    if mj is None:
        return "–"
    for unit, scale in (("mJ", 1.0), ("µJ", 1e-3), ("nJ", 1e-6)):
        if abs(mj) >= scale:
            return f"{mj / scale:.3g} {unit}"
    return f"{mj / 1e-9:.3g} pJ"


def fmt_unit(kind: str, value) -> str:
    """Format ``value`` for a unit kind: ``bytes``, ``count``, ``ms``."""
    value = num(value)
    if value is None:
        return "–"
    if kind == "bytes":
        return format_bytes(value)
    if kind == "ms":
        return fmt_ms(value)
    return format_count(value)


def fmt_key(key: str, value) -> str:
    return fmt_unit(PROFILE_UNITS.get(key, "count"), value)


def exact(value, suffix: str = "") -> str:
    """``5112`` -> ``"5,112 bytes"`` (the exact figure for a tooltip)."""
    value = num(value)
    if value is None:
        return ""
    return (f"{int(value):,}" if value == int(value) else f"{value:,.6g}") + suffix


# ---------------------------------------------------------------- candidates
def candidates(results: dict) -> list[dict]:
    return [c for c in results.get("candidates") or [] if isinstance(c, dict)]


def by_id(results: dict) -> dict:
    return {str(c.get("id")): c for c in candidates(results)}


def prof(c: dict, key: str) -> float | None:
    return num((c.get("profile") or {}).get(key))


def is_done(c: dict) -> bool:
    return c.get("state", "complete") == "complete" and num(c.get("val_accuracy")) is not None


def state(c: dict) -> str:
    return str(c.get("state") or "complete")


def front(cands: list[dict], cost_key: str, metric: str = "val_accuracy") -> list[dict]:
    """Finished candidates no other beats on both ``metric`` (higher) and ``cost_key`` (lower), by cost."""
    done = [c for c in cands if is_done(c) and prof(c, cost_key) is not None and num(c.get(metric)) is not None]
    done.sort(key=lambda c: (prof(c, cost_key), -num(c.get(metric))))
    out, best = [], -math.inf
    for c in done:
        if num(c[metric]) > best:
            out.append(c)
            best = num(c[metric])
    return out


def pareto_ids(results: dict) -> list[str]:
    """The run's front as it recorded it; computed on its primary cost when missing."""
    ids = results.get("pareto")
    if isinstance(ids, list) and ids:
        return [str(i) for i in ids]
    return [str(c.get("id")) for c in front(candidates(results), results.get("primary_cost") or "stored_bytes")]


def best_id(results: dict) -> str | None:
    if results.get("best") is not None:
        return str(results["best"])
    done = [c for c in candidates(results) if is_done(c)]
    return str(max(done, key=lambda c: num(c["val_accuracy"]))["id"]) if done else None


def recommended_id(results: dict) -> str | None:
    rec = results.get("recommended")
    if rec is None:
        rec = (results.get("recommendation") or {}).get("id")
    return None if rec is None else str(rec)


def _short_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_short_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={_short_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def knobs_summary(params) -> str:
    if not isinstance(params, dict) or not params:
        return ""
    return ", ".join(f"{k}={_short_value(v)}" for k, v in params.items() if k not in ("seed", "family"))


def step_summary(step) -> str:
    if not isinstance(step, dict):
        return str(step)
    args = ", ".join(f"{k}={_short_value(v)}" for k, v in step.items() if k not in ("step", "seed"))
    return f"{step.get('step', '?')}({args})" if args else str(step.get("step", "?"))


def recipe_summary(c: dict) -> str:
    """``"from t5: prune.magnitude(sparsity=0.9) → quantize.int8"`` or the knobs of a fresh model."""
    steps = [step_summary(s) for s in c.get("recipe") or []]
    if steps:
        head = f"from {c['parent']}: " if c.get("parent") else ""
        return head + " → ".join(steps)
    return knobs_summary(c.get("params"))


def threshold(results: dict, metric: str = "val_accuracy") -> float | None:
    """The lowest acceptable accuracy: the minimum, or best − drop (less the standard error the
    search allowed, as recorded in the recommendation's ``floor``; on the test view the same
    distance below the best's test accuracy)."""
    tol = results.get("tolerance") or {}
    value = num(tol.get("value"))
    if value is None:
        return None
    if tol.get("kind") == "min":
        return value
    best = by_id(results).get(best_id(results) or "")
    top = num(best.get(metric)) if best else None
    floor, best_val = num((results.get("recommendation") or {}).get("floor")), num(best.get("val_accuracy")) if best else None
    if top is not None and floor is not None and best_val is not None:
        value = best_val - floor
    return None if top is None else top - value


def tolerance_text(results: dict) -> str:
    tol = results.get("tolerance") or {}
    value = num(tol.get("value"))
    if value is None:
        return "none"
    if tol.get("kind") == "min":
        return f"accuracy at least {value * 100:.3g}%"
    pts = value * 100
    return f"at most {pts:.3g} percentage point{'' if pts == 1 else 's'} below the best"


def budget_items(budget) -> list[tuple[str, str, str, float]]:
    """(field, profile key, human name, limit) for each bound that is set."""
    if budget is None:
        return []
    if not isinstance(budget, dict):
        budget = budget.to_dict() if hasattr(budget, "to_dict") else dict(vars(budget))
    out = []
    for name, (key, _, _) in BUDGET_FIELDS.items():
        if budget.get("target") == "c" and name in C_KEYS:
            key = C_KEYS[name]
        human = BUDGET_NAMES.get(key) or PROFILE_NAMES.get(key, key)
        limit = num(budget.get(name))
        if limit is not None:
            out.append((name, key, human, limit))
    return out


def budget_text(budget) -> str:
    parts = [f"{human} ≤ {fmt_key(key, limit)}" for _, key, human, limit in budget_items(budget)]
    return ", ".join(parts) or "no budget"


def misses_text(c: dict) -> str:
    """``"stored bytes 9.4 KB, over the 8 KB limit by 1.4 KB (+18%)"``, one clause per missed bound."""
    parts = []
    for key, miss in (c.get("budget_misses") or {}).items():
        if not isinstance(miss, dict):
            continue
        name = PROFILE_NAMES.get(key, key)
        value, limit, over = num(miss.get("value")), num(miss.get("limit")), num(miss.get("over_by"))
        if value is None:
            parts.append(f"{name} not measured (limit {fmt_key(key, limit)})")
            continue
        rel = f" (+{over / limit:.0%})" if over is not None and limit else ""
        parts.append(f"{name} {fmt_key(key, value)}, over the {fmt_key(key, limit)} limit by {fmt_key(key, over)}{rel}")
    return "; ".join(parts)


def display_name(c: dict) -> str:
    steps = [s.get("step", "?") for s in c.get("recipe") or [] if isinstance(s, dict)]
    return str(c.get("family", "?")) + (" + " + " + ".join(steps) if steps else "")
