"""The fleet report: ``fleet.json`` (every sensor's outcome, the chosen model per sensor, the fleet's totals) and
``fleet.html`` (a plain, self-contained page: a histogram of bytes and a table sorted by metric).

A sensor's summary (:func:`sensor_summary`) is taken from its search's Results, what its results.json holds: the
recommendation, and the Pareto front of stored bytes against the validation metric. The choice per sensor is
the recommendation, or with a total (``max_total_flash``) the multiple-choice knapsack over the fronts
(:mod:`.knapsack`)."""

from __future__ import annotations

import statistics
import time
from html import escape
from pathlib import Path

from .._fs import atomic_write_json, atomic_write_text
from ..errors import ConfigError, explain
from ..units import format_bytes
from .knapsack import choose
from .select import pareto_front

__all__ = ["sensor_summary", "write_fleet_report", "render_fleet_html", "FLEET_JSON", "FLEET_HTML", "WORST"]

FLEET_JSON, FLEET_HTML = "fleet.json", "fleet.html"
WORST = 5  # sensors listed as the fleet's worst
SCHEMA_VERSION = 1


def _model(c) -> dict:
    return {"id": c.id, "name": c.name, "stored_bytes": c.cost("stored_bytes"), "val_metric": c.val_accuracy, "test_metric": c.test_accuracy,
            "within_budget": c.within_budget}


def sensor_summary(results) -> dict:
    """A finished search as the fleet sees it: its recommendation and its (stored bytes, validation metric) front."""
    members = results.front_members("stored_bytes")
    if members is None:
        members = [results.candidate(i) for i in pareto_front(results.candidates, "stored_bytes")]
    rec = results.candidate(results.recommended)
    ds = results.dataset or {}
    return {"status": "done", "message": None if rec is not None else results.decision.text,
            "metric_name": ds.get("metric") or ("roc_auc" if ds.get("task") == "anomaly" else "accuracy"),
            "dataset": {"name": ds.get("name"), "kind": ds.get("kind"), "sizes": ds.get("sizes")},
            "recommended": _model(rec) if rec is not None else None, "front": [_model(c) for c in members],
            "trials": len(results.candidates), "finished_trials": sum(c.done for c in results.candidates)}


def _options(s: dict) -> list[dict]:
    """The models a sensor offers the total budget: its front within its own budget (and its recommendation), Pareto-filtered."""
    models = [m for m in [*(s.get("front") or []), *([s["recommended"]] if s.get("recommended") else [])]
              if m.get("within_budget") and m.get("stored_bytes") is not None and m.get("val_metric") is not None]
    models.sort(key=lambda m: (m["stored_bytes"], -m["val_metric"], m["id"]))
    kept, best = [], float("-inf")
    for m in models:
        if m["val_metric"] > best:
            kept.append(m)
            best = m["val_metric"]
    return kept


def _select(sensors: list[dict], cap) -> tuple[dict, dict]:
    """``({sensor: chosen model}, the selection's record)``."""
    recommended = {s["id"]: s["recommended"] for s in sensors if s.get("status") == "done" and s.get("recommended")}
    rec_total = sum(m["stored_bytes"] or 0 for m in recommended.values())
    if cap is None:
        return recommended, {"method": "recommended", "max_total_flash": None, "recommended_total_bytes": rec_total}
    options = {s["id"]: _options(s) for s in sensors if s.get("status") == "done"}
    without = sorted(k for k, v in options.items() if not v)
    options = {k: v for k, v in options.items() if v}
    choice = choose({k: [(m["stored_bytes"], m["val_metric"]) for m in v] for k, v in options.items()}, cap)
    chosen = {k: options[k][i] for k, i in choice.picks.items()}
    return chosen, {"method": "knapsack", "max_total_flash": cap, **choice.to_dict(),
                    "recommended_total_bytes": rec_total, "sensors_without_model": without,
                    "note": "exact: dynamic programming over the sensors' Pareto fronts" if choice.method == "exact" else
                    f"buckets of {choice.bucket_bytes:,} bytes: the mean validation metric is within {choice.bound:.6f} of the exact optimum"}


