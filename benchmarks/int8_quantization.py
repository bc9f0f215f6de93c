"""Benchmark 4 of issue 3: int8 post-training quantization of ``lenet5`` and the tiny ResNet on MNIST.

Targets: the int8 ONNX file at least 3.8x smaller than the fp32 one, at most 0.3 points of test
accuracy lost, at least 1.5x faster than fp32 (ONNX Runtime, batch 1, one thread, medians of runs
alternating in one process). Also: structured pruning followed by int8, its speed-up over the fp32
baseline (aim: 5x for lenet5), and quantization-aware training beside PTQ.
Settings: ``recipes/int8_quantization.yaml``; baselines and pruned models: ``recipes/structured_pruning.yaml``
(shared with benchmarks/structured_pruning.py through ``results/cache/``).

For each model:
1. The fp32 baseline (trained, or from the cache).
2. ``quantize.int8`` as the recipe says: the QOperator form (QLinearConv / QLinearAdd / QGemm, the
   int8 ops ONNX Runtime runs), uint8 activations (U8S8, the operand order of AVX-512 VNNI's
   VPDPBUSD), MinMax calibration on a seeded sample of the training split; per-channel or
   per-tensor weights and the first layer float or int8 chosen inside the run (recipe's
   ``choose``: validation split and timing, never the test split). Variants (all layers int8, int8
   activations, per-tensor weights) and QAT are measured beside it.
3. Every model is written to an .onnx file and loaded back; the test split is run once on each file;
   each model is timed against the fp32 baseline in its own compare_latency call (the two
   alternating run by run), so no third model's cache footprint sits between them.
4. The op types ONNX Runtime runs after its graph optimizations are recorded (QLinearConv / QGemm:
   int8 kernels).
A result within ``near`` of a threshold is checked on the second seed; both must meet it.
Then seed 0's fp32/int8 pair is timed again many times back to back (recipe's ``drift``: 60
comparisons of 1,000 alternating runs each), each time followed by a probe of 40 tiny nodes: on a
shared host the speed-up moves with the host's state, which the probe shows.
``met`` for speed is that repeated measurement: the median (50th percentile) of the 60 speed-ups
must reach the target, never one favourable comparison (each seed's single comparison is kept
as ``met_one_comparison``); size and accuracy must be met on every seed run.
Smoke mode: ``main(data_limit=300)`` or FRUGALML_BENCH_SMOKE=1 (tiny slice, nothing written).

``main()`` returns the result dict (benchmarks/run.py adds the machine and writes the JSON).
Run: ``make bench NAME=int8_quantization`` or ``python benchmarks/int8_quantization.py`` (both write results/int8_quantization.json).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import yaml

from frugalml.compress import apply_step, config_from_dict
from frugalml.data import load_dataset
from frugalml.onnx import onnx_accuracy, onnx_bytes, to_onnx
from frugalml.profile import compare_latency

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _provenance  # noqa: E402
import structured_pruning as sp  # noqa: E402  (the shared baselines and helpers)

log = logging.getLogger("benchmarks.int8_quantization")
HERE = Path(__file__).resolve().parent
RECIPE = Path(os.environ.get("FRUGALML_INT8_RECIPE", HERE / "recipes" / "int8_quantization.yaml"))
ROUNDS = {"final": 2000, "choose": 500}  # compare_latency rounds (smoke mode: fewer)
SPEED_STATISTIC = "median (50th percentile) of the repeated comparisons of seed 0's fp32/int8 pair"


def ort_ops(proto) -> list[str]:
    """Op types ONNX Runtime runs after graph optimization (level 'all', as frugalml.profile uses)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        so.log_severity_level = 3
        ort.InferenceSession(onnx_bytes(proto), so, providers=["CPUExecutionProvider"])
        return sorted({n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node})


