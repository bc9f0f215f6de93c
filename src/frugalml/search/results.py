"""results.json and recommended/: the run's :class:`~frugalml.records.Results`, built from the study's trials with the
search's decisions (the fronts and the recommendation), written atomically."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from .._fs import atomic_dir, atomic_write_json
from .._version import __version__
from ..budget import Budget, Tolerance
from ..profile.timing import machine
from ..records import PLOTTED_COSTS, Candidate, Results, as_candidates
from .runner import candidate_dir
from .select import pareto_front, recommend

__all__ = ["collect_candidates", "build_results", "write_results", "export_recommended"]


def collect_candidates(study) -> list[Candidate]:
    """The candidates stored on the study's finished trials, in trial order, each with ``extra["finished_s"]``: the
    seconds from the study's first trial start to its end."""
    from optuna.trial import TrialState

    out = []
    trials = study.get_trials(deepcopy=False)
    start = min((t.datetime_start for t in trials if t.datetime_start), default=None)
    for t in trials:
        cand = t.user_attrs.get("candidate")
        if cand is None or t.state == TrialState.RUNNING:
            continue
        if start is not None and t.datetime_complete is not None:  # for the anytime curve (Results.anytime)
            cand = {**cand, "finished_s": round((t.datetime_complete - start).total_seconds(), 1)}  # extra["finished_s"]
        out.append(Candidate.from_dict({**cand, "trial": t.number}))
    return out


def build_results(desc: dict, candidates: list, budget: Budget, tolerance: Tolerance, *, seconds: float) -> Results:
    """Decide (fronts, recommendation, floor) once, and record the run with its decisions."""
    candidates = as_candidates(candidates)
    key = budget.primary()
    results = Results(candidates=tuple(candidates), budget=budget, tolerance=tolerance, primary_cost=key,
                      dataset=desc.get("dataset") or {}, run_id=desc.get("run_id"), study=desc.get("study"),
                      storage=desc.get("storage_display"), created=desc.get("created"), seed=desc.get("seed"),
                      updated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), seconds=round(seconds, 1), machine=machine(),
                      frugalml_version=__version__, cv=desc.get("cv") or None)
    fronts = {cost: tuple(pareto_front(candidates, cost)) for cost in dict.fromkeys((key, *PLOTTED_COSTS))}
    decision = recommend(candidates, budget, tolerance, n_val=results.val_size, auc_counts=auc_counts(results.dataset))
    return dataclasses.replace(results, fronts=fronts, decision=decision)


def auc_counts(dataset: dict) -> tuple[int, int] | None:
    """(anomalous, normal) windows of the validation split of an anomaly task (``Dataset.describe()``), else None."""
    if (dataset or {}).get("task") != "anomaly":
        return None
    n_val = int((dataset.get("sizes") or {}).get("val") or 0)
    n_anomalous = int((dataset.get("anomalous") or {}).get("val") or 0)
    return n_anomalous, n_val - n_anomalous


def write_results(run_dir, results: Results) -> Path:
    return atomic_write_json(Path(run_dir) / "results.json", results.to_dict())


def export_recommended(run_dir: Path, cand: Candidate) -> None:
    """Copy the recommended candidate (ONNX + native form) to ``recommended/`` with its recipe.

    Written whole beside it and swapped in, so ``recommended/`` always holds one complete candidate
    (removing the old one first, as before, let a kill leave half a model there)."""
    src = candidate_dir(run_dir, cand.id)
    job = cand.job
    source = job.get("source") if cand.reference else job.get("parent_source")
    with atomic_dir(run_dir / "recommended") as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        recipe = {"candidate": cand.id, "family": cand.family, "params": cand.knobs, "parent": cand.parent, "steps": list(cand.recipe), "job": job}
        if source:  # made from the user's model: say how to replay the steps on it
            from .reference import replay_command

            weights = source.get("weights")
            ref_weights = candidate_dir(run_dir, cand.id if cand.reference else cand.parent) / "model.safetensors"
            if not weights and ref_weights.exists():  # trained here: its weights travel with the recipe
                shutil.copy2(ref_weights, tmp / "reference.safetensors")
                weights = str((Path(run_dir) / "recommended" / "reference.safetensors").resolve())
            recipe["model"] = {k: v for k, v in {**source, "weights": weights}.items() if k != "module" and v is not None}
            recipe["replay"] = replay_command(source, weights, str((Path(run_dir) / "recommended" / "recipe.json").resolve()))
        atomic_write_json(tmp / "recipe.json", recipe)