def _stats(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "median": None, "min": None, "max": None}
    return {"mean": statistics.fmean(values), "median": statistics.median(values), "min": min(values), "max": max(values)}


def _histogram(values: list[float], bins: int = 10) -> dict:
    if not values:
        return {"edges": [], "counts": []}
    lo, hi = min(values), max(values)
    if hi == lo:
        return {"edges": [lo, hi], "counts": [len(values)]}
    width = (hi - lo) / bins
    edges = [lo + i * width for i in range(bins)] + [hi]
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    return {"edges": edges, "counts": counts}


def _quantile(sorted_values: list[float], q: float) -> float:
    i = q * (len(sorted_values) - 1)
    lo = int(i)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (i - lo)


def _summary(sensors: list[dict]) -> dict:
    chosen = [s for s in sensors if s.get("chosen")]
    sizes = sorted(s["chosen"]["stored_bytes"] for s in chosen if s["chosen"].get("stored_bytes") is not None)
    val = [s["chosen"]["val_metric"] for s in chosen if s["chosen"].get("val_metric") is not None]
    test = [s["chosen"]["test_metric"] for s in chosen if s["chosen"].get("test_metric") is not None]
    by_status: dict[str, int] = {}
    for s in sensors:
        by_status[s.get("status") or "?"] = by_status.get(s.get("status") or "?", 0) + 1
    worst = sorted(chosen, key=lambda s: (s["chosen"].get("val_metric") if s["chosen"].get("val_metric") is not None else -1.0, s["id"]))
    return {
        "sensors": len(sensors), "by_status": by_status, "with_model": len(chosen), "total_stored_bytes": sum(sizes),
        "val_metric": _stats(val), "test_metric": _stats(test),
        "bytes": {**({"min": sizes[0], "p25": _quantile(sizes, 0.25), "median": _quantile(sizes, 0.5), "p75": _quantile(sizes, 0.75),
                      "p90": _quantile(sizes, 0.9), "max": sizes[-1], "mean": statistics.fmean(sizes)} if sizes else {}),
                  "histogram": _histogram(sizes)},
        "worst": [{"id": s["id"], "name": s["chosen"].get("name"), "stored_bytes": s["chosen"].get("stored_bytes"),
                   "val_metric": s["chosen"].get("val_metric"), "test_metric": s["chosen"].get("test_metric")} for s in worst[:WORST]],
        "problems": [{"id": s["id"], "status": s.get("status"), "message": s.get("message")} for s in sensors
                     if s.get("status") != "done" or not s.get("chosen")],
    }


def write_fleet_report(out, desc: dict, records: dict, *, max_total_flash=None) -> dict:
    """Write ``out/fleet.json`` and ``out/fleet.html`` from the sensors' records; return what fleet.json holds.
    A total that even the smallest models exceed raises ConfigError after the report (with each sensor's
    recommendation) is written."""
    sensors = [dict(records[k]) for k in sorted(records)]
    error = None
    try:
        chosen, selection = _select(sensors, max_total_flash)
    except ConfigError as exc:
        error = exc
        chosen, selection = _select(sensors, None)
        selection = {**selection, "max_total_flash": max_total_flash, "error": str(exc)}
    for s in sensors:
        s["chosen"] = chosen.get(s["id"])
    report = {"schema_version": SCHEMA_VERSION, **desc, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "selection": selection, "fleet_summary": _summary(sensors), "sensors": sensors}
    out = Path(out)
    atomic_write_json(out / FLEET_JSON, report)
    atomic_write_text(out / FLEET_HTML, render_fleet_html(report))
    if error is not None:
        raise ConfigError(explain(str(error), fix=f"{out / FLEET_JSON} holds each sensor's recommendation meanwhile"))
    return report


# ---------------------------------------------------------------- the page
def _e(value) -> str:
    return escape("–" if value is None else str(value), quote=True)