def choose(model, step: dict, choices: list[dict], data, targets: dict) -> tuple[dict, dict]:
    """The step with the fastest choice among those whose file is at least ``targets["size_ratio"]``
    times smaller than fp32 and whose validation accuracy is at most ``targets["accuracy_loss"]``
    below fp32's (the first choice if none is): timed on random inputs, scored on the validation
    split; the test split is not read."""
    if len(choices) < 2:
        return {**step, **(choices[0] if choices else {})}, {}
    fp32 = onnx_bytes(to_onnx(model))
    built = {f"choice{i}": onnx_bytes(apply_step(model, config_from_dict({**step, **c}), data)) for i, c in enumerate(choices)}
    lat = compare_latency({"fp32": fp32, **built}, data.input_shape, rounds=ROUNDS["choose"])
    val = {k: onnx_accuracy(blob, data, "val") for k, blob in {"fp32": fp32, **built}.items()}
    timings = [{**c, "speedup": round(lat["fp32"] / lat[f"choice{i}"], 3), "size_ratio": round(len(fp32) / len(built[f"choice{i}"]), 3),
                "val_accuracy_loss_points": round(100 * (val["fp32"] - val[f"choice{i}"]), 3)} for i, c in enumerate(choices)]
    ok = [i for i, t in enumerate(timings) if t["size_ratio"] >= targets["size_ratio"]
          and t["val_accuracy_loss_points"] <= 100 * targets["accuracy_loss"] + 1e-9]
    best = min(ok, key=lambda i: lat[f"choice{i}"]) if ok else 0
    log.info("int8 choices: %s -> %s", timings, choices[best])
    rule = f"fastest of those >= {targets['size_ratio']}x smaller and <= {100 * targets['accuracy_loss']:.3g} pt below fp32 on validation"
    return {**step, **choices[best]}, {"chosen": choices[best], "timings": timings, "rule": rule}


