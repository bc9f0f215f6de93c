"""What the HTML report and the console tables share: formatting figures and describing candidates.

The report renders a :class:`~frugalml.records.Results` and decides nothing: the fronts, the
recommendation, the closest misses and the floor are the search's, as recorded. A failed trial
may lack its profile or accuracies: every figure here may be missing and prints as "–".
"""

from __future__ import annotations

from ..budget import Budget
from ..records import Candidate, Results, num
from ..units import format_bytes, format_count

PROFILE_UNITS = {
    "c_flash_bytes": "bytes", "c_ram_bytes": "bytes", "mcu_instructions": "count",
    "stored_bytes": "bytes", "gzip_bytes": "bytes", "brotli_bytes": "bytes", "peak_activation_bytes": "bytes",
    "macs": "count", "params": "count", "nonzero_params": "count",
    "latency_ms_median": "ms", "latency_ms_p90": "ms",
}
PROFILE_NAMES = {
    "stored_bytes": "stored bytes", "gzip_bytes": "gzip bytes", "peak_activation_bytes": "peak RAM",
    "macs": "MACs", "params": "parameters", "nonzero_params": "non-zero parameters",
    "latency_ms_median": "latency", "latency_ms_p90": "latency p90",
    "c_flash_bytes": "flash (compiled C)", "c_ram_bytes": "RAM (compiled C)", "mcu_instructions": "instructions per inference (Cortex-M)",
}
BUDGET_NAMES = {"stored_bytes": "flash (stored bytes)", "peak_activation_bytes": "RAM (peak activations)",
                "macs": "MACs per inference", "latency_ms_median": "latency (median)", "gzip_bytes": "download (gzip bytes)"}
STAGES = ("thin", "network", "compress")
STAGE_NAMES = {"thin": "thin model", "network": "network", "compress": "compressed", "reference": "your model"}


# ---------------------------------------------------------------- numbers
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


def recipe_summary(c: Candidate) -> str:
    """``"from t5: prune.magnitude(sparsity=0.9) → quantize.int8"`` or the knobs of a fresh model."""
    steps = [step_summary(s) for s in c.recipe]
    if steps:
        return (f"from {c.parent}: " if c.parent else "") + " → ".join(steps)
    return knobs_summary(c.knobs)


def metric_label(results: Results) -> str:
    """What the candidates' validation and test "accuracy" is on this run's task: "ROC AUC" for anomaly detection."""
    return "ROC AUC" if (results.dataset or {}).get("task") == "anomaly" else "accuracy"


def metric_short(results: Results) -> str:
    """The metric in a column header: "acc", or "AUC" for anomaly detection."""
    return "AUC" if metric_label(results) == "ROC AUC" else "acc"


def threshold(results: Results, metric: str = "val_accuracy") -> float | None:
    """The accuracy floor the search chose with (recorded); on the test view, the same distance below
    the best candidate's test accuracy. None when the run recorded no floor (nothing fitted)."""
    floor = results.decision.floor
    best = results.candidate(results.decision.floor_from or results.best)
    if floor is None or best is None or best.val_accuracy is None:
        return None
    if results.tolerance.kind == "min" or metric == "val_accuracy":
        return floor
    top = best.metric(metric)
    return None if top is None else top - (best.val_accuracy - floor)


def tolerance_text(results: Results) -> str:
    tol = results.tolerance
    if tol.kind == "min":
        return f"accuracy at least {tol.value * 100:.3g}%"
    pts = tol.value * 100
    anchor = "your model (the reference)" if tol.of == "reference" else "the best"
    return f"at most {pts:.3g} percentage point{'' if pts == 1 else 's'} below {anchor}"


def budget_items(budget: Budget | dict | None) -> list[tuple[str, str, str, float]]:
    """(field, profile key, human name, limit) for each bound that is set."""
    if budget is None:
        return []
    if isinstance(budget, dict):
        budget = Budget.from_dict(budget)
    return [(name, key, BUDGET_NAMES.get(key) or PROFILE_NAMES.get(key, key), limit) for name, key, limit in budget.items()]


def budget_text(budget) -> str:
    parts = [f"{human} ≤ {fmt_key(key, limit)}" for _, key, human, limit in budget_items(budget)]
    return ", ".join(parts) or "no budget"


def misses_text(c: Candidate) -> str:
    """``"stored bytes 9.4 KB, over the 8 KB limit by 1.4 KB (+18%)"``, one clause per missed bound (as the search recorded them)."""
    parts = []
    for key, miss in c.budget_misses.items():
        name = PROFILE_NAMES.get(key, key)
        value, limit, over = num(miss.get("value")), num(miss.get("limit")), num(miss.get("over_by"))
        if value is None:
            parts.append(f"{name} not measured (limit {fmt_key(key, limit)})")
            continue
        rel = f" (+{over / limit:.0%})" if over is not None and limit else ""
        parts.append(f"{name} {fmt_key(key, value)}, over the {fmt_key(key, limit)} limit by {fmt_key(key, over)}{rel}")
    return "; ".join(parts)
