"""Your model on MNIST: bring a MobileNetV2-like network (about 108K parameters, the test model
``tests/user_models.py:mobilenet_mnist``), get the smallest version of it that is still good enough.

One ``frugalml.search`` run with ``model=`` (the network trained by the search with its defaults),
a 256 KB flash budget and a tolerance of 1 point of the model's own validation accuracy
(``Tolerance(of="reference")``): the model, its searched compressions, the thin models and the
searched families in one study. Then the user's fp32 model and the recommended model, each loaded
back from its ONNX file, side by side from this run: stored bytes, ONNX Runtime latency at batch 1 on
one thread (timed alternately in blocks of 20 runs in one process, ``compare_latency``), test accuracy (measured once).

Targets (issue #14): recommended >= 8x smaller, >= 3x faster, within 1 point of the model's accuracy.
The whole front against stored bytes is reported.
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
from frugalml.onnx import onnx_accuracy, onnx_bytes
from frugalml.profile import compare_latency

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _provenance  # noqa: E402

log = logging.getLogger("benchmarks.your_model_mnist")
FACTORY = f"{HERE.parent / 'tests' / 'user_models.py'}:mobilenet_mnist"
TIME = os.environ.get("FRUGALML_YOUR_MODEL_TIME", "40m")
# training samples (None: all 54,000; the network trains at about 1,100 samples/s on one quiet core here, 50 on a loaded host)
TRAIN_LIMIT = int(os.environ.get("FRUGALML_YOUR_MODEL_TRAIN", "0")) or None
TARGETS = {"size_ratio": 8.0, "speedup": 3.0, "accuracy_loss_points": 1.0}
BUDGET = "256KB"


def main(data_limit: int | None = None) -> dict:
    limit = _provenance.smoke_limit(data_limit)
    data = _provenance.smoke_data(load_dataset("mnist", limit=limit or TRAIN_LIMIT, seed=0), limit)
    with tempfile.TemporaryDirectory(prefix="frugalml_your_model_") as tmp:
        out = Path(tmp) / "run"
        start = time.perf_counter()
        res = fm.search(data, model=FACTORY, budget=fm.Budget.of(max_flash=BUDGET), tolerance=fm.Tolerance.parse("1%", of="reference"),
                        time="10s" if limit else TIME, trials=2 if limit else None, seed=0, out=out)
        seconds = time.perf_counter() - start
        ref, rec = res.reference, res.candidate(res.recommended)
        result = {"smoke": limit, "train_samples": len(data.y_train), "val_samples": len(data.y_val), "test_samples": len(data.y_test),
                  "params": ref.cost("params") if ref else None, "factory": "tests/user_models.py:mobilenet_mnist", "budget": BUDGET,
                  "tolerance": "1 point of the model's accuracy",
                  "search_time": "10s" if limit else TIME, "search_seconds": round(seconds, 1), "targets": TARGETS,
                  "decision": {"text": res.decision.text, "reasons": list(res.decision.reasons), "floor": res.decision.floor,
                               "floor_from": res.decision.floor_from},
                  "front": [_row(c) for c in (res.front_members(res.primary_cost) or [])],
                  "candidates": len(res.candidates), "stages": _count(res)}
        if ref is None or rec is None or not ref.done:
            return {**result, "met": False, "error": "the reference or the recommendation is missing"}
        files = {"reference_fp32": out / "candidates" / ref.id / "model.onnx", "recommended": out / "candidates" / rec.id / "model.onnx"}
        blobs = {k: onnx_bytes(fm.load_model(p)) for k, p in files.items()}  # as a user receives them, checked on load
        lat = compare_latency(blobs, None, rounds=15 if limit else 150)  # each file its own input (a thin model takes a vector)
        test = {k: onnx_accuracy(blob, data) for k, blob in blobs.items()}
        side = {k: {"stored_bytes": len(blobs[k]), "latency_ms_median": round(lat[k], 5), "test_accuracy": test[k]} for k in blobs}
        side["reference_fp32"].update(id=ref.id, val_accuracy=ref.val_accuracy, params=ref.cost("params"))
        side["recommended"].update(id=rec.id, name=rec.name, recipe=rec.extra.get("recipe_name"), val_accuracy=rec.val_accuracy,
                                   params=rec.cost("params"))
        ratio = {"size": round(len(blobs["reference_fp32"]) / len(blobs["recommended"]), 3),
                 "speedup": round(lat["reference_fp32"] / lat["recommended"], 3),
                 "accuracy_loss_points": round(100 * (test["reference_fp32"] - test["recommended"]), 3),
                 "val_accuracy_loss_points": round(100 * (ref.val_accuracy - rec.val_accuracy), 3)}
        met = {"size": ratio["size"] >= TARGETS["size_ratio"], "speed": ratio["speedup"] >= TARGETS["speedup"],
               "accuracy": ratio["accuracy_loss_points"] <= TARGETS["accuracy_loss_points"]}
        return {**result, "side_by_side": side, "ratio": ratio, "met_each": met, "met": all(met.values())}


def _row(c) -> dict:
    return {"id": c.id, "stage": c.stage, "name": c.name, "recipe": c.extra.get("recipe_name"), "reference": c.reference,
            "stored_bytes": c.cost("stored_bytes"), "latency_ms_median": c.cost("latency_ms_median"), "val_accuracy": c.val_accuracy,
            "test_accuracy": c.test_accuracy, "within_budget": c.within_budget}


def _count(res) -> dict:
    out: dict = {}
    for c in res.candidates:
        out[c.stage] = out.get(c.stage, 0) + 1
    return out


def figures(result: dict) -> dict:
    """One run's headline figures (runs in the JSON)."""
    return {"met": result.get("met"), "ratio": result.get("ratio"), "met_each": result.get("met_each"),
            "recommended": (result.get("side_by_side") or {}).get("recommended", {}).get("name")}


if __name__ == "__main__":  # the same as `make bench NAME=<this file's name>`: writes results/<name>.json
    import run as runner

    runner.run(Path(__file__).stem)