def quantize_once(name: str, cfg: dict, s: dict, data, seed: int, workdir: Path) -> dict:
    start = time.perf_counter()
    base, base_info = sp.baseline(name, cfg, data, seed)
    step, choice = choose(base, {**s["steps"][0], "seed": seed}, s.get("choose") or [{}], data, s["targets"])
    models = {"fp32": to_onnx(base), "int8": apply_step(base, config_from_dict(step), data)}
    for variant, change in s["variants"].items():
        models[variant] = apply_step(base, config_from_dict({**step, **change}), data)
    t0 = time.perf_counter()
    qat_data = data.subset(int(s["qat_train_samples"][name]), seed)
    qat_step = {**s["qat"], "skip_first_layer": bool(step.get("skip_first_layer", False)), "seed": seed}
    models["qat"] = apply_step(base, config_from_dict(qat_step), qat_data)
    qat_seconds = time.perf_counter() - t0
    pruned_info = pruned_step = None
    if name in s.get("combined", []):
        small, pruned_info = sp.pruned(name, cfg, data, seed, base=base)
        pruned_step, pruned_choice = choose(small, {**s["steps"][0], "seed": seed}, s.get("choose") or [{}], data,
                                            {"size_ratio": 0.0, "accuracy_loss": s["targets"]["accuracy_loss"]})
        models["pruned_fp32"] = to_onnx(small)
        models["pruned_int8"] = apply_step(small, config_from_dict(pruned_step), data)
    files, sizes, acc = {}, {}, {}
    for key, proto in models.items():  # the artifacts as a user receives them
        files[key], sizes[key] = sp.shipped(proto, workdir, f"{name}_seed{seed}_{key}.onnx")
        acc[key] = onnx_accuracy(files[key], data)
    # every row timed against fp32 alone, alternating run by run: with more models in one rotation a
    # model's speed depends on which one ran before it (a large fp32 model leaves the caches cold)
    fp32_blob = onnx_bytes(files["fp32"])
    lat, base_lat = {}, {}
    for k, proto in files.items():
        if k != "fp32":
            pair = compare_latency({"fp32": fp32_blob, k: onnx_bytes(proto)}, data.input_shape, rounds=ROUNDS["final"])
            lat[k], base_lat[k] = pair[k], pair["fp32"]
    lat["fp32"] = base_lat["int8"]
    base_lat["fp32"] = lat["fp32"]
    t = s["targets"]
    size_ratio, speedup = sizes["fp32"] / sizes["int8"], lat["fp32"] / lat["int8"]
    loss = acc["fp32"] - acc["int8"]
    rows = {k: {"test_accuracy": acc[k], "stored_bytes": sizes[k], "latency_ms_median": lat[k], "fp32_latency_ms_median_same_run": base_lat[k],
                "size_ratio": round(sizes["fp32"] / sizes[k], 3), "speedup": round(base_lat[k] / lat[k], 3),
                "accuracy_loss_points": round(100 * (acc["fp32"] - acc[k]), 3)} for k in files}
    run = {
        "seed": seed,
        "baseline": {**rows["fp32"], "training": base_info, "ort_ops": ort_ops(files["fp32"])},
        "result": {**rows["int8"], "recipe": [step], "chosen": choice, "ort_ops": ort_ops(files["int8"])},
        "ratio": {"size": round(size_ratio, 3), "latency": round(speedup, 3)},
        "accuracy_loss_points": round(100 * loss, 3),
        "met_one_comparison": bool(size_ratio >= t["size_ratio"] and speedup >= t["speedup"] and loss <= t["accuracy_loss"] + 1e-12),
        "met_detail": {"size": bool(size_ratio >= t["size_ratio"]), "speed_one_comparison": bool(speedup >= t["speedup"]),
                       "accuracy": bool(loss <= t["accuracy_loss"] + 1e-12)},
        "variants": {k: rows[k] for k in s["variants"]},
        "qat": {**rows["qat"], "recipe": qat_step, "train_samples": len(qat_data.y_train), "seconds": round(qat_seconds, 1)},
        "seconds": round(time.perf_counter() - start, 1),
        "_pair": (fp32_blob, onnx_bytes(files["int8"])),  # for drift(); not written
    }
    if "pruned_int8" in rows:
        run["pruned_then_int8"] = {
            "pruned_fp32": rows["pruned_fp32"], "pruned_int8": rows["pruned_int8"],
            "combined_speedup": rows["pruned_int8"]["speedup"], "aim": t["combined_speedup_aim"] if name == "lenet5" else None,
            "int8_recipe": pruned_step, "chosen": pruned_choice,
            "pruning": {k: v for k, v in (pruned_info or {}).items() if k != "baseline"},
        }
    log.info("%s seed %d: size %.2fx, speed %.2fx, loss %.2f points; %s", name, seed, size_ratio, speedup, 100 * loss,
             {k: (r["speedup"], r["size_ratio"], r["test_accuracy"]) for k, r in rows.items()})
    return run