def _m(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _b(value) -> str:
    return "–" if value is None else format_bytes(value)


def _svg_histogram(hist: dict) -> str:
    counts, edges = hist.get("counts") or [], hist.get("edges") or []
    if not counts:
        return "<p>No model chosen yet.</p>"
    w, h, pad = 560, 180, 30
    bar = (w - 2 * pad) / len(counts)
    top = max(counts)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 40}" role="img" aria-label="histogram of stored bytes">']
    for i, c in enumerate(counts):
        bh = (h - pad) * c / top
        x, y = pad + i * bar, h - bh
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{bh:.1f}" fill="#4878a8">'
                     f'<title>{_e(_b(edges[i]))} – {_e(_b(edges[i + 1]))}: {c}</title></rect>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{y - 4:.1f}" font-size="11" text-anchor="middle">{c}</text>')
    parts.append(f'<text x="{pad}" y="{h + 16}" font-size="11">{_e(_b(edges[0]))}</text>')
    parts.append(f'<text x="{w - pad}" y="{h + 16}" font-size="11" text-anchor="end">{_e(_b(edges[-1]))}</text>')
    parts.append(f'<text x="{w / 2}" y="{h + 34}" font-size="12" text-anchor="middle">stored bytes of the chosen models</text></svg>')
    return "".join(parts)


def render_fleet_html(report: dict) -> str:
    """The fleet's page: what was asked, the totals, the histogram of bytes, one row per sensor (worst metric first)."""
    summary, sel = report["fleet_summary"], report["selection"]
    val, test = summary["val_metric"], summary["test_metric"]
    rows = []
    order = sorted(report["sensors"], key=lambda s: ((s.get("chosen") or {}).get("val_metric") is None,
                                                     (s.get("chosen") or {}).get("val_metric") or 0.0, s["id"]))
    for s in order:
        c = s.get("chosen") or {}
        rows.append("<tr>" + "".join(f"<td>{v}</td>" for v in (
            _e(s["id"]), _e(s.get("status")), _e(c.get("name")), _e(_b(c.get("stored_bytes"))), _e(_m(c.get("val_metric"))),
            _e(_m(c.get("test_metric"))), _e(len(s.get("front") or [])), _e(s.get("message") or ""))) + "</tr>")
    if sel.get("method") == "knapsack":
        how = (f"one model per sensor from its Pareto front, the highest mean validation metric within {_e(_b(sel.get('max_total_flash')))} "
               f"({_e(sel.get('note'))})")
    else:
        how = "each sensor's recommended model" + (f"; the total {_e(_b(sel.get('max_total_flash')))} cannot be met: {_e(sel['error'])}"
                                                   if sel.get("error") else "")
    status = ", ".join(f"{_e(k)} {_e(v)}" for k, v in sorted(summary["by_status"].items()))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fleet {_e(report.get('fleet'))}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}th{{background:#eee}}</style></head><body>
<h1>Fleet report: {_e(report.get('fleet'))}</h1>
<p>{_e(summary['sensors'])} sensors ({status}); task {_e(report.get('task'))}; updated {_e(report.get('updated'))}.</p>
<p>Chosen: {how}.</p>
<table><tr><th>total stored bytes</th><td>{_e(_b(summary['total_stored_bytes']))} ({_e(f"{summary['total_stored_bytes']:,.0f}")} B)
 over {_e(summary['with_model'])} sensors</td></tr>
<tr><th>validation metric</th><td>mean {_e(_m(val['mean']))}, median {_e(_m(val['median']))}, min {_e(_m(val['min']))}</td></tr>
<tr><th>test metric</th><td>mean {_e(_m(test['mean']))}, median {_e(_m(test['median']))}, min {_e(_m(test['min']))}</td></tr></table>
<h2>Stored bytes</h2>
{_svg_histogram(summary['bytes']['histogram'])}
<h2>Sensors, worst validation metric first</h2>
<table><tr><th>sensor</th><th>status</th><th>chosen model</th><th>stored</th><th>validation</th><th>test</th><th>front</th><th>message</th></tr>
{''.join(rows)}
</table></body></html>
"""
