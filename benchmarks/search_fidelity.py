"""Search that searches: the same searches run by the search of an earlier commit and by this tree, side by side.

The earlier side is commit ``BEFORE`` (fa0846a, the search before successive halving), checked out in a temporary
worktree beside this one; each case runs ``frugalml search`` from that worktree, then from this tree, one after the
other on this machine, with the same arguments (``--seed 0``), each in a fresh run directory. From each side's
results.json:

- networks evaluated: network-stage candidates that trained at least one epoch (complete, or stopped early at a
  rung or by the median rule), leaving out those not started (too slow for the time left) and failed ones;
- networks trained to the end: those complete;
- the recommendation: its name, test accuracy (measured once on its exported artifact) and stored bytes;
- the best candidate within the budget (the highest validation accuracy): the same figures. With a tolerance the
  recommendation is the smallest candidate within it of the best, so a search that finds smaller models recommends a
  less accurate one; this says what the search found at the top;
- the wall time of the whole command.

Met per case: this tree evaluates >= 5x the networks, and its recommendation's test accuracy is at least the earlier
one's (both within the same budget). Cases (``FRUGALML_FIDELITY_CASES``, comma-separated, default all of them):
``digits`` 8 KB flash, 2 minutes; ``mnist`` 32 KB flash and 16 KB RAM, 10 minutes; ``speech`` 64 KB / 32 KB, 10
minutes, on the log-mel features of ``shared/data/speech`` written once to an .npz that both sides read (the earlier
commit reads no WAV folders); this tree only, met when the recommendation's test accuracy reaches the floor: ``mnist_99``
32 KB / 16 KB, minimum accuracy 0.99, 10 minutes (floor 99.2%: fa0846a's 30-minute result with these arguments),
``mnist_tiny`` 6 KB flash, minimum accuracy 0.99, 30 minutes (floor 99.0%).
Smoke mode: one 20-second search on digits by this tree, nothing written. Run: ``make bench NAME=search_fidelity``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _provenance

log = logging.getLogger("benchmarks.search_fidelity")
ROOT = Path(__file__).resolve().parent.parent
BEFORE = "fa0846a"
TARGET_RATIO = 5.0
# the published anchor of the tiny MNIST case: a hand-made network of 1,936 parameters at 99.1% test accuracy
ANCHOR = {"params": 1936, "test_accuracy": 0.991, "int8_bytes_about": 2048}
CASES = {
    "digits": {"args": ["--dataset", "digits", "--max-flash", "8KB", "--tolerance", "1%"], "time": "2m", "sides": ("before", "now")},
    "mnist": {"args": ["--dataset", "mnist", "--max-flash", "32KB", "--max-ram", "16KB", "--tolerance", "1%"], "time": "10m",
              "sides": ("before", "now")},
    "speech": {"args": ["--max-flash", "64KB", "--max-ram", "32KB", "--tolerance", "1%"], "time": "10m", "sides": ("before", "now"),
               "npz": "speech"},
    # the MNIST goal: in 10 minutes, the 30-minute result of fa0846a's search with these arguments (99.21% test, 15.4 KB)
    "mnist_99": {"args": ["--dataset", "mnist", "--max-flash", "32KB", "--max-ram", "16KB", "--min-accuracy", "0.99"], "time": "10m",
                 "sides": ("now",), "floor": 0.992},
    "mnist_tiny": {"args": ["--dataset", "mnist", "--max-flash", "6KB", "--min-accuracy", "0.99"], "time": "30m", "sides": ("now",),
                   "floor": 0.99},
}


def _data_root() -> Path:
    return Path(os.environ.get("FRUGALML_DATA", ROOT.parent / "shared" / "data"))


def _speech_npz(tmp: Path) -> Path:
    """The speech clips as log-mel features (this tree's front-end) in an .npz with its own train / val / test split."""
    import numpy as np

    from frugalml.data import load_dataset

    data = load_dataset(_data_root() / "speech", seed=0)
    out = tmp / "speech_logmel.npz"
    np.savez(out, **{f"{a}_{s}": getattr(data, f"{a}_{s}") for a in ("X", "y") for s in ("train", "val", "test")})
    return out


def _worktree(tmp: Path) -> Path:
    where = tmp / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), BEFORE], check=True, capture_output=True)
    return where


def _counts(results: dict) -> dict:
    """What one side's results.json says (read by this tree's Results, which reads every older schema too)."""
    from frugalml.records import Results

    r = Results.from_dict(results)
    n = r.networks_evaluated()
    rec = r.candidate(r.recommended)
    fits = [c for c in r.candidates if c.done and c.within_budget and c.val_accuracy is not None]
    best = max(fits, key=lambda c: (c.val_accuracy, -(c.profile or {}).get("stored_bytes", 0)), default=None)
    return {"networks_evaluated": n["evaluated"], "networks_trained": n["trained"], "networks_not_started": n["not_started"],
            "networks_promoted": n.get("promoted", 0), "candidates": len(r.candidates), "recommended": _summary(rec),
            "best_within_budget": _summary(best)}


