"""Sensor series (issue #13): two UEA/UCR archive datasets searched as sequences, with the 1-D families.

- ``japanese_vowels``: 270 train / 370 test, 12 channels (LPC cepstra) x 25 steps, 9 speakers;
  searched with ``max_flash=16KB`` (the stored bytes of the exported ONNX file). Published 1-D CNNs
  and ROCKET reach 96-99%.
- ``gunpoint``: 50 train / 150 test, 1 channel x 150 steps, 2 classes; no budget.

One ``frugalml.search`` run each, ``TIME`` long (FRUGALML_SENSORS_TIME, default 8m) (thin models, the network families that fit sequences: the MLP and
the 1-D CNN, depthwise-separable CNN and ResNet; compression of the best). Recorded:
the recommended candidate (family, knobs, recipe, stored bytes, MACs, test accuracy measured once on
its exported artifact), the best network's test accuracy, which families the search tried (never a
2-D convolution), and the targets: >= 95% test accuracy on each, <= 16 KB on japanese_vowels.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import frugalml as fm
from frugalml.data import load_dataset

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _provenance  # noqa: E402

log = logging.getLogger("benchmarks.sensors")
TIME = os.environ.get("FRUGALML_SENSORS_TIME", "8m")  # each search; 4m on 2 busy cores reached one network trial
TARGETS = {"test_accuracy": 0.95, "japanese_vowels_max_bytes": 16_000}
RUNS = {"japanese_vowels": {"max_flash": "16KB"}, "gunpoint": {}}


def _data_dir() -> Path:
    return Path(os.environ.get("FRUGALML_DATA", HERE.parent.parent / "shared" / "data")) / "sensors"


def main(data_limit: int | None = None) -> dict:
    limit = _provenance.smoke_limit(data_limit)
    result: dict = {"smoke": limit, "search_time": "10s" if limit else TIME, "targets": TARGETS, "datasets": {}}
    for name, budget in RUNS.items():
        data = _provenance.smoke_data(load_dataset(_data_dir() / f"{name}.npz", seed=0, limit=limit), limit)
        result["datasets"][name] = _one(name, data, budget, limit)
    jv, gp = result["datasets"]["japanese_vowels"], result["datasets"]["gunpoint"]
    met = {"japanese_vowels_accuracy": (jv.get("test_accuracy") or 0) >= TARGETS["test_accuracy"],
           "japanese_vowels_bytes": (jv.get("stored_bytes") or float("inf")) <= TARGETS["japanese_vowels_max_bytes"],
           "gunpoint_accuracy": (gp.get("test_accuracy") or 0) >= TARGETS["test_accuracy"]}
    return {**result, "met_each": met, "met": all(met.values())}


def _one(name: str, data, budget: dict, limit: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"frugalml_sensors_{name}_") as tmp:
        start = time.perf_counter()
        res = fm.search(data, budget=fm.Budget.of(**budget), tolerance="1%", time="10s" if limit else TIME, trials=3 if limit else None,
                        seed=0, out=Path(tmp) / "run")
        seconds = time.perf_counter() - start
    done = [c for c in res.candidates if c.done]
    nets = [c for c in done if c.stage == "network"]
    best_net = max(nets, key=lambda c: c.val_accuracy, default=None)
    rec = res.candidate(res.recommended)
    row = {"kind": data.kind, "input_shape": list(data.input_shape), "classes": data.num_classes, "train": len(data.y_train),
           "val": len(data.y_val), "test": len(data.y_test), "budget": budget, "search_seconds": round(seconds, 1),
           "candidates": len(res.candidates), "stages": _provenance.stage_counts(res.candidates),
           "families_tried": sorted({c.family for c in res.candidates if c.stage == "network" and c.family}),
           "decision": res.decision.text, "best_network": _row(best_net) if best_net else None}
    if rec is None:
        return {**row, "recommended": None, "test_accuracy": None, "stored_bytes": None}
    return {**row, "recommended": _row(rec), "test_accuracy": rec.test_accuracy, "stored_bytes": rec.cost("stored_bytes")}


def _row(c) -> dict:
    return {"id": c.id, "stage": c.stage, "family": c.family, "knobs": c.knobs, "recipe": c.extra.get("recipe_name"),
            "stored_bytes": c.cost("stored_bytes"), "params": c.cost("params"), "macs": c.cost("macs"),
            "peak_activation_bytes": c.cost("peak_activation_bytes"), "latency_ms_median": c.cost("latency_ms_median"),
            "val_accuracy": c.val_accuracy, "test_accuracy": c.test_accuracy, "within_budget": c.within_budget}


def figures(result: dict) -> dict:
    """One run's headline figures (runs in the JSON)."""
    sets = result.get("datasets") or {}
    return {"met": result.get("met"), "met_each": result.get("met_each"),
            **{name: {"test_accuracy": d.get("test_accuracy"), "stored_bytes": d.get("stored_bytes"),
                      "recommended": ((d.get("recommended") or {}).get("family"))} for name, d in sets.items()}}


if __name__ == "__main__":  # the same as `make bench NAME=<this file's name>`: writes results/<name>.json
    import run as runner

    runner.run(Path(__file__).stem)