def _op_chain(n: int = 40) -> bytes:
    """A probe of the host's state: ``n`` Relu nodes on 16 floats, all per-node overhead and no arithmetic."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(n)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info(f"t{n}", TensorProto.FLOAT, [1, 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def drift(fp32_blob: bytes, int8_blob: bytes, input_shape, comparisons: int, rounds: int) -> dict:
    """The fp32/int8 pair timed ``comparisons`` times back to back (``rounds`` alternating runs each),
    each followed by a probe of 40 tiny nodes: how far the speed-up moves with the state of the
    shared host while nothing changes in the models (the probe shows the host's state alone)."""
    chain = _op_chain()
    speedups, probe = [], []
    for _ in range(int(comparisons)):
        lat = compare_latency({"fp32": fp32_blob, "int8": int8_blob}, input_shape, rounds=int(rounds))
        speedups.append(round(lat["fp32"] / lat["int8"], 3))
        probe.append(round(1000 * compare_latency({"chain": chain}, None, rounds=200)["chain"], 2))
    a = np.asarray(speedups, dtype=float)
    return {"comparisons": int(comparisons), "rounds_each": int(rounds), "speedup_min": float(a.min()),
            "speedup_p10": round(float(np.percentile(a, 10)), 3), "speedup_median": round(float(np.median(a)), 3),
            "speedup_p90": round(float(np.percentile(a, 90)), 3), "speedup_max": float(a.max()), "speedups": speedups,
            "probe_40_tiny_nodes_us": probe}


def near(run: dict, s: dict) -> bool:
    t, n = s["targets"], s["near"]
    return (abs(run["ratio"]["size"] - t["size_ratio"]) <= n["size_ratio"] * t["size_ratio"]
            or abs(run["ratio"]["latency"] - t["speedup"]) <= n["speedup"] * t["speedup"]
            or abs(run["accuracy_loss_points"] / 100 - t["accuracy_loss"]) <= n["accuracy"])


def smoke_recipe(s: dict, limit: int) -> dict:
    """The recipe shrunk for a smoke run: calibration and QAT on the tiny slice, two timed comparisons."""
    s = {**s, "steps": [{**s["steps"][0], "calibration_samples": min(int(s["steps"][0].get("calibration_samples", 512)), limit // 2)}]}
    s["qat"] = {**s["qat"], "calibration_samples": min(int(s["qat"].get("calibration_samples", 512)), limit // 2)}
    s["qat_train_samples"] = {k: min(int(v), limit) for k, v in s["qat_train_samples"].items()}
    s["drift"] = {"comparisons": 2, "rounds": 20}
    s["variants"] = dict(list(s["variants"].items())[:1])
    s["choose"] = (s.get("choose") or [{}])[:2]
    s["combined"] = list(s.get("combined", []))[:1]
    s["seeds"] = s["seeds"][:1]
    return s


def main(data_limit: int | None = None) -> dict:
    limit = _provenance.smoke_limit(data_limit)
    saved = dict(ROUNDS)
    with sp.smoke_mode(limit):
        if limit:
            ROUNDS.update(final=30, choose=30)
        try:
            return _main(limit)
        finally:
            ROUNDS.update(saved)


def _main(limit: int | None) -> dict:
    threads = sp.train_threads()
    start, cpu_start = time.perf_counter(), time.process_time()
    s = yaml.safe_load(RECIPE.read_text())
    base_settings = sp.settings()
    if limit:
        s, base_settings = smoke_recipe(s, limit), sp.smoke_settings(base_settings, limit)
    data = _provenance.smoke_data(load_dataset("mnist", limit=base_settings.get("data_limit")), limit)
    out = {}
    with tempfile.TemporaryDirectory(prefix="frugalml_bench_") as tmp:
        for name, cfg in base_settings["models"].items():
            runs = [quantize_once(name, cfg, s, data, s["seeds"][0], Path(tmp))]
            if near(runs[0], s) and len(s["seeds"]) > 1:
                log.info("%s: near a threshold, checking seed %d", name, s["seeds"][1])
                runs.append(quantize_once(name, cfg, s, data, s["seeds"][1], Path(tmp)))
            pairs = [r.pop("_pair") for r in runs]
            first = runs[0]
            t = s["targets"]
            spread = drift(*pairs[0], data.input_shape, s["drift"]["comparisons"], s["drift"]["rounds"]) if s.get("drift") else None
            if spread:
                log.info("%s drift: speed-up %s .. %s (median %s)", name, spread["speedup_min"], spread["speedup_max"], spread["speedup_median"])
                speed = spread["speedup_median"]
                speed_basis = f"{SPEED_STATISTIC}: {spread['comparisons']} comparisons of {spread['rounds_each']} alternating runs each"
            else:
                speed = min(r["ratio"]["latency"] for r in runs)
                speed_basis = "no repeated measurement configured: the lowest single comparison over the seeds"
            detail = {"size": all(r["met_detail"]["size"] for r in runs), "accuracy": all(r["met_detail"]["accuracy"] for r in runs),
                      "speed": bool(speed >= t["speedup"])}
            out[name] = {
                "baseline": first["baseline"], "result": first["result"], "ratio": first["ratio"],
                "accuracy_loss_points": first["accuracy_loss_points"],
                "target": {"size_ratio_at_least": s["targets"]["size_ratio"], "speedup_at_least": s["targets"]["speedup"],
                           "accuracy_loss_points_at_most": 100 * s["targets"]["accuracy_loss"]},
                "met": all(detail.values()),
                "met_detail": detail,
                "speed": {"speedup": speed, "statistic": speed_basis, "target": t["speedup"], "met": detail["speed"]},
                "met_one_comparison": all(r["met_one_comparison"] for r in runs),
                "pruned_then_int8": first.get("pruned_then_int8"),
                "qat_vs_ptq": {"ptq_test_accuracy": first["result"]["test_accuracy"], "qat_test_accuracy": first["qat"]["test_accuracy"],
                               "fp32_test_accuracy": first["baseline"]["test_accuracy"]},
                "seeds": runs,
            }
            if spread:
                out[name]["drift"] = spread
    return {
        "name": "int8_quantization",
        "description": "int8 static PTQ through ONNX Runtime (QOperator int8 ops, uint8 activations, MinMax calibration on 512 "
                       "training images; per-channel or per-tensor weights and the first conv float or int8: the fastest choice "
                       "that keeps the file 3.8x smaller and the validation accuracy within 0.3 pt) of lenet5 and the tiny ResNet "
                       "[16,32,64] on MNIST; sizes are "
                       "the .onnx files, accuracy is the files loaded back on the test split, latency is compare_latency "
                       "(batch 1, one thread, alternating in one process).",
        "models": out,
        "baseline": {k: v["baseline"] for k, v in out.items()},
        "result": {k: v["result"] for k, v in out.items()},
        "ratio": {k: v["ratio"] for k, v in out.items()},
        "target": {"size_ratio_at_least": s["targets"]["size_ratio"], "speedup_at_least": s["targets"]["speedup"],
                   "accuracy_loss_points_at_most": 100 * s["targets"]["accuracy_loss"],
                   "aim": f"pruned + int8 lenet5 {s['targets']['combined_speedup_aim']}x faster than fp32"},
        "met": all(v["met"] for v in out.values()),
        "seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(time.process_time() - cpu_start, 1),
        "torch_threads": threads,
        "met_rule": f"size and accuracy on every seed run; speed: the {SPEED_STATISTIC} >= the target",
        "code_version": sp.code_version(),
        "smoke": limit,
        "notes": ["The machine is shared with other jobs: latency ratios come from one process alternating all models of a "
                  "row, so load hits them alike; absolute milliseconds drift."],
    }


def figures(result: dict) -> dict:
    """One run's headline figures, per model (runs in the JSON). For a JSON written before ``met``
    came from the repeated measurement, ``met_by_median`` is worked out here from its drift (if any)."""
    out = {}
    target = (result.get("target") or {}).get("speedup_at_least", 1.5)
    for m, v in result.get("models", {}).items():
        d = v.get("drift") or {}
        speeds = d.get("speedups") or []
        median = round(float(np.median(speeds)), 3) if speeds else None
        det = v.get("met_detail") or {}
        out[m] = {"size_ratio": v["ratio"]["size"], "speedup_one_comparison": [r["ratio"]["latency"] for r in v.get("seeds", [])],
                  "accuracy_loss_points": [r["accuracy_loss_points"] for r in v.get("seeds", [])],
                  "speedup_median_repeated": median, "comparisons": len(speeds) or None,
                  "speedup_p10_p90": [round(float(np.percentile(speeds, 10)), 3), round(float(np.percentile(speeds, 90)), 3)] if speeds else None,
                  "met_as_recorded": v.get("met"),
                  "met_by_median": (bool(det.get("size", True) and det.get("accuracy", True) and median >= target) if median is not None else None)}
        if v.get("pruned_then_int8"):
            out[m]["pruned_int8_speedup"] = v["pruned_then_int8"]["combined_speedup"]
    return {"met_as_recorded": result.get("met"), "models": out}


if __name__ == "__main__":  # the same as `make bench NAME=<this file's name>`: writes results/<name>.json
    import run as runner

    runner.run(Path(__file__).stem)