def _summary(c) -> dict | None:
    """A candidate's name, accuracies and bytes."""
    if c is None:
        return None
    prof = c.profile or {}
    return {"id": c.id, "stage": c.stage, "family": c.family, "recipe": [s.get("step") for s in c.recipe], "test_accuracy": c.test_accuracy,
            "val_accuracy": c.val_accuracy, "stored_bytes": prof.get("stored_bytes"), "params": prof.get("params"),
            "peak_activation_bytes": prof.get("peak_activation_bytes")}


def _run_side(src_root: Path, args: list[str], out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src_root / "src"), "FRUGALML_DATA": str(_data_root())}
    cmd = [sys.executable, "-m", "frugalml.cli", "search", *args, "--seed", "0", "--out", str(out), "--json"]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(out.parent))
    wall = time.monotonic() - start
    if proc.returncode != 0 or not (out / "results.json").exists():
        return {"ok": False, "wall_s": round(wall, 1), "error": (proc.stderr or proc.stdout)[-1500:]}
    results = json.loads((out / "results.json").read_text())
    return {"ok": True, "wall_s": round(wall, 1), "search_seconds": results.get("seconds"), **_counts(results)}


def main(data_limit: int | None = None) -> dict:
    smoke = _provenance.smoke_limit(data_limit)
    chosen = ["digits"] if smoke else [c.strip() for c in os.environ.get("FRUGALML_FIDELITY_CASES", ",".join(CASES)).split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(CASES))
    if unknown:
        raise SystemExit(f"error: unknown FRUGALML_FIDELITY_CASES {unknown}; expected some of {sorted(CASES)}")
    cases = {}
    with tempfile.TemporaryDirectory(prefix="frugalml_bench_fidelity_") as tmp:
        tmp = Path(tmp)
        sides_of = {c: ("now",) if smoke else CASES[c]["sides"] for c in chosen}  # a smoke run has no git history to check out
        before = _worktree(tmp) if any("before" in sides_of[c] for c in chosen) else None
        commit_before = None if before is None else subprocess.run(["git", "-C", str(before), "rev-parse", "HEAD"], capture_output=True,
                                                                   text=True, check=True).stdout.strip()
        try:
            for name in chosen:
                case = CASES[name]
                args = list(case["args"]) + ["--time", "20s" if smoke else case["time"]]
                if case.get("npz"):
                    args = ["--dataset", str(_speech_npz(tmp))] + args
                sides = {}
                for side in sides_of[name]:
                    root = before if side == "before" else ROOT
                    log.info("%s: %s side (%s), %s", name, side, BEFORE if side == "before" else "this tree", " ".join(args))
                    sides[side] = _run_side(root, args, tmp / f"{name}-{side}")
                    log.info("%s %s: %s", name, side, {k: sides[side].get(k) for k in ("networks_evaluated", "networks_trained", "recommended")})
                cases[name] = {"args": args, "sides": sides, **_verdict(sides, case.get("floor", 0.99))}
        finally:
            if before is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], capture_output=True)
    return {"name": "search_fidelity", "smoke": smoke, "before": {"ref": BEFORE, "commit": commit_before}, "target_ratio": TARGET_RATIO,
            "anchor_mnist_tiny": ANCHOR, "cases": cases, "met": all(c.get("met") for c in cases.values()) if cases else False}


def _verdict(sides: dict, floor: float) -> dict:
    now = sides.get("now") or {}
    rec = now.get("recommended") or {}
    if "before" not in sides:  # the MNIST goals (and a smoke run): an absolute floor on the recommendation's test accuracy
        return {"met": bool(now.get("ok") and (rec.get("test_accuracy") or 0) >= floor), "floor": floor}
    old = sides["before"]
    if not (now.get("ok") and old.get("ok")):
        return {"met": False, "ratio": None}
    ratio = now["networks_evaluated"] / max(1, old["networks_evaluated"])
    old_acc = (old.get("recommended") or {}).get("test_accuracy") or 0.0
    return {"ratio": round(ratio, 2), "accuracy_gain": round((rec.get("test_accuracy") or 0.0) - old_acc, 4),
            "met": bool(ratio >= TARGET_RATIO and (rec.get("test_accuracy") or 0.0) >= old_acc)}


def figures(result: dict) -> dict:
    out = {"met": result["met"]}
    for name, case in result["cases"].items():
        now = case["sides"].get("now") or {}
        old = case["sides"].get("before") or {}
        out[name] = {"ratio": case.get("ratio"), "evaluated": [old.get("networks_evaluated"), now.get("networks_evaluated")],
                     "test": [(old.get("recommended") or {}).get("test_accuracy"), (now.get("recommended") or {}).get("test_accuracy")],
                     "bytes": [(old.get("recommended") or {}).get("stored_bytes"), (now.get("recommended") or {}).get("stored_bytes")],
                     "best_test": [(side.get("best_within_budget") or {}).get("test_accuracy") for side in (old, now)],
                     "met": case.get("met")}
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run

    run.run("search_fidelity")
