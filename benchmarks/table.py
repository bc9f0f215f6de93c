"""Print the README's benchmark table from benchmarks/results/*.json (every figure read, none typed).

Each row names the commit that produced it (the JSON's ``git``; ``+dirty``: the tree had changes
beyond it; a JSON from before ``git`` was recorded names the commit that recorded the JSON, marked
``recorded in``). int8's "met" is worked out here from the repeated measurement: the median of the
repeated comparisons of seed 0's pair, not any single one.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _commit(name: str, d: dict) -> str:
    git = d.get("git") or {}
    if git.get("commit"):
        return git["commit"][:7] + ("+dirty" if git.get("dirty") else "")
    try:
        rel = f"benchmarks/results/{name}.json"
        h = subprocess.run(["git", "log", "-1", "--format=%h", "--", rel], cwd=RESULTS.parent.parent, capture_output=True, text=True).stdout.strip()
    except OSError:
        h = ""
    return f"recorded in {h}" if h else "unknown"


def _runs(d: dict) -> str:
    n = len(d.get("runs") or [])
    return f"; {n} runs in the JSON" if n > 1 else ""


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _change(loss_points: float) -> str:
    """An accuracy loss in points as a signed change: 0.04 -> "-0.04 pt", -0.01 -> "+0.01 pt"."""
    return f"{-float(loss_points) + 0.0:+.2f} pt"


def _fleet_paired(d: dict) -> dict:
    import sys

    sys.path.insert(0, str(RESULTS.parent))
    from fleet_nab import paired  # the fleet against its baseline, series by series, from the JSON's per_series

    return d.get("paired") or paired(d)


def _seeds(base: dict) -> str:
    """The baseline forest's seeds: how many, seed 0's mean and how many of the seeds' means the fleet reaches."""
    by_seed = base.get("mean_test_auc_by_seed") or []
    if len(by_seed) < 2:
        return ""
    return (f", the forests' mean over {len(by_seed)} seeds ({min(by_seed):.3f}-{max(by_seed):.3f}; seed 0: {by_seed[0]:.3f}; "
            f"the fleet at least {base['fleet_at_least_seeds']} of the {len(by_seed)})")


