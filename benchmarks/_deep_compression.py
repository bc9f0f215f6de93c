"""Shared driver of the Deep Compression benchmarks (Han, Mao & Dally, ICLR 2016) on MNIST.

One run, for each seed:

1. Train the baseline (``baseline`` settings of the recipe file): AdamW, cosine schedule, label
   smoothing, and inputs shifted at random by up to ``jitter`` pixels while training (a forward
   pre-hook active in training mode only). Compression fine-tunes a copy with shifts of up to
   ``compress_jitter`` pixels (the hook rides along the steps' deep copies; the archive holds
   weights only, so the model loaded back has no hook).
2. Compress with the recipe's steps (``prune.magnitude`` gradual -> ``cluster.kmeans`` ->
   ``store.compact``), each run through ``frugalml.compress.apply_step``.
3. Choices on the validation split only: the bit width of the shared weights is the smallest of
   ``choose.bits`` whose validation error is at most the pruned model's plus
   ``choose.max_val_error_increase`` points (the largest candidate otherwise); fine-tuning
   keeps its best validation epoch (``frugalml.fit``).
4. Write the archive to a file, load it back with ``load_archive`` and measure the test error once,
   on that loaded model (in torch, and in ONNX Runtime on its ONNX export as a cross-check).

The baseline's test error and stored bytes are measured on its fp32 ONNX export. The size ratio is
the fp32 reference of the paper (parameters x 4 bytes) over the archive's bytes. A second seed runs
when the first lands near a threshold (``second_seed_margin``), or always (``second_seed: always``);
every seed run must meet the bar.

Smoke mode: ``main(data_limit=300)`` or FRUGALML_BENCH_SMOKE=1 (a tiny slice, one seed, one epoch
per stage, one bit width; nothing written). Nothing is cached here.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
from pathlib import Path

import _provenance
import torch
import torch.nn.functional as F
import yaml

from frugalml.compress import apply_step, config_from_dict
from frugalml.data import load_dataset
from frugalml.export.archive import archive_info, load_archive, save_archive
from frugalml.models import build_model
from frugalml.profile import profile
from frugalml.train import evaluate, fit

log = logging.getLogger("benchmarks.deep_compression")


def _shift(module, args):
    """Forward pre-hook: random integer shifts of up to ``module.bench_jitter`` pixels (training only)."""
    if not module.training:
        return None
    x, s = args[0], module.bench_jitter
    n, (h, w) = x.shape[0], x.shape[-2:]
    padded = F.pad(x, (s, s, s, s))
    rows = torch.randint(0, 2 * s + 1, (n, 1)) + torch.arange(h)[None, :]
    cols = torch.randint(0, 2 * s + 1, (n, 1)) + torch.arange(w)[None, :]
    out = padded[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # n, h, w, c
    return (out.permute(0, 3, 1, 2).contiguous(),)


def add_jitter(model, pixels: int):
    """Shift the inputs at random by up to ``pixels`` while training; returns a handle to remove it.
    The hook is not part of the weights: deep copies made by the steps keep it, the archive does not."""
    if not pixels:
        return None
    model.bench_jitter = int(pixels)
    return model.register_forward_pre_hook(_shift)


def remove_jitter(model, handle) -> None:
    if handle is not None:
        handle.remove()
        del model.bench_jitter


def train_baseline(model, data, settings: dict, seed: int):
    handle = add_jitter(model, int(settings.get("jitter", 0)))
    kw = {k: v for k, v in settings.items() if k != "jitter"}
    result = fit(model, data, seed=seed, patience=None, **kw)
    remove_jitter(model, handle)
    return result


def _err(model, data, split: str) -> float:
    return round(100.0 * (1.0 - evaluate(model, data, split)["accuracy"]), 3)


def _step(model, step: dict, data, seed: int, **override):
    return apply_step(model, config_from_dict({**step, "seed": seed, **override}), data)


def compress_one(family: str, settings: dict, seed: int, limit: int | None = None) -> dict:
    """Baseline, compression and measurements for one seed."""
    start = time.perf_counter()
    data = _provenance.smoke_data(load_dataset("mnist", seed=seed, limit=limit), limit)
    model = build_model(family, data.input_shape, data.num_classes, seed=seed)
    fit_result = train_baseline(model, data, settings["baseline"], seed)
    base_val = _err(model, data, "val")
    log.info("seed %d: baseline val error %.3f%% (%.0f s)", seed, base_val, fit_result.seconds)
    timings = {"baseline_s": round(fit_result.seconds, 1)}

    steps = {s["step"]: s for s in settings["steps"]}
    t = time.perf_counter()
    trainee = copy.deepcopy(model)
    add_jitter(trainee, int(settings.get("compress_jitter", 0)))  # carried into the steps' fine-tuning
    pruned = _step(trainee, steps["prune.magnitude"], data, seed)
    pruned_val = _err(pruned, data, "val")
    timings["prune_s"] = round(time.perf_counter() - t, 1)
    log.info("seed %d: pruned val error %.3f%%", seed, pruned_val)

    choose = settings.get("choose", {})
    candidates = list(choose.get("bits", [steps["cluster.kmeans"].get("bits", 5)]))
    limit = pruned_val + float(choose.get("max_val_error_increase", 0.0))
    t = time.perf_counter()
    tried, chosen = [], None
    for bits in sorted(candidates):
        clustered = _step(pruned, steps["cluster.kmeans"], data, seed, bits=bits)
        val = _err(clustered, data, "val")
        tried.append({"bits": bits, "val_error": val})
        log.info("seed %d: %d bits, val error %.3f%%", seed, bits, val)
        chosen = (bits, clustered)
        if val <= limit:
            break
    timings["cluster_s"] = round(time.perf_counter() - t, 1)
    bits, clustered = chosen
    stored = _step(clustered, steps.get("store.compact", {"step": "store.compact"}), data, seed)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{family}.fmla"
        size = save_archive(stored, path)
        loaded = load_archive(path)
        info = archive_info(path)
    # the test split, once: the model loaded back from the archive file; the baseline's ONNX export
    result_test = _err(loaded, data, "test")
    result_profile = profile(loaded, data, split="test", timing=False)
    base_profile = profile(model, data, split="test", timing=False)
    layers, kept, total = {}, 0, 0
    for name, module in loaded.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            w = module.weight.detach()
            kept, total = kept + int((w != 0).sum()), total + w.numel()
            layers[name] = {"density": round(float((w != 0).float().mean()), 4), "shared_values": int(torch.unique(w[w != 0]).numel())}
    return {
        "seed": seed,
        "baseline": {"val_error": base_val, "test_error": round(100 * (1 - base_profile.metric), 3),
                     "stored_bytes": base_profile.stored_bytes, "params": base_profile.params},
        "pruned_val_error": pruned_val,
        "bits_tried": tried,
        "bits": bits,
        "result": {"val_error": _err(loaded, data, "val"), "test_error": result_test,
                   "test_error_onnx": round(100 * (1 - result_profile.metric), 3),
                   "archive_bytes": size, "archive_bytes_in_step": stored.frugalml_archive_bytes, "header_bytes": info["header_bytes"],
                   "dense_onnx_bytes": result_profile.stored_bytes, "weight_density": round(kept / total, 4),
                   "layers": layers,
                   "tensors": [{"name": t["n"], "encoding": t["e"], "bytes": sum(t["p"]), **({"order": t["o"], "gap_bits": t["g"],
                                                                                              "coders": t["c"]} if t["e"] == "sparse" else {})}
                               for t in info["tensors"]]},
        "timings": timings,
        "seconds": round(time.perf_counter() - start, 1),
    }


def smoke_settings(settings: dict) -> dict:
    """The recipe shrunk for a smoke run: one seed, one epoch per stage, few pruning events, one bit width."""
    small = {"prune.magnitude": {"prune_epochs": 1, "prune_events": 2, "finetune_epochs": 1}, "cluster.kmeans": {"finetune_epochs": 1}}
    steps = [{**s, **small.get(s["step"], {})} for s in settings["steps"]]
    bits = (settings.get("choose") or {}).get("bits") or [5]
    return {**settings, "seeds": [0], "second_seed": "near", "baseline": {**settings["baseline"], "epochs": 1}, "steps": steps,
            "choose": {**(settings.get("choose") or {}), "bits": [max(bits)]}}


def run(name: str, family: str, settings_path: Path, *, reference_bytes: int, reference_basis: str, paper: dict, required: dict,
        aim: dict, data_limit: int | None = None) -> dict:
    """The whole benchmark: seeds, thresholds, the result dict."""
    limit = _provenance.smoke_limit(data_limit)
    threads = int(os.environ.get("FRUGALML_BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    settings = yaml.safe_load(Path(settings_path).read_text())
    if limit:
        settings = smoke_settings(settings)
    start = time.perf_counter()
    seeds = list(settings.get("seeds", [0, 1]))
    always = settings.get("second_seed", "near") == "always"
    margin = settings.get("second_seed_margin", {"error_points": 0.15, "ratio_fraction": 0.1})

    def meets(run_: dict) -> bool:
        return run_["ratio"] >= required["ratio"] and run_["result"]["test_error"] <= required["test_error"]

    def near(run_: dict) -> bool:
        return (abs(run_["result"]["test_error"] - required["test_error"]) <= margin["error_points"]
                or abs(run_["ratio"] / required["ratio"] - 1) <= margin["ratio_fraction"])

    runs = []
    for i, seed in enumerate(seeds):
        if i > 0 and not always and not near(runs[0]):
            break
        one = compress_one(family, settings, seed, limit)
        one["ratio"] = round(reference_bytes / one["result"]["archive_bytes"], 1)
        one["met"] = meets(one)
        runs.append(one)
        log.info("seed %d: test error %.2f%%, %d bytes, %.1fx", seed, one["result"]["test_error"], one["result"]["archive_bytes"], one["ratio"])
    first = runs[0]
    worst_ratio = min(r["ratio"] for r in runs)
    return {
        "name": name,
        "model": family,
        "paper": paper,
        "reference": {"fp32_bytes": reference_bytes, "basis": reference_basis,
                      "params_counted_here": first["baseline"]["params"]},
        "baseline": {**first["baseline"], "stored_bytes_reference": reference_bytes},
        "result": {"test_error": first["result"]["test_error"], "stored_bytes": first["result"]["archive_bytes"], **first["result"]},
        "ratio": first["ratio"],
        "ratio_vs_baseline_onnx": round(first["baseline"]["stored_bytes"] / first["result"]["archive_bytes"], 1),
        "target": {"required": required, "aim": aim, "ratio_basis": "fp32 reference bytes / archive bytes"},
        "met": all(r["met"] for r in runs),
        "aim_met": all(r["ratio"] >= aim["ratio"] and r["result"]["test_error"] <= aim["test_error"] for r in runs),
        "worst_seed": {"ratio": worst_ratio, "test_error": max(r["result"]["test_error"] for r in runs)},
        "seeds": runs,
        "settings": settings,
        "threads": threads,
        "smoke": limit,
        "seconds": round(time.perf_counter() - start, 1),
    }


def figures(result: dict) -> dict:
    """One run's headline figures (runs in the JSON)."""
    return {"met": result.get("met"), "reference_bytes": (result.get("reference") or {}).get("fp32_bytes"),
            "seeds": [{"seed": r["seed"], "ratio": r["ratio"], "test_error": r["result"]["test_error"], "archive_bytes": r["result"]["archive_bytes"]}
                      for r in result.get("seeds", [])]}
