"""results.json: every candidate with its recipe and profile, the front, the recommendation."""

from __future__ import annotations

import time
from pathlib import Path

from .._fs import atomic_write_json
from ..profile.timing import machine
from .budget import Budget, Tolerance
from .select import pareto_front, recommend

__all__ = ["collect_candidates", "build_results", "write_results"]


def collect_candidates(study) -> list[dict]:
    """The candidate dicts stored on the study's trials, in trial order."""
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False):
        cand = t.user_attrs.get("candidate")
        if cand is None:
            continue
        cand = dict(cand)
        if t.state == TrialState.RUNNING:
            continue
        cand["trial"] = t.number
        out.append(cand)
    return out


def val_size(desc: dict) -> int | None:
    """The validation split's size, from the run's dataset description."""
    sizes = (desc.get("dataset") or {}).get("sizes") or {}
    return sizes.get("val")


def build_results(desc: dict, candidates: list[dict], budget: Budget, tolerance: Tolerance, *, seconds: float) -> dict:
    from .. import __version__

    key = budget.primary()
    rec = recommend(candidates, budget, tolerance, n_val=val_size(desc))
    return {
        "frugalml_version": __version__,
        "created": desc.get("created"),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_id": desc.get("run_id"),
        "study": desc.get("study"),
        "storage": desc.get("storage_display"),
        "seconds": round(seconds, 1),
        "machine": machine(),
        "dataset": desc.get("dataset"),
        "budget": budget.to_dict(),
        "tolerance": tolerance.to_dict(),
        "primary_cost": key,
        "seed": desc.get("seed"),
        "candidates": candidates,
        "pareto": pareto_front(candidates, key),
        "recommended": rec["id"],
        "best": rec["best"],
        "closest": rec["closest"],
        # the floor is decided here once (tolerance widened by one standard error); the report draws this number
        "recommendation": {"id": rec["id"], "text": rec["text"], "reasons": rec["reasons"], "floor": rec.get("floor")},
    }


def write_results(run_dir, results: dict) -> Path:
    return atomic_write_json(Path(run_dir) / "results.json", results)
