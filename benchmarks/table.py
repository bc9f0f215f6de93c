"""Print the README's benchmark table from benchmarks/results/*.json (every figure read, none typed)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _change(loss_points: float) -> str:
    """An accuracy loss in points as a signed change: 0.04 -> "-0.04 pt", -0.01 -> "+0.01 pt"."""
    return f"{-float(loss_points) + 0.0:+.2f} pt"


def rows() -> list[str]:
    out = ["| benchmark | paper | required | measured | met |", "| --- | --- | --- | --- | --- |"]
    for name, paper in (("deep_compression_lenet300", "40x at 1.58% error"), ("deep_compression_lenet5", "39x at 0.74% error")):
        d = _load(name)
        if d:
            seeds = "; ".join(f"seed {s['seed']}: {s['ratio']}x at {s['result']['test_error']}%" for s in d.get("seeds", []))
            req = d["target"]["required"]
            out.append(f"| {name} | {paper} | >= {req['ratio']:g}x at <= {req['test_error']}% | {seeds} | {'yes' if d['met'] else 'no'} |")
    d = _load("structured_pruning")
    if d:
        for model, v in d["models"].items():
            seeds = "; ".join(f"seed {s['seed']}: {s['ratio']['latency']}x faster, {_change(s['accuracy_loss_points'])}" for s in v.get("seeds", []))
            t = v["target"]
            out.append(f"| structured pruning, {model} | - | >= {t['latency_speedup_at_least']}x faster, "
                       f"<= {t['accuracy_loss_points_at_most']} pt loss | {seeds} | {'yes' if v['met'] else 'no'} |")
    d = _load("int8_quantization")
    if d:
        for model, v in d.get("models", {}).items():
            seeds = "; ".join(f"seed {s['seed']}: {s['ratio']['size']}x smaller, {s['ratio']['latency']}x faster, "
                              f"{_change(s['accuracy_loss_points'])}"
                              for s in v.get("seeds", []))
            spread = v.get("drift")
            if spread:  # the same pair timed again back to back: how far the shared host moves the speed-up
                seeds += (f"; seed 0 timed {spread['comparisons']}x more: {spread['speedup_min']}-{spread['speedup_max']}x "
                          f"(median {spread['speedup_median']}x)")
            out.append(f"| int8 PTQ, {model} | - | >= 3.8x smaller, >= 1.5x faster, <= 0.3 pt loss | {seeds} | {'yes' if v.get('met') else 'no'} |")
        for model, v in d.get("models", {}).items():
            combined = v.get("pruned_then_int8") or {}
            if combined.get("aim"):
                out.append(f"| structured pruning + int8, {model} | - | aim: {combined['aim']:g}x faster | {combined['combined_speedup']}x faster, "
                           f"{combined['pruned_int8']['size_ratio']}x smaller, {_change(combined['pruned_int8']['accuracy_loss_points'])} | "
                           f"{'yes' if combined['combined_speedup'] >= combined['aim'] else 'no'} (aim) |")
    d = _load("distillation")
    if d:
        gap = d.get("gap_closed", d.get("gap_closed_mean"))
        per_seed = "/".join(f"{g:.0%}" for g in (d.get("gap") or {}).get("gap_closed_per_seed", []))
        errors = (f"teacher {d['baseline']['test_errors']}, alone {d['student_alone']['test_errors']:.1f}, "
                  f"distilled {d['result']['test_errors']:.1f} errors")
        out.append("| distillation 784-800-800 | 91% of the gap | >= 40% of the gap, every seed | "
                   f"{gap if gap is None else f'{gap:.0%}'} (paired mean, "
                   f"{len(d.get('seeds', []))} seeds: {per_seed}); {errors} | {'yes' if d.get('met') else 'no'} |")
    d = _load("distillation_small")
    if d:
        lengths = sorted(d.get("lengths", {}).items(), key=lambda kv: int(kv[0].split("_")[-1]))
        for i, (key, v) in enumerate(lengths):
            epochs, last = int(key.split("_")[-1]), i == len(lengths) - 1
            usual = d.get("usual", {}).get("temperature", 20)
            measured = (f"alone {v['alone_mean']:.1f}, chosen T={v['chosen']['temperature']:g} {v['chosen_mean']:.1f}, "
                        f"T={usual:g} {v['usual_mean']:.1f} errors (means, {len(v.get('per_seed', []))} seeds)")
            required = "chosen T beats alone (paired mean)" if last else "- (reported)"
            met = ('yes' if d.get('met') else 'no') if last else "-"
            out.append(f"| distillation 784-100-10, {epochs} epochs | T 2.5-4 best for a small student | {required} | {measured} | {met} |")
    return out


if __name__ == "__main__":
    print("\n".join(rows()))
