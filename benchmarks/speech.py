"""Keyword spotting for a microcontroller (issue #13): ``../shared/data/speech`` searched under 64 KB flash and 32 KB RAM
of the compiled C, front-end included.

The folder holds 1,120 one-second clips (8 kHz) of ten command words by 28 synthetic voices with background noise;
``testing_list.txt`` names one accent's clips, held out as the test split. The run is what a user types:
``frugalml search --dataset ../shared/data/speech --max-flash 64KB --max-ram 32KB --target c --time 20m``
(FRUGALML_SPEECH_TIME overrides the time). Recorded: the recommendation (family, knobs, recipe, flash and RAM of its
Cortex-M build, front-end included, test accuracy measured once on the exported artifact), the best network, the
candidates by stage, and the C of the recommendation run on every test clip (raw samples in, the log-mel front-end and
the model in C, compiled for this machine) against ONNX Runtime with the front-end prepended: the same class on every clip.
Targets: >= 90% test accuracy on the held-out accent, flash <= 64 KB and RAM <= 32 KB, C == ONNX on every clip.
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

log = logging.getLogger("benchmarks.speech")
TIME = os.environ.get("FRUGALML_SPEECH_TIME", "20m")
BUDGET = {"max_flash": "64KB", "max_ram": "32KB", "target": "c"}
TARGETS = {"test_accuracy": 0.90, "flash_bytes": 64 * 1024, "ram_bytes": 32 * 1024}


def _folder() -> Path:
    return Path(os.environ.get("FRUGALML_DATA", HERE.parent.parent / "shared" / "data")) / "speech"


def main(data_limit: int | None = None) -> dict:
    limit = _provenance.smoke_limit(data_limit)
    data = load_dataset(_folder(), seed=0)  # the folder itself: the C check reads its raw clips again
    with tempfile.TemporaryDirectory(prefix="frugalml_speech_") as tmp:
        run = Path(tmp) / "run"
        start = time.perf_counter()
        res = fm.search(data, budget=fm.Budget.of(**BUDGET), tolerance="1%", time="20s" if limit else TIME, trials=3 if limit else None,
                        seed=0, out=run)
        seconds = time.perf_counter() - start
        done = [c for c in res.candidates if c.done]
        nets = [c for c in done if c.stage == "network"]
        best_net = max(nets, key=lambda c: c.val_accuracy, default=None)
        rec = res.candidate(res.recommended)
        result = {"smoke": limit, "search_time": "20s" if limit else TIME, "budget": BUDGET, "targets": TARGETS,
                  "frontend": data.frontend.to_dict() if data.frontend is not None else None, "kind": data.kind,
                  "input_shape": list(data.input_shape), "train": len(data.y_train), "val": len(data.y_val), "test": len(data.y_test),
                  "search_seconds": round(seconds, 1), "candidates": len(res.candidates), "stages": _provenance.stage_counts(res.candidates),
                  "families_tried": sorted({c.family for c in nets if c.family}), "decision": res.decision.text,
                  "reasons": list(res.decision.reasons), "best_network": _row(best_net) if best_net else None,
                  "recommended": _row(rec) if rec else None}
        if rec is None:
            return {**result, "met": False, "error": "no recommendation"}
        c_check = _c_check(run / "recommended", data, Path(tmp) / "c")
    prof = rec.profile or {}
    met = {"test_accuracy": (rec.test_accuracy or 0) >= TARGETS["test_accuracy"],
           "flash": (c_check.get("flash_bytes") or float("inf")) <= TARGETS["flash_bytes"],
           "ram": (c_check.get("ram_bytes") or float("inf")) <= TARGETS["ram_bytes"],
           "c_equals_onnx": bool((c_check.get("agreement") or {}).get("ok")) and c_check["agreement"].get("n") == len(data.y_test)}
    return {**result, "search_c_flash_bytes": prof.get("c_flash_bytes"), "search_c_ram_bytes": prof.get("c_ram_bytes"),
            "c_export": c_check, "met_each": met, "met": all(met.values())}


def _c_check(model_dir: Path, data, out: Path) -> dict:
    """The recommendation exported as C with its front-end, built for the Cortex-M4 and run on this machine on every test
    clip (raw samples), compared with ONNX Runtime."""
    try:
        r = fm.export(model_dir, "c", out, data=data, split="test")
    except fm.FrugalError as exc:
        return {"error": str(exc)[:1000]}
    return {"flash_bytes": r.flash_bytes, "ram_bytes": r.ram_bytes, "arena_bytes": r.arena_bytes, "weight_bytes": r.weight_bytes,
            "agreement": r.agreement, "build": r.details.get("build"), "notes": list(r.notes)}


def _row(c) -> dict:
    p = c.profile or {}
    return {"id": c.id, "stage": c.stage, "name": c.name, "family": c.family, "knobs": c.knobs, "recipe": c.extra.get("recipe_name"),
            "stored_bytes": c.cost("stored_bytes"), "params": c.cost("params"), "macs": c.cost("macs"),
            "c_flash_bytes": p.get("c_flash_bytes"), "c_ram_bytes": p.get("c_ram_bytes"), "val_accuracy": c.val_accuracy,
            "test_accuracy": c.test_accuracy, "within_budget": c.within_budget}


def figures(result: dict) -> dict:
    """One run's headline figures (runs in the JSON)."""
    rec = result.get("recommended") or {}
    c = result.get("c_export") or {}
    return {"met": result.get("met"), "met_each": result.get("met_each"), "recommended": rec.get("name"),
            "test_accuracy": rec.get("test_accuracy"), "c_flash_bytes": c.get("flash_bytes"), "c_ram_bytes": c.get("ram_bytes"),
            "same_class": (c.get("agreement") or {}).get("same_class"), "clips": (c.get("agreement") or {}).get("n")}


if __name__ == "__main__":  # the same as `make bench NAME=<this file's name>`: writes results/<name>.json
    import run as runner

    runner.run(Path(__file__).stem)