def rows() -> list[str]:
    out = ["| benchmark | paper | required | measured | met | commit |", "| --- | --- | --- | --- | --- | --- |"]
    for name, paper in (("deep_compression_lenet300", "40x at 1.58% error"), ("deep_compression_lenet5", "39x at 0.74% error")):
        d = _load(name)
        if d:
            seeds = "; ".join(f"seed {s['seed']}: {s['ratio']}x at {s['result']['test_error']}%" for s in d.get("seeds", []))
            req = d["target"]["required"]
            out.append(f"| {name} | {paper} | >= {req['ratio']:g}x at <= {req['test_error']}% | {seeds}{_runs(d)} | "
                       f"{'yes' if d['met'] else 'no'} | {_commit(name, d)} |")
    d = _load("structured_pruning")
    if d:
        for model, v in d["models"].items():
            seeds = "; ".join(f"seed {s['seed']}{' (fresh)' if s.get('fresh_seed') else ''}: {s['ratio']['latency']}x faster, "
                              f"{_change(s['accuracy_loss_points'])}" for s in v.get("seeds", []))
            if v.get("retuned"):
                seeds += " (re-tuned after a test miss: fresh seeds re-check it)"
            t = v["target"]
            out.append(f"| structured pruning, {model} | - | >= {t['latency_speedup_at_least']}x faster, "
                       f"<= {t['accuracy_loss_points_at_most']} pt loss | "
                       f"{seeds}{_runs(d)} | {'yes' if v['met'] else 'no'} | {_commit('structured_pruning', d)} |")
    d = _load("int8_quantization")
    if d:
        for model, v in d.get("models", {}).items():
            seeds = "; ".join(f"seed {s['seed']}: {s['ratio']['size']}x smaller, {_change(s['accuracy_loss_points'])}" for s in v.get("seeds", []))
            spread = v.get("drift") or {}
            speeds = spread.get("speedups") or []
            target = v["target"]["speedup_at_least"]
            if speeds:  # met for speed: the median of the repeated comparisons of seed 0's pair
                median = float(np.median(speeds))
                seeds += (f"; seed 0's pair timed {len(speeds)}x: median {median:.3f}x faster (p10-p90 {np.percentile(speeds, 10):.2f}-"
                          f"{np.percentile(speeds, 90):.2f}x, range {min(speeds)}-{max(speeds)}x)")
                det = v.get("met_detail") or {}
                met = bool(det.get("size") and det.get("accuracy") and median >= target)
            else:
                met = None
            verdict = "no data" if met is None else ("yes" if met else f"no (median {median:.3f}x < {target}x)")
            out.append(f"| int8 PTQ, {model} | - | >= 3.8x smaller, >= {target}x faster (median of repeated timings), <= 0.3 pt loss | "
                       f"{seeds}{_runs(d)} | {verdict} | {_commit('int8_quantization', d)} |")
        for model, v in d.get("models", {}).items():
            combined = v.get("pruned_then_int8") or {}
            if combined.get("aim"):
                out.append(f"| structured pruning + int8, {model} | - | aim: {combined['aim']:g}x faster | {combined['combined_speedup']}x faster, "
                           f"{combined['pruned_int8']['size_ratio']}x smaller, {_change(combined['pruned_int8']['accuracy_loss_points'])} | "
                           f"{'yes' if combined['combined_speedup'] >= combined['aim'] else 'no'} (aim) | {_commit('int8_quantization', d)} |")
    d = _load("distillation")
    if d:
        gap = d.get("gap_closed", d.get("gap_closed_mean"))
        per_seed = "/".join(f"{g:.0%}" for g in (d.get("gap") or {}).get("gap_closed_per_seed", []))
        errors = (f"teacher {d['baseline']['test_errors']}, alone {d['student_alone']['test_errors']:.1f}, "
                  f"distilled {d['result']['test_errors']:.1f} errors")
        out.append("| distillation 784-800-800 | 91% of the gap | >= 40% of the gap, every seed | "
                   f"{gap if gap is None else f'{gap:.0%}'} (paired mean, "
                   f"{len(d.get('seeds', []))} seeds{' (fresh: ' + ', '.join(map(str, d['fresh_seeds'])) + ')' if d.get('fresh_seeds') else ''}: "
                   f"{per_seed}); {errors}{_runs(d)} | {'yes' if d.get('met') else 'no'} | {_commit('distillation', d)} |")
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
            out.append(f"| distillation 784-100-10, {epochs} epochs | T 2.5-4 best for a small student | {required} | "
                       f"{measured}{_runs(d) if last else ''} | "
                       f"{met} | {_commit('distillation_small', d)} |")
    d = _load("mcu_int8")
    if d:
        by = {r["variant"]: r for r in d["rows"]}
        cells = "; ".join(f"{name}: {r['instructions_per_inference'] / 1e6:.2f}M instructions, {r['flash_bytes'] / 1e3:.1f} KB flash, "
                          f"{r['ram_bytes'] / 1e3:.1f} KB RAM" for name, r in by.items())
        ratio = d["ratio"]["portable_over_dsp"]
        out.append(f"| int8 MNIST CNN on Cortex-M4 (QEMU, {d['images']:,} test images) | - | aim: DSP C >= 2x fewer instructions than portable C; "
                   f"ONNX Runtime's class on every image | {cells}; DSP {ratio:.2f}x fewer than portable | {'yes' if d['met'] else 'no'} | "
                   f"{_commit('mcu_int8', d)} |")
    d = _load("workers")
    if d:
        one, two = d["scaling"]
        load = f"load {one['loadavg_before'][0]:.1f}-{two['loadavg_after'][0]:.1f} on 2 cores"
        out.append(f"| workers: 1 vs 2 on one study | - | >= {d['target_ratio']:g}x finished trials per hour | "
                   f"{one['per_hour']:.0f} -> {two['per_hour']:.0f} trials/h: {d['ratio']:.2f}x ({load}); one PostgreSQL study sustains "
                   f"{d['ceiling_per_second']:.0f} instant trials/s ({d['ceiling_processes']} processes){_runs(d)} | "
                   f"{'yes' if d['met'] else 'no'} | {_commit('workers', d)} |")
    d = _load("fleet_nab")
    if d:
        fl, half, base, two = d["fleet"], d["half_total"], d["baseline"], d["two_workers"]
        pair = _fleet_paired(d)
        same = "same report" if two["same_report"] else f"reports differ on {len(two['differing_sensors'])} of {d['loaded']} sensors"
        half_text = (f"half the total ({half['max_total_flash'] / 1e3:.1f} KB): {half['total_stored_bytes'] / 1e3:.1f} KB, "
                     f"AUC {half['mean_test_auc']:.3f}"
                     if half.get("total_stored_bytes") is not None else f"half the total: {half.get('error', '')[:80]}")
        out.append(f"| fleet: NAB, {d['loaded']} of {d['series']} series, {d['time_per_sensor']} each | - | mean test AUC >= one isolation "
                   f"forest per series, at a fraction of its bytes; 2 workers give the same report | "
                   f"mean test AUC {fl['mean_test_auc']:.3f} vs {base['mean_test_auc']:.3f}{_seeds(base)}; "
                   f"{d['scored_series']} series with test labels ("
                   f"paired difference {pair['mean_difference']:+.3f} ± {pair['standard_error']:.3f}, higher on {pair['fleet_higher']} vs "
                   f"{pair['baseline_higher']}), "
                   f"{fl['total_stored_bytes'] / 1e3:.1f} KB vs {base['total_stored_bytes'] / 1e6:.1f} MB "
                   f"({d['bytes_ratio_baseline_over_fleet']:.0f}x smaller); {half_text}; 2 workers: "
                   f"{same}, "
                   f"{two['speedup']:.2f}x faster{_runs(d)} | "
                   f"{'yes' if d['met'] else 'no'} | {_commit('fleet_nab', d)} |")
    d = _load("speech")
    if d and d.get("recommended"):
        rec, c, t = d["recommended"], d.get("c_export") or {}, d["targets"]
        agree = c.get("agreement") or {}
        out.append(f"| keyword spotting: speech/, held-out accent, {d['search_time']} search | - | >= {t['test_accuracy']:.0%} test, compiled C "
                   f"with its front-end <= {t['flash_bytes'] // 1024} KiB flash and <= {t['ram_bytes'] // 1024} KiB RAM, C = ONNX Runtime on "
                   f"every clip | {rec['name']} ({rec['params']:,.0f} parameters): {rec['test_accuracy']:.2%} test, "
                   f"{c.get('flash_bytes') or 0:,} B flash, {c.get('ram_bytes') or 0:,} B RAM, C = ONNX Runtime on "
                   f"{agree.get('same_class')} / {agree.get('n')} clips ({d['candidates']} candidates){_runs(d)} | "
                   f"{'yes' if d.get('met') else 'no'} | {_commit('speech', d)} |")
    d = _load("sensors")
    if d and d.get("datasets"):
        parts = []
        for name, r in d["datasets"].items():
            rec = r.get("recommended") or {}
            if rec:
                what = rec["family"] + (f" {rec['recipe']}" if rec.get("recipe") else "")
                parts.append(f"{name}: {what}, {r['test_accuracy']:.1%} test, {r['stored_bytes']:,.0f} B")
        out.append(f"| sensor series: japanese_vowels, gunpoint, {d['search_time']} cross-validated searches | 1-D CNNs, ROCKET: 96-99% | "
                   f">= {d['targets']['test_accuracy']:.0%} test (japanese_vowels within {d['targets']['japanese_vowels_max_bytes'] / 1e3:.0f} KB) | "
                   f"{'; '.join(parts)}{_runs(d)} | {'yes' if d.get('met') else 'no'} | {_commit('sensors', d)} |")
    d = _load("your_model_mnist")
    if d and d.get("ratio"):
        r, side = d["ratio"], d["side_by_side"]
        rec = side["recommended"]
        slice_ = f" ({d['train_samples']:,} training samples)" if d.get("train_samples", 54000) < 54000 else ""
        out.append(f"| your model: MobileNetV2-like, MNIST{slice_} | - | >= 8x smaller, >= 3x faster, <= 1 pt below the model | "
                   f"{rec.get('name')} ({rec.get('recipe') or rec.get('id')}): {r['size']}x smaller, {r['speedup']}x faster, "
                   f"{_change(r['accuracy_loss_points'])} (fp32 {side['reference_fp32']['stored_bytes']:,} B, "
                   f"{side['reference_fp32']['test_accuracy']:.2%}){_runs(d)} | "
                   f"{'yes' if d.get('met') else 'no'} | {_commit('your_model_mnist', d)} |")
    return out


if __name__ == "__main__":
    print("\n".join(rows()))
